/**
 * Ready-made alert callbacks: a signed webhook and e-mail over SMTP. Use them as a DAG's or a
 * task's `onFailure`, `onRetry`, `onSuccess` or `onSlaMiss`.
 *
 * ```ts ignore
 * import { email, webhook } from "carrel/operators";
 * ```
 *
 * @module
 */
export {
  signWebhook,
  verifyWebhook,
  webhook,
  WEBHOOK_TOLERANCE_MS,
  type WebhookOptions,
} from "./webhook.ts";
export { alertMessage, email, type EmailOptions } from "./email.ts";
export { NotifierError, type SecretRef } from "./secret_ref.ts";
