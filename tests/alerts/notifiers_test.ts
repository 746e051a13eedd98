/**
 * The ready notifiers against real local receivers: the webhook's HMAC-SHA256 signature (checked
 * with `verifyWebhook` and independently with openssl), replay and tampering refused, a 500
 * retried with the same delivery id, a 4xx not retried, the per-attempt time limit; e-mail over
 * SMTP delivered to a local `smtp-server` (envelope, subject, body, authentication), and an
 * unreachable server reported without its password.
 */
import assert from "node:assert/strict";
import { NotifierError } from "../../operators/notify/secret_ref.ts";
import { signWebhook, verifyWebhook, webhook } from "../../operators/notify/webhook.ts";
import { alertMessage, email } from "../../operators/notify/email.ts";
import { opensslHmac } from "../test_utils.ts";
import { sampleAlert, smtpReceiver, webhookReceiver } from "./helpers.ts";

const SECRET = "whsec-test-0123456789abcdef0123456789";
const opts = { sanitizeResources: false, sanitizeOps: false };
Deno.env.set("CARREL_TEST_WEBHOOK_SECRET", SECRET);

const never = new AbortController().signal;

/** What a callback's promise rejects with (undefined when it resolves). */
function failure(sent: unknown): Promise<unknown> {
  return Promise.resolve(sent).then(() => undefined, (e: unknown) => e);
}

Deno.test(
  "webhook: the body is the alert, signed with HMAC-SHA256 over timestamp.body",
  opts,
  async () => {
    await using hook = webhookReceiver();
    const send = webhook({ url: hook.url, secret: { env: "CARREL_TEST_WEBHOOK_SECRET" } });
    const alert = sampleAlert();
    await send(alert, never);
    const [got] = await hook.received.count(1);
    assert.ok(got);
    assert.deepEqual(JSON.parse(got.body), alert);
    assert.equal(got.headers.get("content-type"), "application/json");
    assert.equal(got.headers.get("x-carrel-event"), "task_failure");
    // The alert's own id: a second delivery of the same alert (after a crash) carries it again.
    assert.equal(got.headers.get("x-carrel-delivery"), alert.id);
    const timestamp = got.headers.get("x-carrel-timestamp")!;
    const signature = got.headers.get("x-carrel-signature")!;
    assert.match(signature, /^sha256=[0-9a-f]{64}$/);
    // An independent implementation agrees.
    assert.equal(signature, `sha256=${await opensslHmac(SECRET, `${timestamp}.${got.body}`)}`);
    assert.ok(verifyWebhook({ secret: SECRET, body: got.body, timestamp, signature }));
    // Tampered body, wrong secret, replayed later, missing headers: refused.
    assert.ok(!verifyWebhook({ secret: SECRET, body: got.body + " ", timestamp, signature }));
    assert.ok(!verifyWebhook({ secret: SECRET + "x", body: got.body, timestamp, signature }));
    assert.ok(
      !verifyWebhook({
        secret: SECRET,
        body: got.body,
        timestamp,
        signature,
        now: new Date(Number(timestamp) * 1000 + 6 * 60_000),
      }),
    );
    assert.ok(!verifyWebhook({ secret: SECRET, body: got.body, timestamp: null, signature }));
    // A signature for another timestamp does not verify with this one.
    const other = signWebhook(SECRET, Number(timestamp) - 1, got.body);
    assert.ok(!verifyWebhook({ secret: SECRET, body: got.body, timestamp, signature: other }));
  },
);

Deno.test(
  "webhook: a 500 is retried with backoff, the same delivery id, a fresh signature",
  opts,
  async () => {
    await using hook = webhookReceiver((n) => (n === 0 ? 500 : 200));
    const send = webhook({
      url: hook.url,
      secret: { env: "CARREL_TEST_WEBHOOK_SECRET" },
      retryDelay: "20ms",
    });
    await send(sampleAlert(), never);
    const got = await hook.received.count(2);
    assert.equal(got.length, 2);
    assert.equal(
      got[0]!.headers.get("x-carrel-delivery"),
      got[1]!.headers.get("x-carrel-delivery"),
    );
    for (const r of got) {
      assert.ok(verifyWebhook({
        secret: SECRET,
        body: r.body,
        timestamp: r.headers.get("x-carrel-timestamp"),
        signature: r.headers.get("x-carrel-signature"),
      }));
    }
    assert.ok(got[1]!.at - got[0]!.at >= 20, "the retry waited for its backoff");
  },
);

Deno.test(
  "webhook: a 4xx is not retried; the error names the status, not the URL",
  opts,
  async () => {
    await using hook = webhookReceiver(() => 403);
    const send = webhook({ url: hook.url, secret: { env: "CARREL_TEST_WEBHOOK_SECRET" } });
    const error = await failure(send(sampleAlert(), never));
    assert.ok(error instanceof NotifierError);
    assert.match(error.message, /answered 403 \(1 of 4 attempts made\)/);
    assert.ok(!error.message.includes("URL-TOKEN-SECRET"));
    assert.ok(!error.message.includes(SECRET));
    assert.equal(hook.received.items.length, 1);
  },
);

