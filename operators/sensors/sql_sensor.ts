/**
 * `sqlSensor`: waits until a query through a named connection (`CARREL_CONN_<NAME>`, the same
 * layer as `sqlExtract`) returns a row whose first column is truthy (Airflow's `SqlSensor`), for
 * example "tonight's ILS export has finished".
 *
 * @module
 */
import type { TaskContext, TaskSpec } from "../../core/dag.ts";
import { type Duration } from "../../core/duration.ts";
import { sqlExtract, type SqlSource } from "../ils/sql.ts";
import { type PokeResult, sensor, type SensorOptions } from "./sensor.ts";

/** Options of {@link sqlSensor}. */
export interface SqlSensorOptions extends SensorOptions {
  /** A connection name (`"ils"` reads `CARREL_CONN_ILS`), a URL, or a client. */
  connection: SqlSource;
  /** A read query in the source's dialect; only its first row's first column is looked at. */
  query: string;
  /** Query parameters, or a function of the task's context (the logical date, say). */
  params?: readonly unknown[] | ((ctx: TaskContext) => readonly unknown[]);
  /** The time limit of each check's statement. Default `"30s"`. */
  statementTimeout?: Duration;
}

/** Airflow's truthiness of a first cell: not null, false, 0, "" or "0"/"false" text. */
function truthy(value: unknown): boolean {
  if (value === null || value === undefined || value === false) return false;
  if (typeof value === "number" || typeof value === "bigint") return Number(value) !== 0;
  if (typeof value === "string") {
    const v = value.trim().toLowerCase();
    return v !== "" && v !== "0" && v !== "false" && v !== "f";
  }
  return true;
}

/**
 * Waits for a query to return a truthy first cell. Outputs `true` (never the row: it may hold
 * patron data).
 *
 * @example
 * ```ts
 * import { sqlSensor } from "./sql_sensor.ts";
 * const exported = sqlSensor({
 *   connection: "ils",
 *   query: "SELECT count(*) FROM export_log WHERE day = $1 AND done",
 *   params: (ctx) => [ctx.logicalDate.toISOString().slice(0, 10)],
 *   mode: "reschedule",
 *   pokeInterval: "10m",
 *   timeout: "4h",
 * });
 * ```
 */
export function sqlSensor(options: SqlSensorOptions): TaskSpec {
  const { connection, query, params = [], statementTimeout = "30s", ...rest } = options;
  if (typeof query !== "string" || query.trim() === "") {
    throw new TypeError("sqlSensor: query: expected a read query");
  }
  return sensor("sqlSensor", rest, async (ctx): Promise<PokeResult> => {
    const values = typeof params === "function" ? params(ctx) : params;
    for await (
      const row of sqlExtract(connection, query, values, {
        statementTimeout,
        signal: ctx.signal,
        batchSize: 1,
      })
    ) {
      const first = Object.values(row)[0];
      // Stop at the first row: the generator's cleanup closes the cursor or the connection.
      return truthy(first) ? { met: true, value: true } : { met: false };
    }
    return { met: false };
  });
}
