/**
 * Strict sandboxes: a task body runs in a Worker with only its declared capabilities. A shared
 * task that reads PII_HMAC_KEY, opens the ILS connection, reads the enclave scratch, spawns a
 * process or fetches an undeclared host fails naming the capability (not retried, audited); an
 * enclave task cannot reach an undeclared host; declared accesses work; capabilities that break
 * the zone rule are refused at load. Each on the local executor and on workers, on PGlite and
 * (with CARREL_TEST_DATABASE_URL) PostgreSQL.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type DataInterval, type ResolvedDag, resolveParams } from "../../core/dag.ts";
import { sandboxScope, sandboxStats } from "../../core/sandbox/pool.ts";
import { connectionVariable, resolveList } from "../../core/sandbox/capabilities.ts";
import { loadIlsFixture } from "../../fixtures/ils.ts";
import type { PGlite } from "@electric-sql/pglite";
import { loadDags } from "../../core/loader.ts";
import { openPgliteDatabase } from "../../core/state/pglite_database.ts";
import { executeRun } from "../../core/run/local.ts";
import { runWorker, startRun } from "../../core/run/worker.ts";
import type { SqlStateStore } from "../../core/state/sql_store.ts";
import {
  BACKENDS,
  notePostgresSkipped,
  opensslHmac,
  testStore,
  waitFor,
  withTmpDir,
} from "../test_utils.ts";

notePostgresSkipped();

const INTERVAL: DataInterval = {
  start: new Date("2026-03-01T00:00:00Z"),
  end: new Date("2026-03-02T00:00:00Z"),
};
const KEY = "sandbox-test-key-0123456789abcdef0123456789";
const opts = { sanitizeResources: false, sanitizeOps: false };

/** A local HTTP server on 127.0.0.1, port 0: the "undeclared host" (and a declared one). */
function server(): Deno.HttpServer<Deno.NetAddr> & { hostPort: string; hits: number } {
  const counter = { hits: 0 };
  const s = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    counter.hits++;
    return new Response("pong");
  });
  return Object.defineProperties(s, {
    hostPort: { value: `127.0.0.1:${s.addr.port}` },
    hits: { get: () => counter.hits },
  }) as Deno.HttpServer<Deno.NetAddr> & { hostPort: string; hits: number };
}

/** A DAG file in a fresh DAGs folder, loaded the way the CLI loads it. */
async function load(
  dir: string,
  source: string,
): Promise<{ dags: Map<string, ResolvedDag>; errors: { file: string; message: string }[] }> {
  const dags = join(dir, "dags");
  await Deno.mkdir(dags, { recursive: true });
  await Deno.writeTextFile(join(dags, "d.ts"), source);
  return await loadDags(dags, { fresh: true });
}

function dagSource(tasks: string, dagOptions = `sandbox: "strict"`): string {
  return `import { defineDag, task } from "carrel";
import { sqlExtract, tokenize } from "carrel/operators";
export default defineDag({
  id: "sbx",
  schedule: null,
  ${dagOptions},
  defaults: { retries: 2, retryDelay: 1 },
  tasks: { ${tasks} },
});
`;
}

type Tasks = Map<
  string,
  { state: string; attempts: number; error: string | null; output?: unknown }
>;
type Run = (dag: ResolvedDag, home: string, params?: Record<string, unknown>) => Promise<Tasks>;

/** The local executor. */
function local(store: SqlStateStore): Run {
  return async (dag, home, params = {}) => {
    const result = await executeRun({
      dag,
      interval: INTERVAL,
      params: resolveParams(dag, params),
      store,
      home,
    });
    return new Map(
      result.tasks.map((t) => [t.taskId, { ...t, output: result.outputs.get(t.taskId) }]),
    );
  };
}

