/**
 * `tokenize`: HMAC-SHA256 patron tokenization with the active key of the keyring, in the
 * enclave. Tokens are the lowercase hex HMAC-SHA256 of the raw value's UTF-8 bytes keyed with the
 * UTF-8 bytes of the key: the seed guide's Python formula, so pseudonyms match those of existing
 * pipelines. While rotating keys, it can write a crosswalk (old token -> new token) computed
 * inside the enclave, so a warehouse can re-key without ever seeing a raw id.
 *
 * @module
 */
import {
  batched,
  FatalTaskError,
  markPrivacySafe,
  type TaskContext,
  type TaskOptions,
  type TaskSpec,
} from "../../core/mod.ts";
import { activeKey, keyById, type Keyring, loadKeyring } from "../../core/privacy/keyring.ts";
import { emitRecords, inputsAreArrays, upstreamRecords } from "../records_io.ts";

/** Options of `tokenize`. */
export interface TokenizeOptions extends Omit<TaskOptions, "zone" | "env"> {
  /** Fields holding raw identifiers (top-level keys). */
  fields: readonly string[];
  /**
   * Where each token goes: `{ id: "patron_token" }` writes the token to `patron_token` and drops
   * `id`. Fields not named here are replaced in place.
   */
  rename?: Readonly<Record<string, string>>;
  /** A null, missing or empty value: `"keep"` (stays null, default) or `"fail"`. */
  onNull?: "keep" | "fail";
  /**
   * Also write a crosswalk dataset `crosswalk` of `{ field, old_token, new_token }` from this key
   * version (or `true`: the version before the active one) to the active key, for re-keying a
   * warehouse during rotation.
   */
  crosswalk?: boolean | { from: string };
  /** Where keys come from (default: `CARREL_KEYRING`, else `PII_HMAC_KEY`). */
  env?: { get(name: string): string | undefined };
}

/** Most records tokenized per batch (`HmacTokenizer.tokens`). */
const CHUNK_RECORDS = 1024;

/**
 * Tokens remembered per field within one attempt (raw value to token; emptied when full): a
 * patron's id comes back with each of their loans, and its HMAC is the same every time. Only in
 * the memory of the task, like the records themselves.
 */
export const TOKEN_CACHE_ENTRIES = 65_536;

/**
 * Builds output records as `{ ...record }` followed by, per field, `delete` of a renamed field and
 * an assignment of its token would (same keys, same order), without `delete`: that turns every
 * record into a dictionary-mode object, slow for this task and for every later one.
 */
function outputShape(
  fields: readonly string[],
  rename: Readonly<Record<string, string>>,
): (record: Record<string, unknown>, token: (field: number) => string | null) => Record<
  string,
  unknown
> {
  const targets = fields.map((f) => rename[f] ?? f);
  const renamed = new Set(fields.filter((f, i) => targets[i] !== f));
  const targetIndex = new Map(targets.map((t, i) => [t, i]));
  const simple = targetIndex.size === targets.length &&
    targets.every((t, i) => t === fields[i] || !fields.includes(t));
  if (!simple) {
    // Overlapping renames: the plain way, whose order is the definition.
    return (record, token) => {
      const out: Record<string, unknown> = { ...record };
      fields.forEach((field, f) => {
        if (targets[f] !== field) delete out[field];
        out[targets[f]!] = token(f);
      });
      return out;
    };
  }
  return (record, token) => {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(record)) {
      if (renamed.has(key)) continue;
      const f = targetIndex.get(key);
      out[key] = f === undefined ? record[key] : token(f);
    }
    for (let f = 0; f < targets.length; f++) {
      if (!Object.hasOwn(out, targets[f]!)) out[targets[f]!] = token(f);
    }
    return out;
  };
}

function privacyError(message: string): FatalTaskError {
  return markPrivacySafe(new FatalTaskError(message));
}

async function keys(options: TokenizeOptions, taskId: string): Promise<Keyring> {
  try {
    return await loadKeyring(options.env ?? Deno.env);
  } catch (error) {
    // Keyring errors name variables, files and fields, never key material.
    throw privacyError(`Cannot tokenize in task "${taskId}": ${(error as Error).message}`);
  }
}

/**
 * Tokenizes patron identifiers.
 *
 * @example
 * ```ts ignore
 * import { tokenize } from "../mod.ts";
 * const tokens = tokenize({ after: ["extract"], fields: ["patron_id"] });
 * ```
 */
