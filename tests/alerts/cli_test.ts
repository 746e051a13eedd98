/**
 * SLAs through the CLI: `scheduler --once` runs a scheduled run that ends past its SLA, and
 * `runs show` (text and `--json`) lists the miss, recorded once.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { cli, CORE_MOD, seedHome, withTmpDir } from "../test_utils.ts";

Deno.test("runs show lists the SLA misses of a scheduled run", async () => {
  await using tmp = await withTmpDir();
  const dir = tmp.path;
  {
    const home = join(dir, "home");
    const dags = join(dir, "dags");
    await Deno.mkdir(dags, { recursive: true });
    await seedHome(home);
    await Deno.writeTextFile(
      join(dags, "nightly.ts"),
      `import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
export default defineDag({
  id: "nightly",
  schedule: "0 0 * * *",
  start: "2026-01-01T00:00:00Z",
  sla: "1ms",
  tasks: {
    extract: task({ run: () => 1 }),
    load: task({ after: ["extract"], run: () => 1, sla: "1ms" }),
  },
});
`,
    );
    const env = { CARREL_HOME: home, CARREL_DAGS_DIR: dags };
    const scheduled = await cli(["scheduler", "--once"], { cwd: dir, env });
    assert.equal(scheduled.code, 0, scheduled.stderr);
    const listed = await cli(["runs", "list", "--json"], { cwd: dir, env });
    const [run] = JSON.parse(listed.stdout) as { runId: string; state: string }[];
    assert.ok(run, listed.stderr);
    assert.equal(run.state, "success");
    const json = await cli(["runs", "show", run.runId, "--json"], { cwd: dir, env });
    assert.equal(json.code, 0, json.stderr);
    const shown = JSON.parse(json.stdout) as {
      slaMisses: { taskId: string | null; slaMs: number; detectedBy: string; state: string }[];
    };
    // Found by the scheduler's check (the run was still queued or running past its deadline) or
    // by the process that ended it late: either way once each.
    assert.deepEqual(
      shown.slaMisses.map((m) => [m.taskId ?? "-", m.slaMs]).sort(),
      [["-", 1], ["load", 1]],
    );
    for (const m of shown.slaMisses) assert.ok(["executor", "scheduler"].includes(m.detectedBy));
    const text = await cli(["runs", "show", run.runId], { cwd: dir, env });
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /SLA missed by the run: 1ms after the interval's end, deadline /);
    assert.match(text.stdout, /SLA missed by task load: 1ms after the interval's end/);
  }
});
