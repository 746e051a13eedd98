/**
 * Logging through LogTape: JSON lines (or pretty text) on stderr, a rotating file under
 * `CARREL_HOME/logs`, correlation ids, and redaction of secrets and PII-named fields.
 *
 * @module
 */
import {
  configureSync,
  getLogger,
  getTextFormatter,
  jsonLinesFormatter,
  type LogLevel,
  type LogRecord,
  resetSync,
  type Sink,
  type TextFormatter,
} from "@logtape/logtape";
import {
  DEFAULT_REDACT_FIELDS,
  EMAIL_ADDRESS_PATTERN,
  redactByField,
  redactByPattern,
} from "@logtape/redaction";
import { join } from "node:path";
import { historyOf, type NewLogLine } from "./state/history.ts";
import type { StateStore } from "./state/store.ts";

/** A structured logger bound to a run (and task). Log counts and field names, never values. */
export interface TaskLogger {
  debug(message: string, properties?: Record<string, unknown>): void;
  info(message: string, properties?: Record<string, unknown>): void;
  warn(message: string, properties?: Record<string, unknown>): void;
  error(message: string, properties?: Record<string, unknown>): void;
}

/** Field names whose values are removed from every log record. */
export const REDACTED_FIELDS: (string | RegExp)[] = [
  ...DEFAULT_REDACT_FIELDS,
  /pass(word|wd)?/i,
  /secret/i,
  /^key$/i,
  /hmac/i,
  /database_?url/i,
  /connection/i,
  /patron/i,
  /borrower/i,
  /card(number)?/i,
  /barcode/i,
  /e-?mail/i,
  /phone|mobile/i,
  /(first|last|family|given|middle)_?name/i,
  /address|street|post_?code|zip/i,
  /dob|birth/i,
  /^usr$/i,
];

const encoder = new TextEncoder();

function stderrSink(formatter: TextFormatter): Sink {
  return (record: LogRecord) => {
    try {
      Deno.stderr.writeSync(encoder.encode(formatter(record)));
    } catch {
      // stderr closed: nothing useful left to do with a log line.
    }
  };
}

/**
 * A log file readable by its owner only (0600, also after rotation, whatever the umask):
 * appends JSON lines; past `maxSize` bytes, `carrel.log` becomes `carrel.log.1`, `.1` becomes
 * `.2`, ... up to `maxFiles`. Several processes may append to one file (each line is one write).
 */
function privateRotatingFileSink(
  path: string,
  options: { formatter: TextFormatter; maxSize: number; maxFiles: number },
): Sink & Disposable {
  let file: Deno.FsFile | undefined;
  let size = 0;
  const open = () => {
    file = Deno.openSync(path, { create: true, append: true, mode: 0o600 });
    Deno.chmodSync(path, 0o600);
    size = file.statSync().size;
  };
  const rotate = () => {
    file?.close();
    file = undefined;
    for (let i = options.maxFiles - 1; i >= 1; i--) {
      try {
        Deno.renameSync(i === 1 ? path : `${path}.${i - 1}`, `${path}.${i}`);
      } catch { /* that generation does not exist yet */ }
    }
  };
  const sink = (record: LogRecord) => {
    const bytes = encoder.encode(options.formatter(record));
    try {
      if (!file) open();
      if (size > 0 && size + bytes.length > options.maxSize) {
        rotate();
        open();
      }
      file!.writeSync(bytes);
      size += bytes.length;
    } catch {
      // A full disk or a removed folder must not stop the work; the audit trail is in the store.
      file?.close();
      file = undefined;
    }
  };
  return Object.assign(sink, {
    [Symbol.dispose]() {
      file?.close();
      file = undefined;
    },
  });
}

/** What `setupLogging` needs. */
export interface LoggingOptions {
  /** `json` (default when stdout is not a terminal) or `pretty`. */
  format?: "json" | "pretty";
  level?: LogLevel;
  /** Writes a rotating log file here when set (`CARREL_HOME/logs`). */
  logDir?: string;
  /** Whether log lines go to stderr too. */
  console?: boolean;
  /** Size at which the log file rotates. Default 10 MiB. */
  maxFileSize?: number;
}

/**
 * Configures LogTape for the CLI. Safe to call again (it resets the previous configuration).
 *
 * @example
 * ```ts ignore
 * import { setupLogging } from "./log.ts";
 * setupLogging({ format: "json", logDir: ".carrel/logs" });
 * ```
 */
