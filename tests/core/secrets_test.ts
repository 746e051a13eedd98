import assert from "node:assert/strict";
import { assertNoSecretsInParams, paramsWithSecrets } from "../../core/secrets.ts";
import { defineDag, executeRun, resolveDag, task } from "../../core/mod.ts";
import { BACKENDS, testStore, withTmpDir } from "../test_utils.ts";

Deno.test("secrets: URLs with passwords and secret query params are found, names and plain URLs are not", () => {
  assert.deepEqual(
    paramsWithSecrets({
      source: "postgres://carrel:hunter2@db.example.org/ils",
      target: "postgres://carrel@db.example.org/dw",
      conn: "ils",
      nested: { api: "https://x.example.org/v1?api_key=abc", page: "https://example.org/?q=1" },
      count: 3,
    }),
    ["source", "nested.api"],
  );
});

Deno.test("secrets: the error names the param and never the value", () => {
  assert.throws(
    () => assertNoSecretsInParams("sync", { source: "postgres://u:hunter2@h/db" }),
    (error: Error) => error.message.includes('"source"') && !error.message.includes("hunter2"),
  );
});

for (const backend of BACKENDS) {
  Deno.test(`secrets: a run with credentials in its params is refused before anything is stored [${backend}]`, async () => {
    await using dir = await withTmpDir();
    const store = await testStore(backend, "secrets");
    try {
      const dag = resolveDag(
        defineDag({ id: "s", params: { source: "ils" }, tasks: { a: task({ run: () => 1 }) } }),
      );
      const interval = {
        start: new Date("2026-01-01T00:00:00Z"),
        end: new Date("2026-01-01T00:00:00Z"),
      };
      await assert.rejects(
        executeRun({
          dag,
          interval,
          params: { source: "postgres://u:hunter2@h/db" },
          store,
          home: dir.path,
        }),
        /holds credentials/,
      );
      assert.equal((await store.listRuns()).length, 0);
    } finally {
      await store.close();
    }
  });
}
