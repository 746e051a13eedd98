/**
 * Datasets: large data between tasks, written as a stream of JSON Lines in the run's workspace
 * and read back as an async iterable, with flat memory. Enclave datasets are encrypted with
 * AES-256-GCM under a per-run data key that lives only in the memory of the running process,
 * so a copy of `CARREL_HOME` never holds enclave data in plaintext.
 *
 * @module
 */
import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { dirname, join, relative, resolve } from "node:path";

/** The JSON form of a dataset handle, as stored in the state store. */
export interface DatasetRef {
  $dataset: {
    /** Path relative to `CARREL_HOME`. */
    path: string;
    records: number;
    encrypted: boolean;
    format: "jsonl";
  };
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

  constructor(readonly home: string, runId: string, dataKey?: Uint8Array) {
    const safe = runId.replace(/[^A-Za-z0-9_.@-]/g, "_").replace("@", "/").replace(/:/g, "");
    this.runDir = join(home, "runs", safe);
    // Per instance: its encrypted files are readable only with this instance's key anyway, and
    // two executions of one run's enclave work (workers) must not delete each other's scratch.
    this.enclaveDir = join(home, "enclave", safe, crypto.randomUUID().slice(0, 12));
    this.#dataKey = dataKey ?? new Uint8Array(randomBytes(32));
  }

  /** Opens a writer for a dataset of `taskId`. */
  async create(taskId: string, name: string, encrypted: boolean): Promise<DatasetWriter> {
    if (!/^[A-Za-z0-9_-]+$/.test(name)) {
      throw new Error(`Cannot create dataset "${name}": use letters, digits, "_" and "-"`);
    }
    const dir = join(encrypted ? this.enclaveDir : this.runDir, taskId);
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    if (encrypted) await Deno.chmod(join(this.enclaveDir), 0o700);
    const path = join(dir, `${name}.jsonl${encrypted ? ".enc" : ""}`);
    const file = await Deno.open(path, { write: true, create: true, truncate: true, mode: 0o600 });
    const key = this.#dataKey;
    let buffer: string[] = [];
    let size = 0;
    let records = 0;
    let closed = false;
    const flush = async () => {
      if (buffer.length === 0) return;
      const bytes = encoder.encode(buffer.join(""));
      buffer = [];
      size = 0;
      await writeFull(file, encrypted ? sealFrame(key, bytes) : bytes);
    };
    const write = async (record: unknown) => {
      const line = JSON.stringify(record);
      if (line === undefined) throw new Error(`Cannot write record ${records + 1}: not JSON`);
      buffer.push(line, "\n");
      size += line.length + 1;
      records++;
      if (size >= CHUNK) await flush();
    };
    return {
      write,
      async writeAll(source) {
        let n = 0;
        for await (const record of source) {
          await write(record);
          n++;
        }
        return n;
      },
      close: async () => {
        if (!closed) {
          closed = true;
          await flush();
          file.close();
        }
        return new Dataset({
          $dataset: { path: relative(this.home, path), records, encrypted, format: "jsonl" },
        }, this);
      },
      abort: async () => {
        if (!closed) {
          closed = true;
          file.close();
        }
        await Deno.remove(path).catch(() => {});
      },
    };
  }

  /** A live handle for a stored reference. */
  open(ref: DatasetRef): Dataset {
    return new Dataset(ref, this);
  }

  /** Reads a dataset's records, streaming. */
  async *read(ref: DatasetRef): AsyncIterable<unknown> {
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
