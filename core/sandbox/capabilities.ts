/**
 * Declared capabilities: what a task (or an operator) says it needs — `connections`, `reads`,
 * `writes`, `env`, `keyring` — and the sandbox mode it runs in. Resolved when a DAG is loaded,
 * and checked there: a shared task may not declare an enclave connection (or the variable that
 * holds its URL) or an enclave path.
 *
 * Which connections belong to the enclave is decided by the deployment
 * (`CARREL_ENCLAVE_CONNECTIONS`, default `ils`) and by the DAG (`connections: { koha: "enclave" }`),
 * not by the task that uses them. Enclave paths are `CARREL_HOME/enclave` (the enclave scratch),
 * the keyring file, and `CARREL_ENCLAVE_PATHS` (`:`-separated).
 *
 * @module
 */
import { isAbsolute, join, relative, resolve } from "node:path";
import type { Zone } from "../dag.ts";

/** `"strict"`: the body runs in a Worker with only the declared capabilities. `"none"`: in-process. */
export type SandboxMode = "strict" | "none";

/** A list of capabilities, or a function of the run's params that gives it (per run). */
export type CapabilityList =
  | readonly string[]
  | ((params: Record<string, unknown>) => readonly string[]);

/** What a task declares it needs. Everything else is denied in strict mode. */
export interface Capabilities {
  /** Connection names (resolved through `CARREL_CONN_<NAME>`) or URLs without a password. */
  connections?: CapabilityList;
  /** Paths (files or folders) the task reads. */
  reads?: CapabilityList;
  /** Paths (files or folders) the task writes. */
  writes?: CapabilityList;
  /** Environment variable names the task reads. */
  env?: CapabilityList;
  /** The tokenization key (`PII_HMAC_KEY`, `CARREL_KEYRING` and its file): what `tokenize` declares. */
  keyring?: boolean;
}

/** A task's sandbox after validation. */
export interface TaskSandbox {
  mode: SandboxMode;
  capabilities: Capabilities;
  /** Connection zones the DAG declares (`{ koha: "enclave" }`). */
  connectionZones: Readonly<Record<string, Zone>>;
}

/** Environment-like: `Deno.env` or a Map. */
export interface EnvLike {
  get(name: string): string | undefined;
}

/** The variables that hold the tokenization key. */
export const KEY_VARIABLES = ["PII_HMAC_KEY", "CARREL_KEYRING"] as const;

/**
 * The variable that holds connection `name`: `CARREL_CONN_` and the name uppercased, every other
 * character `_` (the rule `operators/ils` resolves connections by).
 *
 * @example
 * ```ts
 * import { connectionVariable } from "./capabilities.ts";
 * connectionVariable("koha-prod"); // "CARREL_CONN_KOHA_PROD"
 * ```
 */
export function connectionVariable(name: string): string {
  return `CARREL_CONN_${name.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`;
}

/** A variable, or `undefined` where it may not be read (inside a sandbox, DAGs are resolved too). */
function read(env: EnvLike, name: string): string | undefined {
  try {
    return env.get(name);
  } catch {
    return undefined;
  }
}

/** The connection names the deployment puts in the enclave (`CARREL_ENCLAVE_CONNECTIONS`). */
export function enclaveConnections(env: EnvLike = Deno.env): Set<string> {
  const raw = read(env, "CARREL_ENCLAVE_CONNECTIONS") ?? "ils";
  return new Set(raw.split(",").map((s) => s.trim().toLowerCase()).filter(Boolean));
}

/** The paths that belong to the enclave: its scratch, the keyring, `CARREL_ENCLAVE_PATHS`. */
export function enclavePaths(env: EnvLike = Deno.env): string[] {
  let home = read(env, "CARREL_HOME");
  if (!home) {
    try {
      home = join(Deno.cwd(), ".carrel");
    } catch {
      return []; // inside a sandbox: the parent checked the paths already
    }
  }
  const paths = [join(resolve(home), "enclave")];
  const keyring = read(env, "CARREL_KEYRING");
  if (keyring) paths.push(resolve(keyring));
  for (const p of (read(env, "CARREL_ENCLAVE_PATHS") ?? "").split(":")) {
    if (p.trim()) paths.push(resolve(p.trim()));
  }
  return paths;
}

