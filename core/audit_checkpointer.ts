/**
 * Writes signed checkpoints of the audit trail while Carrel works: one when a `CARREL_HOME` has
 * none yet for its store, one at most every `CARREL_AUDIT_INTERVAL` (default 1m) while
 * entries are being added, and one when the process is done with the store. Each checkpoint first
 * seals the run chains that changed into the global chain, then signs the global chain's head
 * (`core/audit_checkpoint.ts`), appends it to the checkpoint file and logs it.
 *
 * A writer refuses, and says why in the log, when signing would vouch for a trail it cannot
 * vouch for: the checkpoint file belongs to another store, its last checkpoint no longer matches
 * the global chain, or the file was deleted while the store remembers checkpoints by this key.
 * `audit verify` reports the same break; `audit checkpoint --restart` starts a new file after a
 * deliberate store replacement.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { CHECKPOINT_CORRELATION, SEAL_OPERATION } from "./audit.ts";
import {
  appendCheckpoint,
  checkpointPaths,
  CheckpointSigner,
  checkSignature,
  readCheckpointFile,
  type SignedCheckpoint,
  storeLocation,
} from "./audit_checkpoint.ts";
import { describeBreak, verifyGlobalTail } from "./audit_verify.ts";
import { parseDuration } from "./duration.ts";
import { errorMessage } from "./errors.ts";
import type { StateStore } from "./state/store.ts";

/** The outcome of one checkpoint attempt. */
export type CheckpointOutcome =
  | { written: SignedCheckpoint; file: string }
  | { refused: string; file: string };

const log = getLogger(["carrel", "audit", "checkpoint"]);

type Env = { get(key: string): string | undefined };

/**
 * Seals, signs and records one checkpoint of `store` in `home`'s checkpoint file (creating the
 * signing key on first use). With `restart`, an existing file is first renamed aside (kept for
 * auditors) so that a deliberately replaced store can be checkpointed again.
 *
 * @example
 * ```ts ignore
 * const outcome = await writeCheckpoint(store, ".carrel");
 * if ("refused" in outcome) console.error(outcome.refused);
 * ```
 */
export async function writeCheckpoint(
  store: StateStore,
  home: string,
  options: { env?: Env; restart?: boolean } = {},
): Promise<CheckpointOutcome> {
  const paths = checkpointPaths(home, options.env);
  const refuse = (why: string): CheckpointOutcome => ({ refused: why, file: paths.file });
  if (options.restart) {
    const aside = paths.file.replace(
      /\.jsonl$/,
      `.${new Date().toISOString().replace(/[:.]/g, "-")}.jsonl`,
    );
    await Deno.rename(paths.file, aside).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }
  const signer = (await CheckpointSigner.open(paths.key, { create: true }))!;
  const file = await readCheckpointFile(paths.file);
  if (file && file.malformed.length > 0) {
    return refuse(`line ${file.malformed[0]} of ${paths.file} is not a checkpoint`);
  }
  const { storeId } = await store.auditStore();
  const location = storeLocation(store);
  const ours = (file?.checkpoints ?? []).filter((c) => c.checkpoint.location === location);
  const foreign = ours.find((c) => c.checkpoint.store !== storeId);
  if (foreign) {
    return refuse(
      `${paths.file} holds checkpoints of store ${foreign.checkpoint.store}, but this store is ` +
        `${storeId}: the store was replaced or re-created. Run \`audit verify\`; after a deliberate ` +
        "replacement, `audit checkpoint --restart` keeps the old file and starts a new one",
    );
  }
  let last: SignedCheckpoint | undefined;
  for (const { line, checkpoint } of ours) {
    const bad = await checkSignature(checkpoint, [signer.verifier]);
    if (bad) return refuse(`the checkpoint on line ${line} of ${paths.file}: ${bad}`);
    if (!last || checkpoint.global.pos > last.global.pos) last = checkpoint;
  }
  const broken = await verifyGlobalTail(
    store,
    last?.global,
    signer.keyId,
    signer.created || (options.restart ?? false),
  );
  if (broken) {
    return refuse(`the audit trail is broken at ${describeBreak(broken)}: not signing it`);
  }
  const sealed = await store.sealAudit({ keyId: signer.keyId });
  const checkpoint = await signer.sign({
    store: storeId,
    location,
    at: new Date().toISOString(),
    global: sealed.global,
    chains: sealed.chains,
    maxSeq: sealed.maxSeq,
  });
  await appendCheckpoint(paths.file, checkpoint);
  log.info("Audit checkpoint signed: global entry {pos}, {chains} chains", {
    pos: checkpoint.global.pos,
    chains: checkpoint.chains,
    sealed: sealed.sealed,
    checkpoint,
  });
  return { written: checkpoint, file: paths.file };
}

/** Checkpoints written while a process uses a store; dispose to write the last one. */
export class AuditCheckpoints implements AsyncDisposable {
  #timer: ReturnType<typeof setInterval> | undefined;
  #running: Promise<void> | undefined;
  #lastSeq = -1;
  #refusals = new Set<string>();
  #closed = false;

  constructor(
    readonly store: StateStore,
    readonly home: string,
    readonly env: Env = Deno.env,
  ) {}

  /**
   * Writes the first checkpoint when the home has none of this store, and starts the periodic
   * ones (the timer does not keep the process alive).
   */
  async start(): Promise<void> {
    const paths = checkpointPaths(this.home, this.env);
    const file = await readCheckpointFile(paths.file).catch(() => undefined);
    const location = storeLocation(this.store);
    if (!file?.checkpoints.some((c) => c.checkpoint.location === location)) {
      await this.checkpoint(true);
    }
    const interval = parseDuration(this.env.get("CARREL_AUDIT_INTERVAL") ?? "1m") ??
      60_000;
    const timer = setInterval(() => void this.checkpoint(false), interval);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** Writes a checkpoint when entries were added since the last one (or always, with `force`). */
  checkpoint(force: boolean): Promise<void> {
    if (this.#closed && !force) return Promise.resolve();
    this.#running ??= this.#attempt(force).finally(() => {
      this.#running = undefined;
    });
    return this.#running;
  }

  async #attempt(force: boolean): Promise<void> {
    try {
      const head = await this.store.auditHead();
      const idle = head.seq === this.#lastSeq ||
        (head.operation === SEAL_OPERATION && head.correlationId === CHECKPOINT_CORRELATION);
      if (idle && !force) return;
      const outcome = await writeCheckpoint(this.store, this.home, { env: this.env });
      if ("written" in outcome) this.#lastSeq = outcome.written.global.seq;
      else if (!this.#refusals.has(outcome.refused)) {
        this.#refusals.add(outcome.refused);
        log.error("Audit checkpoint refused: {reason}", { reason: outcome.refused });
      }
    } catch (error) {
      log.warning("Cannot write an audit checkpoint: {reason}", { reason: errorMessage(error) });
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    await this.#running;
    await this.checkpoint(false);
    this.#closed = true;
  }
}

/**
 * Starts checkpointing `store` into `home` for as long as the process uses it.
 *
 * @example
 * ```ts ignore
 * await using checkpoints = await startAuditCheckpoints(store, ".carrel");
 * ```
 */
export async function startAuditCheckpoints(
  store: StateStore,
  home: string,
  env: Env = Deno.env,
): Promise<AuditCheckpoints> {
  const checkpoints = new AuditCheckpoints(store, home, env);
  await checkpoints.start();
  return checkpoints;
}
