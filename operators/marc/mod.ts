/**
 * MARC 21 codec and privacy tooling for Carrel: ISO 2709 and MARCXML
 * streaming readers and writers, MARC-8 decoding/encoding, a discovery
 * sanitizer, a discovery document mapper (with 880 vernacular forms) and a
 * privacy-filtered BIBFRAME 2.0 mapper (RDF/XML, JSON-LD). Pure library code
 * with no engine dependency.
 *
 * @example
 * ```ts
 * import { countHoldings, readIso2709, sanitizeRecord, toDiscovery } from "./mod.ts";
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

export * from "./record.ts";
export * from "./iso2709.ts";
export * from "./marc8.ts";
export * from "./xml.ts";
export * from "./sanitize.ts";
export * from "./discovery.ts";
export * from "./bibframe.ts";
