/**
 * `fileSensor`: waits until a path, or a glob pattern, matches files (a vendor's MARC drop),
 * optionally only files old enough and whose size stays the same over a short check (a drop
 * still being written is not taken).
 *
 * @module
 */
import { join, resolve } from "node:path";
import type { TaskContext, TaskSpec } from "../../core/dag.ts";
import { type Duration, parseDuration } from "../../core/duration.ts";
import { sleep } from "../../core/sleep.ts";
import { type PokeResult, sensor, type SensorOptions } from "./sensor.ts";

/** Options of {@link fileSensor}. */
export interface FileSensorOptions extends SensorOptions {
  /**
   * A path, or a glob: `*` and `?` within a name, `[abc]` classes, `**` for any depth
   * (`vendor/drops/*.mrc`). Relative paths are taken from the working directory; a function
   * receives the task's context (to name the file after the logical date).
   */
  path: string | ((ctx: TaskContext) => string);
  /** Only files last modified at least this long ago. */
  minAge?: Duration;
  /**
   * Only files whose size is the same after this long (checked within each poke): a file still
   * being written is not taken.
   */
  stableFor?: Duration;
}

/** What a met file sensor outputs: the matching files, sorted. */
export interface FileSensorOutput {
  files: string[];
}

const GLOB = /[*?[]/;

/**
 * Converts one glob segment to a regular expression (`*`, `?`, `[...]`; the rest literal).
 *
 * @example
 * ```ts
 * import { segmentPattern } from "./file_sensor.ts";
 * segmentPattern("*.mrc").test("vendor_2026.mrc"); // true
 * ```
 */
export function segmentPattern(segment: string): RegExp {
  let out = "";
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i]!;
    if (c === "*") out += "[^/]*";
    else if (c === "?") out += "[^/]";
    else if (c === "[") {
      const end = segment.indexOf("]", i + 1);
      if (end < 0) out += "\\[";
      else {
        const body = segment.slice(i + 1, end).replace(/^!/, "^").replace(/\\/g, "\\\\");
        out += `[${body}]`;
        i = end;
      }
    } else out += c.replace(/[.+^${}()|\\]/g, "\\$&");
  }
  return new RegExp(`^${out}$`);
}

/**
 * The files a path or glob matches now (sorted; directories are not matched).
 *
 * @example
 * ```ts ignore
 * await matchFiles("vendor/drops/*.mrc"); // ["/abs/vendor/drops/a.mrc"]
 * ```
 */
export async function matchFiles(pattern: string): Promise<string[]> {
  const absolute = resolve(pattern);
  const parts = absolute.split("/").filter((p) => p !== "");
  const first = parts.findIndex((p) => GLOB.test(p));
  if (first < 0) {
    try {
      return (await Deno.stat(absolute)).isFile ? [absolute] : [];
    } catch {
      return [];
    }
  }
  const base = "/" + parts.slice(0, first).join("/");
  const out: string[] = [];
  await walk(base, parts.slice(first), out);
  return out.sort();
}

async function walk(dir: string, rest: readonly string[], out: string[]): Promise<void> {
  const [segment, ...tail] = rest;
  if (segment === undefined) return;
  if (segment === "**") {
    await walk(dir, tail, out); // zero directories
    for (const e of await entries(dir)) {
      if (e.isDirectory) await walk(join(dir, e.name), rest, out);
    }
    return;
  }
  const literal = !GLOB.test(segment);
  const pattern = literal ? undefined : segmentPattern(segment);
  for (const e of await entries(dir)) {
    if (literal ? e.name !== segment : !pattern!.test(e.name)) continue;
    const path = join(dir, e.name);
    if (tail.length === 0) {
      if (e.isFile) out.push(path);
    } else if (e.isDirectory) await walk(path, tail, out);
  }
}

async function entries(dir: string): Promise<Deno.DirEntry[]> {
  try {
    return await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return [];
  }
}

/**
 * Waits for files: met when the path or glob matches at least one file that is old enough
 * (`minAge`) and whose size holds still (`stableFor`). Outputs `{ files }` (the matching paths,
 * sorted), which a downstream task can map over.
 *
 * @example
 * ```ts
 * import { fileSensor } from "./file_sensor.ts";
 * const drop = fileSensor({
 *   path: "vendor/drops/*.mrc",
 *   mode: "reschedule",
 *   pokeInterval: "5m",
 *   timeout: "6h",
 *   minAge: "1m",
 *   softFail: true,
 * });
 * ```
 */
export function fileSensor(options: FileSensorOptions): TaskSpec {
  const { path, minAge, stableFor, ...rest } = options;
  const minAgeMs = minAge === undefined ? 0 : parseDuration(minAge);
  const stableMs = stableFor === undefined ? 0 : parseDuration(stableFor);
  if (minAgeMs === undefined) {
    throw new TypeError('fileSensor: minAge: expected a duration such as "1m"');
  }
  if (stableMs === undefined) {
    throw new TypeError('fileSensor: stableFor: expected a duration such as "10s"');
  }
  if (typeof path !== "function" && (typeof path !== "string" || path.trim() === "")) {
    throw new TypeError("fileSensor: path: expected a path or a glob pattern");
  }
  return sensor("fileSensor", rest, async (ctx): Promise<PokeResult> => {
    const pattern = typeof path === "function" ? path(ctx) : path;
    const now = Date.now();
    const sizes = new Map<string, number>();
    for (const file of await matchFiles(pattern)) {
      try {
        const info = await Deno.stat(file);
        const age = now - (info.mtime?.getTime() ?? now);
        if (age >= minAgeMs) sizes.set(file, info.size);
      } catch { /* gone meanwhile */ }
    }
    if (sizes.size > 0 && stableMs > 0) {
      await sleep(stableMs, ctx.signal);
      if (ctx.signal.aborted) throw ctx.signal.reason;
      for (const [file, size] of sizes) {
        const now = await Deno.stat(file).then((i) => i.size, () => -1);
        if (now !== size) sizes.delete(file);
      }
    }
    ctx.count("sensor:files", sizes.size);
    return sizes.size > 0
      ? { met: true, value: { files: [...sizes.keys()].sort() } satisfies FileSensorOutput }
      : { met: false };
  });
}
