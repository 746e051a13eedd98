/**
 * Catalog records for discovery layers: what `dags/catalog_sync.ts` (and DAGs copied from it)
 * needs around the MARC 21 codec.
 *
 * - {@linkcode listMarcFiles} / {@linkcode readMarcFiles}: a `.mrc`/`.xml` file or a folder of
 *   them, streamed record by record, each result tagged with its file.
 * - {@linkcode toCatalogRecord}: one read record -> sanitized record + discovery JSON, with the
 *   fields stripped per tag (counts only).
 * - {@linkcode CatalogRecord}: the zod schema a `schemaGate` applies to those records.
 * - {@linkcode writeCatalogFiles}: `catalog.jsonl` (discovery JSON), `catalog.xml` (sanitized
 *   MARCXML) and `catalog.mrc` (sanitized ISO 2709, UTF-8) in one streaming pass, each file
 *   written to a temporary name and renamed into place at the end.
 *
 * @module
 */
import { z } from "zod";
import { createHash } from "node:crypto";
import { basename, join, relative } from "node:path";
import {
  countHoldings,
  type DataField,
  encodeIso2709,
  isControlField,
  type MarcReadResult,
  type MarcRecord,
  MARCXML_NAMESPACE,
  readIso2709,
  readMarcXml,
  sanitizeRecord,
  type SanitizeRules,
  toDiscovery,
  toMarcXml,
} from "./mod.ts";
import {
  bibframeJsonLd,
  bibframeRdfXml,
  JSONLD_CONTEXT,
  RDF_XML_FOOTER,
  RDF_XML_HEADER,
  toBibframe,
} from "./bibframe.ts";

/** File extensions read as ISO 2709. */
export const ISO2709_EXTENSIONS: readonly string[] = [".mrc", ".marc", ".iso", ".iso2709", ".dat"];
/** File extensions read as MARCXML. */
export const MARCXML_EXTENSIONS: readonly string[] = [".xml", ".marcxml"];

function formatOfPath(path: string): "iso2709" | "marcxml" | undefined {
  const lower = path.toLowerCase();
  if (ISO2709_EXTENSIONS.some((e) => lower.endsWith(e))) return "iso2709";
  if (MARCXML_EXTENSIONS.some((e) => lower.endsWith(e))) return "marcxml";
  return undefined;
}

/** Raised when the input cannot be used at all (missing, not MARC). Names paths, not content. */
export class CatalogInputError extends Error {
  /**
   * Creates an input error.
   *
   * @example Usage
   * ```ts
   * import { CatalogInputError } from "./catalog.ts";
   * console.log(new CatalogInputError("Cannot read input: x").name); // "CatalogInputError"
   * ```
   */
  constructor(message: string) {
    super(message);
    this.name = "CatalogInputError";
  }
}

/**
 * The MARC files of an input: the file itself, or the `.mrc`/`.marc`/`.iso`/`.xml` files of a
 * folder (not recursive), sorted by name so runs are reproducible.
 *
 * @example Usage
 * ```ts ignore
 * import { listMarcFiles } from "./catalog.ts";
 * console.log(await listMarcFiles("exports/")); // ["exports/a.mrc", "exports/b.xml"]
 * ```
 */
export async function listMarcFiles(input: string): Promise<string[]> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(input);
  } catch {
    throw new CatalogInputError(`Cannot read input "${input}": no such file or folder`);
  }
  if (info.isFile) {
    if (formatOfPath(input) === undefined) {
      throw new CatalogInputError(
        `Cannot read input "${input}": expected a ${
          [...ISO2709_EXTENSIONS, ...MARCXML_EXTENSIONS].join("/")
        } file`,
      );
    }
    return [input];
  }
  const files: string[] = [];
  for await (const entry of Deno.readDir(input)) {
    if (entry.isFile && formatOfPath(entry.name) !== undefined) files.push(join(input, entry.name));
  }
  files.sort();
  return files;
}

/** One result of {@linkcode readMarcFiles}: a read result tagged with its file. */
export type MarcFileResult = MarcReadResult & {
  /** The file's path relative to the input folder (its base name for a single file). */
  file: string;
};

/**
 * Streams every record of a file or folder of MARC files: ISO 2709 (encoding chosen per record by
 * leader/09, MARC-8 or UTF-8) or MARCXML, by extension. Unreadable chunks come out as failures
 * (`ok: false`, position and reason) and the stream goes on.
 *
 * @example Usage
 * ```ts ignore
 * import { readMarcFiles } from "./catalog.ts";
 * for await (const r of readMarcFiles("exports/")) {
 *   if (!r.ok) console.log(r.file, r.position.index, r.reason);
 * }
 * ```
 */
