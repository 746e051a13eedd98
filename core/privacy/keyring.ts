/**
 * Versioned HMAC tokenization keys, with one active version, for key rotation.
 *
 * The key comes either from a keyring file named by `CARREL_KEYRING`, or, when
 * that is not set, from the `PII_HMAC_KEY` environment variable.
 *
 * A keyring file is JSON, readable and writable by its owner only (mode 0600):
 *
 * ```json
 * {
 *   "format": "carrel-keyring/1",
 *   "active": "k2",
 *   "keys": [
 *     { "id": "k1", "created": "2025-01-06T09:00:00.000Z", "secret": "…64 hex characters…" },
 *     { "id": "k2", "created": "2025-07-01T09:00:00.000Z", "secret": "…64 hex characters…" }
 *   ]
 * }
 * ```
 *
 * A secret is text; the HMAC key is its UTF-8 bytes, exactly as for
 * `PII_HMAC_KEY`, so the same secret gives the same tokens in Python
 * (`hmac.new(secret.encode(), raw.encode(), hashlib.sha256).hexdigest()`).
 * Generated secrets are 32 random bytes written as 64 lowercase hex characters.
 *
 * Secrets never appear in error messages, `JSON.stringify` output or
 * `console.log` output of the objects defined here.
 *
 * @module
 */

import { z } from "zod";
import {
  assertKeyStrength,
  HmacTokenizer,
  keyByteLength,
  MIN_KEY_BYTES,
  sha256,
  toHex,
  type Tokenizer,
} from "./hmac_sha256.ts";

/** The `format` value of keyring files written by this module. */
export const KEYRING_FORMAT = "carrel-keyring/1";

/** Environment variable naming the keyring file. */
export const KEYRING_ENV = "CARREL_KEYRING";

/** Environment variable holding a single key, used when no keyring is configured. */
export const KEY_ENV = "PII_HMAC_KEY";

const KEY_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Label mixed into key fingerprints so they cannot be confused with tokens. */
const FINGERPRINT_LABEL = "carrel/key-fingerprint/v1\u0000";

const MS_PER_DAY = 86_400_000;

/** One key entry as stored in a keyring file. */
const KeyEntrySchema = z.strictObject({
  id: z.string({ error: "must be a string" }).regex(
    KEY_ID_PATTERN,
    "must be 1-64 characters from A-Z a-z 0-9 . _ - starting with a letter or digit",
  ),
  created: z.iso.datetime({ offset: true, error: "must be an ISO 8601 date-time" }),
  secret: z.string({ error: "must be a string" }).refine(
    (s) => {
      try {
        return keyByteLength(s) >= MIN_KEY_BYTES;
      } catch {
        return false;
      }
    },
    `must be valid text of at least ${MIN_KEY_BYTES} bytes (UTF-8)`,
  ),
});

/** The keyring file as stored on disk. */
const KeyringFileSchema = z.strictObject({
  format: z.literal(KEYRING_FORMAT, { error: `must be "${KEYRING_FORMAT}"` }),
  active: z.string({ error: "must be a string" }),
  keys: z.array(KeyEntrySchema, { error: "must be an array" }).min(1, "must not be empty"),
}, { error: "must be a JSON object" }).superRefine((file, ctx) => {
  const seenIds = new Map<string, number>();
  const seenSecrets = new Map<string, number>();
  file.keys.forEach((key, i) => {
    const dupId = seenIds.get(key.id);
    if (dupId !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["keys", i, "id"],
        message: `duplicates keys[${dupId}].id "${key.id}"`,
      });
    }
    seenIds.set(key.id, i);
    const dupSecret = seenSecrets.get(key.secret);
    if (dupSecret !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["keys", i, "secret"],
        message: `is the same as keys[${dupSecret}].secret; every version needs its own secret`,
      });
    }
    seenSecrets.set(key.secret, i);
  });
  if (!seenIds.has(file.active)) {
    ctx.addIssue({
      code: "custom",
      path: ["active"],
      // Echo the value only when it is too short to be a secret pasted into the wrong field.
      message: file.active.length < MIN_KEY_BYTES
        ? `must be the id of one of the keys, got "${file.active}"`
        : "must be the id of one of the keys",
    });
  }
});

type KeyringFile = z.infer<typeof KeyringFileSchema>;

/** Formats a zod issue path as `keys[1].secret`. */
function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? String(part) : `.${String(part)}`;
  }
  return out === "" ? "(top level)" : out;
}

