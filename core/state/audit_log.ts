/**
 * The audit trail's SQL: appending entries to their chains (`carrel_audit_append`, migration
 * 010), reading them back, sealing run chains into the global chain, and retention. The store
 * (`sql_store.ts`) delegates here; statements elsewhere append only through {@link auditPayload}
 * and {@link appendAuditTx} (or `carrel_audit_append($n::text::jsonb)` with that payload inside a
 * larger statement, then {@link collectAppended} and {@link logAudit}).
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import {
  ANCHOR_OPERATION,
  type AuditChainHead,
  type AuditDraft,
  auditDrafts,
  type AuditEntry,
  type AuditInput,
  auditTemplate,
  CHECKPOINT_CORRELATION,
  endsRun,
  GENESIS_HASH,
  GLOBAL_CHAIN,
  SEAL_OPERATION,
  sealDraft,
} from "../audit.ts";
import type { SqlClient } from "./sql_client.ts";
import type { AuditNewest, AuditSealResult, AuditStoreInfo } from "./store.ts";

type Row = Record<string, unknown>;

/** One entry to append, and the seal that follows it when it ends a run. */
export interface Draft {
  draft: AuditDraft;
  seal?: AuditDraft;
}

/** A row `carrel_audit_append` returns (`out_seq`, `out_hash`, `out_prev`, `out_pos`). */
export type AppendRow = {
  seq: string | null;
  hash: string | null;
  prev: string | null;
  pos?: string | null;
};

/** The columns to select from `carrel_audit_append(...) a` for {@link collectAppended}. */
export const APPENDED_COLUMNS =
  "a.out_seq::text AS seq, a.out_hash AS hash, a.out_prev AS prev, a.out_pos::text AS pos";

const date = (v: unknown): Date => v instanceof Date ? v : new Date(String(v));

/** Maps an `audit_log` row. */
export function toAudit(r: Row): AuditEntry {
  return {
    seq: Number(r.seq),
    chain: r.chain as string,
    pos: Number(r.pos),
    at: date(r.at).toISOString(),
    correlationId: r.correlation_id as string,
    dagId: (r.dag_id as string | null) ?? null,
    taskId: (r.task_id as string | null) ?? null,
    operation: r.operation as string,
    status: r.status as string,
    recordCount: r.record_count === null || r.record_count === undefined
      ? null
      : Number(r.record_count),
    keyVersion: (r.key_version as string | null) ?? null,
    detail: (r.detail ?? null) as Record<string, unknown> | null,
    prevHash: r.prev_hash as string,
    hash: r.hash as string,
  };
}

const ENTRY_COLUMNS = `seq::text AS seq, chain, pos::text AS pos, at, correlation_id, dag_id,
  task_id, operation, status, record_count::text AS record_count, key_version, detail, prev_hash,
  hash`;

const auditLogger = getLogger(["carrel", "audit"]);

/** Sends committed audit entries to LogTape as well (JSON lines, the rotating file sink). */
export function logAudit(entries: readonly AuditEntry[]): void {
  for (const e of entries) {
    auditLogger.info("{operation} {status}", {
      seq: e.seq,
      chain: e.chain,
      pos: Number.isFinite(e.pos) ? e.pos : null,
      timestamp: e.at,
      correlation_id: e.correlationId,
      service: "carrel",
      dag_id: e.dagId,
      task_id: e.taskId,
      operation: e.operation,
      status: e.status,
      record_count: e.recordCount,
      key_version: e.keyVersion,
      compliance_boundary: "enforced",
      hash: e.hash,
    });
  }
}

/** An entry's row values, by column name, as the append functions take them. */
export function entryRow(d: AuditDraft) {
  return {
    at: d.at,
    correlation_id: d.correlationId,
    dag_id: d.dagId,
    task_id: d.taskId,
    operation: d.operation,
    status: d.status,
    record_count: d.recordCount,
    key_version: d.keyVersion,
    detail: d.detail,
  };
}

/**
 * The entries as `carrel_audit_append` takes them: row values, chain, and the template of each
 * entry's canonical JSON (plus a seal's, for an entry that ends a run).
 */
export function auditPayload(inputs: readonly AuditInput[]): { json: string; drafts: Draft[] } {
  const drafts: Draft[] = auditDrafts(inputs).map((draft, i) =>
    endsRun(inputs[i]!) ? { draft, seal: sealDraft(draft).draft } : { draft }
  );
  const json = JSON.stringify(drafts.map(({ draft: d, seal }) => ({
    chain: d.chain,
    template: auditTemplate(d),
    ...entryRow(d),
    ...(seal
      ? {
        seal: {
          template: sealDraft(d).template,
          at: seal.at,
          correlation_id: seal.correlationId,
          operation: seal.operation,
          status: seal.status,
          record_count: seal.recordCount,
        },
      }
      : {}),
  })));
  return { json, drafts };
}

