/**
 * The console in a real browser: headless Chromium (Debian's `chromium`, driven by
 * puppeteer-core) logs in with a token, opens the DAG list, clicks into the grid and a cell,
 * reads an attempt's log, finds the SVG graph with its zone colours, sees an action refused
 * without its CSRF token and another one done with it, and saves screenshots. Every page's text
 * and every network response is checked for raw patron values (sentinels).
 *
 * Skipped, with a message, when no Chromium binary is installed (`.ci/run` installs it).
 * `deno task screenshots` writes the screenshots to `docs/screenshots/`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { serveConsole } from "../../ui/server.ts";
import { assertNoSentinel, consoleWorld } from "./helpers.ts";

const CANDIDATES = [
  Deno.env.get("CARREL_CHROMIUM"),
  "/usr/bin/chromium",
  "/usr/bin/chromium-browser",
  "/usr/bin/google-chrome",
];
const CHROMIUM = CANDIDATES.find((p) => {
  if (!p) return false;
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
});
if (!CHROMIUM) {
  console.log(
    "Browser tests skipped: no Chromium binary (apt-get install chromium, or set CARREL_CHROMIUM)",
  );
}

const TOKEN = "browser-test-token-0123456789abcdef";

Deno.test({
  name: "console in Chromium: login, DAGs, grid, attempt log, graph, CSRF, screenshots [pglite]",
  ignore: !CHROMIUM,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using w = await consoleWorld("pglite", "console_browser");
    await using store = await w.openStore();
    const stop = new AbortController();
    const server = serveConsole({
      store,
      home: w.home,
      dagsDir: w.dags,
      auth: { token: TOKEN },
      host: "127.0.0.1",
      port: 0,
      signal: stop.signal,
      dagsTtlMs: 0,
    });
    const base = `http://127.0.0.1:${server.addr.port}`;
    const shots = Deno.env.get("CARREL_SCREENSHOTS_DIR") ?? join(w.dir, "screenshots");
    await Deno.mkdir(shots, { recursive: true });
    const profile = await Deno.makeTempDir({ prefix: "carrel-chromium-" });
    let browser: Browser | undefined;
    try {
      browser = await puppeteer.launch({
        executablePath: CHROMIUM!,
        headless: true,
        userDataDir: profile,
        args: [
          "--no-sandbox",
          "--disable-gpu",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
          "--no-first-run",
        ],
      });
      const page = await browser.newPage();
      await page.setViewport({ width: 1280, height: 860 });
      const bodies: Promise<{ url: string; text: string }>[] = [];
      page.on("response", (res) => {
        bodies.push(
          res.buffer().then(
            (b) => ({ url: res.url(), text: new TextDecoder().decode(b) }),
            () => ({ url: res.url(), text: "" }),
          ),
        );
      });
      const problems: string[] = [];
      page.on("console", (m) => {
        if (m.type() === "error") problems.push(m.text());
      });
      page.on("pageerror", (e) => problems.push(String(e)));
      const texts: { url: string; text: string }[] = [];
      const visit = async (p: Page) => {
        texts.push({ url: p.url(), text: String(await p.evaluate("document.body.innerText")) });
        texts.push({ url: p.url(), text: await p.content() });
      };
      const go = async (path: string) => {
        const res = await page.goto(base + path, { waitUntil: "load" });
        await visit(page);
        return res;
      };
      const click = async (selector: string) => {
        const [res] = await Promise.all([
          page.waitForNavigation({ waitUntil: "load" }),
          page.click(selector),
        ]);
        await visit(page);
        return res;
      };
      const shot = async (name: string) => {
        const file = join(shots, `${name}.png`);
        await page.screenshot({ path: file as `${string}.png`, fullPage: true });
        assert.ok((await Deno.stat(file)).size > 5_000, `screenshot ${name} has content`);
      };

      // Not logged in: the login page, then in with the token.
      await go("/");
      assert.equal(new URL(page.url()).pathname, "/login");
      await page.type("input[name=token]", TOKEN);
      await click("form.login button[type=submit]");
      assert.equal(new URL(page.url()).pathname, "/");

      // The DAG list, failing DAGs first.
      const dags = await page.$$eval(
        "#dags tr.dag",
        (rows) => rows.map((r) => r.getAttribute("data-dag")),
      );
      assert.deepEqual(dags, ["flaky", "shelf"]);
      assert.ok(await page.$("#dags tr.dag.failing[data-dag=flaky]"));
      assert.match(
        await page.$eval("#dags tr[data-dag=shelf] .schedule", (e) => e.textContent ?? ""),
        /every day at 02:00/,
      );
      await shot("dags");

      // Into the grid: 2 runs x 5 tasks, coloured by state.
      await click('#dags a[href="/dags/shelf"]');
      const cells = await page.$$eval("#grid td.cell", (tds) => tds.map((td) => td.className));
      assert.equal(cells.length, 10);
      assert.ok(cells.every((c) => c === "cell state-success"), cells.join(", "));
      await shot("grid");

      // A cell: the gate's latest attempt with its log and quarantined count.
      const newest = w.shelfRuns[1]!;
      await click(`#grid a[href="/runs/${encodeURIComponent(newest)}/tasks/gate"]`);
      assert.equal(
        decodeURIComponent(new URL(page.url()).pathname),
        `/runs/${newest}/tasks/gate`,
      );
      const logText = await page.$eval(
        "#log",
        (t) => (t as unknown as { innerText: string }).innerText,
      );
      assert.match(logText, /Task gate started/);
      assert.match(logText, /Quarantined 1 records/);
      assert.match(await page.$eval("dd.quarantined", (e) => e.textContent ?? ""), /^1/);

      // The run: a Gantt chart and the quarantined count with its reason.
      await click(`h1 a[href^="/runs/"]`);
      assert.ok(await page.$("#gantt rect.attempt.state-success"));
      const q = await page.$eval(
        "#tasks tr[data-task=gate] td.quarantined",
        (e) => e.textContent ?? "",
      );
      assert.match(q, /^1\s*item_id: /);
      await shot("run");

      // The failed DAG's first attempt, from the attempt list.
      await go(`/runs/${encodeURIComponent(w.flakyRun)}/tasks/fetch`);
      await click("nav.attempts a:first-child");
      assert.match(
        await page.$eval("#log", (t) => (t as unknown as { innerText: string }).innerText),
        /fetch attempt 1 fails/,
      );

      // The graph: SVG drawn on the server, zones and the checkpoint in their colours.
      await go(`/dags/shelf/graph?run=${encodeURIComponent(newest)}`);
      const enclaveFill = await page.$eval(
        "#graph svg g.cluster.zone-enclave > path, #graph svg g.cluster.zone-enclave > polygon",
        (e) => e.getAttribute("fill"),
      );
      assert.equal(enclaveFill, "#fde2e2");
      const sharedFill = await page.$eval(
        "#graph svg g.cluster.zone-shared > path, #graph svg g.cluster.zone-shared > polygon",
        (e) => e.getAttribute("fill"),
      );
      assert.equal(sharedFill, "#e0f2fe");
      const checkpointStroke = await page.$eval(
        "#graph svg g.node.zone-checkpoint path, #graph svg g.node.zone-checkpoint polygon",
        (e) => e.getAttribute("stroke"),
      );
      assert.equal(checkpointStroke, "#b45309");
      assert.ok(await page.$("#graph svg g.node.task.state-success"));
      await shot("graph");

      // Charts, audit (chain intact), compliance.
      await go("/dags/shelf/charts");
      assert.equal((await page.$$("#chart-duration rect.bar")).length, 2);
      await go("/audit");
      assert.match(await page.$eval("#chain-status", (e) => e.textContent ?? ""), /Chain intact/);
      await go("/compliance");
      assert.ok((await page.$$("#compliance tbody tr")).length >= 5);

      // An action without its CSRF token is refused and changes nothing.
      await go("/dags/shelf");
      await page.$eval("form.pause input[name=csrf]", (e) => e.remove());
      const refused = await click("form.pause button[type=submit]");
      assert.equal(refused?.status(), 403);
      assert.match(
        await page.$eval("#error", (e) => e.textContent ?? ""),
        /missing or invalid CSRF token/,
      );
      assert.notEqual((await store.pausedDags()).get("shelf"), true);
      await shot("csrf-refused");

      // With it, the action is done and audited with who did it.
      await go("/dags/shelf");
      await click("form.pause button[type=submit]");
      assert.match(await page.$eval(".flash", (e) => e.textContent ?? ""), /DAG shelf paused/);
      assert.equal((await store.pausedDags()).get("shelf"), true);
      const trail = await Array.fromAsync(store.iterateAudit({ correlationId: "dag:shelf" }));
      assert.equal(trail.at(-1)?.detail?.by, "ui:token");

      // The script ran under the strict policy without complaint.
      assert.deepEqual(problems.filter((p) => !/status of 403/.test(p)), []);

      // No raw patron value in any page text or network response.
      for (const t of texts) assertNoSentinel(t.text, `the page ${t.url}`);
      const responses = await Promise.all(bodies);
      assert.ok(responses.length > 20, `${responses.length} responses seen`);
      for (const r of responses) assertNoSentinel(r.text, `the response of ${r.url}`);
      assert.ok(responses.some((r) => r.url.endsWith("/assets/console.js")));
      assert.ok(responses.every((r) => r.url.startsWith(base)), "nothing from another host");
    } finally {
      await browser?.close();
      stop.abort();
      await server.finished;
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    }
  },
});
