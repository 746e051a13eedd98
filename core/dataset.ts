/**
 * Datasets: large data between tasks, written as a stream of JSON Lines in the run's workspace
 * and read back as an async iterable, with flat memory. Enclave datasets are encrypted with
 * AES-256-GCM under a per-run data key that lives only in the memory of the running process,
 * so a copy of `CARREL_HOME` never holds enclave data in plaintext.
 *
 * @module
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { basename, dirname, join, relative, resolve } from "node:path";
import { ownerId, ownerIsDead } from "./owner.ts";

/** The JSON form of a dataset handle, as stored in the state store. */
export interface DatasetRef {
  $dataset: {
    /** Path relative to `CARREL_HOME`. */
    path: string;
    records: number;
    encrypted: boolean;
    format: "jsonl";
    /** Handed to a fused downstream task in memory and never written (see core/run/fuse.ts). */
    streamed?: boolean;
    /** Kept in the state store's `dataset_chunks` instead of a file (shared datasets only). */
    stored?: "database";
  };
}

/** One chunk of a dataset kept in the state store: JSON Lines, never enclave data. */
export interface DatasetChunk {
  runId: string;
  /** The dataset's path, as a file would have it under `CARREL_HOME`. */
  path: string;
  seq: number;
  records: number;
  body: string;
}

/** Where shared datasets go when they are kept in the state store (the store implements it). */
export interface DatasetChunks {
  writeDatasetChunk(chunk: DatasetChunk): Promise<void>;
  readDatasetChunks(path: string, fromSeq: number, limit: number): Promise<DatasetChunk[]>;
  removeDataset(path: string): Promise<void>;
}

/**
 * Where a process keeps shared datasets: `files` under `CARREL_HOME` (default), or `database`
 * (the state store; for workers on machines without a common `CARREL_HOME`). From
 * `CARREL_DATASETS`.
 *
 * @example
 * ```ts
 * import { sharedDatasetsIn } from "./dataset.ts";
 * sharedDatasetsIn({ get: () => "database" }); // "database"
 * ```
 */
export function sharedDatasetsIn(
  env: { get(name: string): string | undefined } = Deno.env,
): "files" | "database" {
  const value = env.get("CARREL_DATASETS") ?? "files";
  if (value !== "files" && value !== "database") {
    throw new Error(`Cannot use CARREL_DATASETS="${value}": expected "files" or "database"`);
  }
  return value;
}

/** True for a dataset handle (stored form or live). */
export function isDatasetRef(value: unknown): value is DatasetRef {
  return typeof value === "object" && value !== null && "$dataset" in value &&
    typeof (value as DatasetRef).$dataset?.path === "string";
}

/**
 * A dataset handle: iterate it to read the records. What tasks receive in `ctx.inputs` and
 * return from `ctx.dataset(...).close()`.
 *
 * @example
 * ```ts ignore
 * const out = await ctx.dataset("events");
 * for (const row of rows) await out.write(row);
 * return await out.close(); // a Dataset
 * ```
 */
export class Dataset implements AsyncIterable<unknown> {
  constructor(readonly ref: DatasetRef, readonly workspace: Workspace) {}

  /** How many records it holds. */
  get records(): number {
    return this.ref.$dataset.records;
  }

  [Symbol.asyncIterator](): AsyncIterator<unknown> {
    return this.workspace.read(this.ref)[Symbol.asyncIterator]();
  }

  /** The stored form. */
  toJSON(): DatasetRef {
    return this.ref;
  }
}

/** Writes one dataset. */
export interface DatasetWriter {
  write(record: unknown): Promise<void>;
  /** Writes every record of an iterable; returns how many. */
  writeAll(records: Iterable<unknown> | AsyncIterable<unknown>): Promise<number>;
  /** Finishes the file and returns its handle. */
  close(): Promise<Dataset>;
  /** Deletes the partial file. */
  abort(): Promise<void>;
}

let dataKeyOf: (w: Workspace) => Uint8Array;

/**
 * What a sandbox Worker needs to open the same workspace: its folders and, for enclave tasks
 * only, the run's data key (in memory, by message; never written anywhere). Not public API.
 */
export function workspaceTransfer(w: Workspace, withKey: boolean): WorkspaceTransfer {
  return {
    home: w.home,
    runId: w.runId,
    enclaveDir: w.enclaveDir,
    ...(withKey ? { key: dataKeyOf(w) } : {}),
  };
}

/** The form of a workspace that crosses into a sandbox Worker. */
export interface WorkspaceTransfer {
  home: string;
  runId: string;
  enclaveDir: string;
  key?: Uint8Array;
}

