/**
 * Key-name sentinels: enclave records whose *keys* are patron data, a barcode-shaped
 * `ZZ9SENTINEL42` and a name-shaped `Zzsentinelname_Smith` (at the top level, nested under a
 * declared field, and holding a PII key), go through `tokenize`, a `schemaGate` (failing, and
 * quarantining) and a `privacyCheckpoint` without a gate (failing, and quarantining). The runs are
 * driven through the CLI; afterwards neither key appears in the errors, the CLI output (`dags run`,
 * `runs show`, `runs logs`, `audit export`), any file under `CARREL_HOME` (the embedded store's
 * data files, `carrel.log`, quarantine lists) or the PostgreSQL store. The messages report them
 * by position (`{key 3}`) instead.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { BACKENDS, CORE_MOD, notePostgresSkipped, OPERATORS_MOD } from "../test_utils.ts";
import {
  assertExit,
  dumpAllTables,
  filesContaining,
  listFiles,
  oneJson,
  world,
} from "../e2e/helpers.ts";

notePostgresSkipped();

const KEYS = ["ZZ9SENTINEL42", "Zzsentinelname_Smith"];

const records = `(ctx) => Array.from({ length: 3 }, (_, i) => ({
  patron_id: "P" + i,
  item_id: "i" + i,
  loan: { due: "2026-01-20", ...(i === 1 ? { Zzsentinelname_Smith: "x" } : {}) },
  ...(i === 0 ? { ZZ9SENTINEL42: "x" } : {}),
  ...(i === 2 ? { Zzsentinelname_Smith: { email: "x@example.invalid" }, ZZ9SENTINEL42: 1 } : {}),
}))`;

function dagSource(id: string, tail: string): string {
  return `import { z } from "zod";
import { defineDag, task } from ${JSON.stringify(CORE_MOD)};
import { privacyCheckpoint, schemaGate, tokenize } from ${JSON.stringify(OPERATORS_MOD)};
const Loan = z.object({ patron_token: z.string(), item_id: z.string(), loan: z.object({ due: z.string() }) });
export default defineDag({
  id: ${JSON.stringify(id)},
  tasks: {
    extract: task({ zone: "enclave", outputTags: ["pii:raw"], run: ${records} }),
    tokens: tokenize({ after: ["extract"], fields: ["patron_id"], rename: { patron_id: "patron_token" } }),
    ${tail}
    load: task({ after: ["checkpoint"], run: async (ctx) => {
      const rows = [];
      for await (const r of ctx.inputs.checkpoint) rows.push(r);
      ctx.log.info("Loaded {n}", { n: rows.length });
      return { n: rows.length };
    } }),
  },
});
`;
}

const CHECKPOINT_ONLY = {
  after: ["tokens"],
  tokenized: ["patron_token"],
  allowFields: ["patron_token", "item_id", "loan.due"],
};

const DAGS: Record<string, string> = {
  key_gate: dagSource(
    "key_gate",
    `gate: schemaGate({ after: ["tokens"], schema: Loan }),
    checkpoint: privacyCheckpoint({ after: ["gate"], tokenized: ["patron_token"] }),`,
  ),
  key_gate_q: dagSource(
    "key_gate_q",
    `gate: schemaGate({ after: ["tokens"], schema: Loan, onInvalid: "quarantine" }),
    checkpoint: privacyCheckpoint({ after: ["gate"], tokenized: ["patron_token"] }),`,
  ),
  key_cp: dagSource(
    "key_cp",
    `checkpoint: privacyCheckpoint(${JSON.stringify(CHECKPOINT_ONLY)}),`,
  ),
  key_cp_q: dagSource(
    "key_cp_q",
    `checkpoint: privacyCheckpoint({ ...${
      JSON.stringify(CHECKPOINT_ONLY)
    }, onViolation: "quarantine", maxQuarantined: "100%" }),`,
  ),
};

for (const backend of BACKENDS) {
  Deno.test(
    `privacy: key names that are patron data never reach a message, a log, the audit trail, the store or CARREL_HOME [${backend}]`,
    {
      sanitizeResources: false,
      sanitizeOps: false,
    },
    async () => {
      await using w = await world(backend, "keys", {
        env: {
          PII_HMAC_KEY: "key-sentinel-test-key-with-at-least-32-bytes",
          CARREL_LOG_CONSOLE: "1",
          CARREL_LOG_LEVEL: "debug",
        },
      });
      for (const [name, source] of Object.entries(DAGS)) {
        await Deno.writeTextFile(join(w.dags, `${name}.ts`), source);
      }
      const outputs: string[] = [];
      const date = "2026-03-01T00:00:00Z";
      const runOf = async (id: string) => {
        const r = await w.run(["dags", "run", id, "--date", date, "--json"]);
        outputs.push(r.stdout, r.stderr);
        return r;
      };

      // The gate, failing: every record rejected, keys by position.
      const gate = await runOf("key_gate");
      assertExit(gate, 1);
      const gateDoc = oneJson(gate);
      const gateTask = gateDoc.tasks.find((t: { taskId: string }) => t.taskId === "gate");
      assert.equal(gateTask.state, "failed");
      assert.match(gateTask.error, /^Schema gate rejected 3 of 3 records: /);
      assert.match(gateTask.error, /\{key \d\}: unexpected field \(2\)/);
      assert.match(gateTask.error, /loan\.\{key 2\}: unexpected field \(1\)/);

      // The gate, quarantining: the run succeeds with nothing published; the list names positions.
      const gateQ = await runOf("key_gate_q");
      assertExit(gateQ, 0);
      const gateQuarantine = (await listFiles(w.home)).filter((f) =>
        f.includes("key_gate_q") && f.endsWith("gate/quarantine.jsonl")
      );
      assert.equal(gateQuarantine.length, 1, (await listFiles(w.home)).join("\n"));
      const gateList = await Deno.readTextFile(join(w.home, gateQuarantine[0]!));
      assert.equal(gateList.trim().split("\n").length, 3);
      assert.match(gateList, /"path":"\{key \d\}","reason":"unexpected field"/);

      // The checkpoint without a gate, failing and quarantining.
      const cp = await runOf("key_cp");
      assertExit(cp, 1);
      const cpTask = oneJson(cp).tasks.find((t: { taskId: string }) => t.taskId === "checkpoint");
      assert.match(cpTask.error, /^Privacy checkpoint failed: /);
      assert.match(cpTask.error, /allowed_fields: \{key \d\}/);
      assert.match(cpTask.error, /allowed_fields: loan\.\{key 2\} \(1\)/);
      const cpQ = await runOf("key_cp_q");
      assertExit(cpQ, 0);
      const cpQuarantine = (await listFiles(w.home)).filter((f) =>
        f.includes("key_cp_q") && f.endsWith("checkpoint/quarantine.jsonl")
      );
      assert.equal(cpQuarantine.length, 1);
      const cpList = await Deno.readTextFile(join(w.home, cpQuarantine[0]!));
      assert.equal(cpList.trim().split("\n").length, 3);

      // Everything a user or an auditor can see afterwards.
      for (const id of Object.keys(DAGS)) {
        const runId = `${id}@${date}`;
        const shown = await w.run(["runs", "show", runId, "--json"]);
        outputs.push(shown.stdout, shown.stderr);
        for (const taskId of ["gate", "checkpoint"]) {
          const logs = await w.run(["runs", "logs", runId, taskId]);
          outputs.push(logs.stdout, logs.stderr);
        }
      }
      const exported = await w.run(["audit", "export"]);
      assertExit(exported, 0);
      outputs.push(exported.stdout, exported.stderr);
      assert.ok(exported.stdout.includes('"operation":"gate:checked"'));
      assert.ok(exported.stdout.includes('"operation":"checkpoint:quarantined"'));
      const verify = await w.run(["audit", "verify"]);
      outputs.push(verify.stdout, verify.stderr);

      const everything = outputs.join("\n");
      for (const key of KEYS) {
        assert.ok(!everything.includes(key), `${key} in the CLI output`);
        assert.deepEqual(await filesContaining(w.home, key), [], `${key} in CARREL_HOME`);
      }
      assert.ok((await listFiles(w.home)).some((f) => f.includes("logs/")), "a log file exists");
      if (backend === "postgres") {
        const dump = await dumpAllTables(w);
        assert.ok(dump.includes("gate:checked"), "the dump holds the audit trail");
        for (const key of KEYS) assert.ok(!dump.includes(key), `${key} in the store`);
      }
      // Control: the keys were in the data, and the search finds them where they are.
      for (const key of KEYS) {
        assert.ok(DAGS.key_gate!.includes(key));
        assert.deepEqual(
          await filesContaining(w.dags, key),
          Object.keys(DAGS).map((n) => `${n}.ts`).sort(),
        );
      }
    },
  );
}
