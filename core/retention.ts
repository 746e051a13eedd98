/**
 * Retention (NIST SP 800-53 SI-12): deletes run records, task outputs, datasets, enclave scratch,
 * temporary folders and log files older than a cutoff; audit entries have their own cutoff and
 * leave an anchor entry so the chain still verifies.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { removeDeadScratch, subfolders, Workspace } from "./dataset.ts";
import type { StateStore } from "./state/store.ts";

/** What a purge removed, or would remove with `dryRun`. */
export interface PurgeReport {
  dryRun: boolean;
  olderThan: string;
  runs: number;
  taskInstances: number;
  files: { workspaces: number; enclave: number; tmp: number; logs: number };
  auditEntries: number | null;
}

async function entriesOlderThan(dir: string, cutoff: Date): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      const path = join(dir, entry.name);
      const info = await Deno.stat(path).catch(() => undefined);
      if (info?.mtime && info.mtime < cutoff) out.push(path);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return out;
}

async function remove(paths: string[], dryRun: boolean): Promise<number> {
  if (!dryRun) { for (const p of paths) await Deno.remove(p, { recursive: true }).catch(() => {}); }
  return paths.length;
}

/**
 * Purges what is older than `olderThan` (and audit entries older than `auditOlderThan`).
 *
 * @example
 * ```ts ignore
 * const report = await purge(store, ".carrel", { olderThan: new Date(Date.now() - 90 * 864e5), dryRun: true });
 * ```
 */
export async function purge(
  store: StateStore,
  home: string,
  options: { olderThan: Date; auditOlderThan?: Date; dryRun: boolean },
): Promise<PurgeReport> {
  const correlationId = `purge@${new Date().toISOString()}`;
  const result = await store.purgeRuns(options.olderThan, {
    dryRun: options.dryRun,
    audit: {
      correlationId,
      operation: "purge:runs",
      status: "success",
      detail: { olderThan: options.olderThan.toISOString() },
    },
  });
  let workspaces = 0;
  // What was counted already, so a dry run does not count a purged run's folders twice.
  const counted = new Set<string>();
  for (const runId of result.runs) {
    const ws = new Workspace(home, runId);
    for (const dir of [ws.runDir, dirname(ws.enclaveDir)]) {
      if (await Deno.stat(dir).then(() => true, () => false)) {
        counted.add(dir);
        workspaces += await remove([dir], options.dryRun);
      }
    }
  }
  // Folders of runs that are queued or running are never swept, however old they look: a run's
  // folder mtime does not change while it writes into subfolders.
  const live = new Set<string>();
  for (const run of await store.listRuns({ states: ["queued", "running"], limit: 100_000 })) {
    const ws = new Workspace(home, run.runId);
    live.add(ws.runDir);
    live.add(dirname(ws.enclaveDir));
  }
  const notCounted = (paths: string[]) => paths.filter((p) => !counted.has(p) && !live.has(p));
  // Workspaces of runs whose records are gone, and scratch left by killed processes.
  for (const dagDir of await subfolders(join(home, "runs"))) {
    workspaces += await remove(
      notCounted(await entriesOlderThan(dagDir, options.olderThan)),
      options.dryRun,
    );
  }
  // Scratch of processes that are gone, whatever its age: its key died with the process.
  let enclave = await removeDeadScratch(home, options.dryRun);
  for (const dagDir of await subfolders(join(home, "enclave"))) {
    enclave += await remove(
      notCounted(await entriesOlderThan(dagDir, options.olderThan)),
      options.dryRun,
    );
  }
  const tmp = await remove(
    await entriesOlderThan(join(home, "tmp"), options.olderThan),
    options.dryRun,
  );
  const logs = await remove(
    await entriesOlderThan(join(home, "logs"), options.olderThan),
    options.dryRun,
  );
  let auditEntries: number | null = null;
  if (options.auditOlderThan) {
    auditEntries = await store.purgeAudit(options.auditOlderThan, {
      dryRun: options.dryRun,
      correlationId,
    });
  }
  if (!options.dryRun) {
    await store.appendAudit([{
      correlationId,
      operation: "purge:files",
      status: "success",
      recordCount: workspaces + enclave + tmp + logs,
      detail: { workspaces, enclave, tmp, logs },
    }]);
  }
  return {
    dryRun: options.dryRun,
    olderThan: options.olderThan.toISOString(),
    runs: result.runs.length,
    taskInstances: result.taskInstances,
    files: { workspaces, enclave, tmp, logs },
    auditEntries,
  };
}
