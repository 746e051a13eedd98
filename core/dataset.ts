/**
 * Datasets: large data between tasks, written as a stream of JSON Lines in the run's workspace
 * and read back as an async iterable, with flat memory. Enclave datasets are encrypted with
 * AES-256-GCM under a per-run data key that lives only in the memory of the running process,
 * so a copy of `CARREL_HOME` never holds enclave data in plaintext.
 *
 * @module
 */
import { randomBytes } from "node:crypto";
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

  /**
   * The records in arrays of a few hundred, in order: the same records as iterating the dataset,
   * with one await per array instead of one per record.
   */
  batches(): AsyncIterable<unknown[]> {
    return this.workspace.readBatches(this.ref);
  }

  /** The stored form. */
  toJSON(): DatasetRef {
    return this.ref;
  }
}

/** Writes one dataset. */
export interface DatasetWriter {
  write(record: unknown): Promise<void>;
  /** Writes records in order, as `write` would one by one (the array is not kept). */
  writeBatch(records: readonly unknown[]): Promise<void>;
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

  #cipherKey: Promise<CryptoKey> | undefined;

  /** The data key as a WebCrypto AES-GCM key (not extractable), imported once. */
  #cipher(): Promise<CryptoKey> {
    return this.#cipherKey ??= crypto.subtle.importKey(
      "raw",
      this.#dataKey as Uint8Array<ArrayBuffer>,
      "AES-GCM",
      false,
      ["encrypt", "decrypt"],
    );
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
    const cipher = encrypted ? await this.#cipher() : undefined;
    let open = true;
    const closeFile = () => {
      if (open) {
        open = false;
        file.close();
      }
    };
    // One chunk is sealed and written while the next is filled: the encryption runs off this
    // thread (WebCrypto), the writes stay in order.
    let tail: Promise<void> = Promise.resolve();
    return jsonLinesWriter(
      (text) => {
        const bytes = encoder.encode(text);
        const sealed = cipher ? sealFrame(cipher, bytes) : Promise.resolve(bytes);
        const previous = tail;
        tail = (async () => {
          const frame = await sealed;
          await previous;
          await writeFull(file, frame);
        })();
        tail.catch(() => {});
        return previous;
      },
      async (records) => {
        await tail;
        closeFile();
        return new Dataset({
          $dataset: { path: relative(this.home, path), records, encrypted, format: "jsonl" },
        }, this);
      },
      async () => {
        await tail.catch(() => {});
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

  /** Reads a dataset kept in the state store, a few chunks at a time: each chunk's lines. */
  async *#readStoredLines(ref: DatasetRef): AsyncIterable<string> {
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
        const cut = chunk.body.lastIndexOf("\n");
        if (cut !== -1) yield chunk.body.slice(0, cut + 1);
      }
    }
  }

  /** A live handle for a stored reference. */
  open(ref: DatasetRef): Dataset {
    return new Dataset(ref, this);
  }

  /** Reads a dataset's records, streaming. */
  async *read(ref: DatasetRef): AsyncIterable<unknown> {
    for await (const batch of this.readBatches(ref)) yield* batch;
  }

  /**
   * Reads a dataset's records, streaming, in arrays: each chunk of the file (or the store) is
   * parsed as one JSON array of its complete lines, which is several times faster than one
   * `JSON.parse` per line and gives the same values.
   */
  async *readBatches(ref: DatasetRef): AsyncIterable<unknown[]> {
    for await (const text of this.#readJsonLines(ref)) {
      const batch = parseLines(text);
      if (batch.length > 0) yield batch;
    }
  }

  /**
   * A dataset's stored text: chunks of complete JSON Lines, each line ending with a newline
   * (decrypted when the dataset is encrypted).
   */
  async *#readJsonLines(ref: DatasetRef): AsyncIterable<string> {
    if (ref.$dataset.stored === "database") {
      yield* this.#readStoredLines(ref);
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
      const chunks = ref.$dataset.encrypted
        ? openFrames(file, await this.#cipher())
        : plainChunks(file);
      for await (const bytes of chunks) {
        pending += decoder.decode(bytes, { stream: true });
        const cut = pending.lastIndexOf("\n");
        if (cut === -1) continue;
        const text = pending.slice(0, cut + 1);
        pending = pending.slice(cut + 1);
        yield text;
      }
      pending += decoder.decode();
      if (pending.trim()) yield `${pending}\n`;
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
 * Writes every record of `source` with `write`; returns how many. A source with `batches()` (a
 * dataset, {@linkcode batched} records) goes array by array through `writeBatch` when given.
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
  writeBatch?: (records: readonly unknown[]) => Promise<void>,
): Promise<number> {
  let n = 0;
  if (writeBatch !== undefined && hasBatches(source)) {
    for await (const batch of source.batches()) {
      await writeBatch(batch);
      n += batch.length;
    }
    return n;
  }
  for await (const record of source) {
    await write(record);
    n++;
  }
  return n;
}

/** Records that can also be read an array at a time (a dataset, {@linkcode batched}). */
export interface Batched<T> extends AsyncIterable<T> {
  /** The same records, in the same order, in arrays. */
  batches(): AsyncIterable<T[]>;
}

function hasBatches(value: unknown): value is Batched<unknown> {
  return typeof value === "object" && value !== null &&
    typeof (value as { batches?: unknown }).batches === "function";
}

/**
 * Records produced an array at a time, readable either way: `for await` gives them one by one,
 * `batches()` array by array (one await per array: what record-wise operators use in a fused
 * pass). `source` is called once per reading.
 *
 * @example
 * ```ts
 * import { batched } from "./dataset.ts";
 * const rows = batched(async function* () { yield [1, 2]; yield [3]; });
 * for await (const batch of rows.batches()) console.log(batch.length); // 2, then 1
 * ```
 */
export function batched<T>(source: () => AsyncIterable<T[]>): Batched<T> {
  return {
    batches: source,
    async *[Symbol.asyncIterator]() {
      for await (const batch of source()) yield* batch;
    },
  };
}

/** Records per array when {@linkcode recordBatches} groups a record-by-record source. */
const BATCH_RECORDS = 512;

/**
 * The records of whatever an upstream task produced (an array, a dataset, any iterable), in
 * arrays: a dataset's own batches, an array's slices, an iterable's records grouped.
 *
 * @example
 * ```ts
 * import { recordBatches } from "./dataset.ts";
 * for await (const batch of recordBatches([{ id: 1 }, { id: 2 }])) console.log(batch.length); // 2
 * ```
 */
export async function* recordBatches(
  input: unknown,
): AsyncIterable<Record<string, unknown>[]> {
  if (input === null || input === undefined) return;
  if (Array.isArray(input)) {
    for (let i = 0; i < input.length; i += BATCH_RECORDS) {
      yield input.slice(i, i + BATCH_RECORDS) as Record<string, unknown>[];
    }
    return;
  }
  if (hasBatches(input)) {
    for await (const batch of input.batches()) {
      if (batch.length > 0) yield batch as Record<string, unknown>[];
    }
    return;
  }
  let batch: Record<string, unknown>[] = [];
  for await (const r of records(input)) {
    batch.push(r);
    if (batch.length >= BATCH_RECORDS) {
      yield batch;
      batch = [];
    }
  }
  if (batch.length > 0) yield batch;
}

/**
 * Parses JSON Lines text (each line ending with a newline) as one array. A dataset's lines are
 * `JSON.stringify` output (never a raw newline inside), so joining them with commas makes one JSON
 * array; if that fails (a line is not JSON), the lines are parsed one by one, so the error is the
 * one that line gives.
 */
function parseLines(text: string): unknown[] {
  const lines = text.slice(0, -1);
  try {
    return JSON.parse(`[${lines.replaceAll("\n", ",")}]`) as unknown[];
  } catch {
    return lines.split("\n").map((line) => JSON.parse(line));
  }
}

/**
 * A record as a dataset would give it back (`JSON.parse(JSON.stringify(record))`), without the
 * text when the record is flat: strings, finite numbers, booleans, null and dates. `undefined`
 * when the record has no JSON form. What a fused pass hands on, so that fused and unfused runs
 * give the same bytes.
 *
 * @example
 * ```ts
 * import { jsonRecord } from "./dataset.ts";
 * jsonRecord({ at: new Date(0), n: -0, u: undefined }); // { at: "1970-01-01T00:00:00.000Z", n: 0 }
 * ```
 */
export function jsonRecord(record: unknown): unknown {
  if (
    typeof record === "object" && record !== null && !Array.isArray(record) &&
    Object.getPrototypeOf(record) === Object.prototype &&
    typeof (record as { toJSON?: unknown }).toJSON !== "function"
  ) {
    if (isFlatJson(record as Record<string, unknown>)) return { ...record };
    const out: Record<string, unknown> = {};
    const keys = Object.keys(record);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const v = (record as Record<string, unknown>)[key];
      switch (typeof v) {
        case "string":
        case "boolean":
          out[key] = v;
          break;
        case "number":
          out[key] = Number.isFinite(v) ? (v === 0 ? 0 : v) : null;
          break;
        case "undefined":
        case "function":
        case "symbol":
          break;
        default:
          if (v === null) out[key] = null;
          else if (v instanceof Date) out[key] = v.toJSON();
          else {
            const text = JSON.stringify(v);
            if (text !== undefined) out[key] = JSON.parse(text);
          }
      }
    }
    return out;
  }
  const text = JSON.stringify(record);
  return text === undefined ? undefined : JSON.parse(text);
}