/** Turns a zod issue into a message fragment that never echoes input values. */
function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === "unrecognized_keys") {
    // A valid secret is at least MIN_KEY_BYTES long, so shorter names cannot leak one.
    const names = issue.keys.map((k) => k.length < MIN_KEY_BYTES ? `"${k}"` : "(a long name)");
    return `unexpected field ${names.join(", ")}`;
  }
  return issue.message;
}

/**
 * One version of a tokenization key. The secret is held privately: it is not
 * an enumerable property and is left out of `JSON.stringify` and inspection.
 *
 * @example Tokenize with the active key
 * ```ts
 * import { activeKey, loadKeyring } from "./keyring.ts";
 * const key = activeKey(await loadKeyring());
 * const token = key.tokenizer().token("P000123456");
 * console.log(key.id, key.ageDays()); // e.g. "k2" 41.2
 * ```
 */
export class KeyVersion {
  /** Version id, such as `"k2"`, or `"env-1a2b3c4d"` for a key from `PII_HMAC_KEY`. */
  readonly id: string;
  /** When the key was created, or `null` when unknown (keys from `PII_HMAC_KEY`). */
  readonly created: Date | null;
  /** Where the key came from, for messages: `PII_HMAC_KEY` or `keyring "path" keys[1]`. */
  readonly origin: string;
  #secret: string;
  #tokenizer: HmacTokenizer | undefined;

  /**
   * Wraps a secret. The secret must be at least 32 bytes (UTF-8).
   *
   * @param id Version id.
   * @param secret Key text; the HMAC key is its UTF-8 bytes.
   * @param created Creation time, or `null` if unknown.
   * @param origin Where the key came from, used in error messages.
   */
  constructor(id: string, secret: string, created: Date | null, origin: string) {
    assertKeyStrength(secret, origin);
    this.id = id;
    this.created = created;
    this.origin = origin;
    this.#secret = secret;
  }

  /**
   * Returns the tokenizer for this key (created once, then reused).
   *
   * @example
   * ```ts
   * import { KeyVersion } from "./keyring.ts";
   * const key = new KeyVersion("k1", "x".repeat(32), new Date(), "example");
   * key.tokenizer().token("P1"); // 64 hex characters
   * ```
   */
  tokenizer(): HmacTokenizer {
    this.#tokenizer ??= new HmacTokenizer(this.#secret, this.origin);
    return this.#tokenizer;
  }

  /**
   * Age of the key in days (fractional) at `now`, or `null` when the creation
   * time is unknown. Used by compliance checks on key rotation.
   *
   * @example
   * ```ts
   * import { KeyVersion } from "./keyring.ts";
   * const key = new KeyVersion("k1", "x".repeat(32), new Date("2025-01-01T00:00:00Z"), "example");
   * key.ageDays(new Date("2025-01-31T00:00:00Z")); // 30
   * ```
   */
  ageDays(now: Date = new Date()): number | null {
    if (this.created === null) return null;
    return (now.getTime() - this.created.getTime()) / MS_PER_DAY;
  }

  /** Tells whether `secret` is this key's secret (used to refuse reusing a secret). */
  hasSecret(secret: string): boolean {
    const mine = this.#secret;
    if (typeof secret !== "string" || secret.length !== mine.length) return false;
    // Constant-time over the length, so timing does not reveal a matching prefix.
    let diff = 0;
    for (let i = 0; i < mine.length; i++) diff |= mine.charCodeAt(i) ^ secret.charCodeAt(i);
    return diff === 0;
  }

  /** JSON form without the secret. */
  toJSON(): { id: string; created: string | null; origin: string } {
    return { id: this.id, created: this.created?.toISOString() ?? null, origin: this.origin };
  }

  /** Inspection (console.log) form without the secret. */
  [Symbol.for("Deno.customInspect")](): string {
    return `KeyVersion ${JSON.stringify(this.toJSON())}`;
  }

  /** Inspection (node:util) form without the secret. */
  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `KeyVersion ${JSON.stringify(this.toJSON())}`;
  }
}

/** A set of key versions with exactly one active version. */
export interface Keyring {
  /** `"file"` for a keyring file, `"env"` for a single key from `PII_HMAC_KEY`. */
  readonly source: "file" | "env";
  /** The keyring file path, or `null` for `"env"`. */
  readonly path: string | null;
  /** Id of the active version (used for new tokens). */
  readonly activeId: string;
  /** All versions, oldest first as listed in the file. */
  readonly keys: readonly KeyVersion[];
}