const CHUNK = 256 * 1024;
const encoder = new TextEncoder();

/**
 * A run's workspace under `CARREL_HOME`: `runs/<dag>/<date>/` for shared datasets and
 * `enclave/<dag>/<date>/` (0700, files 0600, encrypted) for enclave ones.
 */
export class Workspace {
  readonly #dataKey: Uint8Array;
  readonly runDir: string;
  readonly enclaveDir: string;

  /**
   * `chunks`: keep shared (unencrypted) datasets in the state store instead of files. Enclave
   * datasets are files whatever this says.
   */
  constructor(
    readonly home: string,
    readonly runId: string,
    dataKey?: Uint8Array,
    readonly chunks?: DatasetChunks,
    /** The enclave scratch of another instance (a sandbox Worker writes into its parent's). */
    enclaveDir?: string,
  ) {
    const safe = runId.replace(/[^A-Za-z0-9_.@-]/g, "_").replace("@", "/").replace(/:/g, "");
    this.runDir = join(home, "runs", safe);
    // Per instance: its encrypted files are readable only with this instance's key anyway, and
    // two executions of one run's enclave work (workers) must not delete each other's scratch.
    // Named after its owner (host, pid): when that process is gone, its key is gone and the
    // files are useless; the next process to open the store (or `purge`) removes them.
    this.enclaveDir = enclaveDir ?? join(home, "enclave", safe, scratchName());
    this.#dataKey = dataKey ?? new Uint8Array(randomBytes(32));
  }

  static {
    dataKeyOf = (w) => w.#dataKey;
  }

  /** Opens a writer for a dataset of `taskId`. */
  async create(taskId: string, name: string, encrypted: boolean): Promise<DatasetWriter> {
    if (!/^[A-Za-z0-9_-]+$/.test(name)) {
      throw new Error(`Cannot create dataset "${name}": use letters, digits, "_" and "-"`);
    }
    if (!encrypted && this.chunks) return await this.#createStored(taskId, name, this.chunks);
    const dir = join(encrypted ? this.enclaveDir : this.runDir, taskId);
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    await Deno.chmod(dir, 0o700);
    if (encrypted) await Deno.chmod(this.enclaveDir, 0o700);
    const path = join(dir, `${name}.jsonl${encrypted ? ".enc" : ""}`);
    const file = await Deno.open(path, { write: true, create: true, truncate: true, mode: 0o600 });
    const key = this.#dataKey;
    let open = true;
    const closeFile = () => {
      if (open) {
        open = false;
        file.close();
      }
    };
    return jsonLinesWriter(
      (text) => {
        const bytes = encoder.encode(text);
        return writeFull(file, encrypted ? sealFrame(key, bytes) : bytes);
      },
      (records) => {
        closeFile();
        return new Dataset({
          $dataset: { path: relative(this.home, path), records, encrypted, format: "jsonl" },
        }, this);
      },
      async () => {
        closeFile();
        await Deno.remove(path).catch(() => {});
      },
    );
  }