export async function* readMarcFiles(input: string): AsyncGenerator<MarcFileResult> {
  const files = await listMarcFiles(input);
  const single = files.length === 1 && files[0] === input;
  for (const path of files) {
    const file = single ? basename(path) : relative(input, path);
    const handle = await Deno.open(path, { read: true });
    try {
      const results = formatOfPath(path) === "marcxml"
        ? readMarcXml(handle.readable)
        : readIso2709(handle.readable);
      for await (const result of results) yield { ...result, file };
    } finally {
      try {
        handle.close();
      } catch { /* the stream closed it */ }
    }
  }
}

const Subfield = z.object({ code: z.string().length(1), value: z.string() }).strict();
const ControlField = z.object({ tag: z.string().length(3), value: z.string() }).strict();
const DataField = z.object({
  tag: z.string().length(3),
  ind1: z.string().length(1),
  ind2: z.string().length(1),
  subfields: z.array(Subfield),
}).strict();

/** A MARC record in JSON (the shape of {@linkcode MarcRecord}). */
export const MarcRecordSchema = z.object({
  leader: z.string().length(24),
  fields: z.array(z.union([ControlField, DataField])),
}).strict();

const VernacularForm = z.object({
  field: z.enum(["title", "creators", "subjects", "series", "publisher"]),
  tag: z.string().length(3),
  value: z.string(),
  romanized: z.string().nullable(),
  script: z.string().nullable(),
  direction: z.enum(["ltr", "rtl"]),
}).strict();

/** One item as published: where it is shelved and its call number, nothing else. */
export const CatalogItem = z.object({
  location: z.string().nullable(),
  call_number: z.string().nullable(),
}).strict();

/** The TypeScript type of {@linkcode CatalogItem}. */
export type CatalogItemValue = z.infer<typeof CatalogItem>;

/**
 * A catalog record as it travels through `catalog_sync`: the discovery document (the fields of
 * `toDiscovery`, `vernacular` when the record has 880s), `items` (shelving location and call
 * number only, read from 952/945/852 before they are stripped; absent when there are none) and the
 * sanitized MARC record under `marc`. `id` is required (see {@linkcode toCatalogRecord}).
 */
export const CatalogRecord = z.object({
  id: z.string().min(1),
  title: z.string().nullable(),
  creators: z.array(z.string()),
  isbns: z.array(z.string()),
  issn: z.string().nullable(),
  year: z.number().int().nullable(),
  language: z.string().nullable(),
  subjects: z.array(z.string()),
  format: z.string(),
  holdings_count: z.number().int().min(0),
  vernacular: z.array(VernacularForm).optional(),
  items: z.array(CatalogItem).optional(),
  marc: MarcRecordSchema,
});

/** The TypeScript type of {@linkcode CatalogRecord}. */
export type CatalogRecordValue = z.infer<typeof CatalogRecord>;

/** A value-free note about one converted record (counted by kind in the DAG's summary). */
export type CatalogWarning = "id-derived";

/** What {@linkcode toCatalogRecord} returns. */
export type CatalogConversion =
  | {
    ok: true;
    record: CatalogRecordValue;
    stripped: Record<string, number>;
    /** Where the id came from: an id source such as `"999$c"`, or `"derived"`. */
    idSource: string;
    warnings: CatalogWarning[];
  }
  | { ok: false; reason: string; stripped: Record<string, number> };

/**
 * Where record ids come from, in order. Each source is `"001"` (a control field) or a tag and
 * subfield such as `"999$c"`; `"901c"` (without `$`) is read the same way.
 *
 * - `marc21` (the default): 001, then Evergreen's record id (901 $c), then 035 $a (system control
 *   number), then Koha's biblionumber (999 $c). The first three are the order of earlier Carrel
 *   versions, so ids already published do not change.
 * - `koha`: 999 $c first (the biblionumber the OPAC links to), then 001, 035 $a.
 * - `evergreen`: 901 $c first (the record id), then 001, 035 $a.
 * - `folio`: 001 (the instance HRID), then 999 $i (the instance UUID), then 035 $a.
 */
export const ID_PRESETS: Readonly<Record<string, readonly string[]>> = {
  marc21: ["001", "901$c", "035$a", "999$c"],
  koha: ["999$c", "001", "035$a"],
  evergreen: ["901$c", "001", "035$a"],
  folio: ["001", "999$i", "035$a"],
};