/** Anything environment-like: `Deno.env`, or a plain record such as `{ PII_HMAC_KEY: "…" }`. */
export type EnvSource =
  | { get(name: string): string | undefined }
  | Readonly<Record<string, string | undefined>>;

function readEnv(env: EnvSource, name: string): string | undefined {
  const get = (env as { get?: unknown }).get;
  const value = typeof get === "function"
    ? (get as (n: string) => string | undefined).call(env, name)
    : (env as Readonly<Record<string, string | undefined>>)[name];
  return value === "" ? undefined : value;
}

/**
 * Short, non-reversible fingerprint of a secret: the first 8 hex characters of
 * SHA-256 over a fixed label and the secret. Identifies which key made a token
 * without revealing anything usable about the key.
 *
 * @example
 * ```ts
 * import { keyFingerprint } from "./keyring.ts";
 * keyFingerprint("x".repeat(32)); // 8 hex characters
 * ```
 */
export function keyFingerprint(secret: string | Uint8Array): string {
  const label = new TextEncoder().encode(FINGERPRINT_LABEL);
  const key = typeof secret === "string" ? new TextEncoder().encode(secret) : secret;
  const data = new Uint8Array(label.length + key.length);
  data.set(label);
  data.set(key, label.length);
  const fp = toHex(sha256(data)).slice(0, 8);
  data.fill(0);
  return fp;
}

/**
 * Loads the tokenization keys: from the keyring file named by
 * `CARREL_KEYRING` if it is set, otherwise the single key in `PII_HMAC_KEY`
 * (version id `env-` plus {@link keyFingerprint}, creation time unknown).
 *
 * @param env Where to read the two variables; defaults to `Deno.env`.
 * @throws {Error} If neither variable is set, the key is shorter than 32
 *   bytes, or the keyring file is unreadable, too permissive or invalid.
 *
 * @example
 * ```ts
 * import { activeKey, loadKeyring } from "./keyring.ts";
 * const keyring = await loadKeyring({ PII_HMAC_KEY: "a-secret-of-at-least-thirty-two-bytes!!" });
 * activeKey(keyring).id; // "env-…"
 * ```
 */
export async function loadKeyring(env: EnvSource = Deno.env): Promise<Keyring> {
  const path = readEnv(env, KEYRING_ENV);
  if (path !== undefined) return await readKeyringFile(path);
  const secret = readEnv(env, KEY_ENV);
  if (secret === undefined) {
    throw new Error(
      `Cannot load the tokenization key: ${KEY_ENV} is not set (set it, or set ${KEYRING_ENV} to a keyring file)`,
    );
  }
  assertKeyStrength(secret, KEY_ENV);
  const key = new KeyVersion(`env-${keyFingerprint(secret)}`, secret, null, KEY_ENV);
  return { source: "env", path: null, activeId: key.id, keys: [key] };
}

/** Refuses a keyring file that is not a regular file or is accessible to group/others. */
async function checkKeyringFile(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(`Cannot load keyring "${path}": the file does not exist`);
    }
    throw new Error(`Cannot load keyring "${path}": ${(e as Error).message}`);
  }
  if (!info.isFile) throw new Error(`Cannot load keyring "${path}": it is not a regular file`);
  // `mode` is null on Windows, where POSIX permission bits do not exist.
  if (info.mode !== null && (info.mode & 0o077) !== 0) {
    const mode = (info.mode & 0o777).toString(8).padStart(4, "0");
    throw new Error(
      `Cannot load keyring "${path}": its mode is ${mode}, so group or others can access it; run chmod 600 "${path}"`,
    );
  }
}

/** Reads, permission-checks and validates a keyring file, returning the raw parsed content. */
async function readKeyringData(path: string): Promise<KeyringFile> {
  await checkKeyringFile(path);
  const text = await Deno.readTextFile(path);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    // JSON.parse messages quote the surrounding text, which may be a secret: keep only the position.
    const position = /position (\d+)/.exec((e as Error).message)?.[1];
    throw new Error(
      `Cannot load keyring "${path}": it is not valid JSON${
        position === undefined ? "" : ` (at character ${position})`
      }`,
    );
  }
  const parsed = KeyringFileSchema.safeParse(json);
  if (!parsed.success) {
    const details = parsed.error.issues.map((issue) =>
      `${formatPath(issue.path)} ${describeIssue(issue)}`
    );
    throw new Error(`Cannot load keyring "${path}": ${details.join("; ")}`);
  }
  return parsed.data;
}

function toKeyring(path: string, data: KeyringFile): Keyring {
  const keys = data.keys.map((k, i) =>
    new KeyVersion(k.id, k.secret, new Date(k.created), `keyring "${path}" keys[${i}]`)
  );
  return { source: "file", path, activeId: data.active, keys };
}

