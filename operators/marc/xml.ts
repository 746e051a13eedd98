/**
 * MARCXML (`http://www.loc.gov/MARC21/slim`) streaming reader and writer.
 *
 * The reader uses its own small byte-level XML tokenizer: it works on
 * chunks, keeps only the current record and an unfinished token in memory,
 * accepts any namespace prefix (or none), decodes the predefined and numeric
 * entities and CDATA sections, and skips comments, processing instructions
 * and DOCTYPE declarations. Element names are matched by local name.
 *
 * @module
 */

import type {
  DataField,
  MarcField,
  MarcPosition,
  MarcReadResult,
  MarcRecord,
  MarcWarning,
} from "./record.ts";
import { isControlField } from "./record.ts";
import { type ByteSource, chunksOf } from "./iso2709.ts";

/** The MARCXML namespace URI. */
export const MARCXML_NAMESPACE = "http://www.loc.gov/MARC21/slim";

const LT = 0x3c;
const GT = 0x3e;
const utf8 = new TextDecoder("utf-8");
const utf8Fatal = new TextDecoder("utf-8", { fatal: true });

async function* xmlChunks(source: ByteSource | string): AsyncGenerator<Uint8Array> {
  if (typeof source === "string") {
    yield new TextEncoder().encode(source);
    return;
  }
  yield* chunksOf(source);
}

/** A token from the XML tokenizer. */
type XmlToken =
  | {
    kind: "start";
    name: string;
    attrs: Map<string, string>;
    selfClosing: boolean;
    offset: number;
  }
  | { kind: "end"; name: string; offset: number }
  | { kind: "text"; text: string; offset: number }
  | { kind: "error"; message: string; offset: number };

const ENTITIES: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };

/** Decode entity references in text; unknown ones are kept literally and counted. */
function decodeEntities(s: string, unknown: { count: number }): string {
  if (s.indexOf("&") < 0) return s;
  return s.replace(/&(#x[0-9A-Fa-f]+|#[0-9]+|[A-Za-z][A-Za-z0-9]*);/g, (m, body: string) => {
    if (body[0] === "#") {
      const cp = body[1] === "x" ? parseInt(body.slice(2), 16) : parseInt(body.slice(1), 10);
      if (cp > 0 && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff)) {
        return String.fromCodePoint(cp);
      }
      unknown.count++;
      return "\ufffd";
    }
    const v = ENTITIES[body];
    if (v !== undefined) return v;
    unknown.count++;
    return m;
  });
}

function localName(qname: string): string {
  const i = qname.indexOf(":");
  return i >= 0 ? qname.slice(i + 1) : qname;
}

