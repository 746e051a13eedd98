/**
 * `privacyCheckpoint`: the only door out of the enclave. It verifies that fields named in
 * `tokenized` hold tokens, that no record carries a field outside `allowFields` or the schema, that
 * no PII detector fires, that no upstream output is tagged `pii:raw`, and, when asked, that a
 * record-level output has no quasi-identifier class smaller than k and an aggregate output no
 * small cell. Records are verified in a first pass and only then written out as shared data, so
 * nothing unverified leaves the enclave. Messages and audit entries name the check, the field and
 * the count, never a value, and a key only when it is known safe (in a schema, a configured path or
 * the PII-key list; any other key by position, `{key 2}`).
 *
 * What a violation does is `onViolation`:
 *
 * - `"fail"` (default): any violation fails the task; downstream tasks become `upstream_failed`.
 * - `"quarantine"`: the records that fail a record-level check are withheld and listed (position
 *   and findings, no values) in the value-free dataset `quarantine` of the task; the rest are
 *   published. The task fails when more than `maxQuarantined` records are withheld (a count such
 *   as `10`, or a fraction of the records checked such as `0.05` or `"5%"`), and on any
 *   table-level violation (an upstream `pii:raw` tag, a configured path no record carries, small
 *   cells), which no withholding can mend.
 *
 * It fails closed on its configuration too. It needs a field list: its own `schema` or
 * `allowFields`, or upstream operators that declare their output (a `schemaGate`, `smallCells`).
 * A `tokenized` or `allowFields` path (and a quasi-identifier or small-cells column) that the
 * schema it checks against does not declare fails DAG validation, with the closest declared path
 * as a suggestion; one that no record carries fails the run (unless the schema lets records lack
 * it).
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
  type TaskValidationContext,
} from "../../core/mod.ts";
import { closest } from "../../core/dag.ts";
import {
  type CheckpointVerdict,
  createCheckpoint,
  formatCheckpointFailure,
  type QuasiIdentifierCheck,
  validateQuasiIdentifiers,
} from "./checkpoint_checks.ts";
import { formatCounts } from "./gate.ts";
import { declaredOutputSchema } from "./output_schema.ts";
import type { DetectorOptions, PiiKeyOptions } from "./pii.ts";
import { declaresPath, type SchemaFields, schemaFields } from "./schema_paths.ts";
import type { SmallCellsCheck } from "./small_cells.ts";
import { emitRecords, inputsAreArrays, upstreamRecords } from "../records_io.ts";

/** A limit on withheld records: a count (`10`), or a fraction of the records (`0.05`, `"5%"`). */
export type QuarantineLimit = number | `${number}%`;

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
  /** `"fail"` (default) or `"quarantine"`: withhold failing records, publish the rest. */
  onViolation?: "fail" | "quarantine";
  /** With `"quarantine"` (required there): the most records that may be withheld. */
  maxQuarantined?: QuarantineLimit;
  /**
   * k-anonymity of a record-level output: every class over `columns` holds `k` records (or `k`
   * individuals) or more. A function of the run's params decides per run (`undefined`: no check),
   * for outputs whose quasi-identifiers are switched on by params; its columns are then checked
   * against the upstream schema when the attempt starts.
   */
  quasiIdentifiers?:
    | QuasiIdentifierCheck
    | ((params: Record<string, unknown>) => QuasiIdentifierCheck | undefined);
  /** An aggregate output: no published count below k, no withheld count recomputable. */
  smallCells?: SmallCellsCheck;
}

interface Limit {
  count?: number;
  fraction?: number;
  text: string;
}

function misconfigured(message: string): TypeError {
  return new TypeError(`privacyCheckpoint misconfigured: ${message}`);
}

function parseLimit(value: QuarantineLimit): Limit {
  if (typeof value === "number") {
    if (Number.isInteger(value) && value >= 0) return { count: value, text: String(value) };
    if (value > 0 && value < 1) return { fraction: value, text: `${value * 100}%` };
  } else if (typeof value === "string") {
    const match = /^(\d+(?:\.\d+)?)%$/.exec(value.trim());
    const percent = match ? Number(match[1]) : NaN;
    if (percent >= 0 && percent <= 100) return { fraction: percent / 100, text: `${percent}%` };
  }
  throw misconfigured(
    'maxQuarantined must be a count (an integer >= 0, such as 10) or a fraction (such as 0.05 or "5%")',
  );
}

