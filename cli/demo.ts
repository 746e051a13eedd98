/**
 * `deno task demo`: runs the bundled demo pipeline end to end on the embedded store, shows a
 * privacy checkpoint passing and then blocking a leak, then generates synthetic library data and
 * runs the two reference DAGs (`catalog_sync`, `circulation_sync`) on it with PGlite as ILS and
 * warehouse (no server needed), and prints where the outputs are and what to try next.
 *
 * Each step runs in its own process, as `deno task carrel ...` and `deno task fixtures ...` would:
 * an embedded database costs hundreds of MB of WebAssembly memory that a process only gets back
 * when it exits, so one process per step keeps the demo's peak memory to that of its largest step
 * instead of the sum of all of them.
 *
 * @module
 */
import { join, relative } from "node:path";
import { carrelHome } from "../core/state/home.ts";

const CONFIG = new URL("../deno.json", import.meta.url).pathname;

/**
 * Runs `file` (relative to the repository) with `args` in a child process: its exit code, and
 * what it printed when `stdout` is `"piped"` (else it goes to this terminal).
 */
async function spawnStep(
  file: string,
  args: string[],
  stdout: "inherit" | "piped",
): Promise<{ code: number; stdout: Uint8Array }> {
  return await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-worker-options",
      "--allow-all",
      "--quiet",
      "--config",
      CONFIG,
      new URL(`../${file}`, import.meta.url).pathname,
      ...args,
    ],
    stdin: "null",
    stdout,
    stderr: "inherit",
  }).output();
}

/** Runs `file` with `args` in a child process; its exit code. */
const step = async (file: string, args: string[]) => (await spawnStep(file, args, "inherit")).code;

/** `deno task carrel <args>` in a child process. */
const main = (args: string[]) => step("cli/main.ts", args);

/**
 * A shared task's output as `deno task carrel runs show --json` prints it, read in a child
 * process: this process never opens the embedded store, so it stays small while the steps run.
 */
async function outputOf(runId: string, taskId: string): Promise<Record<string, unknown>> {
  const { code, stdout } = await spawnStep(
    "cli/main.ts",
    ["runs", "show", runId, "--json"],
    "piped",
  );
  if (code !== 0) return {};
  try {
    const run = JSON.parse(new TextDecoder().decode(stdout)) as {
      tasks?: { taskId: string; output?: unknown }[];
    };
    const output = run.tasks?.find((t) => t.taskId === taskId)?.output;
    return typeof output === "object" && output !== null ? output as Record<string, unknown> : {};
  } catch {
    return {};
  }
}

// A step of its own: create an empty embedded database (a copy of the template cluster, made by
// initdb the first time, the costliest moment of any embedded database), so the run that loads
// into it, where the state store and the ILS are open too, only opens it.
if (Deno.args[0] === "--create-embedded" && Deno.args[1] !== undefined) {
  const { openPglite } = await import("../operators/ils/sql.ts");
  await (await openPglite(Deno.args[1])).close();
  Deno.exit(0);
}

// A step of its own: make the template cluster every new embedded database is copied from (once
// per machine and PGlite build), so no later step runs initdb next to an open database.
if (Deno.args[0] === "--pglite-template") {
  const { ensurePgliteTemplate, pgliteTemplateDir } = await import(
    "../core/state/pglite_database.ts"
  );
  const template = pgliteTemplateDir();
  if (template !== undefined) await ensurePgliteTemplate(template);
  Deno.exit(0);
}

const DEMO_KEY = "carrel-demo-key-for-synthetic-data-only-never-production";

if (!Deno.env.get("PII_HMAC_KEY") && !Deno.env.get("CARREL_KEYRING")) {
  Deno.env.set("PII_HMAC_KEY", DEMO_KEY);
  console.log(
    "No PII_HMAC_KEY set: using a demo key for synthetic data (never use it for real data).\n",
  );
}

// Without a template (no cache folder), each new database runs initdb where it is created.
await step("cli/demo.ts", ["--pglite-template"]);

