/**
 * Run progress for people: one line per task start and end (state and duration), and a live
 * status line when the output is a terminal.
 *
 * @module
 */
import { formatDuration } from "../core/duration.ts";
import type { ExecutorEvent } from "../core/run/events.ts";
import { isQuarantineCount } from "../core/attempts.ts";

const encoder = new TextEncoder();

/**
 * `, 3 quarantined` when the event carries the task's counts (operation -> records) and some
 * are `*:quarantined`; empty otherwise.
 */
export function quarantinedOf(event: ExecutorEvent): string {
  const counts = (event as { counts?: Record<string, number> }).counts;
  if (!counts) return "";
  const n = Object.entries(counts).filter(([op]) => isQuarantineCount(op))
    .reduce((sum, [, v]) => sum + (Number(v) || 0), 0);
  return n > 0 ? `, ${n} quarantined` : "";
}

/** Writes progress lines for executor events to `out` (stdout, or stderr with `--json`). */
export class Progress {
  #running = new Map<string, number>();
  #done = 0;
  #total = 0;
  #started = performance.now();
  #timer: ReturnType<typeof setInterval> | undefined;
  #live: boolean;

  constructor(
    readonly out: { writeSync(p: Uint8Array): number; isTerminal(): boolean } = Deno.stdout,
  ) {
    this.#live = out.isTerminal();
  }

  #write(text: string) {
    this.out.writeSync(encoder.encode(text));
  }

  #line(text: string) {
    this.#write(this.#live ? `\r\x1b[2K${text}\n` : `${text}\n`);
    this.#status();
  }

  #status() {
    if (!this.#live || this.#total === 0) return;
    const names = [...this.#running.keys()];
    const shown = names.slice(0, 3).join(", ") + (names.length > 3 ? `, +${names.length - 3}` : "");
    this.#write(
      `\r\x1b[2K  ${this.#done}/${this.#total} done, ${names.length} running${
        names.length ? `: ${shown}` : ""
      }  ${formatDuration(performance.now() - this.#started)}`,
    );
  }

  /** Handles one executor event. */
  event = (e: ExecutorEvent): void => {
    const pad = (id: string) => id.padEnd(12);
    switch (e.type) {
      case "run:start":
        this.#total = e.tasks;
        this.#done = e.alreadyDone;
        this.#line(
          `${e.resumed ? "Resuming" : "Running"} ${e.runId} (${e.tasks} tasks${
            e.alreadyDone ? `, ${e.alreadyDone} done before` : ""
          })`,
        );
        if (this.#live) this.#timer = setInterval(() => this.#status(), 250);
        break;
      case "task:done_before":
        this.#line(`  = ${pad(e.taskId)} success (done before, not executed)`);
        break;
      case "task:start":
        this.#running.set(e.taskId, performance.now());
        this.#line(
          `  > ${pad(e.taskId)} started${
            e.maxAttempts > 1 ? ` (attempt ${e.attempt} of ${e.maxAttempts})` : ""
          }`,
        );
        break;
      case "task:success":
        this.#running.delete(e.taskId);
        this.#done++;
        this.#line(
          `  + ${pad(e.taskId)} success   ${formatDuration(e.durationMs)}${
            e.records === undefined ? "" : `  ${e.records} records`
          }${quarantinedOf(e)}`,
        );
        break;
      case "task:retry":
        this.#running.delete(e.taskId);
        this.#line(`  ~ ${pad(e.taskId)} up_for_retry in ${formatDuration(e.delayMs)}: ${e.error}`);
        break;
      case "task:failed":
        this.#running.delete(e.taskId);
        this.#done++;
        this.#line(
          `  x ${pad(e.taskId)} failed    ${formatDuration(e.durationMs)}${
            quarantinedOf(e)
          }: ${e.error}`,
        );
        break;
      case "task:reschedule":
        this.#running.delete(e.taskId);
        this.#line(
          `  ~ ${pad(e.taskId)} up_for_reschedule: check ${e.poke} found nothing, next in ${
            formatDuration(e.delayMs)
          }`,
        );
        break;
      case "task:skipped":
        this.#running.delete(e.taskId);
        this.#done++;
        this.#line(`  - ${pad(e.taskId)} skipped   ${e.reason}`);
        break;
      case "task:upstream_failed":
        this.#done++;
        this.#line(`  x ${pad(e.taskId)} upstream_failed`);
        break;
      case "run:end":
        if (this.#timer !== undefined) clearInterval(this.#timer);
        this.#line(`Run ${e.runId}: ${e.state} in ${formatDuration(e.durationMs)}`);
        if (this.#live) this.#write("\r\x1b[2K");
        break;
    }
  };

  /** Stops the live line. */
  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
  }
}
