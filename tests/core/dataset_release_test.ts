import assert from "node:assert/strict";
import { join } from "node:path";
import { Dataset, defineDag, executeRun, resolveDag, task } from "../../core/mod.ts";
import { withTmpDir } from "../test_utils.ts";

Deno.test("executor: an encrypted intermediate dataset is deleted once every reader is final", async () => {
  await using dir = await withTmpDir();
  let seenByC: boolean | undefined;
  const dag = resolveDag(defineDag({
    id: "release",
    tasks: {
      a: task({
        zone: "enclave",
        run: async function* () {
          for (let i = 0; i < 100; i++) yield { i };
        },
      }),
      b: task({
        zone: "enclave",
        after: ["a"],
        run: async (ctx) => {
          const input = ctx.inputs.a as Dataset;
          let n = 0;
          for await (const _ of input) n++;
          return { n, path: join(dir.path, input.ref.$dataset.path) };
        },
      }),
      c: task({
        zone: "enclave",
        after: ["b"],
        run: async (ctx) => {
          const { path } = ctx.inputs.b as { path: string };
          seenByC = await Deno.stat(path).then(() => true, () => false);
          return 1;
        },
      }),
    },
  }));
  const at = new Date("2026-01-01T00:00:00Z");
  const result = await executeRun({
    dag,
    interval: { start: at, end: at },
    params: {},
    home: dir.path,
  });
  assert.equal(result.state, "success");
  assert.equal((result.outputs.get("b") as { n: number }).n, 100);
  assert.equal(
    seenByC,
    false,
    "a's dataset was deleted before c ran, since b (its only reader) was final",
  );
});