/**
 * Turns the rows `carrel_audit_append` returned into entries: one per draft, in order, then one
 * per seal.
 */
export function collectAppended(drafts: Draft[], rows: AppendRow[], appended: AuditEntry[]): void {
  const chained = rows.filter((r) => r.seq !== null);
  let i = 0;
  const ended: AuditEntry[] = [];
  const sealDrafts: AuditDraft[] = [];
  for (const { draft, seal } of drafts) {
    const row = chained[i++];
    if (!row) return;
    const entry: AuditEntry = {
      ...draft,
      seq: Number(row.seq),
      pos: Number(row.pos ?? NaN),
      hash: row.hash!,
      prevHash: row.prev!,
    };
    appended.push(entry);
    if (seal) {
      ended.push(entry);
      sealDrafts.push(seal);
    }
  }
  sealDrafts.forEach((seal, k) => {
    const row = chained[i++];
    const sealed = ended[k]!;
    if (!row) return;
    appended.push({
      ...seal,
      detail: { chains: [{ chain: sealed.chain, pos: sealed.pos, hash: sealed.hash }] },
      seq: Number(row.seq),
      pos: Number(row.pos ?? NaN),
      hash: row.hash!,
      prevHash: row.prev!,
    });
  });
}

/** Appends audit entries inside an open transaction, each to its chain. */
export async function appendAuditTx(
  tx: SqlClient,
  inputs: readonly AuditInput[],
  appended: AuditEntry[],
): Promise<void> {
  if (inputs.length === 0) return;
  const { json, drafts } = auditPayload(inputs);
  const rows = await tx.query<AppendRow>(
    `SELECT ${APPENDED_COLUMNS} FROM carrel_audit_append($1::text::jsonb) a`,
    [json],
  );
  collectAppended(drafts, rows, appended);
}

/**
 * Transitions that owe an alert (`detail.alerts`) written between `since` and `until` (by their
 * clock), after the entry `after` (its time and row number; null: from the start), oldest first,
 * at most `limit` (read through `audit_log_alerts_idx`).
 */
export async function owedAlerts(
  client: SqlClient,
  since: Date,
  until: Date,
  after: { at: string; seq: number } | null,
  limit: number,
): Promise<AuditEntry[]> {
  const rows = await client.query<Row>(
    `SELECT ${ENTRY_COLUMNS} FROM audit_log
     WHERE detail ? 'alerts' AND at >= $1 AND at <= $2
       AND ($3::timestamptz IS NULL OR (at, seq) > ($3::timestamptz, $4::bigint))
     ORDER BY at, seq LIMIT $5`,
    [since, until, after?.at ?? null, after?.seq ?? 0, limit],
  );
  return rows.map(toAudit);
}

/** The receipts (`alert:sent`) and resends (`alert:resend`) of alerts of these runs. */
export async function alertReceipts(
  client: SqlClient,
  runIds: readonly string[],
): Promise<AuditEntry[]> {
  if (runIds.length === 0) return [];
  const rows = await client.query<Row>(
    `SELECT ${ENTRY_COLUMNS} FROM audit_log
     WHERE correlation_id = ANY($1::text[]) AND operation IN ('alert:sent', 'alert:resend')
     ORDER BY seq`,
    [[...runIds]],
  );
  return rows.map(toAudit);
}

/** Filters of {@link iterateAudit}. */
export interface AuditFilter {
  correlationId?: string;
  since?: Date;
}

/** Entries in append order (by row number), a page at a time. */
export async function* iterateAudit(
  client: SqlClient,
  filter: AuditFilter = {},
): AsyncIterable<AuditEntry> {
  let after = -1;
  const page = 1000;
  while (true) {
    const params: unknown[] = [after];
    let where = "seq > $1";
    if (filter.correlationId) {
      params.push(filter.correlationId);
      where += ` AND correlation_id = $${params.length}`;
    }
    if (filter.since) {
      params.push(filter.since);
      where += ` AND at >= $${params.length}`;
    }
    params.push(page);
    const rows = await client.query<Row>(
      `SELECT ${ENTRY_COLUMNS} FROM audit_log WHERE ${where}
       ORDER BY audit_log.seq LIMIT $${params.length}`,
      params,
    );
    for (const row of rows) yield toAudit(row);
    if (rows.length < page) return;
    after = Number(rows[rows.length - 1]!.seq);
  }
}

