/**
 * MARC 21 to BIBFRAME 2.0 (the Library of Congress's linked-data model), serialized as RDF/XML in
 * the shape LC's marc2bibframe2 produces (top-level `bf:Work`, `bf:Instance` and `bf:Item` nodes
 * linked by IRI, descriptions nested as blank nodes) and as JSON-LD.
 *
 * **Privacy filter.** The mapping is an allow-list: only the fields and subfields named below
 * become triples, and every node and property is checked against {@linkcode BIBFRAME_TERMS} before
 * it is written. Nothing is read from circulation, holds, fines or patron data; item barcodes,
 * nonpublic notes (852 $x, 876-878 $x), acquisition and action notes (541, 561, 583), local notes
 * (59X) and local administrative tags (9XX) never become triples. `bf:Item` nodes carry only a
 * shelving location (`bf:sublocation`) and a call number (`bf:shelfMark`).
 *
 * | MARC | BIBFRAME |
 * | --- | --- |
 * | leader/06 | Work class (`bf:Text`, `bf:Cartography`, `bf:NotatedMusic`, ...), Instance class (`bf:Print`, `bf:Manuscript`, `bf:Electronic`) |
 * | 245 $a $b $n $p, $c | `bf:title` (`bf:mainTitle`, `bf:subtitle`, `bf:partNumber`, `bf:partName`), `bf:responsibilityStatement` |
 * | 100/110/111, 700/710/711 | `bf:contribution` / `bf:agent` (`bf:Person`, `bf:Family`, `bf:Organization`, `bf:Meeting`) / `bf:role` |
 * | 600-662 (not 655) | `bf:subject` (`bf:Person`, `bf:Organization`, `bf:Meeting`, `bf:Work`, `bf:Temporal`, `bf:Place`, `bf:Topic`) |
 * | 655 | `bf:genreForm` |
 * | 008/35-37, 041 $a | `bf:language` (id.loc.gov languages) |
 * | 010, 020, 022, record id | `bf:identifiedBy` (`bf:Lccn`, `bf:Isbn`, `bf:Issn`, `bf:Local`) |
 * | 050, 082 | `bf:classification` (`bf:ClassificationLcc`, `bf:ClassificationDdc`) |
 * | 250, 260/264, 300, 490 | `bf:editionStatement`, `bf:provisionActivity` (`bf:Publication` ...), `bf:copyrightDate`, `bf:extent`, `bf:dimensions`, `bf:seriesStatement` |
 * | 500, 501, 504, 546, 505, 520 | `bf:note`, `bf:tableOfContents`, `bf:summary` |
 * | 880 | the same properties, with literals tagged by language and script (`he-hebr`) |
 * | items (952/945/852, see `catalogItems`) | `bf:Item` with `bf:sublocation` and `bf:shelfMark` |
 *
 * @module
 */

import {
  CREATOR_TAGS,
  normalizeIsbn,
  normalizeIssn,
  SUBJECT_TAGS,
  trimIsbd,
  type VernacularLink,
  vernacularLinks,
} from "./discovery.ts";
import {
  controlValue,
  type DataField,
  indexDataFields,
  type MarcRecord,
  subfieldValues,
} from "./record.ts";
import { escapeXml } from "./xml.ts";

/** The BIBFRAME 2.0 namespace. */
export const BF = "http://id.loc.gov/ontologies/bibframe/";
/** RDF and RDF Schema namespaces. */
export const RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#";
/** RDF Schema namespace. */
export const RDFS = "http://www.w3.org/2000/01/rdf-schema#";
/** LC's language vocabulary (objects of `bf:language`). */
export const LANGUAGES = "http://id.loc.gov/vocabulary/languages/";

/**
 * Every BIBFRAME class and property the converter may write (local names in {@linkcode BF}), plus
 * `rdfs:label` and `rdf:value`. A node or property outside this list is a bug and throws.
 */
