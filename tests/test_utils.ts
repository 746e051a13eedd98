/**
 * Shared test helpers: temporary folders, stores on PGlite and on a fresh PostgreSQL database per
 * test file, and running the CLI as a user would.
 *
 * @module
 */
import { join } from "node:path";
import postgres from "postgres";
import { PgliteClient } from "../core/state/sql_client.ts";
import { SqlStateStore } from "../core/state/sql_store.ts";
import { openPostgresStore } from "../core/state/postgres.ts";
import { migrationFiles } from "../core/state/migrate.ts";
import { sha256Hex } from "../core/job_key.ts";

/** The PostgreSQL server for tests, when CI (or you) set one. */
export const TEST_DATABASE_URL = Deno.env.get("CARREL_TEST_DATABASE_URL");

/** The store backends to run a suite on. */
export const BACKENDS: ("pglite" | "postgres")[] = TEST_DATABASE_URL
  ? ["pglite", "postgres"]
  : ["pglite"];

let warned = false;
/** Says once per process that the PostgreSQL variants were skipped. */
export function notePostgresSkipped(): void {
  if (!TEST_DATABASE_URL && !warned) {
    warned = true;
    console.log("PostgreSQL variants skipped: set CARREL_TEST_DATABASE_URL to run them");
  }
}

/**
 * A temporary folder removed on dispose.
 *
 * @example
 * ```ts ignore
 * await using dir = await withTmpDir();
 * await Deno.writeTextFile(join(dir.path, "x"), "y");
 * ```
 */
export async function withTmpDir(
  prefix = "carrel-test-",
): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

async function copyDir(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true, mode: 0o700 });
  for await (const entry of Deno.readDir(from)) {
    const a = join(from, entry.name);
    const b = join(to, entry.name);
    if (entry.isDirectory) await copyDir(a, b);
    else if (entry.isFile) await Deno.copyFile(a, b);
  }
}

/**
 * A migrated PGlite data folder made once per machine and copied per test: PGlite's initdb takes
 * seconds, a copy takes milliseconds. Keyed by the migrations' content.
 */
export async function pgliteTemplate(): Promise<string> {
  const files = await migrationFiles();
  const key = sha256Hex(files.map((f) => f.sql).join("\n")).slice(0, 16);
  const dir = join(Deno.env.get("TMPDIR") ?? "/tmp", `carrel-pglite-template-${key}`);
  try {
    await Deno.stat(join(dir, "PG_VERSION"));
    return dir;
  } catch { /* make it */ }
  const staging = await Deno.makeTempDir({ prefix: "carrel-pglite-staging-" });
  const client = await PgliteClient.open(join(staging, "data"));
  const store = new SqlStateStore(client, "template");
  await store.migrate();
  await store.close();
  try {
    await Deno.rename(join(staging, "data"), dir);
  } catch {
    // Another test process won the race: theirs is as good as ours.
  }
  await Deno.remove(staging, { recursive: true }).catch(() => {});
  return dir;
}

/** Prepares `CARREL_HOME/state` from the template so the CLI skips initdb. */
export async function seedHome(home: string): Promise<void> {
  await copyDir(await pgliteTemplate(), join(home, "state"));
}

/** A fresh PostgreSQL database, dropped on dispose. */
export async function freshDatabase(label: string): Promise<{ url: string } & AsyncDisposable> {
  if (!TEST_DATABASE_URL) throw new Error("CARREL_TEST_DATABASE_URL is not set");
  const name = `carrel_test_${label.replace(/[^a-z0-9_]/g, "_")}_${
    crypto.randomUUID().slice(0, 8)
  }`;
  const admin = postgres(TEST_DATABASE_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(TEST_DATABASE_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async [Symbol.asyncDispose]() {
      const sql = postgres(TEST_DATABASE_URL!, { max: 1, onnotice: () => {} });
      await sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
      await sql.end();
    },
  };
}

/** A migrated store on the given backend, closed (and its database dropped) on dispose. */
export async function testStore(
  backend: "pglite" | "postgres",
  label = "store",
): Promise<SqlStateStore & { home: string }> {
  const tmp = await Deno.makeTempDir({ prefix: "carrel-store-" });
  let store: SqlStateStore;
  let db: ({ url: string } & AsyncDisposable) | undefined;
  if (backend === "pglite") {
    await copyDir(await pgliteTemplate(), join(tmp, "state"));
    store = new SqlStateStore(await PgliteClient.open(join(tmp, "state")), join(tmp, "state"));
  } else {
    db = await freshDatabase(label);
    store = await openPostgresStore(db.url);
  }
  await store.migrate();
  const close = store.close.bind(store);
  store.close = async () => {
    await close();
    await db?.[Symbol.asyncDispose]();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  };
  return Object.assign(store, { home: tmp });
}

/** What running the CLI printed. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

const MAIN = new URL("../cli/main.ts", import.meta.url).pathname;
const CONFIG = new URL("../deno.json", import.meta.url).pathname;

/**
 * Runs `carrel <args>` in a subprocess, as `deno task carrel` would.
 *
 * @example
 * ```ts ignore
 * const r = await cli(["dags", "list", "--json"], { cwd, env: { CARREL_HOME: home } });
 * ```
 */
export async function cli(
  args: string[],
  options: { cwd: string; env?: Record<string, string>; signal?: AbortSignal },
): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-worker-options",
      "--allow-all",
      "--quiet",
      "--config",
      CONFIG,
      MAIN,
      ...args,
    ],
    cwd: options.cwd,
    env: { TZ: "UTC", NO_COLOR: "1", ...options.env },
    stdout: "piped",
    stderr: "piped",
    ...(options.signal ? { signal: options.signal } : {}),
  }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** Starts `carrel <args>` and returns the child process (for kill tests). */
export function spawnCli(
  args: string[],
  options: { cwd: string; env?: Record<string, string> },
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-worker-options",
      "--allow-all",
      "--quiet",
      "--config",
      CONFIG,
      MAIN,
      ...args,
    ],
    cwd: options.cwd,
    env: { TZ: "UTC", NO_COLOR: "1", ...options.env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** The bare specifier DAG files written by tests import the engine by (mapped in deno.json). */
export const CORE_MOD = "carrel";
/** The bare specifier DAG files written by tests import the operators by. */
export const OPERATORS_MOD = "carrel/operators";

/** Polls until `check` returns true or the time runs out. */
export async function waitFor(
  check: () => Promise<boolean> | boolean,
  timeoutMs = 20_000,
  what = "condition",
): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`Timed out waiting for ${what}`);
}

/**
 * HMAC-SHA256 as the openssl command-line tool computes it for `data`'s UTF-8 bytes: an
 * independent implementation to check tokens against.
 */
export async function opensslHmac(key: string, data: string): Promise<string> {
  const child = new Deno.Command("openssl", {
    args: ["dgst", "-sha256", "-hmac", key],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(data));
  await writer.close();
  const out = await child.output();
  if (out.code !== 0) throw new Error(`openssl failed: ${new TextDecoder().decode(out.stderr)}`);
  const text = new TextDecoder().decode(out.stdout).trim();
  const hex = text.slice(text.lastIndexOf(" ") + 1);
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(`Unexpected openssl output: ${text}`);
  return hex;
}
