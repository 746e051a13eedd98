import assert from "node:assert/strict";
import { formatDuration, parseDuration } from "../../core/duration.ts";
import { defineDag, resolveDag, task } from "../../core/mod.ts";

Deno.test("durations: one grammar for task options, SQL timeouts and retention", () => {
  const cases: [string | number, number][] = [
    [1500, 1500],
    ["500ms", 500],
    ["30s", 30_000],
    ["30sec", 30_000],
    ["5m", 300_000],
    ["5min", 300_000],
    ["1h", 3_600_000],
    ["1.5h", 5_400_000],
    ["2d", 172_800_000],
    ["1w", 604_800_000],
    ["10 S", 10_000],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, String(text));
  for (const bad of ["soon", "", "5 minutes", "-1s", -1, Number.NaN]) {
    assert.equal(parseDuration(bad), undefined, String(bad));
  }
  // What parses here is accepted as a task option too (the two used to disagree on "5min").
  const dag = resolveDag(defineDag({
    id: "d",
    tasks: { a: task({ timeout: "5min", retryDelay: "2d", run: () => 1 }) },
  }));
  assert.equal(dag.tasks.get("a")!.timeoutMs, 300_000);
  assert.equal(dag.tasks.get("a")!.retryDelayMs, 172_800_000);
  assert.equal(formatDuration(1234), "1.2s");
  assert.equal(formatDuration(125_000), "2m 05s");
});
