/**
 * Streaming CSV/TSV reading (RFC 4180) with per-row quarantine.
 *
 * Handles quoted fields, escaped quotes (`""`), CRLF/LF/CR line ends, newlines inside quotes and
 * any single-character delimiter (`"\t"` for Koha exports). Memory stays flat: input is decoded
 * chunk by chunk and only the current record is held (bounded by `maxRecordChars`).
 *
 * Broken rows do not stop the stream: they come out as `{ ok: false, line, reason }` where the
 * reason names the column and never contains a value (rows hold patron data).
 *
 * @module
 */
import { z } from "zod";

/** Bytes or text to parse: a `ReadableStream` (e.g. `file.readable`) or any (async) iterable of chunks. */
export type CsvSource =
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array | string>
  | Iterable<Uint8Array | string>;

/** Options for {@linkcode parseCsv}. */
export interface CsvParseOptions {
  /** Field delimiter, one character (default `","`; use `"\t"` for TSV/Koha). */
  delimiter?: string;
  /** Quote character (default `"`). */
  quote?: string;
  /** Text encoding of byte input (default `"utf-8"`; e.g. `"windows-1252"`). A UTF-8 BOM is dropped. */
  encoding?: string;
  /** A record longer than this many characters is reported as broken and not held in memory
   * (default 1 MiB of text). */
  maxRecordChars?: number;
}

/** A raw parsed record: its fields, or why it is broken. `line` is where the record starts (1-based). */
export type CsvRow =
  | { ok: true; line: number; fields: string[] }
  | { ok: false; line: number; reason: string; column?: number };

/** A typed record, or why the row was quarantined. `line` is where the record starts (1-based). */
export type CsvResult<T> =
  | { ok: true; line: number; record: T }
  | { ok: false; line: number; reason: string };

/** Raised for problems that stop the whole file (bad options, unusable header). */
export class CsvError extends Error {
  /**
   * Creates a CSV error.
   *
   * @example Usage
   * ```ts
   * import { CsvError } from "./csv.ts";
   * const err = new CsvError('Cannot read CSV: header has no column "barcode"');
   * console.log(err.name); // "CsvError"
   * ```
   */
  constructor(message: string) {
    super(message);
    this.name = "CsvError";
  }
}

const enum State {
  FieldStart,
  Unquoted,
  Quoted,
  QuoteInQuoted,
}

type Defect =
  | { kind: "after-quote"; column: number }
  | { kind: "too-long" };

const CR = 13;
const LF = 10;

class Tokenizer {
  readonly #delimiter: number;
  readonly #quote: number;
  readonly #max: number;
  #state = State.FieldStart;
  #fields: string[] = [];
  #fieldCount = 0;
  #field = "";
  #chars = 0;
  #discarding = false;
  #hasContent = false;
  #afterCR = false;
  #line = 1;
  #recordLine = 1;
  #defect: Defect | undefined;

  constructor(delimiter: string, quote: string, max: number) {
    this.#delimiter = delimiter.charCodeAt(0);
    this.#quote = quote.charCodeAt(0);
    this.#max = max;
  }