/**
 * Entries in chain order: by chain name, then position. With `chain`, only that chain's, from
 * position `fromPos` on.
 */
export async function* iterateAuditChains(
  client: SqlClient,
  options: { chain?: string; fromPos?: number } = {},
): AsyncIterable<AuditEntry> {
  const page = 1000;
  let chain = options.chain ?? "";
  let pos = (options.fromPos ?? 1) - 1;
  while (true) {
    const rows = await client.query<Row>(
      options.chain === undefined
        ? `SELECT ${ENTRY_COLUMNS} FROM audit_log WHERE (chain, pos) > ($1, $2)
           ORDER BY audit_log.chain, audit_log.pos LIMIT $3`
        : `SELECT ${ENTRY_COLUMNS} FROM audit_log WHERE chain = $1 AND pos > $2
           ORDER BY audit_log.pos LIMIT $3`,
      [chain, pos, page],
    );
    for (const row of rows) yield toAudit(row);
    if (rows.length < page) return;
    const last = rows[rows.length - 1]!;
    chain = last.chain as string;
    pos = Number(last.pos);
  }
}

/** The newest entry (by row number): `{ seq: 0, hash: GENESIS_HASH }` for none. */
export async function auditHead(client: SqlClient): Promise<AuditNewest> {
  const [row] = await client.query<
    { seq: string; hash: string; operation: string; correlation_id: string }
  >(
    `SELECT seq::text AS seq, hash, operation, correlation_id FROM audit_log
     ORDER BY audit_log.seq DESC LIMIT 1`,
  );
  return row
    ? {
      seq: Number(row.seq),
      hash: row.hash,
      operation: row.operation,
      correlationId: row.correlation_id,
    }
    : { seq: 0, hash: GENESIS_HASH, operation: null, correlationId: null };
}

/** Every chain's head. */
export async function auditHeads(client: SqlClient): Promise<AuditChainHead[]> {
  const rows = await client.query<Row>(
    `SELECT chain, pos::text AS pos, hash, base_pos::text AS base_pos, base_hash
     FROM audit_chains ORDER BY chain`,
  );
  return rows.map((r) => ({
    chain: r.chain as string,
    pos: Number(r.pos),
    hash: r.hash as string,
    basePos: Number(r.base_pos),
    baseHash: r.base_hash as string,
  }));
}

/** The store's identity, which signed checkpoints name. */
export async function auditStore(client: SqlClient): Promise<AuditStoreInfo> {
  const [row] = await client.query<{ store_id: string; legacy_pos: string }>(
    "SELECT store_id, legacy_pos::text AS legacy_pos FROM audit_store WHERE id = 1",
  );
  if (!row) throw new Error("Cannot read the store's identity: audit_store is empty");
  return { storeId: row.store_id, legacyPos: Number(row.legacy_pos) };
}

/** What sealing left as the global chain's head (the global entry a checkpoint signs). */
export type SealResult = AuditSealResult;

/**
 * Seals into the global chain every run chain whose newest entry is not sealed yet (`audit:seal`
 * entries of at most 500 chains each), and always at least one seal, so the global chain's head
 * is an entry of this transaction. `keyId` names the checkpoint key about to sign the head.
 */
export async function sealAudit(
  tx: SqlClient,
  options: { keyId?: string },
  logged: AuditEntry[],
): Promise<SealResult> {
  const batch = 500;
  let sealed = 0;
  let first = true;
  while (true) {
    const open = await tx.query<{ chain: string; pos: string; hash: string }>(
      `SELECT c.chain, c.pos::text AS pos, c.hash FROM audit_chains c
       LEFT JOIN audit_seals s ON s.chain = c.chain
       WHERE c.chain <> $1 AND c.pos > c.base_pos AND c.pos > coalesce(s.pos, 0)
       ORDER BY c.chain LIMIT $2`,
      [GLOBAL_CHAIN, batch],
    );
    if (open.length === 0 && !first) break;
    first = false;
    const chains = open.map((c) => ({ chain: c.chain, pos: Number(c.pos), hash: c.hash }));
    const appended: AuditEntry[] = [];
    await appendAuditTx(tx, [{
      correlationId: CHECKPOINT_CORRELATION,
      operation: SEAL_OPERATION,
      status: "success",
      recordCount: chains.length,
      detail: { chains, ...(options.keyId ? { keyId: options.keyId } : {}) },
    }], appended);
    logged.push(...appended);
    if (chains.length > 0) {
      await tx.query(
        `INSERT INTO audit_seals (chain, pos) SELECT * FROM unnest($1::text[], $2::bigint[])
         ON CONFLICT (chain) DO UPDATE SET pos = greatest(audit_seals.pos, EXCLUDED.pos)`,
        [chains.map((c) => c.chain), chains.map((c) => c.pos)],
      );
    }
    sealed += chains.length;
    if (open.length < batch) break;
  }
  const seal = logged[logged.length - 1]!;
  const [stats] = await tx.query<{ chains: string; max_seq: string }>(
    `SELECT (SELECT count(*) FROM audit_chains)::text AS chains,
       (SELECT coalesce(max(seq), 0) FROM audit_log)::text AS max_seq`,
  );
  return {
    global: { pos: seal.pos, hash: seal.hash, at: seal.at, seq: seal.seq },
    sealed,
    chains: Number(stats!.chains),
    maxSeq: Number(stats!.max_seq),
  };
}

