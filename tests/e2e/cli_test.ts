/**
 * End-to-end tests of the CLI as a user runs it: `dags list|validate|show`, `dags run` with the
 * contract's JSON shapes, `runs list|show`, reruns that execute nothing, exit codes, and a
 * privacy smoke test that looks for an enclave sentinel everywhere Carrel writes.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { jobKey } from "../../core/job_key.ts";
import { BACKENDS, type CliResult, notePostgresSkipped } from "../test_utils.ts";
import {
  assertExit,
  assertNoStack,
  assertRunShape,
  byTask,
  counts,
  dumpAllTables,
  executed,
  filesContaining,
  listFiles,
  oneJson,
  show,
  world,
  writeDag,
} from "./helpers.ts";

notePostgresSkipped();

/** A DAG with an enclave task, a hand-written checkpoint spec, a shared load and a side task. */
const CIRC = `
export default defineDag({
  id: "circ",
  description: "e2e circulation",
  schedule: "0 2 * * *",
  start: "2026-01-01T00:00:00Z",
  params: { batch: 10 },
  tasks: {
    extract: task({ zone: "enclave", run: async (ctx) => {
      await mark(ctx);
      return [{ item: "b1" }, { item: "b2" }];
    } }),
    // A checkpoint: task() does not take the flag, so the spec is written by hand.
    cp: {
      operator: "privacyCheckpoint",
      checkpoint: true,
      zone: "inherit",
      reads: [M],
      writes: [M],
      after: ["extract"],
      run: async (ctx: any) => {
        await mark(ctx);
        return { count: ctx.inputs.extract.length };
      },
    },
    load: task({ after: ["cp"], run: async (ctx: any) => {
      await mark(ctx);
      return ctx.inputs.cp;
    } }),
    note: task({ run: async (ctx) => {
      await mark(ctx);
      return "ok";
    } }),
  },
});
`;

const MANUAL = `
export default defineDag({
  id: "manual_dag",
  schedule: null,
  tasks: { only: task({ run: () => 1 }) },
});
`;

/** Breaks the zone rule: a shared task takes enclave data directly. */
const LEAKY = `
export default defineDag({
  id: "leaky",
  schedule: null,
  tasks: {
    extract: task({ zone: "enclave", run: () => [] }),
    load: task({ after: ["extract"], run: () => 0 }),
  },
});
`;

const CIRC_TASKS = ["extract", "cp", "load", "note"];

/** The lines of a block that starts at the line matching `start` and ends at `end`. */
function block(text: string, start: RegExp, end: RegExp): string[] {
  const lines = text.split("\n");
  const from = lines.findIndex((l) => start.test(l));
  assert(from >= 0, `no line matching ${start} in:\n${text}`);
  const to = lines.findIndex((l, i) => i > from && end.test(l));
  assert(to > from, `no end ${end} after ${start} in:\n${text}`);
  return lines.slice(from + 1, to);
}

