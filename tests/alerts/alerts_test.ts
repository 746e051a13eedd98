/**
 * Callbacks and SLAs end to end, on PGlite and (with CARREL_TEST_DATABASE_URL) PostgreSQL: the
 * local executor and the workers fire each callback once per recorded transition, with value-free
 * payloads (a sentinel patron value in the data and in an enclave task's error reaches no payload,
 * webhook body, log line or audit entry); a failing or hanging callback never fails the run and is
 * audited; SLA misses are recorded, audited and notified exactly once, whether found by the
 * process that ends a task late or by several schedulers checking at once.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { Alert } from "../../core/alerts/alert.ts";
import { AlertDispatcher } from "../../core/alerts/dispatch.ts";
import { checkSlas } from "../../core/alerts/sla.ts";
import type { AuditEntry } from "../../core/audit.ts";
import { type DataInterval, defineDag, resolveDag, task } from "../../core/dag.ts";
import { loadDags } from "../../core/loader.ts";
import { executeRun } from "../../core/run/local.ts";
import { runWorker, startRun } from "../../core/run/worker.ts";
import { schedulerPass } from "../../core/scheduler.ts";
import type { SqlStateStore } from "../../core/state/sql_store.ts";
import { webhook } from "../../operators/notify/webhook.ts";
import {
  BACKENDS,
  CORE_MOD,
  notePostgresSkipped,
  OPERATORS_MOD,
  testStore,
} from "../test_utils.ts";
import { captureLogs, webhookReceiver } from "./helpers.ts";

notePostgresSkipped();

const opts = { sanitizeResources: false, sanitizeOps: false };
const SENTINEL = "PATRON-SENTINEL-Q7X9";
const CALLBACK_SECRET = "CALLBACK-SECRET-Z3";
const SECRET = "whsec-alerts-0123456789abcdef0123456789";
Deno.env.set("CARREL_TEST_WEBHOOK_SECRET", SECRET);
Deno.env.set("CARREL_UI_URL", "https://carrel.library.example/");
const DAY = 86_400_000;
const INTERVAL: DataInterval = {
  start: new Date("2026-03-01T00:00:00Z"),
  end: new Date("2026-03-02T00:00:00Z"),
};

async function audit(store: SqlStateStore, runId?: string): Promise<AuditEntry[]> {
  const out: AuditEntry[] = [];
  for await (const e of store.iterateAudit(runId ? { correlationId: runId } : {})) out.push(e);
  return out;
}

/** A callback that keeps what it receives. */
function collector() {
  const got: Alert[] = [];
  return {
    got,
    collect: (a: Alert) => {
      got.push(a);
    },
  };
}

/** A compact, sortable name of an alert: `hook event task`. */
const named = (a: Alert) => `${a.hook} ${a.event} ${a.taskId ?? "-"}`;

