/**
 * The audit trail: hash-chained, append-only entries with correlation ids and no payloads
 * (NIST SP 800-53 AU-2, AU-3, AU-9, AU-10, AU-12). Each entry's hash is SHA-256 over the
 * canonical JSON of its fields and the previous entry's hash.
 *
 * @module
 */
import { canonicalJson, sha256Hex } from "./job_key.ts";

/** What a caller records: counts and names only, never values. */
export interface AuditInput {
  /** The run id, or another id that correlates entries (`keys:rotate`, `purge:...`). */
  correlationId: string;
  dagId?: string | null;
  taskId?: string | null;
  /** `run:start`, `task:success`, `checkpoint:verdict`, `tokenize:count`, `purge`, ... */
  operation: string;
  status: string;
  recordCount?: number | null;
  keyVersion?: string | null;
  /** Small, value-free facts: field names, counts, check names. */
  detail?: Record<string, unknown> | null;
}

/** An entry as stored. */
export interface AuditEntry {
  seq: number;
  /** ISO timestamp with milliseconds. */
  at: string;
  correlationId: string;
  dagId: string | null;
  taskId: string | null;
  operation: string;
  status: string;
  recordCount: number | null;
  keyVersion: string | null;
  detail: Record<string, unknown> | null;
  prevHash: string;
  hash: string;
}

/** The hash before the first entry. */
export const GENESIS_HASH = "0".repeat(64);

/**
 * Computes an entry's hash from its fields and the previous hash.
 *
 * @example
 * ```ts
 * import { auditHash, GENESIS_HASH } from "./audit.ts";
 * auditHash({
 *   seq: 1, at: "2026-01-01T00:00:00.000Z", correlationId: "demo@2026-01-01T00:00:00Z",
 *   dagId: "demo", taskId: null, operation: "run:start", status: "running",
 *   recordCount: null, keyVersion: null, detail: null, prevHash: GENESIS_HASH,
 * }).length; // 64
 * ```
 */
export function auditHash(entry: Omit<AuditEntry, "hash">): string {
  return sha256Hex(canonicalJson(hashedFields(entry, entry.prevHash, entry.seq)));
}

/** The fields an entry's hash covers, by the names they have in the canonical JSON. */
function hashedFields(
  entry: Omit<AuditEntry, "hash" | "seq" | "prevHash">,
  prevHash: string,
  seq: number,
) {
  return {
    seq,
    at: entry.at,
    correlation_id: entry.correlationId,
    dag_id: entry.dagId,
    task_id: entry.taskId,
    operation: entry.operation,
    status: entry.status,
    record_count: entry.recordCount,
    key_version: entry.keyVersion,
    detail: entry.detail,
    prev_hash: prevHash,
  };
}

const PREV_MARK = "carrel-prev-hash-placeholder";
const SEQ_MARK = -918273645;

/**
 * The canonical JSON that `auditHash` digests, split around the previous hash and the sequence
 * number, which only the store knows while it holds the chain head:
 * `prefix + prevHash + middle + seq + suffix`. Lets the database compute the same hash.
 */
export function auditHashParts(
  entry: Omit<AuditEntry, "hash" | "seq" | "prevHash">,
): { prefix: string; middle: string; suffix: string } {
  const text = canonicalJson(hashedFields(entry, PREV_MARK, SEQ_MARK));
  const prevAt = text.indexOf(`"prev_hash":"${PREV_MARK}"`);
  const seqAt = text.indexOf(`"seq":${SEQ_MARK}`, prevAt);
  if (prevAt < 0 || seqAt < 0) throw new Error("Cannot split an audit entry's canonical JSON");
  const prevStart = prevAt + `"prev_hash":"`.length;
  const seqStart = seqAt + `"seq":`.length;
  return {
    prefix: text.slice(0, prevStart),
    middle: text.slice(prevStart + PREV_MARK.length, seqStart),
    suffix: text.slice(seqStart + String(SEQ_MARK).length),
  };
}

/** The result of checking the chain. */
export type AuditVerdict =
  | { ok: true; entries: number; head: string }
  | { ok: false; entries: number; seq: number; reason: string };

/**
 * Verifies a chain of entries in order: each hash recomputes, each entry points at the previous
 * one, and sequence numbers have no gaps. After retention deleted the oldest entries, the first
 * remaining entry must be vouched for by an `audit:anchor` entry that carries the sequence number
 * and hash of the last deleted one. When `head` is given (the stored chain head), the last entry
 * must match it, so deleting the newest entries is caught too.
 *
 * @example
 * ```ts ignore
 * import { verifyChain } from "./audit.ts";
 * const verdict = await verifyChain(store.iterateAudit());
 * if (!verdict.ok) console.error(`Audit entry ${verdict.seq} is broken: ${verdict.reason}`);
 * ```
 */
export async function verifyChain(
  entries: AsyncIterable<AuditEntry> | Iterable<AuditEntry>,
  head?: { seq: number; hash: string },
): Promise<AuditVerdict> {
  let previous: AuditEntry | undefined;
  let first: AuditEntry | undefined;
  const anchors = new Set<string>();
  let count = 0;
  const broken = (seq: number, reason: string): AuditVerdict => ({
    ok: false,
    entries: count,
    seq,
    reason,
  });
  for await (const entry of entries) {
    count++;
    const { hash, ...rest } = entry;
    if (auditHash(rest) !== hash) return broken(entry.seq, "its hash does not match its content");
    if (previous) {
      if (entry.seq !== previous.seq + 1) {
        return broken(entry.seq, `entries ${previous.seq + 1} to ${entry.seq - 1} are missing`);
      }
      if (entry.prevHash !== previous.hash) {
        return broken(entry.seq, "it does not point at the previous entry's hash");
      }
    } else {
      first = entry;
      if (entry.seq === 1 && entry.prevHash !== GENESIS_HASH) {
        return broken(entry.seq, "the first entry does not start the chain");
      }
    }
    if (entry.operation === "audit:anchor" && entry.detail) {
      anchors.add(`${entry.detail.lastDeletedSeq}:${entry.detail.lastDeletedHash}`);
    }
    previous = entry;
  }
  if (first && first.seq !== 1 && !anchors.has(`${first.seq - 1}:${first.prevHash}`)) {
    return broken(first.seq, "entries before it were deleted without an audit:anchor entry");
  }
  if (head && head.seq > 0) {
    if (!previous) return broken(head.seq, "the chain is empty but its head says otherwise");
    if (previous.seq !== head.seq || previous.hash !== head.hash) {
      return broken(
        Math.min(previous.seq + 1, head.seq),
        "the newest entries were removed: the chain does not reach its recorded head",
      );
    }
  }
  return { ok: true, entries: count, head: previous?.hash ?? GENESIS_HASH };
}
