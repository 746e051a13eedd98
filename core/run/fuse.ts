/**
 * Operator fusion: consecutive record-wise tasks of one zone run as one streaming pass. Records
 * flow between them in memory, in chunks, through bounded pipes instead of being written to a
 * dataset by one task and read back by the next; each task still runs through the attempt runner
 * (`runAttempt`) with its own context, signal, counts and job key, and the decider still records
 * each task's start and end on its own (a pass holds the outcomes of all but its head until the
 * decider starts each task, in order).
 *
 * A chain is fused when each task declares `stream: true` (it reads each input once, start to
 * end, and hands its records on in the first dataset it creates that is not value-free; the head
 * may instead declare `stream: "output"`, as a privacy checkpoint does: it reads its input twice,
 * so it is never fed by a pipe), and each later task is in the driver's scope (a worker's enclave
 * unit), is the only downstream of the task before it and has no other upstream, runs in the zone
 * of that task's output (enclave tasks feed enclave tasks; a checkpoint's published records feed
 * shared tasks, as its dataset would), triggers on `all_success` and has not run yet.
 *
 * What crosses a pipe is exactly what a dataset would give back: records with JSON semantics
 * (dates as ISO strings, no `undefined` keys, copies rather than shared objects), so a fused run
 * gives byte-identical outputs to an unfused one. Nothing spills: enclave records stay in memory.
 * A task in a strict sandbox joins a pass like any other: its Worker reaches its ends of the pipes
 * over `MessagePort`s (see `../sandbox/stream_ports.ts`), with only its own permissions.
 *
 * When a pass breaks (a task fails, skips, stops reading early, or hands on something that is
 * not its pipe), the first task that broke it keeps its outcome; the tasks before it, which did
 * not finish, are run again in a shorter pass whose last task writes its output as a dataset
 * (so a retry reads it), and only then are their ends reported. Tasks after it are not reported:
 * the decider starts them later as usual. Tasks that finished before the pass (its head's
 * upstreams) are never run again.
 *
 * @module
 */
import type { ResolvedDag, ResolvedTask, TaskContext } from "../dag.ts";
import { Dataset, jsonRecord, type Workspace, writeEach } from "../dataset.ts";
import { markPrivacySafe } from "../privacy/privacy_safe.ts";
import {
  STREAM_CHUNKS,
  STREAM_OUTPUT,
  type StreamChunk,
  type StreamOutput,
  type StreamWriter,
} from "../sandbox/stream_ports.ts";
import { type AttemptOutcome, runAttempt, type RunContext, taskContext } from "./attempt.ts";
import { attemptOf, type TaskView } from "./decide.ts";

/** Records per chunk handed through a pipe (a Worker's chunks keep their own size). */
const CHUNK_RECORDS = 1024;
/** Chunks a pipe holds before its writer waits (bounded memory). */
const PIPE_CHUNKS = 4;

/** Whether a task's output may stream to a fused successor (`stream: true` or `"output"`). */
export function streams(t: ResolvedTask): boolean {
  const stream = (t.spec as { stream?: unknown }).stream;
  return stream === true || stream === "output";
}

/** Whether a task reads its input once, start to end, so that a pipe may feed it. */
function readsOnce(t: ResolvedTask): boolean {
  return (t.spec as { stream?: unknown }).stream === true;
}

/**
 * The chain of tasks fused with `id` as its head: `[id]` alone when nothing fuses.
 *
 * @example
 * ```ts ignore
 * fusedChain(dag, "tokens", view); // ["tokens", "gate"]
 * ```
 */
export function fusedChain(
  dag: ResolvedDag,
  id: string,
  view: ReadonlyMap<string, TaskView>,
  scope?: ReadonlySet<string>,
): string[] {
  const chain = [id];
  let t = dag.tasks.get(id)!;
  // A strict task's end of a pipe crosses into its Worker over a port (sandbox/stream_ports.ts).
  if (!streams(t)) return chain;
  while (true) {
    const down = dag.downstream.get(t.id) ?? [];
    if (down.length !== 1) break;
    const next = dag.tasks.get(down[0]!)!;
    const v = view.get(next.id);
    if (
      !readsOnce(next) || next.after.length !== 1 ||
      next.zone !== t.outputZone ||
      (scope !== undefined && !scope.has(next.id)) ||
      next.triggerRule !== "all_success" || v === undefined || v.state !== "scheduled"
    ) break;
    chain.push(next.id);
    t = next;
  }
  return chain;
}

