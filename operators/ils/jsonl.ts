/**
 * Streaming JSON Lines reading and writing.
 *
 * {@linkcode readJsonl} yields one result per non-blank line, reporting broken lines by line
 * number (never by content). {@linkcode writeJsonl} streams records to a file with an optional
 * file mode (e.g. `0o600` for patron data), atomically by default.
 *
 * @module
 */
import type { z } from "zod";

/** Bytes or text to read: a `ReadableStream` (e.g. `file.readable`) or any (async) iterable of chunks. */
export type JsonlSource =
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array | string>
  | Iterable<Uint8Array | string>;

/** A parsed record, or why the line was quarantined. `line` is 1-based. */
export type JsonlResult<T> =
  | { ok: true; line: number; record: T }
  | { ok: false; line: number; reason: string };

/** Options for {@linkcode readJsonl}. */
export interface ReadJsonlOptions<S extends z.ZodType = z.ZodType> {
  /** Validates each record; failures are quarantined with the failing field path. */
  schema?: S;
  /** Lines longer than this many characters are reported as broken without being held in memory
   * (default 16 MiB of text). */
  maxLineChars?: number;
}

/** Raised when writing fails; names the path and record position only. */
export class JsonlError extends Error {
  /**
   * Creates a JSONL error.
   *
   * @example Usage
   * ```ts
   * import { JsonlError } from "./jsonl.ts";
   * const err = new JsonlError('Cannot write JSONL to "out.jsonl": record 3 is not serializable');
   * console.log(err.name); // "JsonlError"
   * ```
   */
  constructor(message: string) {
    super(message);
    this.name = "JsonlError";
  }
}

function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  return typeof value;
}

function parseLine(
  text: string,
): { ok: true; value: Record<string, unknown> } | { ok: false; reason: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    // The engine's message quotes the input; keep only the position.
    const position = /position (\d+)/.exec(err instanceof Error ? err.message : "");
    return {
      ok: false,
      reason: position === null
        ? "Invalid JSON"
        : `Invalid JSON at column ${Number(position[1]) + 1}`,
    };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return { ok: false, reason: `Expected a JSON object, found ${kindOf(value)}` };
  }
  return { ok: true, value: value as Record<string, unknown> };
}

/**
 * Reads JSON Lines, streaming. Each non-blank line must be a JSON object; broken lines come out
 * as `{ ok: false, line, reason }` (`Invalid JSON at column 12`, `Expected a JSON object, found
 * array`, `Field "email": Invalid email address`) and reading continues. CRLF line ends and a
 * UTF-8 BOM are accepted.
 *
 * @example Usage
 * ```ts
 * import { readJsonl } from "./jsonl.ts";
 * for await (const row of readJsonl(['{"id":1}\n', "oops\n", '{"id":2}\n'])) {
 *   console.log(row.ok ? row.record : `line ${row.line}: ${row.reason}`);
 * }
 * // { id: 1 }
 * // line 2: Invalid JSON
 * // { id: 2 }
 * ```
 */
export function readJsonl<S extends z.ZodType>(
  source: JsonlSource,
  options: ReadJsonlOptions<S> & { schema: S },
): AsyncGenerator<JsonlResult<z.infer<S>>>;
/** Reads JSON Lines into plain objects; see the schema overload. */
export function readJsonl(
  source: JsonlSource,
  options?: ReadJsonlOptions,
): AsyncGenerator<JsonlResult<Record<string, unknown>>>;
export async function* readJsonl(
  source: JsonlSource,
  options: ReadJsonlOptions = {},
): AsyncGenerator<JsonlResult<unknown>> {
  const max = options.maxLineChars ?? 16 * 1_048_576;
  if (!Number.isInteger(max) || max < 1) {
    throw new JsonlError("Invalid maxLineChars: expected a positive integer");
  }
  const schema = options.schema;
  const decoder = new TextDecoder("utf-8");
  let pending = "";
  let tooLong = false;
  let line = 0;
  let first = true;

  const finish = (text: string): JsonlResult<unknown> | undefined => {
    line++;
    if (tooLong) {
      tooLong = false;
      return { ok: false, line, reason: `Line exceeds ${max} characters` };
    }
    const trimmed = text.endsWith("\r") ? text.slice(0, -1) : text;
    if (trimmed.trim() === "") return undefined;
    const parsed = parseLine(trimmed);
    if (!parsed.ok) return { ok: false, line, reason: parsed.reason };
    if (schema === undefined) return { ok: true, line, record: parsed.value };
    const result = schema.safeParse(parsed.value);
    if (result.success) return { ok: true, line, record: result.data };
    const reasons = result.error.issues.slice(0, 3).map((issue) =>
      issue.path.length > 0
        ? `Field "${issue.path.map(String).join(".")}": ${issue.message}`
        : issue.message
    );
    const more = result.error.issues.length > 3 ? ` (+${result.error.issues.length - 3} more)` : "";
    return { ok: false, line, reason: reasons.join("; ") + more };
  };

  for await (const chunk of source as AsyncIterable<Uint8Array | string>) {
    let text = typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true });
    if (first && text.length > 0) {
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      first = false;
    }
    let start = 0;
    for (;;) {
      const newline = text.indexOf("\n", start);
      if (newline < 0) break;
      if (!tooLong && pending.length + (newline - start) > max) tooLong = true;
      const result = finish(tooLong ? "" : pending + text.slice(start, newline));
      pending = "";
      if (result !== undefined) yield result;
      start = newline + 1;
    }
    if (!tooLong) {
      pending += text.slice(start);
      if (pending.length > max) {
        tooLong = true;
        pending = "";
      }
    }
  }
  const rest = decoder.decode();
  if (!tooLong) pending += rest;
  if (tooLong || pending.length > 0) {
    const result = finish(pending);
    if (result !== undefined) yield result;
  }
}

