/**
 * Signed checkpoints of the audit trail: the global chain's head (which seals every run chain),
 * signed with an Ed25519 key kept outside the database, so that someone who can write the audit
 * tables cannot delete the newest entries, or empty or replace the store, without it showing.
 *
 * - The signing key is a JWK file, mode 0600: `CARREL_AUDIT_KEY` names it, else
 *   `CARREL_HOME/audit/signing_key.jwk` (created on first use). Its public half
 *   ({@link publicJwk}) is what an auditor keeps.
 * - Checkpoints are JSON lines in `CARREL_HOME/audit/checkpoints.jsonl` (and in the log file):
 *   `{type, v, store, location, at, global: {pos, hash, at, seq}, chains, maxSeq, keyId, sig}`,
 *   `sig` being the Ed25519 signature (base64url) over the canonical JSON of the other fields.
 *
 * @module
 */
import { dirname, join } from "node:path";
import { createHash } from "node:crypto";
import { canonicalJson } from "./job_key.ts";

/** The environment variable naming the signing key's file. */
export const AUDIT_KEY_ENV = "CARREL_AUDIT_KEY";

/** What a checkpoint signs. */
export interface CheckpointBody {
  type: "carrel.audit.checkpoint";
  v: 1;
  /** The store's identity (`audit_store.store_id`). */
  store: string;
  /** Which configured store: `embedded`, or the PostgreSQL URL with its password masked. */
  location: string;
  /** When it was signed. */
  at: string;
  /** The global chain's newest entry. */
  global: { pos: number; hash: string; at: string; seq: number };
  /** Chains in the store, and the highest entry row number, when signed. */
  chains: number;
  maxSeq: number;
  /** The signing key's id: the first 16 hex digits of SHA-256 over its raw public key. */
  keyId: string;
}

/** A checkpoint as written: the body and its signature. */
export interface SignedCheckpoint extends CheckpointBody {
  sig: string;
}

type Env = { get(key: string): string | undefined };

/** Where the signing key and the checkpoint file are. */
export function checkpointPaths(home: string, env: Env = Deno.env): { key: string; file: string } {
  return {
    key: env.get(AUDIT_KEY_ENV) || join(home, "audit", "signing_key.jwk"),
    file: join(home, "audit", "checkpoints.jsonl"),
  };
}

/** Which store checkpoints are about: the embedded one, or a masked PostgreSQL location. */
export function storeLocation(store: { kind: "pglite" | "postgres"; location: string }): string {
  return store.kind === "pglite" ? "embedded" : store.location;
}

const ED25519 = { name: "Ed25519" } as const;

function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64url(text: string): Uint8Array<ArrayBuffer> {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const s = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytes;
}

/** A public key that verifies checkpoints. */
export interface CheckpointVerifier {
  keyId: string;
  key: CryptoKey;
}

/** The public JWK of an Ed25519 key, with its id as `kid`. */
export interface PublicJwk {
  kty: "OKP";
  crv: "Ed25519";
  x: string;
  kid: string;
}

function keyIdOf(x: string): string {
  return createHash("sha256").update(fromBase64url(x)).digest("hex").slice(0, 16);
}

/**
 * Reads a public key (a JWK as {@link CheckpointSigner.publicJwk} exports it; a private JWK works
 * too, only its public half is used).
 *
 * @example
 * ```ts ignore
 * const verifier = await importPublicKey(await Deno.readTextFile("carrel-audit.pub.jwk"));
 * ```
 */
export async function importPublicKey(text: string, source = "public key"): Promise<
  CheckpointVerifier
> {
  let jwk: Partial<PublicJwk>;
  try {
    jwk = JSON.parse(text);
  } catch {
    throw new Error(`Cannot read the audit ${source}: expected an Ed25519 JWK (JSON)`);
  }
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") {
    throw new Error(
      `Cannot read the audit ${source}: expected an Ed25519 JWK (kty OKP, crv Ed25519)`,
    );
  }
  const key = await crypto.subtle.importKey(
    "jwk",
    { kty: "OKP", crv: "Ed25519", x: jwk.x },
    ED25519,
    true,
    ["verify"],
  );
  return { keyId: keyIdOf(jwk.x), key };
}

/** The checkpoint signing key. */
export class CheckpointSigner {
  private constructor(
    readonly keyId: string,
    readonly publicJwk: PublicJwk,
    readonly verifier: CheckpointVerifier,
    readonly created: boolean,
    private readonly privateKey: CryptoKey,
  ) {}