/** An outcome a pass computed for a task the decider has not started yet. */
export interface HeldOutcome {
  attempt: number;
  outcome: AttemptOutcome;
}

/** What {@link runFusedPass} needs. */
export interface FusedPassRequest {
  dag: ResolvedDag;
  /** The chain, head first (from {@link fusedChain}). */
  chain: readonly string[];
  view: ReadonlyMap<string, TaskView>;
  /** The head's attempt number, as the decider started it. */
  attempt: number;
  /** The head's inputs and their tags. */
  inputs: Record<string, unknown>;
  inputTags: Record<string, readonly string[]>;
  runContext: RunContext;
  signal: AbortSignal;
  /** Receives the outcomes of the chain's later tasks, to be handed over when each starts. */
  held: Map<string, HeldOutcome>;
}

/**
 * Runs a fused chain and returns its head's outcome; the outcomes of the later tasks go to
 * `held` (only those that are final and valid: see the module doc).
 *
 * @example
 * ```ts ignore
 * const held = new Map();
 * const head = await runFusedPass({ dag, chain, view, attempt: 1, inputs, inputTags, runContext, signal, held });
 * ```
 */
export async function runFusedPass(request: FusedPassRequest): Promise<AttemptOutcome> {
  const { dag, view } = request;
  const stages = request.chain.map((id, i) => {
    const t = dag.tasks.get(id)!;
    const v = view.get(id)!;
    const attempt = i === 0
      ? request.attempt
      : attemptOf(t, { tryNumber: v.tryNumber + 1, maxTries: v.maxTries });
    return { task: t, attempt, jobKey: v.jobKey };
  });
  const reports = await pass(request, stages);
  const [head, ...rest] = reports;
  for (const r of rest) request.held.set(r.task.id, { attempt: r.attempt, outcome: r.outcome });
  return head!.outcome;
}

interface Stage {
  task: ResolvedTask;
  attempt: number;
  jobKey: string;
}

interface Report extends Stage {
  outcome: AttemptOutcome;
}