/**
 * Reads and validates a keyring file. The file must be a regular file that
 * group and others cannot access (`mode & 0o077` is 0).
 *
 * @example
 * ```ts
 * import { readKeyringFile } from "./keyring.ts";
 * const keyring = await readKeyringFile("/etc/carrel/keyring.json");
 * ```
 */
export async function readKeyringFile(path: string): Promise<Keyring> {
  return toKeyring(path, await readKeyringData(path));
}

/**
 * Returns the active key version of a keyring.
 *
 * @example
 * ```ts
 * import { activeKey, loadKeyring } from "./keyring.ts";
 * const tokenizer = activeKey(await loadKeyring()).tokenizer();
 * ```
 */
export function activeKey(keyring: Keyring): KeyVersion {
  return keyById(keyring, keyring.activeId);
}

/**
 * Returns the key version with id `id`.
 *
 * @throws {Error} If the keyring has no such version.
 *
 * @example Re-tokenize with the version recorded next to old tokens
 * ```ts
 * import { keyById, loadKeyring } from "./keyring.ts";
 * const k1 = keyById(await loadKeyring(), "k1");
 * ```
 */
export function keyById(keyring: Keyring, id: string): KeyVersion {
  const key = keyring.keys.find((k) => k.id === id);
  if (key === undefined) {
    const where = keyring.path === null ? `from ${KEY_ENV}` : `in keyring "${keyring.path}"`;
    const known = keyring.keys.map((k) => `"${k.id}"`).join(", ");
    throw new Error(`Cannot find key version "${id}" ${where}: the known versions are ${known}`);
  }
  return key;
}

/** Options for {@link rotateKeyring} and {@link initKeyring}. */
export interface NewKeyOptions {
  /** Id of the new version; defaults to the next `k<n>`. */
  readonly newId?: string;
  /** Secret of the new version; defaults to 32 random bytes as 64 hex characters. */
  readonly secret?: string;
  /** Creation time recorded for the new version; defaults to now. */
  readonly now?: Date;
}

/** Result of {@link rotateKeyring}. Contains no secret. */
export interface RotationResult {
  /** The previously active version. */
  readonly oldId: string;
  /** The new, now active version. */
  readonly newId: string;
}

/** 32 random bytes from the system CSPRNG, as 64 lowercase hex characters. */
function generateSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  const secret = toHex(bytes);
  bytes.fill(0);
  return secret;
}

function nextId(ids: readonly string[]): string {
  let max = 0;
  for (const id of ids) {
    const m = /^k(\d{1,9})$/.exec(id);
    if (m) max = Math.max(max, Number(m[1]));
  }
  let n = max + 1;
  while (ids.includes(`k${n}`)) n++;
  return `k${n}`;
}

function checkNewKey(path: string, id: string, secret: string, existing: readonly KeyVersion[]) {
  if (!KEY_ID_PATTERN.test(id)) {
    throw new Error(
      `Cannot add key version to keyring "${path}": newId must be 1-64 characters from A-Z a-z 0-9 . _ - starting with a letter or digit`,
    );
  }
  if (existing.some((k) => k.id === id)) {
    throw new Error(
      `Cannot add key version to keyring "${path}": a version with id "${id}" already exists`,
    );
  }
  assertKeyStrength(secret, "the new secret");
  if (existing.some((k) => k.hasSecret(secret))) {
    throw new Error(
      `Cannot add key version to keyring "${path}": the new secret is already used by another version`,
    );
  }
}

function serialize(data: KeyringFile): string {
  return JSON.stringify(data, null, 2) + "\n";
}

function dirOf(path: string): string {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return i < 0 ? "." : i === 0 ? path.slice(0, 1) : path.slice(0, i);
}

/** Writes `text` to a new file next to `path` with mode 0600, synced; returns its path. */
async function writePrivateTemp(path: string, text: string): Promise<string> {
  const suffix = toHex(crypto.getRandomValues(new Uint8Array(6)));
  const tmp = `${path}.${suffix}.tmp`;
  const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
  try {
    const bytes = new TextEncoder().encode(text);
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    bytes.fill(0);
    await file.sync();
  } catch (e) {
    file.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  file.close();
  if (Deno.build.os !== "windows") await Deno.chmod(tmp, 0o600);
  return tmp;
}

/** Best-effort fsync of a directory so that a rename in it survives a crash. */
async function syncDir(dir: string): Promise<void> {
  if (Deno.build.os === "windows") return;
  try {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch {
    // Some file systems do not support syncing directories; the rename is still atomic.
  }
}

/** Runs `fn` while holding an exclusive `<path>.lock` file. */
async function withLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const lock = `${path}.lock`;
  let handle: Deno.FsFile;
  try {
    handle = await Deno.open(lock, { write: true, createNew: true, mode: 0o600 });
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) {
      throw new Error(
        `Cannot change keyring "${path}": it is locked by another change; if none is running, remove "${lock}"`,
      );
    }
    throw e;
  }
  handle.close();
  try {
    return await fn();
  } finally {
    await Deno.remove(lock).catch(() => {});
  }
}

