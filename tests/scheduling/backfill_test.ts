/**
 * Backfill on PGlite and PostgreSQL: one run per interval in the range, reruns that add nothing,
 * `reprocess` of failed or all runs, and the CLI's `--dry-run --json` plan that creates nothing.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { planBackfill, runBackfill } from "../../core/backfill.ts";
import { loadDags } from "../../core/loader.ts";
import type { ResolvedDag } from "../../core/dag.ts";
import { runIdFor } from "../../core/job_key.ts";
import {
  BACKENDS,
  cli,
  CORE_MOD,
  notePostgresSkipped,
  seedHome,
  TEST_DATABASE_URL,
  testStore,
  withTmpDir,
} from "../test_utils.ts";

notePostgresSkipped();

const FROM = new Date("2026-02-01T00:00:00Z");
const TO = new Date("2026-02-04T00:00:00Z"); // inclusive: four daily intervals
const DATES = ["2026-02-01", "2026-02-02", "2026-02-03", "2026-02-04"];

/**
 * `extract -> load`. Every execution appends `date/task` to the marker file; `load` fails while a
 * flag file `fail-<date>` exists in `flags`.
 */
function dagSource(marker: string, flags: string): string {
  return `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
const mark = (ctx) => Deno.writeTextFile(${
    JSON.stringify(marker)
  }, ctx.logicalDate.toISOString().slice(0, 10) + "/" + ctx.taskId + "\\n", { append: true });
export default defineDag({
  id: "bf",
  schedule: "0 0 * * *",
  start: "2026-01-01T00:00:00Z",
  catchup: false,
  maxActiveRuns: 2,
  defaults: { retries: 0 },
  tasks: {
    extract: task({ run: async (ctx) => { await mark(ctx); return 1; } }),
    load: task({ after: ["extract"], run: async (ctx) => {
      await mark(ctx);
      const flag = ${JSON.stringify(flags)} + "/fail-" + ctx.logicalDate.toISOString().slice(0, 10);
      try { await Deno.stat(flag); } catch { return ctx.inputs.extract + 1; }
      throw new Error("load failed on purpose");
    } }),
  },
});
`;
}

async function markers(path: string): Promise<string[]> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter(Boolean).sort();
  } catch {
    return [];
  }
}

async function world(backend: "pglite" | "postgres") {
  const store = await testStore(backend, "backfill");
  const dags = join(store.home, "dags");
  const flags = join(store.home, "flags");
  await Deno.mkdir(dags, { recursive: true });
  await Deno.mkdir(flags, { recursive: true });
  const marker = join(store.home, "marker.txt");
  await Deno.writeTextFile(join(dags, "bf.ts"), dagSource(marker, flags));
  const loaded = await loadDags(dags, { fresh: true });
  assert.deepEqual(loaded.errors, []);
  const dag = loaded.dags.get("bf")!;
  const home = join(store.home, "home");
  return {
    store,
    dag,
    dags,
    marker,
    flags,
    home,
    fail: (date: string) => Deno.writeTextFile(join(flags, `fail-${date}`), ""),
    heal: (date: string) => Deno.remove(join(flags, `fail-${date}`)),
    backfill: async (reprocess: "none" | "failed" | "all", d: ResolvedDag = dag) => {
      const plan = await planBackfill(store, d, FROM, TO, reprocess);
      const results = await runBackfill(store, d, plan, { home });
      return { plan, results };
    },
    async [Symbol.asyncDispose]() {
      await store.close();
    },
  };
}

const opts = { sanitizeResources: false, sanitizeOps: false };

