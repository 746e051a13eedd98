/**
 * Where Carrel keeps its files, in a module of its own: a process that only needs the folder's
 * name (the demo's parent process) does not load the store's code with it.
 *
 * @module
 */
import { join } from "node:path";

/**
 * Where Carrel keeps its files: `CARREL_HOME`, else `.carrel` in the working folder.
 *
 * @example
 * ```ts
 * import { carrelHome } from "./home.ts";
 * console.log(carrelHome(new Map([["CARREL_HOME", "/srv/carrel"]]))); // "/srv/carrel"
 * ```
 */
export function carrelHome(env: { get(key: string): string | undefined } = Deno.env): string {
  return env.get("CARREL_HOME") || join(Deno.cwd(), ".carrel");
}
