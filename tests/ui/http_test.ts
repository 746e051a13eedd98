/**
 * HTTP tests of the console: every JSON API route and page with its shape, authentication
 * (token, users file with roles, bearer), sessions, CSRF, the Host check, the bind rule, the
 * strict Content-Security-Policy, actions audited with who did them, `/metrics`, and no raw
 * patron value in any response.
 *
 * @module
 */
import { CARREL_VERSION } from "../../core/version.ts";
import assert from "node:assert/strict";
import { join } from "node:path";
import { BACKENDS, notePostgresSkipped } from "../test_utils.ts";
import { assertExit } from "../e2e/helpers.ts";
import { hashPassword, verifyPassword } from "../../ui/auth.ts";
import { assertBindAllowed, CONTENT_SECURITY_POLICY } from "../../ui/server.ts";
import { authFromOptions } from "../../cli/ui.ts";
import {
  assertNoSentinel,
  consoleOf,
  type ConsoleWorld,
  consoleWorld,
  csrfOf,
  sessionCookie,
} from "./helpers.ts";

notePostgresSkipped();

const BASE = "http://127.0.0.1:8080";
const TOKEN = "a-console-token-for-tests-0123456789";
const enc = encodeURIComponent;

type App = ReturnType<typeof consoleOf>["app"];

async function get(app: App, path: string, headers: Record<string, string> = {}) {
  return await app.request(BASE + path, { headers: { host: "127.0.0.1:8080", ...headers } });
}

async function post(
  app: App,
  path: string,
  body: Record<string, string> | string,
  headers: Record<string, string> = {},
) {
  const json = typeof body === "string";
  return await app.request(BASE + path, {
    method: "POST",
    headers: {
      host: "127.0.0.1:8080",
      "content-type": json ? "application/json" : "application/x-www-form-urlencoded",
      ...headers,
    },
    body: json ? body : new URLSearchParams(body).toString(),
  });
}

/** Every page and API route for the world, by path. */
function routes(w: ConsoleWorld): { pages: string[]; api: string[] } {
  const run = w.shelfRuns[1]!;
  return {
    pages: [
      "/",
      "/dags/shelf",
      "/dags/shelf/graph",
      `/dags/shelf/graph?run=${enc(run)}`,
      "/dags/shelf/charts",
      "/runs",
      "/runs?dag=shelf&state=success",
      `/runs/${enc(run)}`,
      `/runs/${enc(w.flakyRun)}`,
      ...["extract", "tokens", "gate", "checkpoint", "load"].map((t) =>
        `/runs/${enc(run)}/tasks/${t}`
      ),
      `/runs/${enc(w.flakyRun)}/tasks/fetch?attempt=1`,
      "/audit",
      `/audit?correlation=${enc(run)}`,
      "/compliance",
    ],
    api: [
      "/api/v1/me",
      "/api/v1/dags",
      "/api/v1/dags/shelf",
      `/api/v1/dags/shelf/graph.svg?run=${enc(run)}`,
      "/api/v1/dags/shelf/grid",
      "/api/v1/dags/shelf/charts",
      "/api/v1/runs",
      `/api/v1/runs/${enc(run)}`,
      ...["extract", "tokens", "gate", "checkpoint", "load"].flatMap((t) => [
        `/api/v1/runs/${enc(run)}/tasks/${t}/attempts`,
        `/api/v1/runs/${enc(run)}/tasks/${t}/logs`,
      ]),
      `/api/v1/runs/${enc(w.flakyRun)}/tasks/fetch/logs?attempt=1`,
      "/api/v1/audit",
      `/api/v1/audit?run=${enc(run)}`,
      "/api/v1/audit/verify",
      "/api/v1/audit/export",
      "/api/v1/compliance",
      "/metrics",
    ],
  };
}