const date = "2026-01-05T00:00:00Z";
console.log(
  "1. A clean run: patron ids tokenized, names and e-mails stripped, checkpoint passes.\n",
);
const ok = await main(["dags", "run", "patron_privacy_demo", "--date", date]);
console.log(
  "\n2. The same pipeline with an e-mail address leaking into a note: the checkpoint blocks it.\n",
);
const blocked = await main([
  "dags",
  "run",
  "patron_privacy_demo",
  "--date",
  "2026-01-06T00:00:00Z",
  "--param",
  "leak=true",
]);
// The two reference DAGs on generated data: no setup, no PostgreSQL server (PGlite everywhere).
const home = carrelHome();
const demoDir = join(home, "demo");
const fixtures = join(demoDir, "fixtures");
const show = (path: string) => {
  const rel = relative(Deno.cwd(), path);
  return rel === "" ? "." : rel.startsWith("..") ? path : rel;
};
let made = true;
try {
  await Deno.stat(join(fixtures, "READY"));
} catch {
  made = false;
}
if (!made) {
  console.log(
    "\n3. Generating synthetic library data: 2,000 MARC records (MARC-8, fake item barcodes,\n" +
      "   a few damaged on purpose) and an Evergreen-shaped ILS with 5,000 checkouts (PGlite).\n",
  );
  const generated = await step("fixtures/main.ts", [
    "--out",
    fixtures,
    "--records",
    "2000",
    "--circulations",
    "5000",
    "--start",
    "2026-01-01T00:00:00Z",
    "--days",
    "7",
    "--defect-every",
    "101",
  ]);
  if (generated !== 0) {
    console.error("Cannot run the demo: generating the synthetic library data failed.");
    Deno.exit(1);
  }
  await Deno.writeTextFile(join(fixtures, "READY"), "");
} else console.log(`\n3. Reusing the synthetic library data in ${show(fixtures)}.`);

const catalogOut = join(demoDir, "catalog");
console.log(
  "\n4. catalog_sync: MARC to discovery JSON, sanitized MARCXML and ISO 2709, BIBFRAME 2.0.\n",
);
const catalog = await main([
  "dags",
  "run",
  "catalog_sync",
  "--date",
  date,
  "--param",
  `input=${join(fixtures, "marc")}`,
  "--param",
  `output=${catalogOut}`,
]);

const warehouse = join(demoDir, "warehouse");
if (await step("cli/demo.ts", ["--create-embedded", warehouse]) !== 0) {
  console.error("Cannot run the demo: creating the embedded warehouse database failed.");
  Deno.exit(1);
}
const circDate = "2026-01-07T02:00:00Z"; // a daily interval of its schedule (02:00 UTC)
console.log(
  "\n5. circulation_sync: checkouts from the ILS to the warehouse, patrons tokenized.\n",
);
const circulation = await main([
  "dags",
  "run",
  "circulation_sync",
  "--date",
  circDate,
  "--param",
  `source=pglite:${join(fixtures, "ils")}`,
  "--param",
  `target=pglite:${warehouse}`,
  "--param",
  "from=2026-01-01T00:00:00Z",
  "--param",
  "to=2026-01-08T00:00:00Z",
]);

const runTag = date.replace(".000Z", "Z");
const catalogSummary = catalog === 0 ? await outputOf(`catalog_sync@${runTag}`, "publish") : {};
const loadSummary = circulation === 0 ? await outputOf(`circulation_sync@${circDate}`, "load") : {};

console.log(`
Demo finished: the clean run ${ok === 0 ? "succeeded" : "FAILED"}, the leaking run was ${
  blocked === 1 ? "blocked" : "NOT blocked"
}, catalog_sync ${catalog === 0 ? "succeeded" : "FAILED"}, circulation_sync ${
  circulation === 0 ? "succeeded" : "FAILED"
}.

Outputs:
  catalog_sync (${catalogSummary.read ?? "?"} read, ${catalogSummary.written ?? "?"} written, ${
  catalogSummary.quarantined ?? "?"
} quarantined):
    ${show(join(catalogOut, "catalog.jsonl"))}     discovery JSON
    ${show(join(catalogOut, "catalog.xml"))}       sanitized MARCXML
    ${show(join(catalogOut, "catalog.mrc"))}       sanitized ISO 2709
    ${show(join(catalogOut, "catalog.bibframe.rdf"))}  BIBFRAME 2.0, RDF/XML (and .jsonld)
    ${show(join(catalogOut, "quarantine.jsonl"))}  positions and reasons, no content
  circulation_sync (${loadSummary.inserted ?? "?"} inserted, ${
  loadSummary.skipped ?? "?"
} already there):
    table circulation_events in the PGlite database ${show(warehouse)}
  Generated inputs: ${show(join(fixtures, "marc"))}, ${show(join(fixtures, "ils"))} (PGlite)

Try next:
  deno task carrel runs show patron_privacy_demo@2026-01-05T00:00:00Z
  deno task carrel runs show patron_privacy_demo@2026-01-06T00:00:00Z
  deno task carrel runs show catalog_sync@${runTag}
  deno task carrel dags show circulation_sync --format mermaid
  deno task carrel dags run patron_privacy_demo --date ${date}     (resumes: executes nothing)
  deno task fixtures --help                                         (bigger data)
  deno task carrel audit verify
See docs/library_pipelines.md for both DAGs and how to point them at your ILS.
`);
Deno.exit(ok === 0 && blocked === 1 && catalog === 0 && circulation === 0 ? 0 : 1);
