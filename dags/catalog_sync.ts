/**
 * catalog_sync: MARC 21 records (ISO 2709 in MARC-8 or UTF-8, or MARCXML; from Koha, Evergreen,
 * FOLIO or any MARC 21 export) to what discovery layers ingest: discovery JSON (with 880 vernacular
 * forms), sanitized MARCXML and ISO 2709, and BIBFRAME 2.0 (RDF/XML and JSON-LD).
 *
 * `parse` reads the input in the enclave (raw records may hold donor names in 541/561, staff notes
 * in 583 $x and item barcodes in 9XX), takes each record's id (`id_from`: 001, 035 $a, Koha's 999 $c,
 * Evergreen's 901 $c, or a derived id), keeps items' shelving locations and call numbers, sanitizes
 * each record and maps it to a catalog record; unreadable records go to a value-free report (file,
 * position, reason). `gate` applies the catalog record schema, `checkpoint` verifies nothing
 * patron-like is left (a 14-digit barcode that slipped through a local keep-list, a phone number in
 * a note), `publish` writes `catalog.jsonl`, `catalog.xml`, `catalog.mrc` and `quarantine.jsonl`
 * into `output`, and `bibframe` writes `catalog.bibframe.rdf` and `catalog.bibframe.jsonld` there.
 * The publish summary (read, written, quarantined, warnings by kind, ids by source, stripped per
 * tag) is the run's output.
 *
 *   deno task carrel dags run catalog_sync --param input=exports/ --param output=out/catalog
 *   deno task carrel dags run catalog_sync --param input=koha.mrc --param output=out --param id_from=koha
 */
import { join } from "node:path";
import { defineDag, FatalTaskError, markPrivacySafe, task } from "carrel";
import {
  bibframe,
  CatalogRecord,
  type CatalogRecordValue,
  DEFAULT_ITEM_TAGS,
  ID_PRESETS,
  jsonlWrite,
  privacyCheckpoint,
  readMarcFiles,
  resolveIdSources,
  schemaGate,
  toCatalogRecord,
  upstreamRecords,
  writeCatalogFiles,
} from "carrel/operators";

const REPORT = "report";

interface Stats {
  type: "stats";
  files: number;
  read: number;
  recovered: number;
  quarantined: number;
  catalogRecords: number;
  stripped: Record<string, number>;
  /** Recovered defects and notes, counted by kind (reader defect classes and `id-derived`). */
  warnings: Record<string, number>;
  /** Ids by the source they came from (`001`, `999$c`, `derived` ...). */
  idSources: Record<string, number>;
}

/** A configuration error: shown to the user as is (it names params, never record content). */
function configError(message: string): Error {
  return markPrivacySafe(new FatalTaskError(message));
}

/** `id_from`: a preset name (`koha`), a JSON list, or a comma-separated list. */
function idFromParam(value: unknown, legacy: string[]): string | string[] {
  if (legacy.length > 0) return legacy;
  if (typeof value === "string") {
    const text = value.trim();
    if (text.startsWith("[")) {
      try {
        return list(JSON.parse(text));
      } catch {
        throw configError(`catalog_sync: param id_from is not a JSON list`);
      }
    }
    if (ID_PRESETS[text.toLowerCase()]) return text.toLowerCase();
  }
  return list(value);
}

function sorted(counts: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(counts).sort(([a], [b]) => a.localeCompare(b)));
}

function list(value: unknown): string[] {
  if (Array.isArray(value)) return value.map(String);
  if (typeof value === "string" && value.trim() !== "") {
    return value.split(",").map((s) => s.trim()).filter(Boolean);
  }
  return [];
}

async function* readJsonLines(path: string): AsyncIterable<Record<string, unknown>> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch {
    return;
  }
  const decoder = new TextDecoder();
  let pending = "";
  for await (const chunk of file.readable) {
    pending += decoder.decode(chunk, { stream: true });
    let nl: number;
    while ((nl = pending.indexOf("\n")) !== -1) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      if (line.trim()) yield JSON.parse(line);
    }
  }
  if (pending.trim()) yield JSON.parse(pending);
}

