/**
 * `catalog_sync`'s checkpoint quarantines instead of failing the night: in a generated catalog
 * (fixtures/marc.ts records), two records whose holdings note (866) and general note (500) name a
 * contact person with a phone number and an e-mail address are withheld (positions and reasons in
 * the checkpoint's value-free quarantine list, counts in the audit trail) and every other record is
 * published; when more records than the threshold (5%) carry contact details the run fails and
 * nothing is published. The contact details reach no output file, no file under `CARREL_HOME`
 * and no CLI output.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fixtureRecord } from "../../fixtures/marc.ts";
import { encodeIso2709 } from "../../operators/marc/iso2709.ts";
import type { MarcRecord } from "../../operators/marc/record.ts";
import { BACKENDS, notePostgresSkipped } from "../test_utils.ts";
import { assertExit, byTask, filesContaining, listFiles, oneJson, world } from "../e2e/helpers.ts";

notePostgresSkipped();

const DAGS = new URL("../../dags", import.meta.url).pathname;
const PHONE = "(555) 201-3344";
const EMAIL = "jane.contactperson@library.example.org";
const OTHER_PHONE = "555-201-7788";
const OTHER_EMAIL = "curator.contact@library.example.org";
const VALUES = [PHONE, EMAIL, OTHER_PHONE, OTHER_EMAIL, "contactperson", "curator.contact"];

/** Record `index` of the fixture, with contact details in an 866 or a 500 when asked. */
function record(index: number, contact: "866" | "500" | null): MarcRecord {
  const rec = fixtureRecord(index, 5);
  if (contact === "866") {
    rec.fields.push({
      tag: "866",
      ind1: " ",
      ind2: "0",
      subfields: [
        { code: "a", value: "v.1-20 (1990-2009)" },
        { code: "z", value: `Gaps: ask Jane Contactperson, ${PHONE}, ${EMAIL}` },
      ],
    });
  } else if (contact === "500") {
    rec.fields.push({
      tag: "500",
      ind1: " ",
      ind2: " ",
      subfields: [{ code: "a", value: `Donor file: call ${OTHER_PHONE} or ${OTHER_EMAIL}.` }],
    });
  }
  return rec;
}

async function writeCatalog(path: string, count: number, contacts: Map<number, "866" | "500">) {
  const parts: Uint8Array[] = [];
  for (let i = 1; i <= count; i++) parts.push(encodeIso2709(record(i, contacts.get(i) ?? null)));
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  await Deno.writeFile(path, bytes);
}

const ID = (i: number) => `crl${String(i).padStart(9, "0")}`;