/** The default id sources ({@linkcode ID_PRESETS}`.marc21`). */
export const DEFAULT_ID_FROM: readonly string[] = ID_PRESETS.marc21!;

/** @deprecated Use {@linkcode DEFAULT_ID_FROM}; kept for DAGs written against 0.x. */
export const DEFAULT_ID_FIELDS: readonly string[] = DEFAULT_ID_FROM;

/** Options for {@linkcode toCatalogRecord}. */
export interface CatalogRecordOptions {
  /** Id sources in order, or a preset name from {@linkcode ID_PRESETS} (default `marc21`). */
  idFrom?: readonly string[] | string;
  /** @deprecated The former name of `idFrom`. */
  idFields?: readonly string[];
  /**
   * When no id source is present: `false` (default) derives an id from the record's content (see
   * {@linkcode derivedRecordId}) and reports an `id-derived` warning; `true` refuses the record
   * (it is quarantined with a reason).
   */
  strictIds?: boolean;
}

const ID_SOURCE = /^(\d{3}|[0-9A-Za-z]{3})(?:\$?([0-9a-z]))?$/;

/**
 * The id sources of a preset name or list, validated. Throws naming the bad entry.
 *
 * @example
 * ```ts
 * import { resolveIdSources } from "./catalog.ts";
 * resolveIdSources("koha"); // ["999$c", "001", "035$a"]
 * resolveIdSources(["001", "901c"]); // ["001", "901$c"]
 * ```
 */
export function resolveIdSources(idFrom: readonly string[] | string): string[] {
  if (typeof idFrom === "string") {
    const preset = ID_PRESETS[idFrom.trim().toLowerCase()];
    if (!preset) {
      throw new Error(
        `Cannot use id source "${idFrom}": expected one of ${
          Object.keys(ID_PRESETS).join(", ")
        } or a list such as ["001", "999$c"]`,
      );
    }
    return [...preset];
  }
  return idFrom.map((source) => {
    const m = ID_SOURCE.exec(source.trim());
    if (!m) {
      throw new Error(
        `Cannot use id source "${source}": expected a tag ("001") or a tag and subfield ("999$c")`,
      );
    }
    return m[2] ? `${m[1]}$${m[2]}` : m[1]!;
  });
}

/**
 * Sanitizes one record for discovery and maps it: items are counted (`holdings_count`) and their
 * shelving location and call number kept (`items`) before they are stripped, the sanitizer
 * applies `rules`, and the discovery fields come from the sanitized record. The id comes from the
 * first present source of `options.idFrom` (taken before sanitizing: Koha and Evergreen keep it in
 * local 9XX fields) and is written to 001 when the record had none. Without any: a content-derived
 * id with an `id-derived` warning, or, with `strictIds`, a refusal with a reason (no content).
 *
 * @example Usage
 * ```ts
 * import { toCatalogRecord } from "./catalog.ts";
 * const out = toCatalogRecord({
 *   leader: "00000nam a2200000   4500",
 *   fields: [
 *     { tag: "245", ind1: "0", ind2: "0", subfields: [{ code: "a", value: "Title" }] },
 *     { tag: "952", ind1: " ", ind2: " ", subfields: [{ code: "p", value: "39999000000001" }, { code: "o", value: "PS1 .A1" }] },
 *     { tag: "999", ind1: " ", ind2: " ", subfields: [{ code: "c", value: "42" }] },
 *   ],
 * }, {}, { idFrom: "koha" });
 * // out.ok, out.record.id === "42", out.record.items === [{ location: null, call_number: "PS1 .A1" }]
 * ```
 */
export function toCatalogRecord(
  record: MarcRecord,
  rules: SanitizeRules = {},
  options: CatalogRecordOptions = {},
): CatalogConversion {
  const sources = resolveIdSources(options.idFrom ?? options.idFields ?? DEFAULT_ID_FROM);
  const holdings = countHoldings(record);
  const items = catalogItems(record);
  const found = findRecordId(record, sources);
  const { record: clean, stripped } = sanitizeRecord(record, rules);
  const warnings: CatalogWarning[] = [];
  let id: string;
  let idSource: string;
  if (found) {
    ({ id, source: idSource } = found);
  } else if (options.strictIds) {
    return { ok: false, reason: `no record id (looked in ${sources.join(", ")})`, stripped };
  } else {
    id = derivedRecordId(record);
    idSource = "derived";
    warnings.push("id-derived");
  }
  const existing = clean.fields.findIndex((f) => f.tag === "001");
  if (existing === -1) {
    // Discovery loaders (SolrMarc, Traject) take the id from 001: give them the one we used.
    const at = clean.fields.findIndex((f) => f.tag > "001");
    clean.fields.splice(at === -1 ? clean.fields.length : at, 0, { tag: "001", value: id });
  }
  const doc = toDiscovery(clean, { holdingsCount: holdings });
  return {
    ok: true,
    record: { ...doc, id, ...(items.length > 0 ? { items } : {}), marc: clean },
    stripped,
    idSource,
    warnings,
  };
}

