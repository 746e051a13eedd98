/**
 * Verifies the whole audit trail: every chain's entries and links, every chain against its head
 * row, every run chain against the seals the global chain holds, retention cuts against their
 * anchors, and the global chain against the signed checkpoints (CARREL_HOME's, or an auditor's
 * exported copy with the public key). `audit verify`, the compliance report and the console all
 * call {@link verifyAudit}.
 *
 * @module
 */
import {
  ANCHOR_OPERATION,
  type AuditChainHead,
  type AuditEntry,
  auditHash,
  chainMarks,
  chainOf,
  GENESIS_HASH,
  GLOBAL_CHAIN,
  SEAL_OPERATION,
} from "./audit.ts";
import {
  checkpointPaths,
  CheckpointSigner,
  type CheckpointVerifier,
  checkSignature,
  importPublicKey,
  readCheckpointFile,
  type SignedCheckpoint,
  storeLocation,
} from "./audit_checkpoint.ts";

/** What verification reads: the state store satisfies it. */
export interface AuditSource {
  readonly kind: "pglite" | "postgres";
  readonly location: string;
  iterateAuditChains(options?: { chain?: string; fromPos?: number }): AsyncIterable<AuditEntry>;
  auditHeads(): Promise<AuditChainHead[]>;
  auditStore(): Promise<{ storeId: string; legacyPos: number }>;
}

/** Where the signed checkpoints come from. */
export interface VerifyOptions {
  /** `CARREL_HOME`: its checkpoint file, checked with its signing key's public half. */
  home?: string;
  /** An exported checkpoint file (an auditor's copy), checked with `publicKey` instead. */
  checkpoints?: string;
  /** The public key file (JWK) for `checkpoints`. */
  publicKey?: string;
  env?: { get(key: string): string | undefined };
}

/** What was checked. */
export interface AuditSummary {
  /** Entries read, and chains (the global one and one per run). */
  entries: number;
  chains: number;
  /** The global chain's newest hash. */
  head: string;
  checkpoints: {
    file: string | null;
    /** Signed checkpoints of this store that verified. */
    verified: number;
    latest: { at: string; pos: number } | null;
    keyId: string | null;
  };
  /** The latest retention cutoff: entries before it may have been purged (null: none). */
  purgedBefore: string | null;
  /** Weaknesses that are not breaks, such as "no signed checkpoint yet". */
  warnings: string[];
}

/** Where the trail is broken: the first bad entry, by row number when it still exists. */
export interface AuditBreak {
  /** The bad entry's row number, or null when the entry is missing. */
  seq: number | null;
  /** Its chain (`global` or a run id), or null for the store as a whole. */
  chain: string | null;
  /** Its position in the chain, or null for the store as a whole. */
  pos: number | null;
  reason: string;
}

/** The verdict of {@link verifyAudit}. */
export type AuditVerdict =
  | ({ ok: true } & AuditSummary)
  | ({ ok: false } & AuditBreak & AuditSummary);

/** A position a seal or anchor records, and the global entry that records it. */
interface Mark {
  hash: string;
  by: number;
}

/** The checks of one chain, entry by entry. */
class ChainCheck {
  entries = 0;
  first: AuditEntry | undefined;
  last: AuditEntry | undefined;

  constructor(
    readonly chain: string,
    readonly head: AuditChainHead | undefined,
    readonly seals: ReadonlyMap<number, Mark> = new Map(),
    /** Positions up to which run entries may be in the global chain (written before runs had chains). */
    readonly legacyPos = 0,
  ) {}