/** A worker draining a triggered run. */
function workers(store: SqlStateStore, dagsDir: string): Run {
  return async (dag, home, params = {}) => {
    const run = await startRun(store, dag, INTERVAL, resolveParams(dag, params), "triggered");
    const stop = new AbortController();
    const done = runWorker({
      store,
      dagsDir,
      home,
      concurrency: 2,
      pollMs: 50,
      signal: stop.signal,
    });
    await waitFor(async () => {
      const r = await store.getRun(run.runId);
      return r?.state === "success" || r?.state === "failed";
    }, 120_000);
    stop.abort();
    await done;
    const tis = await store.listTaskInstances(run.runId);
    return new Map(
      tis.map((
        t,
      ) => [t.taskId, {
        state: t.state,
        attempts: t.tryNumber ?? 0,
        error: t.error ?? null,
        output: t.output,
      }]),
    );
  };
}

for (const backend of BACKENDS) {
  for (const driver of ["local", "workers"] as const) {
    Deno.test({
      name:
        `sandbox (${driver}, ${backend}): a shared task is denied what it did not declare, named, not retried`,
      ...opts,
      async fn() {
        await using tmp = await withTmpDir();
        await using http = server();
        const home = join(tmp.path, "home");
        Deno.env.set("PII_HMAC_KEY", KEY);
        Deno.env.set("CARREL_CONN_ILS", `postgres://carrel@${http.hostPort}/evergreen`);
        const { dags, errors } = await load(
          tmp.path,
          dagSource(`
    key: task({ run: () => Deno.env.get("PII_HMAC_KEY") ? "had it" : "none" }),
    ils: task({ run: async () => { for await (const _ of sqlExtract("ils", "SELECT 1")) break; } }),
    scratch: task({ run: async (ctx) => { for await (const _ of Deno.readDir(ctx.workspace.home + "/enclave")) break; } }),
    spawn: task({ run: async () => { await new Deno.Command("true").output(); } }),
    fetcher: task({ run: async () => await (await fetch("http://${http.hostPort}/")).text() }),
    fine: task({ run: () => 42 }),`),
        );
        assert.deepEqual(errors, []);
        const store = await testStore(backend, "sandbox");
        try {
          const tasks =
            await (driver === "local" ? local(store) : workers(store, join(tmp.path, "dags")))(
              dags.get("sbx")!,
              home,
            );
          const expect = {
            key:
              'Task "key" may not read PII_HMAC_KEY: declare it in env, or move the task into the enclave',
            ils:
              'Task "ils" may not open connection "ils" (CARREL_CONN_ILS): declare it in connections, or move the task into the enclave',
            scratch:
              `Task "scratch" may not read ${home}/enclave: declare it in reads, or move the task into the enclave`,
            spawn: 'Task "spawn" may not run a process (true): a sandboxed task never may',
            fetcher:
              `Task "fetcher" may not connect to ${http.hostPort}: declare a connection to it in connections`,
          };
          for (const [id, message] of Object.entries(expect)) {
            const t = tasks.get(id)!;
            assert.equal(t.state, "failed", id);
            assert.equal(t.error, message);
            assert.equal(t.attempts, 1, `${id} is not retried`);
          }
          assert.equal(tasks.get("fine")!.state, "success");
          assert.equal(http.hits, 0, "nothing reached the server");
        } finally {
          await store.close();
        }
      },
    });
  }
}

/** The audit entries of a run with this operation. */
async function audited(store: SqlStateStore, operation: string) {
  const found = [];
  for await (const e of store.iterateAudit()) if (e.operation === operation) found.push(e);
  return found;
}