/**
 * Retention: deletes, in every chain, the longest run of oldest entries that are all older than
 * `olderThan` (never a later one), and appends an `audit:anchor` entry to the global chain that
 * records where each chain now starts: the position and hash of its last deleted entry. Chains cut
 * by earlier purges are carried into the new anchor, so deleting an old anchor loses nothing.
 * Returns the number of entries deleted (or that would be, with `dryRun`).
 */
export async function purgeAudit(
  tx: SqlClient,
  olderThan: Date,
  options: { dryRun: boolean; correlationId: string },
  logged: AuditEntry[],
): Promise<number> {
  const [{ cutoff }] = await tx.query<{ cutoff: Date | string }>(
    "SELECT least($1::timestamptz, now()) AS cutoff",
    [olderThan],
  ) as [{ cutoff: Date | string }];
  const cut = date(cutoff);
  const cuts = await tx.query<{ chain: string; through: string; hash: string; n: string }>(
    `SELECT b.chain, b.through::text AS through, l.hash, (b.through - b.lo + 1)::text AS n
     FROM (SELECT chain, min(pos) AS lo,
             coalesce(min(pos) FILTER (WHERE at >= $1), max(pos) + 1) - 1 AS through
           FROM audit_log GROUP BY chain) b
     JOIN audit_log l ON l.chain = b.chain AND l.pos = b.through
     WHERE b.through >= b.lo
     ORDER BY b.chain = $2, b.chain`,
    [cut, GLOBAL_CHAIN],
  );
  const n = cuts.reduce((sum, c) => sum + Number(c.n), 0);
  if (n === 0 || options.dryRun) return n;
  const names = cuts.map((c) => c.chain);
  const through = cuts.map((c) => Number(c.through));
  // Heads first (run chains, then the global chain), as appends lock them.
  await tx.query(
    `SELECT chain FROM audit_chains WHERE chain = ANY($1::text[])
     ORDER BY chain = $2, chain FOR UPDATE`,
    [names, GLOBAL_CHAIN],
  );
  await tx.query("SELECT set_config('carrel.audit_retention_before', $1, true)", [
    cut.toISOString(),
  ]);
  await tx.query(
    `DELETE FROM audit_log a USING unnest($1::text[], $2::bigint[]) AS b(chain, through)
     WHERE a.chain = b.chain AND a.pos <= b.through`,
    [names, through],
  );
  await tx.query("SELECT set_config('carrel.audit_retention_before', '', true)");
  await tx.query(
    `UPDATE audit_chains c SET base_pos = b.through, base_hash = b.hash
     FROM unnest($1::text[], $2::bigint[], $3::text[]) AS b(chain, through, hash)
     WHERE c.chain = b.chain`,
    [names, through, cuts.map((c) => c.hash)],
  );
  const carried = await tx.query<{ chain: string; pos: string; hash: string }>(
    `SELECT chain, base_pos::text AS pos, base_hash AS hash FROM audit_chains
     WHERE base_pos > 0 AND pos > base_pos AND NOT chain = ANY($1::text[]) ORDER BY chain`,
    [names],
  );
  const chains = [
    ...cuts.map((c) => ({ chain: c.chain, pos: Number(c.through), hash: c.hash })),
    ...carried.map((c) => ({ chain: c.chain, pos: Number(c.pos), hash: c.hash })),
  ];
  await appendAuditTx(tx, [{
    correlationId: options.correlationId,
    operation: ANCHOR_OPERATION,
    status: "success",
    recordCount: n,
    detail: { before: cut.toISOString(), chains },
  }], logged);
  return n;
}
