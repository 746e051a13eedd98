import assert from "node:assert/strict";
import { join } from "node:path";
import {
  ensurePgliteTemplate,
  holdsDatabase,
  openPgliteDatabase,
  PGLITE_SHARED_BUFFERS,
} from "../../core/state/pglite_database.ts";

Deno.test("a new embedded database is a copy of the template, made once, with a small buffer cache", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "carrel-pglite-database-" });
  try {
    const template = join(tmp, "cache", "template");
    const first = join(tmp, "one", "data");
    const db = await openPgliteDatabase(first, { templateDir: template });
    assert.ok(await holdsDatabase(template), "the template is made on the first creation");
    assert.ok(await holdsDatabase(first));
    const shown = await db.query<{ shared_buffers: string }>("SHOW shared_buffers");
    assert.equal(shown.rows[0]?.shared_buffers, PGLITE_SHARED_BUFFERS);
    await db.exec("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)");
    await db.close();

    // The template stays empty: a second database made from it has no table t.
    const marker = join(template, "carrel-marker");
    await Deno.writeTextFile(marker, "");
    const second = join(tmp, "two");
    const other = await openPgliteDatabase(second, { templateDir: template });
    const tables = await other.query("SELECT 1 FROM pg_tables WHERE tablename = 't'");
    assert.equal(tables.rows.length, 0);
    await other.close();
    // Copied from the existing template (not a second initdb into the template folder).
    await Deno.stat(join(second, "carrel-marker"));
    const mode = (await Deno.stat(join(second, "PG_VERSION"))).mode! & 0o777;
    assert.equal(mode & 0o077, 0, "copied files are private");

    // Data persists: reopening the first folder finds its rows.
    const again = await openPgliteDatabase(first, { templateDir: template });
    const count = await again.query<{ n: number }>("SELECT count(*)::int AS n FROM t");
    assert.equal(count.rows[0]?.n, 2);
    await again.close();
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("an embedded database opens without a template folder when none can be made", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "carrel-pglite-database-" });
  try {
    // A file where the template's parent folder should be: the template cannot be made.
    await Deno.writeTextFile(join(tmp, "blocked"), "");
    const data = join(tmp, "data");
    const db = await openPgliteDatabase(data, { templateDir: join(tmp, "blocked", "template") });
    await db.exec("CREATE TABLE t (id int)");
    await db.close();
    assert.ok(await holdsDatabase(data));
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("a new template removes the templates of other PGlite builds and stale staging folders", async () => {
  const cache = await Deno.makeTempDir({ prefix: "carrel-pglite-templates-" });
  try {
    const old = join(cache, "pglite-template-0123456789abcdef");
    await Deno.mkdir(old);
    await Deno.writeTextFile(join(old, "PG_VERSION"), "17\n");
    const stale = join(cache, ".staging-dead");
    const fresh = join(cache, ".staging-busy");
    const unrelated = join(cache, "something-else");
    for (const dir of [stale, fresh, unrelated]) await Deno.mkdir(dir);
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000);
    await Deno.utime(stale, twoHoursAgo, twoHoursAgo);

    const template = join(cache, "pglite-template-fedcba9876543210");
    await ensurePgliteTemplate(template);
    assert.ok(await holdsDatabase(template));
    const left = [];
    for await (const e of Deno.readDir(cache)) left.push(e.name);
    assert.deepEqual(left.sort(), [
      ".staging-busy",
      "pglite-template-fedcba9876543210",
      "something-else",
    ]);

    // Present already: nothing is made, nothing removed.
    await Deno.mkdir(old);
    await ensurePgliteTemplate(template);
    await Deno.stat(old);
  } finally {
    await Deno.remove(cache, { recursive: true });
  }
});