export const BIBFRAME_TERMS: ReadonlySet<string> = new Set([
  // classes
  "Work",
  "Instance",
  "Item",
  "Text",
  "Cartography",
  "NotatedMusic",
  "MovingImage",
  "Audio",
  "StillImage",
  "Multimedia",
  "MixedMaterial",
  "Object",
  "Print",
  "Manuscript",
  "Electronic",
  "Title",
  "Contribution",
  "Agent",
  "Person",
  "Family",
  "Organization",
  "Meeting",
  "Role",
  "Topic",
  "Place",
  "Temporal",
  "GenreForm",
  "Isbn",
  "Issn",
  "Lccn",
  "Local",
  "ClassificationLcc",
  "ClassificationDdc",
  "Publication",
  "Production",
  "Distribution",
  "Manufacture",
  "Extent",
  "Note",
  "Summary",
  "TableOfContents",
  "Sublocation",
  "ShelfMark",
  "AdminMetadata",
  "GenerationProcess",
  // properties
  "title",
  "mainTitle",
  "subtitle",
  "partNumber",
  "partName",
  "contribution",
  "agent",
  "role",
  "subject",
  "genreForm",
  "language",
  "identifiedBy",
  "qualifier",
  "classification",
  "classificationPortion",
  "itemPortion",
  "responsibilityStatement",
  "editionStatement",
  "provisionActivity",
  "place",
  "date",
  "copyrightDate",
  "extent",
  "dimensions",
  "seriesStatement",
  "note",
  "noteType",
  "summary",
  "tableOfContents",
  "hasInstance",
  "instanceOf",
  "hasItem",
  "itemOf",
  "sublocation",
  "shelfMark",
  "adminMetadata",
  "generationProcess",
  "changeDate",
]);

/** A literal, optionally with a BCP 47 language tag (lower case). */
export interface BfLiteral {
  literal: string;
  lang?: string;
}

/** A reference to a node by IRI. */
export interface BfRef {
  iri: string;
}

/** What a property points to. */
export type BfValue = BfNode | BfLiteral | BfRef;

/**
 * A node: an IRI (top-level Work, Instance, Item) or a blank node, its BIBFRAME classes (local
 * names; the first one names the RDF/XML element) and its properties in order. Property names are
 * BIBFRAME local names, or `rdfs:label` / `rdf:value`.
 */
export interface BfNode {
  iri?: string;
  types: string[];
  props: Array<[string, BfValue]>;
}

/** Options for {@linkcode toBibframe}. */
export interface ToBibframeOptions {
  /** The record id (the catalog id); it makes the node IRIs and the `bf:Local` identifier. */
  id: string;
  /** Base of the node IRIs (default `http://example.org/`, as marc2bibframe2). */
  baseUri?: string;
  /** Items to describe (shelving location and call number only). */
  items?: ReadonlyArray<{ location: string | null; call_number: string | null }>;
}

const WORK_CLASSES: Record<string, string> = {
  a: "Text",
  t: "Text",
  c: "NotatedMusic",
  d: "NotatedMusic",
  e: "Cartography",
  f: "Cartography",
  g: "MovingImage",
  i: "Audio",
  j: "Audio",
  k: "StillImage",
  m: "Multimedia",
  o: "MixedMaterial",
  p: "MixedMaterial",
  r: "Object",
};

const INSTANCE_CLASSES: Record<string, string> = {
  a: "Print",
  c: "Print",
  e: "Print",
  t: "Manuscript",
  d: "Manuscript",
  f: "Manuscript",
  m: "Electronic",
};

/** MARC language codes whose ISO 639-1 code BCP 47 prefers; others keep the MARC code. */
const ISO639_1: Record<string, string> = {
  ara: "ar",
  bel: "be",
  bul: "bg",
  chi: "zh",
  cze: "cs",
  eng: "en",
  fre: "fr",
  ger: "de",
  gre: "el",
  heb: "he",
  ita: "it",
  jpn: "ja",
  kor: "ko",
  per: "fa",
  pol: "pl",
  por: "pt",
  rus: "ru",
  spa: "es",
  srp: "sr",
  ukr: "uk",
  urd: "ur",
  yid: "yi",
};