  #at(e: AuditEntry, reason: string): AuditBreak {
    return { seq: e.seq, chain: this.chain, pos: e.pos, reason };
  }

  add(e: AuditEntry): AuditBreak | undefined {
    this.entries++;
    const belongs = chainOf(e);
    if (belongs !== this.chain && !(this.chain === GLOBAL_CHAIN && e.pos <= this.legacyPos)) {
      return this.#at(e, `its correlation id puts it in chain "${belongs}", not in this one`);
    }
    if (auditHash(e) !== e.hash) return this.#at(e, "its hash does not match its content");
    const last = this.last;
    if (last) {
      if (e.pos !== last.pos + 1) {
        return this.#at(e, `entries ${last.pos + 1} to ${e.pos - 1} are missing`);
      }
      if (e.prevHash !== last.hash) {
        return this.#at(e, "it does not point at the previous entry's hash");
      }
      if (e.seq <= last.seq) {
        return this.#at(e, "it is out of order: its row number is below the previous entry's");
      }
    } else {
      this.first = e;
      if (e.pos === 1 && e.prevHash !== GENESIS_HASH) {
        return this.#at(e, "the first entry does not start the chain");
      }
    }
    const seal = this.seals.get(e.pos);
    if (seal && seal.hash !== e.hash) {
      return this.#at(e, `it does not match the seal in global entry ${seal.by}: rewritten`);
    }
    this.last = e;
    return undefined;
  }

  /** The checks that need the whole chain: where it starts, where it ends, what was sealed. */
  finish(vouched: ReadonlySet<string>, purgedThrough: number): AuditBreak | undefined {
    const { first, last, head } = this;
    if (first && first.pos > 1 && !vouched.has(`${first.pos - 1}:${first.prevHash}`)) {
      return this.#at(first, "entries before it were deleted without an audit:anchor entry");
    }
    if (last && !head) return this.#at(last, "its chain has no head row");
    if (head && last) {
      if (last.pos < head.pos) {
        return {
          seq: null,
          chain: this.chain,
          pos: last.pos + 1,
          reason: `entries ${
            last.pos + 1
          } to ${head.pos} were removed: the chain does not reach its recorded head`,
        };
      }
      if (last.pos !== head.pos || last.hash !== head.hash) {
        return this.#at(last, "the chain's head row does not match its newest entry");
      }
    }
    if (head && !last && head.pos > 0 && head.pos !== head.basePos) {
      return {
        seq: null,
        chain: this.chain,
        pos: head.basePos + 1,
        reason: `the chain is empty, but its head says it has ${head.pos} entries`,
      };
    }
    const lo = first?.pos ?? Infinity;
    const hi = last?.pos ?? -Infinity;
    const missing = [...this.seals.entries()]
      .filter(([pos]) => (pos < lo || pos > hi) && pos > purgedThrough)
      .sort((a, b) => a[0] - b[0])[0];
    if (missing) {
      return {
        seq: null,
        chain: this.chain,
        pos: missing[0],
        reason: `entry ${missing[0]} is missing: global entry ${
          missing[1].by
        } sealed the chain there`,
      };
    }
    return undefined;
  }
}

/** What the global chain says about the run chains and about retention. */
class GlobalFacts {
  /** chain -> position -> sealed hash. */
  readonly seals = new Map<string, Map<number, Mark>>();
  /** chain -> retention boundaries (`pos:hash`) that anchors vouch for, and the highest. */
  readonly vouched = new Map<string, Set<string>>();
  readonly purgedThrough = new Map<string, number>();
  /** Global entries by position (hash and time), for the checkpoints. */
  readonly byPos = new Map<number, { hash: string; at: string }>();
  /** Keys that sealed checkpoints, and the latest retention cutoff. */
  readonly checkpointKeys = new Set<string>();
  latestCutoff = "";

  note(e: AuditEntry): AuditBreak | undefined {
    this.byPos.set(e.pos, { hash: e.hash, at: e.at });
    if (e.operation === SEAL_OPERATION) {
      for (const m of chainMarks(e)) {
        let forChain = this.seals.get(m.chain);
        if (!forChain) this.seals.set(m.chain, forChain = new Map());
        forChain.set(m.pos, { hash: m.hash, by: e.seq });
      }
      if (typeof e.detail?.keyId === "string") this.checkpointKeys.add(e.detail.keyId);
    } else if (e.operation === ANCHOR_OPERATION) {
      const before = typeof e.detail?.before === "string" ? e.detail.before : undefined;
      if (before !== undefined && Date.parse(before) > Date.parse(e.at)) {
        return {
          seq: e.seq,
          chain: GLOBAL_CHAIN,
          pos: e.pos,
          reason: "this retention anchor claims a cutoff later than its own time",
        };
      }
      if (before && before > this.latestCutoff) this.latestCutoff = before;
      for (const m of chainMarks(e)) {
        let set = this.vouched.get(m.chain);
        if (!set) this.vouched.set(m.chain, set = new Set());
        set.add(`${m.pos}:${m.hash}`);
        this.purgedThrough.set(m.chain, Math.max(this.purgedThrough.get(m.chain) ?? 0, m.pos));
      }
    }
    return undefined;
  }
}

