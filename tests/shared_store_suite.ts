/**
 * A suite of tests sharing one store per backend (made on first use, closed by the test marked
 * last), named `<prefix>: <name> [<backend>]`.
 *
 * @module
 */
import { testStore } from "./test_utils.ts";

/** The store a suite's tests share. */
export type SuiteStore = Awaited<ReturnType<typeof testStore>>;

/**
 * Declares the tests of a suite on one backend.
 *
 * @example
 * ```ts ignore
 * for (const backend of BACKENDS) {
 *   const test = sharedStoreSuite("mapping (local)", "mapping", backend);
 *   test("one item", async (store) => { ... });
 * }
 * ```
 */
export function sharedStoreSuite(
  prefix: string,
  label: string,
  backend: "pglite" | "postgres",
): (name: string, fn: (store: SuiteStore) => Promise<void>, last?: boolean) => void {
  let shared: Promise<SuiteStore> | undefined;
  return (name, fn, last = false) =>
    Deno.test({
      name: `${prefix}: ${name} [${backend}]`,
      sanitizeResources: false,
      sanitizeOps: false,
      fn: async () => {
        const store = await (shared ??= testStore(backend, label));
        try {
          await fn(store);
        } finally {
          if (last) await store.close();
        }
      },
    });
}
