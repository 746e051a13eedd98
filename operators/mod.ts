/**
 * Carrel's operators: building blocks a DAG file composes. Each returns a task spec.
 *
 * ```ts ignore
 * import { privacyCheckpoint, schemaGate, tokenize } from "../operators/mod.ts";
 * ```
 *
 * @module
 */
export { tokenize, type TokenizeOptions } from "./tokenize.ts";
export { schemaGate, type SchemaGateOptions } from "./schema_gate.ts";
export { privacyCheckpoint, type PrivacyCheckpointOptions } from "./privacy_checkpoint.ts";
export { emitRecords, inputsAreArrays, upstreamRecords } from "./records_io.ts";
export { DEFAULT_PII_KEYS, detectPii, isToken, stripPii } from "./pii.ts";
export { activeKey, loadKeyring, rotateKeyring } from "./keyring.ts";
export { createTokenizer, HmacTokenizer } from "./hmac_sha256.ts";
