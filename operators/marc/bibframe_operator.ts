/**
 * `bibframe`: a task that publishes catalog records (the output of a privacy checkpoint) as
 * BIBFRAME 2.0, in RDF/XML and JSON-LD, through the privacy-filtered mapping of `bibframe.ts`.
 *
 * @module
 */
import type { TaskContext, TaskOptions, TaskSpec } from "../../core/mod.ts";
import { upstreamRecords } from "../records_io.ts";
import {
  type BibframeWriteResult,
  type CatalogRecordValue,
  writeBibframeFiles,
} from "./catalog.ts";

/** Options of {@linkcode bibframe}. */
export interface BibframeOptions extends Omit<TaskOptions, "zone"> {
  /**
   * The folder the files go to: a path, or a function of the task context (for example
   * `(ctx) => String(ctx.params.output)`).
   */
  output: string | ((ctx: TaskContext) => string);
  /** Base of the node IRIs (default `http://example.org/`, as marc2bibframe2), or a function. */
  baseUri?: string | ((ctx: TaskContext) => string);
  /** File name stem (default `catalog.bibframe`: `catalog.bibframe.rdf`, `.jsonld`). */
  stem?: string;
}

/**
 * Declares a task writing its upstream catalog records (`CatalogRecord`: `id`, `items` and the
 * sanitized `marc`) as BIBFRAME 2.0 files. It refuses to run in the enclave: its input must come
 * through a privacy checkpoint. Its output is `{ written, nodes, files }`.
 *
 * @example
 * ```ts ignore
 * import { bibframe } from "../mod.ts";
 * const linkedData = bibframe({ after: ["checkpoint"], output: (ctx) => String(ctx.params.output) });
 * ```
 */
export function bibframe(options: BibframeOptions): TaskSpec {
  const { output, baseUri, stem, ...taskOptions } = options;
  return {
    ...taskOptions,
    operator: "bibframe",
    zone: "shared",
    run: async (ctx: TaskContext<unknown>): Promise<BibframeWriteResult> => {
      const own = ctx as TaskContext;
      const dir = typeof output === "function" ? output(own) : output;
      if (!dir) throw new Error(`Cannot run task "${ctx.taskId}": no output folder given`);
      const base = typeof baseUri === "function" ? baseUri(own) : baseUri;
      const result = await writeBibframeFiles(
        dir,
        upstreamRecords(ctx) as AsyncIterable<CatalogRecordValue>,
        { signal: ctx.signal, ...(base ? { baseUri: base } : {}), ...(stem ? { stem } : {}) },
      );
      ctx.count("bibframe:written", result.written, { nodes: result.nodes });
      return result;
    },
  };
}
