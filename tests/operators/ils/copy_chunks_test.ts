/**
 * `CopyChunks`: a load's rows are encoded ahead of the database, up to `aheadBytes` of text not
 * yet written, chunks are written one at a time and in order, and a failed write stops the
 * encoder and is what the load throws.
 *
 * @module
 */
import assert from "node:assert/strict";
import { CopyChunks } from "../../../operators/ils/sql_copy.ts";
import { SourceFailure } from "../../../operators/ils/sql_common.ts";

/** `n` rows of one column, counting how many the encoder has pulled. */
function counted(n: number): { rows: Iterable<Record<string, unknown>>; pulled: () => number } {
  let pulled = 0;
  function* rows() {
    for (let i = 1; i <= n; i++) {
      pulled++;
      yield { v: `row-${String(i).padStart(4, "0")}` };
    }
  }
  return { rows: rows(), pulled: () => pulled };
}

/**
 * Resolves once the work already queued as microtasks has run: the next macrotask, by
 * `setImmediate` (no timer: the encoder below waits on nothing but microtasks).
 */
function microtasksDone(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** A promise and its resolver. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => resolve = r);
  return { promise, resolve };
}

Deno.test("CopyChunks encodes ahead of a slow writer, up to aheadBytes, and writes in order", async () => {
  // Each line is "row-0001\n" (9 bytes): chunks of 4 rows (36 bytes), 3 chunks ahead at most.
  const input = counted(100);
  const chunks = new CopyChunks("Cannot load", ["v"], 36, 108);
  const written: { first: number; count: number; text: string }[] = [];
  const firstWrite = deferred();
  const started = deferred();
  let writing = 0;
  let most = 0;
  const run = chunks.run(input.rows, async (text, first, count) => {
    writing++;
    most = Math.max(most, writing);
    if (written.length === 0) {
      started.resolve();
      await firstWrite.promise;
    }
    written.push({ first, count, text });
    writing--;
  });
  await started.promise;
  // The rows come from a plain generator, so the encoder moves on in microtasks only: once a
  // macrotask runs, it has gone as far as it may while the first chunk is being written.
  await microtasksDone();
  const ahead = input.pulled();
  assert.ok(ahead > 4, `the encoder waited for the first write (pulled ${ahead} rows)`);
  assert.ok(ahead < 100, `the encoder read everything while nothing was written (${ahead})`);
  // The first chunk plus at most 108 bytes (3 chunks) behind it, plus the one being encoded.
  assert.ok(ahead <= 4 * 5, `encoded more than aheadBytes ahead (${ahead} rows)`);
  firstWrite.resolve();
  await run;
  assert.equal(most, 1, "two chunks were written at once");
  assert.equal(chunks.position, 100);
  assert.equal(written.reduce((n, c) => n + c.count, 0), 100);
  let next = 1;
  for (const c of written) {
    assert.equal(c.first, next);
    assert.equal(c.text.split("\n").length - 1, c.count);
    assert.equal(c.text.slice(0, 8), `row-${String(next).padStart(4, "0")}`);
    next += c.count;
  }
});

Deno.test("CopyChunks stops encoding at a failed write and throws its error", async () => {
  // Room ahead for every row: only the failure can stop the encoder early.
  const input = counted(1_000);
  const chunks = new CopyChunks("Cannot load", ["v"], 36, 1 << 20);
  let calls = 0;
  await assert.rejects(
    chunks.run(input.rows, async (_text, first) => {
      calls++;
      await Promise.resolve();
      if (first > 8) throw new Error("chunk refused");
    }),
    /chunk refused/,
  );
  assert.equal(calls, 3, "a chunk was written after one failed");
  assert.ok(input.pulled() < 1_000, "the encoder read every row after the failure");
});

Deno.test("CopyChunks drops the chunks waiting when its input fails, after the one in flight", async () => {
  function* failing() {
    for (let i = 1; i <= 40; i++) yield { v: `row-${String(i).padStart(4, "0")}` };
    throw new Error("the source broke");
  }
  const chunks = new CopyChunks("Cannot load", ["v"], 36, 1 << 20);
  const firstWrite = deferred();
  const started = deferred();
  const written: number[] = [];
  const run = chunks.run(failing(), async (_text, first) => {
    if (first === 1) {
      started.resolve();
      await firstWrite.promise;
    }
    written.push(first);
  });
  run.catch(() => {});
  await started.promise;
  // Plain generator: by the next macrotask the encoder has reached the failure.
  await microtasksDone();
  firstWrite.resolve();
  // The input's own error, passed on as the loaders pass it (unwrapped by them).
  await assert.rejects(
    run,
    (e) => e instanceof SourceFailure && /the source broke/.test(String(e.error)),
  );
  assert.deepEqual(written, [1], "chunks queued behind the failure were written");
});
