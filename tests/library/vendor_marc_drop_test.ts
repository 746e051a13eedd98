/**
 * `dags/vendor_marc_drop.ts` through the CLI: the file sensor finds a vendor's drop (a generated
 * MARC file old enough and of stable size) and the catalog sync pieces publish it; the sensor's
 * check is in the audit trail with counts only.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { generateIso2709 } from "../../fixtures/marc.ts";
import { cli, seedHome, withTmpDir } from "../test_utils.ts";

const DAGS = new URL("../../dags", import.meta.url).pathname;
const KEY = "library-test-key-0123456789abcdef0123456789abcdef";

Deno.test("vendor_marc_drop: waits for the drop, then syncs it", async () => {
  await using tmp = await withTmpDir("carrel-vendor-");
  const home = join(tmp.path, "home");
  await seedHome(home);
  const drop = join(tmp.path, "drops");
  await Deno.mkdir(drop);
  // Not a MARC file: ignored by the sensor's pattern.
  await Deno.writeTextFile(join(drop, "README.txt"), "uploads land here");
  const file = join(drop, "vendor_20260201.mrc");
  const out = await Deno.open(file, { write: true, create: true });
  for await (const chunk of generateIso2709({ count: 25, seed: 7 })) await out.write(chunk);
  out.close();
  // Uploaded two minutes ago (the sensor takes files at least a minute old).
  const past = new Date(Date.now() - 120_000);
  await Deno.utime(file, past, past);
  const output = join(tmp.path, "out");
  const run = await cli([
    "dags",
    "run",
    "vendor_marc_drop",
    "--date",
    "2026-02-01T10:00:00Z",
    "--param",
    `drop=${drop}`,
    "--param",
    `output=${output}`,
    "--json",
  ], {
    cwd: tmp.path,
    env: { CARREL_HOME: home, CARREL_DAGS_DIR: DAGS, PII_HMAC_KEY: KEY, CARREL_LOG_FORMAT: "json" },
  });
  assert.equal(run.code, 0, run.stderr);
  const result = JSON.parse(run.stdout);
  assert.equal(result.state, "success");
  const states = Object.fromEntries(
    result.tasks.map((t: { taskId: string; state: string }) => [t.taskId, t.state]),
  );
  assert.deepEqual(states, {
    drop: "success",
    parse: "success",
    gate: "success",
    checkpoint: "success",
    publish: "success",
    bibframe: "success",
  });
  const lines = (await Deno.readTextFile(join(output, "catalog.jsonl"))).trim().split("\n");
  assert.equal(lines.length, 25);
});
