/**
 * `privacyCheckpoint`: the only door out of the enclave. It verifies that fields named in
 * `tokenized` hold tokens, that no record carries a field outside `allowFields` or the schema, that
 * no PII detector fires, and that no upstream output is tagged `pii:raw`. It fails closed: any
 * violation fails the task, its downstream tasks become `upstream_failed`, and the message and the
 * audit entry name the check, the field and the count, never a value. Records are verified in a
 * first pass and only then written out as shared data, so nothing unverified leaves the enclave.
 *
 * @module
 */
import type { z } from "zod";
import {
  FatalTaskError,
  markPrivacySafe,
  type TaskContext,
  type TaskOptions,
  type TaskSpec,
} from "../core/mod.ts";
import { createCheckpoint, formatCheckpointFailure } from "./checkpoint_checks.ts";
import type { DetectorOptions, PiiKeyOptions } from "./pii.ts";
import { emitRecords, inputsAreArrays, upstreamRecords } from "./records_io.ts";

/** Options of `privacyCheckpoint`. */
export interface PrivacyCheckpointOptions extends Omit<TaskOptions, "zone"> {
  /** Field paths that must hold tokens (64 lowercase hex) or null. */
  tokenized?: readonly string[];
  /** A zod object schema the records must satisfy (strictly). */
  schema?: z.ZodObject;
  /** Field paths allowed out of the enclave. */
  allowFields?: readonly string[];
  /** Which detectors run (all on by default) and extra patron-id patterns. */
  detectors?: DetectorOptions;
  /** PII key names refused with a non-null value (default: the standard list). */
  piiKeys?: PiiKeyOptions;
}

/**
 * Declares a privacy checkpoint.
 *
 * @example
 * ```ts ignore
 * import { privacyCheckpoint } from "./mod.ts";
 * const checkpoint = privacyCheckpoint({
 *   after: ["gate"],
 *   tokenized: ["patron_token"],
 *   detectors: { patronIdPatterns: [/^P\d{6}$/] },
 * });
 * ```
 */
export function privacyCheckpoint(options: PrivacyCheckpointOptions = {}): TaskSpec {
  const { tokenized, schema, allowFields, detectors, piiKeys, ...taskOptions } = options;
  return {
    ...taskOptions,
    operator: "privacyCheckpoint",
    checkpoint: true,
    zone: "inherit",
    run: async (ctx: TaskContext<unknown>) => {
      const upstreamTags = Object.values(ctx.inputTags).flat();
      const checkpoint = createCheckpoint({
        ...(tokenized ? { tokenized } : {}),
        ...(schema ? { schema } : {}),
        ...(allowFields ? { allowFields } : {}),
        ...(detectors ? { detectors } : {}),
        ...(piiKeys ? { piiKeys } : {}),
        upstreamTags,
      });
      // Pass 1: verify everything; nothing is written out yet.
      let position = 0;
      if (!checkpoint.failedEarly) {
        for await (const record of upstreamRecords(ctx)) checkpoint.check(record, ++position);
      }
      const verdict = checkpoint.verdict();
      ctx.count("checkpoint:verdict", verdict.records, {
        passed: verdict.passed,
        failedRecords: verdict.failedRecords,
        violations: verdict.violations.map((v) => ({
          check: v.check,
          field: v.field,
          count: v.count,
        })),
      });
      if (!verdict.passed) {
        ctx.log.error("Privacy checkpoint failed: {violations} violations in {records} records", {
          violations: verdict.violations.length,
          records: verdict.failedRecords,
        });
        throw markPrivacySafe(new FatalTaskError(formatCheckpointFailure(verdict)));
      }
      // Pass 2: hand the verified records on as shared data.
      return await emitRecords(ctx, upstreamRecords(ctx), {
        asArray: inputsAreArrays(ctx),
        name: "verified",
      });
    },
  };
}