export default defineDag({
  id: "catalog_sync",
  description: "MARC 21 to discovery JSON, sanitized MARCXML and ISO 2709, with quarantine",
  schedule: null,
  params: {
    /** A .mrc/.xml file or a folder of them. */
    input: "",
    /** The folder the outputs are written to. */
    output: "",
    /** 9XX tags to keep (item tags are dropped regardless, unless item_tags says otherwise). */
    keep_local_tags: [] as string[],
    /** Item tags dropped whole (default 876-878, 945, 949, 952). */
    item_tags: [...DEFAULT_ITEM_TAGS] as string[],
    /** Extra tags to drop whole. */
    drop_tags: [] as string[],
    /** Drop 590 local notes. */
    drop_590: false,
    /**
     * Where the record id comes from: a preset (`marc21`: 001, 901$c, 035$a, 999$c; `koha`: 999$c
     * first; `evergreen`: 901$c first; `folio`: 001, 999$i) or a list such as ["001", "999$c"].
     */
    id_from: "marc21",
    /** Quarantine records with no id instead of deriving one from their content. */
    strict_ids: false,
    /** Deprecated: the former name of id_from (a list). */
    id_fields: [] as string[],
    /** Base of the BIBFRAME node IRIs. */
    base_uri: "http://example.org/",
  },
  defaults: { retries: 1, retryDelay: "5s", timeout: "6h" },
  // Every task runs in a Worker with only what it declares below.
  sandbox: "strict",
  tasks: {
    parse: task({
      zone: "enclave",
      // Hands its records to the gate in memory (one fused pass, no dataset in between).
      stream: true,
      reads: (p) => [String(p.input)],
      description: "Read, sanitize and map MARC records; unreadable ones to the report",
      run: async (ctx) => {
        const input = String(ctx.params.input ?? "");
        if (input === "") throw configError("catalog_sync needs --param input=<file or folder>");
        const rules = {
          keepLocalTags: list(ctx.params.keep_local_tags),
          itemTags: list(ctx.params.item_tags),
          dropTags: list(ctx.params.drop_tags),
          drop590: ctx.params.drop_590 === true,
        };
        const idFrom = idFromParam(ctx.params.id_from, list(ctx.params.id_fields));
        try {
          resolveIdSources(idFrom);
        } catch (error) {
          throw configError(`catalog_sync: param id_from: ${(error as Error).message}`);
        }
        const strictIds = ctx.params.strict_ids === true || ctx.params.strict_ids === "true";
        const report = await ctx.dataset(REPORT, { valueFree: true });
        const out = await ctx.dataset("records");
        const stats: Stats = {
          type: "stats",
          files: 0,
          read: 0,
          recovered: 0,
          quarantined: 0,
          catalogRecords: 0,
          stripped: {},
          warnings: {},
          idSources: {},
        };
        const countIn = (counts: Record<string, number>, key: string) =>
          counts[key] = (counts[key] ?? 0) + 1;
        // Why records were set aside, by stage and defect or reason (value-free, as the report).
        const quarantineReasons: Record<string, number> = {};
        const files = new Set<string>();
        try {
          for await (const r of readMarcFiles(input)) {
            if (ctx.signal.aborted) throw new Error("catalog_sync parse: aborted");
            files.add(r.file);
            stats.read++;
            if (!r.ok) {
              stats.quarantined++;
              countIn(quarantineReasons, `read: ${r.defect}`);
              await report.write({
                type: "quarantine",
                stage: "read",
                file: r.file,
                position: r.position.index,
                offset: r.position.offset,
                defect: r.defect,
                reason: r.reason,
              });
              continue;
            }
            if (r.warnings.length > 0) stats.recovered++;
            for (const w of r.warnings) countIn(stats.warnings, w.defect);
            const converted = toCatalogRecord(r.record, rules, { idFrom, strictIds });
            for (const [tag, n] of Object.entries(converted.stripped)) {
              stats.stripped[tag] = (stats.stripped[tag] ?? 0) + n;
            }
            if (!converted.ok) {
              stats.quarantined++;
              countIn(quarantineReasons, `map: ${converted.reason}`);
              await report.write({
                type: "quarantine",
                stage: "map",
                file: r.file,
                position: r.position.index,
                offset: r.position.offset,
                reason: converted.reason,
              });
              continue;
            }
            for (const w of converted.warnings) countIn(stats.warnings, w);
            countIn(stats.idSources, converted.idSource);
            await out.write(converted.record);
            stats.catalogRecords++;
          }
          stats.files = files.size;
          await report.write(stats);
        } catch (error) {
          await out.abort();
          await report.abort();
          throw error;
        }
        await report.close();
        ctx.count("catalog:read", stats.read, {
          quarantined: stats.quarantined,
          recovered: stats.recovered,
          strippedByTag: stats.stripped,
          warnings: stats.warnings,
          idSources: stats.idSources,
        });
        // What `runs show`, the progress line and the console count as quarantined by this task.
        if (stats.quarantined > 0) {
          ctx.count("parse:quarantined", stats.quarantined, { reasons: quarantineReasons });
        }
        ctx.log.info("Read {read} records from {files} files: {quarantined} quarantined", {
          read: stats.read,
          files: stats.files,
          quarantined: stats.quarantined,
        });
        return await out.close();
      },
    }),
    gate: schemaGate({ after: ["parse"], schema: CatalogRecord, onInvalid: "quarantine" }),
    checkpoint: privacyCheckpoint({
      after: ["gate"],
      onViolation: "quarantine",
      maxQuarantined: "5%",
    }),
    publish: task({
      after: ["checkpoint"],
      writes: (p) => [String(p.output)],
      description: "Write catalog.jsonl, catalog.xml, catalog.mrc and quarantine.jsonl",
      run: async (ctx) => {
        const output = String(ctx.params.output ?? "");
        if (output === "") throw configError("catalog_sync needs --param output=<folder>");
        const written = await writeCatalogFiles(
          output,
          upstreamRecords(ctx, "checkpoint") as AsyncIterable<CatalogRecordValue>,
          { signal: ctx.signal },
        );
        // The value-free reports of the enclave tasks (positions and reasons only), streamed.
        let stats: Stats | undefined;
        let gateRejected = 0;
        let checkpointWithheld = 0;
        const runDir = ctx.workspace.runDir;
        async function* entries(): AsyncIterable<Record<string, unknown>> {
          for await (const line of readJsonLines(join(runDir, "parse", `${REPORT}.jsonl`))) {
            if (line.type === "stats") stats = line as unknown as Stats;
            else {
              const { type: _type, ...entry } = line;
              yield entry;
            }
          }
          for await (const line of readJsonLines(join(runDir, "gate", "quarantine.jsonl"))) {
            gateRejected++;
            yield { stage: "gate", position: line.position, issues: line.issues };
          }
          // Records the checkpoint withheld (positions in its input, findings without values).
          for await (const line of readJsonLines(join(runDir, "checkpoint", "quarantine.jsonl"))) {
            checkpointWithheld++;
            yield { stage: "checkpoint", position: line.position, findings: line.findings };
          }
          for (const u of written.unencodable) yield { stage: "write", ...u };
        }
        const quarantinePath = join(output, "quarantine.jsonl");
        await jsonlWrite(quarantinePath, entries());
        if (stats === undefined) {
          throw new Error("catalog_sync publish: the parse report is missing (rerun the DAG)");
        }
        const summary = {
          files: stats.files,
          read: stats.read,
          written: written.written,
          quarantined: stats.quarantined + gateRejected + checkpointWithheld +
            written.unencodable.length,
          recovered: stats.recovered,
          warnings: sorted(stats.warnings),
          id_sources: sorted(stats.idSources),
          stripped: sorted(stats.stripped),
          outputs: { ...written.files, quarantine: quarantinePath },
        };
        ctx.count("catalog:written", summary.written, {
          read: summary.read,
          quarantined: summary.quarantined,
        });
        ctx.log.info("Wrote {written} of {read} records to {output} ({quarantined} quarantined)", {
          written: summary.written,
          read: summary.read,
          output,
          quarantined: summary.quarantined,
        });
        return summary;
      },
    }),
    bibframe: bibframe({
      after: ["checkpoint"],
      writes: (p) => [String(p.output)],
      description: "Write catalog.bibframe.rdf (RDF/XML) and catalog.bibframe.jsonld (JSON-LD)",
      output: (ctx) => String(ctx.params.output ?? ""),
      baseUri: (ctx) => String(ctx.params.base_uri || "http://example.org/"),
    }),
  },
});
