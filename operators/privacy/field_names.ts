/**
 * Which key names may appear in a message. A record's keys are data too: a barcode or a patron's
 * name used as a key (`{ "ZZ9SENTINEL42": "x" }`) must not reach an error, a log line, the audit
 * trail or a quarantine dataset. So a key is named only when it is *known safe*: declared by the
 * DAG author (in a schema the operator applies or sees upstream, in `allowFields`, `tokenized`,
 * quasi-identifier columns) or in the PII-key list ({@link DEFAULT_PII_KEYS} and what the DAG
 * adds). Any other key is reported by its position among its object's own keys, 1-based:
 * `{key 2}`, so `{key 2}: unexpected field` or `notes.{key 1}` (a detector hit under the first key
 * of `notes`). Where no position is known the placeholder is `{key}`.
 *
 * @module
 */
/** Decides how a key is shown in messages. */
export interface FieldNamer {
  /** Whether `key` is known safe to name. */
  known(key: string): boolean;
  /**
   * The path segment for `key`, the `position`-th own key (1-based) of its object: the key itself
   * when known, else `{key <position>}` (or `{key}` without a position).
   */
  segment(key: string, position?: number): string;
}

/** Options of {@link createFieldNamer}. */
export interface FieldNamerOptions {
  /** Key names declared by the DAG author (schema keys, configured paths' segments). */
  knownKeys?: Iterable<string>;
  /** Whether a key is on the PII-key list in use (see `piiKeyMatcher` in `pii.ts`). */
  isPiiKey?: (key: string) => boolean;
}

/**
 * The placeholder for a key that is not known safe.
 *
 * @example
 * ```ts
 * import { unnamedKey } from "./field_names.ts";
 * unnamedKey(2); // "{key 2}"
 * unnamedKey(); // "{key}"
 * ```
 */
export function unnamedKey(position?: number): string {
  return position === undefined ? "{key}" : `{key ${position}}`;
}

const CACHE_LIMIT = 4096;

/**
 * Builds a namer. Declared keys match exactly; PII keys as `isPiiKey` says. Decisions are cached
 * (bounded).
 *
 * @example
 * ```ts
 * import { createFieldNamer } from "./field_names.ts";
 * import { piiKeyMatcher } from "./pii.ts";
 * const namer = createFieldNamer({ knownKeys: ["item_id"], isPiiKey: piiKeyMatcher() });
 * namer.segment("item_id", 1); // "item_id"
 * namer.segment("Patron_Barcode", 2); // "Patron_Barcode" (a PII key)
 * namer.segment("ZZ9SENTINEL42", 3); // "{key 3}"
 * ```
 */
export function createFieldNamer(options: FieldNamerOptions = {}): FieldNamer {
  const declared = new Set(options.knownKeys ?? []);
  const isPiiKey = options.isPiiKey ?? (() => false);
  const cache = new Map<string, boolean>();
  const known = (key: string): boolean => {
    let found = cache.get(key);
    if (found === undefined) {
      found = declared.has(key) || isPiiKey(key);
      if (cache.size >= CACHE_LIMIT) cache.clear();
      cache.set(key, found);
    }
    return found;
  };
  return {
    known,
    segment: (key, position) => known(key) ? key : unnamedKey(position),
  };
}

/**
 * The key names in configured paths (`holds[].patron_token` gives `holds` and `patron_token`).
 *
 * @example
 * ```ts
 * import { pathKeys } from "./field_names.ts";
 * pathKeys(["holds[].patron_token", "item_id"]); // ["holds", "patron_token", "item_id"]
 * ```
 */
export function pathKeys(paths: Iterable<string>): string[] {
  const out: string[] = [];
  for (const path of paths) {
    for (const part of path.split(".")) {
      const name = part.replace(/(\[\])+$/, "");
      if (name !== "") out.push(name);
    }
  }
  return out;
}

/**
 * The 1-based position of `key` among the own enumerable keys of `object` (as `for...in` and
 * `Object.keys` order them), or `undefined`.
 *
 * @example
 * ```ts
 * import { keyPosition } from "./field_names.ts";
 * keyPosition({ a: 1, b: 2 }, "b"); // 2
 * ```
 */
export function keyPosition(object: unknown, key: string): number | undefined {
  if (typeof object !== "object" || object === null) return undefined;
  const index = Object.keys(object).indexOf(key);
  return index === -1 ? undefined : index + 1;
}
