/**
 * MARC 21 codec and privacy tooling for Carrel: ISO 2709 and MARCXML
 * streaming readers and writers, MARC-8 decoding/encoding, a discovery
 * sanitizer, a discovery document mapper and a synthetic fixture
 * generator. Pure library code with no engine dependency.
 *
 * @example
 * ```ts
 * import { countHoldings, readIso2709, sanitizeRecord, toDiscovery } from "./marc.ts";
 * const file = await Deno.open("records.mrc");
 * for await (const r of readIso2709(file.readable)) {
 *   if (!r.ok) continue;
 *   const holdings = countHoldings(r.record);
 *   const { record } = sanitizeRecord(r.record);
 *   console.log(toDiscovery(record, { holdingsCount: holdings }));
 * }
 * ```
 *
 * @module
 */

export * from "./marc_record.ts";
export * from "./marc_iso2709.ts";
export * from "./marc8.ts";
export * from "./marc_xml.ts";
export * from "./marc_sanitize.ts";
export * from "./marc_discovery.ts";
export * from "./marc_fixtures.ts";
