/**
 * Carrel's operators: building blocks a DAG file composes. Each returns a task spec.
 *
 * ```ts ignore
 * import { privacyCheckpoint, schemaGate, tokenize } from "./mod.ts";
 * ```
 *
 * @module
 */
export { tokenize, type TokenizeOptions } from "./privacy/tokenize.ts";
export { schemaGate, type SchemaGateOptions } from "./privacy/schema_gate.ts";
export {
  privacyCheckpoint,
  type PrivacyCheckpointOptions,
  type QuarantineLimit,
} from "./privacy/privacy_checkpoint.ts";
export {
  checkSmallCells,
  OTHER,
  protectCounts,
  smallCells,
  type SmallCellsCheck,
  type SmallCellsOptions,
  TOTAL,
} from "./privacy/small_cells.ts";
export { declareOutputSchema } from "./privacy/output_schema.ts";
export { emitRecords, inputsAreArrays, upstreamRecords } from "./records_io.ts";
export { DEFAULT_PII_KEYS, detectPii, isToken, stripPii } from "./privacy/pii.ts";
export { activeKey, loadKeyring, rotateKeyring } from "../core/privacy/keyring.ts";
export { createTokenizer, HmacTokenizer } from "../core/privacy/hmac_sha256.ts";
export {
  type BibframeWriteResult,
  type CatalogConversion,
  CatalogInputError,
  CatalogItem,
  catalogItems,
  CatalogRecord,
  type CatalogRecordOptions,
  type CatalogRecordValue,
  type CatalogWarning,
  type CatalogWriteResult,
  DEFAULT_ID_FIELDS,
  DEFAULT_ID_FROM,
  derivedRecordId,
  findRecordId,
  ID_PRESETS,
  listMarcFiles,
  type MarcFileResult,
  MarcRecordSchema,
  readMarcFiles,
  recordId,
  resolveIdSources,
  toCatalogRecord,
  writeBibframeFiles,
  writeCatalogFiles,
} from "./marc/catalog.ts";
export { bibframe, type BibframeOptions } from "./marc/bibframe_operator.ts";
export {
  birthYearBand,
  CIRCULATION_EVENT_COLUMNS,
  CIRCULATION_EVENTS_DDL,
  CIRCULATION_EVENTS_TARGET,
  CirculationEvent,
  circulationEventsDdl,
  circulationEventsTarget,
  type CirculationEventValue,
  DEFAULT_EVENT_K,
  deidentifyCirculation,
  type DeidentifyOptions,
  EVERGREEN_CIRCULATION_QUERY,
  generalizedEventClasses,
  postalPrefix,
} from "./ils/circulation.ts";
export {
  countHoldings,
  DEFAULT_ITEM_TAGS,
  readIso2709,
  readMarcXml,
  sanitizeRecord,
  type SanitizeRules,
  toBibframe,
  toDiscovery,
  vernacularForms,
  writeIso2709,
  writeMarcXml,
} from "./marc/mod.ts";
export {
  branchId,
  BranchIds,
  type BranchIdsValue,
  checkTimeZone,
  deidentifyKohaCirculation,
  KOHA_CIRCULATION_QUERY,
  kohaCirculationParams,
  kohaInstant,
  type KohaOptions,
  type KohaResult,
  kohaWallTime,
  UnmappedBranchError,
} from "./ils/koha.ts";
export {
  ConnectionParam,
  InstantParam,
  syncInterval,
  TableParam,
  TimeZoneParam,
} from "./ils/sync_params.ts";
export {
  deidentifyEvergreenHold,
  deidentifyKohaHold,
  EVERGREEN_HOLDS_QUERY,
  HOLD_LEVELS,
  HOLD_REQUEST_COLUMNS,
  HOLD_REQUESTS_TARGET,
  HOLD_STATES,
  HoldRequest,
  holdRequestsDdl,
  holdRequestsTarget,
  type HoldRequestValue,
  holdRowIls,
  KOHA_HOLDS_QUERY,
  type KohaHoldOptions,
  type KohaHoldResult,
  kohaHoldsParams,
  QUEUE_BANDS,
  queueBand,
} from "./ils/holds.ts";
export {
  openEmbeddedDatabases,
  openPglite,
  type PgliteDatabase,
  SqlError,
  sqlExtract,
  sqlExtractBatches,
  type SqlExtractOptions,
  sqlLoad,
  type SqlLoadResult,
  type SqlLoadTarget,
  type SqlSource,
} from "./ils/sql.ts";
export {
  connectionVariable,
  isMysqlUrl,
  isPgliteUrl,
  isPostgresUrl,
  pglitePath,
  resolveConnection,
} from "./ils/connection.ts";
export { csvExtract, type CsvExtractOptions, type CsvQuarantineEntry, readCsv } from "./ils/csv.ts";
export { jsonlWrite, readJsonl, writeJsonl } from "./ils/jsonl.ts";
export { hasCredentials, isCredentialFree, maskUrl } from "../core/privacy/secrets.ts";
export {
  alertMessage,
  email,
  type EmailOptions,
  NotifierError,
  type SecretRef,
  signWebhook,
  verifyWebhook,
  webhook,
  WEBHOOK_TOLERANCE_MS,
  type WebhookOptions,
} from "./notify/mod.ts";
export {
  type PokeEvent,
  type PokeResult,
  sensor,
  type SensorOptions,
  sensorPokes,
} from "./sensors/sensor.ts";
export {
  fileSensor,
  type FileSensorOptions,
  type FileSensorOutput,
  matchFiles,
} from "./sensors/file_sensor.ts";
export { sqlSensor, type SqlSensorOptions } from "./sensors/sql_sensor.ts";
