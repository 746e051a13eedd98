/**
 * The embedded store shared by several clients: one owns PGlite and serves the others; a
 * transaction excludes every other statement; the owner hands over in order; a dead owner is
 * replaced; files are private.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  EmbeddedClient,
  embeddedPaths,
  EmbeddedStoreError,
} from "../../core/state/embedded_client.ts";
import { openPgliteStore } from "../../core/state/pglite.ts";
import { pgliteTemplate, withTmpDir } from "../test_utils.ts";
import { looseModes } from "./modes.ts";

async function copyTemplate(to: string): Promise<void> {
  const from = await pgliteTemplate();
  const copy = async (a: string, b: string) => {
    await Deno.mkdir(b, { recursive: true });
    for await (const e of Deno.readDir(a)) {
      if (e.isDirectory) await copy(join(a, e.name), join(b, e.name));
      else await Deno.copyFile(join(a, e.name), join(b, e.name));
    }
  };
  await copy(from, to);
}

async function twoClients(dir: string) {
  const data = join(dir, "state");
  await copyTemplate(data);
  const owner = await EmbeddedClient.open(data);
  const guest = await EmbeddedClient.open(data);
  await owner.exec("CREATE TABLE IF NOT EXISTS t (n int PRIMARY KEY)");
  return { data, owner, guest };
}

/** True once `p` has settled, checked without waiting. */
function settled(p: Promise<unknown>): () => boolean {
  let done = false;
  p.then(() => (done = true), () => (done = true));
  return () => done;
}

Deno.test("the first client owns the store, the second is its guest, both see one database", async () => {
  await using dir = await withTmpDir();
  const { owner, guest } = await twoClients(dir.path);
  try {
    assert.equal(owner.role, "owner");
    assert.equal(guest.role, "guest");
    await guest.query("INSERT INTO t VALUES ($1)", [1]);
    const rows = await owner.query<{ n: number; at: Date }>("SELECT n, now() AS at FROM t");
    assert.deepEqual(rows.map((r) => r.n), [1]);
    const [g] = await guest.query<{ at: Date; j: unknown; b: bigint }>(
      `SELECT now() AS at, '{"a":[1,"x"]}'::jsonb AS j, 9007199254740993::int8 AS b`,
    );
    // Types arrive as an in-process PGlite caller gets them.
    assert.ok(g!.at instanceof Date);
    assert.deepEqual(g!.j, { a: [1, "x"] });
    const [o] = await owner.query<{ b: unknown }>("SELECT 9007199254740993::int8 AS b");
    assert.deepEqual(g!.b, o!.b);
    await assert.rejects(
      () => guest.query("INSERT INTO t VALUES (1)"),
      (e: Error & { code?: string }) => e.code === "23505" && /duplicate key/.test(e.message),
    );
  } finally {
    await guest.close();
    await owner.close();
  }
});

Deno.test("a guest's transaction excludes the owner's statements until it commits", async () => {
  await using dir = await withTmpDir();
  const { owner, guest } = await twoClients(dir.path);
  try {
    let ownerRead: Promise<{ n: number }[]> | undefined;
    let readDone: (() => boolean) | undefined;
    await guest.transaction(async (tx) => {
      await tx.query("INSERT INTO t VALUES (1)");
      ownerRead = owner.query<{ n: number }>("SELECT n FROM t");
      readDone = settled(ownerRead);
      // More round trips inside the transaction: the owner's read still waits.
      await tx.query("INSERT INTO t VALUES (2)");
      await tx.query("SELECT pg_sleep(0)");
      assert.equal(readDone(), false);
    });
    assert.deepEqual((await ownerRead!).map((r) => r.n).sort(), [1, 2]);
    await assert.rejects(() =>
      guest.transaction(async (tx) => {
        await tx.query("INSERT INTO t VALUES (3)");
        throw new Error("abandon");
      }), /abandon/);
    assert.deepEqual(
      (await guest.query<{ n: number }>("SELECT n FROM t ORDER BY n")).map((r) => r.n),
      [1, 2],
    );
  } finally {
    await guest.close();
    await owner.close();
  }
});