for (const backend of BACKENDS) {
  Deno.test({
    name:
      `console HTTP: API routes, pages, auth, CSRF, actions, metrics, no patron values [${backend}]`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      await using w = await consoleWorld(backend, "console_http");
      await using store = await w.openStore();
      const open = consoleOf(w, store);
      const app = open.app;
      const run = w.shelfRuns[1]!;

      await t.step("API routes answer with their shapes", async () => {
        const dags = await (await get(app, "/api/v1/dags")).json();
        assert.deepEqual(dags.dags.map((d: { id: string }) => d.id), ["flaky", "shelf"]);
        const flaky = dags.dags[0], shelf = dags.dags[1];
        assert.equal(flaky.failing, true, "failing DAGs come first");
        assert.equal(shelf.scheduleText, "every day at 02:00");
        assert.equal(shelf.schedule, "0 2 * * *");
        assert.equal(shelf.paused, false);
        assert.match(shelf.nextRun, /T02:00:00\.000Z$/);
        assert.equal(shelf.recentRuns.length, 2);
        assert.match(shelf.version, /^[0-9a-f]{12}$/);

        const grid = await (await get(app, "/api/v1/dags/shelf/grid?limit=1")).json();
        assert.deepEqual(grid.tasks.map((x: { id: string }) => x.id), [
          "extract",
          "tokens",
          "gate",
          "checkpoint",
          "load",
        ]);
        assert.deepEqual(grid.tasks.map((x: { zone: string }) => x.zone), [
          "enclave",
          "enclave",
          "enclave",
          "enclave",
          "shared",
        ]);
        assert.equal(grid.runs.length, 1);
        assert.equal(grid.runs[0].runId, run, "the newest run first");
        assert.equal(grid.cells[run].gate.state, "success");
        assert.ok(grid.next, "an older page exists");
        const older = await (await get(app, `/api/v1/dags/shelf/grid?limit=1&before=${grid.next}`))
          .json();
        assert.equal(older.runs[0].runId, w.shelfRuns[0]);
        assert.equal(older.next, null);

        const detail = await (await get(app, `/api/v1/runs/${enc(run)}`)).json();
        assert.equal(detail.state, "success");
        assert.equal(detail.params.branch, "main");
        assert.match(detail.dagVersion, /^[0-9a-f]{12}$/);
        assert.equal(detail.dagVersion, detail.currentDagVersion);
        assert.equal(detail.carrelVersion, CARREL_VERSION);
        const byTask = Object.fromEntries(
          detail.tasks.map((x: { taskId: string }) => [x.taskId, x]),
        );
        assert.equal(byTask.gate.quarantined, 1);
        assert.equal(byTask.gate.records, 29);
        assert.deepEqual(Object.values(byTask.gate.quarantineReasons), [1]);
        assert.equal(byTask.checkpoint.checkpointVerdict.passed, true);
        assert.equal(byTask.checkpoint.checkpointVerdict.records, 29);
        assert.equal(byTask.extract.attempts.length, 1);
        assert.equal(byTask.extract.attempts[0].state, "success");

        const flakyDetail = await (await get(app, `/api/v1/runs/${enc(w.flakyRun)}`)).json();
        const fetch = flakyDetail.tasks.find((x: { taskId: string }) => x.taskId === "fetch");
        assert.deepEqual(fetch.attempts.map((a: { state: string }) => a.state), [
          "up_for_retry",
          "failed",
        ]);
        assert.equal(fetch.error, "source unavailable");

        const logs1 = await (await get(
          app,
          `/api/v1/runs/${enc(w.flakyRun)}/tasks/fetch/logs?attempt=1`,
        )).json();
        const text1 = logs1.lines.map((l: { message: string }) => l.message).join("\n");
        assert.match(text1, /fetch attempt 1 fails/);
        assert.doesNotMatch(text1, /fetch attempt 2/);
        const paged = await (await get(
          app,
          `/api/v1/runs/${enc(w.flakyRun)}/tasks/fetch/logs?attempt=2&limit=1`,
        )).json();
        assert.equal(paged.lines.length, 1);
        assert.ok(paged.next !== null);
        const rest = await (await get(
          app,
          `/api/v1/runs/${enc(w.flakyRun)}/tasks/fetch/logs?attempt=2&after=${paged.next}`,
        )).json();
        assert.ok(rest.lines.length >= 1);
        assert.ok(rest.lines.every((l: { id: number }) => l.id > paged.next));

        // The extract logged raw values under PII names: redacted before they were stored.
        const extractLogs = await (await get(app, `/api/v1/runs/${enc(run)}/tasks/extract/logs`))
          .json();
        assert.ok(
          extractLogs.lines.some((l: { message: string }) =>
            l.message === "patron [REDACTED] mail [REDACTED]"
          ),
          JSON.stringify(extractLogs.lines),
        );

        const audit = await (await get(app, `/api/v1/audit?run=${enc(run)}&limit=5`)).json();
        assert.equal(audit.entries.length, 5);
        assert.ok(audit.entries.every((e: { correlation_id: string }) => e.correlation_id === run));
        assert.ok(audit.entries[0].seq > audit.entries[4].seq, "newest first");
        const verify = await (await get(app, "/api/v1/audit/verify")).json();
        assert.equal(verify.ok, true);
        const exported = await (await get(app, `/api/v1/audit/export?run=${enc(run)}`)).text();
        const lines = exported.trim().split("\n").map((l) => JSON.parse(l));
        assert.ok(lines.length > 10);
        assert.ok(lines.every((l) => l.correlation_id === run && l.compliance_boundary));
        const compliance = await (await get(app, "/api/v1/compliance")).json();
        assert.ok(compliance.items.some((i: { id: string }) => i.id === "audit.chain"));
        assert.equal(
          compliance.items.find((i: { id: string }) => i.id === "audit.chain").status,
          "pass",
        );
        const charts = await (await get(app, "/api/v1/dags/shelf/charts")).json();
        assert.equal(charts.points.length, 2);
        assert.ok(charts.points.every((p: { records: number }) => p.records === 29));
        const svg = await get(app, `/api/v1/dags/shelf/graph.svg?run=${enc(run)}`);
        assert.match(svg.headers.get("content-type")!, /image\/svg\+xml/);
        // Graphviz writes "-" in attributes as "&#45;"; a browser reads them as "-".
        const svgText = (await svg.text()).replaceAll("&#45;", "-");
        assert.match(svgText, /class="cluster zone zone-enclave"/);
        assert.match(svgText, /fill="#fde2e2"/);
        assert.match(svgText, /class="node task zone-checkpoint state-success"/);

        for (
          const [path, status] of [
            ["/api/v1/dags/nope", 404],
            [`/api/v1/runs/${enc("shelf@1999-01-01T00:00:00Z")}`, 404],
            [`/api/v1/runs/${enc(run)}/tasks/nope/logs`, 404],
            [`/api/v1/runs/${enc(run)}/tasks/extract/logs?attempt=7`, 404],
            ["/api/v1/runs?limit=zero", 400],
            ["/api/v1/runs?state=done", 400],
            ["/api/v1/runs?before=%21%21", 400],
            ["/api/v1/nope", 404],
          ] as const
        ) {
          const res = await get(app, path);
          assert.equal(res.status, status, path);
          const body = await res.json();
          assert.equal(typeof body.error, "string", path);
          assert.doesNotMatch(body.error, /\n\s+at /, "no stack trace");
        }
      });

      await t.step("pages render, with a strict CSP and only local assets", async () => {
        for (const path of routes(w).pages) {
          const res = await get(app, path);
          assert.equal(res.status, 200, path);
          assert.equal(res.headers.get("content-security-policy"), CONTENT_SECURITY_POLICY);
          assert.equal(res.headers.get("x-frame-options"), "DENY");
          const page = await res.text();
          assert.doesNotMatch(
            page,
            /<script(?![^>]*\ssrc="\/assets\/)[^>]*>/,
            `inline script: ${path}`,
          );
          assert.doesNotMatch(page, /\sstyle="/, `inline style: ${path}`);
          assert.doesNotMatch(page, /\son[a-z]+="/, `inline handler: ${path}`);
          assert.doesNotMatch(page, /(src|href)="(https?:)?\/\//, `a non-local asset: ${path}`);
        }
        assert.match(CONTENT_SECURITY_POLICY, /script-src 'self'/);
        assert.doesNotMatch(CONTENT_SECURITY_POLICY, /unsafe-inline|unsafe-eval/);
        for (const asset of ["console.css", "console.js", "favicon.svg"]) {
          const res = await get(app, `/assets/${asset}`);
          assert.equal(res.status, 200, asset);
          await res.arrayBuffer();
        }
        const runPage = await (await get(app, `/runs/${enc(run)}`)).text();
        assert.match(runPage, /id="gantt"/);
        assert.match(runPage, /item_id: [^<]*: 1</, "quarantine reasons shown");
        const grid = await (await get(app, "/dags/shelf")).text();
        assert.equal((grid.match(/<td class="cell state-success"/g) ?? []).length, 10);
      });

      await t.step("no raw patron value in any page, API response or metric", async () => {
        const { pages, api } = routes(w);
        for (const path of [...pages, ...api]) {
          const res = await get(app, path);
          assertNoSentinel(await res.text(), path);
        }
      });

      await t.step("/metrics in the Prometheus text format", async () => {
        const res = await get(app, "/metrics");
        assert.match(res.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
        const text = await res.text();
        const value = (line: string) => {
          const found = text.split("\n").find((l) => l.startsWith(line + " "));
          assert.ok(found, `metric line ${line}`);
          return Number(found.slice(line.length + 1));
        };
        assert.equal(value('carrel_runs{dag="shelf",state="success"}'), 2);
        assert.equal(value('carrel_runs{dag="flaky",state="failed"}'), 1);
        assert.equal(
          value('carrel_quarantined_records_total{dag="shelf",operation="gate:quarantined"}'),
          2,
        );
        assert.equal(value('carrel_checkpoint_verdicts_total{dag="shelf",verdict="passed"}'), 2);
        assert.equal(value('carrel_checkpoint_failures_total{dag="shelf"}'), 0);
        assert.equal(value("carrel_queue_depth"), 0);
        assert.equal(value('carrel_task_attempts_total{dag="flaky"}'), 2);
        assert.equal(value('carrel_dag_paused{dag="shelf"}'), 0);
        const count = value('carrel_task_duration_seconds_count{dag="shelf",task="gate"}');
        assert.equal(count, 2);
        assert.equal(
          value('carrel_task_duration_seconds_bucket{dag="shelf",task="gate",le="+Inf"}'),
          count,
        );
        const buckets = text.split("\n").filter((l) =>
          l.startsWith('carrel_task_duration_seconds_bucket{dag="shelf",task="gate"')
        ).map((l) => Number(l.split(" ")[1]));
        assert.deepEqual(buckets, [...buckets].sort((a, b) => a - b), "cumulative buckets");
        for (const line of text.split("\n").filter((l) => l && !l.startsWith("#"))) {
          assert.match(
            line,
            /^[a-z_]+(\{[a-z]+="[^"]*"(,[a-z]+="[^"]*")*\})? -?\d+(\.\d+)?$/,
            line,
          );
        }
      });

      await t.step("actions are audited with who did them", async () => {
        const home = await (await get(app, "/")).text();
        const cookie = sessionCookie(await get(app, "/"));
        assert.ok(cookie);
        const page = await get(app, "/", { cookie });
        const csrf = csrfOf(await page.text());
        assert.ok(home.includes("csrf-token"));

        const trigger = await post(
          app,
          "/api/v1/dags/shelf/trigger",
          JSON.stringify({ date: "2026-02-10T02:00:00Z", params: { branch: "east" } }),
          { cookie, "x-csrf-token": csrf },
        );
        assert.equal(trigger.status, 200);
        const triggered = await trigger.json();
        assert.equal(triggered.runId, "shelf@2026-02-10T02:00:00Z");
        assert.equal(triggered.created, true);
        assert.equal(triggered.state, "queued");
        const created = await store.getRun(triggered.runId);
        assert.equal(created?.runType, "triggered");
        assert.equal(created?.params.branch, "east");
        const trail = await Array.fromAsync(store.iterateAudit({ correlationId: triggered.runId }));
        assert.deepEqual(
          trail.find((e) => e.operation === "run:trigger")?.detail,
          { by: "ui:local", executor: "local" },
        );

        const badParam = await post(
          app,
          "/api/v1/dags/shelf/trigger",
          JSON.stringify({ params: { password: "hunter2hunter2" } }),
          { cookie, "x-csrf-token": csrf },
        );
        assert.equal(badParam.status, 400);
        assert.doesNotMatch(await badParam.text(), /hunter2/);

        const cleared = await post(
          app,
          `/api/v1/runs/${enc(run)}/tasks/gate/clear`,
          JSON.stringify({ downstream: true }),
          { cookie, "x-csrf-token": csrf },
        );
        assert.equal(cleared.status, 200);
        assert.deepEqual((await cleared.json()).cleared, ["gate", "checkpoint", "load"]);
        const tis = await store.listTaskInstances(run);
        assert.deepEqual(
          tis.filter((x) => x.state === "scheduled").map((x) => x.taskId).sort(),
          ["checkpoint", "gate", "load"],
        );
        assert.equal((await store.getRun(run))?.state, "queued");
        const clears = (await Array.fromAsync(store.iterateAudit({ correlationId: run })))
          .filter((e) => e.operation === "task:clear");
        assert.deepEqual(clears.map((e) => e.detail?.by), ["ui:local", "ui:local", "ui:local"]);

        // A form post (no script) comes back to the page with a notice.
        const form = await post(app, "/api/v1/dags/shelf/pause", { csrf, next: "/dags/shelf" }, {
          cookie,
        });
        assert.equal(form.status, 303);
        assert.equal(form.headers.get("location"), "/dags/shelf");
        assert.equal((await store.pausedDags()).get("shelf"), true);
        const after = await (await get(app, "/dags/shelf", { cookie })).text();
        assert.match(after, /DAG shelf paused/);
        const pauses = await Array.fromAsync(store.iterateAudit({ correlationId: "dag:shelf" }));
        assert.equal(pauses.at(-1)?.operation, "dag:pause");
        assert.equal(pauses.at(-1)?.detail?.by, "ui:local");
        const unpause = await post(app, "/api/v1/dags/shelf/unpause", "{}", {
          cookie,
          "x-csrf-token": csrf,
        });
        assert.equal(unpause.status, 200);
        assert.equal((await store.pausedDags()).get("shelf"), false);

        // Without the token: refused, and nothing changed.
        for (
          const action of [
            "/api/v1/dags/shelf/trigger",
            "/api/v1/dags/shelf/unpause",
            `/api/v1/runs/${enc(run)}/tasks/load/clear`,
          ]
        ) {
          const res = await post(app, action, "{}", { cookie });
          assert.equal(res.status, 403, action);
          await res.text();
        }
        const refused = await post(app, "/api/v1/dags/shelf/pause", "{}", { cookie });
        assert.equal(refused.status, 403);
        assert.match((await refused.json()).error, /CSRF/);
        const forged = await post(app, "/api/v1/dags/shelf/pause", { csrf: "forged" }, { cookie });
        assert.equal(forged.status, 403);
        const foreign = await post(app, "/api/v1/dags/shelf/pause", "{}", {
          cookie,
          "x-csrf-token": csrf,
          origin: "http://evil.example",
        });
        assert.equal(foreign.status, 403);
        assert.equal((await store.pausedDags()).get("shelf"), false);
      });

      await t.step("token login: sessions, bearer, CSRF on login, throttling", async () => {
        const { app: secured } = consoleOf(w, store, { token: TOKEN });
        // Every route: nothing without credentials, everything with the token.
        for (const path of routes(w).api) {
          const anonymous = await get(secured, path);
          assert.equal(anonymous.status, 401, path);
          await anonymous.text();
          const res = await get(secured, path, { authorization: `Bearer ${TOKEN}` });
          assert.equal(res.status, 200, path);
          await res.text();
        }
        for (const path of routes(w).pages) {
          const res = await get(secured, path);
          assert.equal(res.status, 303, path);
          assert.match(res.headers.get("location")!, /^\/login\?next=/, path);
        }
        for (
          const action of [
            "/api/v1/dags/shelf/trigger",
            "/api/v1/dags/shelf/pause",
            "/api/v1/dags/shelf/unpause",
            `/api/v1/runs/${enc(run)}/tasks/load/clear`,
          ]
        ) {
          // Refused before anything else: a browser request without a session has no CSRF token.
          const res = await post(secured, action, "{}");
          assert.equal(res.status, 403, action);
          await res.text();
        }
        assert.equal((await get(secured, "/api/v1/dags")).status, 401);
        const redirect = await get(secured, "/runs?dag=shelf");
        assert.equal(redirect.status, 303);
        assert.equal(redirect.headers.get("location"), "/login?next=%2Fruns%3Fdag%3Dshelf");
        assert.equal((await get(secured, "/metrics")).status, 401);
        const bearer = await get(secured, "/metrics", { authorization: `Bearer ${TOKEN}` });
        assert.equal(bearer.status, 200);
        await bearer.text();
        assert.equal(
          (await get(secured, "/api/v1/dags", { authorization: "Bearer wrong-token" })).status,
          401,
        );
        // Scripts with the token act without a session (no ambient credentials, no CSRF).
        const scripted = await post(secured, "/api/v1/dags/flaky/pause", "{}", {
          authorization: `Bearer ${TOKEN}`,
        });
        assert.equal(scripted.status, 200);
        const byToken = await Array.fromAsync(store.iterateAudit({ correlationId: "dag:flaky" }));
        assert.equal(byToken.at(-1)?.detail?.by, "ui:token");

        const loginPage = await get(secured, "/login");
        const preCookie = sessionCookie(loginPage)!;
        const loginCsrf = csrfOf(await loginPage.text());
        const noCsrf = await post(secured, "/login", { token: TOKEN }, { cookie: preCookie });
        assert.equal(noCsrf.status, 403);
        const wrong = await post(secured, "/login", { token: "nope", csrf: loginCsrf }, {
          cookie: preCookie,
        });
        assert.equal(wrong.status, 401);
        const ok = await post(secured, "/login", { token: TOKEN, csrf: loginCsrf, next: "/runs" }, {
          cookie: preCookie,
        });
        assert.equal(ok.status, 303);
        assert.equal(ok.headers.get("location"), "/runs");
        const set = ok.headers.getSetCookie().find((c) => c.startsWith("carrel_session="))!;
        assert.match(set, /HttpOnly/);
        assert.match(set, /SameSite=Strict/);
        assert.match(set, /Path=\//);
        const session = set.split(";")[0]!;
        assert.notEqual(session, preCookie, "a new session id after login");
        const inside = await get(secured, "/runs", { cookie: session });
        assert.equal(inside.status, 200);
        assert.equal((await get(secured, "/runs", { cookie: preCookie })).status, 303);
        const logoutCsrf = csrfOf(await inside.text());
        const out = await post(secured, "/logout", { csrf: logoutCsrf }, { cookie: session });
        assert.equal(out.status, 303);
        assert.equal((await get(secured, "/runs", { cookie: session })).status, 303);

        // After login, only local paths: no open redirect.
        const again = await get(secured, "/login");
        const againCookie = sessionCookie(again)!;
        const offsite = await post(secured, "/login", {
          token: TOKEN,
          csrf: csrfOf(await again.text()),
          next: "//evil.example/x",
        }, { cookie: againCookie });
        assert.equal(offsite.status, 303);
        assert.equal(offsite.headers.get("location"), "/");

        // Ten failures from one client (one above), then 429 even for the right token.
        const fresh = await get(secured, "/login");
        const c = sessionCookie(fresh)!;
        const token = csrfOf(await fresh.text());
        for (let i = 0; i < 9; i++) {
          const r = await post(secured, "/login", { token: `bad-${i}`, csrf: token }, {
            cookie: c,
          });
          assert.equal(r.status, 401);
          await r.text();
        }
        const blocked = await post(secured, "/login", { token: TOKEN, csrf: token }, { cookie: c });
        assert.equal(blocked.status, 429);
      });

      await t.step("users file: viewers read, operators act; hashes and file mode", async () => {
        const viewerHash = await hashPassword("viewer password 1");
        assert.match(viewerHash, /^scrypt\$16384\$8\$1\$/);
        assert.equal(await verifyPassword("viewer password 1", viewerHash), true);
        assert.equal(await verifyPassword("viewer password 2", viewerHash), false);
        const file = join(w.dir, "users.json");
        await Deno.writeTextFile(
          file,
          JSON.stringify({
            users: [
              { name: "vera", role: "viewer", password: viewerHash },
              { name: "otto", role: "operator", password: await hashPassword("operator password") },
            ],
          }),
          { mode: 0o644 },
        );
        await Deno.chmod(file, 0o644);
        await assert.rejects(() => authFromOptions({ users: file }), /group or others may read it/);
        await Deno.chmod(file, 0o600);
        const auth = await authFromOptions({ users: file });
        const { app: secured } = consoleOf(w, store, auth, "0.0.0.0");

        const login = async (name: string, password: string) => {
          const page = await get(secured, "/login");
          const c = sessionCookie(page)!;
          const res = await post(secured, "/login", {
            name,
            password,
            csrf: csrfOf(await page.text()),
          }, { cookie: c });
          return { res, cookie: sessionCookie(res) };
        };
        assert.equal((await login("vera", "wrong password")).res.status, 401);
        assert.equal((await login("nobody", "viewer password 1")).res.status, 401);
        const vera = await login("vera", "viewer password 1");
        assert.equal(vera.res.status, 303);
        const page = await get(secured, "/dags/shelf", { cookie: vera.cookie! });
        const html = await page.text();
        assert.doesNotMatch(html, /Trigger run/, "no action forms for a viewer");
        const denied = await post(secured, "/api/v1/dags/shelf/pause", "{}", {
          cookie: vera.cookie!,
          "x-csrf-token": csrfOf(html),
        });
        assert.equal(denied.status, 403);
        assert.match((await denied.json()).error, /read-only/);
        assert.equal((await store.pausedDags()).get("shelf"), false);

        const otto = await login("otto", "operator password");
        const ottoPage = await (await get(secured, "/dags/shelf", { cookie: otto.cookie! })).text();
        const allowed = await post(secured, "/api/v1/dags/shelf/pause", "{}", {
          cookie: otto.cookie!,
          "x-csrf-token": csrfOf(ottoPage),
        });
        assert.equal(allowed.status, 200);
        const trail = await Array.fromAsync(store.iterateAudit({ correlationId: "dag:shelf" }));
        assert.equal(trail.at(-1)?.detail?.by, "ui:otto");
      });

      await t.step("a tampered audit trail shows as broken", async () => {
        const page = await (await get(app, "/audit")).text();
        assert.match(page, /Chain intact: \d+ entries verified/);
        // As a superuser could: disable the append-only trigger and rewrite an entry.
        await store.client.exec(
          `ALTER TABLE audit_log DISABLE TRIGGER USER;
           UPDATE audit_log SET status = 'tampered' WHERE seq = 3;
           ALTER TABLE audit_log ENABLE TRIGGER USER;`,
        );
        const verdict = await (await get(app, "/api/v1/audit/verify")).json();
        assert.equal(verdict.ok, false);
        assert.equal(verdict.seq, 3);
        const broken = await (await get(app, "/audit")).text();
        assert.match(broken, /Chain broken at entry 3 \(.*\): its hash does not match its content/);
        const compliance = await (await get(app, "/api/v1/compliance")).json();
        assert.equal(
          compliance.items.find((i: { id: string }) => i.id === "audit.chain").status,
          "fail",
        );
      });

      await t.step("binding: loopback by default, refused off loopback without auth", async () => {
        assertBindAllowed("127.0.0.1", {});
        assertBindAllowed("::1", {});
        assert.throws(() => assertBindAllowed("0.0.0.0", {}), /needs authentication/);
        assertBindAllowed("0.0.0.0", { token: TOKEN });
        const rebinding = await app.request(BASE + "/", { headers: { host: "evil.example" } });
        assert.equal(rebinding.status, 421);
        const cli = await w.run(["ui", "--host", "0.0.0.0", "--port", "0"], {
          CARREL_UI_TOKEN: "",
        });
        assertExit(cli, 2);
        assert.match(
          cli.stderr,
          /Cannot listen on 0\.0\.0\.0: off loopback the console needs authentication/,
        );
        const short = await w.run(["ui", "--port", "0"], { CARREL_UI_TOKEN: "short" });
        assertExit(short, 2);
        assert.match(short.stderr, /at least 24 characters/);
      });
    },
  });
}
