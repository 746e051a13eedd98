/**
 * catalog_sync: MARC 21 records (ISO 2709 in MARC-8 or UTF-8, or MARCXML) to what discovery layers
 * ingest: discovery JSON, sanitized MARCXML and sanitized ISO 2709.
 *
 * `parse` reads the input in the enclave (raw records may hold donor names in 541/561, staff notes
 * in 583 $x and item barcodes in 9XX), sanitizes each record and maps it to a catalog record;
 * unreadable records go to a value-free report (file, position, reason). `gate` applies the catalog
 * record schema, `checkpoint` verifies nothing patron-like is left (a 14-digit barcode that slipped
 * through a local keep-list blocks the run), and `publish` writes `catalog.jsonl`, `catalog.xml`,
 * `catalog.mrc` and `quarantine.jsonl` into `output`. Its summary (read, written, quarantined,
 * stripped per tag) is the run's output.
 *
 *   deno task carrel dags run catalog_sync --param input=exports/ --param output=out/catalog
 */
import { join } from "node:path";
import { defineDag, task } from "../core/mod.ts";
import {
  CatalogRecord,
  type CatalogRecordValue,
  DEFAULT_ID_FIELDS,
  DEFAULT_ITEM_TAGS,
  jsonlWrite,
  privacyCheckpoint,
  readMarcFiles,
  schemaGate,
  toCatalogRecord,
  upstreamRecords,
  writeCatalogFiles,
} from "../operators/mod.ts";

const REPORT = "report";

interface Stats {
  type: "stats";
  files: number;
  read: number;
  recovered: number;
  quarantined: number;
  catalogRecords: number;
  stripped: Record<string, number>;
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
    /** Where the record id comes from, in order ("001", or tag + subfield such as "901c"). */
    id_fields: [...DEFAULT_ID_FIELDS] as string[],
  },
  defaults: { retries: 1, retryDelay: "5s", timeout: "6h" },
  tasks: {
    parse: task({
      zone: "enclave",
      description: "Read, sanitize and map MARC records; unreadable ones to the report",
      run: async (ctx) => {
        const input = String(ctx.params.input ?? "");
        if (input === "") throw new Error("catalog_sync needs --param input=<file or folder>");
        const rules = {
          keepLocalTags: list(ctx.params.keep_local_tags),
          itemTags: list(ctx.params.item_tags),
          dropTags: list(ctx.params.drop_tags),
          drop590: ctx.params.drop_590 === true,
        };
        const idFields = list(ctx.params.id_fields);
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
        };
        const files = new Set<string>();
        try {
          for await (const r of readMarcFiles(input)) {
            if (ctx.signal.aborted) throw new Error("catalog_sync parse: aborted");
            files.add(r.file);
            stats.read++;
            if (!r.ok) {
              stats.quarantined++;
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
            const converted = toCatalogRecord(r.record, rules, { idFields });
            for (const [tag, n] of Object.entries(converted.stripped)) {
              stats.stripped[tag] = (stats.stripped[tag] ?? 0) + n;
            }
            if (!converted.ok) {
              stats.quarantined++;
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
        });
        ctx.log.info("Read {read} records from {files} files: {quarantined} quarantined", {
          read: stats.read,
          files: stats.files,
          quarantined: stats.quarantined,
        });
        return await out.close();
      },
    }),
    gate: schemaGate({ after: ["parse"], schema: CatalogRecord, onInvalid: "quarantine" }),
    checkpoint: privacyCheckpoint({ after: ["gate"] }),
    publish: task({
      after: ["checkpoint"],
      description: "Write catalog.jsonl, catalog.xml, catalog.mrc and quarantine.jsonl",
      run: async (ctx) => {
        const output = String(ctx.params.output ?? "");
        if (output === "") throw new Error("catalog_sync needs --param output=<folder>");
        const written = await writeCatalogFiles(
          output,
          upstreamRecords(ctx, "checkpoint") as AsyncIterable<CatalogRecordValue>,
          { signal: ctx.signal },
        );
        // The value-free reports of the enclave tasks (positions and reasons only), streamed.
        let stats: Stats | undefined;
        let gateRejected = 0;
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
          quarantined: stats.quarantined + gateRejected + written.unencodable.length,
          recovered: stats.recovered,
          stripped: Object.fromEntries(
            Object.entries(stats.stripped).sort(([a], [b]) => a.localeCompare(b)),
          ),
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
  },
});
