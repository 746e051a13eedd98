/**
 * The sentinel test: a DAG whose enclave data holds unique sentinel strings runs to success, and
 * again to a checkpoint failure; afterwards no sentinel appears under CARREL_HOME (PGlite's data
 * files included), in a pg_dump of the PostgreSQL state database, in captured stdout/stderr, in
 * log files or in `audit export`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  BACKENDS,
  cli,
  CORE_MOD,
  freshDatabase,
  notePostgresSkipped,
  OPERATORS_MOD,
  seedHome,
  withTmpDir,
} from "../test_utils.ts";

const TAG = crypto.randomUUID().slice(0, 8);
const SENTINELS = [
  `SENTINELPID${TAG}`, // patron id, tokenized
  `sentinel.${TAG}@example.org`, // e-mail, stripped by the gate
  `Sentinelname${TAG}`, // family name, stripped by the gate
  `SENTINELCARD${TAG}`, // card barcode, stripped by the gate
];

const dagSource = `
import { z } from "zod";
import { defineDag, task } from "${CORE_MOD}";
import { privacyCheckpoint, schemaGate, tokenize } from "${OPERATORS_MOD}";
export default defineDag({
  id: "sentinel",
  schedule: null,
  params: { leak: false },
  tasks: {
    extract: task({
      zone: "enclave",
      outputTags: ["pii:raw"],
      run: async function* (ctx) {
        for (let i = 0; i < 300; i++) {
          yield {
            patron_id: "${SENTINELS[0]}" + i,
            email: "${SENTINELS[1]}",
            family_name: "${SENTINELS[2]}",
            cardnumber: "${SENTINELS[3]}",
            item_id: "i" + i,
            ...(ctx.params.leak && i === 42 ? { note: "mail ${SENTINELS[1]}" } : {}),
          };
        }
      },
    }),
    tokens: tokenize({ after: ["extract"], fields: ["patron_id"], rename: { patron_id: "patron_token" } }),
    gate: schemaGate({
      after: ["tokens"],
      schema: z.object({ patron_token: z.string(), item_id: z.string(), note: z.string().optional() }),
    }),
    checkpoint: privacyCheckpoint({ after: ["gate"], tokenized: ["patron_token"] }),
    load: task({ after: ["checkpoint"], run: async (ctx) => {
      const out = await ctx.dataset("loaded");
      const n = await out.writeAll(ctx.inputs.checkpoint as AsyncIterable<unknown>);
      await out.close();
      ctx.log.info("Loaded {n}", { n });
      return { n };
    } }),
  },
});
`;

const encoder = new TextEncoder();
const needles = SENTINELS.map((s) => encoder.encode(s));

function containsBytes(haystack: Uint8Array, needle: Uint8Array): boolean {
  const first = needle[0]!;
  outer: for (
    let i = haystack.indexOf(first);
    i !== -1 && i <= haystack.length - needle.length;
    i = haystack.indexOf(first, i + 1)
  ) {
    for (let j = 1; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = join(dir, entry.name);
    if (entry.isDirectory) out.push(...await filesUnder(path));
    else if (entry.isFile) out.push(path);
  }
  return out;
}

function assertClean(what: string, bytes: Uint8Array): void {
  for (let k = 0; k < needles.length; k++) {
    assert.ok(!containsBytes(bytes, needles[k]!), `sentinel ${k} found in ${what}`);
  }
}

for (const backend of BACKENDS) {
  Deno.test(`privacy: no sentinel anywhere after a successful and a blocked run [${backend}]`, {
    sanitizeResources: false,
    sanitizeOps: false,
  }, async () => {
    notePostgresSkipped();
    await using dir = await withTmpDir();
    const home = join(dir.path, "home");
    const dags = join(dir.path, "dags");
    await Deno.mkdir(dags);
    await Deno.writeTextFile(join(dags, "sentinel.ts"), dagSource);
    await using db = backend === "postgres" ? await freshDatabase("sentinel") : undefined;
    if (backend === "pglite") await seedHome(home);
    const env: Record<string, string> = {
      CARREL_HOME: home,
      CARREL_DAGS_DIR: dags,
      PII_HMAC_KEY: "sentinel-test-key-with-at-least-32-bytes!",
      CARREL_LOG_CONSOLE: "1",
      CARREL_LOG_LEVEL: "debug",
      ...(db ? { CARREL_DATABASE_URL: db.url } : {}),
    };
    const outputs: string[] = [];
    const ok = await cli(["dags", "run", "sentinel", "--date", "2026-02-01"], {
      cwd: dir.path,
      env,
    });
    outputs.push(ok.stdout, ok.stderr);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    const blocked = await cli([
      "dags",
      "run",
      "sentinel",
      "--date",
      "2026-02-02",
      "--param",
      "leak=true",
      "--json",
    ], {
      cwd: dir.path,
      env,
    });
    outputs.push(blocked.stdout, blocked.stderr);
    assert.equal(blocked.code, 1);
    const result = JSON.parse(blocked.stdout);
    const states = Object.fromEntries(
      result.tasks.map((t: { taskId: string; state: string }) => [t.taskId, t.state]),
    );
    assert.equal(states.checkpoint, "failed");
    assert.equal(states.load, "upstream_failed");
    const cp = result.tasks.find((t: { taskId: string }) => t.taskId === "checkpoint");
    assert.match(cp.error, /detector:email: note \(1\)/);

    // A resume recomputes the enclave tasks and must not leak either.
    const resumed = await cli(["runs", "resume", "sentinel@2026-02-02T00:00:00Z"], {
      cwd: dir.path,
      env,
    });
    outputs.push(resumed.stdout, resumed.stderr);
    const shows = await cli(["runs", "show", "sentinel@2026-02-01T00:00:00Z", "--json"], {
      cwd: dir.path,
      env,
    });
    outputs.push(shows.stdout, shows.stderr);
    const exported = await cli(["audit", "export"], { cwd: dir.path, env });
    outputs.push(exported.stdout, exported.stderr);
    assert.ok(exported.stdout.includes('"operation":"checkpoint:verdict"'));
    assert.ok(exported.stdout.includes('"operation":"tokenize:count"'));

    assertClean("CLI output", encoder.encode(outputs.join("\n")));
    const files = await filesUnder(home);
    assert.ok(files.some((f) => f.includes("/logs/")), "a log file was written");
    for (const file of files) assertClean(file, await Deno.readFile(file));
    if (db) {
      const dump = await new Deno.Command("/usr/lib/postgresql/15/bin/pg_dump", {
        args: ["--data-only", db.url],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(dump.code, 0, new TextDecoder().decode(dump.stderr));
      assert.ok(dump.stdout.length > 1000, "the dump holds the state");
      assertClean("pg_dump", dump.stdout);
    }
    // Control: the sentinels really were in the data (the test can fail).
    assert.ok(dagSource.includes(SENTINELS[1]!));
  });
}
