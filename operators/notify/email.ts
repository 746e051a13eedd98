/**
 * The e-mail notifier: sends an alert as a plain-text message over SMTP (nodemailer). The SMTP
 * server is a URL read from an environment variable when the alert is sent
 * (`CARREL_SMTP_URL` by default: `smtp://user:password@mail.example.org:587`, or `smtps://` for
 * TLS from the start), so its password never appears in a DAG file, a log or an error.
 *
 * The message holds the alert's names, states, numbers and console link only (the same
 * value-free {@link Alert} a webhook receives). Each attempt is time-limited; a connection that
 * fails or times out is tried again with backoff, an answer refusing the message is not.
 *
 * @module
 */
// A type only: nodemailer (about 11 MB per isolate) is imported when a message is sent, so the
// sandbox Worker of every task of a DAG file that imports the operators does not load it.
// @ts-types="@types/nodemailer"
import type nodemailer from "nodemailer";
import { type Alert, type AlertCallback, declareCallbackNeeds } from "../../core/alerts/alert.ts";
import { type Duration, formatDuration } from "../../core/duration.ts";
import { checkSecretRef, NotifierError, readSecret, type SecretRef } from "./secret_ref.ts";
import { deliver, deliveryPolicy } from "./delivery.ts";

/** Options of {@link email}. */
export interface EmailOptions {
  /** Recipients (staff addresses). */
  to: string | readonly string[];
  /** The sender. Default `CARREL_SMTP_FROM`, else `carrel@localhost`. */
  from?: string;
  /** The variable holding the SMTP server's URL. Default `{ env: "CARREL_SMTP_URL" }`. */
  smtp?: SecretRef;
  /** How logs and the audit trail name it. Default `email(<n> recipients)`. */
  name?: string;
  /** Per attempt (connect, greeting, and each command). Default 30s. */
  timeout?: Duration;
  /** Attempts after the first when the server cannot be reached. Default 2. */
  retries?: number;
  /** The first retry's delay, doubled for each next one. Default 2s. */
  retryDelay?: Duration;
}

const ADDRESS = /^[^\s@<>(),;:"]+@[^\s@<>(),;:"]+$/;

/** What an alert says in a subject line. */
const WHAT: Readonly<Record<Alert["event"], string>> = {
  task_failure: "failed",
  task_retry: "will be retried",
  task_success: "succeeded",
  run_failure: "failed",
  run_success: "succeeded",
  sla_miss: "missed its SLA",
};

/**
 * The subject and text of an alert's message.
 *
 * @example
 * ```ts ignore
 * const { subject, text } = alertMessage(alert);
 * ```
 */
export function alertMessage(alert: Alert): { subject: string; text: string } {
  const who = alert.taskId ? `Task ${alert.taskId} of ${alert.dagId}` : `Run of ${alert.dagId}`;
  const subject = `[Carrel] ${who} ${WHAT[alert.event]} (${alert.logicalDate})`;
  const lines = [
    `${who} ${WHAT[alert.event]}.`,
    "",
    `DAG:            ${alert.dagId}`,
    ...(alert.taskId ? [`Task:           ${alert.taskId} (${alert.zone ?? "shared"} zone)`] : []),
    `Run:            ${alert.runId} (${alert.runType})`,
    `Data interval:  ${alert.dataInterval.start} to ${alert.dataInterval.end}`,
    `State:          ${alert.state}`,
    ...(alert.attempt !== null ? [`Attempt:        ${alert.attempt}`] : []),
    ...(alert.durationMs !== null ? [`Duration:       ${formatDuration(alert.durationMs)}`] : []),
    ...(alert.sla
      ? [
        `SLA:            ${formatDuration(alert.sla.slaMs)} after the interval's end`,
        `Deadline:       ${alert.sla.deadline} (seen by the ${alert.sla.detectedBy})`,
      ]
      : []),
    ...(Object.keys(alert.counts).length > 0
      ? [
        `Counts:         ${Object.entries(alert.counts).map(([k, v]) => `${k} ${v}`).join(", ")}`,
      ]
      : []),
    ...(alert.error ? [`Error:          ${alert.error}`] : []),
    ...(alert.url ? ["", `Console: ${alert.url}`] : []),
    "",
    `Sent by Carrel at ${alert.at}.`,
  ];
  return { subject, text: lines.join("\n") + "\n" };
}