/** Options for {@linkcode writeJsonl}. */
export interface WriteJsonlOptions {
  /** File mode for the file, e.g. `0o600` for patron data (applied even when the file exists). */
  mode?: number;
  /** Append to an existing file instead of replacing it (disables the atomic rename). */
  append?: boolean;
  /** Aborting stops writing; the target file is left untouched (unless appending). */
  signal?: AbortSignal;
}

function replacer(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

/**
 * Writes records as JSON Lines, streaming, and returns how many were written.
 *
 * By default writes to a temporary file next to `path` (created with `mode`) and renames it into
 * place at the end, so readers never see a half-written file and a failure leaves the old file.
 * `bigint` values are written as strings, `Date`s as ISO strings. Errors name the path and the
 * record position, never a value.
 *
 * @example Usage
 * ```ts ignore
 * import { writeJsonl } from "./jsonl.ts";
 * const count = await writeJsonl("out/patrons.jsonl", [{ id: 1 }, { id: 2 }], { mode: 0o600 });
 * console.log(count); // 2
 * ```
 */
export async function writeJsonl(
  path: string,
  records: AsyncIterable<unknown> | Iterable<unknown>,
  options: WriteJsonlOptions = {},
): Promise<number> {
  const { mode, signal } = options;
  const append = options.append ?? false;
  const target = append ? path : `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  const encoder = new TextEncoder();
  const fail = (detail: string) => new JsonlError(`Cannot write JSONL to "${path}": ${detail}`);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(target, {
      write: true,
      create: true,
      append,
      truncate: !append,
      ...(mode === undefined ? {} : { mode }),
    });
    if (mode !== undefined && Deno.build.os !== "windows") await Deno.chmod(target, mode);
  } catch (err) {
    throw fail(err instanceof Error ? err.name : "cannot open file");
  }
  let count = 0;
  let buffer = "";
  let ok = false;
  const writeAll = async (text: string) => {
    const bytes = encoder.encode(text);
    let offset = 0;
    while (offset < bytes.length) offset += await file.write(bytes.subarray(offset));
  };
  try {
    for await (const record of records) {
      if (signal?.aborted) throw fail("aborted");
      let line: string | undefined;
      try {
        line = JSON.stringify(record, replacer);
      } catch (err) {
        throw fail(
          `record ${count + 1} is not serializable (${err instanceof Error ? err.name : "error"})`,
        );
      }
      if (line === undefined) {
        throw fail(`record ${count + 1} is not serializable (${kindOf(record)})`);
      }
      buffer += line + "\n";
      count++;
      if (buffer.length >= 65_536) {
        await writeAll(buffer);
        buffer = "";
      }
    }
    if (signal?.aborted) throw fail("aborted");
    if (buffer.length > 0) await writeAll(buffer);
    ok = true;
  } catch (err) {
    if (err instanceof JsonlError) throw err;
    // Errors from the input iterable belong to the producer; file errors are named by class only.
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.PermissionDenied) {
      throw fail(err.name);
    }
    throw err;
  } finally {
    file.close();
    if (!ok && !append) await Deno.remove(target).catch(() => {});
  }
  if (!append) {
    try {
      await Deno.rename(target, path);
    } catch (err) {
      await Deno.remove(target).catch(() => {});
      throw fail(err instanceof Error ? err.name : "rename failed");
    }
  }
  return count;
}

/**
 * Writes records to a JSON Lines file for a pipeline's file output: creates the parent folder, then
 * {@linkcode writeJsonl} (streaming, atomic rename, optional file mode). Returns how many records.
 *
 * @example Usage
 * ```ts ignore
 * import { jsonlWrite } from "./jsonl.ts";
 * const n = await jsonlWrite("out/catalog.jsonl", records);
 * ```
 */
export async function jsonlWrite(
  path: string,
  records: AsyncIterable<unknown> | Iterable<unknown>,
  options: WriteJsonlOptions = {},
): Promise<number> {
  const slash = path.lastIndexOf("/");
  if (slash > 0) await Deno.mkdir(path.slice(0, slash), { recursive: true });
  return await writeJsonl(path, records, options);
}
