/**
 * Benchmark of patron tokenization throughput.
 *
 * Measures {@link HmacTokenizer} on 8-20 character ids against the obvious
 * alternative, one `node:crypto` `createHmac` per record, in the same run, and
 * reports the `openssl speed -hmac sha256 -bytes 16` figure as the practical
 * limit of the machine.
 *
 * Run directly to print the metrics as JSON:
 *
 * ```sh
 * deno run --allow-all bench/tokenize_bench.ts          # full
 * deno run --allow-all bench/tokenize_bench.ts --quick  # a few seconds
 * ```
 *
 * @module
 */

import { createHmac } from "node:crypto";
import process from "node:process";
import { HmacTokenizer } from "../core/privacy/hmac_sha256.ts";
import type { Metric } from "./metric.ts";

export type { Metric };

/** Options for {@link benchTokenize}. */
export interface BenchOptions {
  /** Shorter runs (a few seconds in total). */
  quick: boolean;
}

/** A fixed benchmark key (not a real secret). */
const BENCH_KEY = "carrel-benchmark-key-not-a-secret-0123456789";

/** Deterministic 8-20 character ids in the shapes libraries use: patron numbers, barcodes, logins. */
function makeIds(count: number): string[] {
  const ids: string[] = [];
  let x = 0x9e3779b9;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  const alnum = "abcdefghijklmnopqrstuvwxyz0123456789";
  for (let i = 0; i < count; i++) {
    const len = 8 + (next() % 13);
    let id: string;
    switch (i % 3) {
      case 0:
        id = "P" + String(next()).padStart(len - 1, "0").slice(-(len - 1));
        break;
      case 1:
        id = (String(next()) + String(next())).padStart(len, "2").slice(0, len);
        break;
      default:
        id = "";
        while (id.length < len) id += alnum[next() % alnum.length];
    }
    ids.push(id);
  }
  return ids;
}

/** Throughput of one measured loop. */
interface Rate {
  /** Tokens per second of process CPU time (user + system). */
  cpu: number;
  /** Tokens per second of wall-clock time. */
  wall: number;
}

/**
 * Runs `tokenize` over `ids` repeatedly for about `ms` milliseconds.
 *
 * The rate is reported per second of process CPU time as well as wall-clock
 * time: on a shared machine the wall-clock figure drops when other processes
 * take the core, the CPU-time figure much less. `openssl speed` also divides
 * by CPU time in its summary table.
 */
function measure(ids: readonly string[], tokenize: (raw: string) => string, ms: number): Rate {
  let sink = 0;
  // Warm up so that the optimizing compiler has run before timing.
  const warmEnd = performance.now() + Math.max(150, ms / 4);
  while (performance.now() < warmEnd) {
    for (let i = 0; i < 1000; i++) sink += tokenize(ids[i]!).charCodeAt(i & 63);
  }
  let count = 0;
  const cpuStart = process.cpuUsage();
  const start = performance.now();
  const end = start + ms;
  let now = start;
  while (now < end) {
    for (const id of ids) sink += tokenize(id).charCodeAt(count & 63);
    count += ids.length;
    now = performance.now();
  }
  const cpu = process.cpuUsage(cpuStart);
  if (sink === -1) console.log(sink); // Keeps the results alive.
  return { cpu: count / ((cpu.user + cpu.system) / 1e6), wall: count / ((now - start) / 1000) };
}

/** Result of `openssl speed -hmac sha256 -bytes 16`. */
interface OpensslSpeed {
  /** HMACs of 16-byte messages per second of CPU time, from the summary table. */
  tokensPerS: number;
  /** The raw summary line. */
  line: string;
  /** Operations per wall-clock second, from the "Doing ..." line, if present. */
  wallTokensPerS?: number;
}