  /** A writer of a shared dataset kept in the state store, in chunks of about CHUNK bytes. */
  async #createStored(taskId: string, name: string, chunks: DatasetChunks): Promise<DatasetWriter> {
    const path = relative(this.home, join(this.runDir, taskId, `${name}.jsonl`));
    // A new attempt rewrites the dataset from its first chunk.
    await chunks.removeDataset(path);
    let seq = 0;
    return jsonLinesWriter(
      (body, records) =>
        chunks.writeDatasetChunk({ runId: this.runId, path, seq: seq++, records, body }),
      (records) =>
        new Dataset({
          $dataset: { path, records, encrypted: false, format: "jsonl", stored: "database" },
        }, this),
      () => chunks.removeDataset(path).catch(() => {}),
    );
  }

  /** Reads a dataset kept in the state store, a few chunks at a time. */
  async *#readStored(ref: DatasetRef): AsyncIterable<unknown> {
    if (!this.chunks) {
      throw new Error(
        `Cannot read dataset ${ref.$dataset.path}: it is kept in the state store and this process does not use it for datasets (set CARREL_DATASETS=database)`,
      );
    }
    let seq = 0;
    while (true) {
      const page = await this.chunks.readDatasetChunks(ref.$dataset.path, seq, 8);
      if (page.length === 0) return;
      for (const chunk of page) {
        if (chunk.seq !== seq) {
          throw new Error(`Cannot read dataset ${ref.$dataset.path}: chunk ${seq} is missing`);
        }
        seq++;
        const body = chunk.body;
        let start = 0;
        let newline: number;
        while ((newline = body.indexOf("\n", start)) !== -1) {
          yield JSON.parse(body.slice(start, newline));
          start = newline + 1;
        }
      }
    }
  }

  /** A live handle for a stored reference. */
  open(ref: DatasetRef): Dataset {
    return new Dataset(ref, this);
  }

  /** Reads a dataset's records, streaming. */
  async *read(ref: DatasetRef): AsyncIterable<unknown> {
    if (ref.$dataset.stored === "database") {
      yield* this.#readStored(ref);
      return;
    }
    const path = resolve(this.home, ref.$dataset.path);
    if (!path.startsWith(resolve(this.home) + "/")) {
      throw new Error(`Cannot read dataset: its path leaves CARREL_HOME`);
    }
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch {
      throw new Error(
        `Cannot read dataset ${ref.$dataset.path}: the file is gone (purged, or an enclave dataset of an earlier process)`,
      );
    }
    const decoder = new TextDecoder();
    let pending = "";
    try {
      const chunks = ref.$dataset.encrypted ? openFrames(file, this.#dataKey) : plainChunks(file);
      for await (const bytes of chunks) {
        pending += decoder.decode(bytes, { stream: true });
        let newline: number;
        let start = 0;
        while ((newline = pending.indexOf("\n", start)) !== -1) {
          yield JSON.parse(pending.slice(start, newline));
          start = newline + 1;
        }
        pending = pending.slice(start);
      }
      pending += decoder.decode();
      if (pending.trim()) yield JSON.parse(pending);
    } finally {
      try {
        file.close();
      } catch { /* already closed */ }
    }
  }

  /** Deletes the enclave scratch of this run. */
  async removeEnclave(): Promise<void> {
    await Deno.remove(this.enclaveDir, { recursive: true }).catch(() => {});
    await removeEmptyParents(dirname(this.enclaveDir), join(this.home, "enclave"));
  }
}

/**
 * Writes every record of `source` with `write`; returns how many.
 *
 * @example
 * ```ts
 * import { writeEach } from "./dataset.ts";
 * const seen: unknown[] = [];
 * await writeEach(async (r) => { seen.push(r); }, [1, 2]); // 2
 * ```
 */
export async function writeEach(
  write: (record: unknown) => Promise<void>,
  source: Iterable<unknown> | AsyncIterable<unknown>,
): Promise<number> {
  let n = 0;
  for await (const record of source) {
    await write(record);
    n++;
  }
  return n;
}

/**
 * A dataset writer that buffers JSON Lines and hands each chunk of about CHUNK bytes (and how
 * many records it holds) to `flushChunk`; `finish` makes the handle once everything is flushed,
 * `discard` removes what was written.
 */
function jsonLinesWriter(
  flushChunk: (text: string, records: number) => Promise<void>,
  finish: (records: number) => Dataset,
  discard: () => Promise<void>,
): DatasetWriter {
  let buffer: string[] = [];
  let size = 0;
  let inChunk = 0;
  let records = 0;
  let closed = false;
  const flush = async () => {
    if (buffer.length === 0) return;
    const text = buffer.join("");
    const n = inChunk;
    buffer = [];
    size = 0;
    inChunk = 0;
    await flushChunk(text, n);
  };
  const write = async (record: unknown) => {
    if (closed) throw new Error(`Cannot write record ${records + 1}: the dataset is closed`);
    const line = JSON.stringify(record);
    if (line === undefined) throw new Error(`Cannot write record ${records + 1}: not JSON`);
    buffer.push(line, "\n");
    size += line.length + 1;
    inChunk++;
    records++;
    if (size >= CHUNK) await flush();
  };
  return {
    write,
    writeAll: (source) => writeEach(write, source),
    close: async () => {
      if (!closed) {
        closed = true;
        await flush();
      }
      return finish(records);
    },
    abort: async () => {
      closed = true;
      await discard();
    },
  };
}

/** The folders directly in `dir` (none when it does not exist). */
export async function subfolders(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) if (e.isDirectory) out.push(join(dir, e.name));
  } catch { /* none */ }
  return out;
}

const SEP = "~";

/** A scratch folder's name: this process's owner id (host, pid, nonce), and a random part. */
function scratchName(): string {
  const [host, pid, nonce] = ownerId().split(":");
  const safeHost = (host ?? "").replace(/[^A-Za-z0-9.-]/g, "_");
  return [safeHost, pid, nonce, crypto.randomUUID().slice(0, 8)].join(SEP);
}

