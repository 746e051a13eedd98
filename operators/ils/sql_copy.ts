/**
 * The bulk paths of the PostgreSQL and PGlite drivers: PostgreSQL's COPY text format, in both
 * directions, and the staged, idempotent load built on it.
 *
 * - {@linkcode copyTextField} / {@linkcode CopyChunks}: rows of a load as COPY text (`\N` for
 *   NULL; backslash, tab, newline and carriage return escaped), cut into chunks of about
 *   {@linkcode COPY_CHUNK_BYTES} so memory stays flat and no COPY statement waits on a slow
 *   producer.
 * - {@linkcode stagedLoadStatements}: `CREATE TEMP TABLE ... ON COMMIT DROP` shaped like the
 *   target's columns, and the `INSERT ... SELECT ... ON CONFLICT` that moves the staged rows
 *   into the target (`DO NOTHING` every {@linkcode STAGE_BYTES}, or `DO UPDATE ... WHERE ... IS
 *   DISTINCT FROM` once at the end).
 * - {@linkcode CopyTextReader}: the lines of a `COPY ... TO STDOUT` as fields, unescaped.
 * - {@linkcode bindAsSettings}: a query's `$n` placeholders as transaction-local settings, since
 *   COPY takes no bind parameters and values must never be spliced into statement text (where
 *   `pg_stat_activity` and statement logs would show them).
 * - {@linkcode copyErrorPosition}: the line and column of a COPY error, without its value.
 *
 * @module
 */
import { checkRow, quoteIdentifier, type Row, rowBatchReader, SqlError } from "./sql_common.ts";

/** Encoded bytes per COPY statement of a load (a chunk ends at the first row past it). */
export const COPY_CHUNK_BYTES = 1 << 20;

/**
 * Encoded COPY text a load keeps ready while the database works (see {@linkcode CopyChunks}):
 * about what the encoder makes while the server runs a staged `INSERT` of
 * {@linkcode STAGE_BYTES}, so neither side waits for the other for long.
 */
export const COPY_AHEAD_BYTES = 8 << 20;

/**
 * COPY text a load stages before it moves the rows into the target (`DO NOTHING` loads only): the
 * staging table stays this small whatever the load's size, instead of growing to a copy of it in
 * the server's temporary files. An `onConflict: "update"` load stages everything and moves it
 * once, since a key repeated anywhere in the load must count once, with its last row.
 */
export const STAGE_BYTES = 16 << 20;

const ESCAPES = /[\\\t\n\r]/g;
const ESCAPED: Readonly<Record<string, string>> = {
  "\\": "\\\\",
  "\t": "\\t",
  "\n": "\\n",
  "\r": "\\r",
};