  push(text: string, out: CsvRow[]): void {
    const n = text.length;
    const delimiter = this.#delimiter;
    const quote = this.#quote;
    let i = 0;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === LF && this.#afterCR) {
        // Second half of CRLF: the line was counted at the CR.
        this.#afterCR = false;
        if (this.#state === State.Quoted) this.#append("\n");
        i++;
        continue;
      }
      this.#afterCR = c === CR;
      switch (this.#state) {
        case State.FieldStart:
        case State.Unquoted: {
          if (c === quote && this.#state === State.FieldStart) {
            this.#state = State.Quoted;
            this.#hasContent = true;
            i++;
            break;
          }
          if (c === delimiter) {
            this.#endField();
            this.#hasContent = true;
            i++;
            break;
          }
          if (c === LF || c === CR) {
            this.#line++;
            this.#endRecord(out);
            i++;
            break;
          }
          // Fast path: copy a run of ordinary characters.
          let j = i + 1;
          while (j < n) {
            const d = text.charCodeAt(j);
            if (d === delimiter || d === LF || d === CR) break;
            j++;
          }
          this.#append(text.slice(i, j));
          this.#state = State.Unquoted;
          this.#hasContent = true;
          this.#afterCR = false;
          i = j;
          break;
        }
        case State.Quoted: {
          if (c === quote) {
            this.#state = State.QuoteInQuoted;
            i++;
            break;
          }
          if (c === LF || c === CR) {
            this.#line++;
            this.#append(c === LF ? "\n" : "\r");
            i++;
            break;
          }
          let j = i + 1;
          while (j < n) {
            const d = text.charCodeAt(j);
            if (d === quote || d === LF || d === CR) break;
            j++;
          }
          this.#append(text.slice(i, j));
          this.#afterCR = false;
          i = j;
          break;
        }
        case State.QuoteInQuoted: {
          if (c === quote) {
            this.#append(text[i]!);
            this.#state = State.Quoted;
            i++;
          } else if (c === delimiter) {
            this.#endField();
            i++;
          } else if (c === LF || c === CR) {
            this.#line++;
            this.#endRecord(out);
            i++;
          } else {
            // `"abc"x`: keep reading to the end of the record, but the record is broken.
            this.#defect ??= { kind: "after-quote", column: this.#fieldCount + 1 };
            this.#state = State.Unquoted;
          }
          break;
        }
      }
    }
  }

  end(out: CsvRow[]): void {
    if (this.#state === State.Quoted) {
      out.push({
        ok: false,
        line: this.#recordLine,
        reason: `Unterminated quoted field in column ${this.#fieldCount + 1}`,
        column: this.#fieldCount + 1,
      });
      this.#reset();
      return;
    }
    this.#endRecord(out);
  }

  #append(text: string): void {
    this.#chars += text.length;
    if (this.#chars > this.#max) {
      if (!this.#discarding) {
        this.#discarding = true;
        this.#defect = { kind: "too-long" };
        this.#fields = [];
        this.#field = "";
      }
      return;
    }
    this.#field += text;
  }

  #endField(): void {
    if (!this.#discarding) this.#fields.push(this.#field);
    this.#fieldCount++;
    this.#field = "";
    this.#state = State.FieldStart;
  }

  #endRecord(out: CsvRow[]): void {
    if (this.#hasContent) {
      this.#endField();
      const defect = this.#defect;
      if (defect === undefined) {
        out.push({ ok: true, line: this.#recordLine, fields: this.#fields });
      } else if (defect.kind === "after-quote") {
        out.push({
          ok: false,
          line: this.#recordLine,
          reason: `Unexpected character after closing quote in column ${defect.column}`,
          column: defect.column,
        });
      } else {
        out.push({
          ok: false,
          line: this.#recordLine,
          reason: `Record exceeds ${this.#max} characters`,
        });
      }
    }
    this.#reset();
  }

  #reset(): void {
    this.#fields = [];
    this.#fieldCount = 0;
    this.#field = "";
    this.#state = State.FieldStart;
    this.#chars = 0;
    this.#discarding = false;
    this.#hasContent = false;
    this.#defect = undefined;
    this.#recordLine = this.#line;
  }
}

function checkChar(value: string, what: string): string {
  if (value.length !== 1 || value === "\n" || value === "\r") {
    throw new CsvError(`Invalid ${what}: expected a single character other than CR or LF`);
  }
  return value;
}

async function* chunks(source: CsvSource, encoding: string): AsyncGenerator<string> {
  let decoder: TextDecoder;
  try {
    decoder = new TextDecoder(encoding);
  } catch {
    throw new CsvError(`Invalid encoding "${encoding}"`);
  }
  let first = true;
  for await (const chunk of source as AsyncIterable<Uint8Array | string>) {
    let text = typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true });
    if (first && text.length > 0) {
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      first = false;
    }
    if (text.length > 0) yield text;
  }
  const rest = decoder.decode();
  if (rest.length > 0) yield rest;
}

