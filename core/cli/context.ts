/**
 * What every CLI command shares: the DAGs folder, `CARREL_HOME`, and a lazily opened store.
 *
 * @module
 */
import { type ResolvedDag } from "../dag.ts";
import { DagError, UsageError } from "../errors.ts";
import { dagsDir, loadDags, type LoadedDags } from "../loader.ts";
import { carrelHome, openStore } from "../state/open.ts";
import type { StateStore } from "../state/store.ts";

/** Shared state of one CLI invocation. */
export class CliContext implements AsyncDisposable {
  readonly home: string;
  readonly dagsDir: string;
  #dags: Promise<LoadedDags> | undefined;
  #store: Promise<StateStore> | undefined;

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
    this.#store ??= openStore();
    return this.#store;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#store) await (await this.#store.catch(() => undefined))?.close();
  }
}
