/**
 * Alert callbacks in a sandbox: a callback of a strict DAG (its run-level hooks) or of a strict
 * task runs in a pooled Worker whose permissions are Carrel's and the DAG's code to read, plus
 * exactly what the callback declared (`declareCallbackNeeds`: hosts, variables, system facts).
 * It gets the alert it would get in-process (value-free) and its time limit's signal; a denied
 * access fails it with a message naming the hook and the capability, as a task's would. Like a
 * task, a callback may not declare an enclave connection; unlike a task, nor the tokenization key
 * (what it receives is value-free: it has nothing to tokenize).
 *
 * @module
 */
import { type Alert, type AlertHook, callbackNeeds } from "../alerts/alert.ts";
import type { ResolvedDag } from "../dag.ts";
import { PrivacySafeError } from "../privacy/privacy_safe.ts";
import { capabilityProblems, KEY_VARIABLES } from "./capabilities.ts";
import { callbackPermissions } from "./permissions.ts";
import { acquireWorker, releaseWorker } from "./pool.ts";

/** Where a callback sits in its DAG file: the DAG's own hooks (`taskId` null) or a task's. */
export interface CallbackPlace {
  taskId: string | null;
  hook: AlertHook;
  index: number;
}

/** A sandboxed callback failed: a message naming the hook and what went wrong, never a value. */
export class CallbackSandboxError extends PrivacySafeError {
  override name = "CallbackSandboxError";
}

/**
 * Where `callback` is declared for `hook`: the task's hooks (when `taskId` names one), then the
 * DAG's. `undefined` when it is in neither.
 */
export function placeOf(
  dag: ResolvedDag,
  taskId: string | null,
  hook: AlertHook,
  callback: unknown,
): CallbackPlace | undefined {
  const task = taskId === null ? undefined : dag.tasks.get(taskId);
  const own = task?.alerts.hooks[hook].indexOf(callback as never) ?? -1;
  if (own >= 0) return { taskId: task!.id, hook, index: own };
  const run = dag.alerts.hooks[hook].indexOf(callback as never);
  return run >= 0 ? { taskId: null, hook, index: run } : undefined;
}

/** Whether the callback at `place` runs in a sandbox: its task, or for run hooks its DAG, is strict. */
export function sandboxesCallback(dag: ResolvedDag, place: CallbackPlace): boolean {
  if (place.taskId === null) return dag.sandbox === "strict";
  return dag.tasks.get(place.taskId)?.sandbox.mode === "strict";
}

const DENIED = /Requires (\w+) access to "([^"]*)"/;

/**
 * Runs the callback at `place` of `dag` in a sandbox Worker with `alert`; settles when it
 * returns or throws there. `signal` (its time limit) ends the Worker.
 */
export async function runCallbackSandboxed(
  dag: ResolvedDag,
  place: CallbackPlace,
  callback: unknown,
  alert: Alert,
  signal: AbortSignal,
): Promise<void> {
  const what = `Alert callback ${place.hook} (${
    (callback as { name?: string }).name || "callback"
  })`;
  const module = [...dag.tasks.values()].find((t) => t.module)?.module;
  if (module === undefined) {
    throw new CallbackSandboxError(
      `${what} cannot run in its sandbox: its DAG was not loaded from a file`,
    );
  }
  const needs = callbackNeeds(callback as never, Deno.env);
  const zones = [...dag.tasks.values()][0]?.sandbox.connectionZones ?? {};
  const problems = capabilityProblems(
    "shared",
    { connections: [], reads: [], writes: [], env: [...(needs.env ?? [])] },
    zones,
  );
  // A callback gets a value-free alert: it has no use for the tokenization key.
  for (const name of needs.env ?? []) {
    if ((KEY_VARIABLES as readonly string[]).includes(name)) {
      problems.push(`may not declare env ${name}: it holds the tokenization key`);
    }
  }
  if (problems.length > 0) {
    throw new CallbackSandboxError(`${what} ${problems.join(`; ${what} `)}`);
  }
  const w = acquireWorker(callbackPermissions(module, needs));
  let reusable = false;
  try {
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(signal.reason);
      if (signal.aborted) return onAbort();
      signal.addEventListener("abort", onAbort, { once: true });
      const settle = (error?: Error) => {
        signal.removeEventListener("abort", onAbort);
        reusable = true;
        if (error) reject(error);
        else resolve();
      };
      w.onMessage = (m) => {
        if (m.type === "done") settle();
        else if (m.type === "failed") {
          const denied = m.error.denied;
          settle(
            denied
              ? new CallbackSandboxError(
                `${what} may not use ${denied.kind} access to ${denied.resource}: declare it with declareCallbackNeeds`,
              )
              : m.error.safe
              ? new CallbackSandboxError(m.error.message)
              : Object.assign(new Error("withheld"), { name: m.error.name }),
          );
        }
      };
      w.onError = (message) => {
        signal.removeEventListener("abort", onAbort);
        const denied = DENIED.exec(message);
        reject(
          new CallbackSandboxError(
            denied
              ? `${what} may not use ${denied[1]} access to ${
                denied[2]
              }: declare it with declareCallbackNeeds`
              : `${what} crashed its sandbox`,
          ),
        );
      };
      try {
        w.worker.postMessage({
          type: "callback",
          module,
          dagId: dag.id,
          taskId: place.taskId,
          hook: place.hook,
          index: place.index,
          alert,
        });
      } catch (error) {
        signal.removeEventListener("abort", onAbort);
        reject(
          new CallbackSandboxError(
            `${what} cannot get its alert: ${error instanceof Error ? error.name : typeof error}`,
          ),
        );
      }
    });
  } finally {
    releaseWorker(w, reusable && !signal.aborted);
  }
}