for (const backend of BACKENDS) {
  Deno.test(`catalog_sync: contact details in 866 and 500 of two of 60 records are quarantined, the other 58 published; past 5% the run fails [${backend}]`, async () => {
    await using w = await world(backend, "catalogq");
    const input = join(w.dir, "in");
    await Deno.mkdir(input);
    const outputs: string[] = [];
    const run = async (date: string, file: string, out: string) => {
      const r = await w.run([
        "dags",
        "run",
        "catalog_sync",
        "--dags",
        DAGS,
        "--date",
        date,
        "--param",
        `input=${file}`,
        "--param",
        `output=${out}`,
        "--json",
      ]);
      outputs.push(r.stdout, r.stderr);
      return r;
    };

    // Two of 60 (3.3%): withheld, the rest published.
    const two = join(input, "two.mrc");
    await writeCatalog(two, 60, new Map([[7, "866"], [23, "500"]]));
    const out = join(w.dir, "out");
    const ok = await run("2026-04-01T00:00:00Z", two, out);
    assertExit(ok, 0);
    const tasks = byTask(oneJson(ok));
    assert.equal(tasks.checkpoint.state, "success");
    assert.equal(tasks.publish.state, "success");
    const published = (await Deno.readTextFile(join(out, "catalog.jsonl"))).trim().split("\n")
      .map((l) => JSON.parse(l) as { id: string });
    assert.equal(published.length, 58);
    const ids = new Set(published.map((p) => p.id));
    assert.ok(!ids.has(ID(7)) && !ids.has(ID(23)), "the two records are withheld");
    for (let i = 1; i <= 60; i++) if (i !== 7 && i !== 23) assert.ok(ids.has(ID(i)), ID(i));
    // Counts add up: read = written + quarantined, and the published quarantine list names the
    // two withheld records by stage and position only.
    const summary = tasks.publish.output as { read: number; written: number; quarantined: number };
    const outList = (await Deno.readTextFile(join(out, "quarantine.jsonl"))).trim().split("\n")
      .map((l) => JSON.parse(l) as { stage: string; position: number });
    assert.deepEqual(
      outList.filter((e) => e.stage === "checkpoint").map((e) => e.position),
      [7, 23],
    );
    assert.equal(summary.read, 60);
    assert.equal(summary.written, 58);
    assert.equal(summary.read, summary.written + summary.quarantined);

    const lists = (await listFiles(w.home)).filter((f) =>
      f.endsWith("checkpoint/quarantine.jsonl")
    );
    assert.equal(lists.length, 1);
    const entries = (await Deno.readTextFile(join(w.home, lists[0]!))).trim().split("\n")
      .map((l) => JSON.parse(l));
    assert.deepEqual(entries.map((e) => e.position), [7, 23]);
    for (const e of entries) {
      assert.deepEqual(
        e.findings.map((f: { check: string; field: string }) => `${f.check} ${f.field}`).sort(),
        [
          "detector:email marc.fields[].subfields[].value",
          "detector:phone marc.fields[].subfields[].value",
        ],
      );
    }
    // `runs show` names the checkpoint's withheld records by count.
    const shown = await w.run(["runs", "show", "catalog_sync@2026-04-01T00:00:00Z", "--json"]);
    outputs.push(shown.stdout, shown.stderr);
    assertExit(shown, 0);
    const shownTasks = (JSON.parse(shown.stdout) as {
      tasks: { taskId: string; quarantined: number }[];
    }).tasks;
    assert.equal(shownTasks.find((t) => t.taskId === "checkpoint")?.quarantined, 2);
    const audit = await w.run(["audit", "export"]);
    outputs.push(audit.stdout, audit.stderr);
    const quarantined = audit.stdout.trim().split("\n").map((l) => JSON.parse(l))
      .find((e) => e.operation === "checkpoint:quarantined");
    assert.equal(quarantined?.record_count, 2);
    assert.equal(quarantined?.detail?.published, 58);
    assert.equal(quarantined?.detail?.maxQuarantined, "5%");

    // Four of 60 (6.7%): past the threshold; the run fails and nothing is published.
    const four = join(input, "four.mrc");
    await writeCatalog(four, 60, new Map([[3, "866"], [9, "500"], [30, "866"], [41, "500"]]));
    const blockedOut = join(w.dir, "blocked");
    const blocked = await run("2026-04-02T00:00:00Z", four, blockedOut);
    assertExit(blocked, 1);
    const blockedTasks = byTask(oneJson(blocked));
    assert.equal(blockedTasks.checkpoint.state, "failed");
    assert.equal(blockedTasks.publish.state, "upstream_failed");
    assert.match(
      blockedTasks.checkpoint.error,
      /^Privacy checkpoint quarantined 4 of 60 records, more than maxQuarantined 5%: /,
    );
    await assert.rejects(Deno.stat(join(blockedOut, "catalog.jsonl")));

    // The contact details reach no output file, no file under CARREL_HOME, no CLI output.
    const everything = outputs.join("\n");
    for (const value of VALUES) {
      assert.ok(!everything.includes(value), `${value} in the CLI output`);
      assert.deepEqual(await filesContaining(w.home, value), [], `${value} under CARREL_HOME`);
      assert.deepEqual(await filesContaining(out, value), [], `${value} in the outputs`);
    }
    // Control: the details were in the input.
    assert.equal((await filesContaining(input, PHONE)).length, 2);
  });
}
