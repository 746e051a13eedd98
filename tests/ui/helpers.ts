/**
 * Shared by the console tests: a world whose runs were made by the CLI (so their log lines went
 * through the store sink as in production), with sentinel patron values in the enclave, then
 * the console opened over the same store in this process.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { PgliteClient } from "../../core/state/sql_client.ts";
import { SqlStateStore } from "../../core/state/sql_store.ts";
import { openPostgresStore } from "../../core/state/postgres.ts";
import { OPERATORS_MOD } from "../test_utils.ts";
import { assertExit, type Backend, oneJson, type World, world, writeDag } from "../e2e/helpers.ts";
import type { AuthConfig } from "../../ui/auth.ts";
import { createConsole } from "../../ui/server.ts";

export const KEY = "console-test-key-0123456789abcdef0123";
const TAG = crypto.randomUUID().slice(0, 8);

/** Raw patron values that must never reach a page, an API response or a metric. */
export const SENTINELS = [
  `SENTINELPID${TAG}`,
  `sentinel.${TAG}@example.org`,
  `Sentinelname${TAG}`,
  `SENTINELCARD${TAG}`,
];

/** Enclave extract with sentinels, tokenize, a quarantining gate, a checkpoint, a load. */
const SHELF = `
import { z } from "zod";
import { privacyCheckpoint, schemaGate, tokenize } from ${JSON.stringify(OPERATORS_MOD)};
export default defineDag({
  id: "shelf",
  description: "Checkouts to the warehouse",
  schedule: "0 2 * * *",
  start: "2026-01-01T00:00:00Z",
  params: { branch: "main" },
  tasks: {
    extract: task({
      zone: "enclave",
      outputTags: ["pii:raw"],
      run: async function* (ctx) {
        ctx.log.info("Extracting for {branch}", { branch: ctx.params.branch });
        ctx.log.info("patron {patron_id} mail {email}", { patron_id: "${SENTINELS[0]}", email: "${
  SENTINELS[1]
}" });
        for (let i = 0; i < 30; i++) {
          yield {
            patron_id: "${SENTINELS[0]}" + i,
            email: "${SENTINELS[1]}",
            family_name: "${SENTINELS[2]}",
            cardnumber: "${SENTINELS[3]}",
            item_id: i === 7 ? 7 : "i" + i,
          };
        }
      },
    }),
    tokens: tokenize({ after: ["extract"], fields: ["patron_id"], rename: { patron_id: "patron_token" } }),
    gate: schemaGate({
      after: ["tokens"],
      schema: z.object({ patron_token: z.string(), item_id: z.string() }),
      onInvalid: "quarantine",
    }),
    checkpoint: privacyCheckpoint({ after: ["gate"], tokenized: ["patron_token"] }),
    load: task({ after: ["checkpoint"], run: async (ctx) => {
      const out = await ctx.dataset("loaded");
      const n = await out.writeAll(ctx.inputs.checkpoint as AsyncIterable<unknown>);
      ctx.log.info("Loaded {n} records", { n });
      return await out.close();
    } }),
  },
});
`;

/** Fails every attempt (after one retry). */
const FLAKY = `
export default defineDag({
  id: "flaky",
  schedule: null,
  tasks: {
    fetch: task({ retries: 1, retryDelay: 5, run: (ctx) => {
      ctx.log.warn("fetch attempt {n} fails", { n: ctx.attempt });
      throw new Error("source unavailable");
    } }),
    publish: task({ after: ["fetch"], run: () => 1 }),
  },
});
`;

/** A world with two runs of `shelf` and a failed run of `flaky`, made by the CLI. */
export interface ConsoleWorld extends World {
  shelfRuns: string[];
  flakyRun: string;
  /** Opens the store in this process (after the CLI has exited). */
  openStore(): Promise<SqlStateStore>;
}

export async function consoleWorld(backend: Backend, label: string): Promise<ConsoleWorld> {
  const w = await world(backend, label, { env: { PII_HMAC_KEY: KEY } });
  await writeDag(w, "shelf", SHELF);
  await writeDag(w, "flaky", FLAKY);
  const shelfRuns: string[] = [];
  for (const date of ["2026-02-01T02:00:00Z", "2026-02-02T02:00:00Z"]) {
    const r = await w.run(["dags", "run", "shelf", "--date", date, "--json"]);
    assertExit(r, 0);
    shelfRuns.push(oneJson(r).runId);
  }
  const f = await w.run(["dags", "run", "flaky", "--date", "2026-02-03", "--json"]);
  assertExit(f, 1);
  return {
    ...w,
    shelfRuns,
    flakyRun: oneJson(f).runId,
    async openStore() {
      const store = backend === "pglite"
        ? new SqlStateStore(await PgliteClient.open(join(w.home, "state")), w.home)
        : await openPostgresStore(w.dbUrl!);
      await store.migrate();
      return store;
    },
  };
}

/** The console over a world's store. */
export function consoleOf(
  w: ConsoleWorld,
  store: SqlStateStore,
  auth: AuthConfig = {},
  host = "127.0.0.1",
) {
  return createConsole({ store, home: w.home, dagsDir: w.dags, auth, host, dagsTtlMs: 0 });
}

/** Asserts that no sentinel occurs in `text`. */
export function assertNoSentinel(text: string, where: string): void {
  for (const s of SENTINELS) {
    assert.ok(!text.includes(s), `a raw patron value (${s.slice(0, 8)}...) appears in ${where}`);
  }
}

/** The CSRF token a page carries in its meta tag. */
export function csrfOf(page: string): string {
  const m = /<meta name="csrf-token" content="([^"]+)">/.exec(page);
  assert.ok(m, "the page carries a CSRF token");
  return m[1]!;
}

/** The session cookie a response sets (name=value), or undefined. */
export function sessionCookie(res: Response): string | undefined {
  const set = res.headers.getSetCookie().find((c) => c.startsWith("carrel_session="));
  return set?.split(";")[0];
}