/**
 * Adds a new key version to a keyring file and makes it active. The old
 * versions are kept, so tokens made with them can still be recomputed (see
 * {@link crosswalk}). The file is rewritten atomically (temporary file, fsync,
 * rename) with mode 0600, under a `<path>.lock` lock file.
 *
 * @returns The old and new active ids (never the secret).
 *
 * @example
 * ```ts
 * import { rotateKeyring } from "./keyring.ts";
 * const { oldId, newId } = await rotateKeyring("/etc/carrel/keyring.json");
 * // e.g. oldId "k1", newId "k2"
 * ```
 */
export async function rotateKeyring(
  path: string,
  options: NewKeyOptions = {},
): Promise<RotationResult> {
  return await withLock(path, async () => {
    const data = await readKeyringData(path);
    const existing = toKeyring(path, data).keys;
    const newId = options.newId ?? nextId(data.keys.map((k) => k.id));
    const secret = options.secret ?? generateSecret();
    checkNewKey(path, newId, secret, existing);
    const created = (options.now ?? new Date()).toISOString();
    const next: KeyringFile = {
      format: KEYRING_FORMAT,
      active: newId,
      keys: [...data.keys, { id: newId, created, secret }],
    };
    const tmp = await writePrivateTemp(path, serialize(next));
    try {
      await Deno.rename(tmp, path);
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
    await syncDir(dirOf(path));
    return { oldId: data.active, newId };
  });
}

/**
 * Creates a new keyring file with a single, active key version. Refuses to
 * overwrite an existing file.
 *
 * @returns The id of the new version (never the secret).
 *
 * @example
 * ```ts
 * import { initKeyring } from "./keyring.ts";
 * const { id } = await initKeyring("/etc/carrel/keyring.json"); // "k1"
 * ```
 */
export async function initKeyring(
  path: string,
  options: NewKeyOptions = {},
): Promise<{ id: string }> {
  const id = options.newId ?? "k1";
  const secret = options.secret ?? generateSecret();
  checkNewKey(path, id, secret, []);
  const data: KeyringFile = {
    format: KEYRING_FORMAT,
    active: id,
    keys: [{ id, created: (options.now ?? new Date()).toISOString(), secret }],
  };
  const tmp = await writePrivateTemp(path, serialize(data));
  try {
    // link() fails if `path` exists, so an existing keyring is never replaced.
    await Deno.link(tmp, path);
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) {
      throw new Error(`Cannot create keyring "${path}": the file already exists`);
    }
    throw e;
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
  await syncDir(dirOf(path));
  return { id };
}

/** One row of a token crosswalk. */
export interface CrosswalkPair {
  /** Token under the old key version. */
  readonly old_token: string;
  /** Token under the new key version. */
  readonly new_token: string;
}

/**
 * Maps old tokens to new tokens for a key rotation, from the raw values
 * (so it must run where raw values may be seen). Each distinct raw value
 * gives one pair, in first-seen order.
 *
 * @example
 * ```ts
 * import { activeKey, crosswalk, keyById, readKeyringFile } from "./keyring.ts";
 * const keyring = await readKeyringFile("/etc/carrel/keyring.json");
 * const pairs = crosswalk(
 *   keyById(keyring, "k1").tokenizer(),
 *   activeKey(keyring).tokenizer(),
 *   ["P000123456", "P000123457"],
 * );
 * ```
 */
export function crosswalk(
  oldTokenizer: Tokenizer,
  newTokenizer: Tokenizer,
  rawValues: Iterable<string>,
): CrosswalkPair[] {
  const seen = new Set<string>();
  const pairs: CrosswalkPair[] = [];
  for (const raw of rawValues) {
    if (seen.has(raw)) continue;
    seen.add(raw);
    pairs.push({ old_token: oldTokenizer.token(raw), new_token: newTokenizer.token(raw) });
  }
  return pairs;
}
