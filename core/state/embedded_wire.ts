/**
 * The wire between Carrel processes that share one embedded store: length-prefixed frames of
 * V8-serialized messages over a Unix socket in `CARREL_HOME` (0600 in a 0700 folder). V8's
 * serializer keeps what PGlite returns (dates, bigints, byte arrays, parsed JSON) exactly as an
 * in-process caller would get it, so the store code cannot tell the two paths apart.
 *
 * Only the owning process and other processes of the same user reach the socket; nothing here
 * is meant for another machine.
 *
 * @module
 */
import { deserialize, serialize } from "node:v8";

/** What a process sharing the store asks of its owner. */
export type Request =
  | { id: number; op: "hello"; pid: number }
  | { id: number; op: "query"; text: string; params: unknown[]; tx?: number }
  | { id: number; op: "exec"; script: string; tx?: number }
  | { id: number; op: "begin" }
  | { id: number; op: "end"; tx: number; commit: boolean }
  | { id: number; op: "listen"; channel: string }
  | { id: number; op: "unlisten"; channel: string };

/** An error as it crosses the wire: its name, message and PostgreSQL's fields. */
export interface WireError {
  name: string;
  message: string;
  fields: Record<string, string | number>;
}

/** What the owner answers, or tells unasked. */
export type Reply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: WireError }
  /** Not executed: the owner is leaving; send it again to the next owner. */
  | { id: number; moved: true }
  | { push: "notify"; channel: string; payload: string }
  /** The owner has answered everything it accepted from this process and is closing. */
  | { push: "leaving" };

/** PostgreSQL error fields worth keeping (SQLSTATE, constraint, ...). */
const FIELDS = [
  "code",
  "severity",
  "detail",
  "hint",
  "position",
  "where",
  "schema",
  "table",
  "column",
  "dataType",
  "constraint",
  "routine",
] as const;

/** An error for the wire. */
export function toWireError(error: unknown): WireError {
  if (!(error instanceof Error)) {
    return { name: "Error", message: String(error), fields: {} };
  }
  const fields: Record<string, string | number> = {};
  for (const key of FIELDS) {
    const value = (error as unknown as Record<string, unknown>)[key];
    if (typeof value === "string" || typeof value === "number") fields[key] = value;
  }
  return { name: error.name, message: error.message, fields };
}

/** The error a caller sees, with the same name, message and fields as in the owner. */
export function fromWireError(wire: WireError): Error {
  const error = new Error(wire.message);
  error.name = wire.name;
  Object.assign(error, wire.fields);
  return error;
}

/** One frame: a 4-byte big-endian length, then the serialized message. */
export function encodeFrame(message: Request | Reply): Uint8Array {
  const body = serialize(message);
  const frame = new Uint8Array(4 + body.length);
  new DataView(frame.buffer).setUint32(0, body.length);
  frame.set(body, 4);
  return frame;
}

/** Largest frame accepted: far above any statement or result Carrel's store exchanges. */
const MAX_FRAME = 256 * 1024 * 1024;

/**
 * Reads frames from a connection until it closes.
 *
 * @example
 * ```ts ignore
 * for await (const message of readFrames(conn)) console.log(message);
 * ```
 */
export async function* readFrames<T>(conn: Deno.Conn): AsyncIterable<T> {
  let buffer = new Uint8Array(64 * 1024);
  let start = 0;
  let end = 0;
  while (true) {
    if (buffer.length - end < 16 * 1024) {
      // Compact, then grow when the pending bytes fill more than half the buffer.
      const pending = end - start;
      if (pending * 2 > buffer.length) {
        const next = new Uint8Array(buffer.length * 2);
        next.set(buffer.subarray(start, end));
        buffer = next;
      } else {
        buffer.copyWithin(0, start, end);
      }
      end = pending;
      start = 0;
    }
    let n: number | null;
    try {
      n = await conn.read(buffer.subarray(end));
    } catch {
      return;
    }
    if (n === null) return;
    end += n;
    while (end - start >= 4) {
      const length = new DataView(buffer.buffer, buffer.byteOffset + start).getUint32(0);
      if (length > MAX_FRAME) {
        throw new Error("Cannot read from the embedded store's socket: a frame is too large");
      }
      if (end - start < 4 + length) break;
      yield deserialize(buffer.subarray(start + 4, start + 4 + length)) as T;
      start += 4 + length;
    }
    if (start === end) start = end = 0;
  }
}

/** Writes whole frames to a connection, one after another, whoever calls. */
export class FrameWriter {
  #tail: Promise<void> = Promise.resolve();
  constructor(readonly conn: Deno.Conn) {}

  /** Queues a frame; resolves when it is written, rejects when the connection is gone. */
  write(message: Request | Reply): Promise<void> {
    const bytes = encodeFrame(message);
    const next = this.#tail.then(async () => {
      let offset = 0;
      while (offset < bytes.length) offset += await this.conn.write(bytes.subarray(offset));
    });
    this.#tail = next.catch(() => {});
    return next;
  }
}
