/**
 * The permission set of a sandboxed attempt: the task's declared capabilities resolved for its
 * run (connection names to `host:port` through `CARREL_CONN_<NAME>`, paths made absolute), plus
 * what Carrel's own machinery needs — read access to the engine's and the DAG's code, the run's
 * workspace (the enclave scratch for enclave tasks only), and the tokenization key for tasks that
 * declare `keyring` (the `tokenize` operator). Never `run`, `ffi`, `sys` or remote `import`.
 *
 * @module
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import type { ResolvedTask } from "../dag.ts";
import type { Workspace } from "../dataset.ts";
import {
  capabilityProblems,
  connectionVariable,
  type EnvLike,
  KEY_VARIABLES,
  resolveList,
} from "./capabilities.ts";
import { SandboxRefusedError } from "./denial.ts";
import { pgliteTemplateDir } from "../state/pglite_database.ts";

/**
 * The variables database drivers read for their defaults (postgres.js reads `PG` and every option
 * name): granted with a network connection, never Carrel's own secrets.
 */
const DRIVER_VARIABLES = ["PG*", "USER", "USERNAME", "LOGNAME"];

const DEFAULT_PORTS: Record<string, number> = {
  "http:": 80,
  "https:": 443,
  "postgres:": 5432,
  "postgresql:": 5432,
  "mysql:": 3306,
  "mariadb:": 3306,
};

/** A Worker's permissions: a plain object, so it can key the pool. */
export interface SandboxPermissions {
  read: string[];
  write: string[];
  net: string[] | false;
  env: string[] | false;
  run: false;
  ffi: false;
  /** Only the system facts a declared database driver reads (MariaDB: memory size, host name). */
  sys: string[] | false;
  import: false;
}

/**
 * What the MariaDB/MySQL driver reads of the system: the total memory (it sizes its buffers from
 * it) and the host name (its handshake sends it). Granted with a `mysql:`/`mariadb:` connection.
 */
const MYSQL_SYS = ["hostname", "systemMemoryInfo"];

/**
 * Packages that read their own files when used (PGlite loads its WebAssembly and data files):
 * their folders are public code, readable by every sandbox.
 */
const SELF_READING_PACKAGES = ["@electric-sql/pglite"];

let codeFolderList: string[] | undefined;

/** Folders of code a Worker imports or packages read (the engine, the operators, PGlite). */
function codeFolders(): string[] {
  if (codeFolderList) return codeFolderList;
  const folders = [resolve(fromFileUrl(new URL("../", import.meta.url).href))];
  const folderOf = (specifier: string, up: number) => {
    try {
      const url = import.meta.resolve(specifier);
      if (!url.startsWith("file:")) return;
      let dir = dirname(fromFileUrl(url));
      for (let i = 0; i < up; i++) dir = dirname(dir);
      folders.push(dir);
    } catch { /* not mapped: not needed */ }
  };
  folderOf("carrel/operators", 0);
  for (const name of SELF_READING_PACKAGES) folderOf(name, 1);
  return codeFolderList = folders;
}

/** What one connection grants: net to its host and port, or a PGlite folder. */
function connectionGrant(
  nameOrUrl: string,
  env: EnvLike,
): { net?: string; path?: string; variable?: string; sys?: string[] } {
  const value = nameOrUrl.trim();
  let url = value;
  let variable: string | undefined;
  if (!/^[a-z]+:/i.test(value)) {
    variable = connectionVariable(value);
    url = env.get(variable)?.trim() ?? "";
  }
  if (/^pglite:/i.test(url)) {
    let rest = url.slice("pglite:".length);
    if (rest === "memory" || rest === "//memory" || rest === "") {
      return { ...(variable ? { variable } : {}) };
    }
    if (rest.startsWith("//")) rest = rest.slice(2);
    try {
      rest = decodeURIComponent(rest);
    } catch { /* as is */ }
    return { path: resolve(rest), ...(variable ? { variable } : {}) };
  }
  try {
    const parsed = new URL(url);
    const port = parsed.port || String(DEFAULT_PORTS[parsed.protocol] ?? "");
    const host = parsed.hostname.replace(/^\[|\]$/g, "");
    const sys = /^(mysql|mariadb):$/i.test(parsed.protocol) ? { sys: MYSQL_SYS } : {};
    if (host) {
      return { net: port ? `${host}:${port}` : host, ...sys, ...(variable ? { variable } : {}) };
    }
  } catch { /* not set or not a URL: the task's own resolution names the problem */ }
  return variable ? { variable } : {};
}

