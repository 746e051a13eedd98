/**
 * `privacyCheckpoint` options inside real runs (`executeRun`, in-process): quarantine with a
 * threshold (a count, a fraction; value-free quarantine list; counts in the audit trail; the run
 * fails past the threshold and on table-level violations), the quasi-identifier check (failing,
 * withholding small classes, passing), fail-closed paths (a path the upstream schema does not
 * declare fails validation with a suggestion, through `resolveDag` and `dags validate`; a path no
 * record carries fails the run), and the generic `validate` hook of task specs.
 *
 * @module
 */
import assert from "node:assert/strict";
import { dirname, join, relative } from "node:path";
import { z } from "zod";
import { DagError, Dataset, defineDag, resolveDag, task, type TaskSpec } from "../../core/mod.ts";
import { declareOutputSchema, privacyCheckpoint, schemaGate } from "../../operators/mod.ts";
import { CORE_MOD, OPERATORS_MOD, withTmpDir } from "../test_utils.ts";
import { assertExit, world } from "../e2e/helpers.ts";
import { assertNone, auditOf, run, sink, taskOf } from "./run_helpers.ts";

const TOKEN = "b".repeat(64);
const Event = z.object({
  patron_token: z.string(),
  item_id: z.string(),
  note: z.string().nullable(),
});

/** `n` clean events; those at the 1-based positions in `leaks` carry contact details. */
function events(n: number, leaks: Record<number, string> = {}): Record<string, unknown>[] {
  return Array.from({ length: n }, (_, i) => ({
    patron_token: TOKEN,
    item_id: `i${i + 1}`,
    note: leaks[i + 1] ?? "returned",
  }));
}

const LEAKS = { 5: "call SENTINEL (555) 867-5309", 12: "write sentinel.reader@example.org" };
const LEAK_VALUES = ["SENTINEL", "867-5309", "sentinel.reader", "example.org"];

function pipeline(
  records: Record<string, unknown>[],
  options: Parameters<typeof privacyCheckpoint>[0],
  load = sink(["cp"]),
): Record<string, TaskSpec> {
  return {
    extract: task({ zone: "enclave", run: () => records }),
    gate: schemaGate({ after: ["extract"], schema: Event }),
    cp: privacyCheckpoint({ after: ["gate"], tokenized: ["patron_token"], ...options }),
    load: load.spec,
  };
}

async function quarantineFile(home: string, dataset: unknown): Promise<string> {
  return await Deno.readTextFile(join(home, dataset as string));
}

// ---------------------------------------------------------------------------------------------
// Quarantine with a threshold

