/**
 * The webhook notifier: POSTs an alert as JSON, signed with HMAC-SHA256 so the receiver can tell
 * it came from Carrel and was not replayed.
 *
 * Headers of each request:
 * - `X-Carrel-Timestamp`: Unix seconds when it was signed;
 * - `X-Carrel-Signature`: `sha256=` and the lowercase hex HMAC-SHA256 of `<timestamp>.<body>`,
 *   keyed with the UTF-8 bytes of the secret (see {@link verifyWebhook});
 * - `X-Carrel-Delivery`: one id per alert, the same on every retry (receivers deduplicate on it);
 * - `X-Carrel-Event`: `task_failure`, `run_success`, `sla_miss`, ...
 *
 * Each attempt is time-limited (`AbortSignal.timeout`); timeouts, connection failures, 408, 429
 * and 5xx answers are retried with exponential backoff; other 4xx answers are not. Failures name
 * the notifier and the status, never the URL (it may hold a token) or the secret.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHmac, timingSafeEqual } from "node:crypto";
import { type Alert, type AlertCallback, declareCallbackNeeds } from "../../core/alerts/alert.ts";
import { type Duration, formatDuration } from "../../core/duration.ts";
import { deliver, deliveryPolicy } from "./delivery.ts";
import { checkSecretRef, NotifierError, readSecret, type SecretRef } from "./secret_ref.ts";

/** Options of {@link webhook}. */
export interface WebhookOptions {
  /** The endpoint: an http(s) URL, or a reference to a variable holding it (a URL with a token). */
  url: string | SecretRef;
  /** The signing secret's variable, such as `{ env: "CARREL_ALERT_WEBHOOK_SECRET" }`. */
  secret: SecretRef;
  /** How logs and the audit trail name it. Default `webhook(<host>)` or `webhook(<variable>)`. */
  name?: string;
  /** Per attempt. Default 10s. */
  timeout?: Duration;
  /** Attempts after the first. Default 3. */
  retries?: number;
  /** The first retry's delay, doubled for each next one. Default 1s. */
  retryDelay?: Duration;
}

/** How old a signed request may be before {@link verifyWebhook} refuses it. */
export const WEBHOOK_TOLERANCE_MS = 5 * 60_000;

/**
 * The signature header's value for a body signed at `timestamp` (Unix seconds).
 *
 * @example
 * ```ts
 * import { signWebhook } from "./webhook.ts";
 * signWebhook("s3cret-s3cret-s3cret", 1767225600, '{"event":"run_failure"}').startsWith("sha256="); // true
 * ```
 */
export function signWebhook(secret: string, timestamp: number, body: string): string {
  return `sha256=${createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex")}`;
}

/**
 * Checks a received webhook: the signature matches the raw body and timestamp under `secret`,
 * and the timestamp is within `toleranceMs` of `now` (a replayed request is refused).
 *
 * @example
 * ```ts
 * import { signWebhook, verifyWebhook } from "./webhook.ts";
 * const body = '{"event":"run_failure"}';
 * const timestamp = Math.floor(Date.now() / 1000);
 * const signature = signWebhook("s3cret-s3cret-s3cret", timestamp, body);
 * verifyWebhook({ secret: "s3cret-s3cret-s3cret", body, timestamp: String(timestamp), signature }); // true
 * ```
 */
export function verifyWebhook(input: {
  secret: string;
  body: string;
  /** The `X-Carrel-Timestamp` header. */
  timestamp: string | null;
  /** The `X-Carrel-Signature` header. */
  signature: string | null;
  toleranceMs?: number;
  now?: Date;
}): boolean {
  if (!input.timestamp || !input.signature || !/^\d{1,12}$/.test(input.timestamp)) return false;
  const at = Number(input.timestamp) * 1000;
  const now = (input.now ?? new Date()).getTime();
  if (Math.abs(now - at) > (input.toleranceMs ?? WEBHOOK_TOLERANCE_MS)) return false;
  const expected = Buffer.from(signWebhook(input.secret, Number(input.timestamp), input.body));
  const given = Buffer.from(input.signature);
  return expected.length === given.length && timingSafeEqual(expected, given);
}