/**
 * Parses CSV into raw records (arrays of strings), streaming. Blank lines are skipped.
 * Broken records (`"abc"x`, an unterminated quote, an over-long record) come out as
 * `{ ok: false }` with a value-free reason and parsing continues.
 *
 * @example Usage
 * ```ts
 * import { parseCsv } from "./csv.ts";
 * for await (const row of parseCsv(['id,title\n1,"Moby ""Dick"""\n'])) {
 *   if (row.ok) console.log(row.line, row.fields);
 * }
 * // 1 ["id", "title"]
 * // 2 ["1", 'Moby "Dick"']
 * ```
 */
export async function* parseCsv(
  source: CsvSource,
  options: CsvParseOptions = {},
): AsyncGenerator<CsvRow> {
  const delimiter = checkChar(options.delimiter ?? ",", "delimiter");
  const quote = checkChar(options.quote ?? '"', "quote");
  if (delimiter === quote) {
    throw new CsvError("Invalid delimiter: it must differ from the quote character");
  }
  const max = options.maxRecordChars ?? 1_048_576;
  if (!Number.isInteger(max) || max < 1) {
    throw new CsvError("Invalid maxRecordChars: expected a positive integer");
  }
  const tokenizer = new Tokenizer(delimiter, quote, max);
  const out: CsvRow[] = [];
  for await (const text of chunks(source, options.encoding ?? "utf-8")) {
    tokenizer.push(text, out);
    yield* out;
    out.length = 0;
  }
  tokenizer.end(out);
  yield* out;
}

/** How empty fields are represented in records. */
export type EmptyAs = "string" | "null" | "undefined";

/** Options for {@linkcode readCsv}. */
export interface ReadCsvOptions extends CsvParseOptions {
  /** Whether the first record is a header (default `true`). */
  header?: boolean;
  /**
   * - a zod object schema: records are validated; with a header, each schema key must be a header
   *   name (unless the key accepts `undefined`); without one, keys are taken in order;
   * - a header mapping `{ "Borrower Number": "borrowernumber" }`: only mapped columns are kept;
   * - a list of names: without a header, names the columns in order; with one, keeps only these.
   * Without `columns`, records are keyed by header names.
   */
  columns?: z.ZodObject | Readonly<Record<string, string>> | readonly string[];
  /** Empty fields become `""` (default), `null` or `undefined` (omitted before validation). */
  emptyAs?: EmptyAs;
}

type Plain = Record<string, string | null | undefined>;

/**
 * Reads CSV/TSV into records, streaming, with broken rows quarantined instead of thrown:
 * `{ ok: true, line, record }` or `{ ok: false, line, reason }`. Reasons name the column and never
 * contain values: wrong field counts, quoting defects, schema failures (`Column "email": Invalid
 * email address`).
 *
 * Throws {@linkcode CsvError} only for problems that make the whole file unusable (a malformed or
 * duplicate header, a header lacking a required column, bad options).
 *
 * @example Usage
 * ```ts
 * import { z } from "zod";
 * import { readCsv } from "./csv.ts";
 * const schema = z.object({ borrowernumber: z.coerce.number().int(), email: z.email().optional() });
 * const input = ["borrowernumber\temail\n", "12\tpat@example.invalid\n", "x\t\n"];
 * for await (const row of readCsv(input, { delimiter: "\t", columns: schema, emptyAs: "undefined" })) {
 *   console.log(row.ok ? row.record : `line ${row.line}: ${row.reason}`);
 * }
 * // { borrowernumber: 12, email: "pat@example.invalid" }
 * // line 3: Column "borrowernumber": Invalid input: expected number, received NaN
 * ```
 */
