import assert from "node:assert/strict";
import { z } from "zod";
import {
  type Dag,
  type DagConfig,
  defineDag,
  resolveDag,
  resolveParams,
  task,
  TRIGGER_RULES,
} from "../../core/dag.ts";
import { parseDuration } from "../../core/duration.ts";
import { DagError } from "../../core/errors.ts";

const ok = () => 1;

/** `resolveDag` takes untyped DAGs (as the loader does); typed-params DAGs need a cast. */
function asDag<P extends Record<string, unknown>>(config: DagConfig<P>): Dag {
  return defineDag(config) as unknown as Dag;
}

/** The message `resolveDag` throws for a config, asserting it is a DagError. */
function loadError(config: unknown, file = "dags/x.ts"): string {
  try {
    resolveDag(defineDag(config as DagConfig), file);
  } catch (error) {
    assert.ok(error instanceof DagError, `expected a DagError, got ${error}`);
    return error.message;
  }
  assert.fail("expected the DAG to be rejected");
}

Deno.test("dag: a bad task field gives one message naming the DAG, file and field", () => {
  assert.equal(
    loadError({ id: "x", tasks: { load: task({ retries: -1, run: ok }) } }),
    'Cannot load DAG "x" (dags/x.ts): tasks.load.retries: expected a number >= 0',
  );
  // A fraction below zero breaks two checks but still yields one message.
  assert.equal(
    loadError({ id: "x", tasks: { load: task({ retries: -1.5, run: ok }) } }),
    'Cannot load DAG "x" (dags/x.ts): tasks.load.retries: expected a number >= 0',
  );
});

Deno.test("dag: several bad fields give one message each, in order", () => {
  const message = loadError({
    id: "x",
    tasks: { load: { run: ok, retries: "2", timeout: true } },
  });
  assert.equal(
    message,
    'Cannot load DAG "x" (dags/x.ts): tasks.load.retries: expected a number >= 0; ' +
      "tasks.load.timeout: expected a duration",
  );
});

Deno.test("dag: a bad id is named, and the message works without a string id", () => {
  assert.equal(
    loadError({ id: "Nightly-Sync", tasks: { t: task({ run: ok }) } }),
    'Cannot load DAG "Nightly-Sync" (dags/x.ts): id: expected a DAG id matching /^[a-z][a-z0-9_]*$/',
  );
  assert.equal(
    loadError({ id: 5, tasks: { t: task({ run: ok }) } }),
    "Cannot load DAG (dags/x.ts): id: expected a DAG id",
  );
  assert.equal(
    loadError({ id: "x", tasks: { "Bad-Task": task({ run: ok }) } }),
    'Cannot load DAG "x" (dags/x.ts): tasks.Bad-Task: expected task ids matching /^[a-z][a-z0-9_]*$/ (in groups joined by ".")',
  );
});

Deno.test("dag: bad cron expressions are rejected with the schedule field named", () => {
  const base = { id: "x", start: "2026-01-01T00:00:00Z", tasks: { t: task({ run: ok }) } };
  assert.equal(
    loadError({ ...base, schedule: "61 * * * *" }),
    'Cannot load DAG "x" (dags/x.ts): schedule: expected a valid 5-field cron expression',
  );
  assert.equal(
    loadError({ ...base, schedule: "* * *" }),
    'Cannot load DAG "x" (dags/x.ts): schedule: expected a 5-field cron expression or null',
  );
  // Presets expand; null means manual.
  assert.equal(resolveDag(defineDag({ ...base, schedule: "@daily" })).schedule, "0 0 * * *");
  assert.equal(resolveDag(defineDag({ ...base, schedule: null })).schedule, null);
});

Deno.test("dag: a bad timezone is rejected; a good one is kept", () => {
  assert.equal(
    loadError({ id: "x", timezone: "Mars/Olympus_Mons", tasks: { t: task({ run: ok }) } }),
    'Cannot load DAG "x" (dags/x.ts): timezone: expected an IANA time zone such as UTC or America/Chicago',
  );
  const dag = resolveDag(
    defineDag({ id: "x", timezone: "America/New_York", tasks: { t: task({ run: ok }) } }),
  );
  assert.equal(dag.timezone, "America/New_York");
  assert.equal(resolveDag(defineDag({ id: "x", tasks: { t: task({ run: ok }) } })).timezone, "UTC");
});

Deno.test("dag: bad durations are rejected wherever they appear", () => {
  const expected = 'expected a duration such as 500, "30s", "5m" or "1h"';
  assert.equal(
    loadError({ id: "x", tasks: { t: task({ timeout: "5 minutes", run: ok }) } }),
    `Cannot load DAG "x" (dags/x.ts): tasks.t.timeout: ${expected}`,
  );
  assert.equal(
    loadError({ id: "x", tasks: { t: task({ retryDelay: -5, run: ok }) } }),
    `Cannot load DAG "x" (dags/x.ts): tasks.t.retryDelay: ${expected}`,
  );
  assert.equal(
    loadError({ id: "x", defaults: { timeout: "1y" }, tasks: { t: task({ run: ok }) } }),
    `Cannot load DAG "x" (dags/x.ts): defaults.timeout: ${expected}`,
  );
});