for (const backend of BACKENDS) {
  for (const driver of ["local", "workers"] as const) {
    Deno.test({
      name:
        `sandbox (${driver}, ${backend}): an enclave task cannot reach an undeclared host; declared accesses work`,
      ...opts,
      async fn() {
        await using tmp = await withTmpDir();
        await using http = server();
        const home = join(tmp.path, "home");
        const input = join(tmp.path, "input.txt");
        const outDir = join(tmp.path, "out");
        await Deno.writeTextFile(input, "declared input");
        Deno.env.set("PII_HMAC_KEY", KEY);
        Deno.env.set("CARREL_CONN_SBX_API", `http://${http.hostPort}`);
        Deno.env.set("SBX_SETTING", "on");
        // No DAG-wide sandbox: enclave tasks are strict by default, shared ones opt in.
        const { dags, errors } = await load(
          tmp.path,
          dagSource(
            `
    send: task({ zone: "enclave", run: async () => await (await fetch("http://${http.hostPort}/")).text() }),
    send_declared: task({ zone: "enclave", connections: ["sbx_api"], run: async () => await (await fetch("http://${http.hostPort}/")).text() }),
    extract: task({ zone: "enclave", run: async function* (ctx) {
      for (let i = 0; i < 1000; i++) yield { patron_id: "P" + i, n: i };
      ctx.count("sbx:extracted", 1000);
    } }),
    tokens: tokenize({ after: ["extract"], fields: ["patron_id"], rename: { patron_id: "patron_token" } }),
    checkpoint: privacyCheckpoint({ after: ["tokens"], tokenized: ["patron_token"], allowFields: ["patron_token", "n"] }),
    sum: task({ after: ["checkpoint"], sandbox: "strict", run: async (ctx) => {
      let total = 0, first = "";
      for await (const r of ctx.inputs.checkpoint) { total += r.n; first ||= r.patron_token; }
      ctx.log.info("Summed {n} records", { n: 1000 });
      return { total, first };
    } }),
    files: task({ sandbox: "strict", reads: [${JSON.stringify(input)}], writes: [${
              JSON.stringify(outDir)
            }], env: ["SBX_SETTING"],
      run: async () => {
        const text = await Deno.readTextFile(${JSON.stringify(input)});
        await Deno.mkdir(${JSON.stringify(outDir)}, { recursive: true });
        await Deno.writeTextFile(${
              JSON.stringify(join(outDir, "copy.txt"))
            }, text + " " + Deno.env.get("SBX_SETTING"));
        return text;
      } }),`,
            `connections: { sbx_api: "shared" }`,
          ).replace(
            'import { sqlExtract, tokenize } from "carrel/operators";',
            'import { privacyCheckpoint, tokenize } from "carrel/operators";',
          ),
        );
        assert.deepEqual(errors, []);
        const dag = dags.get("sbx")!;
        assert.equal(
          dag.tasks.get("send")!.sandbox.mode,
          "strict",
          "enclave tasks are strict by default",
        );
        assert.equal(dag.tasks.get("tokens")!.sandbox.mode, "strict");
        const store = await testStore(backend, "sandbox");
        try {
          const tasks =
            await (driver === "local" ? local(store) : workers(store, join(tmp.path, "dags")))(
              dag,
              home,
            );
          const send = tasks.get("send")!;
          assert.equal(send.state, "failed");
          assert.equal(
            send.error,
            `Task "send" may not connect to ${http.hostPort}: declare a connection to it in connections`,
          );
          assert.equal(send.attempts, 1);
          assert.equal(tasks.get("send_declared")!.error, null);
          assert.equal(http.hits, 1, "only the declared connection reached the server");
          assert.equal(tasks.get("send_declared")!.state, "success");
          for (const id of ["extract", "tokens", "checkpoint", "sum", "files"]) {
            assert.equal(tasks.get(id)!.state, "success", `${id}: ${tasks.get(id)!.error}`);
          }
          const sum = tasks.get("sum")!.output as { total: number; first: string };
          assert.equal(sum.total, (999 * 1000) / 2);
          assert.equal(
            sum.first,
            await opensslHmac(KEY, "P0"),
            "tokenize read the key in its sandbox",
          );
          assert.equal(tasks.get("files")!.output, "declared input");
          assert.equal(await Deno.readTextFile(join(outDir, "copy.txt")), "declared input on");
          const denied = await audited(store, "sandbox:denied");
          assert.deepEqual(
            denied.map((e) => [e.taskId, e.detail]),
            [["send", { capability: "net", resource: http.hostPort }]],
          );
          assert.equal((await audited(store, "sbx:extracted")).length, 1, "counts cross back");
        } finally {
          await store.close();
        }
      },
    });
  }
}

