/**
 * `deno task fixtures`: synthetic library data of any size for the reference DAGs, demos and
 * benchmarks. Every value is fake and deterministic (same options, same bytes).
 *
 * - MARC 21: `<out>/marc/records.mrc` (ISO 2709 in MARC-8, diacritics included, with 9XX/852/876
 *   item fields holding fake barcodes and, by default, a damaged record every 997 to show
 *   quarantine) and `<out>/marc/records.xml` (MARCXML, UTF-8: a tenth of the records, at most
 *   1,000).
 * - ILS: an Evergreen-shaped database (`actor.usr`, `actor.card`, `actor.usr_address`,
 *   `asset.call_number`, `asset.copy`, `action.circulation`) in a PGlite data directory
 *   (`pglite:<out>/ils`, default) or a PostgreSQL database (`--ils postgres://...`; its tables must
 *   be empty).
 *
 * ```sh
 * deno task fixtures --records 100000 --circulations 1000000 --out .carrel/fixtures
 * deno task fixtures --circulations 10000000 --ils postgres://postgres@localhost/ils --no-marc
 * ```
 *
 * @module
 */
import { join, resolve } from "node:path";
import postgres from "postgres";
import {
  fixtureRecord,
  generateIso2709,
  type MarcRecord,
  writeMarcXml,
} from "../operators/marc.ts";
import { loadIlsFixture } from "../operators/ils_fixtures.ts";
import { isPgliteUrl, pglitePath } from "../operators/connection.ts";
import { openPglite } from "../operators/sql.ts";

/** Options of {@linkcode generateFixtures}. */
export interface FixturesOptions {
  /** Folder for the MARC files (and the default PGlite ILS). */
  out: string;
  /** MARC records in total (0: none). */
  records: number;
  /** Circulations (0: no ILS). */
  circulations: number;
  /** Damage every n-th ISO 2709 record (0: none). */
  defectEvery?: number;
  /** Where the ILS goes: `pglite:<dir>` or a `postgres://` URL (default `pglite:<out>/ils`). */
  ils?: string;
  /** Circulations' `xact_start` spread over [start, start + days). */
  start?: string;
  days?: number;
  seed?: number;
  /** Progress lines go here (default: nowhere). */
  log?: (line: string) => void;
}

/** What {@linkcode generateFixtures} made. */
export interface FixturesResult {
  marc?: { iso2709: string; marcxml: string; records: number; damaged: number };
  ils?: {
    url: string;
    patrons: number;
    copies: number;
    circulations: number;
    start: string;
    end: string;
  };
}

async function writeBytes(path: string, chunks: AsyncIterable<Uint8Array | string>) {
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  const encoder = new TextEncoder();
  try {
    for await (const chunk of chunks) {
      const bytes = typeof chunk === "string" ? encoder.encode(chunk) : chunk;
      let offset = 0;
      while (offset < bytes.length) offset += await file.write(bytes.subarray(offset));
    }
  } finally {
    file.close();
  }
}

/**
 * Generates MARC files and an Evergreen-shaped ILS.
 *
 * @example Usage
 * ```ts ignore
 * import { generateFixtures } from "./fixtures.ts";
 * const made = await generateFixtures({ out: "/tmp/fx", records: 1000, circulations: 1000 });
 * console.log(made.ils?.url); // "pglite:/tmp/fx/ils"
 * ```
 */
export async function generateFixtures(options: FixturesOptions): Promise<FixturesResult> {
  const out = resolve(options.out);
  const seed = options.seed ?? 1;
  const log = options.log ?? (() => {});
  const result: FixturesResult = {};
  if (options.records > 0) {
    const dir = join(out, "marc");
    await Deno.mkdir(dir, { recursive: true });
    const xmlCount = Math.min(1000, Math.floor(options.records / 10));
    const isoCount = options.records - xmlCount;
    const defectEvery = options.defectEvery ?? 997;
    const iso2709 = join(dir, "records.mrc");
    const marcxml = join(dir, "records.xml");
    log(`Writing ${isoCount} MARC-8 ISO 2709 records to ${iso2709}`);
    await writeBytes(
      iso2709,
      generateIso2709({ count: isoCount, seed, encoding: "marc-8", defectEvery }),
    );
    const xmlRecords = function* (): Generator<MarcRecord> {
      for (let i = 1; i <= xmlCount; i++) yield fixtureRecord(isoCount + i, seed);
    };
    log(`Writing ${xmlCount} MARCXML records to ${marcxml}`);
    await writeBytes(marcxml, writeMarcXml(xmlRecords()));
    result.marc = {
      iso2709,
      marcxml,
      records: options.records,
      damaged: defectEvery > 0 ? Math.floor(isoCount / defectEvery) : 0,
    };
  }
  if (options.circulations > 0) {
    const url = options.ils ?? `pglite:${join(out, "ils")}`;
    const days = options.days ?? 7;
    const start = new Date(options.start ?? "2026-01-01T00:00:00Z");
    const end = new Date(start.getTime() + days * 86_400_000);
    const circulations = options.circulations;
    const sizes = {
      patrons: Math.max(50, Math.ceil(circulations / 20)),
      copies: Math.max(100, Math.ceil(circulations / 5)),
      circulations,
      start,
      end,
      seed,
      onProgress: (table: string, loaded: number, total: number) => {
        if (loaded === total || loaded % 1_000_000 < 250_000) log(`  ${table}: ${loaded}/${total}`);
      },
    };
    log(`Loading an Evergreen-shaped ILS with ${circulations} circulations into ${url}`);
    if (isPgliteUrl(url)) {
      const path = pglitePath(url);
      if (path !== undefined) await Deno.remove(path, { recursive: true }).catch(() => {});
      const db = await openPglite(path);
      try {
        await loadIlsFixture(db, sizes);
      } finally {
        await db.close();
      }
    } else {
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      try {
        await loadIlsFixture(sql, sizes);
      } finally {
        await sql.end();
      }
    }
    result.ils = {
      url,
      patrons: sizes.patrons,
      copies: sizes.copies,
      circulations,
      start: start.toISOString(),
      end: end.toISOString(),
    };
  }
  return result;
}