for (const backend of BACKENDS) {
  Deno.test(`dags list, validate and show report DAGs, load errors and zones [${backend}]`, async () => {
    await using w = await world(backend, "list");
    await writeDag(w, "circ", CIRC);
    await writeDag(w, "manual", MANUAL);
    await writeDag(w, "leaky", LEAKY);
    await Deno.writeTextFile(
      join(w.dags, "broken.ts"),
      `throw new Error("kaput on purpose");\nexport default 1;\n`,
    );

    const paused = await w.run(["dags", "pause", "circ"]);
    assertExit(paused, 0);
    const startedAt = Date.now();
    const list = await w.run(["dags", "list", "--json"]);
    assert(list.code === 0 || list.code === 1, show(list));
    assertNoStack(list.stderr);
    const doc = oneJson(list);
    assert.deepEqual(Object.keys(doc).sort(), ["dags", "errors"]);
    assert.deepEqual(doc.dags.map((d: { id: string }) => d.id), ["circ", "manual_dag"]);
    const [circ, manual] = doc.dags;
    assert.equal(circ.schedule, "0 2 * * *");
    assert.equal(circ.file, "dags/circ.ts");
    assert.equal(circ.tasks, 4);
    assert.equal(circ.paused, true);
    assert.match(circ.nextRun, /^\d{4}-\d{2}-\d{2}T02:00:00\.000Z$/);
    assert(new Date(circ.nextRun).getTime() > startedAt - 60_000, `nextRun ${circ.nextRun}`);
    assert.equal(manual.schedule, null);
    assert.equal(manual.file, "dags/manual.ts");
    assert.equal(manual.tasks, 1);
    assert.equal(manual.paused, false);
    assert.equal(manual.nextRun, null);
    const errors = [...doc.errors].sort((a, b) => a.file.localeCompare(b.file));
    assert.deepEqual(errors.map((e: { file: string }) => e.file), [
      "dags/broken.ts",
      "dags/leaky.ts",
    ]);
    assert.match(errors[0].message, /dags\/broken\.ts/);
    assert.match(errors[0].message, /kaput on purpose/);
    assert.match(errors[1].message, /extract -> load/);
    assertNoStack(JSON.stringify(doc.errors), "load errors");

    // validate and show do not touch the store: checked once, on PGlite.
    if (backend !== "pglite") return;

    const bad = await w.run(["dags", "validate"]);
    assertExit(bad, 1);
    assert.match(bad.stdout + bad.stderr, /dags\/broken\.ts/);
    assert.match(bad.stdout + bad.stderr, /extract -> load/);
    const validDir = join(w.dir, "valid");
    await Deno.mkdir(validDir);
    await Deno.copyFile(join(w.dags, "circ.ts"), join(validDir, "circ.ts"));
    const good = await w.run(["--dags", validDir, "dags", "validate"]);
    assertExit(good, 0);
    assert.match(good.stdout, /circ/);

    const [text, mermaid, dot, json] = (await Promise.all(
      ["text", "mermaid", "dot", "json"].map((f) => w.run(["dags", "show", "circ", "--format", f])),
    )) as [CliResult, CliResult, CliResult, CliResult];
    for (const r of [text, mermaid, dot, json]) assertExit(r, 0);

    const textLine = (id: string) => {
      const line = text.stdout.split("\n").find((l) => new RegExp(`^\\s+${id}\\b`).test(l));
      assert(line, `no line for ${id} in:\n${text.stdout}`);
      return line;
    };
    assert.match(textLine("extract"), /\[enclave\]/);
    assert.match(textLine("cp"), /checkpoint/);
    assert.match(textLine("load"), /\[shared\]/);
    assert.match(textLine("load"), /after cp/);

    assert.match(mermaid.stdout, /^flowchart/);
    const enclaveSub = block(mermaid.stdout, /subgraph\s+enclave/, /^\s*end\s*$/).join("\n");
    assert.match(enclaveSub, /\bextract\b/);
    assert.doesNotMatch(enclaveSub, /\bload\b|\bnote\b/);
    assert.match(mermaid.stdout, /class\s+cp\s+checkpoint/);
    assert.match(mermaid.stdout, /extract\s*-->\s*cp/);
    assert.match(mermaid.stdout, /cp\s*-->\s*load/);

    assert.match(dot.stdout, /^digraph/);
    const cluster = block(dot.stdout, /subgraph\s+cluster_enclave/, /^\s*}\s*$/).join("\n");
    assert.match(cluster, /"extract"/);
    assert.doesNotMatch(cluster, /"load"|"note"/);
    const cpLine = dot.stdout.split("\n").find((l) => /^\s*"cp"\s*\[/.test(l));
    assert(cpLine && /hexagon|checkpoint/.test(cpLine), `cp is not marked in:\n${dot.stdout}`);
    assert.match(dot.stdout, /"extract"\s*->\s*"cp"/);

    const graph = oneJson(json);
    const tasks = Object.fromEntries(
      graph.tasks.map((t: { id: string }) => [t.id, t]),
    );
    assert.equal(tasks.extract.zone, "enclave");
    assert.equal(tasks.extract.checkpoint, false);
    assert.equal(tasks.cp.checkpoint, true);
    assert.equal(tasks.load.zone, "shared");
    assert.equal(tasks.load.checkpoint, false);
    assert.deepEqual(tasks.load.after, ["cp"]);
    assert(
      graph.edges.some((e: { from: string; to: string }) => e.from === "extract" && e.to === "cp"),
      JSON.stringify(graph.edges),
    );
  });

  Deno.test(`dags run prints the run as JSON; runs list/show agree; a rerun executes nothing [${backend}]`, async () => {
    await using w = await world(backend, "run");
    await writeDag(w, "circ", CIRC);
    const date = "2026-03-10T02:00:00Z";
    const day = "2026-03-10";

    const first = await w.run(["dags", "run", "circ", "--date", date, "--json"]);
    assertExit(first, 0);
    const run = oneJson(first);
    assertRunShape(run);
    assert.equal(run.dagId, "circ");
    assert.equal(run.logicalDate, "2026-03-10T02:00:00.000Z");
    assert.equal(run.state, "success");
    assert.match(run.runId, /circ/);
    assert.deepEqual(
      run.tasks.map((t: { taskId: string }) => t.taskId).sort(),
      [...CIRC_TASKS].sort(),
    );
    const interval = {
      start: new Date("2026-03-10T02:00:00Z"),
      end: new Date("2026-03-11T02:00:00Z"),
    };
    for (const t of run.tasks) {
      assert.equal(t.state, "success", t.taskId);
      assert.equal(t.attempts, 1, t.taskId);
      assert.notEqual(t.startedAt, null, t.taskId);
      assert.notEqual(t.endedAt, null, t.taskId);
      assert.equal(
        t.jobKey,
        jobKey({ dag: "circ", task: t.taskId, interval, params: { batch: 10 }, mapIndex: -1 }),
        `job key of ${t.taskId}`,
      );
    }
    assert.equal(new Set(run.tasks.map((t: { jobKey: string }) => t.jobKey)).size, 4);
    const tasks = byTask(run);
    assert.equal(tasks.extract.zone, "enclave");
    assert.equal(tasks.load.zone, "shared");
    assert.equal(tasks.note.zone, "shared");
    assert.deepEqual(await counts(w, day, CIRC_TASKS), { extract: 1, cp: 1, load: 1, note: 1 });

    const list = await w.run(["runs", "list", "--dag", "circ", "--json"]);
    assertExit(list, 0);
    const runs = oneJson(list);
    assert(Array.isArray(runs), list.stdout);
    assert.equal(runs.length, 1);
    assert.equal(runs[0].runId, run.runId);
    assert.equal(runs[0].dagId, "circ");
    assert.equal(runs[0].logicalDate, "2026-03-10T02:00:00.000Z");
    assert.equal(runs[0].state, "success");

    const shown = await w.run(["runs", "show", run.runId, "--json"]);
    assertExit(shown, 0);
    const showDoc = oneJson(shown);
    assertRunShape(showDoc);
    assert.equal(showDoc.runId, run.runId);
    assert.equal(showDoc.state, "success");
    for (const t of showDoc.tasks) {
      assert.equal(t.jobKey, tasks[t.taskId].jobKey, t.taskId);
      assert.equal(t.state, "success", t.taskId);
      assert.equal(t.attempts, 1, t.taskId);
      assert.equal(t.zone, tasks[t.taskId].zone, t.taskId);
    }

    // The same date again: a resume of a finished run, nothing executes.
    const again = await w.run(["dags", "run", "circ", "--date", date, "--json"]);
    assertExit(again, 0);
    const rerun = oneJson(again);
    assertRunShape(rerun);
    assert.equal(rerun.runId, run.runId);
    assert.equal(rerun.state, "success");
    assert.deepEqual(executed(rerun), []);
    for (const t of rerun.tasks) assert.equal(t.jobKey, tasks[t.taskId].jobKey);
    assert.deepEqual(await counts(w, day, CIRC_TASKS), { extract: 1, cp: 1, load: 1, note: 1 });
  });

  Deno.test(`exit codes: usage errors 2 naming the culprit, --help 0, no stack traces [${backend}]`, async () => {
    await using w = await world(backend, "exit");
    await writeDag(w, "circ", CIRC);
    const usage: [string[], RegExp][] = [
      [["dags", "run", "no_such_dag"], /no_such_dag/],
      [["dags", "run", "circ", "--date", "2026-13-45T99:00"], /--date/],
      [["runs", "show", "circ@1999-01-01T00:00:00Z"], /circ@1999-01-01T00:00:00Z/],
    ];
    // Store-independent checks run once, on PGlite.
    if (backend === "pglite") {
      usage.push(
        [["dags", "list", "--no-such-flag"], /--no-such-flag/],
        [["frobnicate"], /frobnicate/],
        [["dags", "show", "circ", "--format", "png"], /png/],
      );
    }
    const help = backend === "pglite"
      ? [["dags", "run", "--help"], ["runs", "resume", "--help"], ["tasks", "test", "--help"]]
      : [];
    // Only one of these opens the store (`runs show`), so they may run side by side.
    const results = await Promise.all([
      ...usage.map(([args]) => w.run(args)),
      ...help.map((args) => w.run(args)),
    ]);
    usage.forEach(([args, culprit], i) => {
      const r = results[i]!;
      assert.equal(r.code, 2, `${args.join(" ")}: ${show(r)}`);
      assertNoStack(r.stderr, `stderr of ${args.join(" ")}`);
      assert.match(r.stderr, culprit, `${args.join(" ")}: ${show(r)}`);
    });
    help.forEach((args, i) => {
      const r = results[usage.length + i]!;
      assert.equal(r.code, 0, `${args.join(" ")}: ${show(r)}`);
      assertNoStack(r.stderr);
      assert.match(r.stdout, /Usage:/, `${args.join(" ")}: ${show(r)}`);
    });
    // Nothing ran.
    assert.deepEqual(await listFiles(w.marks), []);
  });

  Deno.test(`privacy smoke: an enclave sentinel is nowhere in output, files or the store [${backend}]`, async () => {
    await using w = await world(backend, "privacy");
    const S = "SENTINEL-e2e-4b1f";
    await writeDag(
      w,
      "priv",
      `
const S = ${JSON.stringify(S)};
export default defineDag({
  id: "priv",
  schedule: "0 2 * * *",
  start: "2026-01-01T00:00:00Z",
  tasks: {
    extract: task({ zone: "enclave", run: async (ctx) => {
      await mark(ctx);
      ctx.log.info("Extracted {count} records", { count: 2 });
      return [{ patron_id: S + "-1", note: "raw " + S }, { patron_id: S + "-2", note: S }];
    } }),
    // An enclave dataset (an async generator becomes a JSON Lines dataset in the workspace).
    spill: task({ zone: "enclave", after: ["extract"], run: (ctx: any) => (async function* () {
      for (const r of ctx.inputs.extract) yield { ...r, copy: S };
    })() }),
    // An enclave task whose error message carries the sentinel.
    boom: task({ zone: "enclave", after: ["extract"], retries: 0, run: (ctx: any) => {
      throw new Error("cannot parse " + ctx.inputs.extract[0].patron_id);
    } }),
    sink: task({ zone: "enclave", after: ["boom"], triggerRule: "all_done", run: async (ctx) => {
      await mark(ctx);
      return null;
    } }),
    cp: {
      operator: "privacyCheckpoint",
      checkpoint: true,
      zone: "inherit",
      reads: [M],
      writes: [M],
      after: ["extract", "spill"],
      run: async (ctx: any) => {
        let n = 0;
        for (const r of ctx.inputs.extract) if (String(r.patron_id).startsWith("SENTINEL")) n++;
        for await (const r of ctx.inputs.spill) if (r.copy === S) n++;
        await mark(ctx);
        return { count: n };
      },
    },
    load: task({ after: ["cp"], run: async (ctx: any) => {
      await Deno.writeTextFile(M + "/loaded", String(ctx.inputs.cp.count));
      return ctx.inputs.cp;
    } }),
  },
});
`,
    );
    const logEnv = { CARREL_LOG_CONSOLE: "1", CARREL_LOG_LEVEL: "debug" };
    const r = await w.run(
      ["dags", "run", "priv", "--date", "2026-04-01T02:00:00Z", "--json"],
      logEnv,
    );
    assertExit(r, 0);
    const run = oneJson(r);
    assertRunShape(run);
    const tasks = byTask(run);
    assert.equal(run.state, "success", show(r));
    assert.equal(tasks.boom.state, "failed");
    assert.equal(tasks.sink.state, "success");
    assert.equal(tasks.cp.state, "success");
    // The data really flowed through the enclave and the checkpoint.
    assert.equal(await Deno.readTextFile(join(w.marks, "loaded")), "4");

    const shown = await w.run(["runs", "show", run.runId, "--json"], logEnv);
    assertExit(shown, 0);
    const boom = byTask(oneJson(shown)).boom;
    assert.equal(boom.state, "failed");
    assert.match(boom.error ?? "", /boom/, "the error names the task");

    for (
      const [what, text] of [
        ["dags run stdout", r.stdout],
        ["dags run stderr", r.stderr],
        ["runs show stdout", shown.stdout],
        ["runs show stderr", shown.stderr],
      ] as [string, string][]
    ) {
      assert(!text.includes(S), `${what} holds the sentinel:\n${text}`);
    }

    // The file scan can find the sentinel when it is there.
    const control = join(w.dir, "control");
    await Deno.mkdir(join(control, "sub"), { recursive: true });
    await Deno.writeFile(join(control, "sub", "bin"), new TextEncoder().encode(`\0\x01${S}\0`));
    assert.deepEqual(await filesContaining(control, S), ["sub/bin"]);

    const files = await listFiles(w.home);
    assert(files.some((f) => f.startsWith("logs/")), `no log files in ${files.join(", ")}`);
    if (backend === "pglite") {
      assert(files.some((f) => f.startsWith("state/pg_wal/")), "PGlite's WAL is scanned");
    }
    assert.deepEqual(await filesContaining(w.home, S), [], "files under CARREL_HOME");

    const dump = await dumpAllTables(w);
    assert.match(dump, /task_instances: /);
    assert.match(dump, /audit_log: /);
    assert.match(
      dump,
      /count\W*4/,
      `the dump holds the checkpoint output:\n${dump.slice(0, 3000)}`,
    );
    assert(!dump.includes(S), "the store holds the sentinel");
    if (backend === "pglite") {
      assert.deepEqual(await filesContaining(w.home, S), [], "files after the dump");
    }
  });
}

