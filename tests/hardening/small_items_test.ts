/**
 * The smaller hardening items: strict dates (exit 2), disk-full and other I/O errors named,
 * errors that cannot carry patron data shown and not retried, private files whatever the parent,
 * scratch of dead processes removed, credential refusals that say why.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import postgres from "postgres";
import { parseDateFlag } from "../../cli/common.ts";
import { errorMessage, FatalTaskError, isPermanentError, UsageError } from "../../core/errors.ts";
import { isPrivacySafe, knownError, markPrivacySafe } from "../../core/privacy/privacy_safe.ts";
import { removeDeadScratch, Workspace } from "../../core/dataset.ts";
import { resetLogging, setupLogging } from "../../core/log.ts";
import { getLogger } from "@logtape/logtape";
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
import { looseModes } from "./modes.ts";

const REPO_DAGS = new URL("../../dags", import.meta.url).pathname;

Deno.test("dates: impossible calendar dates and year 0 are usage errors", () => {
  for (
    const bad of [
      "2026-02-30",
      "2026-02-29",
      "2026-13-01",
      "0000-01-01",
      "2026-11-28T24:00:00Z",
      "soon",
    ]
  ) {
    assert.throws(() => parseDateFlag(bad), UsageError, bad);
  }
  assert.equal(parseDateFlag("2024-02-29")!.toISOString(), "2024-02-29T00:00:00.000Z");
  assert.equal(
    parseDateFlag("2026-11-28T02:00:00+01:00")!.toISOString(),
    "2026-11-28T01:00:00.000Z",
  );
  assert.equal(parseDateFlag("0001-01-01")!.toISOString(), "0001-01-01T00:00:00.000Z");
});

Deno.test("dates: the CLI exits 2 with Carrel's message, never a database error", async () => {
  await using w = await world("pglite", "dates");
  await writeDag(
    w,
    "d",
    `export default defineDag({ id: "d", schedule: "@daily", start: "2026-01-01T00:00:00Z",
  tasks: { a: task({ run: async (ctx) => { await mark(ctx); return 1; } }) } });`,
  );
  for (const date of ["2026-02-30", "0000-01-01"]) {
    const r = await w.run(["dags", "run", "d", "--date", date]);
    assertExit(r, 2);
    assert.match(r.stderr, new RegExp(`Invalid --date "${date}"`), show(r));
    assert.doesNotMatch(r.stderr, /SQLSTATE|out of range|PostgreSQL|\[object Object\]/);
  }
  assert.equal(
    (await Deno.readDir(w.marks)[Symbol.asyncIterator]().next()).done,
    true,
    "nothing ran",
  );
});

Deno.test("errors: PGlite's file-system errors and other non-Errors are named", () => {
  assert.equal(
    errorMessage({ name: "ErrnoError", errno: 51 }),
    "File system error: no space left on device (ENOSPC)",
  );
  assert.equal(errorMessage({ name: "ErrnoError", errno: 999 }), "File system error (errno 999)");
  assert.equal(errorMessage({ code: "EIO" }), "input/output error (EIO)");
  assert.equal(errorMessage({}), "Unexpected Object thrown");
  assert.doesNotMatch(errorMessage(Object.create(null)), /object Object/);
});

Deno.test("errors: those that cannot carry patron data are shown and not retried", async () => {
  const missing = await Deno.readTextFile("/nonexistent-carrel/input.mrc").catch((e) => e);
  const full = await Deno.writeFile("/dev/full", new Uint8Array(8)).catch((e) => e);
  const refused = await Deno.connect({ hostname: "127.0.0.1", port: 1 }).catch((e) => e);
  const dns = await Deno.connect({ hostname: "no-such-host.invalid", port: 1 }).catch((e) => e);
  const sql = postgres("postgres://carrel@127.0.0.1:1/ils", { max: 1, connect_timeout: 5 });
  const pgRefused = await sql`SELECT 1`.catch((e) => e);
  await sql.end();
  const connection = Object.assign(
    new Error('Cannot resolve connection "ils": CARREL_CONN_ILS is not set'),
    { name: "ConnectionError" },
  );
  const sqlConfig = Object.assign(
    new Error('Cannot extract from "ils": password authentication failed [SQLSTATE 28P01]'),
    {
      name: "SqlError",
      code: "28P01",
    },
  );
  for (
    const [what, error, kind] of [
      ["missing file", missing, "missing-file"],
      ["disk full", full, "disk"],
      ["connection refused", refused, "connection"],
      ["DNS failure", dns, "dns"],
      ["postgres.js connection refused", pgRefused, "connection"],
      ["unknown connection name", connection, "configuration"],
      ["wrong password", sqlConfig, "configuration"],
      ["PGlite disk full", { name: "ErrnoError", errno: 51 }, "disk"],
    ] as const
  ) {
    assert.equal(knownError(error)?.kind, kind, `${what}: ${errorMessage(error)}`);
    assert.ok(isPrivacySafe(error), `${what} is shown`);
    assert.ok(isPermanentError(error), `${what} is not retried`);
  }
  // Transient ones are shown but retried.
  const reset = Object.assign(new Error("connect ECONNRESET 10.0.0.1:5432"), {
    code: "ECONNRESET",
  });
  assert.ok(isPrivacySafe(reset));
  assert.equal(isPermanentError(reset), false);
  // Anything a task made up keeps its message withheld, whatever it is called.
  for (
    const made of [
      new Error("patron P1234567 has no e-mail"),
      new Deno.errors.NotFound("patron P1234567 not found"),
      Object.assign(new Error("P1234567"), { name: "ConnectionError" }),
      Object.assign(new Error("22P02 bad value P1234567"), { name: "SqlError", code: "22P02" }),
      Object.assign(new Error("P1234567 ENOENT"), { code: "ENOENT" }),
    ]
  ) {
    assert.equal(isPrivacySafe(made), false, made.message);
    assert.equal(isPermanentError(made), false, made.message);
  }
  assert.ok(isPrivacySafe(markPrivacySafe(new Error("3 records"))));
  assert.ok(isPermanentError(new FatalTaskError("bad config")));
});

Deno.test("errors: a misconfigured enclave source is shown and fails at once despite retries", async () => {
  await using w = await world("pglite", "misconfigured");
  await writeDag(
    w,
    "src",
    `export default defineDag({ id: "src", schedule: "@daily", start: "2026-01-01T00:00:00Z",
  defaults: { retries: 3, retryDelay: "30s" },
  tasks: {
    extract: task({ zone: "enclave", run: async (ctx) => { await mark(ctx); return await Deno.readTextFile(M + "/no-such-export.csv"); } }),
  } });`,
  );
  const r = await w.run(["dags", "run", "src", "--date", "2026-02-01", "--json"]);
  assertExit(r, 1);
  const extract = oneJson(r).tasks[0];
  assert.equal(extract.attempts, 1, show(r));
  const shown = await w.run(["runs", "show", oneJson(r).runId, "--json"]);
  const error = oneJson(shown).tasks[0].error as string;
  assert.match(error, /No such file or directory \(os error 2\)/);
  assert.doesNotMatch(error, /withheld/);
});

Deno.test("files: CARREL_HOME 0755 is tightened; the store, logs and datasets are private", async () => {
  await using w = await world("pglite", "modes");
  await Deno.chmod(w.home, 0o755);
  await writeDag(
    w,
    "m",
    `export default defineDag({ id: "m", schedule: "@daily", start: "2026-01-01T00:00:00Z",
  tasks: {
    e: task({ zone: "enclave", run: async (ctx) => { const o = await ctx.dataset("rows"); await o.write({ n: 1 }); return await o.close(); } }),
    s: task({ run: async (ctx) => { const o = await ctx.dataset("rows"); await o.write({ n: 1 }); return await o.close(); } }),
  } });`,
  );
  assertExit(await w.run(["dags", "run", "m", "--date", "2026-02-01"]), 0);
  assert.equal((await Deno.stat(w.home)).mode! & 0o777, 0o700);
  const { loose, files } = await looseModes(w.home);
  assert.ok(files > 100, `files checked: ${files}`);
  assert.deepEqual(loose, []);
  assert.ok(await Deno.stat(join(w.home, "logs", "carrel.log")));
});

Deno.test("files: a CARREL_HOME that cannot be made private is refused with a clear message", async () => {
  if (Deno.uid() === 0) {
    // root may chmod anything; refusal needs a folder owned by someone else and a non-root user.
    const { ensurePrivateHome } = await import("../../core/state/embedded_files.ts");
    await using dir = await withTmpDir();
    await Deno.chmod(dir.path, 0o755);
    await ensurePrivateHome(dir.path);
    assert.equal((await Deno.stat(dir.path)).mode! & 0o777, 0o700);
    return;
  }
  const r = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { ensurePrivateHome } from ${
        JSON.stringify(new URL("../../core/state/embedded_files.ts", import.meta.url).href)
      };
await ensurePrivateHome("/usr/share").catch((e) => { console.log(e.message); });`,
    ],
    stdout: "piped",
  }).output();
  assert.match(
    new TextDecoder().decode(r.stdout),
    /Cannot use CARREL_HOME \/usr\/share: it is readable by others/,
  );
});

Deno.test("files: the log file stays 0600 across rotation", async () => {
  await using dir = await withTmpDir();
  setupLogging({ logDir: dir.path, console: false, maxFileSize: 2048 });
  try {
    const log = getLogger(["carrel", "test"]);
    for (let i = 0; i < 200; i++) log.info("line {i} of the rotation test", { i });
  } finally {
    resetLogging();
  }
  const names = [];
  for await (const e of Deno.readDir(dir.path)) names.push(e.name);
  assert.ok(names.includes("carrel.log.1"), names.join(", "));
  for (const name of names) {
    assert.equal((await Deno.stat(join(dir.path, name))).mode! & 0o777, 0o600, name);
  }
});

Deno.test("scratch: a killed owner's enclave scratch is removed by the next command", async () => {
  await using w = await world("pglite", "scratch");
  await writeDag(
    w,
    "k",
    `export default defineDag({ id: "k", schedule: "@daily", start: "2026-01-01T00:00:00Z",
  tasks: {
    e: task({ zone: "enclave", run: async (ctx) => {
      const o = await ctx.dataset("rows");
      await o.write({ patron: "P1" });
      await o.close();
      touch(M + "/written");
      await sleep(600_000, ctx.signal);
    } }),
  } });`,
  );
  const s = spawn(w, ["dags", "run", "k", "--date", "2026-02-01"]);
  await waitForFile(s, join(w.marks, "written"));
  const scratch = async () => {
    const found: string[] = [];
    const walk = async (p: string) => {
      for await (const e of Deno.readDir(p)) {
        if (e.isFile && e.name.endsWith(".enc")) found.push(join(p, e.name));
        if (e.isDirectory) await walk(join(p, e.name));
      }
    };
    await walk(join(w.home, "enclave")).catch(() => {});
    return found;
  };
  assert.equal((await scratch()).length, 1);
  s.child.kill("SIGKILL");
  await s.output;
  assert.equal((await scratch()).length, 1, "left behind by the killed process");
  assertExit(await w.run(["runs", "list"]), 0);
  assert.deepEqual(await scratch(), []);
});

Deno.test("scratch: purge removes dead owners' scratch and keeps live ones'", async () => {
  await using dir = await withTmpDir();
  const child = new Deno.Command("sleep", { args: ["60"] }).spawn();
  child.kill("SIGKILL");
  await child.status;
  const host = Deno.hostname().replace(/[^A-Za-z0-9.-]/g, "_");
  const dead = join(
    dir.path,
    "enclave",
    "d",
    "2026-01-01T000000Z",
    `${host}~${child.pid}~00000000~0000aaaa`,
  );
  const otherHost = join(
    dir.path,
    "enclave",
    "d",
    "2026-01-01T000000Z",
    `elsewhere~${child.pid}~00000000~0000bbbb`,
  );
  await Deno.mkdir(dead, { recursive: true });
  await Deno.mkdir(otherHost, { recursive: true });
  await Deno.writeTextFile(join(dead, "x.jsonl.enc"), "sealed");
  const live = new Workspace(dir.path, "d@2026-01-02T00:00:00Z");
  // Another workspace of this same process: alive too, however its folder is named.
  const sibling = new Workspace(dir.path, "d@2026-01-03T00:00:00Z");
  const siblingWriter = await sibling.create("t", "rows", true);
  await siblingWriter.close();
  const writer = await live.create("t", "rows", true);
  await writer.write({ n: 1 });
  await writer.close();
  assert.equal(await removeDeadScratch(dir.path, true), 1, "dry run counts");
  assert.ok(await Deno.stat(dead));
  assert.equal(await removeDeadScratch(dir.path), 1);
  await assert.rejects(() => Deno.stat(dead));
  assert.ok(await Deno.stat(live.enclaveDir), "live scratch kept");
  assert.ok(await Deno.stat(otherHost), "another host's scratch kept");
  assert.ok(await Deno.stat(sibling.enclaveDir), "this process's other scratch kept");
  assert.ok(live.enclaveDir.includes(`~${Deno.pid}~`), live.enclaveDir);
  await sibling.removeEnclave();
  await live.removeEnclave();
});

Deno.test("credentials: a password in a param is refused saying why and where it goes", async () => {
  await using w = await world("pglite", "credential", { env: { CARREL_DAGS_DIR: REPO_DAGS } });
  const r = await w.run([
    "dags",
    "run",
    "circulation_sync",
    "--date",
    "2026-02-01",
    "--param",
    "source=postgres://carrel:S3cretPw9@ils.example.org/evergreen",
  ]);
  assertExit(r, 2);
  assert.match(r.stderr, /source: expected a connection name, .* this one holds a credential/);
  assert.match(r.stderr, /CARREL_CONN_<NAME>/);
  assert.doesNotMatch(r.stdout + r.stderr, /S3cretPw9/);
  assertNoStack(r.stderr);
});

Deno.test("errors: a full disk at start is named, not [object Object]", async () => {
  await using w = await world("pglite", "diskfull");
  const mnt = join(w.dir, "small");
  await Deno.mkdir(mnt);
  const mount = await new Deno.Command("mount", {
    args: ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt],
    stderr: "null",
    stdout: "null",
  }).output().catch(() => ({ success: false }));
  if (!mount.success) {
    // A tiny file system needs root (CI runs as root); nothing to check without one.
    console.log("disk-full check skipped: cannot mount a tmpfs here");
    return;
  }
  try {
    const r = await w.run(["runs", "list"], { CARREL_HOME: join(mnt, "home") });
    assertExit(r, 1);
    assert.match(
      r.stderr,
      /Cannot open the embedded store .*: File system error: no space left on device \(ENOSPC\)/,
      show(r),
    );
    assert.doesNotMatch(r.stderr, /object Object/);
  } finally {
    await new Deno.Command("umount", { args: [mnt] }).output();
  }
});
