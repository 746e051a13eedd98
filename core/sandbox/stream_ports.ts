/**
 * Records streamed between a fused pass and the sandbox Workers of its tasks. In a fused pass
 * (`core/run/fuse.ts`) records go from task to task through in-memory pipes; a strict task runs
 * in its own Worker, so its end of a pipe crosses over a `MessagePort`: its input is pulled a
 * chunk at a time (the pull is the backpressure; the next chunk is asked for while one is read),
 * its output is pushed a chunk at a time and each chunk is acknowledged once the pipe took it (a
 * second chunk may be on its way meanwhile). A Worker writes a chunk as the JSON text of its
 * records (exactly what a dataset would give back), and that text goes on, untouched, to the next
 * Worker, which parses it: the parent moves strings, so the Workers' work runs in parallel. Records
 * cross in memory, never through a file; errors cross as privacy-safe messages. Not part of the
 * public API.
 *
 * @module
 */
import {
  Dataset,
  type DatasetRef,
  type DatasetWriter,
  type Workspace,
  writeEach,
} from "../dataset.ts";
import { isPrivacySafe, markPrivacySafe } from "../privacy/privacy_safe.ts";

/**
 * Records per chunk sent over a port. Large: each chunk costs a few thread hand-overs, whose
 * latency (not the copying) limits a pass on a busy machine.
 */
const CHUNK_RECORDS = 2048;

/** Chunks a Worker's output may have on their way before it waits for an acknowledgement. */
const IN_FLIGHT = 3;

/** Chunks a Worker's input asks for ahead of the one it reads. */
const PREFETCH = 2;

/** A chunk of a fused pass: records, or the JSON text of an array of records (from a Worker). */
export type StreamChunk = unknown[] | string;

/**
 * A pipe's writer in a fused pass: a dataset writer that also takes a chunk a Worker wrote as
 * JSON text, `records` records long, as it is.
 */
export interface StreamWriter extends DatasetWriter {
  writeJsonChunk(text: string, records: number): Promise<void>;
}

/** A streamed dataset's chunks as they were written (a Worker's input port reads them). */
export const STREAM_CHUNKS: unique symbol = Symbol("carrel.streamChunks");

/**
 * Attached to a task's context by a fused pass when the task's output streams to the next task:
 * what the task's first dataset must be, and the handle that stands for its output.
 */
export const STREAM_OUTPUT: unique symbol = Symbol("carrel.streamOutput");

/** What {@link STREAM_OUTPUT} holds. */
export interface StreamOutput {
  /** Opens the pipe's writer (once), under the dataset name the task chose. */
  open(name: string): StreamWriter;
  /** The pass's handle for this task's output (what a successful attempt must return). */
  readonly handle: Dataset;
}

/** Messages on an input port, Worker to parent. */
type InputRequest = { type: "pull" };
/** Messages on an input port, parent to Worker. */
type InputReply =
  | { type: "chunk"; records: unknown[] }
  | { type: "text"; text: string }
  | { type: "end" }
  | { type: "error"; message: string };
/** Messages on an output port, Worker to parent. */
type OutputRequest =
  | { type: "open"; name: string }
  | { type: "text"; text: string; records: number }
  | { type: "close" }
  | { type: "abort" };
/** Messages on an output port, parent to Worker. */
type OutputReply =
  | { type: "ack" }
  | { type: "closed"; records: number }
  | { type: "error"; message: string };

function safeError(message: string): Error {
  return markPrivacySafe(new Error(message));
}

/** Only a message vetted as privacy-safe crosses into the Worker (it is marked safe there). */
function messageOf(error: unknown): string {
  return error instanceof Error && isPrivacySafe(error)
    ? error.message
    : "Cannot stream records: the stream failed";
}

/** True for a dataset whose records stream from a fused task and are not stored. */
export function isStreamed(value: unknown): value is Dataset {
  return value instanceof Dataset && value.ref.$dataset.streamed === true;
}

// ------------------------------------------------------------------------------------------
// Parent side

/** The parent's end of a stream: the Worker's port, and `close()` once the attempt is over. */
export interface Served {
  port: MessagePort;
  close(): void;
}

/**
 * A new channel whose parent end answers each message with `handle`, one message after another
 * (a message that arrives while one is handled waits); a failure is answered with its message.
 */
function serve<In, Out extends { type: string }>(
  handle: (m: In, reply: (m: Out) => void) => Promise<void>,
): Served {
  const channel = new MessageChannel();
  const port = channel.port1;
  let closed = false;
  const reply = (m: Out | { type: "error"; message: string }) => {
    if (!closed) port.postMessage(m);
  };
  let serving = Promise.resolve();
  port.onmessage = (e: MessageEvent<In>) => {
    serving = serving.then(() =>
      handle(e.data, reply).catch((error) => reply({ type: "error", message: messageOf(error) }))
    );
  };
  return {
    port: channel.port2,
    close() {
      closed = true;
      port.close();
    },
  };
}

/** Serves `dataset`'s records over a new port, a chunk (as it was written) per pull. */
export function serveInput(dataset: Dataset): Served {
  const source = STREAM_CHUNKS in dataset
    ? (dataset as Dataset & { [STREAM_CHUNKS](): AsyncIterable<StreamChunk> })[STREAM_CHUNKS]()
    : dataset.batches();
  let chunks: AsyncIterator<StreamChunk> | undefined;
  return serve<InputRequest, InputReply>(async (m, reply) => {
    if (m.type !== "pull") return;
    chunks ??= source[Symbol.asyncIterator]();
    let next = await chunks.next();
    while (next.done !== true && next.value.length === 0) next = await chunks.next();
    if (next.done === true) reply({ type: "end" });
    else if (typeof next.value === "string") reply({ type: "text", text: next.value });
    else reply({ type: "chunk", records: next.value });
  });
}