Deno.test("sandbox: capabilities that break the zone rule are refused at load, naming task and capability", async () => {
  await using tmp = await withTmpDir();
  const home = join(tmp.path, "home");
  Deno.env.set("CARREL_HOME", home);
  try {
    const { dags, errors } = await load(
      tmp.path,
      dagSource(
        `
    ils: task({ connections: ["ils"], run: () => 1 }),
    koha: task({ connections: ["koha"], run: () => 1 }),
    url: task({ env: ["CARREL_CONN_ILS"], run: () => 1 }),
    scratch: task({ reads: [${JSON.stringify(join(home, "enclave", "x"))}], run: () => 1 }),
    everything: task({ writes: ["/"], run: () => 1 }),
    inside: task({ zone: "enclave", connections: ["ils", "koha"], reads: [${
          JSON.stringify(join(home, "enclave"))
        }], run: () => 1 }),
    key: task({ env: ["PII_HMAC_KEY"], run: () => 1 }),`,
        `sandbox: "strict", connections: { koha: "enclave" }`,
      ),
    );
    assert.equal(dags.size, 0);
    assert.equal(errors.length, 1);
    const problems = errors[0]!.message.split("; ");
    assert.deepEqual(problems.slice(1), [
      'tasks.koha: Task "koha" may not declare connection "koha": it is an enclave connection (move the task into the enclave)',
      'tasks.url: Task "url" may not declare env CARREL_CONN_ILS: it holds an enclave connection (move the task into the enclave)',
      `tasks.scratch: Task "scratch" may not read ${
        join(home, "enclave", "x")
      }: it holds enclave data (${join(home, "enclave")}) (move the task into the enclave)`,
      `tasks.everything: Task "everything" may not write /: it holds enclave data (${
        join(home, "enclave")
      }) (move the task into the enclave)`,
    ]);
    assert.match(
      problems[0]!,
      /tasks\.ils: Task "ils" may not declare connection "ils": it is an enclave connection \(move the task into the enclave\)$/,
    );
  } finally {
    Deno.env.delete("CARREL_HOME");
  }
});

for (const backend of BACKENDS) {
  for (const driver of ["local", "workers"] as const) {
    Deno.test({
      name:
        `sandbox (${driver}, ${backend}): the reference DAGs run strict with their declared capabilities`,
      ...opts,
      async fn() {
        await using tmp = await withTmpDir();
        const home = join(tmp.path, "home");
        Deno.env.set("PII_HMAC_KEY", KEY);
        const dagsDir = new URL("../../dags", import.meta.url).pathname;
        const { dags } = await loadDags(dagsDir);
        const ils = join(tmp.path, "ils");
        const db = await openPgliteDatabase(ils);
        await loadIlsFixture(db, {
          patrons: 20,
          copies: 40,
          circulations: 150,
          start: "2026-01-01T00:00:00Z",
          end: "2026-01-04T00:00:00Z",
          seed: 3,
        });
        await db.close();
        const store = await testStore(backend, "sandbox_dags");
        try {
          const run = driver === "local" ? local(store) : workers(store, dagsDir);
          const started = sandboxStats.started;
          const demo = await run(dags.get("patron_privacy_demo")!, join(home, "demo"), {
            records: 50,
          });
          for (const [id, t] of demo) assert.equal(t.state, "success", `${id}: ${t.error}`);
          const circ = await run(dags.get("circulation_sync")!, join(home, "circ"), {
            source: `pglite:${ils}`,
            target: `pglite:${join(tmp.path, "warehouse")}`,
            from: "2026-01-01T00:00:00Z",
            to: "2026-01-04T00:00:00Z",
          });
          for (const [id, t] of circ) assert.equal(t.state, "success", `${id}: ${t.error}`);
          assert.equal((circ.get("load")!.output as { inserted: number }).inserted, 150);
          assert.ok(sandboxStats.started > started, "the tasks ran in sandbox Workers");
          // The warehouse the sandboxed load created is a copy of the template cluster, as one
          // created here is (initdb would have given it a system identifier of its own).
          const identifier = async (db: PGlite) => {
            try {
              const { rows } = await db.query<{ id: string }>(
                "SELECT system_identifier::text AS id FROM pg_control_system()",
              );
              return rows[0]!.id;
            } finally {
              await db.close();
            }
          };
          assert.equal(
            await identifier(await openPgliteDatabase(join(tmp.path, "warehouse"))),
            await identifier(await openPgliteDatabase(join(tmp.path, "control"))),
            "the sandbox made its warehouse with initdb, not from the template",
          );
        } finally {
          await store.close();
        }
      },
    });
  }
}