Deno.test("dag: unknown top-level, defaults and task keys are named, with a suggestion", () => {
  assert.equal(
    loadError({ id: "x", shedule: "0 2 * * *", tasks: { t: task({ run: ok }) } }),
    'Cannot load DAG "x" (dags/x.ts): unknown key "shedule" (did you mean "schedule"?)',
  );
  assert.equal(
    loadError({ id: "x", defaults: { retires: 2 }, tasks: { t: task({ run: ok }) } }),
    'Cannot load DAG "x" (dags/x.ts): defaults: unknown key "retires" (did you mean "retries"?)',
  );
  assert.equal(
    loadError({
      id: "x",
      tasks: { extract: task({ retires: 3, run: ok } as unknown as Parameters<typeof task>[0]) },
    }),
    'Cannot load DAG "x" (dags/x.ts): tasks.extract: unknown key "retires" (did you mean "retries"?)',
  );
  assert.equal(
    loadError({
      id: "x",
      tasks: { t: task({ colour: "red", run: ok } as unknown as Parameters<typeof task>[0]) },
    }),
    'Cannot load DAG "x" (dags/x.ts): tasks.t: unknown key "colour"',
  );
  assert.equal(
    loadError({ id: "x", tasks: { t: 42 as unknown as ReturnType<typeof task> } }),
    'Cannot load DAG "x" (dags/x.ts): tasks.t: expected a task (use task({...}) or an operator)',
  );
});

Deno.test("dag: a scheduled DAG without start is rejected; a manual one is fine", () => {
  assert.equal(
    loadError({ id: "x", schedule: "0 2 * * *", tasks: { t: task({ run: ok }) } }),
    'Cannot load DAG "x" (dags/x.ts): start: required when the DAG has a schedule',
  );
  assert.equal(
    loadError({
      id: "x",
      schedule: "0 2 * * *",
      start: "yesterday",
      tasks: { t: task({ run: ok }) },
    }),
    'Cannot load DAG "x" (dags/x.ts): start: expected an ISO date such as 2026-01-01T00:00:00Z',
  );
  const dag = resolveDag(defineDag({ id: "x", schedule: null, tasks: { t: task({ run: ok }) } }));
  assert.equal(dag.start, undefined);
});

Deno.test("dag: other bad values are named: tasks, run, trigger rule, maxActiveTasks", () => {
  assert.equal(
    loadError({ id: "x", tasks: {} }),
    'Cannot load DAG "x" (dags/x.ts): tasks: expected at least one task',
  );
  assert.equal(
    loadError({ id: "x", tasks: { load: { run: "not a function" } } }),
    'Cannot load DAG "x" (dags/x.ts): tasks.load.run: expected a function',
  );
  assert.equal(
    loadError({ id: "x", tasks: { load: { run: ok, triggerRule: "all_ok" } } }),
    `Cannot load DAG "x" (dags/x.ts): tasks.load.triggerRule: expected one of ${
      TRIGGER_RULES.join(", ")
    } (or an alias: none_failed_or_skipped, dummy)`,
  );
  // Airflow's old names load, resolved to the rule they name.
  const aliased = resolveDag(defineDag({
    id: "x",
    tasks: {
      a: task({ run: ok }),
      b: task({ after: ["a"], triggerRule: "none_failed_or_skipped", run: ok }),
      c: task({ after: ["a"], triggerRule: "dummy", run: ok }),
      d: task({ after: ["a"], triggerRule: "all_done_min_one_success", run: ok }),
    },
  }));
  assert.equal(aliased.tasks.get("b")!.triggerRule, "none_failed_min_one_success");
  assert.equal(aliased.tasks.get("c")!.triggerRule, "always");
  assert.equal(aliased.tasks.get("d")!.triggerRule, "all_done_min_one_success");
  assert.equal(
    loadError({ id: "x", maxActiveTasks: 0, tasks: { t: task({ run: ok }) } }),
    'Cannot load DAG "x" (dags/x.ts): maxActiveTasks: expected a number >= 1',
  );
  // Without a file, the message names the DAG only.
  assert.throws(() => resolveDag(defineDag({ id: "x", tasks: {} })), {
    message: 'Cannot load DAG "x": tasks: expected at least one task',
  });
});

Deno.test("dag: tasks inherit retries, retryDelay and timeout from defaults and may override", () => {
  const dag = resolveDag(defineDag({
    id: "defaults",
    defaults: { retries: 2, retryDelay: "10s", timeout: "15m", retryBackoff: "fixed" },
    tasks: {
      a: task({ run: ok }),
      b: task({ run: ok, retries: 0, retryDelay: 250, timeout: "1h", retryBackoff: "exponential" }),
    },
  }));
  const a = dag.tasks.get("a")!;
  assert.equal(a.retries, 2);
  assert.equal(a.retryDelayMs, 10_000);
  assert.equal(a.timeoutMs, 15 * 60_000);
  assert.equal(a.retryBackoff, "fixed");
  const b = dag.tasks.get("b")!;
  assert.equal(b.retries, 0);
  assert.equal(b.retryDelayMs, 250);
  assert.equal(b.timeoutMs, 3_600_000);
  assert.equal(b.retryBackoff, "exponential");
});