for (const backend of BACKENDS) {
  Deno.test(
    `local executor (${backend}): callbacks fire once per transition, value-free; failing ones are audited`,
    opts,
    async () => {
      await using store = await testStore(backend, "alerts_local");
      await using hook = webhookReceiver();
      using logs = captureLogs();
      const { got, collect } = collector();
      const dag = resolveDag(defineDag({
        id: "alerts_local",
        schedule: "0 0 * * *",
        start: "2026-01-01T00:00:00Z",
        sla: "1h",
        callbackTimeout: "2s",
        onFailure: [
          collect,
          webhook({ url: hook.url, secret: { env: "CARREL_TEST_WEBHOOK_SECRET" } }),
        ],
        onRetry: collect,
        onSlaMiss: collect,
        tasks: {
          extract: task({
            zone: "enclave",
            run: () => [{ patron_id: SENTINEL, items: 2 }],
            onSuccess: [collect, () => new Promise(() => {})], // the second never answers
          }),
          explode: task({
            zone: "enclave",
            after: ["extract"],
            run: (ctx) => {
              const rows = ctx.inputs.extract as { patron_id: string }[];
              throw new Error(`patron ${rows[0]!.patron_id} has no card`);
            },
            onFailure: collect,
          }),
          flaky: task({
            retries: 1,
            retryDelay: 0,
            sla: "30m",
            run: (ctx) => {
              if (ctx.attempt === 1) throw new Error("connection reset by the warehouse");
              ctx.count("loaded", 7);
              return 1;
            },
            onRetry: collect,
            onSuccess: [collect, () => {
              throw new Error(`boom ${CALLBACK_SECRET}`);
            }],
          }),
        },
      }));
      const result = await executeRun({
        dag,
        interval: INTERVAL,
        params: {},
        store,
        home: store.home,
        runType: "scheduled",
      });
      assert.equal(result.state, "failed", "the callbacks did not change the run's outcome");
      // Everything was sent before executeRun returned.
      assert.deepEqual(got.map(named).sort(), [
        "onFailure run_failure -",
        "onFailure task_failure explode",
        "onRetry task_retry flaky", // the task's
        "onRetry task_retry flaky", // the DAG's
        "onSlaMiss sla_miss -",
        "onSlaMiss sla_miss flaky",
        "onSuccess task_success extract",
        "onSuccess task_success flaky",
      ]);
      const by = (n: string) => got.find((a) => named(a) === n)!;
      const runFailure = by("onFailure run_failure -");
      assert.deepEqual(runFailure.counts, { success: 2, failed: 1 });
      assert.equal(runFailure.state, "failed");
      assert.equal(runFailure.runId, result.runId);
      assert.equal(
        runFailure.url,
        `https://carrel.library.example/runs/${encodeURIComponent(result.runId)}`,
      );
      const flakyOk = by("onSuccess task_success flaky");
      assert.deepEqual(flakyOk.counts, { loaded: 7 });
      assert.equal(flakyOk.attempt, 2);
      assert.equal(typeof flakyOk.durationMs, "number");
      assert.equal(by("onRetry task_retry flaky").error, "connection reset by the warehouse");
      const boom = by("onFailure task_failure explode");
      assert.equal(boom.zone, "enclave");
      assert.match(boom.error ?? "", /message withheld/);
      assert.ok(boom.url?.endsWith("/tasks/explode"));
      const slaRun = by("onSlaMiss sla_miss -");
      assert.equal(
        slaRun.sla?.deadline,
        new Date(INTERVAL.end.getTime() + 3_600_000).toISOString(),
      );
      assert.equal(slaRun.sla?.detectedBy, "executor");

      // The webhook got the run's failure once, signed.
      // Delivered before executeRun returned (the endpoint records a request before answering).
      const [delivery] = hook.received.items;
      assert.equal(hook.received.items.length, 1);
      assert.equal(JSON.parse(delivery!.body).event, "run_failure");

      // Recorded and audited: two SLA misses, two failed callbacks (one threw, one timed out).
      const misses = await store.listSlaMisses([result.runId]);
      assert.deepEqual(misses.map((m) => m.taskId).sort(), ["flaky", null].sort());
      const entries = await audit(store, result.runId);
      assert.equal(entries.filter((e) => e.operation === "sla:miss").length, 2);
      const failed = entries.filter((e) => e.operation === "alert:failed");
      assert.equal(failed.length, 2);
      const reasons = failed.map((e) => String(e.detail?.error)).sort();
      assert.match(reasons[0]!, /^Alert callback onSuccess \(callback\) timed out after 2\.0s$/);
      assert.match(reasons[1]!, /^Error thrown by the callback \(message withheld/);

      // Value-free everywhere: payloads, webhook bodies, logs, the audit trail.
      const everywhere = [
        JSON.stringify(got),
        ...hook.received.items.map((r) => r.body),
        logs.text(),
        JSON.stringify(entries),
      ].join("\n");
      assert.ok(logs.records.length > 0);
      assert.ok(!everywhere.includes(SENTINEL), "the sentinel patron value leaked");
      assert.ok(!everywhere.includes(CALLBACK_SECRET), "a callback's error message leaked");
      assert.ok(!everywhere.includes(SECRET), "the webhook secret leaked");
      assert.ok(logs.text().includes("timed out after 2.0s"), "a failed callback is logged");

      // Resuming fires the new transitions' callbacks, but no SLA miss again; neither do checks.
      got.length = 0;
      const again = await executeRun({
        dag,
        interval: INTERVAL,
        params: {},
        store,
        home: store.home,
        runType: "scheduled",
      });
      assert.equal(again.state, "failed");
      assert.deepEqual(got.map(named).sort(), [
        "onFailure run_failure -",
        "onFailure task_failure explode",
        "onSuccess task_success extract",
      ]);
      const alerts = new AlertDispatcher({ store });
      assert.equal(await checkSlas([dag], store, alerts, new Date()), 0);
      await alerts.settled();
      assert.equal(got.filter((a) => a.event === "sla_miss").length, 0);
      assert.equal(
        (await audit(store, result.runId)).filter((e) => e.operation === "sla:miss").length,
        2,
      );
    },
  );

  Deno.test(
    `workers (${backend}): callbacks fire once each, from task ends, enclave units and the run's end`,
    opts,
    async () => {
      await using store = await testStore(backend, "alerts_workers");
      await using hook = webhookReceiver((n) => (n === 0 ? 500 : 200));
      using logs = captureLogs();
      const dags = join(store.home, "dags");
      const home = join(store.home, "home");
      await Deno.mkdir(dags, { recursive: true });
      await Deno.mkdir(home, { recursive: true });
      await Deno.writeTextFile(
        join(dags, "alerts_workers.ts"),
        `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
import { webhook } from ${JSON.stringify(OPERATORS_MOD)};
const hook = webhook({
  url: ${JSON.stringify(hook.url)},
  secret: { env: "CARREL_TEST_WEBHOOK_SECRET" },
  retryDelay: "10ms",
});
export default defineDag({
  id: "alerts_workers",
  schedule: null,
  onFailure: hook,
  tasks: {
    extract: task({ zone: "enclave", run: () => [{ patron_id: ${JSON.stringify(SENTINEL)} }] }),
    explode: task({
      zone: "enclave",
      after: ["extract"],
      run: (ctx) => {
        throw new Error("patron " + ctx.inputs.extract[0].patron_id + " is blocked");
      },
      onFailure: hook,
    }),
    counted: task({ run: (ctx) => { ctx.count("rows", 3); return 1; }, onSuccess: hook }),
    flaky: task({
      retries: 1,
      retryDelay: 0,
      run: (ctx) => {
        if (ctx.attempt === 1) throw new Error("transient");
        return 2;
      },
      onRetry: hook,
    }),
  },
});
`,
      );
      const loaded = await loadDags(dags, { fresh: true });
      assert.deepEqual(loaded.errors, []);
      const dag = loaded.dags.get("alerts_workers")!;
      const run = await startRun(store, dag, INTERVAL, {}, "triggered");
      for (let i = 0; i < 20; i++) {
        await runWorker({
          store,
          dagsDir: dags,
          home,
          concurrency: 2,
          pollMs: 50,
          exitWhenIdle: true,
        });
        if ((await store.getRun(run.runId))!.state === "failed") break;
      }
      assert.equal((await store.getRun(run.runId))!.state, "failed");
      // Four alerts, the first delivery retried after its 500: five requests, four deliveries.
      const received = hook.received.items;
      const deliveries = new Map<string, string>();
      for (const r of received) {
        deliveries.set(r.headers.get("x-carrel-delivery")!, r.body);
      }
      assert.equal(received.length, 5);
      const alerts = [...deliveries.values()].map((b) => JSON.parse(b) as Alert);
      assert.deepEqual(alerts.map(named).sort(), [
        "onFailure run_failure -",
        "onFailure task_failure explode",
        "onRetry task_retry flaky",
        "onSuccess task_success counted",
      ]);
      const counted = alerts.find((a) => a.taskId === "counted")!;
      assert.deepEqual(counted.counts, { rows: 3 });
      // Each alert was owed by its transition's entry, and has one receipt naming its id (the
      // webhook's delivery id): nothing is left for the scheduler to send again.
      const trail = await audit(store, run.runId);
      const receipts = trail.filter((e) => e.operation === "alert:sent");
      assert.deepEqual(
        receipts.map((e) => String(e.detail?.id)).sort(),
        [...deliveries.keys()].sort(),
      );
      assert.ok(receipts.every((e) => e.status === "sent" && e.detail?.callbacks === 1));
      assert.equal(trail.filter((e) => e.detail?.alerts === 1).length, 4);
      const runEnd = alerts.find((a) => a.event === "run_failure")!;
      assert.deepEqual(runEnd.counts, { success: 3, failed: 1 });
      assert.match(alerts.find((a) => a.taskId === "explode")!.error ?? "", /message withheld/);
      const everywhere = [
        ...received.map((r) => r.body),
        logs.text(),
        JSON.stringify(await audit(store, run.runId)),
      ].join("\n");
      assert.ok(!everywhere.includes(SENTINEL), "the sentinel patron value leaked");
      assert.ok(!everywhere.includes(SECRET), "the webhook secret leaked");
    },
  );

  Deno.test(
    `SLA (${backend}): runs unfinished past their deadline are found by the scheduler, once across schedulers`,
    opts,
    async () => {
      await using store = await testStore(backend, "alerts_sla");
      const { got, collect } = collector();
      const dag = resolveDag(defineDag({
        id: "alerts_sla",
        schedule: "0 0 * * *",
        start: "2026-03-01T00:00:00Z",
        sla: "2h",
        onSlaMiss: collect,
        tasks: {
          extract: task({ run: () => 1 }),
          load: task({ after: ["extract"], run: () => 1, sla: "1h", onSlaMiss: collect }),
        },
      }));
      const loaded = { dir: "-", dags: new Map([[dag.id, dag]]), errors: [] };
      const end = new Date("2026-03-05T00:00:00Z");
      const pass = (now: Date) =>
        schedulerPass(loaded, { store, home: store.home, mode: "workers", now });
      // 90 minutes after the interval's end: the task's SLA (1h) is missed, the run's (2h) not yet.
      // Two schedulers at once (no workers run anything meanwhile).
      const first = await Promise.all([
        pass(new Date(end.getTime() + 90 * 60_000)),
        pass(new Date(end.getTime() + 90 * 60_000)),
      ]);
      for (const r of first) assert.deepEqual(r.errors, []);
      const runId = first.flatMap((r) => r.created)[0]!;
      assert.ok(runId, "the scheduler created the due run");
      assert.deepEqual(got.map(named), ["onSlaMiss sla_miss load", "onSlaMiss sla_miss load"]);
      assert.deepEqual(got.map((a) => a.sla?.detectedBy), ["scheduler", "scheduler"]);
      // Past the run's deadline too; again from two schedulers at once.
      got.length = 0;
      await Promise.all([
        pass(new Date(end.getTime() + 3 * 3_600_000)),
        pass(new Date(end.getTime() + 3 * 3_600_000)),
      ]);
      assert.deepEqual(got.map(named), ["onSlaMiss sla_miss -"]);
      assert.equal(got[0]!.state, "running");
      assert.equal(got[0]!.sla?.deadline, "2026-03-05T02:00:00.000Z");
      // Nothing new later.
      got.length = 0;
      await pass(new Date(end.getTime() + 5 * 3_600_000));
      assert.deepEqual(got, []);
      const misses = await store.listSlaMisses([runId]);
      assert.deepEqual(
        misses.map((m) => [m.taskId, m.detectedBy, m.slaMs]),
        [["load", "scheduler", 3_600_000], [null, "scheduler", 7_200_000]],
      );
      const entries = (await audit(store, runId)).filter((e) => e.operation === "sla:miss");
      assert.equal(entries.length, 2);
      assert.deepEqual(entries.map((e) => e.taskId).sort(), ["load", null].sort());

      // Manual runs have no SLA, however late.
      const manual = await executeRun({
        dag,
        interval: {
          start: new Date(end.getTime() - 3 * DAY),
          end: new Date(end.getTime() - 2 * DAY),
        },
        params: {},
        store,
        home: store.home,
        runType: "manual",
      });
      assert.equal(manual.state, "success");
      assert.deepEqual(await store.listSlaMisses([manual.runId]), []);
    },
  );
}

Deno.test(
  "local executor (pglite): a mapped task's callbacks fire for each failing instance, under its id",
  opts,
  async () => {
    await using store = await testStore("pglite", "alerts_mapped");
    const { got, collect } = collector();
    const dag = resolveDag(defineDag({
      id: "alerts_mapped",
      schedule: null,
      start: "2026-01-01T00:00:00Z",
      callbackTimeout: "2s",
      tasks: {
        load: task({
          expand: () => [1, 2, 3],
          run: (ctx) => {
            if (ctx.item === 2) throw new Error("item two failed");
            return ctx.item;
          },
          onFailure: collect,
          onSuccess: collect,
        }),
      },
    }));
    const result = await executeRun({
      dag,
      interval: INTERVAL,
      params: {},
      store,
      home: store.home,
    });
    assert.equal(result.state, "failed");
    assert.deepEqual(got.map(named).sort(), [
      "onFailure task_failure load[1]",
      "onSuccess task_success load",
      "onSuccess task_success load[0]",
      "onSuccess task_success load[2]",
    ]);
    assert.ok(got.every((a) => a.zone === "shared"), "the instance's zone is its task's");
  },
);