  /**
   * Loads the key at `path`, or creates it there (mode 0600, folder 0700) when `create` allows
   * and it does not exist. A key readable by group or others is refused.
   *
   * @example
   * ```ts ignore
   * const signer = await CheckpointSigner.open(checkpointPaths(home).key, { create: true });
   * console.log(signer?.keyId);
   * ```
   */
  static async open(
    path: string,
    options: { create: boolean },
  ): Promise<CheckpointSigner | undefined> {
    let text: string | undefined;
    let created = false;
    try {
      text = await readPrivate(path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
      if (!options.create) return undefined;
      const pair = await crypto.subtle.generateKey(ED25519, true, ["sign", "verify"]);
      const jwk = await crypto.subtle.exportKey("jwk", (pair as CryptoKeyPair).privateKey);
      await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
      try {
        await Deno.writeTextFile(
          path,
          JSON.stringify({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, d: jwk.d }) + "\n",
          { mode: 0o600, createNew: true },
        );
        created = true;
      } catch (raced) {
        if (!(raced instanceof Deno.errors.AlreadyExists)) throw raced;
      }
      text = await readPrivate(path);
    }
    let jwk: { kty?: string; crv?: string; x?: string; d?: string };
    try {
      jwk = JSON.parse(text);
    } catch {
      throw new Error(`Cannot read the audit signing key ${path}: expected an Ed25519 JWK`);
    }
    if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || !jwk.x || !jwk.d) {
      throw new Error(`Cannot read the audit signing key ${path}: expected a private Ed25519 JWK`);
    }
    const privateKey = await crypto.subtle.importKey(
      "jwk",
      { kty: "OKP", crv: "Ed25519", x: jwk.x, d: jwk.d },
      ED25519,
      false,
      ["sign"],
    );
    const keyId = keyIdOf(jwk.x);
    const publicJwk: PublicJwk = { kty: "OKP", crv: "Ed25519", x: jwk.x, kid: keyId };
    const verifier = await importPublicKey(JSON.stringify(publicJwk));
    return new CheckpointSigner(keyId, publicJwk, verifier, created, privateKey);
  }

  /** Signs a checkpoint body. */
  async sign(body: Omit<CheckpointBody, "keyId" | "type" | "v">): Promise<SignedCheckpoint> {
    const full: CheckpointBody = {
      type: "carrel.audit.checkpoint",
      v: 1,
      ...body,
      keyId: this.keyId,
    };
    const sig = await crypto.subtle.sign(
      ED25519,
      this.privateKey,
      new TextEncoder().encode(canonicalJson(full)),
    );
    return { ...full, sig: base64url(new Uint8Array(sig)) };
  }
}

async function readPrivate(path: string): Promise<string> {
  const info = await Deno.stat(path);
  if (((info.mode ?? 0) & 0o077) !== 0) {
    throw new Error(
      `The audit signing key ${path} is readable by group or others (mode ${
        ((info.mode ?? 0) & 0o777).toString(8)
      }): chmod 600 it`,
    );
  }
  return await Deno.readTextFile(path);
}

/**
 * Checks a checkpoint's signature with the trusted keys; returns why it fails, or `undefined`
 * when it holds.
 */
export async function checkSignature(
  checkpoint: SignedCheckpoint,
  trusted: readonly CheckpointVerifier[],
): Promise<string | undefined> {
  const verifier = trusted.find((t) => t.keyId === checkpoint.keyId);
  if (!verifier) return `it is signed by key ${checkpoint.keyId}, which is not a trusted key`;
  const { sig, ...body } = checkpoint;
  let signature: Uint8Array<ArrayBuffer>;
  try {
    signature = fromBase64url(sig);
  } catch {
    return "its signature is not base64url";
  }
  const ok = await crypto.subtle.verify(
    ED25519,
    verifier.key,
    signature,
    new TextEncoder().encode(canonicalJson(body)),
  );
  return ok ? undefined : "its signature does not verify: it was altered or forged";
}

/** A checkpoint file's lines: the checkpoints, and the lines that are not checkpoints. */
export interface CheckpointFile {
  path: string;
  checkpoints: { line: number; checkpoint: SignedCheckpoint }[];
  malformed: number[];
}

function isCheckpoint(value: unknown): value is SignedCheckpoint {
  const c = value as Partial<SignedCheckpoint> | null;
  return !!c && c.type === "carrel.audit.checkpoint" && typeof c.store === "string" &&
    typeof c.location === "string" && typeof c.sig === "string" &&
    typeof c.keyId === "string" && !!c.global && typeof c.global.pos === "number" &&
    typeof c.global.hash === "string";
}

/** Reads a checkpoint file; `undefined` when it does not exist. */
export async function readCheckpointFile(path: string): Promise<CheckpointFile | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  const file: CheckpointFile = { path, checkpoints: [], malformed: [] };
  text.split("\n").forEach((raw, i) => {
    if (raw.trim() === "") return;
    try {
      const value = JSON.parse(raw);
      if (isCheckpoint(value)) file.checkpoints.push({ line: i + 1, checkpoint: value });
      else file.malformed.push(i + 1);
    } catch {
      file.malformed.push(i + 1);
    }
  });
  return file;
}

/** Appends a checkpoint to the file (created 0600 in a 0700 folder). */
export async function appendCheckpoint(path: string, checkpoint: SignedCheckpoint): Promise<void> {
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(path, JSON.stringify(checkpoint) + "\n", {
    append: true,
    create: true,
    mode: 0o600,
  });
}