/** One pass over `stages`; returns the reportable outcomes, in chain order (at least the head). */
async function pass(request: FusedPassRequest, stages: readonly Stage[]): Promise<Report[]> {
  const n = stages.length;
  const pipes = stages.slice(0, -1).map((s, i) => new Pipe(i, s.task, request.runContext));
  const outcomes = await Promise.all(stages.map(async (stage, i) => {
    const input = i > 0 ? pipes[i - 1]! : undefined;
    const output = i < n - 1 ? pipes[i]! : undefined;
    const inputs = input ? { [input.from.id]: input.handle } : request.inputs;
    const inputTags = input
      ? { [input.from.id]: input.from.outputTags as readonly string[] }
      : request.inputTags;
    const base = taskContext(request.runContext, stage.task, stage.jobKey, inputs, inputTags);
    const outcome = await runAttempt({
      task: stage.task,
      attempt: stage.attempt,
      signal: request.signal,
      context: output
        ? (b) => {
          const ctx = base(b);
          const dataset: TaskContext["dataset"] = (name, options) =>
            options?.valueFree !== true && !output.opened
              ? Promise.resolve(output.open(name ?? "data"))
              : ctx.dataset(name, options);
          // A sandboxed task opens the pipe from its Worker, through this.
          const stream: StreamOutput = {
            open: (name) => output.open(name),
            handle: output.handle,
          };
          return { ...ctx, dataset, [STREAM_OUTPUT]: stream };
        }
        : base,
    });
    // Whatever this stage did not finish breaks its pipes, so no neighbour waits forever.
    if (input && !input.drained) input.breakBy(i, `"${stage.task.id}" stopped reading`);
    if (output && !output.closed) {
      output.breakBy(i, `"${stage.task.id}" ended before handing on all its records`);
    }
    return outcome;
  }));
  const clean = (i: number) => {
    const o = outcomes[i]!;
    if (o.kind !== "success") return false;
    if (i > 0 && !pipes[i - 1]!.drained) return false;
    return i === n - 1 || (o.value === pipes[i]!.handle && pipes[i]!.closed);
  };
  const victim = (i: number) =>
    outcomes[i]!.kind === "failed" &&
    ((i > 0 && pipes[i - 1]!.brokenBy === i - 1) || (i < n - 1 && pipes[i]!.brokenBy === i + 1));
  const all = stages.map((s, i) => ({ ...s, outcome: outcomes[i]! }));
  let origin = all.findIndex((_, i) => !clean(i) && !victim(i));
  if (origin === -1) origin = all.findIndex((_, i) => !clean(i));
  if (origin === -1) return all;
  const broken = all[origin]!;
  const before = all.slice(0, origin);
  const beforeClean = before.every((_, i) => clean(i));
  // The stage that broke the pass keeps its outcome; those before it are reported as they are
  // when they all finished and nobody needs their output again, else they run again, their
  // last one writing a dataset (a failed stage's retry reads it).
  if (broken.outcome.kind === "success" && broken.outcome.value instanceof StreamedDataset) {
    // It finished without reading all its input, but its own output went into a pipe that its
    // reader consumed: it runs again too, as the last task of the shorter pass.
    return await pass(request, stages.slice(0, origin + 1));
  }
  if (origin === 0) return [broken];
  if (beforeClean && broken.outcome.kind !== "failed") return [...before, broken];
  const again = await pass(request, stages.slice(0, origin));
  const finished = again.length === origin && again.every((r) => r.outcome.kind === "success");
  return finished ? [...again, broken] : again;
}

/** What a pipe's reader or writer gets once the pass broke. */
function brokenError(message: string): Error {
  return markPrivacySafe(new Error(`Cannot stream records: ${message}`));
}

/**
 * A bounded, chunked channel between two fused tasks: the writer side is the upstream's
 * `DatasetWriter`, the reader side its output handle (a `Dataset` that can be read once). A chunk
 * is an array of records (copied as a dataset would give them back), or the JSON text of such an
 * array when a sandbox Worker wrote it: a Worker's chunk then goes to the next Worker as text,
 * and is parsed only where it is read, so the pass itself touches no record.
 */
class Pipe {
  readonly handle: StreamedDataset;
  opened = false;
  closed = false;
  drained = false;
  /** The stage index that broke the pipe first, or -1. */
  brokenBy = -1;
  #error: Error | undefined;
  #chunks: StreamChunk[] = [];
  #chunk: unknown[] = [];
  #records = 0;
  #space: (() => void) | undefined;
  #data: (() => void) | undefined;

  /** `index`: the writing stage's position in the pass (the reader is the next one). */
  constructor(readonly index: number, readonly from: ResolvedTask, run: RunContext) {
    this.handle = new StreamedDataset(this, from, run);
  }

  breakBy(stage: number, message: string): void {
    if (this.#error) return;
    this.brokenBy = stage;
    this.#error = brokenError(message);
    this.#wake();
  }

  #wake(): void {
    const space = this.#space;
    const data = this.#data;
    this.#space = this.#data = undefined;
    space?.();
    data?.();
  }

