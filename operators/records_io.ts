/**
 * How operators read their upstream records and hand on their own: arrays stay arrays (small
 * data), datasets stay datasets (streams with flat memory).
 *
 * @module
 */
import {
  type Batched,
  batched,
  Dataset,
  type DatasetRef,
  isDatasetRef,
  recordBatches,
  type TaskContext,
} from "../core/mod.ts";

/** True when every upstream output is an in-memory array (or nothing). */
export function inputsAreArrays(ctx: TaskContext<unknown>): boolean {
  return Object.values(ctx.inputs).every((v) => v === null || v === undefined || Array.isArray(v));
}

/**
 * The records of every upstream output, in the order of `after`, as one stream: `for await` gives
 * them one by one, `.batches()` array by array (fewer awaits: what record-wise operators use).
 *
 * @example
 * ```ts ignore
 * for await (const record of upstreamRecords(ctx)) console.log(Object.keys(record));
 * for await (const batch of upstreamRecords(ctx).batches()) console.log(batch.length);
 * ```
 */
export function upstreamRecords(
  ctx: TaskContext<unknown>,
  only?: string,
): Batched<Record<string, unknown>> {
  return batched(async function* () {
    if (only !== undefined && !(only in ctx.inputs)) {
      throw new Error(`Cannot read input "${only}": it is not an upstream of "${ctx.taskId}"`);
    }
    const entries = only === undefined
      ? Object.entries(ctx.inputs)
      : [[only, ctx.inputs[only]] as [string, unknown]];
    for (const [id, value] of entries) {
      if (isDatasetRef(value) && !(value instanceof Dataset)) {
        throw new Error(
          `Cannot read input "${id}": a stored dataset reference without a workspace`,
        );
      }
      yield* recordBatches(value);
    }
  });
}

/**
 * Hands records on: an array when the inputs were arrays, else a dataset written as it streams
 * (array by array when `source` is {@linkcode batched}).
 */
export async function emitRecords(
  ctx: TaskContext<unknown>,
  source: AsyncIterable<Record<string, unknown>>,
  options: { asArray: boolean; name?: string },
): Promise<Record<string, unknown>[] | Dataset> {
  if (options.asArray) {
    const out: Record<string, unknown>[] = [];
    if ("batches" in source) {
      for await (const batch of (source as Batched<Record<string, unknown>>).batches()) {
        for (const r of batch) out.push(r);
      }
    } else for await (const r of source) out.push(r);
    return out;
  }
  const writer = await ctx.dataset(options.name ?? "data");
  try {
    await writer.writeAll(source);
  } catch (error) {
    await writer.abort();
    throw error;
  }
  return await writer.close();
}

/** A dataset's stored reference, for reports. */
export function refOf(dataset: Dataset): DatasetRef {
  return dataset.ref;
}