Deno.test("sandbox: every task of every reference DAG runs strict", async () => {
  const { dags, errors } = await loadDags(new URL("../../dags", import.meta.url).pathname);
  assert.deepEqual(errors, []);
  assert.ok(dags.size >= 6);
  for (const dag of dags.values()) {
    for (const t of dag.tasks.values()) assert.equal(t.sandbox.mode, "strict", `${dag.id}.${t.id}`);
  }
  // No reference task reads a connection's variable (its password) without also being the task
  // that opens that connection: with the default params and with named connections alike.
  for (const dag of dags.values()) {
    for (const params of [resolveParams(dag, {}), { ...resolveParams(dag, {}), source: "ils2" }]) {
      for (const t of dag.tasks.values()) {
        const env = resolveList(t.sandbox.capabilities.env, params);
        const opened = resolveList(t.sandbox.capabilities.connections, params)
          .map((name) => /^[a-z]+:/i.test(name) ? "" : connectionVariable(name));
        for (const variable of env.filter((v) => v.startsWith("CARREL_CONN_"))) {
          assert.ok(opened.includes(variable), `${dag.id}.${t.id} reads ${variable}`);
        }
      }
    }
  }
});

Deno.test("sandbox: a param naming an enclave connection for a shared task is refused when the attempt starts", async () => {
  await using tmp = await withTmpDir();
  const { dags, errors } = await load(
    tmp.path,
    dagSource(`
    load: task({ connections: (p) => [String(p.target)], run: () => 1 }),`).replace(
      "schedule: null,",
      'schedule: null,\n  params: { target: "warehouse" },',
    ),
  );
  assert.deepEqual(errors, []);
  const dag = dags.get("sbx")!;
  const result = await executeRun({
    dag,
    interval: INTERVAL,
    params: resolveParams(dag, { target: "ils" }),
    home: join(tmp.path, "home"),
  });
  const t = result.tasks[0]!;
  assert.equal(t.state, "failed");
  assert.equal(t.attempts, 1);
  assert.equal(
    t.error,
    'Task "load" may not declare connection "ils": it is an enclave connection (move the task into the enclave)',
  );
});

Deno.test("sandbox: a body that crashes its Worker fails its attempt, and the next task gets a fresh Worker", async () => {
  await using tmp = await withTmpDir();
  const { dags, errors } = await load(
    tmp.path,
    dagSource(`
    crash: task({ run: () => new Promise(() => { setTimeout(() => { throw new Error("thrown outside the body"); }, 1); }) }),
    after_crash: task({ after: ["crash"], triggerRule: "all_done", run: () => "ran" }),`),
  );
  assert.deepEqual(errors, []);
  const result = await executeRun({
    dag: dags.get("sbx")!,
    interval: INTERVAL,
    params: {},
    home: join(tmp.path, "home"),
  });
  const [crash, next] = result.tasks;
  assert.equal(crash!.state, "failed");
  assert.match(crash!.error ?? "", /^Task "crash" crashed its sandbox: .*thrown outside the body/);
  assert.equal(next!.state, "success");
  assert.equal(result.outputs.get("after_crash"), "ran");
});