/** Takes a Worker's output over a new port into `output` (the pipe to the next task). */
export function serveOutput(output: StreamOutput): Served {
  let writer: StreamWriter | undefined;
  let records = 0;
  return serve<OutputRequest, OutputReply>(async (m, reply) => {
    switch (m.type) {
      case "open":
        writer = output.open(m.name);
        break;
      case "text":
        await writer!.writeJsonChunk(m.text, m.records);
        records += m.records;
        reply({ type: "ack" });
        break;
      case "close":
        await writer!.close();
        reply({ type: "closed", records });
        break;
      case "abort":
        await writer?.abort();
        break;
    }
  });
}

// ------------------------------------------------------------------------------------------
// Worker side

/** The replies of a port, in order, to as many waiting callers (also in order). */
class Replies<T> {
  #queue: T[] = [];
  #waiting: ((m: T) => void)[] = [];
  constructor(port: MessagePort) {
    port.onmessage = (e: MessageEvent<T>) => {
      const waiting = this.#waiting.shift();
      if (waiting) waiting(e.data);
      else this.#queue.push(e.data);
    };
  }
  next(): Promise<T> {
    if (this.#queue.length > 0) return Promise.resolve(this.#queue.shift()!);
    return new Promise((resolve) => this.#waiting.push(resolve));
  }
}

/**
 * An input dataset inside a Worker whose records are pulled from the fused pass. Read once, as
 * in the pass itself.
 */
export class PortDataset extends Dataset {
  #port: MessagePort;
  #read = false;

  constructor(ref: DatasetRef, workspace: Workspace, port: MessagePort) {
    super(ref, workspace);
    this.#port = port;
  }

  #once(): void {
    if (this.#read) {
      throw safeError("Cannot stream records: a streamed input can be read once");
    }
    this.#read = true;
  }

  override [Symbol.asyncIterator](): AsyncIterator<unknown> {
    this.#once();
    const batches = this.#batches();
    return (async function* () {
      for await (const batch of batches) yield* batch;
    })()[Symbol.asyncIterator]();
  }

  override batches(): AsyncIterable<unknown[]> {
    this.#once();
    return this.#batches();
  }

  async *#batches(): AsyncIterable<unknown[]> {
    const port = this.#port;
    const replies = new Replies<InputReply>(port);
    try {
      for (let i = 0; i < PREFETCH; i++) port.postMessage({ type: "pull" } satisfies InputRequest);
      while (true) {
        const m = await replies.next();
        if (m.type === "end") return;
        if (m.type === "error") throw safeError(m.message);
        // The next chunks are on their way while this one is read.
        port.postMessage({ type: "pull" } satisfies InputRequest);
        yield m.type === "text" ? JSON.parse(m.text) as unknown[] : m.records;
      }
    } finally {
      port.close();
    }
  }
}

/**
 * The writer of a Worker task's streamed output: chunks go to the fused pass and each waits for
 * its acknowledgement. `close()` resolves to a dataset that stands for the streamed output.
 */
export function portWriter(
  port: MessagePort,
  name: string,
  ref: (records: number) => DatasetRef,
  workspace: Workspace,
): DatasetWriter {
  const replies = new Replies<OutputReply>(port);
  let parts: string[] = [];
  let written = 0;
  let failed: Error | undefined;
  let done: Dataset | undefined;
  const inFlight: Promise<unknown>[] = [];
  port.postMessage({ type: "open", name } satisfies OutputRequest);
  const expect = async (type: "ack" | "closed") => {
    const m = await replies.next();
    if (m.type === "error") throw failed = safeError(m.message);
    if (m.type !== type) {
      throw failed = safeError("Cannot stream records: the stream is out of step");
    }
    return m;
  };
  const send = async (text: string, records: number) => {
    port.postMessage({ type: "text", text, records } satisfies OutputRequest);
    const ack = expect("ack");
    ack.catch(() => {});
    inFlight.push(ack);
    if (inFlight.length >= IN_FLIGHT) await inFlight.shift();
  };
  const flush = async () => {
    if (parts.length === 0) return;
    const text = `[${parts.join(",")}]`;
    const records = parts.length;
    parts = [];
    await send(text, records);
  };
  const add = (record: unknown) => {
    // As a dataset would store it: the next task reads exactly what an unfused run would.
    const line = JSON.stringify(record);
    if (line === undefined) {
      throw failed = safeError(`Cannot stream records: record ${written + 1} is not JSON`);
    }
    parts.push(line);
    written++;
  };
  const write = async (record: unknown) => {
    if (failed) throw failed;
    add(record);
    if (parts.length >= CHUNK_RECORDS) await flush();
  };
  const writeBatch = async (records: readonly unknown[]) => {
    for (let i = 0; i < records.length; i++) {
      if (failed) throw failed;
      add(records[i]);
      if (parts.length >= CHUNK_RECORDS) await flush();
    }
  };
  return {
    write,
    writeBatch,
    writeAll: (source) => writeEach(write, source, writeBatch),
    close: async () => {
      if (failed) throw failed;
      if (done) return done;
      await flush();
      while (inFlight.length > 0) await inFlight.shift();
      port.postMessage({ type: "close" } satisfies OutputRequest);
      const m = await expect("closed");
      port.close();
      return done = new Dataset(ref((m as { records: number }).records), workspace);
    },
    abort: () => {
      if (!done) {
        try {
          port.postMessage({ type: "abort" } satisfies OutputRequest);
        } catch { /* already closed */ }
      }
      return Promise.resolve();
    },
  };
}
