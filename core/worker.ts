/**
 * A worker: claims ready task instances (or whole enclave units) from the state store and runs
 * them, any number of workers on any number of machines, with PostgreSQL as the coordinator.
 * LISTEN/NOTIFY wakes idle workers; a slow poll is the fallback. Leases are renewed by heartbeats;
 * lost workers' task instances are taken back by any worker's reaper.
 *
 * @module
 */
import type { ResolvedDag } from "./dag.ts";
import { claimNext, executeClaim, QUEUE_CHANNEL, reapLost, renewLeases } from "./distributed.ts";
import { errorMessage } from "./errors.ts";
import { loadDags } from "./loader.ts";
import { getLogger } from "@logtape/logtape";
import { ownerId } from "./owner.ts";
import type { SqlStateStore } from "./state/sql_store.ts";

/** Options of a worker. */
export interface WorkerOptions {
  store: SqlStateStore;
  dagsDir: string;
  home: string;
  /** Claims running at once in this process. Default 1. */
  concurrency?: number;
  /** Lease length; heartbeats renew it every third. Default 30s. */
  leaseMs?: number;
  /** Fallback poll when no notification arrives. Default 2s. */
  pollMs?: number;
  /** Stops the worker: no new claims; running ones finish (or are aborted by `abort`). */
  signal?: AbortSignal;
  /** Aborts running claims (they are recorded failed and retried by policy). */
  abort?: AbortSignal;
  /** Stop when idle (nothing claimable) instead of waiting: for tests and one-shot drains. */
  exitWhenIdle?: boolean;
  /** Called after each claim is recorded. */
  onClaimDone?: (taskIds: string[]) => void;
}

const log = getLogger(["carrel", "worker"]);

/**
 * Runs a worker until its signal aborts (or, with `exitWhenIdle`, until nothing is ready).
 * Returns how many claims it executed.
 *
 * @example
 * ```ts ignore
 * const controller = new AbortController();
 * await runWorker({ store, dagsDir: "dags", home: ".carrel", concurrency: 4, signal: controller.signal });
 * ```
 */
export async function runWorker(options: WorkerOptions): Promise<number> {
  const { store } = options;
  const owner = ownerId();
  const concurrency = options.concurrency ?? 1;
  const leaseMs = options.leaseMs ?? 30_000;
  const pollMs = options.pollMs ?? 2_000;
  let dags = new Map<string, ResolvedDag>();
  const reload = async () => {
    dags = (await loadDags(options.dagsDir, { fresh: true })).dags;
  };
  await reload();
  const dagOf = (id: string) => dags.get(id);

  // A wake-up that comes while the loop is not sleeping (claiming) is kept for the next sleep.
  let woken = false;
  const asleep = () => {
    woken = true;
  };
  let wake: () => void = asleep;
  const unlisten = await store.client.listen(QUEUE_CHANNEL, () => wake()).catch(() => undefined);
  const held = new Map<string, string[]>(); // claim id -> job keys
  const heartbeat = setInterval(() => {
    renewLeases(store, owner, [...held.values()].flat(), leaseMs).catch((error) =>
      log.warn("Cannot renew leases: {error}", { error: errorMessage(error) })
    );
  }, Math.max(50, Math.floor(leaseMs / 3)));
  let lastReap = 0;
  let executed = 0;
  const active = new Map<string, Promise<void>>(); // claim id -> its execution
  log.info("Worker {owner} started with concurrency {concurrency}", { owner, concurrency });
  try {
    while (!options.signal?.aborted) {
      if (Date.now() - lastReap > Math.min(leaseMs, 5_000)) {
        lastReap = Date.now();
        await reapLost(store, dagOf).catch((error) =>
          log.warn("Cannot reap lost task instances: {error}", { error: errorMessage(error) })
        );
      }
      let claimedAny = false;
      while (active.size < concurrency && !options.signal?.aborted) {
        const claim = await claimNext(store, owner, leaseMs);
        if (!claim) break;
        claimedAny = true;
        let dag = dagOf(claim.run.dagId);
        if (!dag) {
          await reload();
          dag = dagOf(claim.run.dagId);
        }
        const id = crypto.randomUUID();
        held.set(id, claim.tasks.map((t) => t.jobKey));
        const work = (async () => {
          await null; // runs after `active` holds it
          try {
            if (!dag) throw new Error(`DAG "${claim.run.dagId}" is not in ${options.dagsDir}`);
            await executeClaim(store, dag, claim, {
              owner,
              home: options.home,
              ...(options.abort ? { signal: options.abort } : {}),
            });
          } catch (error) {
            log.error("Cannot execute claim of {tasks}: {error}", {
              tasks: claim.tasks.map((t) => t.taskId).join(","),
              error: errorMessage(error),
            });
            // Leave the instances running: the lease expires and the reaper retries them.
          } finally {
            held.delete(id);
            // Before waking the loop, so that it sees the free slot.
            active.delete(id);
            executed++;
            options.onClaimDone?.(claim.tasks.map((t) => t.taskId));
            wake();
          }
        })();
        active.set(id, work);
      }
      if (!claimedAny && active.size === 0 && options.exitWhenIdle) break;
      await new Promise<void>((resolve) => {
        if (woken) {
          woken = false;
          return resolve();
        }
        const timer = setTimeout(done, claimedAny && active.size < concurrency ? 0 : pollMs);
        function done() {
          clearTimeout(timer);
          options.signal?.removeEventListener("abort", done);
          wake = asleep;
          resolve();
        }
        wake = done;
        options.signal?.addEventListener("abort", done, { once: true });
      });
    }
    await Promise.all(active.values());
  } finally {
    clearInterval(heartbeat);
    await unlisten?.().catch(() => {});
    log.info("Worker {owner} stopped after {executed} claims", { owner, executed });
  }
  return executed;
}