function overLimit(limit: Limit, withheld: number, records: number): boolean {
  return limit.count !== undefined ? withheld > limit.count : withheld > limit.fraction! * records;
}

/** What validation learnt about the upstream tasks, for the run. */
interface Learnt {
  knownFields: string[];
  mayBeAbsent: string[];
  /** The paths the checked schema declares (none known without one). */
  declared?: string[];
}

/**
 * The quasi-identifier check of one attempt: the option itself, or what its function of the
 * params returns, with every column checked against the declared schema (a misspelt column
 * would put every record in one class and pass).
 */
function resolveQuasiIdentifiers(
  option: PrivacyCheckpointOptions["quasiIdentifiers"],
  ctx: TaskContext<unknown>,
  context: Learnt | undefined,
): QuasiIdentifierCheck | undefined {
  if (typeof option !== "function") return option;
  const misconfigured = (message: string) =>
    markPrivacySafe(
      new FatalTaskError(`Checkpoint "${ctx.taskId}" misconfigured: ${message}`),
    );
  const qi = option((ctx.params ?? {}) as Record<string, unknown>);
  if (qi === undefined) return undefined;
  try {
    validateQuasiIdentifiers(qi);
  } catch (error) {
    throw misconfigured((error as Error).message.replace(/^Checkpoint misconfigured: /, ""));
  }
  const declared = context?.declared;
  if (declared !== undefined) {
    for (const column of [...qi.columns, ...(qi.individual === undefined ? [] : [qi.individual])]) {
      if (!declared.includes(column)) {
        throw misconfigured(`quasi-identifier column "${column}" is not in the checked schema`);
      }
    }
  }
  return qi;
}

/**
 * Declares a privacy checkpoint.
 *
 * @example
 * ```ts ignore
 * import { privacyCheckpoint } from "../mod.ts";
 * const checkpoint = privacyCheckpoint({
 *   after: ["gate"],
 *   tokenized: ["patron_token"],
 *   detectors: { patronIdPatterns: [/^P\d{6}$/] },
 *   onViolation: "quarantine",
 *   maxQuarantined: "1%",
 * });
 * ```
 */
