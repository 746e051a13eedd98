/**
 * The sandbox Worker: runs task bodies (and the alert callbacks of strict DAGs and tasks) with
 * the permissions it was started with and nothing else. It imports the DAG file named in each job (once; the module cache keeps it), finds the
 * task in its default export by task id, builds `ctx` from the job (datasets opened again from
 * the workspace, so they stream), and proxies what needs the parent: logs and counts. Iterable
 * outputs become datasets here, like in-process. One job at a time. Not part of the public API.
 *
 * @module
 */
import { Dataset, isDatasetRef, Workspace } from "../dataset.ts";
import {
  isDag,
  resolveDag,
  type ResolvedDag,
  type ResolvedTask,
  type TaskContext,
} from "../dag.ts";
import { errorMessage, isPermanentError, RescheduleTask, SkipTask } from "../errors.ts";
import { isPrivacySafe, markPrivacySafe } from "../privacy/privacy_safe.ts";
import { materialize } from "../run/attempt.ts";
import { givePgliteTemplateDir } from "../state/pglite_database.ts";
import { mappedBody } from "../run/mapping.ts";
import { findDenial } from "./denial.ts";
import type {
  FromSandbox,
  SandboxCallback,
  SandboxErrorData,
  SandboxJob,
  ToSandbox,
} from "./protocol.ts";
import { PortDataset, portWriter } from "./stream_ports.ts";

interface SandboxScope {
  onmessage: ((e: MessageEvent<ToSandbox>) => void) | null;
  postMessage(message: FromSandbox): void;
}

const scope = globalThis as unknown as SandboxScope;
let controller: AbortController | undefined;

function send(message: FromSandbox): void {
  scope.postMessage(message);
}

/** Dataset handles back into datasets of this Worker's workspace. */
function revive(value: unknown, workspace: Workspace): unknown {
  return isDatasetRef(value) ? new Dataset(value, workspace) : value;
}

/** Datasets to their handles (a class instance does not survive a structured clone). */
function toData(value: unknown): unknown {
  return value instanceof Dataset ? value.ref : value;
}

const dags = new Map<string, Promise<ResolvedDag>>();

/** The DAG file imported and resolved (once per file; a warm-up and a job share it). */
function dagOf(module: string, dagId: string): Promise<ResolvedDag> {
  let dag = dags.get(module);
  if (!dag) {
    dag = (async () => {
      const mod = await import(module) as { default?: unknown };
      if (!isDag(mod.default) || mod.default.config.id !== dagId) {
        throw new Error(`${module} does not define DAG "${dagId}"`);
      }
      return resolveDag(mod.default);
    })();
    dags.set(module, dag);
  }
  return dag;
}

/**
 * The task, from the DAG file imported and resolved here as in the parent: resolving runs the
 * operators' `validate` hooks, which prepare what their bodies use (a checkpoint's known fields).
 */
async function findTask(job: SandboxJob): Promise<ResolvedTask> {
  let dag: ResolvedDag;
  try {
    dag = await dagOf(job.module, job.dagId);
  } catch (error) {
    throw new Error(`Cannot run task "${job.taskId}" in its sandbox: ${errorMessage(error)}`);
  }
  // A mapped task's expansion or one of its instances (`load[3]`): the body the parent runs.
  const t = mappedBody(dag, job.taskId) ?? dag.tasks.get(job.taskId);
  if (!t) {
    throw new Error(
      `Cannot run task "${job.taskId}" in its sandbox: DAG "${job.dagId}" has no such task`,
    );
  }
  return t;
}

function errorData(error: unknown): SandboxErrorData {
  const denied = findDenial(error);
  return {
    name: error instanceof Error ? error.name : typeof error,
    message: errorMessage(error),
    safe: isPrivacySafe(error),
    permanent: isPermanentError(error),
    skip: error instanceof SkipTask,
    ...(denied ? { denied } : {}),
    ...(error instanceof RescheduleTask
      ? {
        reschedule: {
          delayMs: error.delayMs,
          timeoutMs: error.timeoutMs,
          softFail: error.softFail,
        },
      }
      : {}),
  };
}

async function run(job: SandboxJob): Promise<void> {
  controller = new AbortController();
  if (job.pgliteTemplate !== undefined) givePgliteTemplateDir(job.pgliteTemplate);
  try {
    const t = await findTask(job);
    const w = job.workspace;
    const workspace = new Workspace(w.home, w.runId, w.key, undefined, w.enclaveDir);
    const streams = job.streams;
    const inputs = Object.fromEntries(
      Object.entries(job.inputs).map((
        [k, v],
      ) => [
        k,
        streams?.inputs[k] && isDatasetRef(v)
          ? new PortDataset(v, workspace, streams.inputs[k]!)
          : revive(v, workspace),
      ]),
    );
    // In a fused pass the task's first dataset that is not value-free streams to the next task.
    let outputOpened = false;
    const streamTo = (name: string) => {
      outputOpened = true;
      const path = `${job.taskId}/${name}.stream`;
      return portWriter(streams!.output!, name, (records) => ({
        $dataset: {
          path,
          records,
          encrypted: job.outputZone === "enclave",
          format: "jsonl",
          streamed: true,
        },
      }), workspace);
    };
    const log =
      (level: "debug" | "info" | "warn" | "error") =>
      (message: string, properties?: Record<string, unknown>) =>
        send({ type: "log", level, message, ...(properties ? { properties } : {}) });
    const ctx: TaskContext = {
      dagId: job.dagId,
      taskId: job.taskId,
      runId: job.runId,
      jobKey: job.jobKey,
      logicalDate: job.dataInterval.start,
      dataInterval: job.dataInterval,
      params: job.params,
      attempt: job.attempt,
      signal: controller.signal,
      log: { debug: log("debug"), info: log("info"), warn: log("warn"), error: log("error") },
      inputs,
      inputTags: job.inputTags,
      zone: job.zone,
      workspace,
      dataset: (name = "data", opts) =>
        streams?.output && !outputOpened && opts?.valueFree !== true
          ? Promise.resolve(streamTo(name))
          : workspace.create(
            job.taskId,
            name,
            job.outputZone === "enclave" && opts?.valueFree !== true,
          ),
      count: (operation, records, detail) =>
        send({ type: "count", operation, records, ...(detail ? { detail } : {}) }),
    };
    const value = await t.run(ctx);
    const output = await materialize(value, ctx, t);
    send({ type: "done", value: toData(output) });
  } catch (error) {
    send({ type: "failed", error: errorData(error) });
  }
}

/** Runs one alert callback of the DAG file, found by owner, hook and position. */
async function callback(job: SandboxCallback): Promise<void> {
  controller = new AbortController();
  try {
    const dag = await dagOf(job.module, job.dagId);
    const hooks = job.taskId === null ? dag.alerts.hooks : dag.tasks.get(job.taskId)?.alerts.hooks;
    const fn = hooks?.[job.hook][job.index];
    if (fn === undefined) {
      throw markPrivacySafe(
        new Error(`DAG "${job.dagId}" has no such ${job.hook} callback (its file changed?)`),
      );
    }
    await fn(Object.freeze({ ...job.alert, counts: { ...job.alert.counts } }), controller.signal);
    send({ type: "done", value: null });
  } catch (error) {
    send({ type: "failed", error: errorData(error) });
  }
}

scope.onmessage = (e) => {
  const message = e.data;
  if (message.type === "abort") controller?.abort(new Error("The attempt was aborted"));
  else if (message.type === "warm") dagOf(message.module, message.dagId).catch(() => {});
  else if (message.type === "callback") void callback(message);
  else void run(message);
};
send({ type: "ready" });
