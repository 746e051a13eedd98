/**
 * A self-contained demo of Carrel's privacy boundary: synthetic checkouts with fake patron data
 * are made in the enclave, patron ids are tokenized, a schema gate strips names and e-mails, a
 * privacy checkpoint verifies what leaves, and a shared task writes the result.
 *
 * `--param leak=true` lets an e-mail address slip into a free-text note: the checkpoint then blocks
 * the run and the load never happens.
 */
import { z } from "zod";
import { defineDag, task } from "carrel";
import { privacyCheckpoint, schemaGate, tokenize } from "carrel/operators";

const Checkout = z.object({
  patron_token: z.string().length(64),
  item_id: z.string(),
  branch: z.string(),
  checked_out: z.string(),
  due: z.string(),
  note: z.string().optional(),
});

export default defineDag({
  id: "patron_privacy_demo",
  description: "Synthetic checkouts through tokenization, a schema gate and a privacy checkpoint",
  schedule: null,
  params: { records: 500, leak: false },
  defaults: { retries: 1, retryDelay: "1s", timeout: "2m" },
  // Every task runs in a Worker with only what it declares below.
  sandbox: "strict",
  tasks: {
    extract: task({
      zone: "enclave",
      outputTags: ["pii:raw"],
      run: (ctx) => {
        const n = Number(ctx.params.records);
        const day = ctx.logicalDate.toISOString().slice(0, 10);
        return Array.from({ length: n }, (_, i) => ({
          patron_id: `P${String(100000 + (i * 7919) % 90000)}`,
          first_name: "Demo",
          family_name: `Patron${i % 97}`,
          email: `demo.patron${i % 97}@example.org`,
          item_id: `i${(i * 31) % 5000}`,
          branch: ["central", "east", "west"][i % 3]!,
          checked_out: day,
          due: day,
          ...(ctx.params.leak && i === 7 ? { note: `call back at demo.patron7@example.org` } : {}),
        }));
      },
    }),
    tokens: tokenize({
      after: ["extract"],
      fields: ["patron_id"],
      rename: { patron_id: "patron_token" },
    }),
    gate: schemaGate({ after: ["tokens"], schema: Checkout }),
    checkpoint: privacyCheckpoint({ after: ["gate"], tokenized: ["patron_token"] }),
    load: task({
      after: ["checkpoint"],
      run: async (ctx) => {
        const rows = ctx.inputs.checkpoint as Record<string, unknown>[];
        const out = await ctx.dataset("checkouts");
        await out.writeAll(rows);
        const dataset = await out.close();
        ctx.log.info("Wrote {count} checkouts", { count: dataset.records });
        return { checkouts: dataset.records, file: dataset.ref.$dataset.path };
      },
    }),
  },
});
