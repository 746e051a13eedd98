import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { Workspace } from "../../core/dataset.ts";
import { purge } from "../../core/retention.ts";
import { BACKENDS, testStore } from "../test_utils.ts";

for (const backend of BACKENDS) {
  Deno.test(`retention: folders of queued or running runs survive a purge, however old [${backend}]`, async () => {
    const store = await testStore(backend, "retention_live");
    try {
      const old = new Date("2020-01-01T00:00:00Z");
      const make = async (runId: string, state: "running" | "success") => {
        await store.createRun({
          runId,
          dagId: "d",
          logicalDate: new Date(runId.split("@")[1]!),
          intervalStart: new Date(runId.split("@")[1]!),
          intervalEnd: new Date(runId.split("@")[1]!),
          params: {},
          paramsHash: "x",
          runType: "manual",
          state,
        });
        const ws = new Workspace(store.home, runId);
        for (const dir of [ws.runDir, dirname(ws.enclaveDir)]) {
          await Deno.mkdir(join(dir, "t"), { recursive: true });
          await Deno.writeTextFile(join(dir, "t", "f.jsonl"), "{}\n");
          await Deno.utime(dir, old, old);
        }
        return ws;
      };
      const live = await make("d@2026-01-01T00:00:00Z", "running");
      // An orphan folder (its run record is gone) that is old: swept.
      const orphan = new Workspace(store.home, "d@2026-01-02T00:00:00Z");
      await Deno.mkdir(orphan.runDir, { recursive: true });
      await Deno.utime(orphan.runDir, old, old);
      const report = await purge(store, store.home, { olderThan: new Date(), dryRun: false });
      assert.equal(report.files.workspaces, 1);
      assert.ok(
        await Deno.stat(join(live.runDir, "t", "f.jsonl")).then(() => true, () => false),
        "live run folder kept",
      );
      assert.ok(
        await Deno.stat(dirname(live.enclaveDir)).then(() => true, () => false),
        "live enclave scratch kept",
      );
      assert.ok(
        !(await Deno.stat(orphan.runDir).then(() => true, () => false)),
        "orphan folder swept",
      );
    } finally {
      await store.close();
    }
  });
}