/** Note tags and their `bf:noteType` (500: none), in the order their notes are written. */
const NOTE_TYPES: ReadonlyArray<readonly [string, string | null]> = [
  ["500", null],
  ["501", "with"],
  ["504", "bibliography"],
  ["546", "language"],
];

const lit = (literal: string, lang?: string): BfLiteral => (lang ? { literal, lang } : { literal });

function node(types: string[], props: Array<[string, BfValue | null | undefined]>): BfNode {
  return {
    types,
    props: props.filter((p): p is [string, BfValue] => p[1] !== null && p[1] !== undefined),
  };
}

/** Appends `[p, v]` to `props` for each of `values`, in order. */
function put(props: Array<[string, BfValue]>, p: string, values: readonly BfValue[]): void {
  for (const v of values) props.push([p, v]);
}

function joined(f: DataField, codes: string): string | null {
  const text = f.subfields.filter((s) => codes.includes(s.code)).map((s) => s.value.trim()).join(
    " ",
  );
  const t = trimIsbd(text);
  return t.length > 0 ? t : null;
}

function sub(f: DataField, code: string): string | null {
  const v = subfieldValues(f, code)[0];
  if (v === undefined) return null;
  const t = trimIsbd(v);
  return t.length > 0 ? t : null;
}

/**
 * Converts one (sanitized) MARC record to BIBFRAME 2.0 nodes: the Work, the Instance and one Item
 * per entry of `items`.
 *
 * @example
 * ```ts
 * import { toBibframe } from "./bibframe.ts";
 * const nodes = toBibframe({
 *   leader: "00000nam a2200000   4500",
 *   fields: [{ tag: "245", ind1: "0", ind2: "0", subfields: [{ code: "a", value: "Title." }] }],
 * }, { id: "b1" });
 * nodes.map((n) => n.types[0]); // ["Work", "Instance"]
 * ```
 */
