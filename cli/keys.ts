/**
 * `keys init|status|rotate`: the tokenization keyring. Secrets are never printed.
 *
 * @module
 */
import type { Command } from "commander";
import { resolve } from "node:path";
import { UsageError } from "../core/errors.ts";
import {
  activeKey,
  initKeyring,
  KEYRING_ENV,
  loadKeyring,
  rotateKeyring,
} from "../core/privacy/keyring.ts";
import { type CommandState, withJson } from "./common.ts";
import type { CliContext } from "./context.ts";
import { printJson, table } from "./output.ts";

/** Registers the `keys` commands. */
export function registerKeys(
  program: Command,
  context: () => CliContext,
  _state: CommandState,
): void {
  const keys = program.command("keys").description(
    "the tokenization keyring: create, inspect, rotate",
  );

  withJson(
    keys.command("init").description("creates a keyring file (mode 0600) with one new random key")
      .argument("<path>", "keyring file"),
  )
    .action(async (path: string, opts: { json?: boolean }) => {
      const { id } = await initKeyring(resolve(path));
      const store = await context().store();
      await store.appendAudit([{
        correlationId: "keys",
        operation: "keys:init",
        status: "success",
        keyVersion: id,
      }]);
      if (opts.json) printJson({ path: resolve(path), active: id });
      else {console.log(
          `Created keyring ${
            resolve(path)
          } with active key version ${id}\nUse it: export ${KEYRING_ENV}=${resolve(path)}`,
        );}
    });

  withJson(
    keys.command("status").description(
      "the key versions (ids, ages, the active one), never the secrets",
    ),
  )
    .action(async (opts: { json?: boolean }) => {
      const keyring = await loadKeyring();
      const active = activeKey(keyring);
      const rows = keyring.keys.map((k) => ({
        id: k.id,
        active: k.id === active.id,
        created: k.created?.toISOString() ?? null,
        ageDays: k.ageDays() === null ? null : Math.floor(k.ageDays()!),
      }));
      if (opts.json) {
        printJson({ source: keyring.source, path: keyring.path, active: active.id, keys: rows });
      } else {
        console.log(
          `Keys from ${
            keyring.source === "file" ? keyring.path : "PII_HMAC_KEY"
          }; active version ${active.id}`,
        );
        console.log(
          table(
            ["VERSION", "ACTIVE", "CREATED", "AGE (DAYS)"],
            rows.map((r) => [r.id, r.active ? "yes" : "", r.created, r.ageDays]),
          ),
        );
      }
    });

  withJson(
    keys.command("rotate").description(
      "adds a new random key version to the keyring and makes it active",
    )
      .option("--id <id>", "the new version's id (default: the next k<n>)"),
  ).action(async (opts: { id?: string; json?: boolean }) => {
    const path = Deno.env.get(KEYRING_ENV);
    if (!path) {
      throw new UsageError(
        `Cannot rotate keys: ${KEYRING_ENV} is not set; a single PII_HMAC_KEY cannot rotate (create a keyring with \`keys init <path>\`)`,
      );
    }
    const result = await rotateKeyring(path, opts.id ? { newId: opts.id } : {});
    const store = await context().store();
    await store.appendAudit([{
      correlationId: "keys",
      operation: "keys:rotate",
      status: "success",
      keyVersion: result.newId,
      detail: { from: result.oldId, to: result.newId },
    }]);
    if (opts.json) printJson(result);
    else {
      console.log(`Rotated: active key version ${result.oldId} -> ${result.newId}`);
      console.log(
        "Re-key the warehouse: run the DAG's tokenize task with `crosswalk: true` to get old -> new tokens.",
      );
    }
  });
}