/**
 * The first non-empty id found in `sources` (see {@linkcode ID_PRESETS}) and the source it came
 * from, or null.
 *
 * @example
 * ```ts
 * import { findRecordId } from "./catalog.ts";
 * findRecordId({ leader: "", fields: [{ tag: "001", value: " b7 " }] }, ["001"]); // { id: "b7", source: "001" }
 * ```
 */
export function findRecordId(
  record: MarcRecord,
  sources: readonly string[],
): { id: string; source: string } | null {
  for (const source of resolveIdSources(sources)) {
    const [tag, code = ""] = source.split("$") as [string, string?];
    for (const f of record.fields) {
      if (f.tag !== tag) continue;
      if (isControlField(f)) {
        if (code === "" && f.value.trim() !== "") return { id: f.value.trim(), source };
        continue;
      }
      for (const sf of f.subfields) {
        if ((code === "" || sf.code === code) && sf.value.trim() !== "") {
          return { id: sf.value.trim(), source };
        }
      }
    }
  }
  return null;
}

/** The first non-empty id found in `idFields` (see {@linkcode ID_PRESETS}), or null. */
export function recordId(record: MarcRecord, idFields: readonly string[]): string | null {
  return findRecordId(record, idFields)?.id ?? null;
}

/** Tags left out of {@linkcode derivedRecordId}: ids, the transaction time, local and item fields. */
const VOLATILE_TAGS = new Set(["001", "003", "005", "852", "876", "877", "878"]);

/**
 * A record id derived from the record's bibliographic content, for records that carry none:
 * `carrel-` and the first 24 hex digits of the SHA-256 of the canonical JSON of leader/06-07 and
 * every field except 001, 003, 005, local 9XX and item fields (852, 876-878), values trimmed and
 * NFC. The same record gives the same id on every run and machine (a new export time stamp in 005
 * or new items do not change it); editing its description does, and two identical records share
 * one id.
 *
 * @example
 * ```ts
 * import { derivedRecordId } from "./catalog.ts";
 * derivedRecordId({ leader: "00000nam a2200000   4500", fields: [] }).length; // 31
 * ```
 */
export function derivedRecordId(record: MarcRecord): string {
  const parts: unknown[] = [record.leader.slice(6, 8)];
  for (const f of record.fields) {
    if (VOLATILE_TAGS.has(f.tag) || f.tag[0] === "9") continue;
    const clean = (v: string) => v.trim().normalize("NFC");
    parts.push(
      isControlField(f)
        ? [f.tag, clean(f.value)]
        : [f.tag, f.ind1, f.ind2, ...f.subfields.flatMap((s) => [s.code, clean(s.value)])],
    );
  }
  const hash = createHash("sha256").update(JSON.stringify(parts)).digest("hex");
  return `carrel-${hash.slice(0, 24)}`;
}

const first = (f: DataField, ...codes: string[]): string | null => {
  for (const code of codes) {
    const v = f.subfields.find((s) => s.code === code)?.value.trim();
    if (v) return v;
  }
  return null;
};

/**
 * The items of a record as they may be published: shelving location and call number only, read
 * from Koha 952 ($c shelving location, else $a home branch; $o call number), III 945 ($l
 * location; $a call number) and MARC 21 852 ($c shelving location, else $b; $h $i call number, else
 * Evergreen's $j). Barcodes, notes, prices, dates and circulation data are never read.
 *
 * @example
 * ```ts
 * import { catalogItems } from "./catalog.ts";
 * catalogItems({ leader: "", fields: [{ tag: "952", ind1: " ", ind2: " ", subfields: [
 *   { code: "c", value: "STACKS" }, { code: "o", value: "QA76 .K5" }, { code: "p", value: "39999000000001" },
 * ] }] }); // [{ location: "STACKS", call_number: "QA76 .K5" }]
 * ```
 */