export function toBibframe(record: MarcRecord, options: ToBibframeOptions): BfNode[] {
  const base = options.baseUri ?? "http://example.org/";
  const iri = `${base}${encodeURIComponent(options.id)}`;
  const workIri = `${iri}#Work`;
  const instanceIri = `${iri}#Instance`;
  const f008 = controlValue(record, "008") ?? "";
  const lang008 = /^[a-z]{3}$/.test(f008.slice(35, 38)) ? f008.slice(35, 38) : null;

  // Vernacular partners: romanized field -> its 880; unlinked 880s stand on their own.
  const links = vernacularLinks(record);
  const partnerOf = new Map<DataField, VernacularLink>();
  const standalone: Array<{ field: DataField; tag: string; link: VernacularLink }> = [];
  for (const link of links) {
    if (link.partner) partnerOf.set(link.partner, link);
    else standalone.push({ field: link.field, tag: link.tag, link });
  }
  const vlang = (link: VernacularLink): string =>
    `${ISO639_1[lang008 ?? ""] ?? lang008 ?? "und"}${link.script ? "-" + link.script : ""}`
      .toLowerCase();
  /** The romanized field's fields plus its vernacular partner, or a standalone 880 as its tag. */
  // The data fields once (one pass over the record, not one per tag).
  const index = indexDataFields(record);
  const tagged = index.tagged;
  const fieldsOf = (...tags: string[]) => {
    const out: Array<{ tag: string; field: DataField; vern?: VernacularLink }> = [];
    const fields = tags.length === 1 ? tagged(tags[0]!) : index.anyOf(tags);
    for (const f of fields) {
      const v = partnerOf.get(f);
      out.push(v ? { tag: f.tag, field: f, vern: v } : { tag: f.tag, field: f });
    }
    for (const s of standalone) {
      if (tags.includes(s.tag)) out.push({ tag: s.tag, field: s.field, vern: s.link });
    }
    return out;
  };
  /** Literals of one extraction over a field (and its vernacular partner). */
  const texts = (
    entry: { field: DataField; vern?: VernacularLink },
    extract: (f: DataField) => string | null,
  ): BfLiteral[] => {
    const out: BfLiteral[] = [];
    const standaloneVern = entry.vern !== undefined && entry.vern.field === entry.field;
    const own = extract(entry.field);
    if (own !== null) out.push(lit(own, standaloneVern ? vlang(entry.vern!) : undefined));
    if (entry.vern && !standaloneVern) {
      const v = extract(entry.vern.field);
      if (v !== null) out.push(lit(v, vlang(entry.vern)));
    }
    return out;
  };
  const many = (p: string, values: BfLiteral[]): Array<[string, BfValue]> =>
    values.map((v) => [p, v]);

  // Titles (Work and Instance carry the same title).
  const f245s = fieldsOf("245");
  const titles: BfNode[] = f245s.map((e) =>
    node(["Title"], [
      ...many("mainTitle", texts(e, (f) => sub(f, "a"))),
      ...many("subtitle", texts(e, (f) => sub(f, "b"))),
      ...many("partNumber", texts(e, (f) => sub(f, "n"))),
      ...many("partName", texts(e, (f) => sub(f, "p"))),
    ])
  ).filter((t) => t.props.length > 0);

  // Contributions.
  const contributions: BfNode[] = [];
  for (const e of fieldsOf(...CREATOR_TAGS)) {
    const kind = e.tag.endsWith("00")
      ? (e.field.ind1 === "3" ? "Family" : "Person")
      : e.tag.endsWith("10")
      ? "Organization"
      : "Meeting";
    const labels = texts(e, (f) => joined(f, kind === "Meeting" ? "acdnq" : "abcdq"));
    if (labels.length === 0) continue;
    const roles = [
      ...subfieldValues(e.field, e.tag.endsWith("11") ? "j" : "e"),
      ...subfieldValues(e.field, "4"),
    ].map((r) => trimIsbd(r)).filter((r) => r.length > 0);
    contributions.push(node(["Contribution"], [
      ["agent", node(["Agent", kind], many("rdfs:label", labels))],
      ...roles.map((r): [string, BfValue] => ["role", node(["Role"], [["rdfs:label", lit(r)]])]),
    ]));
  }

  // Subjects and genre/form.
  const subjectClass = (tag: string): string =>
    tag === "600"
      ? "Person"
      : tag === "610"
      ? "Organization"
      : tag === "611"
      ? "Meeting"
      : tag === "630"
      ? "Work"
      : tag === "648"
      ? "Temporal"
      : tag === "651" || tag === "662"
      ? "Place"
      : "Topic";
  const heading = (f: DataField) => {
    const t = f.subfields.filter((s) => /[a-z]/.test(s.code)).map((s) => trimIsbd(s.value)).filter(
      (v) => v.length > 0,
    ).join("--");
    return t.length > 0 ? t : null;
  };
  const subjects: BfNode[] = [];
  const genres: BfNode[] = [];
  for (const e of fieldsOf(...SUBJECT_TAGS)) {
    const labels = texts(e, heading);
    if (labels.length === 0) continue;
    if (e.tag === "655") genres.push(node(["GenreForm"], many("rdfs:label", labels)));
    else subjects.push(node([subjectClass(e.tag)], many("rdfs:label", labels)));
  }

  // Languages.
  const languages = new Set<string>();
  if (lang008) languages.add(lang008);
  for (const f of tagged("041")) {
    for (const a of subfieldValues(f, "a")) {
      for (let i = 0; i + 3 <= a.trim().length; i += 3) {
        const code = a.trim().slice(i, i + 3);
        if (/^[a-z]{3}$/.test(code)) languages.add(code);
      }
    }
  }

  // Classification.
  const classes: BfNode[] = [];
  for (const f of tagged("050")) {
    const a = sub(f, "a");
    if (a) {
      classes.push(node(["ClassificationLcc"], [
        ["classificationPortion", lit(a)],
        ["itemPortion", sub(f, "b") === null ? null : lit(sub(f, "b")!)],
      ]));
    }
  }
  for (const f of tagged("082")) {
    const a = sub(f, "a");
    if (a) classes.push(node(["ClassificationDdc"], [["classificationPortion", lit(a)]]));
  }

  const summaries = tagged("520").map((f) => sub(f, "a")).filter((v) => v !== null)
    .map((v) => node(["Summary"], [["rdfs:label", lit(v)]]));
  const contents = tagged("505").map((f) => joined(f, "agrt")).filter((v) => v !== null)
    .map((v) => node(["TableOfContents"], [["rdfs:label", lit(v)]]));

  const work: BfNode = {
    iri: workIri,
    types: [
      "Work",
      ...(WORK_CLASSES[record.leader[6] ?? ""] ? [WORK_CLASSES[record.leader[6]!]!] : []),
    ],
    props: [],
  };
  put(work.props, "title", titles);
  put(work.props, "contribution", contributions);
  put(work.props, "subject", subjects);
  put(work.props, "genreForm", genres);
  for (const l of languages) work.props.push(["language", { iri: `${LANGUAGES}${l}` }]);
  put(work.props, "classification", classes);
  put(work.props, "summary", summaries);
  put(work.props, "tableOfContents", contents);
  work.props.push(["hasInstance", { iri: instanceIri }]);

  // Instance.
  const identifiers: BfNode[] = [];
  for (const f of tagged("010")) {
    const a = subfieldValues(f, "a")[0]?.trim();
    if (a) identifiers.push(node(["Lccn"], [["rdf:value", lit(a)]]));
  }
  for (const f of tagged("020")) {
    for (const a of subfieldValues(f, "a")) {
      const m = /^\s*([0-9Xx][0-9Xx -]*[0-9Xx])\s*(?:\((.*)\))?/.exec(a);
      if (!m || normalizeIsbn(m[1]!) === null) continue;
      identifiers.push(node(["Isbn"], [
        ["rdf:value", lit(m[1]!.replace(/[\s-]/g, ""))],
        ["qualifier", m[2] ? lit(m[2].trim()) : null],
      ]));
    }
  }
  for (const f of tagged("022")) {
    for (const a of subfieldValues(f, "a")) {
      const issn = normalizeIssn(a);
      if (issn) identifiers.push(node(["Issn"], [["rdf:value", lit(issn)]]));
    }
  }
  identifiers.push(node(["Local"], [["rdf:value", lit(options.id)]]));

  const provision: BfNode[] = [];
  let copyrightDate: string | null = null;
  for (const e of fieldsOf("260", "264")) {
    if (e.tag === "264" && e.field.ind2 === "4") {
      copyrightDate ??= sub(e.field, "c");
      continue;
    }
    const cls = e.tag === "260"
      ? "Publication"
      : ({ "0": "Production", "2": "Distribution", "3": "Manufacture" } as Record<string, string>)[
        e.field.ind2
      ] ?? "Publication";
    const places = texts(e, (f) => sub(f, "a"));
    const agents = texts(e, (f) => sub(f, "b"));
    const dates = texts(e, (f) => sub(f, "c")).filter((d) => d.lang === undefined);
    if (places.length + agents.length + dates.length === 0) continue;
    provision.push(node([cls], [
      ...(places.length > 0
        ? [["place", node(["Place"], many("rdfs:label", places))] as [string, BfValue]]
        : []),
      ...(agents.length > 0
        ? [["agent", node(["Agent"], many("rdfs:label", agents))] as [string, BfValue]]
        : []),
      ...many("date", dates),
    ]));
  }

  const notes: BfNode[] = [];
  for (const [tag, type] of NOTE_TYPES) {
    for (const f of tagged(tag)) {
      const a = sub(f, "a");
      if (a) {
        notes.push(node(["Note"], [["rdfs:label", lit(a)], [
          "noteType",
          type ? lit(type) : null,
        ]]));
      }
    }
  }

  const f300 = tagged("300");
  const f245 = f245s[0];
  const changed = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})/.exec(
    controlValue(record, "005") ?? "",
  );
  const items = (options.items ?? []).filter((i) => i.location !== null || i.call_number !== null);
  const itemIris = items.map((_, k) => `${iri}#Item${k + 1}`);
  const instanceClass = INSTANCE_CLASSES[record.leader[6] ?? ""];
  const instance: BfNode = {
    iri: instanceIri,
    types: ["Instance", ...(instanceClass ? [instanceClass] : [])],
    props: [["instanceOf", { iri: workIri }]],
  };
  const ip = instance.props;
  put(ip, "title", titles);
  put(ip, "identifiedBy", identifiers);
  if (f245) put(ip, "responsibilityStatement", texts(f245, (f) => sub(f, "c")));
  for (const e of fieldsOf("250")) put(ip, "editionStatement", texts(e, (f) => joined(f, "ab")));
  put(ip, "provisionActivity", provision);
  if (copyrightDate) ip.push(["copyrightDate", lit(copyrightDate)]);
  for (const f of f300) {
    const a = joined(f, "a");
    if (a) ip.push(["extent", node(["Extent"], [["rdfs:label", lit(a)]])]);
    const c = sub(f, "c");
    if (c) ip.push(["dimensions", lit(c)]);
  }
  for (const e of fieldsOf("490")) put(ip, "seriesStatement", texts(e, (f) => joined(f, "av")));
  put(ip, "note", notes);
  ip.push([
    "adminMetadata",
    node(["AdminMetadata"], [
      [
        "generationProcess",
        node(["GenerationProcess"], [[
          "rdfs:label",
          lit("Carrel: MARC 21 to BIBFRAME 2.0, privacy-filtered"),
        ]]),
      ],
      [
        "changeDate",
        changed
          ? lit(
            `${changed[1]}-${changed[2]}-${changed[3]}T${changed[4]}:${changed[5]}:${changed[6]}`,
          )
          : null,
      ],
    ]),
  ]);
  for (const i of itemIris) ip.push(["hasItem", { iri: i }]);

  const itemNodes: BfNode[] = items.map((item, k) => ({
    iri: itemIris[k]!,
    types: ["Item"],
    props: [
      ["itemOf", { iri: instanceIri }],
      ...(item.location
        ? [["sublocation", node(["Sublocation"], [["rdfs:label", lit(item.location)]])] as [
          string,
          BfValue,
        ]]
        : []),
      ...(item.call_number
        ? [["shelfMark", node(["ShelfMark"], [["rdfs:label", lit(item.call_number)]])] as [
          string,
          BfValue,
        ]]
        : []),
    ],
  }));
  const nodes = [work, instance, ...itemNodes];
  for (const n of nodes) checkTerms(n);
  return nodes;
}

