/**
 * Helpers shared by the SQL operator tests: awaiting an `SqlError`, draining an extract.
 *
 * @module
 */
import assert from "node:assert/strict";
import { SqlError } from "../../../operators/ils/sql.ts";

/** Awaits `promise`, which must reject with an {@linkcode SqlError}; returns the error. */
export async function rejects(promise: Promise<unknown>): Promise<SqlError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof SqlError, `expected SqlError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected a rejection");
}

/** Every item of an async iterable, in order. */
export async function drain<T>(iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of iterable) out.push(item);
  return out;
}