Deno.test("privacyCheckpoint publishes what it checked, serialized again: stored text with a duplicate key does not pass on", async () => {
  await using dir = await withTmpDir();
  // An upstream that writes its JSON Lines file itself: the first "note" of each line carries a
  // phone number; JSON.parse keeps the last one, so the check sees only "returned".
  const upstream = declareOutputSchema(
    task({
      run: async (ctx) => {
        const line = (i: number) =>
          `{"patron_token":"${TOKEN}","item_id":"i${i}","note":"call SENTINEL (555) 867-5309","note":"returned"}\n`;
        const file = join(ctx.workspace.runDir, "extract", "events.jsonl");
        await Deno.mkdir(dirname(file), { recursive: true });
        await Deno.writeTextFile(file, Array.from({ length: 4 }, (_, i) => line(i + 1)).join(""));
        return new Dataset({
          $dataset: {
            path: relative(ctx.workspace.home, file),
            records: 4,
            encrypted: false,
            format: "jsonl",
          },
        }, ctx.workspace);
      },
    }),
    Event,
  );
  const paths: string[] = [];
  const r = await run(dir.path, {
    extract: upstream,
    cp: privacyCheckpoint({ after: ["extract"], tokenized: ["patron_token"] }),
    load: task({
      after: ["cp"],
      run: (ctx) => {
        paths.push((ctx.inputs.cp as Dataset).ref.$dataset.path);
        return null;
      },
    }),
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  assert.equal(paths.length, 1);
  const text = await Deno.readTextFile(join(dir.path, paths[0]!));
  assert.equal(text.trim().split("\n").length, 4);
  for (const leak of LEAK_VALUES) assert.ok(!text.includes(leak), `published text holds ${leak}`);
});

Deno.test("privacyCheckpoint quarantine: failing records are withheld with positions and reasons, the rest published", async () => {
  await using dir = await withTmpDir();
  const load = sink(["cp"]);
  const r = await run(
    dir.path,
    pipeline(events(20, LEAKS), { onViolation: "quarantine", maxQuarantined: 2 }, load),
  );
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  const published = load.calls[0] as { item_id: string }[];
  assert.equal(published.length, 18);
  assert.ok(!published.some((p) => p.item_id === "i5" || p.item_id === "i12"));

  const [q] = auditOf(r, "checkpoint:quarantined", "cp");
  assert.equal(q?.recordCount, 2);
  assert.deepEqual(q?.detail?.reasons, { "detector:phone: note": 1, "detector:email: note": 1 });
  assert.equal(q?.detail?.records, 20);
  assert.equal(q?.detail?.published, 18);
  assert.equal(q?.detail?.maxQuarantined, "2");
  assert.equal(q?.detail?.exceeded, false);
  const text = await quarantineFile(dir.path, q?.detail?.dataset);
  assert.deepEqual(text.trim().split("\n").map((l) => JSON.parse(l)), [
    { position: 5, findings: [{ check: "detector:phone", field: "note" }] },
    { position: 12, findings: [{ check: "detector:email", field: "note" }] },
  ]);
  const [verdict] = auditOf(r, "checkpoint:verdict", "cp");
  assert.equal(verdict?.detail?.outcome, "quarantined");
  assert.equal(verdict?.detail?.mode, "quarantine");
  assertNone(text + JSON.stringify(r.audit) + JSON.stringify(r.tasks), LEAK_VALUES, "the run");
});

Deno.test("privacyCheckpoint quarantine: past the threshold the run fails, nothing is published, the list stays", async () => {
  await using dir = await withTmpDir();
  const load = sink(["cp"]);
  const r = await run(
    dir.path,
    pipeline(events(20, LEAKS), { onViolation: "quarantine", maxQuarantined: 1 }, load),
  );
  assert.equal(r.state, "failed");
  const cp = taskOf(r, "cp");
  assert.equal(cp.state, "failed");
  assert.equal(cp.attempts, 1);
  assert.equal(
    cp.error,
    "Privacy checkpoint quarantined 2 of 20 records, more than maxQuarantined 1: detector:email: note (1); detector:phone: note (1)",
  );
  assert.equal(taskOf(r, "load").state, "upstream_failed");
  assert.equal(load.calls.length, 0);
  assert.ok(!r.outputs.has("cp"));
  const [q] = auditOf(r, "checkpoint:quarantined", "cp");
  assert.equal(q?.detail?.exceeded, true);
  assert.equal(q?.detail?.published, 0);
  const text = await quarantineFile(dir.path, q?.detail?.dataset);
  assert.equal(text.trim().split("\n").length, 2);
  assertNone(cp.error! + text, LEAK_VALUES, "the error and the list");
});

Deno.test('privacyCheckpoint quarantine: fractions of the records checked, as 0.1 or "10%"', async () => {
  await using dir = await withTmpDir();
  for (const limit of [0.1, "10%"] as const) {
    const ok = await run(
      dir.path,
      pipeline(events(20, LEAKS), { onViolation: "quarantine", maxQuarantined: limit }),
    );
    assert.equal(ok.state, "success", `2 of 20 within ${limit}`);
    const three = await run(
      dir.path,
      pipeline(events(20, { ...LEAKS, 17: "mail x.y@example.org" }), {
        onViolation: "quarantine",
        maxQuarantined: limit,
      }),
    );
    assert.equal(three.state, "failed", `3 of 20 past ${limit}`);
    assert.match(
      taskOf(three, "cp").error!,
      /quarantined 3 of 20 records, more than maxQuarantined 10%/,
    );
  }
});

Deno.test("privacyCheckpoint quarantine: table-level violations fail the run whatever the threshold", async () => {
  await using dir = await withTmpDir();
  const tagged = await run(dir.path, {
    extract: task({ zone: "enclave", outputTags: ["pii:raw"], run: () => events(3) }),
    cp: privacyCheckpoint({
      after: ["extract"],
      allowFields: ["patron_token", "item_id", "note"],
      onViolation: "quarantine",
      maxQuarantined: "100%",
    }),
  });
  assert.equal(taskOf(tagged, "cp").state, "failed");
  assert.match(taskOf(tagged, "cp").error!, /upstream_tag: pii:raw/);
  // A tokenized path that no record carries (the field was renamed upstream).
  const renamed = await run(dir.path, {
    extract: task({ zone: "enclave", run: () => [{ item_id: "i1" }, { item_id: "i2" }] }),
    cp: privacyCheckpoint({
      after: ["extract"],
      tokenized: ["patron_token"],
      allowFields: ["patron_token", "item_id"],
      onViolation: "quarantine",
      maxQuarantined: 100,
    }),
  });
  assert.equal(taskOf(renamed, "cp").state, "failed");
  assert.equal(
    taskOf(renamed, "cp").error,
    "Privacy checkpoint failed: allowed_fields: patron_token: no record carries this path (1); tokenized: patron_token: no record carries this path (1)",
  );
});

Deno.test('privacyCheckpoint: onViolation "fail" (the default) fails on the first bad record; no quarantine list', async () => {
  await using dir = await withTmpDir();
  const r = await run(dir.path, pipeline(events(20, { 9: "jo@example.org" }), {}));
  assert.equal(taskOf(r, "cp").state, "failed");
  assert.equal(taskOf(r, "cp").error, "Privacy checkpoint failed: detector:email: note (1)");
  assert.equal(auditOf(r, "checkpoint:quarantined").length, 0);
  const [verdict] = auditOf(r, "checkpoint:verdict", "cp");
  assert.equal(verdict?.detail?.outcome, "failed");
});

Deno.test("privacyCheckpoint: quarantine settings are checked where the DAG is defined", () => {
  assert.throws(
    () => privacyCheckpoint({ onViolation: "quarantine" }),
    /onViolation "quarantine" needs maxQuarantined/,
  );
  for (const bad of [-1, 1.5, "5", "120%", "lots%"]) {
    assert.throws(
      () => privacyCheckpoint({ onViolation: "quarantine", maxQuarantined: bad as never }),
      /maxQuarantined must be a count/,
      String(bad),
    );
  }
  assert.throws(
    () => privacyCheckpoint({ onViolation: "drop" as never }),
    /onViolation must be "fail" or "quarantine"/,
  );
});

// ---------------------------------------------------------------------------------------------
// Quasi-identifiers

const Patron = z.object({
  patron_token: z.string(),
  home_library: z.string(),
  birth_year_band: z.string(),
  postal_prefix: z.string(),
});

function patrons(): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  const add = (n: number, library: string, band: string, prefix: string) => {
    for (let i = 0; i < n; i++) {
      out.push({
        patron_token: TOKEN,
        home_library: library,
        birth_year_band: band,
        postal_prefix: prefix,
      });
    }
  };
  add(12, "MAIN", "1980-1989", "K1A");
  add(10, "EAST", "1990-1999", "K2B");
  add(1, "EAST", "1920-1929", "K2B"); // the only patron born in the 1920s at EAST
  add(3, "WEST", "1980-1989", "K1A");
  return out;
}

const QI = {
  columns: ["home_library", "birth_year_band", "postal_prefix"],
  k: 10,
};

Deno.test("privacyCheckpoint quasiIdentifiers: a class smaller than k fails the checkpoint, naming columns and k only", async () => {
  await using dir = await withTmpDir();
  const load = sink(["cp"]);
  const r = await run(dir.path, {
    extract: task({ zone: "enclave", run: () => patrons() }),
    gate: schemaGate({ after: ["extract"], schema: Patron }),
    cp: privacyCheckpoint({ after: ["gate"], tokenized: ["patron_token"], quasiIdentifiers: QI }),
    load: load.spec,
  });
  const cp = taskOf(r, "cp");
  assert.equal(cp.state, "failed");
  assert.equal(
    cp.error,
    "Privacy checkpoint failed: quasi_identifiers: home_library+birth_year_band+postal_prefix: class smaller than k=10 (4)",
  );
  assertNone(cp.error! + JSON.stringify(r.audit), ["1920", "WEST", "EAST"], "the run");
  assert.equal(load.calls.length, 0);
});

Deno.test("privacyCheckpoint quasiIdentifiers: quarantine withholds the small classes, every published class holds k or more", async () => {
  await using dir = await withTmpDir();
  const load = sink(["cp"]);
  const r = await run(dir.path, {
    extract: task({ zone: "enclave", run: () => patrons() }),
    gate: schemaGate({ after: ["extract"], schema: Patron }),
    cp: privacyCheckpoint({
      after: ["gate"],
      tokenized: ["patron_token"],
      quasiIdentifiers: QI,
      onViolation: "quarantine",
      maxQuarantined: "20%",
    }),
    load: load.spec,
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  const published = load.calls[0] as Record<string, string>[];
  assert.equal(published.length, 22);
  const classes = new Map<string, number>();
  for (const p of published) {
    const key = QI.columns.map((c) => p[c]).join("|");
    classes.set(key, (classes.get(key) ?? 0) + 1);
  }
  assert.ok([...classes.values()].every((n) => n >= 10), JSON.stringify([...classes]));
  const [q] = auditOf(r, "checkpoint:quarantined", "cp");
  assert.equal(q?.recordCount, 4);
  const text = await quarantineFile(dir.path, q?.detail?.dataset);
  const rows = text.trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(rows.map((row) => row.position), [23, 24, 25, 26]);
  assert.deepEqual(rows[0].findings, [{
    check: "quasi_identifiers",
    field: "home_library+birth_year_band+postal_prefix",
    reason: "class smaller than k=10",
  }]);
  assertNone(text, ["1920", "WEST"], "the quarantine list");
});

Deno.test("privacyCheckpoint quasiIdentifiers: passes when every class holds k or more", async () => {
  await using dir = await withTmpDir();
  const r = await run(dir.path, {
    extract: task({ zone: "enclave", run: () => patrons().slice(0, 22) }),
    gate: schemaGate({ after: ["extract"], schema: Patron }),
    cp: privacyCheckpoint({ after: ["gate"], tokenized: ["patron_token"], quasiIdentifiers: QI }),
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
  assert.equal((r.outputs.get("cp") as unknown[]).length, 22);
});

Deno.test("privacyCheckpoint quasiIdentifiers as a function of the params: checked only when it returns a check", async () => {
  await using dir = await withTmpDir();
  const tasks = (
    quasiIdentifiers: (params: Record<string, unknown>) => typeof QI | undefined,
  ) => ({
    extract: task({ zone: "enclave", run: () => patrons() }),
    gate: schemaGate({ after: ["extract"], schema: Patron }),
    cp: privacyCheckpoint({ after: ["gate"], tokenized: ["patron_token"], quasiIdentifiers }),
  });
  const whenBanded = (p: Record<string, unknown>) => p.banded === true ? QI : undefined;
  const off = await run(dir.path, tasks(whenBanded), { params: { banded: false } });
  assert.equal(off.state, "success", JSON.stringify(off.tasks));
  const on = await run(dir.path, tasks(whenBanded), { params: { banded: true } });
  assert.equal(taskOf(on, "cp").state, "failed");
  assert.match(taskOf(on, "cp").error!, /quasi_identifiers: .*class smaller than k=10 \(4\)$/);
  // A misspelt column would put every record in one class: refused, not passed.
  const typo = await run(
    dir.path,
    tasks(() => ({ columns: ["home_libary"], k: 2 })),
    { params: {} },
  );
  assert.equal(taskOf(typo, "cp").state, "failed");
  assert.equal(
    taskOf(typo, "cp").error,
    'Checkpoint "cp" misconfigured: quasi-identifier column "home_libary" is not in the checked schema',
  );
});

// ---------------------------------------------------------------------------------------------
// Fail closed on paths

function dagWith(checkpoint: TaskSpec) {
  return defineDag({
    id: "typo",
    tasks: {
      extract: task({ zone: "enclave", run: () => events(2) }),
      gate: schemaGate({ after: ["extract"], schema: Event }),
      checkpoint: { ...checkpoint, after: ["gate"] },
    },
  });
}

Deno.test("privacyCheckpoint paths: one the upstream gate's schema does not declare fails validation, with a suggestion", () => {
  const cases: [TaskSpec, RegExp][] = [
    [
      privacyCheckpoint({ tokenized: ["patron_tokn"] }),
      /^Cannot load DAG "typo": tasks\.checkpoint: tokenized path "patron_tokn" is not in the schema of upstream "gate" \(did you mean "patron_token"\?\)$/,
    ],
    [
      privacyCheckpoint({ allowFields: ["patron_token", "itemid"] }),
      /allowFields path "itemid" is not in the schema of upstream "gate" \(did you mean "item_id"\?\)/,
    ],
    [
      privacyCheckpoint({ quasiIdentifiers: { columns: ["home_library"], k: 5 } }),
      /quasi-identifier column "home_library" is not in the schema of upstream "gate"/,
    ],
    [
      privacyCheckpoint({ schema: Event, tokenized: ["patron.token"] }),
      /tokenized path "patron.token" is not in its schema/,
    ],
  ];
  for (const [spec, expected] of cases) {
    assert.throws(() => resolveDag(dagWith(spec)), (error: Error) => {
      assert.ok(error instanceof DagError, String(error));
      assert.match(error.message, expected);
      return true;
    });
  }
  // Declared paths pass.
  resolveDag(
    dagWith(
      privacyCheckpoint({ tokenized: ["patron_token"], allowFields: ["patron_token", "note"] }),
    ),
  );
});

Deno.test("privacyCheckpoint paths: a checkpoint with no field list at all fails validation", () => {
  const dag = defineDag({
    id: "open_door",
    tasks: {
      extract: task({ zone: "enclave", run: () => events(1) }),
      checkpoint: privacyCheckpoint({ after: ["extract"], tokenized: ["patron_token"] }),
    },
  });
  // Without a schema, tokenized paths are checked against allowFields.
  const typo = defineDag({
    id: "typo_allow",
    tasks: {
      extract: task({ zone: "enclave", run: () => events(1) }),
      checkpoint: privacyCheckpoint({
        after: ["extract"],
        tokenized: ["patron_tokn"],
        allowFields: ["patron_token", "item_id", "note"],
      }),
    },
  });
  assert.throws(
    () => resolveDag(typo),
    /tasks\.checkpoint: tokenized path "patron_tokn" is not in allowFields \(did you mean "patron_token"\?\)/,
  );
  assert.throws(
    () => resolveDag(dag, "dags/open_door.ts"),
    /Cannot load DAG "open_door" \(dags\/open_door\.ts\): tasks\.checkpoint: privacyCheckpoint has no field list: give it "schema" or "allowFields", or put a schemaGate directly upstream \(upstream "extract" declares no output schema\)/,
  );
});

Deno.test("privacyCheckpoint paths: an optional field the schema declares may be absent from every record", async () => {
  await using dir = await withTmpDir();
  const WithHolds = Event.extend({ renewals: z.number().optional() });
  const r = await run(dir.path, {
    extract: task({ zone: "enclave", run: () => events(3) }),
    gate: schemaGate({ after: ["extract"], schema: WithHolds }),
    cp: privacyCheckpoint({
      after: ["gate"],
      tokenized: ["patron_token"],
      allowFields: ["patron_token", "item_id", "note", "renewals"],
    }),
  });
  assert.equal(r.state, "success", JSON.stringify(r.tasks));
});

Deno.test("dags validate: a typo in a checkpoint path names the file, the DAG, the task and the path", async () => {
  await using w = await world("pglite", "typo");
  await Deno.writeTextFile(
    join(w.dags, "typo.ts"),
    `import { z } from "zod";
import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
import { privacyCheckpoint, schemaGate } from ${JSON.stringify(OPERATORS_MOD)};
export default defineDag({
  id: "circ_typo",
  tasks: {
    extract: task({ zone: "enclave", run: () => [] }),
    gate: schemaGate({ after: ["extract"], schema: z.object({ patron_token: z.string() }) }),
    checkpoint: privacyCheckpoint({ after: ["gate"], tokenized: ["patron_tokn"] }),
  },
});
`,
  );
  const r = await w.run(["dags", "validate"]);
  assertExit(r, 1);
  assert.match(r.stdout, /typo\.ts/);
  assert.match(
    r.stdout,
    /DAG "circ_typo".*tasks\.checkpoint: tokenized path "patron_tokn" is not in the schema of upstream "gate" \(did you mean "patron_token"\?\)/,
  );
  const run = await w.run(["dags", "run", "circ_typo"]);
  assert.notEqual(run.code, 0, "an invalid DAG does not run");
});

Deno.test("TaskSpec.validate: problems and errors of the hook fail resolveDag, naming the task", () => {
  const seen: string[][] = [];
  const dag = (validate: NonNullable<TaskSpec["validate"]>) =>
    defineDag({
      id: "hooked",
      tasks: {
        a: task({ run: () => 1 }),
        b: task({ run: () => 2 }),
        c: { ...task({ after: ["b", "a"], run: () => 3 }), validate },
      },
    });
  resolveDag(dag((context) => {
    seen.push([context.dagId, context.taskId, ...context.upstream.map((u) => u.id)]);
    return [];
  }));
  assert.deepEqual(seen, [["hooked", "c", "b", "a"]]);
  assert.throws(
    () => resolveDag(dag(() => ["first problem", "second problem"])),
    /^DagError: Cannot load DAG "hooked": tasks\.c: first problem; tasks\.c: second problem$/,
  );
  assert.throws(
    () =>
      resolveDag(dag(() => {
        throw new Error("hook broke");
      })),
    /tasks\.c: hook broke/,
  );
});