for (const backend of BACKENDS) {
  Deno.test({
    name: `backfill: one run per interval in the range; running it again adds nothing [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      const first = await w.backfill("none");
      assert.deepEqual(first.plan.map((p) => p.action), ["create", "create", "create", "create"]);
      assert.deepEqual(
        first.plan.map((p) => p.runId),
        DATES.map((d) => runIdFor("bf", new Date(`${d}T00:00:00Z`))),
      );
      assert.equal(first.results.length, 4);
      assert.ok(first.results.every((r) => r.state === "success"));
      const runs = await w.store.listRuns({ dagId: "bf" });
      assert.equal(runs.length, 4);
      assert.ok(runs.every((r) => r.runType === "backfill" && r.state === "success"));
      // Intervals are the DAG's: each a day long.
      for (const r of runs) {
        assert.equal(r.intervalEnd.getTime() - r.intervalStart.getTime(), 86_400_000);
      }
      const executed = await markers(w.marker);
      assert.equal(executed.length, 8);

      const second = await w.backfill("none");
      assert.deepEqual(second.plan.map((p) => p.action), ["skip", "skip", "skip", "skip"]);
      assert.deepEqual(second.plan.map((p) => p.existing), [
        "success",
        "success",
        "success",
        "success",
      ]);
      assert.equal(second.results.length, 0);
      assert.equal((await w.store.listRuns({ dagId: "bf" })).length, 4);
      assert.deepEqual(await markers(w.marker), executed, "no task executed again");

      // `failed` with nothing failed also does nothing.
      const third = await w.backfill("failed");
      assert.equal(third.results.length, 0);
      assert.deepEqual(await markers(w.marker), executed);
    },
  });

  Deno.test({
    name:
      `backfill: --reprocess failed reruns only the failed runs (and only their unfinished tasks) [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      await w.fail("2026-02-02");
      await w.fail("2026-02-04");
      const first = await w.backfill("none");
      const states = new Map(first.results.map((r) => [r.runId, r.state]));
      assert.deepEqual(DATES.map((d) => states.get(runIdFor("bf", new Date(`${d}T00:00:00Z`)))), [
        "success",
        "failed",
        "success",
        "failed",
      ]);
      assert.equal((await markers(w.marker)).length, 8);

      // `none` leaves failed runs alone.
      const none = await w.backfill("none");
      assert.equal(none.results.length, 0);
      assert.equal((await markers(w.marker)).length, 8);

      await w.heal("2026-02-02");
      await w.heal("2026-02-04");
      const retry = await w.backfill("failed");
      assert.deepEqual(retry.plan.map((p) => p.action), ["skip", "resume", "skip", "resume"]);
      assert.equal(retry.results.length, 2);
      assert.ok(retry.results.every((r) => r.state === "success"));
      // Only the failed `load` tasks ran again; their succeeded `extract` did not.
      const after = await markers(w.marker);
      assert.equal(after.length, 10);
      const counts = new Map<string, number>();
      for (const l of after) counts.set(l, (counts.get(l) ?? 0) + 1);
      assert.equal(counts.get("2026-02-02/load"), 2);
      assert.equal(counts.get("2026-02-04/load"), 2);
      assert.equal(counts.get("2026-02-02/extract"), 1);
      assert.equal(counts.get("2026-02-01/load"), 1);
      assert.equal(counts.get("2026-02-03/load"), 1);
      const runs = await w.store.listRuns({ dagId: "bf" });
      assert.equal(runs.length, 4);
      assert.ok(runs.every((r) => r.state === "success"));
    },
  });

  Deno.test({
    name: `backfill: --reprocess all reruns every run and every task [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      await w.fail("2026-02-03");
      await w.backfill("none");
      assert.equal((await markers(w.marker)).length, 8);
      await w.heal("2026-02-03");
      const all = await w.backfill("all");
      assert.deepEqual(all.plan.map((p) => p.action), ["rerun", "rerun", "resume", "rerun"]);
      assert.equal(all.results.length, 4);
      assert.ok(all.results.every((r) => r.state === "success"));
      const counts = new Map<string, number>();
      for (const l of await markers(w.marker)) counts.set(l, (counts.get(l) ?? 0) + 1);
      for (const d of ["2026-02-01", "2026-02-02", "2026-02-04"]) {
        assert.equal(counts.get(`${d}/extract`), 2, `${d}/extract`);
        assert.equal(counts.get(`${d}/load`), 2, `${d}/load`);
      }
      // The failed run resumed: its extract had succeeded, its load ran again.
      assert.equal(counts.get("2026-02-03/extract"), 1);
      assert.equal(counts.get("2026-02-03/load"), 2);
      assert.equal((await w.store.listRuns({ dagId: "bf" })).length, 4);
    },
  });

  Deno.test({
    name:
      `backfill: a range that overlaps existing runs creates only the missing ones [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await world(backend);
      const plan = await planBackfill(
        w.store,
        w.dag,
        FROM,
        new Date("2026-02-02T00:00:00Z"),
        "none",
      );
      await runBackfill(w.store, w.dag, plan, { home: w.home });
      const wider = await w.backfill("none");
      assert.deepEqual(wider.plan.map((p) => p.action), ["skip", "skip", "create", "create"]);
      assert.equal(wider.results.length, 2);
      assert.equal((await w.store.listRuns({ dagId: "bf" })).length, 4);
      assert.equal((await markers(w.marker)).length, 8);
    },
  });
}

