/**
 * `schemaGate`: a zod gate in the pipeline. Known PII keys are stripped (case-insensitively, at
 * any depth), any other unexpected key rejects the record, and invalid records either fail the
 * task (with counts per field and reason) or go to a quarantine dataset with their position,
 * field path and reason, never a value. A key that is neither in the schema nor on the PII-key
 * list is named by its position (`{key 2}: unexpected field`): keys can be data too. The gate
 * declares its schema as its output schema, for the checkpoint downstream.
 *
 * @module
 */
import type { z } from "zod";
import {
  batched,
  FatalTaskError,
  markPrivacySafe,
  type TaskContext,
  type TaskOptions,
  type TaskSpec,
} from "../../core/mod.ts";
import { createGate, formatGateFailure } from "./gate.ts";
import type { PiiKeyOptions } from "./pii.ts";
import { emitRecords, inputsAreArrays, upstreamRecords } from "../records_io.ts";
import { declareOutputSchema } from "./output_schema.ts";

/** Options of `schemaGate`. */
export interface SchemaGateOptions<S extends z.ZodObject> extends Omit<TaskOptions, "zone"> {
  /** The record schema: a zod object schema, applied strictly. */
  schema: S;
  /** PII keys stripped before validation: `{ extraKeys: ["borrower_note"] }` extends the list. */
  pii?: PiiKeyOptions;
  /** `"fail"` (default): the task fails when any record is invalid; `"quarantine"`: they are set aside. */
  onInvalid?: "fail" | "quarantine";
}

/**
 * Validates records against a schema and strips PII keys.
 *
 * @example
 * ```ts ignore
 * import { z } from "zod";
 * import { schemaGate } from "../mod.ts";
 * const gate = schemaGate({
 *   after: ["tokens"],
 *   schema: z.object({ patron_token: z.string(), due: z.string() }),
 *   onInvalid: "quarantine",
 * });
 * ```
 */
export function schemaGate<S extends z.ZodObject>(options: SchemaGateOptions<S>): TaskSpec {
  const { schema, pii, onInvalid = "fail", ...taskOptions } = options;
  // Fails at load time when the schema itself declares a PII key.
  createGate({ schema, ...(pii ? { pii } : {}), onInvalid: "quarantine" });
  // A checkpoint downstream checks its paths against this schema and may name its keys.
  return declareOutputSchema(
    {
      ...taskOptions,
      operator: "schemaGate",
      zone: "inherit",
      stream: true,
      run: async (ctx: TaskContext<unknown>) => {
        const gate = createGate({ schema, ...(pii ? { pii } : {}), onInvalid: "quarantine" });
        const quarantine = onInvalid === "quarantine"
          ? await ctx.dataset("quarantine", { valueFree: true })
          : undefined;
        let position = 0;
        const valid = batched(async function* () {
          for await (const batch of upstreamRecords(ctx).batches()) {
            const out: Record<string, unknown>[] = [];
            for (const record of batch) {
              position++;
              const result = gate.check(record, position);
              if (result.ok) out.push(result.value as Record<string, unknown>);
              else if (quarantine) await quarantine.write({ position, issues: result.issues });
            }
            if (out.length > 0) yield out;
          }
        });
        let output;
        try {
          output = await emitRecords(ctx, valid, {
            asArray: inputsAreArrays(ctx),
            name: "valid",
          });
        } catch (error) {
          await quarantine?.abort();
          throw error;
        }
        const summary = gate.summary();
        const strippedTotal = Object.values(summary.strippedByField).reduce((a, b) => a + b, 0);
        ctx.count("gate:checked", summary.records, {
          passed: summary.passed,
          rejected: summary.rejected,
          stripped: strippedTotal,
          strippedByField: summary.strippedByField,
          invalidByFieldReason: summary.invalidByFieldReason,
        });
        if (quarantine) {
          const q = await quarantine.close();
          if (summary.rejected > 0) {
            ctx.count("gate:quarantined", summary.rejected, { dataset: q.ref.$dataset.path });
            ctx.log.warn("Quarantined {count} records: {reasons}", {
              count: summary.rejected,
              reasons: formatGateFailure(summary),
            });
          }
        } else if (summary.rejected > 0) {
          throw markPrivacySafe(new FatalTaskError(formatGateFailure(summary)));
        }
        return output;
      },
    } satisfies TaskSpec,
    schema,
  );
}
