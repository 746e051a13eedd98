/**
 * Helpers shared by the end-to-end CLI tests (this module declares no tests of its own; it is
 * named `*_test.ts` only so that it lives with them). Each test gets a temporary folder with a
 * `dags/` folder, a `marks/` folder the DAG files append to (one file per logical day and task,
 * one line per execution), and a `CARREL_HOME`; on PostgreSQL also a fresh database.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import postgres from "postgres";
import { PgliteClient } from "../../core/state/sql_client.ts";
import { cli, type CliResult, CORE_MOD, freshDatabase, seedHome, spawnCli } from "../test_utils.ts";

export type Backend = "pglite" | "postgres";

/** One test's world: folders, the CLI environment, and the database on PostgreSQL. */
export interface World extends AsyncDisposable {
  backend: Backend;
  dir: string;
  dags: string;
  marks: string;
  home: string;
  dbUrl?: string;
  env: Record<string, string>;
  /** Runs `carrel <args>` in `dir` with this world's environment. */
  run(args: string[], extraEnv?: Record<string, string>): Promise<CliResult>;
}

/** Makes a world on `backend`. */
export async function world(
  backend: Backend,
  label: string,
  options: { env?: Record<string, string> } = {},
): Promise<World> {
  const dir = await Deno.makeTempDir({ prefix: `carrel-e2e-${label}-` });
  const dags = join(dir, "dags");
  const marks = join(dir, "marks");
  const home = join(dir, "home");
  await Deno.mkdir(dags);
  await Deno.mkdir(marks);
  await Deno.mkdir(home, { mode: 0o700 });
  await Deno.chmod(home, 0o700);
  const env: Record<string, string> = {
    CARREL_HOME: home,
    CARREL_DAGS_DIR: dags,
    ...options.env,
  };
  let db: ({ url: string } & AsyncDisposable) | undefined;
  if (backend === "pglite") await seedHome(home);
  else {
    db = await freshDatabase(label);
    env.CARREL_DATABASE_URL = db.url;
  }
  return {
    backend,
    dir,
    dags,
    marks,
    home,
    ...(db ? { dbUrl: db.url } : {}),
    env,
    run: (args, extraEnv = {}) => cli(args, { cwd: dir, env: { ...env, ...extraEnv } }),
    async [Symbol.asyncDispose]() {
      await db?.[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * The top of every DAG file the tests write: imports and small helpers.
 *
 * - `mark(ctx)` appends a line to `marks/<day>.<task>`: one line per execution.
 * - `exists(path)`, `touch(path)`.
 * - `sleep(ms, signal)` rejects when the signal aborts (honours `ctx.signal`).
 * - `M` is the marks folder, `day(ctx)` the logical day (YYYY-MM-DD).
 */
export function prelude(w: World): string {
  return `// deno-lint-ignore-file
import { defineDag, task as declareTask } from ${JSON.stringify(CORE_MOD)};
const M = ${JSON.stringify(w.marks)};
// Every test task may read and write the marks folder (enclave tasks run in strict sandboxes).
const task = (spec: any) => declareTask({ reads: [M], writes: [M], ...spec });
const day = (ctx: any) => ctx.logicalDate.toISOString().slice(0, 10);
const mark = async (ctx: any) => {
  await Deno.writeTextFile(M + "/" + day(ctx) + "." + ctx.taskId, "x\\n", { append: true });
};
const exists = (p: string) => { try { Deno.statSync(p); return true; } catch { return false; } };
const touch = (p: string) => Deno.writeTextFileSync(p, "x\\n", { append: true });
const sleep = (ms: number, signal: AbortSignal) => new Promise<void>((resolve, reject) => {
  if (signal.aborted) return reject(signal.reason);
  const t = setTimeout(resolve, ms);
  signal.addEventListener("abort", () => { clearTimeout(t); reject(signal.reason); }, { once: true });
});
`;
}

/** Writes `dags/<name>.ts` with the prelude and `body`. */
export async function writeDag(w: World, name: string, body: string): Promise<string> {
  const path = join(w.dags, `${name}.ts`);
  await Deno.writeTextFile(path, `${prelude(w)}\n${body}\n`);
  return path;
}

/** How many times the task ran for that day (lines in its mark file). */
export async function count(w: World, day: string, taskId: string): Promise<number> {
  try {
    const text = await Deno.readTextFile(join(w.marks, `${day}.${taskId}`));
    return text.split("\n").filter((l) => l !== "").length;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return 0;
    throw error;
  }
}

/** Execution counts of several tasks for one day, as an object (for one assertEquals). */
export async function counts(
  w: World,
  day: string,
  taskIds: string[],
): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const id of taskIds) out[id] = await count(w, day, id);
  return out;
}

/** Fails when stderr (or any text) holds a stack trace line. */
export function assertNoStack(text: string, what = "stderr"): void {
  assert(!/^\s+at /m.test(text), `${what} holds a stack trace:\n${text}`);
}

/** A short description of a CLI result, for assertion messages. */
export function show(r: CliResult): string {
  return `exit ${r.code}\n--- stdout ---\n${r.stdout}\n--- stderr ---\n${r.stderr}`;
}

/** Asserts the exit code (with the output in the message) and no stack trace. */
export function assertExit(r: CliResult, code: number): void {
  assert.equal(r.code, code, show(r));
  assertNoStack(r.stderr);
}

/** Parses stdout as exactly one JSON document (nothing before or after it). */
// deno-lint-ignore no-explicit-any
export function oneJson(r: CliResult): any {
  try {
    return JSON.parse(r.stdout);
  } catch (error) {
    throw new Error(`stdout is not exactly one JSON document (${error}):\n${show(r)}`);
  }
}

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$/;

/** Asserts the contract's run shape (`dags run --json`, `runs show --json`). */
// deno-lint-ignore no-explicit-any
export function assertRunShape(doc: any): void {
  for (const k of ["runId", "dagId", "logicalDate", "state"]) {
    assert.equal(typeof doc[k], "string", `run.${k} in ${JSON.stringify(doc)}`);
  }
  assert(ISO.test(doc.logicalDate), `logicalDate ${doc.logicalDate}`);
  assert(["queued", "running", "success", "failed"].includes(doc.state), `run state ${doc.state}`);
  assert(Array.isArray(doc.tasks), "tasks is an array");
  for (const t of doc.tasks) {
    assert.equal(typeof t.taskId, "string");
    assert(
      [
        "scheduled",
        "queued",
        "running",
        "success",
        "failed",
        "up_for_retry",
        "upstream_failed",
        "skipped",
      ].includes(t.state),
      `task state ${t.state}`,
    );
    assert.equal(typeof t.attempts, "number", `attempts of ${t.taskId}`);
    assert(/^[0-9a-f]{64}$/.test(t.jobKey), `jobKey of ${t.taskId}: ${t.jobKey}`);
    assert(t.zone === "shared" || t.zone === "enclave", `zone of ${t.taskId}: ${t.zone}`);
    for (const k of ["startedAt", "endedAt"]) {
      assert(k in t, `${k} of ${t.taskId}`);
      assert(t[k] === null || ISO.test(t[k]), `${k} of ${t.taskId}: ${t[k]}`);
    }
  }
}

/** The tasks of a run document by id. */
// deno-lint-ignore no-explicit-any
export function byTask(doc: any): Record<string, any> {
  // deno-lint-ignore no-explicit-any
  return Object.fromEntries(doc.tasks.map((t: any) => [t.taskId, t]));
}

/** The ids of the tasks a `dags run`/`runs resume` JSON says it executed in that invocation. */
// deno-lint-ignore no-explicit-any
export function executed(doc: any): string[] {
  // deno-lint-ignore no-explicit-any
  return doc.tasks.filter((t: any) => t.executed === true).map((t: any) => t.taskId).sort();
}

/**
 * Runs SQL against the world's store after the CLI has exited: PGlite opened on
 * `CARREL_HOME/state` (no CLI may run meanwhile), or PostgreSQL.
 */
export async function query<T = Record<string, unknown>>(
  w: World,
  text: string,
  params: unknown[] = [],
): Promise<T[]> {
  if (w.backend === "postgres") {
    const sql = postgres(w.dbUrl!, { max: 1, onnotice: () => {} });
    try {
      return (await sql.unsafe(text, params as never[])) as unknown as T[];
    } finally {
      await sql.end();
    }
  }
  const client = await PgliteClient.open(join(w.home, "state"));
  try {
    return await client.query<T>(text, params);
  } finally {
    await client.close();
  }
}

/** Every row of every table of the store, as text (the table name on each line). */
export async function dumpAllTables(w: World): Promise<string> {
  const tables = await query<{ table_name: string }>(
    w,
    `SELECT table_name FROM information_schema.tables
      WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY table_name`,
  );
  assert(tables.length >= 4, `expected the store's tables, got ${JSON.stringify(tables)}`);
  const lines: string[] = [];
  for (const { table_name } of tables) {
    // Cast every row to text in SQL so nothing is lost in client-side decoding.
    const rows = await query<{ row: string }>(
      w,
      `SELECT t::text AS row FROM "${table_name}" t`,
    );
    for (const r of rows) lines.push(`${table_name}: ${r.row}`);
  }
  return lines.join("\n");
}

/** The files under `dir`, relative, sorted (empty when it does not exist). */
export async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string, rel: string) => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(d));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return;
      throw error;
    }
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) await walk(join(d, e.name), r);
      else out.push(r);
    }
  };
  await walk(dir, "");
  return out.sort();
}