function isNode(v: BfValue): v is BfNode {
  return (v as BfNode).types !== undefined;
}

function isLiteral(v: BfValue): v is BfLiteral {
  return (v as BfLiteral).literal !== undefined;
}

/** Throws when a node or property is not an allowed BIBFRAME term (a converter bug). */
function checkTerms(n: BfNode): void {
  for (const t of n.types) {
    if (!BIBFRAME_TERMS.has(t)) {
      throw new Error(`Cannot write BIBFRAME: class "${t}" is not allowed`);
    }
  }
  for (const [p, v] of n.props) {
    if (p !== "rdfs:label" && p !== "rdf:value" && !BIBFRAME_TERMS.has(p)) {
      throw new Error(`Cannot write BIBFRAME: property "${p}" is not allowed`);
    }
    if (isNode(v)) checkTerms(v);
  }
}

// ---------------------------------------------------------------------------------------------
// RDF/XML

const qname = (p: string) => (p.includes(":") ? p : `bf:${p}`);

function rdfXmlNode(n: BfNode, indent: string, out: string[]): void {
  const [first, ...rest] = n.types;
  const el = `bf:${first}`;
  out.push(`${indent}<${el}${n.iri ? ` rdf:about="${escapeXml(n.iri, true)}"` : ""}>`);
  const inner = indent + "  ";
  for (const t of rest) out.push(`${inner}<rdf:type rdf:resource="${BF}${t}"/>`);
  for (const [p, v] of n.props) {
    const q = qname(p);
    if (isLiteral(v)) {
      const lang = v.lang ? ` xml:lang="${escapeXml(v.lang, true)}"` : "";
      out.push(`${inner}<${q}${lang}>${escapeXml(v.literal, false)}</${q}>`);
    } else if (isNode(v)) {
      out.push(`${inner}<${q}>`);
      rdfXmlNode(v, inner + "  ", out);
      out.push(`${inner}</${q}>`);
    } else {
      out.push(`${inner}<${q} rdf:resource="${escapeXml(v.iri, true)}"/>`);
    }
  }
  out.push(`${indent}</${el}>`);
}