const IMPORT = /(?:^|[;\s}])(?:import|export)\s*(?:[^'"`;]*?\sfrom\s*)?\(?\s*["']([^"']+)["']/g;
const graphs = new Map<string, string[]>();

/**
 * The DAG file's folder and the local files its imports reach outside it (a DAG that builds on
 * another DAG file): what the Worker reads to import it. Bare names (the engine, npm packages)
 * are left to the import map. Cached per file.
 */
export function moduleFiles(url: string): string[] {
  const clean = url.replace(/[?#].*$/, "");
  const known = graphs.get(clean);
  if (known) return known;
  const root = dirname(fromFileUrl(clean));
  const files = new Set<string>([root]);
  const seen = new Set<string>([clean]);
  const walk = (file: string, depth: number) => {
    if (depth > 20) return;
    let text: string;
    try {
      text = Deno.readTextFileSync(fromFileUrl(file));
    } catch {
      return;
    }
    for (const m of text.matchAll(IMPORT)) {
      const spec = m[1]!;
      if (!/^(\.{1,2}\/|\/|file:)/.test(spec)) continue;
      const next = new URL(spec, file).href.replace(/[?#].*$/, "");
      if (seen.has(next)) continue;
      seen.add(next);
      const path = fromFileUrl(next);
      if (!overlapsAny(path, [root])) files.add(path);
      walk(next, depth + 1);
    }
  };
  walk(clean, 0);
  const list = [...files];
  graphs.set(clean, list);
  return list;
}

function overlapsAny(path: string, folders: string[]): boolean {
  return folders.some((f) => path.startsWith(f.endsWith("/") ? f : f + "/"));
}

/**
 * The permissions of task `t`'s sandbox for this run. Throws a `SandboxRefusedError` when the
 * capabilities resolved for the run break the zone rule (a param named an enclave connection).
 *
 * @example
 * ```ts ignore
 * const permissions = sandboxPermissions(task, params, workspace);
 * new Worker(url, { type: "module", deno: { permissions } });
 * ```
 */
export function sandboxPermissions(
  t: ResolvedTask,
  params: Record<string, unknown>,
  workspace: Workspace,
  env: EnvLike = Deno.env,
): SandboxPermissions {
  const c = t.sandbox.capabilities;
  const declared = {
    connections: resolveList(c.connections, params),
    reads: resolveList(c.reads, params).map((p) => resolve(p)),
    writes: resolveList(c.writes, params).map((p) => resolve(p)),
    env: resolveList(c.env, params),
  };
  const keyring = c.keyring === true;
  const problems = capabilityProblems(t.zone, declared, t.sandbox.connectionZones, env);
  if (problems.length > 0) throw new SandboxRefusedError(t.id, problems);
  // What a task may write it may read back (a rename needs both).
  const read = new Set<string>([
    ...codeFolders(),
    workspace.runDir,
    ...declared.reads,
    ...declared.writes,
  ]);
  const write = new Set<string>([workspace.runDir, ...declared.writes]);
  if (t.module?.startsWith("file:")) { for (const f of moduleFiles(t.module)) read.add(f); }
  if (t.zone === "enclave") {
    read.add(workspace.enclaveDir);
    write.add(workspace.enclaveDir);
  }
  const net = new Set<string>();
  const vars = new Set<string>(declared.env);
  let driver = false;
  let embedded = false;
  const sys = new Set<string>();
  for (const name of declared.connections) {
    const grant = connectionGrant(name, env);
    if (grant.variable) vars.add(grant.variable);
    for (const kind of grant.sys ?? []) sys.add(kind);
    if (grant.net) {
      net.add(grant.net);
      driver = true;
    }
    if (grant.path) {
      read.add(grant.path);
      write.add(grant.path);
      embedded = true;
    }
  }
  // A new embedded database is a copy of the template cluster (an empty one: no data, no schema).
  const template = embedded ? pgliteTemplateDir() : undefined;
  if (template !== undefined) read.add(template);
  if (driver) { for (const v of DRIVER_VARIABLES) vars.add(v); }
  if (keyring) {
    for (const v of KEY_VARIABLES) vars.add(v);
    const file = env.get("CARREL_KEYRING");
    if (file) read.add(resolve(file));
  }
  return {
    read: [...read].sort(),
    write: [...write].sort(),
    net: net.size ? [...net].sort() : false,
    env: vars.size ? [...vars].sort() : false,
    run: false,
    ffi: false,
    sys: sys.size ? [...sys].sort() : false,
    import: false,
  };
}

/**
 * The permission set of an alert callback of the DAG file `module` in a sandbox: Carrel's and
 * the DAG's code to read, and exactly the hosts, variables and system facts it declared
 * (`declareCallbackNeeds`); no writes, no processes, no native code.
 *
 * @example
 * ```ts ignore
 * callbackPermissions("file:///srv/dags/d.ts", { net: ["hooks.example.org:443"] });
 * ```
 */
export function callbackPermissions(
  module: string,
  needs: { net?: readonly string[]; env?: readonly string[]; sys?: readonly string[] },
): SandboxPermissions {
  const read = new Set<string>(codeFolders());
  if (module.startsWith("file:")) { for (const f of moduleFiles(module)) read.add(f); }
  const list = (v: readonly string[] | undefined) =>
    v !== undefined && v.length > 0 ? [...new Set(v)].sort() : false as const;
  return {
    read: [...read].sort(),
    write: [],
    net: list(needs.net),
    env: list(needs.env),
    run: false,
    ffi: false,
    sys: list(needs.sys),
    import: false,
  };
}