Deno.test("a DAGs folder outside the repository imports carrel, carrel/operators and zod by bare name", async () => {
  await using w = await world("pglite", "outside");
  const outside = join(w.dir, "srv", "dags");
  await Deno.mkdir(outside, { recursive: true });
  await Deno.writeTextFile(
    join(outside, "outside.ts"),
    `import { z } from "zod";
import { defineDag, task } from "carrel";
import { privacyCheckpoint, schemaGate, tokenize } from "carrel/operators";
export default defineDag({
  id: "outside",
  tasks: {
    extract: task({ zone: "enclave", run: () => [{ patron_id: "P1", n: 1 }] }),
    tokens: tokenize({ after: ["extract"], fields: ["patron_id"], rename: { patron_id: "patron_token" } }),
    gate: schemaGate({ after: ["tokens"], schema: z.object({ patron_token: z.string(), n: z.number() }) }),
    checkpoint: privacyCheckpoint({ after: ["gate"], tokenized: ["patron_token"] }),
  },
});
`,
  );
  const key = { PII_HMAC_KEY: "k".repeat(32) };
  const validate = await w.run(["--dags", outside, "dags", "validate"], key);
  assertExit(validate, 0);
  const run = await w.run(["--dags", outside, "dags", "run", "outside", "--json"], key);
  assertExit(run, 0);
  assert.equal(JSON.parse(run.stdout).state, "success", show(run));
});