function usage(): string {
  return `Usage: deno task fixtures [options]

Synthetic MARC files and an Evergreen-shaped ILS (all values fake).

Options:
  --out DIR             where to write (default .carrel/fixtures)
  --records N           MARC records (default 1000; 0 for none)
  --circulations N      ILS circulations (default 1000; 0 for no ILS)
  --ils URL             pglite:<dir> (default pglite:<out>/ils) or postgres://... (empty tables)
  --defect-every N      damage every N-th ISO 2709 record (default 997; 0 for none)
  --start ISO           first xact_start (default 2026-01-01T00:00:00Z)
  --days N              days of circulations (default 7)
  --seed N              PRNG seed (default 1)
  --json                print the result as JSON
`;
}

if (import.meta.main) {
  const args = [...Deno.args];
  const opts: Record<string, string> = {};
  let json = false;
  while (args.length > 0) {
    const arg = args.shift()!;
    if (arg === "--help" || arg === "-h") {
      console.log(usage());
      Deno.exit(0);
    }
    if (arg === "--json") {
      json = true;
      continue;
    }
    if (arg === "--no-marc") {
      opts.records = "0";
      continue;
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (!m) {
      console.error(`Unknown argument ${JSON.stringify(arg)}\n\n${usage()}`);
      Deno.exit(2);
    }
    const value = m[2] ?? args.shift();
    if (value === undefined) {
      console.error(`--${m[1]} needs a value`);
      Deno.exit(2);
    }
    opts[m[1]!] = value;
  }
  const known = ["out", "records", "circulations", "ils", "defect-every", "start", "days", "seed"];
  for (const key of Object.keys(opts)) {
    if (!known.includes(key)) {
      console.error(`Unknown option --${key}\n\n${usage()}`);
      Deno.exit(2);
    }
  }
  const int = (key: string, fallback: number, min = 0, max = 10_000_000): number => {
    if (opts[key] === undefined) return fallback;
    const n = Number(opts[key]!.replaceAll("_", ""));
    if (!Number.isInteger(n) || n < min || n > max) {
      console.error(`--${key} must be an integer from ${min} to ${max}`);
      Deno.exit(2);
    }
    return n;
  };
  const started = performance.now();
  const made = await generateFixtures({
    out: opts.out ?? ".carrel/fixtures",
    records: int("records", 1000),
    circulations: int("circulations", 1000),
    defectEvery: int("defect-every", 997),
    ...(opts.ils ? { ils: opts.ils } : {}),
    ...(opts.start ? { start: opts.start } : {}),
    days: int("days", 7, 1, 36_500),
    seed: int("seed", 1, 0, 2 ** 31 - 1),
    ...(json ? {} : { log: (line: string) => console.log(line) }),
  });
  if (json) console.log(JSON.stringify(made));
  else {
    console.log(`\nDone in ${((performance.now() - started) / 1000).toFixed(1)}s.`);
    if (made.marc) {
      console.log(
        `MARC: ${made.marc.records} records (${made.marc.damaged} damaged on purpose) in\n  ${made.marc.iso2709}\n  ${made.marc.marcxml}`,
      );
    }
    if (made.ils) {
      console.log(
        `ILS: ${made.ils.circulations} circulations, ${made.ils.patrons} patrons, ${made.ils.copies} copies, ${made.ils.start} to ${made.ils.end}\n  ${made.ils.url}`,
      );
    }
  }
}
