/**
 * Several Carrel processes started at once on one CARREL_HOME with the embedded store: runs of
 * different dates, two of the same date and a listing. Nothing is lost (every run that said
 * success is in `runs list` and in the audit trail), nothing is duplicated (each task executed
 * once per date), the chain verifies and the store is usable afterwards.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  assertExit,
  assertNoStack,
  count,
  oneJson,
  show,
  world,
  writeDag,
} from "../e2e/helpers.ts";

const TASKS = ["a", "b", "c", "d"];
const DATES = ["2026-02-01", "2026-02-02", "2026-02-03", "2026-02-04", "2026-02-05", "2026-02-06"];
const SAME = "2026-02-07";

for (const fresh of [true, false]) {
  Deno.test(`8 runs and a listing at once on ${fresh ? "a fresh" : "an existing"} embedded store lose and repeat nothing`, async () => {
    await using w = await world("pglite", "concurrent");
    if (fresh) await Deno.remove(join(w.home, "state"), { recursive: true });
    await writeDag(
      w,
      "conc",
      `const t = (after: string[]) => task({ after, run: async (ctx) => { await mark(ctx); return 1; } });
export default defineDag({ id: "conc", schedule: "@daily", start: "2026-01-01T00:00:00Z",
  tasks: { a: t([]), b: t(["a"]), c: t(["a"]), d: t(["b", "c"]) } });`,
    );
    const dates = [...DATES, SAME, SAME];
    const [listing, ...runs] = await Promise.all([
      w.run(["runs", "list", "--json"]),
      ...dates.map((d) => w.run(["dags", "run", "conc", "--date", d])),
    ]);
    assertExit(listing!, 0);
    oneJson(listing!);
    runs.forEach((r, i) => {
      assertNoStack(r.stderr);
      if (dates[i] !== SAME) assertExit(r, 0);
      // The second run of one date is refused while the first runs, or finds it finished.
      else if (r.code !== 0) assert.match(r.stderr, /another process is running it/, show(r));
    });
    assert.ok(runs.slice(-2).some((r) => r.code === 0), "one run of the same date succeeds");
    const listed = oneJson(await w.run(["runs", "list", "--json"])) as {
      runId: string;
      logicalDate: string;
      state: string;
    }[];
    const audit = await w.run(["audit", "export"]);
    assertExit(audit, 0);
    const correlated = new Set(
      audit.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l).correlation_id),
    );
    for (const day of [...DATES, SAME]) {
      const run = listed.find((r) => r.logicalDate.startsWith(day));
      assert.equal(run?.state, "success", `run of ${day} in runs list`);
      assert.ok(correlated.has(run!.runId), `audit entries of ${day}`);
      for (const t of TASKS) assert.equal(await count(w, day, t), 1, `${day}.${t} executions`);
    }
    assertExit(await w.run(["audit", "verify"]), 0);
    assertExit(await w.run(["dags", "run", "conc", "--date", "2026-03-01"]), 0);
    // Nothing is left serving: the lock and socket files are private, no owner process remains.
    const sock = join(w.home, "state.sock");
    assert.equal(await Deno.stat(sock).then(() => true, () => false), false, "socket removed");
    assert.equal((await Deno.stat(join(w.home, "state.lock"))).mode! & 0o777, 0o600);
  });
}
