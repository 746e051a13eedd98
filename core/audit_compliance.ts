/**
 * What the audit trail contributes to the compliance checklist: the chains intact and consistent
 * with the signed checkpoints (AU-9, AU-10), and the chain heads signed outside the database
 * (AU-9(3)). A vanished, emptied or replaced store fails the first.
 *
 * @module
 */
import { type AuditSource, describeBreak, verifyAudit } from "./audit_verify.ts";
import { errorMessage } from "./errors.ts";

/** One checklist item, in the compliance report's shape. */
export interface AuditComplianceItem {
  id: string;
  control: string;
  title: string;
  status: "pass" | "fail" | "warn";
  required: boolean;
  detail: string;
}

const CHAIN_TITLE = "Audit trail hash chains intact, and consistent with the signed checkpoints";

/**
 * The audit items of the compliance report, from {@link verifyAudit} over `store` with the
 * checkpoints of `home`. An error (an unreadable key, a lost connection) fails the chain item.
 *
 * @example
 * ```ts ignore
 * import { auditComplianceItems } from "./audit_compliance.ts";
 * for (const item of await auditComplianceItems(store, ".carrel")) console.log(item.id, item.status);
 * ```
 */
export async function auditComplianceItems(
  store: AuditSource | (() => Promise<AuditSource>),
  home: string,
): Promise<AuditComplianceItem[]> {
  try {
    const source = typeof store === "function" ? await store() : store;
    const verdict = await verifyAudit(source, { home });
    const latest = verdict.checkpoints.latest;
    return [{
      id: "audit.chain",
      control: "AU-9, AU-10",
      title: CHAIN_TITLE,
      status: verdict.ok ? "pass" : "fail",
      required: true,
      detail: verdict.ok
        ? `${verdict.entries} entries in ${verdict.chains} chains verified`
        : describeBreak(verdict),
    }, {
      id: "audit.checkpoints",
      control: "AU-9(3)",
      title: "Audit chain heads signed outside the database (truncation-evident)",
      status: verdict.ok && latest ? "pass" : verdict.ok ? "warn" : "fail",
      required: !verdict.ok,
      detail: latest
        ? `${verdict.checkpoints.verified} signed checkpoints verified, the latest of ${latest.at} (key ${verdict.checkpoints.keyId})`
        : verdict.ok
        ? "no signed checkpoint yet: run any command that opens the store, or `audit checkpoint`"
        : "not trusted: the audit trail does not verify",
    }];
  } catch (error) {
    return [{
      id: "audit.chain",
      control: "AU-9, AU-10",
      title: CHAIN_TITLE,
      status: "fail",
      required: true,
      detail: errorMessage(error),
    }];
  }
}

/** The chain item when the store cannot be checked safely (an unprotected remote connection). */
export function auditNotChecked(reason: string): AuditComplianceItem {
  return {
    id: "audit.chain",
    control: "AU-9, AU-10",
    title: CHAIN_TITLE,
    status: "fail",
    required: true,
    detail: `not checked: ${reason}`,
  };
}
