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
import { getRotatingFileSink } from "@logtape/file";
import {
  DEFAULT_REDACT_FIELDS,
  EMAIL_ADDRESS_PATTERN,
  redactByField,
  redactByPattern,
} from "@logtape/redaction";
import { join } from "node:path";

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

/** What `setupLogging` needs. */
export interface LoggingOptions {
  /** `json` (default when stdout is not a terminal) or `pretty`. */
  format?: "json" | "pretty";
  level?: LogLevel;
  /** Writes a rotating log file here when set (`CARREL_HOME/logs`). */
  logDir?: string;
  /** Whether log lines go to stderr too. */
  console?: boolean;
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
    const file = getRotatingFileSink(join(options.logDir, "carrel.log"), {
      formatter: redactByPattern(jsonLinesFormatter, [EMAIL_ADDRESS_PATTERN]),
      maxSize: 10 * 1024 * 1024,
      maxFiles: 10,
    });
    sinks.file = redactByField(file, {
      fieldPatterns: REDACTED_FIELDS,
      action: () => "[REDACTED]",
    }) as Sink;
  }
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
