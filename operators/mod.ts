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
export {
  type CatalogConversion,
  CatalogInputError,
  CatalogRecord,
  type CatalogRecordOptions,
  type CatalogRecordValue,
  type CatalogWriteResult,
  DEFAULT_ID_FIELDS,
  listMarcFiles,
  type MarcFileResult,
  MarcRecordSchema,
  readMarcFiles,
  recordId,
  toCatalogRecord,
  writeCatalogFiles,
} from "./catalog.ts";
export {
  birthYearBand,
  CIRCULATION_EVENT_COLUMNS,
  CIRCULATION_EVENTS_DDL,
  CIRCULATION_EVENTS_TARGET,
  CirculationEvent,
  type CirculationEventValue,
  deidentifyCirculation,
  type DeidentifyOptions,
  EVERGREEN_CIRCULATION_QUERY,
  isCredentialFree,
  postalPrefix,
} from "./circulation.ts";
export {
  countHoldings,
  DEFAULT_ITEM_TAGS,
  readIso2709,
  readMarcXml,
  sanitizeRecord,
  type SanitizeRules,
  toDiscovery,
  writeIso2709,
  writeMarcXml,
} from "./marc.ts";
export {
  openEmbeddedDatabases,
  openPglite,
  type PgliteDatabase,
  SqlError,
  sqlExtract,
  type SqlExtractOptions,
  sqlLoad,
  type SqlLoadResult,
  type SqlLoadTarget,
  type SqlSource,
} from "./sql.ts";
export {
  isPgliteUrl,
  isPostgresUrl,
  maskUrl,
  pglitePath,
  resolveConnection,
} from "./connection.ts";
export { csvExtract, type CsvExtractOptions, type CsvQuarantineEntry, readCsv } from "./csv.ts";
export { jsonlWrite, readJsonl, writeJsonl } from "./jsonl.ts";