/**
 * A callback that e-mails alerts.
 *
 * @example
 * ```ts
 * import { email } from "./email.ts";
 * const onFailure = email({ to: "systems@library.example.org" });
 * typeof onFailure; // "function"
 * ```
 */
export function email(options: EmailOptions): AlertCallback {
  const to = typeof options.to === "string" ? [options.to] : [...options.to];
  if (to.length === 0 || !to.every((a) => typeof a === "string" && ADDRESS.test(a))) {
    throw new TypeError("email: to must be one or more e-mail addresses");
  }
  if (options.from !== undefined && !ADDRESS.test(options.from)) {
    throw new TypeError("email: from must be an e-mail address");
  }
  const smtp = checkSecretRef("email", "smtp", options.smtp ?? { env: "CARREL_SMTP_URL" });
  const name = options.name ?? `email(${to.length} recipient${to.length === 1 ? "" : "s"})`;
  const policy = deliveryPolicy(name, options, {
    timeoutMs: 30_000,
    retries: 2,
    retryDelayMs: 2_000,
  });

  const send = async (alert: Alert, signal: AbortSignal): Promise<void> => {
    const url = readSecret(name, smtp);
    if (!/^smtps?:\/\//i.test(url)) {
      throw new NotifierError(`${name}: ${smtp.env} must be an smtp:// or smtps:// URL`);
    }
    const from = options.from ?? (Deno.env.get("CARREL_SMTP_FROM") || "carrel@localhost");
    const { subject, text } = alertMessage(alert);
    await deliver(name, policy, signal, async () => {
      const { default: mailer }: { default: typeof nodemailer } = await import("nodemailer");
      const transport = mailer.createTransport({
        url,
        connectionTimeout: policy.timeoutMs,
        greetingTimeout: policy.timeoutMs,
        socketTimeout: policy.timeoutMs,
        logger: false,
        debug: false,
      });
      const stop = () => transport.close();
      signal.addEventListener("abort", stop, { once: true });
      try {
        await transport.sendMail({
          from,
          to,
          subject,
          text,
          headers: { "X-Carrel-Event": alert.event },
        });
        return { ok: true };
      } catch (error) {
        // The server's reply may echo addresses or the account: only codes are kept.
        const e = error as { code?: unknown; responseCode?: unknown };
        const code = typeof e.code === "string" && /^E[A-Z]+$/.test(e.code) ? e.code : "error";
        if (typeof e.responseCode === "number") {
          return {
            ok: false,
            problem: `the SMTP server refused the message (${e.responseCode}, ${code})`,
            // 4xx: try again later; 5xx: refused for good.
            retry: e.responseCode >= 400 && e.responseCode < 500,
          };
        }
        return {
          ok: false,
          problem: code === "ETIMEDOUT"
            ? `no answer from the SMTP server within ${formatDuration(policy.timeoutMs)}`
            : `cannot reach the SMTP server (${code})`,
          retry: code !== "EAUTH" && code !== "EENVELOPE",
        };
      } finally {
        signal.removeEventListener("abort", stop);
        transport.close();
      }
    });
  };
  Object.defineProperty(send, "name", { value: name });
  // In a sandbox: the SMTP server and the variables it reads, nothing else.
  return declareCallbackNeeds(send, (env) => {
    let host: string | undefined;
    try {
      const url = new URL(env.get(smtp.env) ?? "");
      const port = url.port || (url.protocol.toLowerCase() === "smtps:" ? "465" : "587");
      host = `${url.hostname}:${port}`;
    } catch { /* unset or not a URL: the callback itself says so */ }
    return {
      ...(host ? { net: [host] } : {}),
      env: [smtp.env, "CARREL_SMTP_FROM"],
    };
  });
}
