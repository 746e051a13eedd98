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
import { basename, join, relative } from "node:path";
import {
  countHoldings,
  encodeIso2709,
  type MarcReadResult,
  type MarcRecord,
  MARCXML_NAMESPACE,
  readIso2709,
  readMarcXml,
  sanitizeRecord,
  type SanitizeRules,
  toDiscovery,
  toMarcXml,
} from "./marc.ts";

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

/**
 * A catalog record as it travels through `catalog_sync`: the discovery document (the fields of
 * `toDiscovery`) plus the sanitized MARC record under `marc`. `id` (001) is required.
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
  marc: MarcRecordSchema,
});

/** The TypeScript type of {@linkcode CatalogRecord}. */
export type CatalogRecordValue = z.infer<typeof CatalogRecord>;

/** What {@linkcode toCatalogRecord} returns. */
export type CatalogConversion =
  | { ok: true; record: CatalogRecordValue; stripped: Record<string, number> }
  | { ok: false; reason: string; stripped: Record<string, number> };

/**
 * Sanitizes one record for discovery and maps it: items are counted before they are stripped
 * (`holdings_count`), the sanitizer applies `rules`, and the discovery fields come from the
 * sanitized record. The id comes from `options.idFields` (001, else Evergreen's 901 $c, else 035
 * $a by default) and is written to 001 when the record had none; a record without any id cannot be
 * indexed: it is refused with a reason (no content).
 *
 * @example Usage
 * ```ts
 * import { toCatalogRecord } from "./catalog.ts";
 * const out = toCatalogRecord({
 *   leader: "00000nam a2200000   4500",
 *   fields: [
 *     { tag: "001", value: "b1" },
 *     { tag: "245", ind1: "0", ind2: "0", subfields: [{ code: "a", value: "Title" }] },
 *     { tag: "952", ind1: " ", ind2: " ", subfields: [{ code: "p", value: "39999000000001" }] },
 *   ],
 * });
 * // out.ok, out.record.holdings_count === 1, out.stripped === { "952": 1 }
 * ```
 */
export function toCatalogRecord(
  record: MarcRecord,
  rules: SanitizeRules = {},
  options: CatalogRecordOptions = {},
): CatalogConversion {
  const idFields = options.idFields ?? DEFAULT_ID_FIELDS;
  const holdings = countHoldings(record);
  // The id is taken before sanitizing: Evergreen keeps its record id in the local 901 $c.
  const id = recordId(record, idFields);
  const { record: clean, stripped } = sanitizeRecord(record, rules);
  if (id === null) {
    return { ok: false, reason: `no record id (looked in ${idFields.join(", ")})`, stripped };
  }
  const existing = clean.fields.findIndex((f) => f.tag === "001");
  if (existing === -1) {
    // Discovery loaders (SolrMarc, Traject) take the id from 001: give them the one we used.
    const at = clean.fields.findIndex((f) => f.tag > "001");
    clean.fields.splice(at === -1 ? clean.fields.length : at, 0, { tag: "001", value: id });
  }
  const doc = toDiscovery(clean, { holdingsCount: holdings });
  return { ok: true, record: { ...doc, id, marc: clean }, stripped };
}

/**
 * Where a record's id comes from, in order: `"001"` (a control field) or a tag and subfield code
 * such as `"901c"` (Evergreen's record id) or `"035a"` (system control number).
 */
export const DEFAULT_ID_FIELDS: readonly string[] = ["001", "901c", "035a"];

/** Options for {@linkcode toCatalogRecord}. */
export interface CatalogRecordOptions {
  /** Id sources in order (default {@linkcode DEFAULT_ID_FIELDS}). */
  idFields?: readonly string[];
}

/** The first non-empty id found in `idFields` (see {@linkcode DEFAULT_ID_FIELDS}), or null. */
export function recordId(record: MarcRecord, idFields: readonly string[]): string | null {
  for (const source of idFields) {
    const tag = source.slice(0, 3);
    const code = source.slice(3);
    for (const f of record.fields) {
      if (f.tag !== tag) continue;
      if ("value" in f) {
        if (code === "" && f.value.trim() !== "") return f.value.trim();
        continue;
      }
      for (const sf of f.subfields) {
        if ((code === "" || sf.code === code) && sf.value.trim() !== "") return sf.value.trim();
      }
    }
  }
  return null;
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

class BufferedFile {
  #parts: Uint8Array[] = [];
  #size = 0;
  private constructor(readonly file: Deno.FsFile, readonly tmp: string, readonly path: string) {}
  static async open(path: string): Promise<BufferedFile> {
    const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o644 });
    return new BufferedFile(file, tmp, path);
  }
  async write(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    this.#parts.push(bytes);
    this.#size += bytes.length;
    if (this.#size >= 1 << 18) await this.flush();
  }
  async flush(): Promise<void> {
    if (this.#size === 0) return;
    const out = new Uint8Array(this.#size);
    let at = 0;
    for (const p of this.#parts) {
      out.set(p, at);
      at += p.length;
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
      await mrc.write(bytes);
      await xml.write(toMarcXml(marc, { namespace: false }).replace(/^/gm, "  ") + "\n");
      await jsonl.write(JSON.stringify(doc) + "\n");
      written++;
    }
    await xml.write("</collection>\n");
    for (const f of all) await f.commit();
  } catch (err) {
    for (const f of all) await f.discard();
    throw err;
  }
  return { written, unencodable, files };
}
