/**
 * Callbacks of strict DAGs and tasks run in a sandbox with only what they declare: one that
 * reads PII_HMAC_KEY or reaches an undeclared host fails (audited, naming the hook and the
 * capability, never a value), on the local executor and on workers, and the host hears nothing;
 * the webhook and e-mail notifiers, which declare their hosts and variables, still deliver; a
 * callback may not declare the key; outside strict mode a callback runs in-process as before.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { AuditEntry } from "../../core/audit.ts";
import { type DataInterval, type ResolvedDag } from "../../core/dag.ts";
import { loadDags } from "../../core/loader.ts";
import { executeRun } from "../../core/run/local.ts";
import { runWorker, startRun } from "../../core/run/worker.ts";
import { sandboxStats } from "../../core/sandbox/pool.ts";
import type { SqlStateStore } from "../../core/state/sql_store.ts";
import { testStore, withTmpDir } from "../test_utils.ts";
import { smtpReceiver, webhookReceiver } from "./helpers.ts";

const INTERVAL: DataInterval = {
  start: new Date("2026-03-01T00:00:00Z"),
  end: new Date("2026-03-02T00:00:00Z"),
};
const KEY = "callback-sandbox-key-0123456789abcdef0123";
const SECRET = "whsec-sandboxed-0123456789abcdef0123456789";
Deno.env.set("PII_HMAC_KEY", KEY);
Deno.env.set("CARREL_TEST_SANDBOX_WEBHOOK_SECRET", SECRET);

async function audit(store: SqlStateStore, runId: string): Promise<AuditEntry[]> {
  const out: AuditEntry[] = [];
  for await (const e of store.iterateAudit({ correlationId: runId })) out.push(e);
  return out;
}

async function load(dir: string, source: string): Promise<ResolvedDag> {
  const dags = join(dir, "dags");
  await Deno.mkdir(dags, { recursive: true });
  await Deno.writeTextFile(join(dags, "d.ts"), source);
  const loaded = await loadDags(dags, { fresh: true });
  assert.deepEqual(loaded.errors, []);
  return [...loaded.dags.values()][0]!;
}

/** A DAG whose one task fails; `hooks` go on the DAG, `taskHooks` on the task. */
function failing(sandbox: string, hooks: string, taskHooks = ""): string {
  return `import { declareCallbackNeeds, defineDag, task } from "carrel";
import { email, webhook } from "carrel/operators";
export default defineDag({
  id: "cb_ID",
  schedule: null,
  ${sandbox}
  ${hooks}
  tasks: {
    boom: task({ ${taskHooks} run: () => { throw new Error("the warehouse is down"); } }),
  },
});
`;
}

