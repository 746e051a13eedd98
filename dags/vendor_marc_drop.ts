/**
 * vendor_marc_drop: waits for a vendor's nightly MARC drop, then runs the catalog sync on it.
 *
 * `drop` is a file sensor in `reschedule` mode: every 5 minutes it checks the drop folder for
 * `.mrc` files at least a minute old whose size holds still for 5 seconds (a file still being
 * uploaded is not taken), freeing its worker slot between checks; after 6 hours without a drop it
 * gives up softly (skipped, and the sync with it: no drop tonight is not a failure). Then the
 * pieces of `catalog_sync` run on the drop folder: `parse` (in the enclave), `gate`,
 * `checkpoint`, `publish` and `bibframe`.
 *
 *   deno task carrel dags run vendor_marc_drop --param drop=vendor/drops --param output=out/catalog
 */
import { join } from "node:path";
import { defineDag, type TaskContext, type TaskSpec } from "carrel";
import { fileSensor } from "carrel/operators";
import catalogSync from "./catalog_sync.ts";

const sync = catalogSync.config;
const { parse, ...rest } = sync.tasks as Record<string, TaskSpec>;

export default defineDag({
  id: "vendor_marc_drop",
  description: "Wait for the vendor's MARC drop, then sync it to the discovery layer",
  schedule: "0 4 * * *",
  start: "2026-01-01T00:00:00Z",
  timezone: "America/Chicago",
  catchup: false,
  params: {
    ...sync.params as Record<string, unknown>,
    /** The folder the vendor drops `.mrc` files into. */
    drop: "vendor/drops",
  },
  defaults: sync.defaults ?? {},
  // Every task runs in a Worker with only what it declares (catalog_sync's tasks declare theirs).
  sandbox: "strict",
  tasks: {
    drop: fileSensor({
      path: (ctx) => join(String(ctx.params.drop), "*.mrc"),
      mode: "reschedule",
      pokeInterval: "5m",
      timeout: "6h",
      minAge: "1m",
      stableFor: "5s",
      softFail: true,
      reads: (p) => [String(p.drop)],
      description: "Wait for .mrc files in the drop folder (skip the night if none come)",
    }),
    parse: {
      ...parse!,
      after: ["drop"],
      reads: (p) => [String(p.drop)],
      // catalog_sync's parse, reading the drop folder.
      run: (ctx: TaskContext) =>
        parse!.run({ ...ctx, params: { ...ctx.params, input: ctx.params.drop } }),
    },
    ...rest,
  },
});