/** Runs `openssl speed` for 16-byte HMAC-SHA256 messages; `null` if openssl is unavailable. */
async function opensslSpeed(seconds: number): Promise<OpensslSpeed | null> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("openssl", {
      args: ["speed", "-hmac", "sha256", "-bytes", "16", "-seconds", String(seconds)],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch {
    return null;
  }
  if (!out.success) return null;
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  // e.g. "hmac(sha256)     83040.62k" — in 1000s of bytes per second.
  const m = /^(hmac\(sha256\)\s+([\d.]+)k)\s*$/m.exec(stdout);
  if (!m) return null;
  const result: OpensslSpeed = { tokensPerS: Number(m[2]) * 1000 / 16, line: m[1]! };
  // e.g. "Doing hmac(sha256) for 1s on 16 size blocks: 3396921 hmac(sha256)'s in 1.00s"
  const d = /:\s*(\d+) hmac\(sha256\)'s in ([\d.]+)s/.exec(stderr + stdout);
  if (d) result.wallTokensPerS = Number(d[1]) / Number(d[2]);
  return result;
}

/**
 * Measures tokenization throughput on one core.
 *
 * Returns `tokenize.tokens_per_s` (baseline: `node:crypto` `createHmac` per
 * record) and, when openssl is installed, `tokenize.openssl_limit_tokens_per_s`
 * (baseline: this module's tokenizer).
 *
 * @example
 * ```ts
 * import { benchTokenize } from "./tokenize_bench.ts";
 * const [metric] = await benchTokenize({ quick: true });
 * console.log(metric?.value, metric?.ratio);
 * ```
 */
export async function benchTokenize(opts: BenchOptions): Promise<Metric[]> {
  const ms = opts.quick ? 600 : 3000;
  const ids = makeIds(opts.quick ? 20_000 : 100_000);

  const tokenizer = new HmacTokenizer(BENCH_KEY);
  const viaNode = (raw: string) => createHmac("sha256", BENCH_KEY).update(raw).digest("hex");
  // A benchmark of wrong results is worthless: check a sample against node:crypto first.
  for (let i = 0; i < 1000; i++) {
    const id = ids[i]!;
    if (tokenizer.token(id) !== viaNode(id)) {
      throw new Error(
        `Cannot benchmark tokenization: token mismatch with node:crypto for id #${i}`,
      );
    }
  }

  const ours = measure(ids, (raw) => tokenizer.token(raw), ms);
  const baseline = measure(ids, viaNode, ms / 2);
  const openssl = await opensslSpeed(opts.quick ? 1 : 3);

  const lengths = ids.map((id) => id.length);
  const extra: Record<string, unknown> = {
    clock: "process CPU time (user + system)",
    wall_clock_tokens_per_s: ours.wall,
    baseline_wall_clock_tokens_per_s: baseline.wall,
    ids: ids.length,
    id_length_min: Math.min(...lengths),
    id_length_max: Math.max(...lengths),
    duration_ms: ms,
    quick: opts.quick,
    openssl_limit_tokens_per_s: openssl?.tokensPerS ?? null,
  };
  if (openssl) extra.fraction_of_openssl_limit = ours.cpu / openssl.tokensPerS;

  const metrics: Metric[] = [{
    name: "tokenize.tokens_per_s",
    value: ours.cpu,
    unit: "tokens/s",
    baseline: { name: "node:crypto createHmac per record", value: baseline.cpu },
    ratio: ours.cpu / baseline.cpu,
    extra,
  }];
  if (openssl) {
    const opensslExtra: Record<string, unknown> = {
      command: `openssl speed -hmac sha256 -bytes 16 -seconds ${opts.quick ? 1 : 3}`,
      summary_line: openssl.line,
    };
    if (openssl.wallTokensPerS !== undefined) {
      opensslExtra.wall_clock_tokens_per_s = openssl.wallTokensPerS;
    }
    metrics.push({
      name: "tokenize.openssl_limit_tokens_per_s",
      value: openssl.tokensPerS,
      unit: "tokens/s",
      baseline: { name: "carrel HmacTokenizer", value: ours.cpu },
      ratio: openssl.tokensPerS / ours.cpu,
      extra: opensslExtra,
    });
  }
  return metrics;
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  console.log(JSON.stringify(await benchTokenize({ quick }), null, 2));
}