  #add(record: unknown): void {
    const copy = jsonRecord(record);
    if (copy === undefined) throw brokenError(`record ${this.#records + 1} is not JSON`);
    this.#chunk.push(copy);
    this.#records++;
  }

  open(name: string): StreamWriter {
    this.opened = true;
    this.handle.name(name);
    const write = async (record: unknown) => {
      if (this.#error) throw this.#error;
      this.#add(record);
      if (this.#chunk.length >= CHUNK_RECORDS) await this.#push();
    };
    const writeBatch = async (records: readonly unknown[]) => {
      for (let i = 0; i < records.length; i++) {
        if (this.#error) throw this.#error;
        this.#add(records[i]);
        if (this.#chunk.length >= CHUNK_RECORDS) await this.#push();
      }
    };
    const writeJsonChunk = async (text: string, records: number) => {
      if (this.#error) throw this.#error;
      await this.#push();
      this.#records += records;
      await this.#enqueue(text);
    };
    return {
      write,
      writeBatch,
      writeJsonChunk,
      writeAll: (source) => writeEach(write, source, writeBatch),
      close: async () => {
        if (this.#error) throw this.#error;
        if (!this.closed) {
          await this.#push();
          this.closed = true;
          this.handle.finish(this.#records);
          this.#wake();
        }
        return this.handle;
      },
      abort: () => {
        this.breakBy(this.index, `"${this.from.id}" abandoned its output`);
        return Promise.resolve();
      },
    };
  }

  async #push(): Promise<void> {
    if (this.#chunk.length === 0) return;
    const chunk = this.#chunk;
    this.#chunk = [];
    await this.#enqueue(chunk);
  }

  async #enqueue(chunk: StreamChunk): Promise<void> {
    while (this.#chunks.length >= PIPE_CHUNKS && !this.#error) {
      await new Promise<void>((resolve) => this.#space = resolve);
    }
    if (this.#error) throw this.#error;
    this.#chunks.push(chunk);
    const data = this.#data;
    this.#data = undefined;
    data?.();
  }

  /** The chunks as they were written: arrays of records, or JSON text from a Worker. */
  async *chunks(): AsyncIterable<StreamChunk> {
    while (true) {
      if (this.#error) throw this.#error;
      const chunk = this.#chunks.shift();
      if (chunk !== undefined) {
        const space = this.#space;
        this.#space = undefined;
        space?.();
        yield chunk;
        continue;
      }
      if (this.closed) {
        this.drained = true;
        return;
      }
      await new Promise<void>((resolve) => this.#data = resolve);
    }
  }

  /** The records in arrays. */
  async *batches(): AsyncIterable<unknown[]> {
    for await (const chunk of this.chunks()) {
      yield typeof chunk === "string" ? JSON.parse(chunk) as unknown[] : chunk;
    }
  }
}

/**
 * A fused task's output: its records went to the next task in memory and were never stored.
 * Its reference says so (`streamed: true`); it can be read once, by the task it was fused with.
 */
class StreamedDataset extends Dataset {
  #pipe: Pipe;
  #read = false;
  #task: string;

  constructor(pipe: Pipe, from: ResolvedTask, run: RunContext) {
    super({
      $dataset: {
        path: streamPath(run.workspace, from.id, "data"),
        records: 0,
        encrypted: from.outputZone === "enclave",
        format: "jsonl",
        streamed: true,
      },
    }, run.workspace);
    this.#pipe = pipe;
    this.#task = from.id;
  }

  name(name: string): void {
    this.ref.$dataset.path = streamPath(this.workspace, this.#task, name);
  }

  finish(records: number): void {
    this.ref.$dataset.records = records;
  }

  #once(): void {
    if (this.#read) {
      throw brokenError(
        `the output of "${this.#task}" was streamed to the task fused with it and is not stored`,
      );
    }
    this.#read = true;
  }

  override [Symbol.asyncIterator](): AsyncIterator<unknown> {
    this.#once();
    const pipe = this.#pipe;
    return (async function* () {
      for await (const batch of pipe.batches()) yield* batch;
    })()[Symbol.asyncIterator]();
  }

  override batches(): AsyncIterable<unknown[]> {
    this.#once();
    return this.#pipe.batches();
  }

  /** The pipe's chunks as written (for a sandbox Worker's input port). */
  [STREAM_CHUNKS](): AsyncIterable<StreamChunk> {
    this.#once();
    return this.#pipe.chunks();
  }
}

function streamPath(ws: Workspace, taskId: string, name: string): string {
  const dir = ws.runDir.startsWith(ws.home) ? ws.runDir.slice(ws.home.length + 1) : ws.runDir;
  return `${dir}/${taskId}/${name}.stream`;
}
