/**
 * A small world for worker tests: a store (PGlite or a fresh PostgreSQL database), a DAGs folder,
 * a home, and in-process workers run until a run ends.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadDags } from "../../core/loader.ts";
import { runWorker } from "../../core/run/worker.ts";
import { testStore, waitFor } from "../test_utils.ts";

/** A store, a DAGs folder and a home; disposed with the store. */
export async function workerWorld(backend: "pglite" | "postgres", label = "workers") {
  const store = await testStore(backend, label);
  const dags = join(store.home, "dags");
  const home = join(store.home, "home");
  await Deno.mkdir(dags, { recursive: true });
  await Deno.mkdir(home, { recursive: true });
  return {
    store,
    dags,
    home,
    write: (name: string, source: string) => Deno.writeTextFile(join(dags, `${name}.ts`), source),
    async dag(id: string) {
      const loaded = await loadDags(dags, { fresh: true });
      assert.deepEqual(loaded.errors, []);
      return loaded.dags.get(id)!;
    },
    /** Starts `n` in-process workers; `stop()` stops them and waits for them. */
    workers(n = 2, concurrency = 2): { stop: () => Promise<void> } {
      const stop = new AbortController();
      const done = Promise.all(Array.from({ length: n }, () =>
        runWorker({
          store,
          dagsDir: dags,
          home,
          concurrency,
          pollMs: 100,
          signal: stop.signal,
        })));
      return {
        stop: async () => {
          stop.abort();
          await done;
        },
      };
    },
    /** Waits until the run ends; its final state. */
    async ended(runId: string): Promise<string> {
      await waitFor(
        async () => {
          const s = (await store.getRun(runId))?.state;
          return s === "success" || s === "failed";
        },
        120_000,
        `run ${runId} to end`,
      );
      return (await store.getRun(runId))!.state;
    },
    /** Runs `n` workers until the run ends; its final state. */
    async drain(runId: string, n = 2, concurrency = 2): Promise<string> {
      const running = this.workers(n, concurrency);
      try {
        return await this.ended(runId);
      } finally {
        await running.stop();
      }
    },
    async [Symbol.asyncDispose]() {
      await store.close();
    },
  };
}