const chainLabel = (chain: string | null) =>
  chain === null ? "the store" : chain === GLOBAL_CHAIN ? "the global chain" : `run ${chain}`;

/**
 * Describes a break for people: `entry 12 (run x@..., position 3): reason`.
 *
 * @example
 * ```ts
 * import { describeBreak } from "./audit_verify.ts";
 * describeBreak({ seq: 12, chain: "global", pos: 3, reason: "its hash does not match its content" });
 * // "entry 12 (the global chain, position 3): its hash does not match its content"
 * ```
 */
export function describeBreak(b: AuditBreak): string {
  if (b.seq !== null) {
    return `entry ${b.seq} (${chainLabel(b.chain)}, position ${b.pos}): ${b.reason}`;
  }
  if (b.pos !== null) return `${chainLabel(b.chain)}, position ${b.pos}: ${b.reason}`;
  return b.reason;
}

/** The trusted keys and checkpoint file the options name. */
async function evidence(options: VerifyOptions): Promise<{
  trusted: CheckpointVerifier[];
  file: Awaited<ReturnType<typeof readCheckpointFile>>;
  path: string | null;
  local: boolean;
}> {
  if (options.checkpoints !== undefined || options.publicKey !== undefined) {
    if (!options.checkpoints || !options.publicKey) {
      throw new Error(
        "Cannot verify exported checkpoints: give both the checkpoint file and the public key",
      );
    }
    const trusted = [await importPublicKey(await Deno.readTextFile(options.publicKey))];
    const file = await readCheckpointFile(options.checkpoints);
    if (!file) throw new Error(`Cannot read the checkpoint file ${options.checkpoints}: not found`);
    return { trusted, file, path: options.checkpoints, local: false };
  }
  if (options.home === undefined) return { trusted: [], file: undefined, path: null, local: false };
  const paths = checkpointPaths(options.home, options.env);
  const signer = await CheckpointSigner.open(paths.key, { create: false });
  return {
    trusted: signer ? [signer.verifier] : [],
    file: await readCheckpointFile(paths.file),
    path: paths.file,
    local: true,
  };
}

/**
 * Verifies the audit trail and, when `home` (or an exported checkpoint file with its public key)
 * is given, the signed checkpoints too. Returns the first break found: in the global chain, then
 * against the checkpoints, then in the run chains by name.
 *
 * @example
 * ```ts ignore
 * import { describeBreak, verifyAudit } from "./audit_verify.ts";
 * const verdict = await verifyAudit(store, { home: ".carrel" });
 * if (!verdict.ok) console.error(`Audit chain broken at ${describeBreak(verdict)}`);
 * ```
 */
