import assert from "node:assert/strict";
import {
  assertNoSecretsInParams,
  hasCredentials,
  isCredentialFree,
  maskUrl,
  paramsWithSecrets,
} from "../../../core/privacy/secrets.ts";
import { defineDag, executeRun, resolveDag, task } from "../../../core/mod.ts";
import { BACKENDS, testStore, withTmpDir } from "../../test_utils.ts";

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

const SENTINEL = "Sentinel-Pw-9f4e1c";

Deno.test("maskUrl hides passwords, including awkward ones", () => {
  assert.equal(maskUrl("postgres://carrel@db/ils"), "postgres://carrel@db/ils");
  assert.equal(maskUrl("postgres://db/ils"), "postgres://db/ils");
  assert.equal(maskUrl(`postgres://carrel:${SENTINEL}@db/ils`), "postgres://carrel:***@db/ils");
  for (
    const awkward of [
      `postgres://carrel:p@ss/w:rd${SENTINEL}@db:5432/ils`,
      `postgres://carrel:${SENTINEL}?#@db/ils?sslmode=require`,
      `postgres://carrel@db/ils?password=${SENTINEL}&sslmode=require`,
      `carrel:${SENTINEL}@db/ils`,
    ]
  ) {
    const masked = maskUrl(awkward);
    assert.ok(!masked.includes(SENTINEL), masked);
    assert.ok(masked.includes("***"), masked);
  }
});

Deno.test("secrets: detection and masking agree, whatever the caller", () => {
  const cases: [string, boolean][] = [
    ["ils", false],
    ["pglite:/srv/ils", false],
    ["postgres://carrel@db/ils", false],
    ["postgres://carrel@db/ils?sslmode=verify-full&application_name=x", false],
    ["postgres://carrel:pw@db/ils", true],
    ["postgres://carrel@db/ils?token=abc123", true],
    ["postgres://carrel@db/ils?sslmode=require&Password=abc123", true],
    ["mysql://koha@db/koha?api_key=abc123", true],
    ["carrel:abc123@db/ils", true],
  ];
  for (const [value, secret] of cases) {
    assert.equal(hasCredentials(value), secret, value);
    assert.equal(isCredentialFree(value), !secret, value);
    assert.equal(paramsWithSecrets({ p: value }).length, secret ? 1 : 0, value);
    const masked = maskUrl(value);
    assert.ok(!masked.includes("abc123") && !masked.includes(":pw@"), masked);
    assert.equal(masked === value, !secret, `${value} -> ${masked}`);
  }
  assert.deepEqual(paramsWithSecrets({ list: ["ils", "postgres://u:pw@h/db"] }), ["list[1]"]);
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
        /holds a credential/,
      );
      assert.equal((await store.listRuns()).length, 0);
    } finally {
      await store.close();
    }
  });
}