export function catalogItems(record: MarcRecord): CatalogItemValue[] {
  const out: CatalogItemValue[] = [];
  for (const f of record.fields) {
    if (isControlField(f)) continue;
    let item: CatalogItemValue | undefined;
    if (f.tag === "952") item = { location: first(f, "c", "a"), call_number: first(f, "o") };
    else if (f.tag === "945") item = { location: first(f, "l"), call_number: first(f, "a") };
    else if (f.tag === "852") {
      const call = [first(f, "k"), first(f, "h"), first(f, "i"), first(f, "m")].filter((v) =>
        v !== null
      ).join(" ");
      item = { location: first(f, "c", "b"), call_number: call !== "" ? call : first(f, "j") };
    }
    if (item && (item.location !== null || item.call_number !== null)) out.push(item);
  }
  return out;
}

/** Paths of the files written by {@linkcode writeCatalogFiles}. */
export interface CatalogFiles {
  jsonl: string;
  xml: string;
  mrc: string;
}

/** What {@linkcode writeCatalogFiles} returns. */
export interface CatalogWriteResult {
  /** Records written to all three files. */
  written: number;
  /** Records that could not be encoded as ISO 2709 (e.g. a field over 9,999 bytes): position, reason. */
  unencodable: { position: number; reason: string }[];
  files: CatalogFiles;
}

const encoder = new TextEncoder();

/** Bytes gathered before a write: few large writes instead of one per record. */
const FLUSH_BYTES = 1 << 18;

/**
 * A file written through a buffer under a temporary name, renamed into place on commit. Text is
 * gathered as strings and encoded once per flush (one call into the runtime per 256 KiB, not
 * one per record).
 */