const ATTR = /([^\s=/]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g;

/**
 * Tokenize XML bytes from chunks. Byte offsets refer to the whole stream.
 */
async function* tokenize(
  chunks: AsyncGenerator<Uint8Array>,
  unknownEntities: { count: number },
  badUtf8: { count: number },
): AsyncGenerator<XmlToken> {
  let buf = new Uint8Array(0);
  let start = 0;
  let base = 0; // stream offset of buf[0]
  let eof = false;
  const more = async (): Promise<boolean> => {
    if (eof) return false;
    const next = await chunks.next();
    if (next.done) {
      eof = true;
      return false;
    }
    const live = buf.subarray(start);
    const merged = new Uint8Array(live.length + next.value.length);
    merged.set(live);
    merged.set(next.value, live.length);
    base += start;
    buf = merged;
    start = 0;
    return true;
  };
  const text = (from: number, to: number): string => {
    const slice = buf.subarray(from, to);
    try {
      return utf8Fatal.decode(slice);
    } catch {
      badUtf8.count++;
      return utf8.decode(slice);
    }
  };
  const indexFrom = (needle: Uint8Array, from: number): number => {
    outer: for (let i = from; i <= buf.length - needle.length; i++) {
      for (let k = 0; k < needle.length; k++) if (buf[i + k] !== needle[k]) continue outer;
      return i;
    }
    return -1;
  };
  const enc = (s: string) => new TextEncoder().encode(s);
  const CDATA_END = enc("]]>");
  const COMMENT_END = enc("-->");
  const PI_END = enc("?>");

  while (true) {
    if (start >= buf.length && !(await more())) return;
    const lt = buf.indexOf(LT, start);
    if (lt < 0) {
      // Text up to the end of what we have; keep it if more may follow.
      if (eof) {
        const t = text(start, buf.length);
        if (t.trim().length > 0) {
          yield { kind: "text", text: decodeEntities(t, unknownEntities), offset: base + start };
        }
        start = buf.length;
        return;
      }
      await more();
      continue;
    }
    if (lt > start) {
      // A text run may contain a partial UTF-8 sequence only if it is cut by the chunk end;
      // here it ends at '<', so it is complete.
      const t = text(start, lt);
      yield { kind: "text", text: decodeEntities(t, unknownEntities), offset: base + start };
      start = lt;
      continue;
    }
    // Markup at `start`.
    const offset = base + start;
    const peek = async (n: number): Promise<boolean> => {
      while (buf.length - start < n) if (!(await more())) return false;
      return true;
    };
    await peek(9);
    const b1 = buf[start + 1];
    if (b1 === 0x21 /* ! */) {
      const isCdata = buf.length - start >= 9 &&
        utf8.decode(buf.subarray(start, start + 9)) === "<![CDATA[";
      const isComment = buf[start + 2] === 0x2d && buf[start + 3] === 0x2d;
      const endSeq = isCdata ? CDATA_END : isComment ? COMMENT_END : new Uint8Array([GT]);
      let at = indexFrom(endSeq, start + (isCdata ? 9 : isComment ? 4 : 2));
      while (at < 0) {
        const rel = buf.length - start;
        if (!(await more())) {
          yield { kind: "error", message: "Unterminated markup declaration", offset };
          return;
        }
        at = indexFrom(endSeq, start + Math.max(2, rel - endSeq.length));
      }
      if (isCdata) {
        yield { kind: "text", text: text(start + 9, at), offset };
      }
      start = at + endSeq.length;
      continue;
    }
    if (b1 === 0x3f /* ? */) {
      let at = indexFrom(PI_END, start + 2);
      while (at < 0) {
        const rel = buf.length - start;
        if (!(await more())) {
          yield { kind: "error", message: "Unterminated processing instruction", offset };
          return;
        }
        at = indexFrom(PI_END, start + Math.max(2, rel - 2));
      }
      start = at + 2;
      continue;
    }
    // Element tag: find '>' outside quotes.
    let i = start + 1;
    let quote = 0;
    while (true) {
      if (i >= buf.length) {
        const rel = i - start; // more() may move the window
        if (!(await more())) {
          yield { kind: "error", message: "Unterminated tag", offset };
          return;
        }
        i = start + rel;
        continue;
      }
      const c = buf[i]!;
      if (quote !== 0) {
        if (c === quote) quote = 0;
      } else if (c === 0x22 || c === 0x27) quote = c;
      else if (c === GT) break;
      else if (c === LT) break;
      i++;
    }
    if (buf[i] === LT) {
      yield { kind: "error", message: "Malformed tag", offset };
      start = i;
      continue;
    }
    const raw = text(start + 1, i);
    start = i + 1;
    if (raw.startsWith("/")) {
      yield { kind: "end", name: localName(raw.slice(1).trim()), offset };
      continue;
    }
    const selfClosing = raw.endsWith("/");
    const body = selfClosing ? raw.slice(0, -1) : raw;
    const nameMatch = /^\s*([^\s/>]+)/.exec(body);
    if (!nameMatch) {
      yield { kind: "error", message: "Tag without a name", offset };
      continue;
    }
    const attrs = new Map<string, string>();
    ATTR.lastIndex = nameMatch[0].length;
    let m: RegExpExecArray | null;
    while ((m = ATTR.exec(body)) !== null) {
      attrs.set(localName(m[1]!), decodeEntities(m[2] ?? m[3] ?? "", unknownEntities));
    }
    yield { kind: "start", name: localName(nameMatch[1]!), attrs, selfClosing, offset };
  }
}

/** Options for {@linkcode readMarcXml}. */
export interface ReadMarcXmlOptions {
  /** NFC-normalize text (default `true`). */
  normalize?: boolean;
}

/**
 * Read MARC records from MARCXML, one result per `record` element. Works for
 * a `collection`, a bare `record`, or a sequence of `record` elements, with
 * or without a namespace prefix.
 *
 * @example
 * ```ts
 * import { readMarcXml } from "./xml.ts";
 * const xml = `<record xmlns="http://www.loc.gov/MARC21/slim"><leader>00000nam a2200000   4500</leader>
 *   <controlfield tag="001">b1</controlfield></record>`;
 * for await (const r of readMarcXml(xml)) if (r.ok) console.log(r.record.fields.length);
 * ```
 */
export async function* readMarcXml(
  source: ByteSource | string,
  opts: ReadMarcXmlOptions = {},
): AsyncGenerator<MarcReadResult> {
  const normalize = opts.normalize ?? true;
  const unknownEntities = { count: 0 };
  const badUtf8 = { count: 0 };
  let index = 0;
  let record: MarcRecord | null = null;
  let position: MarcPosition = { index: 0, offset: 0 };
  let warnings: MarcWarning[] = [];
  let failed: string | null = null;
  // Current element inside a record.
  let current: "leader" | "controlfield" | "subfield" | null = null;
  let textBuf = "";
  let controlTag = "";
  let datafield: DataField | null = null;
  let subfieldCode = "";
  let seenEntities = 0;
  let seenBadUtf8 = 0;

  const warn = (message: string) =>
    warnings.push({ defect: "xml", message: `Record ${index} ${message}` });
  const clean = (s: string) => (normalize ? s.normalize("NFC") : s);

  const finish = (): MarcReadResult => {
    const r = record!;
    if (unknownEntities.count > seenEntities) {
      warn(
        `has ${unknownEntities.count - seenEntities} unknown entity references (kept literally)`,
      );
    }
    if (badUtf8.count > seenBadUtf8) {
      warnings.push({
        defect: "utf8",
        message: `Record ${index} has invalid UTF-8 in ${
          badUtf8.count - seenBadUtf8
        } text runs (replaced by U+FFFD)`,
      });
    }
    record = null;
    if (failed !== null) {
      return {
        ok: false,
        position,
        defect: "xml",
        reason: `Cannot read MARCXML record ${index}: ${failed}`,
      };
    }
    if (r.leader.length !== 24) {
      warnings.push({
        defect: "leader",
        message: `Record ${index} leader is ${r.leader.length} characters; padded or cut to 24`,
      });
      r.leader = r.leader.padEnd(24, " ").slice(0, 24);
    }
    return { ok: true, position, record: r, warnings };
  };

  for await (const tok of tokenize(xmlChunks(source), unknownEntities, badUtf8)) {
    if (tok.kind === "error") {
      if (record) {
        failed = tok.message.toLowerCase();
        yield finish();
      }
      continue;
    }
    if (tok.kind === "text") {
      if (record && current) textBuf += tok.text;
      continue;
    }
    if (tok.kind === "start") {
      const name = tok.name;
      if (name === "record") {
        if (record) {
          failed = "record element is not closed before the next record";
          yield finish();
        }
        index++;
        position = { index, offset: tok.offset };
        record = { leader: "", fields: [] };
        warnings = [];
        failed = null;
        current = null;
        datafield = null;
        seenEntities = unknownEntities.count;
        seenBadUtf8 = badUtf8.count;
        if (tok.selfClosing) {
          failed = "record element is empty";
          yield finish();
        }
        continue;
      }
      if (!record) continue;
      if (name === "leader") {
        current = "leader";
        textBuf = "";
      } else if (name === "controlfield") {
        controlTag = tok.attrs.get("tag") ?? "";
        if (!/^[0-9A-Za-z]{3}$/.test(controlTag)) {
          warn("has a controlfield without a valid tag; dropped");
          controlTag = "";
        }
        current = "controlfield";
        textBuf = "";
      } else if (name === "datafield") {
        const tag = tok.attrs.get("tag") ?? "";
        let ind1 = tok.attrs.get("ind1") ?? " ";
        let ind2 = tok.attrs.get("ind2") ?? " ";
        if (ind1.length !== 1) {
          warn(`datafield ${tag || "(no tag)"} first indicator is invalid; blank assumed`);
          ind1 = " ";
        }
        if (ind2.length !== 1) {
          warn(`datafield ${tag || "(no tag)"} second indicator is invalid; blank assumed`);
          ind2 = " ";
        }
        if (!/^[0-9A-Za-z]{3}$/.test(tag) && !/^[\x20-\x7e]{3}$/.test(tag)) {
          warn("has a datafield without a valid tag; dropped");
          datafield = null;
        } else {
          if (!/^[0-9A-Za-z]{3}$/.test(tag)) {
            warn("has a datafield with an invalid tag; kept for the sanitizer to decide");
          }
          datafield = { tag, ind1, ind2, subfields: [] };
          if (!tok.selfClosing) record.fields.push(datafield);
        }
      } else if (name === "subfield") {
        subfieldCode = tok.attrs.get("code") ?? "";
        if (subfieldCode.length !== 1) {
          warn(
            `datafield ${datafield?.tag ?? "(none)"} has a subfield without a valid code; dropped`,
          );
          subfieldCode = "";
        }
        current = "subfield";
        textBuf = "";
        if (tok.selfClosing) {
          if (datafield && subfieldCode) {
            datafield.subfields.push({ code: subfieldCode, value: "" });
          }
          current = null;
        }
      }
      if (tok.selfClosing && current !== "subfield") current = null;
      continue;
    }
    // end tag
    if (!record) continue;
    const name = tok.name;
    if (name === "record") {
      yield finish();
      continue;
    }
    if (name === "leader" && current === "leader") {
      record.leader = textBuf;
    } else if (name === "controlfield" && current === "controlfield") {
      if (controlTag) record.fields.push({ tag: controlTag, value: clean(textBuf) });
    } else if (name === "subfield" && current === "subfield") {
      if (datafield && subfieldCode) {
        datafield.subfields.push({ code: subfieldCode, value: clean(textBuf) });
      }
    } else if (name === "datafield") {
      datafield = null;
    }
    current = null;
    textBuf = "";
  }
  if (record) {
    failed = "document ends inside a record";
    yield finish();
  }
}

// Control characters are what the slow path replaces: matching them is the point.
// deno-lint-ignore no-control-regex
const XML_SPECIAL = /[&<>"\u0000-\u001f\ufffe\uffff]/;

/**
 * Escapes text for XML 1.0 content (`attr: false`) or a double-quoted attribute; characters XML
 * cannot hold become U+FFFD.
 *
 * @example
 * ```ts
 * import { escapeXml } from "./xml.ts";
 * escapeXml("a < b", false); // "a &lt; b"
 * ```
 */
export function escapeXml(s: string, attr: boolean): string {
  if (!XML_SPECIAL.test(s)) return s;
  let out = "";
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === "&") out += "&amp;";
    else if (ch === "<") out += "&lt;";
    else if (ch === ">") out += "&gt;";
    else if (attr && ch === '"') out += "&quot;";
    else if (c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) out += "\ufffd";
    else if (c === 0xfffe || c === 0xffff) out += "\ufffd";
    else if (attr && (c === 0x09 || c === 0x0a || c === 0x0d)) out += `&#${c};`;
    else out += ch;
  }
  return out;
}