/** The opening of an RDF/XML document for {@linkcode bibframeRdfXml} bodies. */
export const RDF_XML_HEADER = `<?xml version="1.0" encoding="UTF-8"?>
<rdf:RDF xmlns:rdf="${RDF}" xmlns:rdfs="${RDFS}" xmlns:bf="${BF}">
`;
/** The closing of an RDF/XML document. */
export const RDF_XML_FOOTER = "</rdf:RDF>\n";

/**
 * The RDF/XML of one record's nodes (without the document's opening and closing; see
 * {@linkcode RDF_XML_HEADER}), as marc2bibframe2 lays it out: one top-level element per Work,
 * Instance and Item.
 *
 * @example
 * ```ts
 * import { bibframeRdfXml, RDF_XML_FOOTER, RDF_XML_HEADER, toBibframe } from "./bibframe.ts";
 * const nodes = toBibframe({ leader: "00000nam a2200000   4500", fields: [] }, { id: "b1" });
 * const doc = RDF_XML_HEADER + bibframeRdfXml(nodes) + RDF_XML_FOOTER;
 * ```
 */
export function bibframeRdfXml(nodes: readonly BfNode[]): string {
  const out: string[] = [];
  for (const n of nodes) rdfXmlNode(n, "  ", out);
  return out.join("\n") + "\n";
}

