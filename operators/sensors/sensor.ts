/**
 * Sensors: tasks that wait for something outside the pipeline (a vendor's file drop, a row in the
 * ILS) with Airflow's two modes.
 *
 * - `poke` (default): one attempt that checks every `pokeInterval` and holds its slot (its
 *   `maxActiveTasks` place, its pool slot) while it waits.
 * - `reschedule`: each check is a short attempt; between checks the task instance frees its slot
 *   and waits in state `up_for_reschedule` (the decider offers it again after the interval; a
 *   poke is not counted as a try).
 *
 * Either way the wait ends at `timeout` (from the first check): the task fails for good, or is
 * skipped with `softFail` (its dependants then skip by the default trigger rule). Waiting is
 * abortable (the attempt's signal: a cancelled run, a lost lease) and never a busy loop.
 *
 * @module
 */
import type { TaskContext, TaskOptions, TaskSpec } from "../../core/dag.ts";
import { type Duration, formatDuration, parseDuration } from "../../core/duration.ts";
import { FatalTaskError, RescheduleTask, SkipTask } from "../../core/errors.ts";
import { markPrivacySafe } from "../../core/privacy/privacy_safe.ts";
import { sleep } from "../../core/sleep.ts";

/** Options every sensor takes. */
export interface SensorOptions extends Omit<TaskOptions, "timeout"> {
  /** `poke` (holds its slot while waiting, default) or `reschedule` (frees it between checks). */
  mode?: "poke" | "reschedule";
  /** Between checks. Default `"60s"`. */
  pokeInterval?: Duration;
  /** The longest wait, from the first check. Default `"7d"` (Airflow's). */
  timeout?: Duration;
  /** On timeout, skip (and skip the dependants) instead of failing. */
  softFail?: boolean;
}

/** What one check found: `met` with the sensor's output, or not yet. */
export type PokeResult = { met: true; value: unknown } | { met: false };

/** A check, as {@link sensorPokes} tells it: counts and names only. */
export interface PokeEvent {
  dagId: string;
  runId: string;
  taskId: string;
  mode: "poke" | "reschedule";
  met: boolean;
}

/**
 * Every check of every sensor in this process, as `poke` events (`CustomEvent<PokeEvent>`): for
 * progress displays and tests (a test creates the awaited file after the first check).
 *
 * @example
 * ```ts
 * import { sensorPokes } from "./sensor.ts";
 * sensorPokes.addEventListener("poke", (e) => console.log((e as CustomEvent).detail.met));
 * ```
 */
export const sensorPokes: EventTarget = new EventTarget();

function safe<E extends Error>(error: E): E {
  markPrivacySafe(error);
  return error;
}

/**
 * A sensor task around `check` (called once per check with the attempt's context; its errors
 * fail the attempt, retried by the task's `retries`).
 *
 * @example
 * ```ts
 * import { sensor } from "./sensor.ts";
 * const ready = sensor("flag", { pokeInterval: "5m", mode: "reschedule" }, () =>
 *   Promise.resolve({ met: true, value: true }));
 * ```
 */
export function sensor(
  operator: string,
  options: SensorOptions,
  check: (ctx: TaskContext) => Promise<PokeResult>,
): TaskSpec {
  const { mode = "poke", pokeInterval, timeout, softFail = false, ...rest } = options;
  const intervalMs = durationOf(operator, "pokeInterval", pokeInterval ?? "60s");
  const timeoutMs = durationOf(operator, "timeout", timeout ?? "7d");
  if (mode !== "poke" && mode !== "reschedule") {
    throw new TypeError(`${operator}: mode: expected "poke" or "reschedule"`);
  }
  const poke = async (ctx: TaskContext): Promise<PokeResult> => {
    const result = await check(ctx);
    ctx.log.info("Sensor {taskId} checked: {met}", { taskId: ctx.taskId, met: result.met });
    sensorPokes.dispatchEvent(
      new CustomEvent<PokeEvent>("poke", {
        detail: { dagId: ctx.dagId, runId: ctx.runId, taskId: ctx.taskId, mode, met: result.met },
      }),
    );
    return result;
  };
  const timedOut = (id: string, pokes: number) => {
    const message = `Sensor "${id}" timed out after ${formatDuration(timeoutMs)} (${pokes} ${
      pokes === 1 ? "poke" : "pokes"
    })`;
    return softFail ? safe(new SkipTask(message)) : safe(new FatalTaskError(message));
  };
  return {
    operator,
    ...rest,
    run: async (ctx) => {
      if (mode === "reschedule") {
        const result = await poke(ctx);
        if (result.met) return result.value;
        throw new RescheduleTask({ delayMs: intervalMs, timeoutMs, softFail });
      }
      const start = Date.now();
      for (let pokes = 1;; pokes++) {
        const result = await poke(ctx);
        if (result.met) return result.value;
        const left = start + timeoutMs - Date.now();
        if (left <= 0) throw timedOut(ctx.taskId, pokes);
        await sleep(Math.min(intervalMs, left), ctx.signal);
        if (ctx.signal.aborted) throw ctx.signal.reason;
      }
    },
  };
}

function durationOf(operator: string, name: string, value: Duration): number {
  const ms = parseDuration(value);
  if (ms === undefined || ms <= 0) {
    throw new TypeError(`${operator}: ${name}: expected a duration such as "30s" or "5m"`);
  }
  return ms;
}
