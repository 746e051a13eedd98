/**
 * What every CLI command shares: the DAGs folder, `CARREL_HOME`, and a lazily opened store.
 *
 * @module
 */
import { type ResolvedDag } from "../core/dag.ts";
import { DagError, UsageError } from "../core/errors.ts";
import { dagsDir, loadDags, type LoadedDags } from "../core/loader.ts";
import { carrelHome, openStore } from "../core/state/open.ts";
import type { StateStore } from "../core/state/store.ts";
import { storeLogs } from "../core/log.ts";
import { type AuditCheckpoints, startAuditCheckpoints } from "../core/audit_checkpointer.ts";

/** Shared state of one CLI invocation. */
export class CliContext implements AsyncDisposable {
  readonly home: string;
  readonly dagsDir: string;
  #dags: Promise<LoadedDags> | undefined;
  #store: Promise<StateStore> | undefined;
  #logs: AsyncDisposable | undefined;
  #logsToStore = true;
  /** Signs audit checkpoints while the store is open; read-only audit commands turn it off. */
  checkpointAudit = true;
  #checkpoints: AuditCheckpoints | undefined;

  constructor(options: { dags?: string | undefined } = {}) {
    this.home = carrelHome();
    this.dagsDir = dagsDir(options.dags);
  }

  /** All DAGs of the folder, loaded once. */
  dags(): Promise<LoadedDags> {
    this.#dags ??= loadDags(this.dagsDir);
    return this.#dags;
  }

  /** One DAG: a usage error when unknown, a DAG error when its file is broken. */
  async dag(id: string): Promise<ResolvedDag> {
    const { dags, errors } = await this.dags();
    const dag = dags.get(id);
    if (dag) return dag;
    const broken = errors.find((e) => e.message.includes(`"${id}"`));
    if (broken) throw new DagError(broken.message);
    const known = [...dags.keys()].sort();
    const hint = errors.length
      ? ` (${errors.length} file${
        errors.length > 1 ? "s" : ""
      } failed to load: see \`dags validate\`)`
      : "";
    throw new UsageError(
      `Unknown DAG "${id}": ${
        known.length ? `known DAGs are ${known.join(", ")}` : `no DAGs in ${this.dagsDir}`
      }${hint}`,
    );
  }

  /** The state store, opened and migrated on first use. */
  store(): Promise<StateStore> {
    this.#store ??= openStore().then(async (store) => {
      // The first checkpoint of a store is signed before anything else happens to it.
      if (this.checkpointAudit) {
        this.#checkpoints = await startAuditCheckpoints(store, this.home).catch(() => undefined);
      }
      if (this.#logsToStore) this.#logs = storeLogs(store);
      return store;
    });
    return this.#store;
  }

  /**
   * Keeps this command's run log lines out of the state store (for commands that persist
   * nothing, such as `tasks test`). Lines already buffered are still written.
   */
  async keepLogsOutOfStore(): Promise<void> {
    this.#logsToStore = false;
    const logs = this.#logs;
    this.#logs = undefined;
    await logs?.[Symbol.asyncDispose]();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#store?.catch(() => undefined);
    await this.#checkpoints?.[Symbol.asyncDispose]();
    await this.#logs?.[Symbol.asyncDispose]();
    if (this.#store) await (await this.#store.catch(() => undefined))?.close();
  }
}
