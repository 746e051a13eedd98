/**
 * The deployment and compliance checklist, each item pass/fail with its NIST SP 800-53 Rev. 5
 * control: what `compliance report` prints and the console's compliance page shows.
 *
 * @module
 */
import { auditComplianceItems, auditNotChecked } from "./audit_compliance.ts";
import { parseDuration } from "./duration.ts";
import { errorMessage } from "./errors.ts";
import type { LoadedDags } from "./loader.ts";
import { activeKey, KEYRING_ENV, loadKeyring } from "./privacy/keyring.ts";
import type { StateStore } from "./state/store.ts";

/** What the checklist reads: `CARREL_HOME`, the state store and the DAGs. */
export interface ComplianceSources {
  readonly home: string;
  store(): Promise<StateStore>;
  dags(): Promise<LoadedDags>;
}

/** One checklist item. */
export interface ComplianceItem {
  id: string;
  control: string;
  title: string;
  status: "pass" | "fail" | "warn";
  required: boolean;
  detail: string;
}

const LOOPBACK = new Set(["localhost", "127.0.0.1", "::1", "[::1]"]);

/** Builds the checklist. */
export async function complianceItems(ctx: ComplianceSources): Promise<ComplianceItem[]> {
  const items: ComplianceItem[] = [];
  const add = (item: ComplianceItem) => items.push(item);

  // SC-12: a key is set and long enough; its age against the rotation policy.
  const maxAgeDays = Number(Deno.env.get("CARREL_KEY_MAX_AGE_DAYS") ?? 365);
  try {
    const keyring = await loadKeyring();
    const key = activeKey(keyring);
    add({
      id: "key.present",
      control: "SC-12",
      title: "Tokenization key set and at least 32 bytes",
      status: "pass",
      required: true,
      detail: `active version ${key.id} from ${
        keyring.source === "file" ? KEYRING_ENV : "PII_HMAC_KEY"
      }`,
    });
    const age = key.ageDays();
    add({
      id: "key.age",
      control: "SC-12(1)",
      title:
        `Active key younger than the rotation policy (${maxAgeDays} days, CARREL_KEY_MAX_AGE_DAYS)`,
      status: age === null ? "warn" : age <= maxAgeDays ? "pass" : "fail",
      required: age !== null,
      detail: age === null
        ? "a single PII_HMAC_KEY has no creation date: use a keyring (keys init) to track rotation"
        : `${Math.floor(age)} days old`,
    });
  } catch (error) {
    add({
      id: "key.present",
      control: "SC-12",
      title: "Tokenization key set and at least 32 bytes",
      status: "fail",
      required: true,
      detail: errorMessage(error),
    });
  }

  // SC-8: the state store connection is encrypted unless it stays on this machine.
  const url = Deno.env.get("CARREL_DATABASE_URL");
  let unprotectedStore = false;
  if (!url) {
    add({
      id: "store.tls",
      control: "SC-8",
      title: "State store traffic protected",
      status: "pass",
      required: true,
      detail: "embedded PGlite store: no network traffic",
    });
  } else {
    let host = "";
    let sslmode = "";
    let socketHost: string | null = null;
    try {
      const u = new URL(url);
      host = u.hostname;
      sslmode = u.searchParams.get("sslmode") ?? u.searchParams.get("ssl") ?? "";
      socketHost = u.searchParams.get("host");
    } catch { /* reported below */ }
    // A Unix socket (`?host=/run/postgresql`, or no host at all) never leaves the machine.
    const socket = host === "" || (socketHost ?? "").startsWith("/");
    const loopback = socket || LOOPBACK.has(host) || host.startsWith("127.");
    const tls = ["require", "verify-ca", "verify-full", "true"].includes(sslmode);
    unprotectedStore = !loopback && !tls;
    add({
      id: "store.tls",
      control: "SC-8",
      title: "State store traffic protected (TLS when not on loopback)",
      status: loopback || tls ? "pass" : "fail",
      required: true,
      detail: loopback
        ? "PostgreSQL on loopback"
        : tls
        ? `sslmode=${sslmode}`
        : "remote PostgreSQL without sslmode=require or verify-full",
    });
  }

  // AU-9, AU-10, AU-9(3): the audit chains are intact and match the signed checkpoints. Not
  // checked over an unprotected remote connection: the report would send the credentials in the
  // clear, and a silent server would hang it.
  if (unprotectedStore) {
    add(auditNotChecked("the state store connection is not protected (see SC-8)"));
  } else {
    for (const item of await auditComplianceItems(() => ctx.store(), ctx.home)) add(item);
  }

  // AC-4: every DAG loads, passes the zone rule, and leaves the enclave only through checkpoints.
  const { dags, errors } = await ctx.dags();
  const enclaveDags = [...dags.values()].filter((d) =>
    [...d.tasks.values()].some((t) => t.zone === "enclave")
  );
  const withoutCheckpoint = enclaveDags.filter((d) => {
    const leaves = d.order.filter((id) => d.downstream.get(id)!.length === 0);
    return leaves.some((id) => d.tasks.get(id)!.zone === "shared") &&
      ![...d.tasks.values()].some((t) => t.checkpoint);
  });
  add({
    id: "dags.zones",
    control: "AC-4",
    title: "Every DAG passes the zone rule; enclave data leaves only through privacy checkpoints",
    status: errors.length === 0 && withoutCheckpoint.length === 0 ? "pass" : "fail",
    required: true,
    detail: errors.length
      ? `${errors.length} DAG file(s) fail to load or validate: ${
        errors.map((e) => e.file).join(", ")
      }`
      : `${dags.size} DAGs valid, ${enclaveDags.length} with enclave tasks`,
  });

  // SI-12: retention is configured.
  const retention = Deno.env.get("CARREL_RETENTION");
  const retentionMs = retention ? parseDuration(retention) : undefined;
  add({
    id: "retention.configured",
    control: "SI-12",
    title: "Retention period configured (CARREL_RETENTION, applied by `purge`)",
    status: retentionMs ? "pass" : "fail",
    required: true,
    detail: retentionMs
      ? `CARREL_RETENTION=${retention}; schedule \`carrel purge --older-than ${retention}\``
      : "set CARREL_RETENTION (for example 90d) and schedule `purge`",
  });

  // AC-3, AC-6: CARREL_HOME is private to the service account.
  try {
    const info = await Deno.stat(ctx.home);
    const mode = (info.mode ?? 0) & 0o777;
    add({
      id: "home.permissions",
      control: "AC-3, AC-6",
      title: "CARREL_HOME readable by its owner only (0700)",
      status: (mode & 0o077) === 0 ? "pass" : "fail",
      required: true,
      detail: `${ctx.home} has mode ${mode.toString(8).padStart(4, "0")}`,
    });
  } catch {
    add({
      id: "home.permissions",
      control: "AC-3, AC-6",
      title: "CARREL_HOME readable by its owner only (0700)",
      status: "warn",
      required: false,
      detail: `${ctx.home} does not exist yet`,
    });
  }

  // AU-2, AU-12: audit events are generated; AU-11 is covered by retention.
  add({
    id: "audit.logging",
    control: "AU-2, AU-3, AU-12",
    title:
      "Runs, transitions, checkpoint verdicts, tokenization counts, purges and key rotations are audited",
    status: "pass",
    required: true,
    detail: "built in: every state transition is written with its audit entry in one transaction",
  });
  return items;
}