Deno.test(
  "webhook: each attempt is time-limited; a silent endpoint fails the callback, not forever",
  opts,
  async () => {
    await using hook = webhookReceiver(() => "hang");
    const send = webhook({
      url: hook.url,
      secret: { env: "CARREL_TEST_WEBHOOK_SECRET" },
      timeout: "150ms",
      retries: 1,
      retryDelay: "10ms",
    });
    const error = await failure(send(sampleAlert(), never));
    assert.ok(error instanceof NotifierError, String(error));
    assert.match(error.message, /no answer within 150ms \(2 of 2 attempts made\)/);
    assert.equal(hook.received.items.length, 2);
  },
);

Deno.test("webhook: the callback's signal stops it between attempts", opts, async () => {
  await using hook = webhookReceiver(() => 503);
  const send = webhook({
    url: hook.url,
    secret: { env: "CARREL_TEST_WEBHOOK_SECRET" },
    retries: 5,
    retryDelay: "1h",
  });
  const stop = new AbortController();
  const sending = send(sampleAlert(), stop.signal);
  await hook.received.count(1);
  stop.abort(new Error("limit"));
  const error = await failure(sending);
  assert.ok(error instanceof NotifierError);
  assert.equal(hook.received.items.length, 1);
});

Deno.test(
  "webhook: secrets are references; a missing one is named, never shown",
  opts,
  async () => {
    assert.throws(
      () =>
        webhook({ url: "https://h.example.org/x", secret: "raw" as unknown as { env: string } }),
      /secret must name an environment variable/,
    );
    assert.throws(
      () => webhook({ url: "ftp://h.example.org/x", secret: { env: "X_SECRET" } }),
      /url must be an http\(s\) URL/,
    );
    const send = webhook({
      url: "https://h.example.org/x",
      secret: { env: "CARREL_TEST_UNSET_SECRET" },
    });
    await assert.rejects(
      () => Promise.resolve(send(sampleAlert(), never)),
      /Cannot send webhook\(h\.example\.org\): CARREL_TEST_UNSET_SECRET is not set/,
    );
  },
);

Deno.test(
  "email: delivered over SMTP to a local server, with subject, body and link",
  opts,
  async () => {
    await using smtp = await smtpReceiver();
    Deno.env.set("CARREL_TEST_SMTP_URL", smtp.url);
    const send = email({
      to: ["systems@library.example.org", "oncall@library.example.org"],
      from: "carrel@library.example.org",
      smtp: { env: "CARREL_TEST_SMTP_URL" },
    });
    const alert = sampleAlert();
    await send(alert, never);
    const [mail] = await smtp.mails.count(1);
    assert.ok(mail);
    assert.equal(mail.user, "alerts", "authenticated with the URL's credentials");
    assert.equal(mail.from, "carrel@library.example.org");
    assert.deepEqual(mail.to, ["systems@library.example.org", "oncall@library.example.org"]);
    const unfolded = mail.raw.replace(/\r\n[ \t]+/g, " ");
    // The body as read (quoted-printable soft breaks and escapes undone).
    const body = mail.raw.replace(/=\r\n/g, "").replace(
      /=([0-9A-F]{2})/g,
      (_, hex: string) => String.fromCharCode(parseInt(hex, 16)),
    );
    const { subject, text } = alertMessage(alert);
    assert.match(unfolded, /^Subject: \[Carrel\] Task load of circulation_sync failed/m);
    assert.ok(subject.includes("2026-03-01T00:00:00.000Z"));
    assert.match(unfolded, /^X-Carrel-Event: task_failure/m);
    for (const line of ["State:          failed", "Attempt:        3", "quarantined 4"]) {
      assert.ok(text.includes(line), line);
      assert.ok(body.includes(line), `the delivered body holds "${line}"`);
    }
    assert.ok(body.includes(`Console: ${alert.url}`));
    assert.ok(!mail.raw.includes("SMTP-PASS-SECRET"));
  },
);

Deno.test(
  "email: an unreachable server fails the callback without showing its password",
  opts,
  async () => {
    // A port that was just free: nothing listens on it.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    Deno.env.set("CARREL_TEST_SMTP_DOWN", `smtp://alerts:SMTP-PASS-SECRET@127.0.0.1:${port}`);
    const send = email({
      to: "systems@library.example.org",
      smtp: { env: "CARREL_TEST_SMTP_DOWN" },
      retries: 1,
      retryDelay: "10ms",
      timeout: "2s",
    });
    const error = await failure(send(sampleAlert(), never));
    assert.ok(error instanceof NotifierError, String(error));
    assert.match(
      error.message,
      /cannot reach the SMTP server \(E[A-Z]+\) \(2 of 2 attempts made\)/,
    );
    assert.ok(!error.message.includes("SMTP-PASS-SECRET"));
  },
);