export function privacyCheckpoint(options: PrivacyCheckpointOptions = {}): TaskSpec {
  const {
    tokenized,
    schema,
    allowFields,
    detectors,
    piiKeys,
    onViolation = "fail",
    maxQuarantined,
    quasiIdentifiers,
    smallCells,
    ...taskOptions
  } = options;
  if (onViolation !== "fail" && onViolation !== "quarantine") {
    throw misconfigured('onViolation must be "fail" or "quarantine"');
  }
  if (onViolation === "quarantine" && maxQuarantined === undefined) {
    throw misconfigured(
      'onViolation "quarantine" needs maxQuarantined (a count such as 10, or a fraction such as 0.05 or "5%")',
    );
  }
  const limit = maxQuarantined === undefined ? undefined : parseLimit(maxQuarantined);
  // Fails at load time on bad quasi-identifier or small-cells settings.
  createCheckpoint({
    ...(typeof quasiIdentifiers === "object" ? { quasiIdentifiers } : {}),
    ...(smallCells ? { smallCells } : {}),
  });
  const learnt = new Map<string, Learnt>();

  function validate({ dagId, taskId, upstream }: TaskValidationContext): string[] {
    const problems: string[] = [];
    const declared = upstream.map((u) => ({ id: u.id, schema: declaredOutputSchema(u.spec) }));
    const allDeclared = declared.length > 0 && declared.every((d) => d.schema !== undefined);
    const upstreamFields = declared.flatMap((d) => d.schema ? [schemaFields(d.schema)] : []);
    if (schema === undefined && allowFields === undefined && !allDeclared) {
      const plain = declared.filter((d) => d.schema === undefined).map((d) => `"${d.id}"`);
      problems.push(
        `privacyCheckpoint has no field list: give it "schema" or "allowFields", or put a schemaGate directly upstream${
          plain.length ? ` (upstream ${plain.join(", ")} declares no output schema)` : ""
        }`,
      );
    }
    const against: SchemaFields[] = schema !== undefined
      ? [schemaFields(schema)]
      : allDeclared
      ? upstreamFields
      : [];
    const where = schema !== undefined
      ? "its schema"
      : `the schema of upstream ${declared.map((d) => `"${d.id}"`).join(", ")}`;
    const mayBeAbsent: string[] = [];
    let declaredPaths: string[] | undefined;
    if (against.length > 0) {
      const known = [...new Set(against.flatMap((f) => [...f.paths.keys()]))];
      declaredPaths = known;
      const check = (kind: string, path: string) => {
        const found = against.filter((f) => declaresPath(f, path));
        if (found.length === 0) {
          const near = closest(path, known);
          problems.push(
            `${kind} "${path}" is not in ${where}${near ? ` (did you mean "${near}"?)` : ""}`,
          );
        } else if (
          found.length < against.length ||
          found.some((f) => f.paths.get(path)?.mayBeAbsent !== false)
        ) {
          mayBeAbsent.push(path);
        }
      };
      for (const path of tokenized ?? []) check("tokenized path", path);
      for (const path of allowFields ?? []) check("allowFields path", path);
      if (typeof quasiIdentifiers === "object") {
        for (const column of quasiIdentifiers.columns) check("quasi-identifier column", column);
        if (quasiIdentifiers.individual !== undefined) {
          check("quasi-identifier individual", quasiIdentifiers.individual);
        }
      }
      if (smallCells) {
        for (const column of [...(smallCells.by ?? []), ...smallCells.dimensions]) {
          check("small-cells column", column);
        }
        check("small-cells count column", smallCells.count ?? "count");
      }
    }
    if (allowFields !== undefined) {
      for (const path of tokenized ?? []) {
        const allowed = allowFields.some((a) =>
          path === a || path.startsWith(`${a}.`) || path.startsWith(`${a}[]`)
        );
        if (!allowed) {
          const near = closest(path, allowFields);
          problems.push(
            `tokenized path "${path}" is not in allowFields${
              near ? ` (did you mean "${near}"?)` : ""
            }`,
          );
        }
      }
    }
    learnt.set(`${dagId}\u0000${taskId}`, {
      knownFields: [...new Set(upstreamFields.flatMap((f) => [...f.names]))],
      mayBeAbsent,
      ...(declaredPaths === undefined ? {} : { declared: declaredPaths }),
    });
    return problems;
  }

  return {
    ...taskOptions,
    operator: "privacyCheckpoint",
    checkpoint: true,
    zone: "inherit",
    // It reads its input twice (verify, then publish), so it is never fed by a pipe; what it
    // publishes may stream to a fused successor.
    stream: "output",
    validate,
    run: async (ctx: TaskContext<unknown>) => {
      const context = learnt.get(`${ctx.dagId}\u0000${ctx.taskId}`);
      const upstreamTags = Object.values(ctx.inputTags).flat();
      const qi = resolveQuasiIdentifiers(quasiIdentifiers, ctx, context);
      const checkpoint = createCheckpoint({
        ...(tokenized ? { tokenized } : {}),
        ...(schema ? { schema } : {}),
        ...(allowFields ? { allowFields } : {}),
        ...(detectors ? { detectors } : {}),
        ...(piiKeys ? { piiKeys } : {}),
        ...(qi ? { quasiIdentifiers: qi } : {}),
        ...(smallCells ? { smallCells } : {}),
        knownFields: context?.knownFields ?? [],
        mayBeAbsent: context?.mayBeAbsent ?? [],
        upstreamTags,
      });
      const quarantine = onViolation === "quarantine"
        ? await ctx.dataset("quarantine", { valueFree: true })
        : undefined;
      // The quarantine list stays when the checkpoint fails on its verdict (it is value-free and
      // says which records to look at); an unexpected error removes the partial file.
      let kept = false;
      const keep = async () => {
        kept = true;
        return await quarantine?.close();
      };
      try {
        // Pass 1: verify everything; nothing is published yet.
        const withheld = new Set<number>();
        let position = 0;
        if (!checkpoint.failedEarly) {
          for await (const batch of upstreamRecords(ctx).batches()) {
            for (const record of batch) {
              const result = checkpoint.check(record, ++position);
              if (!result.ok && quarantine) {
                withheld.add(position);
                await quarantine.write({ position, findings: result.findings });
              }
            }
          }
        }
        const verdict = checkpoint.verdict();
        const quarantining = quarantine !== undefined &&
          verdict.violations.every((v) => v.scope === "record");
        const over = quarantining && overLimit(limit!, verdict.failedRecords, verdict.records);
        recordVerdict(ctx, verdict, onViolation, quarantining && !over);
        if (!verdict.passed && !quarantining) {
          await keep();
          throw markPrivacySafe(new FatalTaskError(formatCheckpointFailure(verdict)));
        }
        // Pass 2: publish what passed; withhold small quasi-identifier classes.
        let published = 0;
        // Nothing withheld and no class to look up: every record read again is published.
        const all = withheld.size === 0 && qi === undefined;
        const passed = batched(async function* () {
          let at = 0;
          for await (const batch of upstreamRecords(ctx).batches()) {
            if (all) {
              at += batch.length;
              published += batch.length;
              if (!over) yield batch;
              continue;
            }
            const out: Record<string, unknown>[] = [];
            for (const record of batch) {
              at++;
              if (withheld.has(at)) continue;
              if (checkpoint.inSmallClass(record)) {
                await quarantine?.write({
                  position: at,
                  findings: [checkpoint.smallClassFinding!],
                });
                continue;
              }
              published++;
              if (!over) out.push(record);
            }
            if (out.length > 0) yield out;
          }
        });
        let output;
        if (over) {
          if (qi) {
            for await (const _ of passed.batches()) {
              /* quarantine entries only */
            }
          }
        } else {
          // Published as this pass parsed and checked them, serialized again: stored text is never
          // passed on unparsed (a duplicate key, say, could carry a value no check saw).
          output = await emitRecords(ctx, passed, {
            asArray: inputsAreArrays(ctx),
            name: "verified",
          });
        }
        const written = await keep();
        if (written) {
          const reasons: Record<string, number> = {};
          for (const v of verdict.violations) reasons[`${v.check}: ${v.field}`] = v.count;
          ctx.count("checkpoint:quarantined", verdict.failedRecords, {
            records: verdict.records,
            published: over ? 0 : published,
            maxQuarantined: limit!.text,
            exceeded: over,
            reasons,
            dataset: written.ref.$dataset.path,
          });
          if (verdict.failedRecords > 0) {
            ctx.log.warn(
              "Withheld {quarantined} of {records} records at the checkpoint (limit {limit}): {reasons}",
              {
                quarantined: verdict.failedRecords,
                records: verdict.records,
                limit: limit!.text,
                reasons: formatCounts(reasons),
              },
            );
          }
        }
        if (over) {
          throw markPrivacySafe(
            new FatalTaskError(
              `Privacy checkpoint quarantined ${verdict.failedRecords} of ${verdict.records} records, more than maxQuarantined ${
                limit!.text
              }: ${
                formatCounts(
                  Object.fromEntries(
                    verdict.violations.map((v) => [`${v.check}: ${v.field}`, v.count]),
                  ),
                )
              }`,
            ),
          );
        }
        return output;
      } catch (error) {
        if (!kept) await quarantine?.abort();
        throw error;
      }
    },
  };
}

function recordVerdict(
  ctx: TaskContext<unknown>,
  verdict: CheckpointVerdict,
  mode: "fail" | "quarantine",
  published: boolean,
): void {
  const outcome = verdict.passed ? "passed" : published ? "quarantined" : "failed";
  ctx.count("checkpoint:verdict", verdict.records, {
    passed: verdict.passed,
    outcome,
    mode,
    failedRecords: verdict.failedRecords,
    violations: verdict.violations.map((v) => ({
      check: v.check,
      field: v.field,
      ...(v.reason === undefined ? {} : { reason: v.reason }),
      scope: v.scope,
      count: v.count,
    })),
  });
  if (outcome === "failed") {
    ctx.log.error("Privacy checkpoint failed: {violations} violations in {records} records", {
      violations: verdict.violations.length,
      records: verdict.failedRecords,
    });
  }
}