export async function verifyAudit(
  source: AuditSource,
  options: VerifyOptions = {},
): Promise<AuditVerdict> {
  const summary: AuditSummary = {
    entries: 0,
    chains: 0,
    head: GENESIS_HASH,
    checkpoints: { file: null, verified: 0, latest: null, keyId: null },
    purgedBefore: null,
    warnings: [],
  };
  const fail = (b: AuditBreak): AuditVerdict => ({ ok: false, ...b, ...summary });
  const { trusted, file, path, local } = await evidence(options);
  summary.checkpoints.file = path;
  summary.checkpoints.keyId = trusted[0]?.keyId ?? null;
  const heads = new Map((await source.auditHeads()).map((h) => [h.chain, h]));
  const { storeId, legacyPos } = await source.auditStore();
  const location = storeLocation(source);

  // The global chain first: it holds the seals and anchors the run chains are checked against.
  const facts = new GlobalFacts();
  const global = new ChainCheck(GLOBAL_CHAIN, heads.get(GLOBAL_CHAIN), new Map(), legacyPos);
  for await (const e of source.iterateAuditChains({ chain: GLOBAL_CHAIN })) {
    const broken = global.add(e) ?? facts.note(e);
    summary.entries++;
    if (broken) return fail(broken);
  }
  summary.chains = 1;
  summary.head = global.last?.hash ?? GENESIS_HASH;
  summary.purgedBefore = facts.latestCutoff || null;
  const globalBreak = global.finish(
    facts.vouched.get(GLOBAL_CHAIN) ?? new Set(),
    facts.purgedThrough.get(GLOBAL_CHAIN) ?? 0,
  );
  if (globalBreak) return fail(globalBreak);

  // The checkpoints: signed by a trusted key, of this store, and still in the global chain.
  const ours: { line: number; checkpoint: SignedCheckpoint }[] = [];
  if (file) {
    if (file.malformed.length > 0) {
      return fail({
        seq: null,
        chain: null,
        pos: null,
        reason: `line ${file.malformed[0]} of ${file.path} is not a checkpoint`,
      });
    }
    for (const c of file.checkpoints) if (c.checkpoint.location === location) ours.push(c);
  }
  if (ours.length > 0 && trusted.length === 0) {
    return fail({
      seq: null,
      chain: null,
      pos: null,
      reason: `${path} holds signed checkpoints, but the signing key is missing: ` +
        "verify them with the exported public key (--checkpoints, --public-key)",
    });
  }
  const globalPurged = facts.purgedThrough.get(GLOBAL_CHAIN) ?? 0;
  for (const { line, checkpoint: cp } of ours) {
    const where = `the signed checkpoint of ${cp.at} (line ${line} of ${path})`;
    const bad = await checkSignature(cp, trusted);
    if (bad) return fail({ seq: null, chain: null, pos: null, reason: `${where}: ${bad}` });
    if (cp.store !== storeId) {
      return fail({
        seq: null,
        chain: null,
        pos: null,
        reason:
          `${where} is of store ${cp.store} (${cp.global.pos} global entries), but this store ` +
          `is ${storeId}: the state store was replaced, deleted or re-created since`,
      });
    }
    const entry = facts.byPos.get(cp.global.pos);
    if (entry) {
      if (entry.hash !== cp.global.hash) {
        return fail({
          seq: null,
          chain: GLOBAL_CHAIN,
          pos: cp.global.pos,
          reason: `it does not match ${where}: the chain was rewritten`,
        });
      }
    } else if (cp.global.pos <= globalPurged && cp.global.pos < (global.first?.pos ?? Infinity)) {
      if (!(cp.global.at < facts.latestCutoff)) {
        return fail({
          seq: null,
          chain: GLOBAL_CHAIN,
          pos: cp.global.pos,
          reason: `a purge deleted it, but it is newer than every retention cutoff (${where})`,
        });
      }
    } else {
      const from = (global.last?.pos ?? 0) + 1;
      return fail({
        seq: null,
        chain: GLOBAL_CHAIN,
        pos: Math.min(from, cp.global.pos),
        reason: summary.entries === 0
          ? `the store holds no audit entries, but ${where} recorded ${cp.global.pos}: the store was emptied`
          : from <= cp.global.pos
          ? `entries ${from} to ${cp.global.pos} are missing, but ${where} recorded them: the newest entries were deleted`
          : `it is missing, but ${where} recorded it`,
      });
    }
    summary.checkpoints.verified++;
    const latest = summary.checkpoints.latest;
    if (!latest || cp.global.pos > latest.pos) {
      summary.checkpoints.latest = { at: cp.at, pos: cp.global.pos };
    }
  }
  const localKey = local ? trusted[0]?.keyId : undefined;
  if (localKey && ours.length === 0 && facts.checkpointKeys.has(localKey)) {
    return fail({
      seq: null,
      chain: null,
      pos: null,
      reason: `${path} holds no checkpoint of this store, but the store records checkpoints ` +
        `signed by key ${localKey}: the checkpoint file was deleted or emptied`,
    });
  }
  if (ours.length === 0) {
    summary.warnings.push(
      "no signed checkpoint of this store: deleting its newest entries would not be detected",
    );
  }

  // The run chains, by name, each against its head, its seals and the retention anchors.
  let current: ChainCheck | undefined;
  const seen = new Set<string>([GLOBAL_CHAIN]);
  const finish = (check: ChainCheck) =>
    check.finish(
      facts.vouched.get(check.chain) ?? new Set(),
      facts.purgedThrough.get(check.chain) ?? 0,
    );
  for await (const e of source.iterateAuditChains()) {
    if (e.chain === GLOBAL_CHAIN) continue;
    if (current?.chain !== e.chain) {
      if (current) {
        const broken = finish(current);
        if (broken) return fail(broken);
      }
      current = new ChainCheck(e.chain, heads.get(e.chain), facts.seals.get(e.chain));
      seen.add(e.chain);
      summary.chains++;
    }
    summary.entries++;
    const broken = current.add(e);
    if (broken) return fail(broken);
  }
  if (current) {
    const broken = finish(current);
    if (broken) return fail(broken);
  }
  // Chains without entries: emptied by retention, or by someone else.
  const rest = new Set([...heads.keys(), ...facts.seals.keys()].filter((c) => !seen.has(c)));
  for (const chain of [...rest].sort()) {
    summary.chains++;
    const broken = finish(new ChainCheck(chain, heads.get(chain), facts.seals.get(chain)));
    if (broken) return fail(broken);
  }
  return { ok: true, ...summary };
}

