/**
 * Records streamed between a fused pass and the sandbox Workers of its tasks. In a fused pass
 * (`core/run/fuse.ts`) records go from task to task through in-memory pipes; a strict task runs
 * in its own Worker, so its end of a pipe crosses over a `MessagePort`: its input is pulled a
 * chunk at a time (the pull is the backpressure), its output is pushed a chunk at a time and each
 * chunk is acknowledged once the pipe took it. Records cross as structured clones, in memory,
 * never through a file; errors cross as privacy-safe messages. Not part of the public API.
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

/** Records per chunk sent over a port. */
const CHUNK_RECORDS = 512;

/**
 * Attached to a task's context by a fused pass when the task's output streams to the next task:
 * what the task's first dataset must be, and the handle that stands for its output.
 */
export const STREAM_OUTPUT: unique symbol = Symbol("carrel.streamOutput");

/** What {@link STREAM_OUTPUT} holds. */
export interface StreamOutput {
  /** Opens the pipe's writer (once), under the dataset name the task chose. */
  open(name: string): DatasetWriter;
  /** The pass's handle for this task's output (what a successful attempt must return). */
  readonly handle: Dataset;
}

/** Messages on an input port, Worker to parent. */
type InputRequest = { type: "pull" };
/** Messages on an input port, parent to Worker. */
type InputReply =
  | { type: "chunk"; records: unknown[] }
  | { type: "end" }
  | { type: "error"; message: string };
/** Messages on an output port, Worker to parent. */
type OutputRequest =
  | { type: "open"; name: string }
  | { type: "chunk"; records: unknown[] }
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

/** Serves `dataset`'s records over a new port, a chunk per pull. */
export function serveInput(dataset: Dataset): Served {
  const records = dataset[Symbol.asyncIterator]();
  return serve<InputRequest, InputReply>(async (m, reply) => {
    if (m.type !== "pull") return;
    const chunk: unknown[] = [];
    while (chunk.length < CHUNK_RECORDS) {
      const next = await records.next();
      if (next.done === true) break;
      chunk.push(next.value);
    }
    reply(chunk.length > 0 ? { type: "chunk", records: chunk } : { type: "end" });
  });
}

/** Takes a Worker's output over a new port into `output` (the pipe to the next task). */
export function serveOutput(output: StreamOutput): Served {
  let writer: DatasetWriter | undefined;
  let records = 0;
  return serve<OutputRequest, OutputReply>(async (m, reply) => {
    switch (m.type) {
      case "open":
        writer = output.open(m.name);
        break;
      case "chunk":
        for (const record of m.records) await writer!.write(record);
        records += m.records.length;
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

/** One reply at a time from a port, in order. */
class Replies<T> {
  #queue: T[] = [];
  #waiting: ((m: T) => void) | undefined;
  constructor(port: MessagePort) {
    port.onmessage = (e: MessageEvent<T>) => {
      const waiting = this.#waiting;
      this.#waiting = undefined;
      if (waiting) waiting(e.data);
      else this.#queue.push(e.data);
    };
  }
  next(): Promise<T> {
    const queued = this.#queue.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    return new Promise((resolve) => this.#waiting = resolve);
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

  override [Symbol.asyncIterator](): AsyncIterator<unknown> {
    if (this.#read) {
      throw safeError("Cannot stream records: a streamed input can be read once");
    }
    this.#read = true;
    return this.#records()[Symbol.asyncIterator]();
  }

  async *#records(): AsyncIterable<unknown> {
    const port = this.#port;
    const replies = new Replies<InputReply>(port);
    try {
      while (true) {
        port.postMessage({ type: "pull" } satisfies InputRequest);
        const m = await replies.next();
        if (m.type === "end") return;
        if (m.type === "error") throw safeError(m.message);
        yield* m.records;
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
  let chunk: unknown[] = [];
  let failed: Error | undefined;
  let done: Dataset | undefined;
  port.postMessage({ type: "open", name } satisfies OutputRequest);
  const expect = async (type: "ack" | "closed") => {
    const m = await replies.next();
    if (m.type === "error") throw failed = safeError(m.message);
    if (m.type !== type) {
      throw failed = safeError("Cannot stream records: the stream is out of step");
    }
    return m;
  };
  const flush = async () => {
    if (chunk.length === 0) return;
    const records = chunk;
    chunk = [];
    port.postMessage({ type: "chunk", records } satisfies OutputRequest);
    await expect("ack");
  };
  const write = async (record: unknown) => {
    if (failed) throw failed;
    chunk.push(record);
    if (chunk.length >= CHUNK_RECORDS) await flush();
  };
  return {
    write,
    writeAll: (source) => writeEach(write, source),
    close: async () => {
      if (failed) throw failed;
      if (done) return done;
      await flush();
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
