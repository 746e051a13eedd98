/**
 * `deno task demo`: runs the bundled demo pipeline end to end on the embedded store, shows a
 * privacy checkpoint passing and then blocking a leak, and prints what to try next.
 *
 * @module
 */
import { main } from "./main.ts";

const DEMO_KEY = "carrel-demo-key-for-synthetic-data-only-never-production";

if (!Deno.env.get("PII_HMAC_KEY") && !Deno.env.get("CARREL_KEYRING")) {
  Deno.env.set("PII_HMAC_KEY", DEMO_KEY);
  console.log(
    "No PII_HMAC_KEY set: using a demo key for synthetic data (never use it for real data).\n",
  );
}

const date = "2026-01-05T00:00:00Z";
console.log(
  "1. A clean run: patron ids tokenized, names and e-mails stripped, checkpoint passes.\n",
);
const ok = await main(["dags", "run", "patron_privacy_demo", "--date", date]);
console.log(
  "\n2. The same pipeline with an e-mail address leaking into a note: the checkpoint blocks it.\n",
);
const blocked = await main([
  "dags",
  "run",
  "patron_privacy_demo",
  "--date",
  "2026-01-06T00:00:00Z",
  "--param",
  "leak=true",
]);
console.log(`
Demo finished: the clean run ${ok === 0 ? "succeeded" : "FAILED"}, the leaking run was ${
  blocked === 1 ? "blocked" : "NOT blocked"
}.

Try next:
  deno task carrel runs show patron_privacy_demo@2026-01-05T00:00:00Z
  deno task carrel runs show patron_privacy_demo@2026-01-06T00:00:00Z
  deno task carrel dags show patron_privacy_demo --format mermaid
  deno task carrel dags run patron_privacy_demo --date ${date}     (resumes: executes nothing)
  deno task carrel audit verify
`);
Deno.exit(ok === 0 && blocked === 1 ? 0 : 1);
