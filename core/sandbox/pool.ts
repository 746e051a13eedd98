/**
 * Sandbox Workers, pooled per permission set: a Worker that finished an attempt waits for the
 * next one with the same permissions (its module cache keeps the engine and the DAG file), so a
 * run pays for a Worker once per permission set, not once per task. Workers live while a scope
 * is open (a run in this process, a worker process); when the last scope closes, idle Workers
 * are terminated. A Worker whose attempt was aborted or crashed is terminated, never reused, and
 * so is one that no task of its run still to finish needs (`run.ts` decides), or that waited idle
 * longer than `CARREL_SANDBOX_IDLE_MS` (60 s).
 *
 * Starting a Worker with its own permissions needs Deno's `--unstable-worker-options` (set in
 * `deno.json` and in every task and shebang that starts Carrel): without it Deno would exit the
 * whole process, so that is checked first and reported as an error instead.
 *
 * @module
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { FatalTaskError } from "../errors.ts";
import { markPrivacySafe } from "../privacy/privacy_safe.ts";
import type { SandboxPermissions } from "./permissions.ts";
import type { FromSandbox } from "./protocol.ts";

/** A started Worker and the permission set it was started with. */
export interface SandboxWorker {
  readonly key: string;
  readonly worker: Worker;
  /** Resolves when the Worker has loaded its script. */
  readonly ready: Promise<void>;
  /** Set by the attempt that uses it. */
  onMessage: ((m: FromSandbox) => void) | undefined;
  onError: ((message: string) => void) | undefined;
  /** An uncaught error ended it (a stray rejection, even while idle): never reused. */
  broken: boolean;
  /** Terminated. */
  ended: boolean;
  /** While idle in the pool: the timer that ends it if nothing takes it. */
  idleTimer?: ReturnType<typeof setTimeout>;
}

const idle = new Map<string, SandboxWorker[]>();
let scopes = 0;
let enabled: boolean | undefined;

/**
 * How long a pooled Worker waits, idle, for its next attempt before it is terminated: a
 * long-lived worker process would otherwise keep the Workers warmed up for every run whose other
 * tasks ran elsewhere (`CARREL_SANDBOX_IDLE_MS`, default 60 s).
 */
function idleMs(): number {
  const raw = Number(Deno.env.get("CARREL_SANDBOX_IDLE_MS"));
  return Number.isFinite(raw) && raw > 0 ? raw : 60_000;
}

/** Workers started since the process began (the bench reports it), and those still running. */
export const sandboxStats = { started: 0, live: 0 };

/** Ends a Worker (once). */
function terminate(w: SandboxWorker): void {
  if (w.ended) return;
  w.ended = true;
  clearTimeout(w.idleTimer);
  sandboxStats.live--;
  w.worker.terminate();
}

/**
 * Whether this process may start Workers with their own permissions: started with
 * `--unstable-worker-options` (or `--unstable`), or under a `deno.json` that lists
 * `"worker-options"` in `unstable`.
 */
export function workerOptionsEnabled(): boolean {
  if (enabled !== undefined) return enabled;
  enabled = false;
  try {
    const args = readFileSync("/proc/self/cmdline", "utf8").split("\0");
    if (args.some((a) => a === "--unstable-worker-options" || a === "--unstable")) {
      return enabled = true;
    }
    const config = args.findIndex((a) => a === "--config" || a === "-c");
    const files = config >= 0 && args[config + 1] ? [args[config + 1]!] : configFiles();
    for (const file of files) {
      const json = JSON.parse(readFileSync(file, "utf8")) as { unstable?: unknown };
      if (Array.isArray(json.unstable) && json.unstable.includes("worker-options")) enabled = true;
      break;
    }
  } catch { /* not Linux, or unreadable: not known to be enabled */ }
  return enabled;
}

/** The `deno.json` Deno discovers: in the working directory or the nearest folder above it. */
function configFiles(): string[] {
  let dir = Deno.cwd();
  for (;;) {
    for (const name of ["deno.json", "deno.jsonc"]) {
      if (existsSync(join(dir, name))) return [join(dir, name)];
    }
    const parent = dirname(dir);
    if (parent === dir) return [];
    dir = parent;
  }
}