/** True when `a` and `b` are the same path or one holds the other. */
export function overlaps(a: string, b: string): boolean {
  const inside = (x: string, y: string) => {
    const rel = relative(y, x);
    return rel === "" || (!rel.startsWith("..") && !isAbsolute(rel));
  };
  return inside(a, b) || inside(b, a);
}

/** Is connection `name` an enclave connection (by the deployment or the DAG)? */
export function isEnclaveConnection(
  name: string,
  zones: Readonly<Record<string, Zone>>,
  env: EnvLike = Deno.env,
): boolean {
  const declared = zones[name] ?? zones[name.toLowerCase()];
  if (declared !== undefined) return declared === "enclave" || enclaveConnections(env).has(name);
  return enclaveConnections(env).has(name.toLowerCase());
}

/**
 * The problems of one resolved capability set of a task in `zone`: what a shared task may not
 * have: an enclave connection (or its variable), an enclave path. Each names the capability (never a value it holds).
 *
 * @example
 * ```ts
 * import { capabilityProblems } from "./capabilities.ts";
 * capabilityProblems("shared", { connections: ["ils"], reads: [], writes: [], env: [] }, {}, new Map());
 * // ['may not declare connection "ils": it is an enclave connection (move the task into the enclave)']
 * ```
 */
export function capabilityProblems(
  zone: Zone,
  resolved: {
    connections: readonly string[];
    reads: readonly string[];
    writes: readonly string[];
    env: readonly string[];
  },
  zones: Readonly<Record<string, Zone>>,
  env: EnvLike = Deno.env,
): string[] {
  if (zone === "enclave") return [];
  const problems: string[] = [];
  const move = "(move the task into the enclave)";
  for (const c of resolved.connections) {
    if (isEnclaveConnection(c, zones, env)) {
      problems.push(`may not declare connection "${c}": it is an enclave connection ${move}`);
    }
  }
  // The deployment's enclave paths and variables are read only when there is something to check.
  if (resolved.reads.length + resolved.writes.length > 0) {
    const enclave = enclavePaths(env);
    for (const [kind, list] of [["read", resolved.reads], ["write", resolved.writes]] as const) {
      for (const p of list) {
        const hit = enclave.find((e) => overlaps(resolve(p), e));
        if (hit) problems.push(`may not ${kind} ${p}: it holds enclave data (${hit}) ${move}`);
      }
    }
  }
  if (resolved.env.length === 0) return problems;
  const enclaveVars = new Set<string>();
  for (const name of enclaveConnections(env)) enclaveVars.add(connectionVariable(name));
  for (const [name, z] of Object.entries(zones)) {
    if (z === "enclave") enclaveVars.add(connectionVariable(name));
  }
  for (const name of resolved.env) {
    if (enclaveVars.has(name)) {
      problems.push(`may not declare env ${name}: it holds an enclave connection ${move}`);
    }
  }
  return problems;
}

/** A capability list resolved against the run's params (static lists as they are). */
export function resolveList(
  list: CapabilityList | undefined,
  params: Record<string, unknown>,
): string[] {
  if (list === undefined) return [];
  const value = typeof list === "function" ? list(params) : list;
  return [...value].map(String).filter((s) => s !== "");
}

/** The static part of a task's capabilities (functions of params are checked at run time). */
export function staticCapabilities(c: Capabilities) {
  const fixed = (l: CapabilityList | undefined) => (typeof l === "function" ? [] : [...(l ?? [])]);
  return {
    connections: fixed(c.connections),
    reads: fixed(c.reads),
    writes: fixed(c.writes),
    env: fixed(c.env),
  };
}

/**
 * A task's sandbox mode: its own `sandbox`, else the DAG's (for every task), else `strict` for
 * enclave tasks of DAGs loaded from a file (a Worker imports the file to run the body), else
 * `none`.
 */
export function sandboxMode(
  taskMode: SandboxMode | undefined,
  dagMode: SandboxMode | undefined,
  zone: Zone,
  fromFile: boolean,
): SandboxMode {
  if (taskMode) return taskMode;
  if (dagMode) return dagMode;
  return zone === "enclave" && fromFile ? "strict" : "none";
}