/**
 * The quick check a checkpoint writer makes before it signs: the global chain still holds the
 * entry the previous checkpoint signed (unless retention deleted it) and links intact from there
 * to its head; with no previous checkpoint and a key that existed before, that no checkpoint seal
 * by that key is on record (which would mean the checkpoint file was deleted). Returns the break,
 * or `undefined`.
 */
export async function verifyGlobalTail(
  source: Pick<AuditSource, "iterateAuditChains" | "auditHeads" | "auditStore">,
  since: { pos: number; hash: string } | undefined,
  keyId: string,
  keyIsNew: boolean,
): Promise<AuditBreak | undefined> {
  const head = (await source.auditHeads()).find((h) => h.chain === GLOBAL_CHAIN);
  const check = new ChainCheck(
    GLOBAL_CHAIN,
    head,
    new Map(),
    (await source.auditStore()).legacyPos,
  );
  let first = true;
  for await (
    const e of source.iterateAuditChains({ chain: GLOBAL_CHAIN, fromPos: since?.pos ?? 1 })
  ) {
    if (first && since) {
      first = false;
      if (e.pos === since.pos && e.hash !== since.hash) {
        return {
          seq: e.seq,
          chain: GLOBAL_CHAIN,
          pos: e.pos,
          reason: "it does not match the last checkpoint: rewritten",
        };
      }
      if (e.pos > since.pos && (head?.basePos ?? 0) < since.pos) {
        return {
          seq: null,
          chain: GLOBAL_CHAIN,
          pos: since.pos,
          reason: "it is missing, but the last checkpoint recorded it",
        };
      }
    }
    first = false;
    if (!since && !keyIsNew && e.operation === SEAL_OPERATION && e.detail?.keyId === keyId) {
      return {
        seq: e.seq,
        chain: GLOBAL_CHAIN,
        pos: e.pos,
        reason:
          `key ${keyId} signed a checkpoint here, but the checkpoint file holds none of this store: it was deleted or emptied`,
      };
    }
    const broken = check.add(e);
    if (broken) return broken;
  }
  if (first && since && (head?.basePos ?? 0) < since.pos) {
    return {
      seq: null,
      chain: GLOBAL_CHAIN,
      pos: since.pos,
      reason: "it is missing, but the last checkpoint recorded it",
    };
  }
  const last = check.last;
  if (head && last && (last.pos !== head.pos || last.hash !== head.hash)) {
    return {
      seq: last.seq,
      chain: GLOBAL_CHAIN,
      pos: last.pos,
      reason: "the chain's head row does not match its newest entry",
    };
  }
  return undefined;
}