export function readCsv<S extends z.ZodObject>(
  source: CsvSource,
  options: ReadCsvOptions & { columns: S },
): AsyncGenerator<CsvResult<z.infer<S>>>;
/** Reads CSV/TSV into plain string records; see the schema overload. */
export function readCsv(
  source: CsvSource,
  options?: ReadCsvOptions,
): AsyncGenerator<CsvResult<Plain>>;
export async function* readCsv(
  source: CsvSource,
  options: ReadCsvOptions = {},
): AsyncGenerator<CsvResult<unknown>> {
  const useHeader = options.header ?? true;
  const columns = options.columns;
  const schema = columns instanceof z.ZodObject ? columns : undefined;
  const emptyAs = options.emptyAs ?? "string";
  const empty = emptyAs === "null" ? null : emptyAs === "undefined" ? undefined : "";

  // For each input position: the field name it feeds (or undefined to drop it) and its display name.
  let targets: (string | undefined)[] | undefined;
  let labels: string[] = [];

  const setup = (header: string[] | undefined): void => {
    if (header === undefined) {
      let names: string[];
      if (schema !== undefined) names = Object.keys(schema.shape);
      else if (Array.isArray(columns)) names = [...columns];
      else {throw new CsvError(
          "Cannot read CSV: columns (a list or a schema) are required when header is false",
        );}
      targets = names;
      labels = names;
      return;
    }
    const seen = new Set<string>();
    for (const name of header) {
      if (seen.has(name)) throw new CsvError(`Cannot read CSV: duplicate header column "${name}"`);
      seen.add(name);
    }
    labels = header;
    if (schema !== undefined) {
      targets = header;
      for (const [key, field] of Object.entries(schema.shape)) {
        if (!seen.has(key) && !(field as z.ZodType).safeParse(undefined).success) {
          throw new CsvError(`Cannot read CSV: header has no column "${key}"`);
        }
      }
    } else if (Array.isArray(columns)) {
      for (const name of columns) {
        if (!seen.has(name)) throw new CsvError(`Cannot read CSV: header has no column "${name}"`);
      }
      const keep = new Set(columns);
      targets = header.map((name) => keep.has(name) ? name : undefined);
    } else if (columns !== undefined) {
      const mapping = columns as Readonly<Record<string, string>>;
      for (const name of Object.keys(mapping)) {
        if (!seen.has(name)) throw new CsvError(`Cannot read CSV: header has no column "${name}"`);
      }
      targets = header.map((name) => Object.hasOwn(mapping, name) ? mapping[name] : undefined);
    } else {
      targets = header;
    }
  };

  const label = (field: string): string => {
    const index = targets?.indexOf(field) ?? -1;
    const shown = index >= 0 ? labels[index] : undefined;
    return shown !== undefined && shown !== field ? `"${shown}" (${field})` : `"${field}"`;
  };

  for await (const row of parseCsv(source, options)) {
    if (targets === undefined) {
      if (useHeader) {
        if (!row.ok) {
          throw new CsvError(
            `Cannot read CSV: header on line ${row.line} is malformed: ${row.reason}`,
          );
        }
        setup(row.fields);
        continue;
      }
      setup(undefined);
    }
    const names = targets!;
    if (!row.ok) {
      const at = row.column === undefined ? undefined : labels[row.column - 1];
      const reason = at === undefined ? row.reason : `${row.reason} ("${at}")`;
      yield { ok: false, line: row.line, reason };
      continue;
    }
    if (row.fields.length !== names.length) {
      yield {
        ok: false,
        line: row.line,
        reason: `Expected ${names.length} fields, found ${row.fields.length}`,
      };
      continue;
    }
    const record: Record<string, unknown> = {};
    for (let i = 0; i < names.length; i++) {
      const name = names[i];
      if (name === undefined) continue;
      const value = row.fields[i]!;
      if (value === "") {
        if (empty !== undefined) record[name] = empty;
      } else {
        record[name] = value;
      }
    }
    if (schema === undefined) {
      yield { ok: true, line: row.line, record };
      continue;
    }
    const parsed = schema.safeParse(record);
    if (parsed.success) {
      yield { ok: true, line: row.line, record: parsed.data };
      continue;
    }
    const reasons = parsed.error.issues.slice(0, 3).map((issue) => {
      const field = issue.path[0];
      // zod's default messages describe types and constraints, not the input value.
      return typeof field === "string" ? `Column ${label(field)}: ${issue.message}` : issue.message;
    });
    const more = parsed.error.issues.length > 3 ? ` (+${parsed.error.issues.length - 3} more)` : "";
    yield { ok: false, line: row.line, reason: reasons.join("; ") + more };
  }
}