export function setupLogging(options: LoggingOptions = {}): void {
  const format = options.format ??
    (Deno.env.get("CARREL_LOG_FORMAT") === "pretty"
      ? "pretty"
      : Deno.env.get("CARREL_LOG_FORMAT") === "json"
      ? "json"
      : Deno.stdout.isTerminal()
      ? "pretty"
      : "json");
  const text: TextFormatter = format === "json" ? jsonLinesFormatter : getTextFormatter({
    timestamp: "time",
    value: (v) => (typeof v === "string" ? v : JSON.stringify(v)),
  });
  const formatter = redactByPattern(text, [EMAIL_ADDRESS_PATTERN]);
  const sinks: Record<string, Sink> = {};
  if (options.console !== false) {
    sinks.stderr = redactByField(stderrSink(formatter), {
      fieldPatterns: REDACTED_FIELDS,
      action: () => "[REDACTED]",
    }) as Sink;
  }
  if (options.logDir) {
    Deno.mkdirSync(options.logDir, { recursive: true, mode: 0o700 });
    Deno.chmodSync(options.logDir, 0o700);
    const file = privateRotatingFileSink(join(options.logDir, "carrel.log"), {
      formatter: redactByPattern(jsonLinesFormatter, [EMAIL_ADDRESS_PATTERN]),
      maxSize: options.maxFileSize ?? 10 * 1024 * 1024,
      maxFiles: 10,
    });
    sinks.file = redactByField(file, {
      fieldPatterns: REDACTED_FIELDS,
      action: () => "[REDACTED]",
    }) as Sink;
  }
  sinks.attached = redactByField(attachedSinks, {
    fieldPatterns: REDACTED_FIELDS,
    action: () => "[REDACTED]",
  }) as Sink;
  const level = options.level ?? (Deno.env.get("CARREL_LOG_LEVEL") as LogLevel | undefined) ??
    "info";
  configureSync({
    reset: true,
    sinks,
    loggers: [
      { category: ["carrel"], lowestLevel: level, sinks: Object.keys(sinks) },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
}

/** Turns logging off again (for tests). */
export function resetLogging(): void {
  resetSync();
}

/**
 * A logger bound to a run's correlation id (the run id), its DAG and, optionally, a task.
 *
 * @example
 * ```ts
 * import { runLogger } from "./log.ts";
 * const log = runLogger({ runId: "demo@2026-01-01T00:00:00Z", dagId: "demo", taskId: "load" });
 * log.info("Loaded {count} records", { count: 12 });
 * ```
 */
export function runLogger(
  bind: { runId: string; dagId: string; taskId?: string; attempt?: number },
): TaskLogger {
  const logger = getLogger(["carrel", bind.taskId ? "task" : "run"]).with({
    correlationId: bind.runId,
    dagId: bind.dagId,
    ...(bind.taskId ? { taskId: bind.taskId } : {}),
    ...(bind.attempt ? { attempt: bind.attempt } : {}),
  });
  return {
    debug: (message, properties) => logger.debug(message, properties ?? {}),
    info: (message, properties) => logger.info(message, properties ?? {}),
    warn: (message, properties) => logger.warn(message, properties ?? {}),
    error: (message, properties) => logger.error(message, properties ?? {}),
  };
}

// ---- Per-attempt log lines in the state store ------------------------------------------------

/** Sinks attached while a store is open; `setupLogging` sends every record to them, redacted. */
const attached = new Set<Sink>();

function attachedSinks(record: LogRecord): void {
  for (const sink of attached) sink(record);
}

/**
 * Sends log records to `sink` (after field redaction) until the returned function is called.
 * Takes effect once `setupLogging` has run.
 */
export function attachLogSink(sink: Sink): () => void {
  attached.add(sink);
  return () => {
    attached.delete(sink);
  };
}

const BOUND = new Set(["correlationId", "dagId", "taskId", "attempt"]);
const MAX_PROPERTIES_BYTES = 8 * 1024;

function maskEmails(text: string): string {
  return text.replace(EMAIL_ADDRESS_PATTERN.pattern, EMAIL_ADDRESS_PATTERN.replacement as string);
}

function renderValue(value: unknown): string {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/**
 * The stored form of a run's log record, or null for records not bound to a run. The message
 * is rendered with its (already field-redacted) values and e-mail addresses are masked, as in
 * the log file; properties other than the binding are kept when they are small.
 */
export function toLogLine(record: LogRecord): NewLogLine | null {
  const p = record.properties;
  if (typeof p.correlationId !== "string" || typeof p.dagId !== "string") return null;
  const message = maskEmails(
    record.message.map((part, i) => (i % 2 === 0 ? String(part) : renderValue(part))).join(""),
  );
  const rest = Object.fromEntries(Object.entries(p).filter(([k]) => !BOUND.has(k)));
  let properties: Record<string, unknown> | null = null;
  if (Object.keys(rest).length > 0) {
    let text: string | undefined;
    try {
      text = JSON.stringify(rest, (_k, v) => typeof v === "bigint" ? String(v) : v);
    } catch {
      text = undefined;
    }
    if (text !== undefined && text.length <= MAX_PROPERTIES_BYTES) {
      properties = JSON.parse(maskEmails(text));
    }
  }
  return {
    runId: p.correlationId,
    dagId: p.dagId,
    taskId: typeof p.taskId === "string" ? p.taskId : null,
    attempt: typeof p.attempt === "number" ? p.attempt : null,
    at: new Date(record.timestamp),
    level: record.level,
    category: record.category.join("."),
    message,
    properties,
  };
}

/** A sink that writes run log lines in batches; dispose it to write what is left. */
export interface BatchedLogSink extends AsyncDisposable {
  sink: Sink;
  /** Writes the lines buffered so far. */
  flush(): Promise<void>;
}

/**
 * A LogTape sink that batches run log lines (records bound to a run, see `toLogLine`) and
 * writes them with `write`: at most every `intervalMs`, or at once when `maxBatch` lines wait.
 * A failed write drops its batch with one warning on stderr: logging never fails a run.
 *
 * @example
 * ```ts
 * import { batchedLogSink } from "./log.ts";
 * const written: unknown[] = [];
 * await using logs = batchedLogSink(async (lines) => { written.push(...lines); });
 * logs.sink({
 *   category: ["carrel", "task"], level: "info", timestamp: Date.now(), rawMessage: "hi",
 *   message: ["hi"], properties: { correlationId: "d@2026-01-01T00:00:00Z", dagId: "d" },
 * });
 * await logs.flush();
 * written.length; // 1
 * ```
 */
export function batchedLogSink(
  write: (lines: NewLogLine[]) => Promise<void>,
  options: { intervalMs?: number; maxBatch?: number } = {},
): BatchedLogSink {
  const intervalMs = options.intervalMs ?? 200;
  const maxBatch = options.maxBatch ?? 500;
  let buffer: NewLogLine[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  let pending: Promise<void> = Promise.resolve();
  let warned = false;
  const flush = (): Promise<void> => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    const batch = buffer;
    buffer = [];
    if (batch.length > 0) {
      pending = pending.then(() => write(batch)).catch((error) => {
        if (warned) return;
        warned = true;
        const reason = error instanceof Error ? error.message : String(error);
        try {
          Deno.stderr.writeSync(
            encoder.encode(`Warning: cannot write log lines to the state store: ${reason}\n`),
          );
        } catch { /* stderr closed */ }
      });
    }
    return pending;
  };
  const sink: Sink = (record) => {
    const line = toLogLine(record);
    if (!line) return;
    buffer.push(line);
    if (buffer.length >= maxBatch) void flush();
    else if (timer === undefined) {
      const t = setTimeout(() => void flush(), intervalMs);
      Deno.unrefTimer(t);
      timer = t;
    }
  };
  return { sink, flush, [Symbol.asyncDispose]: () => flush() };
}

/**
 * Writes the log lines of runs into `store` (table `task_logs`), so `runs logs` and the console
 * read an attempt's lines wherever it ran. Dispose before closing the store.
 *
 * @example
 * ```ts ignore
 * import { storeLogs } from "./log.ts";
 * await using logs = storeLogs(store);
 * ```
 */
export function storeLogs(store: StateStore): AsyncDisposable {
  const history = historyOf(store);
  const batched = batchedLogSink((lines) => history.appendLogs(lines));
  const detach = attachLogSink(batched.sink);
  return {
    async [Symbol.asyncDispose]() {
      detach();
      await batched.flush();
    },
  };
}
