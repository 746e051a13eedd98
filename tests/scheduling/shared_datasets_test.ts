/**
 * Shared-zone datasets kept in the state store (`CARREL_DATASETS=database`): two workers with
 * different `CARREL_HOME` folders finish a DAG whose shared tasks hand a dataset to each other;
 * enclave datasets never enter the database. With files, the second worker cannot read it.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadDags } from "../../core/loader.ts";
import { runWorker, startRun } from "../../core/run/worker.ts";
import { openPostgresStore } from "../../core/state/postgres.ts";
import type { SqlStateStore } from "../../core/state/sql_store.ts";
import { Workspace } from "../../core/dataset.ts";
import {
  BACKENDS,
  CORE_MOD,
  notePostgresSkipped,
  TEST_DATABASE_URL,
  testStore,
  waitFor,
} from "../test_utils.ts";

notePostgresSkipped();

const opts = { sanitizeResources: false, sanitizeOps: false };
const N = 3_000;
const interval = {
  start: new Date("2026-03-01T00:00:00Z"),
  end: new Date("2026-03-02T00:00:00Z"),
};

function dagSource(gate: string): string {
  return `import { defineDag, task } from "${CORE_MOD}";
export default defineDag({
  id: "handoff",
  tasks: {
    produce: task({
      run: async function* () {
        // Waits until the test has stopped this worker from taking the next task.
        await Deno.readTextFile(${JSON.stringify(gate)});
        for (let i = 0; i < ${N}; i++) yield { i, text: "line " + i + "\\n\\t\\"quoted\\"" };
      },
    }),
    secret: task({
      zone: "enclave",
      after: ["produce"],
      run: async function* (ctx) {
        for await (const r of ctx.inputs.produce) yield { patron_id: "P-SENTINEL-" + r.i };
      },
    }),
    consume: task({
      after: ["produce"],
      run: async (ctx) => {
        let n = 0;
        let sum = 0;
        let intact = true;
        for await (const r of ctx.inputs.produce) {
          n++;
          sum += r.i;
          intact &&= r.text === "line " + r.i + "\\n\\t\\"quoted\\"";
        }
        return { n, sum, intact, home: ctx.workspace.home };
      },
    }),
  },
});
`;
}

async function handoff(backend: "pglite" | "postgres", datasets: "files" | "database") {
  const store = await testStore(backend, "shared_datasets");
  const extra: SqlStateStore[] = [];
  try {
    let url = "";
    if (backend === "postgres") {
      const [{ db }] = await store.client.query<{ db: string }>(
        "SELECT current_database() AS db",
      ) as [{ db: string }];
      const u = new URL(TEST_DATABASE_URL!);
      u.pathname = `/${db}`;
      url = u.toString();
    }
    const connect = async () => {
      if (backend === "pglite") return store;
      const s = await openPostgresStore(url);
      extra.push(s);
      return s;
    };
    const dags = join(store.home, "dags");
    const homeA = join(store.home, "machine-a");
    const homeB = join(store.home, "machine-b");
    const gate = join(store.home, "gate.fifo");
    for (const d of [dags, homeA, homeB]) await Deno.mkdir(d, { recursive: true });
    const made = await new Deno.Command("mkfifo", { args: [gate] }).output();
    assert.equal(made.code, 0);
    await Deno.writeTextFile(join(dags, "handoff.ts"), dagSource(gate));
    const loaded = await loadDags(dags, { fresh: true });
    assert.deepEqual(loaded.errors, []);
    const dag = loaded.dags.get("handoff")!;
    const run = await startRun(store, dag, interval, {}, "triggered");

    // Machine A takes `produce`; once it runs, A is told to stop (it finishes what it holds and
    // takes nothing more), then `produce` may go on.
    const stopA = new AbortController();
    const workerA = runWorker({
      store: await connect(),
      dagsDir: dags,
      home: homeA,
      pollMs: 100,
      signal: stopA.signal,
      datasets,
    });
    const state = async (task: string) => {
      const [row] = await store.client.query<{ state: string }>(
        "SELECT state FROM task_instances WHERE run_id = $1 AND task_id = $2",
        [run.runId, task],
      );
      return row?.state;
    };
    await waitFor(async () => (await state("produce")) === "running", 60_000, "produce to run");
    stopA.abort();
    await Deno.writeTextFile(gate, "go");
    await workerA;
    assert.equal(await state("produce"), "success");
    assert.notEqual(await state("consume"), "success", "machine A took nothing more");

    // Machine B, with its own CARREL_HOME, does the rest.
    await runWorker({
      store: await connect(),
      dagsDir: dags,
      home: homeB,
      pollMs: 100,
      exitWhenIdle: true,
      datasets,
    });
    const [consume] = await store.client.query<{ state: string; output: unknown; error: string }>(
      "SELECT state, output, error FROM task_instances WHERE run_id = $1 AND task_id = 'consume'",
      [run.runId],
    );
    const [chunks] = await store.client.query<{ n: number; records: number; enclave: number }>(
      `SELECT count(*)::int AS n, coalesce(sum(records), 0)::int AS records,
              count(*) FILTER (WHERE body LIKE '%P-SENTINEL-%')::int AS enclave
         FROM dataset_chunks WHERE run_id = $1`,
      [run.runId],
    );
    return { consume: consume!, chunks: chunks!, homeA, homeB, state };
  } finally {
    for (const s of extra) await s.close();
    await store.close();
  }
}

for (const backend of BACKENDS) {
  Deno.test(
    `shared datasets in the store (${backend}): two workers, two CARREL_HOME folders, one dataset handed over`,
    opts,
    async () => {
      const r = await handoff(backend, "database");
      assert.equal(r.consume.state, "success", r.consume.error);
      const out = typeof r.consume.output === "string"
        ? JSON.parse(r.consume.output)
        : r.consume.output;
      assert.deepEqual(out, { n: N, sum: (N * (N - 1)) / 2, intact: true, home: r.homeB });
      assert.ok(r.chunks.n >= 1);
      assert.equal(r.chunks.records, N, "only produce's dataset is in the store");
      assert.equal(r.chunks.enclave, 0, "no enclave record entered the database");
    },
  );
}

Deno.test(
  "shared datasets as files: a worker with another CARREL_HOME cannot read them",
  opts,
  async () => {
    const r = await handoff(BACKENDS.at(-1)!, "files");
    assert.equal(r.consume.state, "failed");
    assert.match(r.consume.error, /Cannot read dataset .*: the file is gone/);
    assert.equal(r.chunks.n, 0);
  },
);

Deno.test("shared datasets in the store: enclave datasets stay encrypted files", async () => {
  const writes: string[] = [];
  const chunks = {
    writeDatasetChunk: (c: { path: string }) => {
      writes.push(c.path);
      return Promise.resolve();
    },
    readDatasetChunks: () => Promise.resolve([]),
    removeDataset: () => Promise.resolve(),
  };
  const home = await Deno.makeTempDir();
  try {
    const ws = new Workspace(home, "d@2026-01-01T00:00:00Z", undefined, chunks);
    const secret = await ws.create("t", "raw", true);
    await secret.write({ patron_id: "P-1" });
    const enc = await secret.close();
    assert.equal(enc.ref.$dataset.stored, undefined);
    assert.equal(enc.ref.$dataset.encrypted, true);
    const shared = await ws.create("t", "out", false);
    await shared.write({ n: 1 });
    const plain = await shared.close();
    assert.equal(plain.ref.$dataset.stored, "database");
    assert.deepEqual(writes, [plain.ref.$dataset.path]);
    await ws.removeEnclave();
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});
