/**
 * Hostile DAG files: one that never finishes importing (an endless loop, a top-level await that
 * never resolves) is a load error naming the file and the limit; the other DAGs load and run;
 * `dags validate`, `dags list`, `dags run` and `scheduler --once` finish; the scheduler stops on
 * the first SIGTERM even while such a file is being imported.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadDags } from "../../core/loader.ts";
import {
  assertExit,
  assertNoStack,
  oneJson,
  show,
  spawn,
  waitForFile,
  world,
  writeDag,
} from "../e2e/helpers.ts";
import { withTmpDir } from "../test_utils.ts";

const LIMIT = { CARREL_DAG_IMPORT_TIMEOUT: "3s" };

async function hostileWorld() {
  const w = await world("pglite", "hostile", { env: LIMIT });
  await writeDag(
    w,
    "good",
    `export default defineDag({ id: "good", schedule: "@daily", start: "2026-01-01T00:00:00Z",
  catchup: false, tasks: { a: task({ run: async (ctx) => { await mark(ctx); return 1; } }) } });`,
  );
  // Each says when its import began (the probe Worker evaluates it), then never finishes.
  await Deno.writeTextFile(
    join(w.dags, "loop.ts"),
    `Deno.writeTextFileSync(${
      JSON.stringify(join(w.marks, "loop-started"))
    }, "x");\nwhile (true) {}\n`,
  );
  await Deno.writeTextFile(
    join(w.dags, "forever.ts"),
    `Deno.writeTextFileSync(${
      JSON.stringify(join(w.marks, "forever-started"))
    }, "x");\nawait new Promise(() => {});\nexport default null;\n`,
  );
  return w;
}

const NAMED = (file: string) =>
  new RegExp(`Cannot load DAG file \\S*${file}: its import did not finish within 3\\.0s`);

Deno.test("dags validate, list, run and scheduler --once finish and name the hostile files", async () => {
  await using w = await hostileWorld();
  const validate = await w.run(["dags", "validate"]);
  assertExit(validate, 1);
  assert.match(validate.stdout + validate.stderr, NAMED("loop.ts"));
  assert.match(validate.stdout + validate.stderr, NAMED("forever.ts"));
  assert.match(validate.stdout, /ok\s+good/);

  const list = await w.run(["dags", "list", "--json"]);
  assertExit(list, 0);
  const doc = oneJson(list);
  assert.deepEqual(doc.dags.map((d: { id: string }) => d.id), ["good"]);
  assert.deepEqual(
    doc.errors.map((e: { file: string }) => e.file.split("/").pop()).sort(),
    ["forever.ts", "loop.ts"],
  );

  assertExit(await w.run(["dags", "run", "good", "--date", "2026-02-01"]), 0);
  const once = await w.run(["scheduler", "--once"]);
  assertNoStack(once.stderr);
  assert.ok(once.code === 0 || once.code === 1, show(once));
});

Deno.test("the scheduler stops on the first SIGTERM while a DAG file never finishes importing", async () => {
  await using w = await hostileWorld();
  const s = spawn(w, ["scheduler"]);
  await waitForFile(s, join(w.marks, "loop-started"));
  s.child.kill("SIGTERM");
  const guard = setTimeout(() => s.child.kill("SIGKILL"), 60_000);
  const out = await s.output;
  clearTimeout(guard);
  assert.equal(out.signal, null, `stopped by itself, not killed: ${out.stderr}`);
  assertNoStack(out.stderr);
});

Deno.test("loadDags: the good files load, the hanging ones are errors, in any order", async () => {
  await using dir = await withTmpDir();
  const core = new URL("../../core/mod.ts", import.meta.url).href;
  const good = (id: string) =>
    `import { defineDag, task } from ${JSON.stringify(core)};
export default defineDag({ id: ${
      JSON.stringify(id)
    }, schedule: null, tasks: { a: task({ run: () => 1 }) } });`;
  await Deno.writeTextFile(join(dir.path, "a_good.ts"), good("a_good"));
  await Deno.writeTextFile(join(dir.path, "b_loop.ts"), "while (true) {}\n");
  await Deno.writeTextFile(join(dir.path, "c_good.ts"), good("c_good"));
  await Deno.writeTextFile(join(dir.path, "d_never.ts"), "await new Promise(() => {});\n");
  await Deno.writeTextFile(
    join(dir.path, "e_throws.ts"),
    "throw new Error('broken on purpose');\n",
  );
  await Deno.writeTextFile(join(dir.path, "f_good.ts"), good("f_good"));
  const loaded = await loadDags(dir.path, { timeoutMs: 5000 });
  assert.deepEqual([...loaded.dags.keys()].sort(), ["a_good", "c_good", "f_good"]);
  const errors = Object.fromEntries(loaded.errors.map((e) => [e.file.split("/").pop(), e.message]));
  assert.match(errors["b_loop.ts"]!, /did not finish within 5\.0s/);
  assert.match(errors["d_never.ts"]!, /did not finish within 5\.0s/);
  assert.match(errors["e_throws.ts"]!, /broken on purpose/);
  assert.equal(loaded.errors.length, 3);
});

Deno.test("loadDags stops when its signal aborts, reporting what it did not load", async () => {
  await using dir = await withTmpDir();
  await Deno.writeTextFile(join(dir.path, "never.ts"), "await new Promise(() => {});\n");
  const stop = new AbortController();
  const loading = loadDags(dir.path, { timeoutMs: 600_000, signal: stop.signal });
  stop.abort();
  const loaded = await loading;
  assert.equal(loaded.dags.size, 0);
  assert.match(loaded.errors[0]!.message, /not loaded: loading was stopped/);
});