Deno.test("sandbox: a Worker no task still to run needs is terminated when its last task succeeds", async () => {
  await using tmp = await withTmpDir();
  const [one, two] = [join(tmp.path, "one"), join(tmp.path, "two")];
  await Deno.mkdir(one);
  await Deno.mkdir(two);
  await Deno.writeTextFile(join(one, "x.txt"), "1");
  await Deno.writeTextFile(join(two, "x.txt"), "2");
  // first and again share a permission set; then and last each have their own. The probes run in
  // this process (no sandbox) and count the Workers still running.
  const probe = "__carrelSandboxLive";
  (globalThis as Record<string, unknown>)[probe] = () => sandboxStats.live;
  const { dags, errors } = await load(
    tmp.path,
    dagSource(`
    first: task({ reads: [${JSON.stringify(one)}], run: () => Deno.readTextFile(${
      JSON.stringify(join(one, "x.txt"))
    }) }),
    probe1: task({ after: ["first"], sandbox: "none", run: () => globalThis[${
      JSON.stringify(probe)
    }]() }),
    then: task({ after: ["probe1"], reads: [${JSON.stringify(two)}], run: () => Deno.readTextFile(${
      JSON.stringify(join(two, "x.txt"))
    }) }),
    probe2: task({ after: ["then"], sandbox: "none", run: () => globalThis[${
      JSON.stringify(probe)
    }]() }),
    again: task({ after: ["probe2"], reads: [${JSON.stringify(one)}], run: () => "again" }),
    probe3: task({ after: ["again"], sandbox: "none", run: () => globalThis[${
      JSON.stringify(probe)
    }]() }),
    last: task({ after: ["probe3"], run: () => "last" }),`),
  );
  assert.deepEqual(errors, []);
  const before = sandboxStats.live;
  const started = sandboxStats.started;
  const result = await executeRun({
    dag: dags.get("sbx")!,
    interval: INTERVAL,
    params: {},
    home: join(tmp.path, "home"),
  });
  assert.equal(result.state, "success");
  const live = (id: string) => (result.outputs.get(id) as number) - before;
  // At the first task, one Worker per permission set started (three). After first, its Worker
  // stays (again needs it); then's goes after then, and the shared one after again.
  assert.equal(live("probe1"), 3);
  assert.equal(sandboxStats.started - started, 3);
  assert.equal(live("probe2"), 2);
  assert.equal(live("probe3"), 1);
  assert.equal(sandboxStats.live, before, "the run's end terminated the rest");
  delete (globalThis as Record<string, unknown>)[probe];
});

Deno.test("sandbox: a pooled Worker idle past CARREL_SANDBOX_IDLE_MS is terminated, even while the pool stays open", async () => {
  await using tmp = await withTmpDir();
  // A worker process keeps the pool open for its whole life; here an outer scope does.
  using _pool = sandboxScope();
  Deno.env.set("CARREL_SANDBOX_IDLE_MS", "100");
  try {
    // broken fails (no retries left); after_it never runs, so the Worker warmed up for it waits.
    const { dags, errors } = await load(
      tmp.path,
      dagSource(`
    broken: task({ retries: 0, run: () => { throw new Error("down"); } }),
    after_it: task({ after: ["broken"], env: ["CARREL_TEST_UNUSED"], run: () => 1 }),`),
    );
    assert.deepEqual(errors, []);
    const before = sandboxStats.live;
    const result = await executeRun({
      dag: dags.get("sbx")!,
      interval: INTERVAL,
      params: {},
      home: join(tmp.path, "home"),
    });
    assert.equal(result.state, "failed");
    assert.ok(sandboxStats.live > before, "Workers wait in the open pool");
    await waitFor(() => sandboxStats.live === before, 10_000, "idle Workers ending");
  } finally {
    Deno.env.delete("CARREL_SANDBOX_IDLE_MS");
  }
});

Deno.test("sandbox: a mapped task's expansion and instances run in the Worker, denied like any other body", async () => {
  await using tmp = await withTmpDir();
  Deno.env.set("PII_HMAC_KEY", KEY);
  const { dags, errors } = await load(
    tmp.path,
    dagSource(`
    list: task({ run: () => ["a", "b", "c"] }),
    each: task({ expand: "list", run: (ctx) => \`\${ctx.mapIndex}:\${ctx.item}\` }),
    peek: task({ expand: () => [1], run: () => Deno.env.get("PII_HMAC_KEY") ?? "none" }),
    report: task({ after: ["each"], run: (ctx) => ctx.inputs.each }),`),
  );
  assert.deepEqual(errors, []);
  const result = await executeRun({
    dag: dags.get("sbx")!,
    interval: INTERVAL,
    params: {},
    home: join(tmp.path, "home"),
  });
  const states = Object.fromEntries(result.tasks.map((t) => [t.taskId, t.state]));
  assert.equal(states["each[2]"], "success");
  assert.deepEqual(result.outputs.get("report"), ["0:a", "1:b", "2:c"]);
  // The instance body ran in its sandbox: the key it did not declare is refused, not read.
  assert.equal(states["peek[0]"], "failed");
  const peek = result.tasks.find((t) => t.taskId === "peek[0]")!;
  assert.match(peek.error ?? "", /may not read PII_HMAC_KEY/);
});