Deno.test({
  name: "callbacks of a strict DAG run with only what they declare",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using tmp = await withTmpDir();
    await using store = await testStore("pglite");
    await using hook = webhookReceiver();
    const host = new URL(hook.url).host;
    let n = 0;
    const run = async (source: string) => {
      n++;
      const dag = await load(join(tmp.path, String(n)), source.replace("cb_ID", `cb_${n}`));
      const result = await executeRun({
        dag,
        interval: INTERVAL,
        params: {},
        store,
        home: join(tmp.path, `home${n}`),
      });
      assert.equal(result.state, "failed");
      const failed = (await audit(store, result.runId)).filter((e) =>
        e.operation === "alert:failed"
      );
      return failed.map((e) => String((e.detail as { error?: unknown }).error));
    };

    await t.step("reading the key, or fetching an undeclared host, is refused", async () => {
      const started = sandboxStats.started;
      const errors = await run(failing(
        `sandbox: "strict",`,
        `onFailure: async () => { Deno.env.get("PII_HMAC_KEY"); },`,
        `onFailure: async () => { await fetch(${JSON.stringify(hook.url)}); },`,
      ));
      assert.equal(errors.length, 2, errors.join("\n"));
      assert.ok(
        errors.some((e) =>
          /^Alert callback onFailure \(onFailure\) may not use env access to PII_HMAC_KEY/.test(e)
        ),
        errors.join("\n"),
      );
      assert.ok(
        errors.some((e) => e.includes(`may not use net access to ${host}`)),
        errors.join("\n"),
      );
      assert.equal(hook.received.items.length, 0, "the undeclared host heard nothing");
      assert.ok(errors.every((e) => !e.includes(KEY)));
      assert.ok(sandboxStats.started > started, "the callbacks ran in sandbox Workers");
    });

    await t.step("the webhook notifier declares its host and secret, and delivers", async () => {
      const errors = await run(failing(
        `sandbox: "strict",`,
        `onFailure: webhook({ url: ${
          JSON.stringify(hook.url)
        }, secret: { env: "CARREL_TEST_SANDBOX_WEBHOOK_SECRET" } }),`,
      ));
      assert.deepEqual(errors, []);
      const [delivery] = await hook.received.count(1);
      assert.equal(JSON.parse(delivery!.body).event, "run_failure");
      assert.ok(delivery!.headers.get("x-carrel-signature"));
    });

    await t.step(
      "the e-mail notifier declares its server and variables, and delivers",
      async () => {
        await using smtp = await smtpReceiver();
        Deno.env.set("CARREL_TEST_SANDBOX_SMTP_URL", smtp.url);
        try {
          const errors = await run(failing(
            `sandbox: "strict",`,
            `onFailure: email({ to: "systems@library.example.org", smtp: { env: "CARREL_TEST_SANDBOX_SMTP_URL" } }),`,
          ));
          assert.deepEqual(errors, []);
          const [mail] = await smtp.mails.count(1);
          assert.deepEqual(mail!.to, ["systems@library.example.org"]);
          assert.equal(mail!.user, "alerts");
        } finally {
          Deno.env.delete("CARREL_TEST_SANDBOX_SMTP_URL");
        }
      },
    );

    await t.step("a declared host is reachable; the key may not be declared", async () => {
      const before = hook.received.items.length;
      const errors = await run(failing(
        `sandbox: "strict",`,
        `onFailure: declareCallbackNeeds(async (alert) => {
          await (await fetch(${
          JSON.stringify(hook.url)
        }, { method: "POST", body: alert.event })).body?.cancel();
        }, () => ({ net: [${JSON.stringify(host)}] })),`,
        `onFailure: declareCallbackNeeds(async () => Deno.env.get("PII_HMAC_KEY"), () => ({ env: ["PII_HMAC_KEY"] })),`,
      ));
      await hook.received.count(before + 1);
      assert.equal(hook.received.items[before]!.body, "run_failure");
      assert.equal(errors.length, 1, errors.join("\n"));
      assert.equal(
        errors[0],
        "Alert callback onFailure (callback) may not declare env PII_HMAC_KEY: it holds the tokenization key",
      );
    });

    await t.step("on workers too: the callback that reads the key is refused", async () => {
      n++;
      const dir = join(tmp.path, String(n));
      const dag = await load(
        dir,
        failing(
          `sandbox: "strict",`,
          `onFailure: async () => { Deno.env.get("PII_HMAC_KEY"); },`,
        ).replace("cb_ID", `cb_${n}`),
      );
      const run = await startRun(store, dag, INTERVAL, {}, "triggered");
      for (let i = 0; i < 20; i++) {
        await runWorker({
          store,
          dagsDir: join(dir, "dags"),
          home: join(tmp.path, `home${n}`),
          concurrency: 2,
          pollMs: 50,
          exitWhenIdle: true,
        });
        if ((await store.getRun(run.runId))!.state === "failed") break;
      }
      assert.equal((await store.getRun(run.runId))!.state, "failed");
      const errors = (await audit(store, run.runId)).filter((e) => e.operation === "alert:failed")
        .map((e) => String((e.detail as { error?: unknown }).error));
      assert.equal(errors.length, 1, errors.join("\n"));
      assert.match(
        errors[0]!,
        /^Alert callback onFailure \(onFailure\) may not use env access to PII_HMAC_KEY/,
      );
    });

    await t.step("outside strict mode a callback runs in-process, as before", async () => {
      const errors = await run(failing(
        ``,
        `onFailure: async () => { if (!Deno.env.get("PII_HMAC_KEY")) throw new Error("no key"); },`,
      ));
      assert.deepEqual(errors, []);
    });
  },
});