export function tokenize(options: TokenizeOptions): TaskSpec {
  if (!options.fields || options.fields.length === 0) {
    throw new TypeError("tokenize needs at least one field in `fields`");
  }
  const { fields, rename = {}, onNull = "keep", crosswalk, env: _env, ...taskOptions } = options;
  return {
    ...taskOptions,
    operator: "tokenize",
    zone: "inherit",
    stream: true,
    // In a sandbox, the key is readable here and nowhere else.
    keyring: true,
    run: async (ctx: TaskContext<unknown>) => {
      const keyring = await keys(options, ctx.taskId);
      const key = activeKey(keyring);
      const tokenizer = key.tokenizer();
      let fromTokenizer: ReturnType<typeof key.tokenizer> | undefined;
      let fromId: string | undefined;
      if (crosswalk) {
        if (crosswalk === true) {
          const index = keyring.keys.findIndex((k) => k.id === key.id);
          const previous = index > 0 ? keyring.keys[index - 1] : undefined;
          if (!previous) {
            throw privacyError(
              `Cannot write a crosswalk in task "${ctx.taskId}": the keyring has no version before "${key.id}"`,
            );
          }
          fromId = previous.id;
          fromTokenizer = previous.tokenizer();
        } else {
          try {
            fromTokenizer = keyById(keyring, crosswalk.from).tokenizer();
            fromId = crosswalk.from;
          } catch (error) {
            throw privacyError(
              `Cannot write a crosswalk in task "${ctx.taskId}": ${(error as Error).message}`,
            );
          }
        }
      }
      const crosswalkWriter = fromTokenizer
        ? await ctx.dataset("crosswalk", { valueFree: true })
        : undefined;
      const seen = fromTokenizer ? new Set<string>() : undefined;
      const counts = { records: 0, tokens: 0, nulls: 0 };
      const nullFields = new Map<string, number>();
      const shape = outputShape(fields, rename);
      const remembered = fields.map(() => new Map<string, string>());
      /** Tokenizes a chunk: values checked in record order, tokens computed per field in one batch. */
      async function tokenizeChunk(chunk: Record<string, unknown>[]) {
        const texts: string[][] = fields.map(() => []);
        const at: number[][] = fields.map(() => []);
        const tokens: (string | null)[][] = fields.map(() => new Array(chunk.length).fill(null));
        for (let r = 0; r < chunk.length; r++) {
          const record = chunk[r]!;
          counts.records++;
          for (let f = 0; f < fields.length; f++) {
            const field = fields[f]!;
            const raw = record[field];
            if (raw === null || raw === undefined || raw === "") {
              counts.nulls++;
              nullFields.set(field, (nullFields.get(field) ?? 0) + 1);
              continue;
            }
            const text = typeof raw === "string"
              ? raw
              : typeof raw === "number" || typeof raw === "bigint"
              ? String(raw)
              : undefined;
            if (text === undefined) {
              throw privacyError(
                `Cannot tokenize field "${field}" of record ${counts.records}: expected a string or number, got ${
                  Array.isArray(raw) ? "an array" : typeof raw
                }`,
              );
            }
            texts[f]!.push(text);
            at[f]!.push(r);
          }
        }
        for (let f = 0; f < fields.length; f++) {
          const list = texts[f]!;
          const rows = at[f]!;
          const out = tokens[f]!;
          const cache = remembered[f]!;
          const missing: string[] = [];
          const missingAt: number[] = [];
          for (let i = 0; i < list.length; i++) {
            const known = cache.get(list[i]!);
            if (known !== undefined) out[rows[i]!] = known;
            else {
              missing.push(list[i]!);
              missingAt.push(rows[i]!);
            }
          }
          const batch = tokenizer.tokens(missing);
          for (let i = 0; i < batch.length; i++) {
            out[missingAt[i]!] = batch[i]!;
            if (cache.size >= TOKEN_CACHE_ENTRIES) cache.clear();
            cache.set(missing[i]!, batch[i]!);
          }
          counts.tokens += list.length;
        }
        if (fromTokenizer && crosswalkWriter) {
          for (let r = 0; r < chunk.length; r++) {
            for (let f = 0; f < fields.length; f++) {
              const token = tokens[f]![r];
              const target = rename[fields[f]!] ?? fields[f]!;
              if (token === null || token === undefined || seen!.has(`${target}\u0000${token}`)) {
                continue;
              }
              seen!.add(`${target}\u0000${token}`);
              const raw = chunk[r]![fields[f]!];
              await crosswalkWriter.write({
                field: target,
                old_token: fromTokenizer.token(typeof raw === "string" ? raw : String(raw)),
                new_token: token,
              });
            }
          }
        }
        return chunk.map((record, r) => shape(record, (f) => tokens[f]![r] ?? null));
      }
      // Upstream arrays in, tokenized arrays out: one await per array, not per record.
      const transform = batched(async function* () {
        for await (const batch of upstreamRecords(ctx).batches()) {
          for (let i = 0; i < batch.length; i += CHUNK_RECORDS) {
            yield await tokenizeChunk(
              i === 0 && batch.length <= CHUNK_RECORDS ? batch : batch.slice(i, i + CHUNK_RECORDS),
            );
          }
        }
      });
      let output;
      try {
        output = await emitRecords(ctx, transform, {
          asArray: inputsAreArrays(ctx),
          name: "tokens",
        });
      } catch (error) {
        await crosswalkWriter?.abort();
        throw error;
      }
      if (onNull === "fail" && counts.nulls > 0) {
        await crosswalkWriter?.abort();
        const detail = [...nullFields].map(([f, n]) => `${f} (${n})`).join(", ");
        throw privacyError(
          `Cannot tokenize: ${counts.nulls} null or empty values with onNull "fail": ${detail}`,
        );
      }
      ctx.count("tokenize:count", counts.tokens, {
        keyVersion: key.id,
        records: counts.records,
        nulls: counts.nulls,
        fields: fields.join(","),
      });
      if (crosswalkWriter) {
        const written = await crosswalkWriter.close();
        ctx.count("tokenize:crosswalk", written.records, {
          keyVersion: key.id,
          from: fromId!,
          dataset: written.ref.$dataset.path,
        });
      }
      ctx.log.info("Tokenized {tokens} values in {records} records with key version {keyVersion}", {
        tokens: counts.tokens,
        records: counts.records,
        keyVersion: key.id,
      });
      return output;
    },
  };
}