Deno.test("the owner leaves in order: open transactions finish, the guest becomes the owner", async () => {
  await using dir = await withTmpDir();
  const { owner, guest } = await twoClients(dir.path);
  try {
    let closing: Promise<void> | undefined;
    await guest.transaction(async (tx) => {
      await tx.query("INSERT INTO t VALUES (1)");
      closing = owner.close();
      await tx.query("INSERT INTO t VALUES (2)");
    });
    // Statements sent while the owner leaves are sent again to the next owner, never lost.
    const burst = await Promise.all(
      [3, 4, 5, 6].map((n) => guest.query("INSERT INTO t VALUES ($1) RETURNING n", [n])),
    );
    await closing;
    assert.equal(burst.length, 4);
    assert.equal(guest.role, "owner");
    assert.deepEqual(
      (await guest.query<{ n: number }>("SELECT n FROM t ORDER BY n")).map((r) => r.n),
      [1, 2, 3, 4, 5, 6],
    );
  } finally {
    await guest.close();
  }
});

Deno.test("notifications reach guests, also after the owner changed", async () => {
  await using dir = await withTmpDir();
  const { owner, guest } = await twoClients(dir.path);
  const third = await EmbeddedClient.open(join(dir.path, "state"));
  try {
    const got: string[] = [];
    let wake: (() => void) | undefined;
    const stop = await guest.listen("carrel_test", (p) => {
      got.push(p);
      wake?.();
    });
    const next = () => new Promise<void>((r) => (wake = r));
    let arrived = next();
    await owner.query("SELECT pg_notify('carrel_test', 'one')");
    await arrived;
    await owner.close();
    // A statement of the guest's own waits for it to have followed the owner change.
    await guest.query("SELECT 1");
    arrived = next();
    await third.query("SELECT pg_notify('carrel_test', 'two')");
    await arrived;
    assert.deepEqual(got, ["one", "two"]);
    await stop();
  } finally {
    await guest.close();
    await third.close();
  }
});

Deno.test("a killed owner is replaced and nothing committed is lost", async () => {
  await using dir = await withTmpDir();
  const data = join(dir.path, "state");
  await copyTemplate(data);
  const script = join(dir.path, "owner.ts");
  await Deno.writeTextFile(
    script,
    `import { EmbeddedClient } from ${
      JSON.stringify(new URL("../../core/state/embedded_client.ts", import.meta.url).href)
    };
const c = await EmbeddedClient.open(${JSON.stringify(data)});
await c.exec("CREATE TABLE t (n int PRIMARY KEY)");
console.log("ready");
await new Promise(() => {});
`,
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--quiet",
      "--config",
      new URL("../../deno.json", import.meta.url).pathname,
      script,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("ready")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  reader.releaseLock();
  const guest = await EmbeddedClient.open(data);
  try {
    assert.equal(guest.role, "guest");
    assert.equal(guest.ownerPid, child.pid);
    await guest.query("INSERT INTO t VALUES (1)");
    child.kill("SIGKILL");
    await child.status;
    await child.stdout.cancel().catch(() => {});
    // The next statement finds the owner gone, takes the lock and opens PGlite here.
    assert.deepEqual((await guest.query<{ n: number }>("SELECT n FROM t")).map((r) => r.n), [1]);
    assert.equal(guest.role, "owner");
  } finally {
    await guest.close();
  }
});

Deno.test("a lock holder that does not serve is named after the wait", async () => {
  await using dir = await withTmpDir();
  const data = join(dir.path, "state");
  const paths = embeddedPaths(data);
  using lock = await Deno.open(paths.lockFile, { write: true, create: true });
  await lock.lock(true);
  await lock.write(new TextEncoder().encode("424242\n"));
  await assert.rejects(
    () => EmbeddedClient.open(data, { waitMs: 300 }),
    (e: Error) =>
      e instanceof EmbeddedStoreError && /process 424242 holds/.test(e.message) &&
      /CARREL_STORE_WAIT/.test(e.message),
  );
  await lock.unlock();
});

Deno.test("the lock, the socket and PGlite's files are private", async () => {
  await using dir = await withTmpDir();
  await Deno.chmod(dir.path, 0o755);
  const data = join(dir.path, "state");
  await copyTemplate(data);
  const store = await openPgliteStore(data);
  await store.migrate();
  const paths = embeddedPaths(data);
  assert.equal((await Deno.stat(paths.lockFile)).mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(paths.socket)).mode! & 0o777, 0o600);
  await store.close();
  assert.deepEqual((await looseModes(data)).loose, []);
});