// ---------------------------------------------------------------------------------------------
// JSON-LD

/** The JSON-LD context of {@linkcode bibframeJsonLd} documents. */
export const JSONLD_CONTEXT = { bf: BF, rdf: RDF, rdfs: RDFS } as const;

function jsonLdValue(v: BfValue): unknown {
  if (isLiteral(v)) return v.lang ? { "@value": v.literal, "@language": v.lang } : v.literal;
  if (isNode(v)) return jsonLdNode(v);
  return { "@id": v.iri };
}

function jsonLdNode(n: BfNode): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (n.iri) out["@id"] = n.iri;
  out["@type"] = n.types.map((t) => `bf:${t}`);
  for (const [p, v] of n.props) {
    const key = qname(p);
    const list = (out[key] ??= []) as unknown[];
    list.push(jsonLdValue(v));
  }
  return out;
}

/**
 * One record's nodes as JSON-LD node objects (compact IRIs with {@linkcode JSONLD_CONTEXT}), for
 * the `@graph` of a document.
 *
 * @example
 * ```ts
 * import { bibframeJsonLd, JSONLD_CONTEXT, toBibframe } from "./bibframe.ts";
 * const nodes = toBibframe({ leader: "00000nam a2200000   4500", fields: [] }, { id: "b1" });
 * const doc = { "@context": JSONLD_CONTEXT, "@graph": bibframeJsonLd(nodes) };
 * ```
 */
export function bibframeJsonLd(nodes: readonly BfNode[]): Record<string, unknown>[] {
  return nodes.map(jsonLdNode);
}
