/**
 * Scheduler leadership on the embedded store: an exclusive lock on `scheduler.lock` beside the
 * store's data folder. PostgreSQL uses a session advisory lock instead; both give the same
 * {@link Leadership}: one scheduler at a time schedules, a crashed one's lock goes with its
 * process (the kernel drops a dead process's file locks).
 *
 * @module
 */
import { dirname, join } from "node:path";
import type { Leadership } from "./store.ts";

/**
 * Leadership held through an exclusive, non-blocking lock on `<folder of dataDir>/scheduler.lock`.
 *
 * @example
 * ```ts
 * import { fileLeadership } from "./embedded_leadership.ts";
 * const dir = await Deno.makeTempDir();
 * const first = fileLeadership(`${dir}/state`);
 * const second = fileLeadership(`${dir}/state`);
 * console.log(await first.held(), await second.held()); // true false
 * await first.release();
 * console.log(await second.held()); // true
 * await second.release();
 * ```
 */
export function fileLeadership(dataDir: string): Leadership {
  const path = join(dirname(dataDir), "scheduler.lock");
  let file: Deno.FsFile | undefined;
  let holding = false;
  return {
    held: async () => {
      if (holding) return true;
      file ??= await Deno.open(path, { read: true, write: true, create: true, mode: 0o600 });
      holding = await file.tryLock(true);
      return holding;
    },
    release: async () => {
      if (file) {
        if (holding) await file.unlock().catch(() => {});
        file.close();
      }
      file = undefined;
      holding = false;
    },
  };
}