/**
 * Whether a plain object's copy is already its JSON form: string, boolean, null and finite
 * number values only (not -0), no symbol keys. Then a spread copy is what a dataset gives back,
 * made several times faster than key by key.
 */
function isFlatJson(record: Record<string, unknown>): boolean {
  for (const key in record) {
    const v = record[key];
    const t = typeof v;
    if (t === "string" || t === "boolean" || v === null) continue;
    if (t === "number" && Number.isFinite(v) && (v !== 0 || 1 / (v as number) > 0)) continue;
    return false;
  }
  return Object.getOwnPropertySymbols(record).length === 0;
}

/**
 * A dataset writer that buffers JSON Lines and hands each chunk of about CHUNK bytes (and how
 * many records it holds) to `flushChunk`; `finish` makes the handle once everything is flushed,
 * `discard` removes what was written.
 */
function jsonLinesWriter(
  flushChunk: (text: string, records: number) => Promise<void>,
  finish: (records: number) => Dataset | Promise<Dataset>,
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
  /** Buffers one record's line; true when the buffer is due to be flushed. */
  const append = (record: unknown): boolean => {
    if (closed) throw new Error(`Cannot write record ${records + 1}: the dataset is closed`);
    const line = JSON.stringify(record);
    if (line === undefined) throw new Error(`Cannot write record ${records + 1}: not JSON`);
    buffer.push(line, "\n");
    size += line.length + 1;
    inChunk++;
    records++;
    return size >= CHUNK;
  };
  const write = async (record: unknown) => {
    if (append(record)) await flush();
  };
  // No await per record: only a full buffer waits.
  const writeBatch = async (batch: readonly unknown[]) => {
    for (let i = 0; i < batch.length; i++) if (append(batch[i])) await flush();
  };
  return {
    write,
    writeBatch,
    writeAll: (source) => writeEach(write, source, writeBatch),
    close: async () => {
      if (!closed) {
        closed = true;
        await flush();
      }
      return await finish(records);
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

/** One encrypted frame: body length (4 bytes), IV (12), AES-256-GCM ciphertext, tag (16). */
async function sealFrame(key: CryptoKey, plain: Uint8Array): Promise<Uint8Array> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const sealed = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, plain as Uint8Array<ArrayBuffer>),
  );
  const frame = new Uint8Array(16 + sealed.length);
  new DataView(frame.buffer).setUint32(0, sealed.length - 16);
  frame.set(iv, 4);
  frame.set(sealed, 16);
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

async function readExactly(
  file: Deno.FsFile,
  n: number,
): Promise<Uint8Array<ArrayBuffer> | null> {
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

/** The plaintext of each frame; the next frame is read and decrypted while one is used. */
async function* openFrames(file: Deno.FsFile, key: CryptoKey): AsyncIterable<Uint8Array> {
  const next = async (): Promise<Promise<Uint8Array> | null> => {
    const header = await readExactly(file, 16);
    if (header === null) return null;
    const length = new DataView(header.buffer).getUint32(0);
    const rest = await readExactly(file, length + 16);
    if (rest === null) throw new Error("Cannot read enclave dataset: the file is truncated");
    const opened = crypto.subtle.decrypt(
      { name: "AES-GCM", iv: header.subarray(4, 16) },
      key,
      rest,
    ).then((plain) => new Uint8Array(plain), () => {
      throw new Error(
        "Cannot read enclave dataset: it was written by another process (its key is gone) or altered",
      );
    });
    opened.catch(() => {});
    return opened;
  };
  let current = await next();
  while (current !== null) {
    const following = await next();
    yield await current;
    current = following;
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