class BufferedFile {
  #parts: Uint8Array[] = [];
  #size = 0;
  #text = "";
  private constructor(readonly file: Deno.FsFile, readonly tmp: string, readonly path: string) {}
  static async open(path: string): Promise<BufferedFile> {
    const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o644 });
    return new BufferedFile(file, tmp, path);
  }
  /** Whether enough is gathered to be worth a write (then `flush`). */
  get full(): boolean {
    return this.#size + this.#text.length >= FLUSH_BYTES;
  }
  /** Adds text or bytes (in order) without writing. */
  add(data: string | Uint8Array): void {
    if (typeof data === "string") {
      this.#text += data;
      return;
    }
    this.#settleText();
    this.#parts.push(data);
    this.#size += data.length;
  }
  async write(data: string | Uint8Array): Promise<void> {
    this.add(data);
    if (this.full) await this.flush();
  }
  #settleText(): void {
    if (this.#text === "") return;
    const bytes = encoder.encode(this.#text);
    this.#text = "";
    this.#parts.push(bytes);
    this.#size += bytes.length;
  }
  async flush(): Promise<void> {
    this.#settleText();
    if (this.#size === 0) return;
    const out = this.#parts.length === 1 ? this.#parts[0]! : new Uint8Array(this.#size);
    if (out !== this.#parts[0]) {
      let at = 0;
      for (const p of this.#parts) {
        out.set(p, at);
        at += p.length;
      }
    }
    this.#parts = [];
    this.#size = 0;
    let offset = 0;
    while (offset < out.length) offset += await this.file.write(out.subarray(offset));
  }
  async commit(): Promise<void> {
    await this.flush();
    this.file.close();
    await Deno.rename(this.tmp, this.path);
  }
  async discard(): Promise<void> {
    try {
      this.file.close();
    } catch { /* closed */ }
    await Deno.remove(this.tmp).catch(() => {});
  }
}

/**
 * Writes catalog records to `dir/catalog.jsonl` (discovery JSON: every field but `marc`),
 * `dir/catalog.xml` (a MARCXML collection) and `dir/catalog.mrc` (ISO 2709, UTF-8), streaming, in
 * one pass. A record that cannot be encoded as ISO 2709 is left out of all three files and
 * reported (position and reason). Files appear only when complete (temporary name, then rename).
 *
 * @example Usage
 * ```ts ignore
 * import { writeCatalogFiles } from "./catalog.ts";
 * const { written } = await writeCatalogFiles("out", records);
 * ```
 */
export async function writeCatalogFiles(
  dir: string,
  records: AsyncIterable<CatalogRecordValue> | Iterable<CatalogRecordValue>,
  options: { signal?: AbortSignal } = {},
): Promise<CatalogWriteResult> {
  await Deno.mkdir(dir, { recursive: true });
  const files: CatalogFiles = {
    jsonl: join(dir, "catalog.jsonl"),
    xml: join(dir, "catalog.xml"),
    mrc: join(dir, "catalog.mrc"),
  };
  const jsonl = await BufferedFile.open(files.jsonl);
  const xml = await BufferedFile.open(files.xml);
  const mrc = await BufferedFile.open(files.mrc);
  const all = [jsonl, xml, mrc];
  const unencodable: CatalogWriteResult["unencodable"] = [];
  let written = 0;
  let position = 0;
  try {
    await xml.write(
      `<?xml version="1.0" encoding="UTF-8"?>\n<collection xmlns="${MARCXML_NAMESPACE}">\n`,
    );
    for await (const record of records) {
      position++;
      if (options.signal?.aborted) throw new Error("Cannot write the catalog: aborted");
      const { marc, ...doc } = record;
      let bytes: Uint8Array;
      try {
        bytes = encodeIso2709(marc, { encoding: "utf-8" });
      } catch (err) {
        // The codec's messages name tags and positions, never content.
        unencodable.push({
          position,
          reason: err instanceof Error ? err.message : "cannot encode",
        });
        continue;
      }
      mrc.add(bytes);
      xml.add(toMarcXml(marc, { namespace: false, indent: "  " }) + "\n");
      jsonl.add(JSON.stringify(doc) + "\n");
      written++;
      for (const f of all) if (f.full) await f.flush();
    }
    await xml.write("</collection>\n");
    for (const f of all) await f.commit();
  } catch (err) {
    for (const f of all) await f.discard();
    throw err;
  }
  return { written, unencodable, files };
}

/** What {@linkcode writeBibframeFiles} returns. */
export interface BibframeWriteResult {
  /** Records written to both files. */
  written: number;
  /** Triples' subjects written: Work, Instance and Item nodes. */
  nodes: number;
  files: { rdfxml: string; jsonld: string };
}

/** Options of {@linkcode writeBibframeFiles}. */
export interface BibframeFileOptions {
  /** Base of the node IRIs (default `http://example.org/`). */
  baseUri?: string;
  /** File name stem in `dir` (default `catalog.bibframe`: `.rdf` and `.jsonld`). */
  stem?: string;
  signal?: AbortSignal;
}

/**
 * Writes catalog records as BIBFRAME 2.0 to `dir/catalog.bibframe.rdf` (RDF/XML, as
 * marc2bibframe2) and `dir/catalog.bibframe.jsonld` (one JSON-LD document with a `@graph`),
 * streaming, in one pass, through the privacy-filtered mapping of `toBibframe` (only the record's
 * sanitized MARC, its id and its items' shelving locations and call numbers are read). Files
 * appear only when complete.
 *
 * @example Usage
 * ```ts ignore
 * import { writeBibframeFiles } from "./catalog.ts";
 * const { written } = await writeBibframeFiles("out", records);
 * ```
 */
export async function writeBibframeFiles(
  dir: string,
  records: AsyncIterable<CatalogRecordValue> | Iterable<CatalogRecordValue>,
  options: BibframeFileOptions = {},
): Promise<BibframeWriteResult> {
  await Deno.mkdir(dir, { recursive: true });
  const stem = options.stem ?? "catalog.bibframe";
  const files = { rdfxml: join(dir, `${stem}.rdf`), jsonld: join(dir, `${stem}.jsonld`) };
  const rdf = await BufferedFile.open(files.rdfxml);
  const jsonld = await BufferedFile.open(files.jsonld);
  let written = 0;
  let nodes = 0;
  try {
    await rdf.write(RDF_XML_HEADER);
    await jsonld.write(`{"@context":${JSON.stringify(JSONLD_CONTEXT)},"@graph":[\n`);
    for await (const record of records) {
      if (options.signal?.aborted) throw new Error("Cannot write BIBFRAME: aborted");
      const graph = toBibframe(record.marc, {
        id: record.id,
        ...(options.baseUri ? { baseUri: options.baseUri } : {}),
        ...(record.items ? { items: record.items } : {}),
      });
      await rdf.write(bibframeRdfXml(graph));
      const objects = bibframeJsonLd(graph).map((o) => JSON.stringify(o)).join(",\n");
      await jsonld.write((written > 0 ? ",\n" : "") + objects);
      written++;
      nodes += graph.length;
    }
    await rdf.write(RDF_XML_FOOTER);
    await jsonld.write("\n]}\n");
    await rdf.commit();
    await jsonld.commit();
  } catch (err) {
    await rdf.discard();
    await jsonld.discard();
    throw err;
  }
  return { written, nodes, files };
}