/** XML text content that may hold line breaks, indented after each of them (see `indent`). */
const LINE_BREAK = /[\n\r\u2028\u2029]/;
const LINE_BREAKS = /[\n\r\u2028\u2029]/g;

/** Options of {@linkcode toMarcXml}. */
export interface MarcXmlOptions {
  /** Declare the MARCXML namespace on the `record` element (default `true`). */
  namespace?: boolean;
  /**
   * Put this before every line, as `xml.replace(/^/gm, indent)` would: before each element line
   * and after each line break inside text content (default none).
   */
  indent?: string;
}

/**
 * Serialize one record as a MARCXML `record` element (with the MARCXML
 * namespace declared). Characters not allowed in XML 1.0 become U+FFFD.
 *
 * @example
 * ```ts
 * import { toMarcXml } from "./xml.ts";
 * toMarcXml({ leader: "00000nam a2200000   4500", fields: [{ tag: "001", value: "b1" }] });
 * ```
 */
export function toMarcXml(record: MarcRecord, opts: MarcXmlOptions = {}): string {
  const ns = opts.namespace ?? true;
  const pre = opts.indent ?? "";
  const text = pre === "" ? (s: string) => escapeXml(s, false) : (s: string) => {
    const escaped = escapeXml(s, false);
    return LINE_BREAK.test(escaped) ? escaped.replace(LINE_BREAKS, (m) => m + pre) : escaped;
  };
  let out = ns ? `${pre}<record xmlns="${MARCXML_NAMESPACE}">` : `${pre}<record>`;
  out += `\n${pre}  <leader>${text(record.leader)}</leader>`;
  for (const f of record.fields as MarcField[]) {
    const tag = escapeXml(f.tag, true);
    if (isControlField(f)) {
      out += `\n${pre}  <controlfield tag="${tag}">${text(f.value)}</controlfield>`;
      continue;
    }
    out += `\n${pre}  <datafield tag="${tag}" ind1="${escapeXml(f.ind1, true)}" ind2="${
      escapeXml(f.ind2, true)
    }">`;
    for (const s of f.subfields) {
      out += `\n${pre}    <subfield code="${escapeXml(s.code, true)}">${text(s.value)}</subfield>`;
    }
    out += `\n${pre}  </datafield>`;
  }
  return out + `\n${pre}</record>`;
}

/**
 * Serialize records as a MARCXML `collection` document, in chunks (XML
 * declaration and opening tag, one chunk per record, closing tag).
 *
 * @example
 * ```ts
 * import { writeMarcXml } from "./xml.ts";
 * let xml = "";
 * for await (const s of writeMarcXml([{ leader: "00000nam a2200000   4500", fields: [] }])) xml += s;
 * ```
 */
export async function* writeMarcXml(
  records: AsyncIterable<MarcRecord> | Iterable<MarcRecord>,
): AsyncGenerator<string> {
  yield `<?xml version="1.0" encoding="UTF-8"?>\n<collection xmlns="${MARCXML_NAMESPACE}">\n`;
  for await (const r of records) {
    yield toMarcXml(r, { namespace: false, indent: "  " }) + "\n";
  }
  yield "</collection>\n";
}