// ---------------------------------------------------------------------------------------------
// CLI

async function cliWorld(backend: "pglite" | "postgres") {
  const dir = await withTmpDir();
  const home = join(dir.path, "home");
  const dags = join(dir.path, "dags");
  const flags = join(dir.path, "flags");
  const marker = join(dir.path, "marker.txt");
  await Deno.mkdir(dags);
  await Deno.mkdir(flags);
  await Deno.writeTextFile(join(dags, "bf.ts"), dagSource(marker, flags));
  const env: Record<string, string> = { CARREL_HOME: home, CARREL_DAGS_DIR: dags };
  let store: Awaited<ReturnType<typeof testStore>> | undefined;
  if (backend === "pglite") await seedHome(home);
  else {
    store = await testStore("postgres", "backfill_cli");
    const [{ db }] = await store.client.query<{ db: string }>(
      "SELECT current_database() AS db",
    ) as [{ db: string }];
    const u = new URL(TEST_DATABASE_URL!);
    u.pathname = `/${db}`;
    env.CARREL_DATABASE_URL = u.toString();
  }
  return {
    dir: dir.path,
    env,
    marker,
    flags,
    run: (args: string[]) => cli(args, { cwd: dir.path, env }),
    async [Symbol.asyncDispose]() {
      await store?.close();
      await dir[Symbol.asyncDispose]();
    },
  };
}

for (const backend of BACKENDS) {
  Deno.test({
    name:
      `backfill CLI: --dry-run --json prints the plan and creates nothing; the real run then reruns nothing [${backend}]`,
    ...opts,
    fn: async () => {
      await using w = await cliWorld(backend);
      const range = ["--from", "2026-02-01T00:00:00Z", "--to", "2026-02-04T00:00:00Z"];
      const dry = await w.run(["dags", "backfill", "bf", ...range, "--dry-run", "--json"]);
      assert.equal(dry.code, 0, dry.stderr);
      const plan = JSON.parse(dry.stdout).plan as {
        runId: string;
        action: string;
        existing: string | null;
        interval: { start: string; end: string };
      }[];
      assert.equal(plan.length, 4);
      assert.deepEqual(plan.map((p) => p.action), ["create", "create", "create", "create"]);
      assert.deepEqual(plan.map((p) => p.interval.start), DATES.map((d) => `${d}T00:00:00.000Z`));
      assert.deepEqual(plan.map((p) => p.existing), [null, null, null, null]);
      assert.deepEqual(await markers(w.marker), [], "a dry run executes nothing");
      const list = await w.run(["runs", "list", "--dag", "bf", "--json"]);
      assert.equal(list.code, 0, list.stderr);
      assert.deepEqual(JSON.parse(list.stdout), [], "a dry run creates no run");

      await Deno.writeTextFile(join(w.flags, "fail-2026-02-03"), "");
      const real = await w.run(["dags", "backfill", "bf", ...range, "--json"]);
      assert.equal(real.code, 1, "a failed run makes the exit code 1");
      const out = JSON.parse(real.stdout);
      assert.equal(out.runs.length, 4);
      assert.equal(out.skipped, 0);
      assert.equal((await markers(w.marker)).length, 8);

      const dry2 = await w.run([
        "dags",
        "backfill",
        "bf",
        ...range,
        "--reprocess",
        "failed",
        "--dry-run",
        "--json",
      ]);
      assert.equal(dry2.code, 0, dry2.stderr);
      assert.deepEqual(JSON.parse(dry2.stdout).plan.map((p: { action: string }) => p.action), [
        "skip",
        "skip",
        "resume",
        "skip",
      ]);
      assert.equal((await markers(w.marker)).length, 8);

      const again = await w.run(["dags", "backfill", "bf", ...range, "--json"]);
      assert.equal(again.code, 0, again.stderr);
      assert.deepEqual(JSON.parse(again.stdout), { runs: [], skipped: 4 });
      assert.equal((await markers(w.marker)).length, 8, "rerunning the backfill executes nothing");

      const bad = await w.run(["dags", "backfill", "bf", ...range, "--reprocess", "some"]);
      assert.equal(bad.code, 2);
    },
  });
}
