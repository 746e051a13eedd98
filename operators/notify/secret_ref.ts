/**
 * Secret references for notifiers: a DAG file names the environment variable that holds a secret
 * (`{ env: "CARREL_ALERT_WEBHOOK_SECRET" }`), never the secret itself, so the secret stays out of
 * the repository, the state store, logs and error messages. It is read when an alert is sent, so a
 * DAG validates on a machine that lacks it.
 *
 * @module
 */
import { PrivacySafeError } from "../../core/privacy/privacy_safe.ts";

/** The name of the environment variable holding a secret. */
export interface SecretRef {
  env: string;
}

const ENV_NAME = /^[A-Z_][A-Z0-9_]*$/;

/** A notifier's failure: names the notifier, the variable and the status, never a secret. */
export class NotifierError extends PrivacySafeError {
  override name = "NotifierError";
}

/**
 * Checks a secret reference as the DAG file gives it (at load time); throws naming the option.
 *
 * @example
 * ```ts
 * import { checkSecretRef } from "./secret_ref.ts";
 * checkSecretRef("webhook", "secret", { env: "CARREL_ALERT_SECRET" }); // ok
 * ```
 */
export function checkSecretRef(notifier: string, option: string, ref: unknown): SecretRef {
  if (
    typeof ref !== "object" || ref === null || typeof (ref as SecretRef).env !== "string" ||
    !ENV_NAME.test((ref as SecretRef).env)
  ) {
    throw new TypeError(
      `${notifier}: ${option} must name an environment variable, such as { env: "CARREL_ALERT_SECRET" } (a secret is never written in a DAG file)`,
    );
  }
  return { env: (ref as SecretRef).env };
}

/**
 * Reads a secret when it is needed; throws a {@link NotifierError} naming the variable (never a
 * value) when it is not set.
 *
 * @example
 * ```ts ignore
 * const key = readSecret("webhook ops", { env: "CARREL_ALERT_SECRET" });
 * ```
 */
export function readSecret(notifier: string, ref: SecretRef): string {
  const value = Deno.env.get(ref.env);
  if (!value) {
    throw new NotifierError(`Cannot send ${notifier}: ${ref.env} is not set`);
  }
  return value;
}