/** Keeps pooled Workers alive until disposed (the last scope terminates the idle ones). */
export function sandboxScope(): Disposable {
  scopes++;
  let open = true;
  return {
    [Symbol.dispose]() {
      if (!open) return;
      open = false;
      if (--scopes === 0) {
        for (const list of idle.values()) for (const w of list) terminate(w);
        idle.clear();
      }
    },
  };
}

/** The pool's key for a permission set: Workers are shared by equal keys only. */
export function permissionKey(permissions: SandboxPermissions): string {
  return JSON.stringify(permissions);
}

/** An idle Worker with these permissions, or a new one. */
export function acquireWorker(permissions: SandboxPermissions): SandboxWorker {
  const key = permissionKey(permissions);
  const waiting = idle.get(key);
  let reused = waiting?.pop();
  while (reused?.broken) reused = waiting?.pop();
  if (waiting && waiting.length === 0) idle.delete(key);
  if (reused) {
    clearTimeout(reused.idleTimer);
    return reused;
  }
  if (!workerOptionsEnabled()) {
    throw markPrivacySafe(
      new FatalTaskError(
        'Cannot start a task sandbox: Deno was started without --unstable-worker-options (add it to the command, or `"unstable": ["worker-options"]` to deno.json)',
      ),
    );
  }
  const worker = new Worker(new URL("./worker_main.ts", import.meta.url), {
    type: "module",
    deno: { permissions },
  });
  sandboxStats.started++;
  sandboxStats.live++;
  let readyResolve!: () => void;
  const ready = new Promise<void>((r) => readyResolve = r);
  const entry: SandboxWorker = {
    key,
    worker,
    ready,
    onMessage: undefined,
    onError: undefined,
    broken: false,
    ended: false,
  };
  worker.onmessage = (e: MessageEvent<FromSandbox>) => {
    if (e.data.type === "ready") readyResolve();
    else entry.onMessage?.(e.data);
  };
  worker.onerror = (e: ErrorEvent) => {
    e.preventDefault();
    entry.broken = true;
    terminate(entry);
    readyResolve();
    entry.onError?.(e.message || "the sandbox Worker failed");
  };
  return entry;
}

/**
 * Starts a Worker for a permission set ahead of need, importing the DAG file: while a scope is
 * open and none is idle for it. Its start-up then overlaps the tasks before it.
 */
export function prewarmWorker(
  permissions: SandboxPermissions,
  module: string,
  dagId: string,
): void {
  if (scopes === 0 || !workerOptionsEnabled()) return;
  const key = permissionKey(permissions);
  if ((idle.get(key)?.length ?? 0) > 0) return;
  const w = acquireWorker(permissions);
  w.worker.postMessage({ type: "warm", module, dagId });
  releaseWorker(w, true);
}

/** Terminates the idle Workers with pool key `key`: no task still to run needs them. */
export function retireWorkers(key: string): void {
  for (const w of idle.get(key) ?? []) terminate(w);
  idle.delete(key);
}

/** Gives a Worker back: kept for the next attempt while a scope is open, else terminated. */
export function releaseWorker(w: SandboxWorker, reusable: boolean): void {
  w.onMessage = undefined;
  w.onError = undefined;
  if (!reusable || w.broken || scopes === 0) {
    terminate(w);
    return;
  }
  const list = idle.get(w.key) ?? [];
  list.push(w);
  idle.set(w.key, list);
  const timer = setTimeout(() => {
    const waiting = idle.get(w.key);
    const at = waiting?.indexOf(w) ?? -1;
    if (at >= 0) waiting!.splice(at, 1);
    if (waiting?.length === 0) idle.delete(w.key);
    terminate(w);
  }, idleMs());
  // An idle Worker never keeps the process alive.
  Deno.unrefTimer(timer);
  w.idleTimer = timer;
}