/** Answers worth another attempt. */
function retryable(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/**
 * A callback that sends alerts to a webhook.
 *
 * @example
 * ```ts
 * import { webhook } from "./webhook.ts";
 * const onFailure = webhook({
 *   url: "https://hooks.example.org/carrel",
 *   secret: { env: "CARREL_ALERT_WEBHOOK_SECRET" },
 * });
 * typeof onFailure; // "function"
 * ```
 */
export function webhook(options: WebhookOptions): AlertCallback {
  const secret = checkSecretRef("webhook", "secret", options.secret);
  let fixedUrl: URL | undefined;
  let urlRef: SecretRef | undefined;
  if (typeof options.url === "string") {
    fixedUrl = parseEndpoint("webhook", options.url);
  } else {
    urlRef = checkSecretRef("webhook", "url", options.url);
  }
  const name = options.name ?? `webhook(${fixedUrl ? fixedUrl.host : urlRef!.env})`;
  const policy = deliveryPolicy(name, options, {
    timeoutMs: 10_000,
    retries: 3,
    retryDelayMs: 1_000,
  });

  const send = async (alert: Alert, signal: AbortSignal): Promise<void> => {
    const key = readSecret(name, secret);
    const url = fixedUrl ?? parseEndpoint(name, readSecret(name, urlRef!), true);
    const body = JSON.stringify(alert);
    // The alert's id: the same if the alert is sent again after its process died.
    const delivery = typeof alert.id === "string" && alert.id ? alert.id : crypto.randomUUID();
    await deliver(name, policy, signal, async () => {
      const timestamp = Math.floor(Date.now() / 1000);
      try {
        const response = await fetch(url, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "user-agent": "Carrel-Alerts",
            "x-carrel-event": alert.event,
            "x-carrel-delivery": delivery,
            "x-carrel-timestamp": String(timestamp),
            "x-carrel-signature": signWebhook(key, timestamp, body),
          },
          body,
          signal: AbortSignal.any([signal, AbortSignal.timeout(policy.timeoutMs)]),
          redirect: "manual",
        });
        await response.body?.cancel();
        if (response.ok) return { ok: true };
        return {
          ok: false,
          problem: `answered ${response.status}`,
          retry: retryable(response.status),
        };
      } catch (error) {
        const timedOut = error instanceof DOMException && error.name === "TimeoutError";
        return {
          ok: false,
          problem: timedOut
            ? `no answer within ${formatDuration(policy.timeoutMs)}`
            : "unreachable (connection failed)",
          retry: true,
        };
      }
    });
  };
  Object.defineProperty(send, "name", { value: name });
  // In a sandbox: the endpoint's host and the variables it reads, nothing else.
  return declareCallbackNeeds(send, (env) => {
    let host: string | undefined;
    try {
      const url = fixedUrl ?? new URL(env.get(urlRef!.env) ?? "");
      host = `${url.hostname}:${url.port || (url.protocol === "https:" ? "443" : "80")}`;
    } catch { /* unset or not a URL: the callback itself says so */ }
    return {
      ...(host ? { net: [host] } : {}),
      env: [secret.env, ...(urlRef ? [urlRef.env] : [])],
    };
  });
}

/** An http(s) URL without credentials; errors never quote it (it may hold a token). */
function parseEndpoint(name: string, raw: string, fromEnv = false): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw (fromEnv ? new NotifierError(`${name}: its URL is not a valid URL`) : new TypeError(
      `${name}: url must be an http(s) URL`,
    ));
  }
  if ((url.protocol !== "https:" && url.protocol !== "http:") || url.username || url.password) {
    const message = `${name}: url must be an http(s) URL without credentials`;
    throw fromEnv ? new NotifierError(message) : new TypeError(message);
  }
  return url;
}