Deno.test("dag: built-in defaults when the DAG sets none", () => {
  const dag = resolveDag(defineDag({ id: "bare", tasks: { t: task({ run: ok }) } }));
  const t = dag.tasks.get("t")!;
  assert.equal(t.retries, 0);
  assert.equal(t.retryDelayMs, 10_000);
  assert.equal(t.retryBackoff, "exponential");
  assert.equal(t.maxRetryDelayMs, 3_600_000);
  assert.equal(t.timeoutMs, undefined);
  assert.equal(t.triggerRule, "all_success");
  assert.equal(t.zone, "shared");
  assert.equal(dag.maxActiveTasks, 8);
  assert.equal(dag.maxActiveRuns, 1);
  assert.equal(dag.catchup, false);
});

Deno.test("duration: parseDuration accepts numbers and unit strings, rejects the rest", () => {
  assert.equal(parseDuration(250), 250);
  assert.equal(parseDuration(0), 0);
  assert.equal(parseDuration("500ms"), 500);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("1.5s"), 1_500);
  assert.equal(parseDuration("5m"), 300_000);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("90d"), 90 * 86_400_000);
  assert.equal(parseDuration("2w"), 14 * 86_400_000);
  assert.equal(parseDuration(" 10 s "), 10_000);
  for (const bad of ["", "10", "5 minutes", "1y", "-5s", "s", "1.2.3s"]) {
    assert.equal(parseDuration(bad), undefined, `"${bad}" should not parse`);
  }
  assert.equal(parseDuration(-1), undefined);
  assert.equal(parseDuration(Number.NaN), undefined);
  assert.equal(parseDuration(Number.POSITIVE_INFINITY), undefined);
});

const paramDag = () =>
  resolveDag(asDag({
    id: "params",
    params: { since: "", limit: 100, dry: false, tags: ["a"] as string[] },
    tasks: { t: task({ run: ok }) },
  }));

Deno.test("params: overrides are coerced to the type of their default", () => {
  const dag = paramDag();
  assert.deepEqual(resolveParams(dag, {}), { since: "", limit: 100, dry: false, tags: ["a"] });
  assert.deepEqual(
    resolveParams(dag, { since: "2026-01-01", limit: "25", dry: "true", tags: '["x","y"]' }),
    { since: "2026-01-01", limit: 25, dry: true, tags: ["x", "y"] },
  );
  // Strings that do not fit the default's type stay strings (no silent NaN).
  assert.deepEqual(resolveParams(dag, { limit: "lots" }).limit, "lots");
  assert.deepEqual(resolveParams(dag, { limit: "" }).limit, "");
  // Non-string overrides pass through.
  assert.equal(resolveParams(dag, { limit: 7 }).limit, 7);
});

Deno.test("params: an unknown key is an error naming the key, never the value", () => {
  const dag = paramDag();
  assert.throws(
    () => resolveParams(dag, { limti: "SECRET-VALUE-991" }),
    (error: unknown) => {
      assert.ok(error instanceof DagError);
      assert.equal(
        error.message,
        'Unknown param "limti" for DAG "params": known params are since, limit, dry, tags',
      );
      assert.ok(!error.message.includes("SECRET-VALUE-991"));
      return true;
    },
  );
  const none = resolveDag(defineDag({ id: "none", tasks: { t: task({ run: ok }) } }));
  assert.throws(() => resolveParams(none, { x: "1" }), {
    message: 'Unknown param "x" for DAG "none": it takes no params',
  });
});

Deno.test("params: a zod schema supplies defaults, coerces, and its errors name keys only", () => {
  const schema = z.strictObject({
    since: z.string().default("2026-01-01"),
    limit: z.number().int().min(1).default(10),
  });
  const dag = resolveDag(
    asDag({ id: "zodp", params: schema, tasks: { t: task({ run: ok }) } }),
  );
  assert.deepEqual(dag.paramDefaults, { since: "2026-01-01", limit: 10 });
  assert.deepEqual(resolveParams(dag, {}), { since: "2026-01-01", limit: 10 });
  assert.deepEqual(resolveParams(dag, { limit: "25" }), { since: "2026-01-01", limit: 25 });

  assert.throws(() => resolveParams(dag, { limit: "0" }), (error: unknown) => {
    assert.ok(error instanceof DagError);
    assert.equal(error.message, 'Invalid params for DAG "zodp": limit: too small');
    return true;
  });
  assert.throws(() => resolveParams(dag, { limit: "SECRET-77x" }), (error: unknown) => {
    assert.ok(error instanceof DagError);
    assert.equal(error.message, 'Invalid params for DAG "zodp": limit: expected number');
    assert.ok(!error.message.includes("SECRET-77x"));
    return true;
  });
  assert.throws(() => resolveParams(dag, { sinse: "SECRET-2026" }), (error: unknown) => {
    assert.ok(error instanceof DagError);
    assert.match(error.message, /unknown key sinse/);
    assert.ok(!error.message.includes("SECRET-2026"));
    return true;
  });
});