/** A row set aside by {@linkcode csvExtract}: where it starts and why (never its content). */
export interface CsvQuarantineEntry {
  /** 1-based line where the record starts. */
  line: number;
  /** Why the row was quarantined; names columns, never values. */
  reason: string;
}

/** Options for {@linkcode csvExtract}. */
export interface CsvExtractOptions<S extends z.ZodObject> extends Omit<ReadCsvOptions, "columns"> {
  /** The declared column schema: each key is a header name (or a column in order without one). */
  columns: S;
  /** Receives each broken row (position and reason only); without it they are only counted. */
  onQuarantine?: (entry: CsvQuarantineEntry) => void | Promise<void>;
}

/** What {@linkcode csvExtract} returns when the stream ends. */
export interface CsvExtractSummary {
  /** Rows read (valid and quarantined). */
  rows: number;
  /** Rows yielded. */
  valid: number;
  /** Rows quarantined. */
  quarantined: number;
}

/**
 * Extracts typed records from a CSV/TSV export (a Koha report, an Alma analytics export...), with a
 * declared column schema: valid rows are yielded as records, broken rows (wrong field counts,
 * quoting defects, schema failures) go to `onQuarantine` with their line and a reason that names
 * the column, never a value. The stream's return value counts rows, valid and quarantined.
 *
 * `source` is a file path or any {@linkcode CsvSource}. Memory stays flat.
 *
 * @example Usage
 * ```ts
 * import { z } from "zod";
 * import { csvExtract } from "./csv.ts";
 * const Loan = z.object({ issue_id: z.coerce.number().int(), itemnumber: z.coerce.number().int() });
 * const broken: number[] = [];
 * const input = ["issue_id\titemnumber\n", "1\t42\n", "x\t43\n"];
 * for await (
 *   const loan of csvExtract(input, {
 *     delimiter: "\t",
 *     columns: Loan,
 *     onQuarantine: (q) => void broken.push(q.line),
 *   })
 * ) console.log(loan.issue_id);
 * // 1 (line 3 quarantined)
 * ```
 */
export async function* csvExtract<S extends z.ZodObject>(
  source: string | CsvSource,
  options: CsvExtractOptions<S>,
): AsyncGenerator<z.infer<S>, CsvExtractSummary, undefined> {
  const { onQuarantine, ...readOptions } = options;
  let file: Deno.FsFile | undefined;
  let input: CsvSource;
  if (typeof source === "string") {
    try {
      file = await Deno.open(source, { read: true });
    } catch (err) {
      throw new CsvError(
        `Cannot read CSV "${source}": ${err instanceof Error ? err.name : "cannot open file"}`,
      );
    }
    input = file.readable;
  } else input = source;
  const summary: CsvExtractSummary = { rows: 0, valid: 0, quarantined: 0 };
  try {
    for await (const row of readCsv(input, readOptions as ReadCsvOptions & { columns: S })) {
      summary.rows++;
      if (row.ok) {
        summary.valid++;
        yield row.record;
      } else {
        summary.quarantined++;
        await onQuarantine?.({ line: row.line, reason: row.reason });
      }
    }
  } finally {
    try {
      file?.close();
    } catch { /* the readable stream closed it */ }
  }
  return summary;
}
