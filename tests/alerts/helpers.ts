/**
 * Receivers for alert tests: a local webhook endpoint (Deno.serve on 127.0.0.1, port 0) and a
 * local SMTP server (the `smtp-server` package), each recording what it received and letting a
 * test await the n-th delivery instead of sleeping. Also a log capture (LogTape, unredacted, so
 * a leak cannot hide behind redaction) and a value-free sample alert.
 */
import { Buffer } from "node:buffer";
import { configureSync, type LogRecord, resetSync } from "@logtape/logtape";
// @ts-types="@types/smtp-server"
import { SMTPServer } from "smtp-server";
import type { Alert } from "../../core/alerts/alert.ts";

/** One request the webhook endpoint received. */
export interface Received {
  body: string;
  headers: Headers;
  at: number;
}

/** Resolves when a list has reached `n` items (pushed through `push`). */
class Waiters<T> {
  readonly items: T[] = [];
  #waiting: { n: number; resolve: () => void }[] = [];
  push(item: T): void {
    this.items.push(item);
    this.#waiting = this.#waiting.filter((w) => {
      if (this.items.length < w.n) return true;
      w.resolve();
      return false;
    });
  }
  /** Waits until `n` items have arrived. */
  count(n: number): Promise<T[]> {
    if (this.items.length >= n) return Promise.resolve(this.items);
    return new Promise((resolve) => this.#waiting.push({ n, resolve: () => resolve(this.items) }));
  }
}

/**
 * A webhook endpoint. `answer` decides each response (by 0-based request number); a response
 * may be held until `release()` (to test time limits).
 */
export function webhookReceiver(
  answer: (n: number) => number | "hang" = () => 200,
) {
  const received = new Waiters<Received>();
  let release: () => void = () => {};
  const held = new Promise<void>((r) => release = r);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const n = received.items.length;
    // A request its client gave up on while sending still counts (with what arrived).
    const body = await req.text().catch(() => "");
    received.push({ body, headers: req.headers, at: Date.now() });
    const status = answer(n);
    if (status === "hang") {
      await held;
      return new Response("late", { status: 200 });
    }
    return new Response(status < 300 ? "ok" : "no", { status });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/hooks/carrel?token=URL-TOKEN-SECRET`,
    received,
    release,
    async [Symbol.asyncDispose]() {
      release();
      await server.shutdown();
    },
  };
}

/** One message the SMTP server received. */
export interface Mail {
  from: string;
  to: string[];
  raw: string;
  user: string | undefined;
}

/** A local SMTP server on 127.0.0.1 (plain text, AUTH allowed without TLS for the test). */
export async function smtpReceiver(credentials = { user: "alerts", pass: "SMTP-PASS-SECRET" }) {
  const mails = new Waiters<Mail>();
  const server = new SMTPServer({
    disabledCommands: ["STARTTLS"],
    allowInsecureAuth: true,
    authOptional: true,
    logger: false,
    onAuth(auth, _session, callback) {
      if (auth.username === credentials.user && auth.password === credentials.pass) {
        callback(null, { user: auth.username });
      } else callback(new Error("Invalid username or password"));
    },
    onData(stream, session, callback) {
      const chunks: Uint8Array[] = [];
      stream.on("data", (c: Uint8Array) => chunks.push(c));
      stream.on("end", () => {
        const from = session.envelope.mailFrom;
        mails.push({
          from: from ? from.address : "",
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks).toString("utf8"),
          user: typeof session.user === "string" ? session.user : undefined,
        });
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.server.address() as { port: number }).port;
  return {
    port,
    url: `smtp://${credentials.user}:${credentials.pass}@127.0.0.1:${port}`,
    mails,
    async [Symbol.asyncDispose]() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Captures every `carrel` log record (unredacted) until disposed. */
export function captureLogs() {
  const records: LogRecord[] = [];
  configureSync({
    reset: true,
    sinks: { memory: (r: LogRecord) => records.push(r) },
    loggers: [
      { category: ["carrel"], lowestLevel: "debug", sinks: ["memory"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: [] },
    ],
  });
  return {
    records,
    /** Every record as text: its rendered message and its properties. */
    text(): string {
      return records.map((r) =>
        JSON.stringify({ message: r.message.map(String).join(""), properties: r.properties })
      ).join("\n");
    },
    [Symbol.dispose]() {
      resetSync();
    },
  };
}

/** A value-free alert, as the dispatcher makes them. */
export function sampleAlert(overrides: Partial<Alert> = {}): Alert {
  return {
    id: "5f0c2a1e-7d3b-4c8e-9a61-2b4f8e0d7c35",
    event: "task_failure",
    hook: "onFailure",
    dagId: "circulation_sync",
    taskId: "load",
    runId: "circulation_sync@2026-03-01T00:00:00.000Z",
    logicalDate: "2026-03-01T00:00:00.000Z",
    dataInterval: { start: "2026-03-01T00:00:00.000Z", end: "2026-03-02T00:00:00.000Z" },
    runType: "scheduled",
    state: "failed",
    attempt: 3,
    durationMs: 1520,
    counts: { quarantined: 4 },
    error: 'Task "load" timed out after 15m',
    zone: "shared",
    url: "https://carrel.library.example/runs/circulation_sync%402026-03-01T00%3A00%3A00.000Z",
    sla: null,
    at: "2026-03-02T02:10:00.000Z",
    ...overrides,
  };
}
