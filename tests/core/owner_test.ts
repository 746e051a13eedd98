/**
 * Owners: a process on this host that has exited but not been collected (a zombie) counts as
 * dead, and a run it owned is taken over.
 */
import assert from "node:assert/strict";
import { defineDag, resolveDag, task } from "../../core/dag.ts";
import { ownerId, ownerIsDead } from "../../core/owner.ts";
import { executeRun } from "../../core/run/local.ts";
import { notePostgresSkipped, testStore, waitFor } from "../test_utils.ts";

notePostgresSkipped();

/** A zombie: a child of `sleep` that exited and is never waited for. Its pid and its parent. */
async function zombie(): Promise<{ pid: number; parent: Deno.ChildProcess }> {
  const parent = new Deno.Command("sh", {
    args: ["-c", "sleep 0.2 & echo $!; exec sleep 60"],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = parent.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  reader.releaseLock();
  const pid = Number(text.trim());
  assert.ok(pid > 0, `no pid in ${JSON.stringify(text)}`);
  await waitFor(
    () => {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z";
    },
    10_000,
    "the child to become a zombie",
  );
  return { pid, parent };
}

Deno.test("owner: a zombie process counts as dead; live and other-host owners do not", async () => {
  const { pid, parent } = await zombie();
  try {
    const host = Deno.hostname();
    assert.equal(ownerIsDead(`${host}:${pid}:x`), true, "a zombie is dead");
    assert.equal(ownerIsDead(`${host}:${parent.pid}:x`), false, "its live parent is not");
    assert.equal(ownerIsDead(`${host}:999999:x`), true, "a pid that does not exist");
    assert.equal(ownerIsDead(`elsewhere.example:${pid}:x`), false, "another host: by its lease");
    assert.equal(ownerIsDead(ownerId()), false);
  } finally {
    parent.kill("SIGKILL");
    await parent.status;
  }
});

Deno.test({
  name: "owner: a run owned by a zombie process is taken over [pglite]",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const { pid, parent } = await zombie();
    await using store = await testStore("pglite", "zombie");
    try {
      const dag = resolveDag(defineDag({ id: "z", tasks: { a: task({ run: () => 1 }) } }));
      const interval = {
        start: new Date("2026-02-01T00:00:00Z"),
        end: new Date("2026-02-02T00:00:00Z"),
      };
      const first = await executeRun({ dag, interval, params: {}, store, home: store.home });
      const owner = `${Deno.hostname()}:${pid}:zombie`;
      await store.updateRun(first.runId, {
        state: "running",
        owner,
        leaseUntil: new Date(Date.now() + 3_600_000),
      });
      const again = await executeRun({ dag, interval, params: {}, store, home: store.home });
      assert.equal(again.state, "success");
      const reasons = [];
      for await (const e of store.iterateAudit({ correlationId: first.runId })) {
        if (e.operation === "run:takeover") reasons.push(e.detail?.reason);
      }
      assert.deepEqual(reasons, ["owner process gone"]);
    } finally {
      parent.kill("SIGKILL");
      await parent.status;
    }
  },
});
