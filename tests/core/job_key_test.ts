import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { canonicalJson, jobKey, parseRunId, runIdFor } from "../../core/job_key.ts";

const interval = {
  start: new Date("2026-01-01T00:00:00Z"),
  end: new Date("2026-01-02T00:00:00Z"),
};
const base = {
  dag: "circulation_sync",
  task: "extract",
  interval,
  params: { since: "2025-12-01", limit: 10, nested: { b: 2, a: [1, { z: true, y: null }] } },
};

Deno.test("job key: canonicalJson sorts keys at every depth and drops undefined", () => {
  assert.equal(
    canonicalJson({ b: 1, a: { d: [3, { f: 1, e: 2 }], c: undefined }, e: "x" }),
    '{"a":{"d":[3,{"e":2,"f":1}]},"b":1,"e":"x"}',
  );
  assert.equal(canonicalJson({ z: { y: { x: 1, w: 2 } } }), '{"z":{"y":{"w":2,"x":1}}}');
  // Undefined array members become null, as in JSON.stringify.
  assert.equal(canonicalJson([1, undefined, "a"]), '[1,null,"a"]');
  assert.equal(canonicalJson(new Date("2026-01-01T00:00:00Z")), '"2026-01-01T00:00:00.000Z"');
  assert.equal(canonicalJson(null), "null");
  // A dropped first member leaves no comma; keys are escaped; booleans as JSON.
  assert.equal(canonicalJson({ a: undefined, b: true, '"k': false }), '{"\\"k":false,"b":true}');
  assert.equal(canonicalJson([[], {}, [undefined]]), "[[],{},[null]]");
  assert.equal(canonicalJson("é\n"), '"é\\n"');
  // Key order of equal objects does not matter; code-point order, not locale order.
  assert.equal(canonicalJson({ b: 1, a: 2, B: 3 }), canonicalJson({ B: 3, a: 2, b: 1 }));
  assert.equal(canonicalJson({ b: 1, a: 2, B: 3 }), '{"B":3,"a":2,"b":1}');
  assert.throws(() => canonicalJson({ n: Number.NaN }), TypeError);
  assert.throws(() => canonicalJson({ f: () => 1 }), TypeError);
});

Deno.test("job key: 64 lowercase hex, the SHA-256 of the canonical JSON of its inputs", () => {
  const key = jobKey(base);
  assert.match(key, /^[0-9a-f]{64}$/);
  const expected = createHash("sha256").update(
    canonicalJson({
      dag: base.dag,
      task: base.task,
      interval: { start: "2026-01-01T00:00:00.000Z", end: "2026-01-02T00:00:00.000Z" },
      params: base.params,
      mapIndex: -1,
    }),
  ).digest("hex");
  assert.equal(key, expected);
  // Param key order does not matter.
  assert.equal(
    jobKey({
      ...base,
      params: { nested: { a: [1, { y: null, z: true }], b: 2 }, limit: 10, since: "2025-12-01" },
    }),
    key,
  );
  // mapIndex defaults to -1.
  assert.equal(jobKey({ ...base, mapIndex: -1 }), key);
});

Deno.test("job key: changes with task, interval, params and mapIndex", () => {
  const key = jobKey(base);
  const variants = [
    jobKey({ ...base, dag: "catalog_sync" }),
    jobKey({ ...base, task: "load" }),
    jobKey({ ...base, interval: { start: interval.start, end: new Date("2026-01-03T00:00:00Z") } }),
    jobKey({ ...base, interval: { start: new Date("2025-12-31T00:00:00Z"), end: interval.end } }),
    jobKey({ ...base, params: { ...base.params, limit: 11 } }),
    jobKey({ ...base, params: { ...base.params, limit: "10" } }),
    jobKey({ ...base, params: {} }),
    jobKey({ ...base, mapIndex: 0 }),
    jobKey({ ...base, mapIndex: 1 }),
  ];
  assert.equal(new Set([key, ...variants]).size, variants.length + 1);
});

Deno.test("job key: the same in another process", async () => {
  const url = new URL("../../core/job_key.ts", import.meta.url).href;
  const code = `
    import { jobKey } from ${JSON.stringify(url)};
    console.log(jobKey({
      dag: "circulation_sync",
      task: "extract",
      interval: { start: new Date("2026-01-01T00:00:00Z"), end: new Date("2026-01-02T00:00:00Z") },
      params: { nested: { a: [1, { y: null, z: true }], b: 2 }, since: "2025-12-01", limit: 10 },
    }));
    console.log(jobKey({
      dag: "circulation_sync",
      task: "extract",
      interval: { start: new Date("2026-01-01T00:00:00Z"), end: new Date("2026-01-02T00:00:00Z") },
      params: {},
      mapIndex: 3,
    }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    // A different time zone must not matter.
    env: { TZ: "America/Los_Angeles", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  assert.deepEqual(lines, [jobKey(base), jobKey({ ...base, params: {}, mapIndex: 3 })]);
});

Deno.test("run id: readable, stable, and parsed back", () => {
  const date = new Date("2026-11-28T02:00:00Z");
  const runId = runIdFor("circulation_sync", date);
  assert.equal(runId, "circulation_sync@2026-11-28T02:00:00Z");
  assert.equal(runIdFor("circulation_sync", new Date(date.getTime())), runId);
  const parsed = parseRunId(runId);
  assert.ok(parsed);
  assert.equal(parsed.dagId, "circulation_sync");
  assert.equal(parsed.logicalDate.getTime(), date.getTime());
  // Milliseconds are kept when present.
  const ms = new Date("2026-11-28T02:00:00.250Z");
  assert.equal(runIdFor("d", ms), "d@2026-11-28T02:00:00.250Z");
  assert.equal(parseRunId(runIdFor("d", ms))!.logicalDate.getTime(), ms.getTime());
  // Not run ids.
  assert.equal(parseRunId("no-at-sign"), undefined);
  assert.equal(parseRunId("@2026-01-01T00:00:00Z"), undefined);
  assert.equal(parseRunId("dag@not-a-date"), undefined);
});