/** Escapes text for a COPY text-format field (backslash, tab, newline, carriage return). */
function escapeText(text: string): string {
  return ESCAPES.test(text) ? text.replace(ESCAPES, (c) => ESCAPED[c]!) : text;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/**
 * One value as a COPY text-format field, in the input syntax PostgreSQL's types accept: `\N` for
 * `null`, text escaped, numbers and bigints as digits, booleans as `t`/`f`, dates as ISO 8601
 * instants, bytes as `\x` hex (bytea), other objects and arrays as JSON (json/jsonb columns; an
 * array column takes its PostgreSQL literal as a string). Returns `undefined` for a value no
 * column can take (an invalid date, a function, a symbol).
 *
 * @example Usage
 * ```ts
 * import { copyTextField } from "./sql_copy.ts";
 * console.log(copyTextField("a\tb")); // "a\\tb"
 * console.log(copyTextField(null)); // "\\N"
 * ```
 */
export function copyTextField(value: unknown): string | undefined {
  switch (typeof value) {
    case "string":
      return escapeText(value);
    case "number":
      return Number.isFinite(value)
        ? String(value)
        : Number.isNaN(value)
        ? "NaN"
        : value > 0
        ? "Infinity"
        : "-Infinity";
    case "bigint":
      return String(value);
    case "boolean":
      return value ? "t" : "f";
    case "object": {
      if (value === null) return "\\N";
      if (value instanceof Date) {
        return Number.isNaN(value.getTime()) ? undefined : value.toISOString();
      }
      if (value instanceof Uint8Array) {
        let hex = "\\\\x";
        for (let i = 0; i < value.length; i++) hex += HEX[value[i]!]!;
        return hex;
      }
      return escapeText(JSON.stringify(value));
    }
    default:
      return undefined;
  }
}

/**
 * Reads the rows of a load, checks that each has every column, and encodes them as COPY text in
 * chunks of about {@linkcode COPY_CHUNK_BYTES}. Keeps the position of the first row of each
 * chunk, so a COPY error's line becomes a row position (never a value).
 */
export class CopyChunks {
  /** Rows read so far. */
  position = 0;
  /**
   * @param chunkBytes COPY text per chunk.
   * @param aheadBytes Encoded text that may wait for the database (chunks written behind the
   * encoder, in order): while the server works through a chunk or a staged `INSERT`, the rows
   * after it are read and encoded instead of waiting. One chunk at least.
   */
  constructor(
    readonly action: string,
    readonly columns: readonly string[],
    readonly chunkBytes = COPY_CHUNK_BYTES,
    readonly aheadBytes = COPY_AHEAD_BYTES,
  ) {}

  /**
   * Encodes the rows chunk by chunk; `write` loads one chunk (text, first row position, row
   * count). Chunks are written one at a time, in order, while the encoder goes on with the
   * rows after them, up to `aheadBytes` of text not yet written; a failed write stops the
   * encoder at its next chunk and is what `run` throws. When the encoder fails (a bad row, the
   * input's own error), the chunk being written settles and the ones waiting are dropped.
   */
  async run(
    rows: AsyncIterable<Row> | Iterable<Row>,
    write: (text: string, first: number, count: number) => Promise<void>,
  ): Promise<void> {
    const columns = this.columns;
    const width = columns.length;
    let parts: string[] = [];
    let bytes = 0;
    let first = 1;
    /** The last chunk's write (each waits for the one before). */
    let tail: Promise<void> = Promise.resolve();
    let failed = false;
    /** Set when the encoder fails: chunks not started yet are not written. */
    let stopped = false;
    /** Chunks handed to the writer and not known to be written, oldest first. */
    const behind: { written: Promise<void>; bytes: number }[] = [];
    let behindBytes = 0;
    const flush = async () => {
      const count = this.position + 1 - first;
      if (count === 0) return;
      const text = parts.join("\n") + "\n";
      const start = first;
      parts = [];
      bytes = 0;
      first = this.position + 1;
      tail = tail.then(() => stopped ? undefined : write(text, start, count));
      // A failed chunk is thrown by the awaits below or at the end; keep the rejection from
      // being seen as unhandled meanwhile.
      tail.catch(() => failed = true);
      behind.push({ written: tail, bytes: text.length });
      behindBytes += text.length;
      while (behind.length > 0 && (failed || behindBytes > this.aheadBytes)) {
        const oldest = behind.shift()!;
        behindBytes -= oldest.bytes;
        await oldest.written;
      }
    };
    const next = rowBatchReader(rows);
    try {
      for (;;) {
        const read = await next();
        if (read.done === true) break;
        const batch = read.value;
        for (let r = 0; r < batch.length; r++) {
          const row = batch[r]!;
          const position = ++this.position;
          checkRow(this.action, position, row, columns);
          let line = "";
          for (let c = 0; c < width; c++) {
            const column = columns[c]!;
            const value = row[column];
            const field = copyTextField(value);
            if (field === undefined) {
              throw new SqlError(
                `${this.action}: row ${position}, column "${column}": cannot store a value of type ${
                  value instanceof Date ? "Date (invalid)" : typeof value
                }`,
                "INVALID_ROW",
              );
            }
            line += c === 0 ? field : "\t" + field;
          }
          parts.push(line);
          bytes += line.length + 1;
          if (bytes >= this.chunkBytes) await flush();
        }
      }
      await flush();
    } catch (error) {
      // The rows cannot all be loaded: write nothing more, let the chunk in flight settle (so
      // the connection is idle), and throw what stopped the encoder.
      stopped = true;
      await tail.catch(() => {});
      throw error;
    }
    // Every chunk written before returning.
    await tail;
  }
}

/** The temporary table a load stages its rows in (dropped at commit or rollback). */
export const STAGE_TABLE = "carrel_load_stage";

/** The statements of a staged load into `target`. */
export interface StagedLoad {
  /** Creates the staging table with the target's column types, empty. */
  create: string;
  /** `COPY <stage> (<columns>) FROM <source>`: `STDIN` or PGlite's `'/dev/blob'`. */
  copy(source: string): string;
  /**
   * Moves the staged rows into the target. Without `update` its row count is the rows inserted;
   * with `update` it returns one row `{ inserted, updated }`.
   */
  insert: string;
  /** Empties the staging table after an `insert` that more rows follow (`TRUNCATE`). */
  clear: string;
}

/**
 * The statements of a staged load: a temporary table with the target's column types
 * (`CREATE TEMP TABLE ... AS SELECT <columns> FROM <target> WITH NO DATA`, dropped at commit), the
 * COPY into it, and an `INSERT ... SELECT ... ON CONFLICT (<key>) DO NOTHING` each time
 * {@linkcode STAGE_BYTES} are staged (then `TRUNCATE`) and at the end, or with `update` one
 * `DO UPDATE SET` of the other columns `WHERE` they are `IS DISTINCT FROM` the stored ones, at
 * the end.
 *
 * Repeated keys within one load: `DO NOTHING` keeps the first (staged rows are inserted in order, and a
 * temporary table is read in the order its rows were copied: no synchronized scans, no parallel
 * workers, no reused space), and
 * `DO UPDATE` keeps the last (`DISTINCT ON (<key>) ... ORDER BY <key>, ctid DESC`, since one
 * statement may not update a row twice).
 *
 * @example Usage
 * ```ts
 * import { stagedLoadStatements } from "./sql_copy.ts";
 * const load = stagedLoadStatements({ table: "t", columns: ["id", "v"], key: ["id"] }, false);
 * console.log(load.copy("STDIN")); // COPY "carrel_load_stage" ("id","v") FROM STDIN
 * ```
 */
export function stagedLoadStatements(
  target: { table: string; columns: readonly string[]; key: readonly string[] },
  update: boolean,
): StagedLoad {
  const table = quoteIdentifier(target.table);
  const stage = quoteIdentifier(STAGE_TABLE);
  const columns = target.columns.map((c) => quoteIdentifier(c)).join(",");
  const key = target.key.map((c) => quoteIdentifier(c)).join(",");
  const others = target.columns.filter((c) => !target.key.includes(c)).map((c) =>
    quoteIdentifier(c)
  );
  const create =
    `CREATE TEMP TABLE ${stage} ON COMMIT DROP AS SELECT ${columns} FROM ${table} WITH NO DATA`;
  const insert = update
    ? `WITH changed AS (INSERT INTO ${table} (${columns}) SELECT DISTINCT ON (${key}) ${columns} FROM ${stage} ORDER BY ${key}, ctid DESC ON CONFLICT (${key}) DO UPDATE SET ${
      others.map((c) => `${c} = EXCLUDED.${c}`).join(", ")
    } WHERE (${others.map((c) => `${table}.${c}`).join(", ")}) IS DISTINCT FROM (${
      others.map((c) => `EXCLUDED.${c}`).join(", ")
    }) RETURNING (xmax = 0) AS inserted) SELECT count(*) FILTER (WHERE inserted)::int AS inserted, count(*) FILTER (WHERE NOT inserted)::int AS updated FROM changed`
    : `INSERT INTO ${table} (${columns}) SELECT ${columns} FROM ${stage} ON CONFLICT (${key}) DO NOTHING`;
  return {
    create,
    copy: (source) => `COPY ${stage} (${columns}) FROM ${source}`,
    insert,
    clear: `TRUNCATE ${stage}`,
  };
}

/**
 * Where a COPY FROM error happened, from the error's `where` field
 * (`COPY t, line 13, column n: "<value>"`): the line and the column name only, never the value.
 *
 * @example Usage
 * ```ts
 * import { copyErrorPosition } from "./sql_copy.ts";
 * console.log(copyErrorPosition({ where: 'COPY s, line 3, column n: "x"' })); // { line: 3, column: "n" }
 * ```
 */
export function copyErrorPosition(err: unknown): { line: number; column?: string } | undefined {
  const where = (err as { where?: unknown } | null)?.where;
  if (typeof where !== "string") return undefined;
  const m = /^COPY [^,\n]+, line (\d+)(?:, column ([A-Za-z_][A-Za-z0-9_$]*))?/.exec(where);
  if (!m) return undefined;
  return m[2] === undefined ? { line: Number(m[1]) } : { line: Number(m[1]), column: m[2] };
}

const UNESCAPE = /\\(.)/g;
const UNESCAPED: Readonly<Record<string, string>> = {
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
  v: "\v",
};

/**
 * A COPY text-format field as the server meant it: `null` for `\N`, escapes undone. (COPY TO
 * writes only `\\`, `\b`, `\f`, `\n`, `\r`, `\t` and `\v`; any other escaped character stands for
 * itself.)
 *
 * @example Usage
 * ```ts
 * import { copyTextValue } from "./sql_copy.ts";
 * console.log(copyTextValue("a\\tb")); // "a\tb"
 * ```
 */
export function copyTextValue(field: string): string | null {
  if (field === "\\N") return null;
  if (field.indexOf("\\") === -1) return field;
  return field.replace(UNESCAPE, (_, c: string) => UNESCAPED[c] ?? c);
}

/**
 * Cuts the bytes of a `COPY ... TO STDOUT` (text format, UTF-8) into rows of fields. Lines end
 * with a newline and fields are tab-separated (the data's own tabs and newlines are escaped), so
 * a chunk may end anywhere: the rest waits for the next chunk.
 */
export class CopyTextReader {
  #decoder = new TextDecoder("utf-8", { fatal: true });
  #rest = "";
  // Bytes appended and not yet cut into lines (copied: a stream may reuse what it handed over).
  #bytes = new Uint8Array(64 << 10);
  #size = 0;

  /** The complete lines of `chunk` (with what was left of the previous one), as raw fields. */
  lines(chunk: Uint8Array): string[][] {
    this.append(chunk);
    return this.take();
  }

  /**
   * Keeps a copy of `chunk` for the next {@link CopyTextReader.take}: a server sends a row per
   * message, and decoding many at once costs far less than one by one.
   */
  append(chunk: Uint8Array): void {
    const needed = this.#size + chunk.length;
    if (needed > this.#bytes.length) {
      const grown = new Uint8Array(Math.max(needed, this.#bytes.length * 2));
      grown.set(this.#bytes.subarray(0, this.#size));
      this.#bytes = grown;
    }
    this.#bytes.set(chunk, this.#size);
    this.#size = needed;
  }

  /** How many appended bytes wait for {@link CopyTextReader.take}. */
  get buffered(): number {
    return this.#size;
  }

  /** The complete lines of everything appended so far, as raw fields. */
  take(): string[][] {
    const decoded = this.#decoder.decode(this.#bytes.subarray(0, this.#size), { stream: true });
    this.#size = 0;
    const text = this.#rest === "" ? decoded : this.#rest + decoded;
    const out: string[][] = [];
    let start = 0;
    for (;;) {
      const end = text.indexOf("\n", start);
      if (end === -1) break;
      out.push(text.slice(start, end).split("\t"));
      start = end + 1;
    }
    this.#rest = text.slice(start);
    return out;
  }

  /** Fails when the output ended in the middle of a line. */
  end(): void {
    const tail = this.#rest +
      this.#decoder.decode(this.#bytes.subarray(0, this.#size), { stream: true }) +
      this.#decoder.decode();
    this.#size = 0;
    if (tail !== "") throw new Error("COPY output ended in the middle of a line");
  }
}

/**
 * A query with its `$n` placeholders replaced by `(SELECT current_setting('carrel.bind_n')::<type>)`
 * (an init plan: evaluated once, not per row), and `NULL::<type>` for null parameters, so it can
 * run inside COPY, which takes no bind parameters, while the values travel only as bind
 * parameters of a `set_config(..., true)` (transaction-local) and never appear in statement text.
 * Placeholders inside string literals, quoted identifiers, dollar-quoted strings and comments are
 * left alone.
 *
 * @example Usage
 * ```ts
 * import { bindAsSettings } from "./sql_copy.ts";
 * const q = bindAsSettings("SELECT * FROM t WHERE a >= $1 AND b = '$1'", ["timestamptz"], [false]);
 * console.log(q); // SELECT * FROM t WHERE a >= (SELECT current_setting('carrel.bind_1')::timestamptz) AND b = '$1'
 * ```
 */
export function bindAsSettings(
  query: string,
  types: readonly string[],
  isNull: readonly boolean[],
): string {
  let out = "";
  let i = 0;
  const n = query.length;
  while (i < n) {
    const c = query[i]!;
    const next = query[i + 1];
    let end = i + 1;
    if (c === "'" || c === '"') {
      // E'...' strings take backslash escapes; in any literal a doubled quote continues it.
      const escapes = c === "'" && i > 0 && /[Ee]/.test(query[i - 1]!) &&
        !/[A-Za-z0-9_$]/.test(query[i - 2] ?? "");
      end = i + 1;
      while (end < n) {
        const d = query[end]!;
        if (escapes && d === "\\") end += 2;
        else if (d === c && query[end + 1] === c) end += 2;
        else if (d === c) break;
        else end++;
      }
      end = Math.min(end + 1, n);
    } else if (c === "-" && next === "-") {
      end = query.indexOf("\n", i);
      end = end === -1 ? n : end + 1;
    } else if (c === "/" && next === "*") {
      let depth = 1;
      end = i + 2;
      while (end < n && depth > 0) {
        if (query.startsWith("/*", end)) {
          depth++;
          end += 2;
        } else if (query.startsWith("*/", end)) {
          depth--;
          end += 2;
        } else end++;
      }
    } else if (c === "$") {
      const param = /^\$(\d+)/.exec(query.slice(i, i + 12));
      const prev = i > 0 ? query[i - 1]! : "";
      if (param && !/[A-Za-z0-9_$]/.test(prev)) {
        const index = Number(param[1]);
        const type = types[index - 1];
        if (type === undefined) {
          throw new SqlError(`Query parameter $${index} has no value`, "INVALID_ARGUMENT");
        }
        out += isNull[index - 1]
          ? `NULL::${type}`
          : `(SELECT current_setting('carrel.bind_${index}')::${type})`;
        i += param[0].length;
        continue;
      }
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(query.slice(i, i + 64));
      if (tag && !/[A-Za-z0-9_]/.test(prev)) {
        const close = query.indexOf(tag[0], i + tag[0].length);
        end = close === -1 ? n : close + tag[0].length;
      }
    }
    out += query.slice(i, end);
    i = end;
  }
  return out;
}
