/**
 * The messages between the attempt runner and a sandbox Worker. Everything crosses as a
 * structured clone: the task's context as data (datasets as their stored handles, opened again
 * in the Worker, so they stay streaming from the workspace files), its logs, counts and outcome.
 * Not part of the public API.
 *
 * @module
 */
import type { WorkspaceTransfer } from "../dataset.ts";
import type { Zone } from "../dag.ts";
import type { Alert, AlertHook } from "../alerts/alert.ts";

/** What the Worker needs to build `ctx` and find the task body. */
export interface SandboxJob {
  type: "run";
  /** The DAG file's URL: the Worker imports it and finds the task in its default export. */
  module: string;
  dagId: string;
  taskId: string;
  runId: string;
  jobKey: string;
  dataInterval: { start: Date; end: Date };
  params: Record<string, unknown>;
  attempt: number;
  /** Upstream outputs; datasets as `{ $dataset }` handles. */
  inputs: Record<string, unknown>;
  inputTags: Record<string, readonly string[]>;
  zone: Zone;
  outputZone: Zone;
  workspace: WorkspaceTransfer;
  /**
   * In a fused pass: the inputs whose records stream from the task before (input id -> port to
   * pull them from; see `stream_ports.ts`), and the port the output streams to, if it does.
   */
  streams?: { inputs: Record<string, MessagePort>; output?: MessagePort };
  /**
   * The embedded databases' template folder (readable by this Worker), when the task declares
   * an embedded database: a new one is a copy of it, not an initdb run in the Worker.
   */
  pgliteTemplate?: string;
}

/** The attempt's signal aborted: the Worker aborts `ctx.signal` (and is then discarded). */
export interface SandboxAbort {
  type: "abort";
}

/** Import and resolve a DAG file ahead of its first job (a pooled Worker warming up). */
export interface SandboxWarm {
  type: "warm";
  module: string;
  dagId: string;
}

/**
 * Run one alert callback of a DAG file: the DAG's own (`taskId` null) or a task's, the
 * `index`-th of its `hook`, with the alert.
 */
export interface SandboxCallback {
  type: "callback";
  module: string;
  dagId: string;
  taskId: string | null;
  hook: AlertHook;
  index: number;
  alert: Alert;
}

/** What the runner sends. */
export type ToSandbox = SandboxJob | SandboxAbort | SandboxWarm | SandboxCallback;

/** A thrown error, as data. */
export interface SandboxErrorData {
  name: string;
  message: string;
  /** Vetted as privacy-safe (Carrel's operators, `markPrivacySafe`). */
  safe: boolean;
  permanent: boolean;
  skip: boolean;
  /** The access the permission model refused, when that is what failed. */
  denied?: { kind: string; resource: string };
  /** A sensor's check found nothing yet (`RescheduleTask`): when and how to check again. */
  reschedule?: { delayMs: number; timeoutMs: number; softFail: boolean };
}

/** What the Worker sends. */
export type FromSandbox =
  | { type: "ready" }
  | {
    type: "log";
    level: "debug" | "info" | "warn" | "error";
    message: string;
    properties?: Record<string, unknown>;
  }
  | { type: "count"; operation: string; records: number; detail?: Record<string, unknown> }
  | { type: "done"; value: unknown }
  | { type: "failed"; error: SandboxErrorData };