Deno.test("sandbox: strict streaming tasks fuse across their Workers, as in one process", async () => {
  await using tmp = await withTmpDir();
  // source -> shape (fails once at record 1,500) -> tokens (key) -> gate -> sink: every task
  // strict, each in its own Worker; shape, tokens and gate stream.
  const { dags, errors } = await load(
    tmp.path,
    `import { defineDag, task } from "carrel";
import { schemaGate, tokenize, upstreamRecords } from "carrel/operators";
import { z } from "zod";
const Row = z.object({ i: z.number(), patron_token: z.string(), at: z.string() }).strict();
export default defineDag({
  id: "sbx_fuse",
  schedule: null,
  sandbox: "strict",
  defaults: { retries: 1, retryDelay: 0 },
  tasks: {
    source: task({ zone: "enclave", run: async function* () {
      for (let i = 0; i < 3000; i++) yield { i, patron: "P" + (i % 50), at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)) };
    } }),
    shape: task({ zone: "enclave", after: ["source"], stream: true, run: async (ctx) => {
      const out = await ctx.dataset("shaped");
      let n = 0;
      try {
        for await (const r of upstreamRecords(ctx)) {
          if (++n === 1500 && ctx.attempt === 1) throw new Error("shape failed on purpose");
          await out.write({ i: r.i, patron_id: r.patron, at: r.at });
        }
      } catch (error) {
        await out.abort();
        throw error;
      }
      return await out.close();
    } }),
    tokens: tokenize({ after: ["shape"], fields: ["patron_id"], rename: { patron_id: "patron_token" } }),
    gate: schemaGate({ after: ["tokens"], schema: Row }),
    sink: task({ zone: "enclave", after: ["gate"], run: async (ctx) => {
      const lines = [];
      for await (const r of upstreamRecords(ctx)) lines.push(JSON.stringify(r));
      return lines.join("\\n");
    } }),
  },
});
`,
  );
  assert.deepEqual(errors, []);
  const dag = dags.get("sbx_fuse")!;
  const before = Deno.env.get("PII_HMAC_KEY");
  Deno.env.set("PII_HMAC_KEY", KEY);
  try {
    const runWith = async (fusion: boolean, home: string) =>
      await executeRun({
        dag,
        interval: INTERVAL,
        params: resolveParams(dag, {}),
        home: join(tmp.path, home),
        fusion,
      });
    const fused = await runWith(true, "fused");
    const plain = await runWith(false, "plain");
    assert.equal(fused.state, "success", JSON.stringify(fused.tasks));
    assert.equal(plain.state, "success", JSON.stringify(plain.tasks));
    const sink = fused.outputs.get("sink") as string;
    assert.equal(sink.split("\n").length, 3000);
    assert.equal(sink, plain.outputs.get("sink"), "byte-identical to the unfused run");
    // shape -> tokens -> gate went through the pass in memory: their outputs were never stored.
    for (const id of ["shape", "tokens"]) {
      const ref = (fused.outputs.get(id) as { ref: { $dataset: { streamed?: boolean } } }).ref;
      assert.equal(ref.$dataset.streamed, true, id);
    }
    const plainShape = plain.outputs.get("shape") as { ref: { $dataset: { streamed?: boolean } } };
    assert.equal(plainShape.ref.$dataset.streamed, undefined);
    const tries = Object.fromEntries(fused.tasks.map((t) => [t.taskId, t.attempts]));
    assert.deepEqual(tries, { source: 1, shape: 2, tokens: 1, gate: 1, sink: 1 });
  } finally {
    if (before === undefined) Deno.env.delete("PII_HMAC_KEY");
    else Deno.env.set("PII_HMAC_KEY", before);
  }
});