/** The files under `dir` whose bytes contain `needle`. */
export async function filesContaining(dir: string, needle: string): Promise<string[]> {
  const bytes = new TextEncoder().encode(needle);
  const hits: string[] = [];
  for (const rel of await listFiles(dir)) {
    const data = await Deno.readFile(join(dir, rel));
    if (indexOf(data, bytes) >= 0) hits.push(rel);
  }
  return hits;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  const first = needle[0];
  outer: for (let i = haystack.indexOf(first!); i >= 0; i = haystack.indexOf(first!, i + 1)) {
    if (i + needle.length > haystack.length) return -1;
    for (let j = 1; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/** A spawned CLI run, with its output collected. */
export interface Spawned {
  child: Deno.ChildProcess;
  output: Promise<{ code: number; signal: Deno.Signal | null; stdout: string; stderr: string }>;
}

/** Starts `carrel <args>` in the background. */
export function spawn(w: World, args: string[]): Spawned {
  const child = spawnCli(args, { cwd: w.dir, env: w.env });
  const decoder = new TextDecoder();
  const output = child.output().then((o) => ({
    code: o.code,
    signal: o.signal,
    stdout: decoder.decode(o.stdout),
    stderr: decoder.decode(o.stderr),
  }));
  return { child, output };
}

/** Waits for `path` to exist; fails early (with the output) when the process ends first. */
export async function waitForFile(s: Spawned, path: string, timeoutMs = 120_000): Promise<void> {
  let ended: Awaited<Spawned["output"]> | undefined;
  s.output.then((o) => ended = o, () => {});
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    try {
      await Deno.stat(path);
      return;
    } catch { /* not yet */ }
    if (ended) {
      throw new Error(
        `The process ended before ${path} appeared: exit ${ended.code}\n${ended.stdout}\n${ended.stderr}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  s.child.kill("SIGKILL");
  await s.output.catch(() => {});
  throw new Error(`Timed out waiting for ${path}`);
}
