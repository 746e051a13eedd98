/**
 * The audit trail's entries: what callers record, how an entry is hashed, and which hash chain it
 * joins (NIST SP 800-53 AU-2, AU-3, AU-9, AU-10, AU-12).
 *
 * Entries form one hash chain per run (the entries whose correlation id is their run's id) and one
 * global chain for everything else (key rotation, purges, pauses, console actions), so that
 * transitions of different runs never wait on one lock. Each entry's hash is SHA-256 over the
 * canonical JSON of its fields, its position in its chain and the previous entry's hash. A run's
 * chain is sealed into the global chain when the run ends (an `audit:seal` entry that records the
 * run chain's position and hash), and signed checkpoints of the global chain
 * (`core/audit_checkpoint.ts`) anchor it outside the database. `core/audit_verify.ts` checks all
 * of it. The threat model is in `docs/audit.md`.
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

/** The name of the chain that holds every entry not bound to a run. */
export const GLOBAL_CHAIN = "global";

/** An entry as stored. */
export interface AuditEntry {
  /**
   * The entry's row number: unique, and increasing in append order within a chain. Not part of
   * the hash (entries written before per-run chains existed use it as their position).
   */
  seq: number;
  /** `global`, or the run id of a run's chain. */
  chain: string;
  /** Position in its chain, from 1. */
  pos: number;
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

/** An entry before the store placed it in its chain. */
export type AuditDraft = Omit<AuditEntry, "seq" | "pos" | "hash" | "prevHash">;

/** A chain's head as the store keeps it, and where retention cut the chain. */
export interface AuditChainHead {
  chain: string;
  /** Position of the newest entry (0 for none). */
  pos: number;
  hash: string;
  /** The last position retention deleted (0 for none), and that entry's hash. */
  basePos: number;
  baseHash: string;
}

/** The hash before the first entry of every chain. */
export const GENESIS_HASH = "0".repeat(64);

/** Operations the audit trail writes about itself. */
export const SEAL_OPERATION = "audit:seal";
/** The correlation id of the seals that checkpoint writers append (before they sign). */
export const CHECKPOINT_CORRELATION = "audit";
/** A retention anchor: which entries of which chains a purge deleted. */
export const ANCHOR_OPERATION = "audit:anchor";

/**
 * The chain an entry belongs to: its run's chain when its correlation id is a run id of its DAG
 * (`<dag>@<logical date>`), else the global chain.
 *
 * @example
 * ```ts
 * import { chainOf } from "./audit.ts";
 * chainOf({ correlationId: "demo@2026-01-01T00:00:00Z", dagId: "demo" }); // "demo@2026-01-01T00:00:00Z"
 * chainOf({ correlationId: "keys", dagId: null }); // "global"
 * ```
 */
export function chainOf(entry: { correlationId: string; dagId?: string | null }): string {
  const dagId = entry.dagId;
  return dagId && entry.correlationId.startsWith(`${dagId}@`) ? entry.correlationId : GLOBAL_CHAIN;
}

/** Whether an entry ends its run, which seals the run's chain into the global chain. */
export function endsRun(input: AuditInput): boolean {
  return chainOf(input) !== GLOBAL_CHAIN && input.operation.startsWith("run:") &&
    (input.status === "success" || input.status === "failed");
}

/**
 * Computes an entry's hash from its fields, its position and the previous hash.
 *
 * @example
 * ```ts
 * import { auditHash, GENESIS_HASH } from "./audit.ts";
 * auditHash({
 *   pos: 1, at: "2026-01-01T00:00:00.000Z", correlationId: "demo@2026-01-01T00:00:00Z",
 *   dagId: "demo", taskId: null, operation: "run:start", status: "running",
 *   recordCount: null, keyVersion: null, detail: null, prevHash: GENESIS_HASH,
 * }).length; // 64
 * ```
 */
export function auditHash(
  entry: Omit<AuditEntry, "hash" | "seq" | "chain">,
): string {
  return sha256Hex(canonicalJson(hashedFields(entry, entry.prevHash, entry.pos)));
}

/**
 * The fields an entry's hash covers, by the names they have in the canonical JSON. The chain is
 * not among them: it follows from the correlation and DAG ids ({@link chainOf}). `seq` is the
 * position in the chain (the name predates per-run chains, when both were the same number).
 */
function hashedFields(
  entry: Omit<AuditEntry, "hash" | "seq" | "pos" | "prevHash" | "chain">,
  prevHash: unknown,
  pos: unknown,
) {
  return {
    seq: pos,
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

/**
 * An entry's canonical JSON with holes for the values only the store knows while it holds the
 * chain's head: `parts[0] + value(slots[0]) + parts[1] + ... + parts[n]`. Slots are `prev` (the
 * previous hash), `pos` (the position), and for a seal `sealed_hash` and `sealed_pos` (the sealed
 * entry's). The database fills them in and digests the text, so it computes exactly the hash that
 * {@link auditHash} recomputes.
 */
export interface AuditTemplate {
  parts: string[];
  slots: string[];
}

/** Markers that stand in for slot values while the canonical JSON is built. */
const MARKS = {
  prev: { value: "carrel-slot-prev-hash", text: "carrel-slot-prev-hash" },
  pos: { value: -918273601, text: "-918273601" },
  sealed_hash: { value: "carrel-slot-sealed-hash", text: "carrel-slot-sealed-hash" },
  sealed_pos: { value: -918273602, text: "-918273602" },
} as const;

/** Splits canonical JSON around the markers of the given slots. */
function splitAt(text: string, slots: (keyof typeof MARKS)[]): AuditTemplate {
  const found = slots.map((slot) => {
    const mark = MARKS[slot].text;
    const at = text.indexOf(mark);
    if (at < 0 || text.indexOf(mark, at + 1) >= 0) {
      throw new Error(`Cannot build an audit entry template: slot "${slot}" is not unique`);
    }
    return { slot, at, length: mark.length };
  }).sort((a, b) => a.at - b.at);
  const parts: string[] = [];
  let from = 0;
  for (const f of found) {
    parts.push(text.slice(from, f.at));
    from = f.at + f.length;
  }
  parts.push(text.slice(from));
  return { parts, slots: found.map((f) => f.slot) };
}

/**
 * The template of an entry's canonical JSON, with `prev` and `pos` left open.
 *
 * @example
 * ```ts
 * import { auditTemplate } from "./audit.ts";
 * const t = auditTemplate({
 *   chain: "global", at: "2026-01-01T00:00:00.000Z", correlationId: "keys", dagId: null,
 *   taskId: null, operation: "keys:rotate", status: "success", recordCount: null,
 *   keyVersion: "k2", detail: null,
 * });
 * t.slots; // ["prev", "pos"]
 * ```
 */
export function auditTemplate(draft: AuditDraft): AuditTemplate {
  const template = splitAt(
    canonicalJson(hashedFields(draft, MARKS.prev.value, MARKS.pos.value)),
    ["prev", "pos"],
  );
  // The database fills `prev_hash` and then `seq` (the keys' canonical order) without looking.
  if (template.slots[0] !== "prev") throw new Error("Cannot template an audit entry: slot order");
  return template;
}

/**
 * The seal that records a run chain's newest entry in the global chain when the run ends. Its
 * detail names the chain; the sealed position and hash are slots the database fills in.
 */
export function sealDraft(ended: AuditDraft): { draft: AuditDraft; template: AuditTemplate } {
  const draft: AuditDraft = {
    chain: GLOBAL_CHAIN,
    at: ended.at,
    correlationId: ended.chain,
    dagId: null,
    taskId: null,
    operation: SEAL_OPERATION,
    status: "success",
    recordCount: 1,
    keyVersion: null,
    detail: { chains: [{ chain: ended.chain, pos: 0, hash: "" }] },
  };
  const marked = {
    ...draft,
    detail: {
      chains: [{ chain: ended.chain, pos: MARKS.sealed_pos.value, hash: MARKS.sealed_hash.value }],
    },
  };
  const template = splitAt(
    canonicalJson(hashedFields(marked, MARKS.prev.value, MARKS.pos.value)),
    ["prev", "pos", "sealed_hash", "sealed_pos"],
  );
  return { draft, template };
}

/** Fills a template's slots: the text whose SHA-256 is the entry's hash. */
export function renderTemplate(
  template: AuditTemplate,
  values: Record<string, string | number>,
): string {
  let text = template.parts[0]!;
  template.slots.forEach((slot, i) => {
    const value = values[slot];
    if (value === undefined) throw new Error(`Cannot render an audit entry: no value for ${slot}`);
    text += String(value) + template.parts[i + 1]!;
  });
  return text;
}

/** The drafts an input list becomes, in order, at one timestamp. */
export function auditDrafts(inputs: readonly AuditInput[], at = new Date()): AuditDraft[] {
  const iso = at.toISOString();
  return inputs.map((input) => ({
    chain: chainOf(input),
    at: iso,
    correlationId: input.correlationId,
    dagId: input.dagId ?? null,
    taskId: input.taskId ?? null,
    operation: input.operation,
    status: input.status,
    recordCount: input.recordCount ?? null,
    keyVersion: input.keyVersion ?? null,
    detail: input.detail ?? null,
  }));
}

/** One chain's place as a seal or a retention anchor records it. */
export interface ChainMark {
  chain: string;
  pos: number;
  hash: string;
}

/**
 * The chain positions an `audit:seal` or `audit:anchor` entry records. Anchors written before
 * per-run chains carried `lastDeletedSeq` and `lastDeletedHash` of the single chain.
 */
export function chainMarks(entry: Pick<AuditEntry, "detail">): ChainMark[] {
  const detail = entry.detail;
  if (!detail) return [];
  const marks: ChainMark[] = [];
  if (Array.isArray(detail.chains)) {
    for (const c of detail.chains as unknown[]) {
      const m = c as Partial<ChainMark>;
      if (typeof m.chain === "string" && typeof m.pos === "number" && typeof m.hash === "string") {
        marks.push({ chain: m.chain, pos: m.pos, hash: m.hash });
      }
    }
  }
  if (typeof detail.lastDeletedSeq === "number" && typeof detail.lastDeletedHash === "string") {
    marks.push({ chain: GLOBAL_CHAIN, pos: detail.lastDeletedSeq, hash: detail.lastDeletedHash });
  }
  return marks;
}

/**
 * An entry in the export format (`audit export`, the console's export): the seed guide's field
 * names, plus the chain.
 *
 * @example
 * ```ts
 * import { exportEntry } from "./audit.ts";
 * declare const entry: import("./audit.ts").AuditEntry;
 * const line = JSON.stringify(exportEntry(entry));
 * ```
 */
export function exportEntry(e: AuditEntry) {
  return {
    timestamp: e.at,
    correlation_id: e.correlationId,
    service: "carrel",
    operation: e.operation,
    record_count: e.recordCount,
    status: e.status,
    compliance_boundary: "enforced",
    dag_id: e.dagId,
    task_id: e.taskId,
    key_version: e.keyVersion,
    detail: e.detail,
    seq: e.seq,
    chain: e.chain,
    pos: e.pos,
    prev_hash: e.prevHash,
    hash: e.hash,
  };
}
