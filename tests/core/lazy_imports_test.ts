/**
 * Every sandbox Worker imports its task's DAG file, and with it `carrel` and `carrel/operators`.
 * The database drivers and the mailer (postgres.js, PGlite, nodemailer: about 4 to 11 MB of
 * memory each per isolate) are imported only where a connection, a database or a message is made,
 * so a Worker whose task opens none of them never holds them (nor does the Worker's own entry,
 * `core/sandbox/worker_main.ts`). These tests read the static import
 * graph (`deno info --json`: dynamic imports are marked) and fail when one of them is imported
 * statically again.
 *
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

/** npm packages only a task that connects, opens or sends may load. */
const LAZY = ["postgres", "@electric-sql/pglite", "nodemailer"];

interface InfoModule {
  specifier: string;
  kind?: string;
  npmPackage?: string;
  dependencies?: { code?: { specifier: string }; isDynamic?: boolean }[];
}

/** The npm packages a module imports statically, directly or through other modules. */
async function staticNpmPackages(entry: URL): Promise<Set<string>> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", fileURLToPath(entry)],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    roots: string[];
    modules: InfoModule[];
    redirects: Record<string, string>;
  };
  const bySpecifier = new Map(info.modules.map((m) => [m.specifier, m]));
  const resolve = (s: string) => info.redirects[s] ?? s;
  const packages = new Set<string>();
  const seen = new Set<string>();
  const queue = info.roots.map(resolve);
  while (queue.length > 0) {
    const specifier = queue.pop()!;
    if (seen.has(specifier)) continue;
    seen.add(specifier);
    const module = bySpecifier.get(specifier);
    if (module === undefined) continue;
    if (module.kind === "npm" && module.npmPackage) {
      // "postgres@3.4.9", "@electric-sql/pglite@0.5.17": the name before the version.
      packages.add(module.npmPackage.replace(/^(@?[^@]+)@.*$/, "$1"));
      continue;
    }
    for (const dependency of module.dependencies ?? []) {
      if (dependency.isDynamic || dependency.code === undefined) continue;
      queue.push(resolve(dependency.code.specifier));
    }
  }
  return packages;
}

for (
  const entry of [
    "../../core/mod.ts",
    "../../operators/mod.ts",
    "../../dags/circulation_sync.ts",
    "../../core/sandbox/worker_main.ts",
  ]
) {
  Deno.test(`imports: ${entry.slice(6)} loads no database driver or mailer until one is used`, async () => {
    const packages = await staticNpmPackages(new URL(entry, import.meta.url));
    // The walk sees the packages that are imported statically (zod is, by every DAG file).
    assert.ok(packages.has("zod"), [...packages].join(", "));
    for (const name of LAZY) {
      assert.ok(!packages.has(name), `${entry.slice(6)} imports ${name} statically`);
    }
  });
}