/** The owner id (`host:pid:nonce`) a scratch folder's name says, or undefined for old names. */
function scratchOwner(name: string): string | undefined {
  const parts = name.split(SEP);
  if (parts.length !== 4 || !/^\d+$/.test(parts[1]!)) return undefined;
  return `${parts[0]}:${parts[1]}:${parts[2]}`;
}

/**
 * Removes the enclave scratch of processes that are gone (killed before they could clean up):
 * its data key died with them, so the files can never be read again. Returns how many scratch
 * folders were (or, with `dryRun`, would be) removed. Scratch of live processes, of other hosts,
 * and scratch named before owners were recorded, is left alone (`purge` removes it by age).
 *
 * @example
 * ```ts ignore
 * import { removeDeadScratch } from "./dataset.ts";
 * const removed = await removeDeadScratch(".carrel");
 * ```
 */
export async function removeDeadScratch(home: string, dryRun = false): Promise<number> {
  const root = join(home, "enclave");
  let removed = 0;
  for (const dag of await subfolders(root)) {
    for (const date of await subfolders(dag)) {
      for (const scratch of await subfolders(date)) {
        const owner = scratchOwner(basename(scratch));
        if (owner === undefined || !ownerIsDead(owner)) continue;
        removed++;
        if (!dryRun) await Deno.remove(scratch, { recursive: true }).catch(() => {});
      }
      if (!dryRun) await removeEmptyParents(date, root);
    }
  }
  return removed;
}

async function removeEmptyParents(dir: string, stop: string): Promise<void> {
  let current = dir;
  while (current.startsWith(stop) && current !== stop) {
    try {
      await Deno.remove(current);
    } catch {
      return;
    }
    current = dirname(current);
  }
}

async function writeFull(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await file.write(bytes.subarray(offset));
}

function sealFrame(key: Uint8Array, plain: Uint8Array): Uint8Array {
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", key, iv);
  const body = Buffer.concat([cipher.update(plain), cipher.final()]);
  const tag = cipher.getAuthTag();
  const frame = new Uint8Array(4 + 12 + body.length + 16);
  new DataView(frame.buffer).setUint32(0, body.length);
  frame.set(iv, 4);
  frame.set(body, 16);
  frame.set(tag, 16 + body.length);
  return frame;
}

async function* plainChunks(file: Deno.FsFile): AsyncIterable<Uint8Array> {
  const buffer = new Uint8Array(CHUNK);
  while (true) {
    const n = await file.read(buffer);
    if (n === null) return;
    yield buffer.slice(0, n);
  }
}

async function readExactly(file: Deno.FsFile, n: number): Promise<Uint8Array | null> {
  const out = new Uint8Array(n);
  let offset = 0;
  while (offset < n) {
    const got = await file.read(out.subarray(offset));
    if (got === null) {
      if (offset === 0) return null;
      throw new Error("Cannot read enclave dataset: the file is truncated");
    }
    offset += got;
  }
  return out;
}

async function* openFrames(file: Deno.FsFile, key: Uint8Array): AsyncIterable<Uint8Array> {
  while (true) {
    const header = await readExactly(file, 16);
    if (header === null) return;
    const length = new DataView(header.buffer).getUint32(0);
    const rest = await readExactly(file, length + 16);
    if (rest === null) throw new Error("Cannot read enclave dataset: the file is truncated");
    const decipher = createDecipheriv("aes-256-gcm", key, header.subarray(4, 16));
    decipher.setAuthTag(rest.subarray(length));
    try {
      yield new Uint8Array(
        Buffer.concat([decipher.update(rest.subarray(0, length)), decipher.final()]),
      );
    } catch {
      throw new Error(
        "Cannot read enclave dataset: it was written by another process (its key is gone) or altered",
      );
    }
  }
}

/**
 * Reads records from whatever an upstream task produced: an array, a dataset, or any iterable.
 *
 * @example
 * ```ts
 * import { records } from "./dataset.ts";
 * for await (const r of records([{ id: 1 }])) console.log(r);
 * ```
 */
export async function* records(input: unknown): AsyncIterable<Record<string, unknown>> {
  if (input === null || input === undefined) return;
  if (Array.isArray(input)) {
    for (const r of input) yield r as Record<string, unknown>;
    return;
  }
  if (typeof input === "object" && Symbol.asyncIterator in input) {
    for await (const r of input as AsyncIterable<unknown>) yield r as Record<string, unknown>;
    return;
  }
  if (typeof input === "object" && Symbol.iterator in input) {
    for (const r of input as Iterable<unknown>) yield r as Record<string, unknown>;
    return;
  }
  throw new Error(
    `Cannot read records: expected an array or a dataset, got ${
      typeof input === "object" ? "an object" : typeof input
    }`,
  );
}
