/**
 * The console's HTTP server (Hono on `Deno.serve`): pages, the JSON API under `/api/v1`,
 * `/metrics`, and the locally served assets. Security is decided here: loopback by default
 * (and a Host check against DNS rebinding), authentication required off loopback, sessions in
 * HttpOnly SameSite=Strict cookies, a CSRF token on every state-changing request, a strict
 * Content-Security-Policy without inline script, and read-only users who cannot act.
 *
 * @module
 */
import { type Context, Hono } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { getLogger } from "@logtape/logtape";
import { DagError, errorMessage, UsageError } from "../core/errors.ts";
import { RunBusyError } from "../core/run/local.ts";
import {
  type AuthConfig,
  authenticate,
  authRequired,
  isLoopback,
  LoginThrottle,
  type Principal,
  sameSecret,
  type Session,
  Sessions,
} from "./auth.ts";
import { ConsoleData, type ConsoleSources, NotFound, pageSize, runStates } from "./data.ts";
import { METRICS_CONTENT_TYPE, renderMetrics } from "./metrics.ts";
import * as pages from "./pages.ts";
import { ASSETS } from "./assets.ts";

/** Everything the console needs. */
export interface ConsoleOptions extends ConsoleSources {
  auth: AuthConfig;
  /** The address it listens on: decides the Host check and whether login is required. */
  host: string;
  /** Adds `Secure` to cookies (behind a TLS-terminating proxy). */
  secureCookies?: boolean;
}

/** The strict policy every response carries: nothing inline, nothing from elsewhere. */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join("; ");

const SESSION_COOKIE = "carrel_session";
const log = getLogger(["carrel", "ui"]);

/**
 * Refuses a bind that would expose the console without authentication.
 *
 * @example
 * ```ts
 * import { assertBindAllowed } from "./server.ts";
 * assertBindAllowed("127.0.0.1", {}); // fine: loopback
 * ```
 */
export function assertBindAllowed(host: string, auth: AuthConfig): void {
  if (!isLoopback(host) && !authRequired(auth)) {
    throw new UsageError(
      `Cannot listen on ${host}: off loopback the console needs authentication; set CARREL_UI_TOKEN (or --token-file FILE) or --users FILE`,
    );
  }
}

type Env = {
  Variables: { session: Session; principal: Principal | null; bearer: boolean };
};

/** Pages, and forms posted by a browser to the API, answer in HTML; scripts get JSON. */
function wantsHtml(c: Context): boolean {
  if (!c.req.path.startsWith("/api/") && c.req.path !== "/metrics") return true;
  return (c.req.header("accept") ?? "").includes("text/html");
}

/** A local path to go back to after a form (never another host). */
function localPath(next: unknown, fallback: string): string {
  return typeof next === "string" && /^\/(?!\/)[^\s\\]*$/.test(next) ? next : fallback;
}

async function readBody(c: Context): Promise<Record<string, unknown>> {
  const type = c.req.header("content-type") ?? "";
  if (type.includes("application/json")) {
    const body = await c.req.json().catch(() => {
      throw new UsageError("Invalid request body: expected JSON");
    });
    if (!body || typeof body !== "object" || Array.isArray(body)) {
      throw new UsageError("Invalid request body: expected a JSON object");
    }
    return body as Record<string, unknown>;
  }
  if (type.includes("application/x-www-form-urlencoded") || type.includes("multipart/form-data")) {
    return Object.fromEntries(Object.entries(await c.req.parseBody()));
  }
  return {};
}

/** `key=value` lines (from a form) or an object of strings (from JSON) as trigger params. */
function paramsOf(value: unknown): Record<string, string> | undefined {
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value === "string") {
    const out: Record<string, string> = {};
    for (const line of value.split(/\r?\n/).map((l) => l.trim()).filter(Boolean)) {
      const eq = line.indexOf("=");
      if (eq <= 0) {
        throw new UsageError(`Invalid param "${line.split("=")[0]}": expected key=value`);
      }
      out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
    }
    return out;
  }
  if (typeof value === "object" && !Array.isArray(value)) {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>).map((
        [k, v],
      ) => [k, typeof v === "string" ? v : JSON.stringify(v)]),
    );
  }
  throw new UsageError("Invalid params: expected an object of strings");
}

/**
 * Builds the console application.
 *
 * @example
 * ```ts ignore
 * import { createConsole } from "./server.ts";
 * const { app } = createConsole({ store, home, dagsDir: "dags", auth: {}, host: "127.0.0.1" });
 * const res = await app.request("/api/v1/dags");
 * ```
 */
export function createConsole(options: ConsoleOptions): { app: Hono<Env>; data: ConsoleData } {
  const data = new ConsoleData(options);
  const sessions = new Sessions();
  const throttle = new LoginThrottle();
  const loginRequired = authRequired(options.auth);
  const loopbackOnly = isLoopback(options.host);
  const app = new Hono<Env>();

  const cookie = (c: Context, session: Session) =>
    setCookie(c, SESSION_COOKIE, session.id, {
      httpOnly: true,
      sameSite: "Strict",
      path: "/",
      secure: options.secureCookies ?? false,
    });

  // Headers on everything, errors included.
  app.use("*", async (c, next) => {
    await next();
    c.header("Content-Security-Policy", CONTENT_SECURITY_POLICY);
    c.header("X-Content-Type-Options", "nosniff");
    c.header("X-Frame-Options", "DENY");
    c.header("Referrer-Policy", "no-referrer");
    c.header("Cross-Origin-Opener-Policy", "same-origin");
    c.header("Cross-Origin-Resource-Policy", "same-origin");
    if (!c.req.path.startsWith("/assets/")) c.header("Cache-Control", "no-store");
  });

  app.onError((error, c) => {
    let status: 400 | 403 | 404 | 409 | 500 = 500;
    let message = errorMessage(error);
    if (error instanceof NotFound) status = 404;
    else if (error instanceof UsageError) status = 400;
    else if (error instanceof DagError || error instanceof RunBusyError) status = 409;
    else {
      log.error("Console request failed: {error}", { error: message, path: c.req.path });
      message = "Internal error: see the console's log";
    }
    if (!wantsHtml(c)) return c.json({ error: message }, status);
    const principal = c.get("principal") ?? null;
    const session = c.get("session");
    return c.html(pages.errorPage(status, message, principal, session?.csrf ?? "").text, status);
  });

  // DNS rebinding: a console on loopback answers only to loopback host names.
  app.use("*", async (c, next) => {
    if (loopbackOnly) {
      const host = (c.req.header("host") ?? "").replace(/:\d+$/, "");
      if (!isLoopback(host)) {
        return c.text(
          `Refused: the console on ${options.host} answers to loopback names only`,
          421,
        );
      }
    }
    return await next();
  });

  app.get("/assets/:name", (c) => {
    const asset = ASSETS[c.req.param("name")];
    if (!asset) throw new NotFound(`Unknown asset "${c.req.param("name")}"`);
    c.header("Cache-Control", "public, max-age=3600");
    c.header("Content-Type", asset.type);
    return c.body(asset.body);
  });

  // Who is asking: a session cookie, or a bearer token for scripts and Prometheus.
  app.use("*", async (c, next) => {
    const auth = c.req.header("authorization") ?? "";
    let principal: Principal | null = null;
    let session = sessions.get(getCookie(c, SESSION_COOKIE));
    c.set("bearer", false);
    if (auth.toLowerCase().startsWith("bearer ")) {
      const token = auth.slice(7).trim();
      if (!options.auth.token || !sameSecret(token, options.auth.token)) {
        return c.json({ error: "Invalid bearer token" }, 401);
      }
      principal = { name: "token", role: "operator" };
      c.set("bearer", true);
    } else if (session?.principal) principal = session.principal;
    if (!loginRequired && !principal) principal = { name: "local", role: "operator" };
    if (!session) {
      session = sessions.create(loginRequired ? null : principal);
      cookie(c, session);
    }
    c.set("session", session);
    c.set("principal", principal);
    return await next();
  });

  // CSRF: every state-changing request from a browser carries the session's token.
  app.use("*", async (c, next) => {
    if (["GET", "HEAD", "OPTIONS"].includes(c.req.method) || c.get("bearer")) return await next();
    const origin = c.req.header("origin");
    if (origin && origin !== "null") {
      const host = c.req.header("host");
      if (!host || URL.parse(origin)?.host !== host) {
        return refuse(c, 403, "Refused: the request comes from another origin");
      }
    }
    let token = c.req.header("x-csrf-token");
    if (!token) {
      const type = c.req.header("content-type") ?? "";
      if (type.includes("form")) {
        const field = (await c.req.parseBody())["csrf"];
        token = typeof field === "string" ? field : undefined;
      }
    }
    if (!token || !sameSecret(token, c.get("session").csrf)) {
      return refuse(
        c,
        403,
        "Refused: missing or invalid CSRF token; reload the page and try again",
      );
    }
    await next();
  });

  const refuse = (c: Context<Env>, status: 401 | 403, message: string) => {
    if (!wantsHtml(c)) return c.json({ error: message }, status);
    return c.html(
      pages.errorPage(status, message, c.get("principal"), c.get("session").csrf).text,
      status,
    );
  };

  app.get("/login", (c) => {
    const next = localPath(c.req.query("next"), "/");
    if (!loginRequired || c.get("principal")) return c.redirect(next, 303);
    return c.html(pages.loginPage(options.auth, c.get("session").csrf, next, null).text);
  });

  app.post("/login", async (c) => {
    const body = await c.req.parseBody();
    const next = localPath(body.next, "/");
    const client = c.req.header("x-forwarded-for") ??
      (c.env as { remoteAddr?: { hostname?: string } } | undefined)?.remoteAddr?.hostname ??
      "local";
    if (throttle.blocked(client)) {
      return c.html(
        pages.loginPage(
          options.auth,
          c.get("session").csrf,
          next,
          "Too many failed logins: wait a few minutes",
        ).text,
        429,
      );
    }
    const str = (v: unknown) => (typeof v === "string" && v !== "" ? v : undefined);
    const principal = await authenticate(options.auth, {
      ...(str(body.token) ? { token: str(body.token)! } : {}),
      ...(str(body.name) ? { name: str(body.name)! } : {}),
      ...(str(body.password) ? { password: str(body.password)! } : {}),
    });
    if (!principal) {
      throttle.fail(client);
      log.warn("Console login refused");
      return c.html(
        pages.loginPage(
          options.auth,
          c.get("session").csrf,
          next,
          "Login refused: check your token or password",
        ).text,
        401,
      );
    }
    const session = sessions.login(c.get("session"), principal);
    cookie(c, session);
    log.info("Console login: {user} ({role})", { user: principal.name, role: principal.role });
    return c.redirect(next, 303);
  });

  app.post("/logout", (c) => {
    sessions.delete(c.get("session").id);
    deleteCookie(c, SESSION_COOKIE, { path: "/" });
    return c.redirect(loginRequired ? "/login" : "/", 303);
  });

  // Everything below needs a principal.
  app.use("*", async (c, next) => {
    if (c.get("principal")) return await next();
    if (!wantsHtml(c)) {
      return c.json({ error: "Authentication required: log in or send a bearer token" }, 401);
    }
    return c.redirect(
      `/login?next=${encodeURIComponent(c.req.path + (new URL(c.req.url).search))}`,
      303,
    );
  });

  // Acting needs an operator.
  app.use("*", async (c, next) => {
    if (c.req.method === "POST" && c.get("principal")?.role !== "operator") {
      return refuse(c, 403, `Refused: user "${c.get("principal")!.name}" is read-only`);
    }
    return await next();
  });

  const by = (c: Context<Env>) => `ui:${c.get("principal")!.name}`;
  const ctx = (c: Context<Env>): pages.PageContext => ({
    principal: c.get("principal")!,
    csrf: c.get("session").csrf,
    path: c.req.path + new URL(c.req.url).search,
    flash: takeFlash(c.get("session")),
  });
  const num = (v: string | undefined) => {
    if (v === undefined || v === "") return undefined;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`Invalid number "${v.slice(0, 20)}"`);
    return n;
  };
  /** Answers an action: JSON for scripts, a redirect with a notice for forms. */
  const acted = (
    c: Context<Env>,
    body: Record<string, unknown>,
    result: unknown,
    notice: string,
  ) => {
    const type = c.req.header("content-type") ?? "";
    if (type.includes("application/json")) return c.json(result as Record<string, unknown>, 200);
    (c.get("session") as Session & { flash?: string }).flash = notice;
    return c.redirect(localPath(body.next, "/"), 303);
  };

  // ---- JSON API -------------------------------------------------------------------------------
  const api = new Hono<Env>();
  api.get(
    "/me",
    (c) =>
      c.json({
        name: c.get("principal")!.name,
        role: c.get("principal")!.role,
        canAct: c.get("principal")!.role === "operator",
      }),
  );
  api.get("/dags", async (c) => c.json(await data.dagList()));
  api.get("/dags/:dag", async (c) => c.json(await data.dagDetail(c.req.param("dag"))));
  api.get("/dags/:dag/graph.svg", async (c) => {
    const svg = await pages.graphFor(data, c.req.param("dag"), c.req.query("run"));
    c.header("Content-Type", "image/svg+xml; charset=utf-8");
    return c.body(svg);
  });
  api.get("/dags/:dag/grid", async (c) =>
    c.json(
      await data.grid(c.req.param("dag"), {
        limit: pageSize(c.req.query("limit"), 25, 200),
        before: c.req.query("before"),
      }),
    ));
  api.get(
    "/dags/:dag/charts",
    async (c) =>
      c.json(await data.charts(c.req.param("dag"), pageSize(c.req.query("limit"), 100, 1000))),
  );
  api.get("/runs", async (c) =>
    c.json(
      await data.runs({
        dagId: c.req.query("dag"),
        states: runStates(c.req.query("state")),
        before: c.req.query("before"),
        limit: pageSize(c.req.query("limit"), 50, 500),
      }),
    ));
  api.get("/runs/:run", async (c) => c.json(await data.runDetail(c.req.param("run"))));
  api.get(
    "/runs/:run/tasks/:task/attempts",
    async (c) => c.json(await data.attempts(c.req.param("run"), c.req.param("task"))),
  );
  api.get("/runs/:run/tasks/:task/logs", async (c) =>
    c.json(
      await data.logs(c.req.param("run"), c.req.param("task"), {
        attempt: num(c.req.query("attempt")),
        after: num(c.req.query("after")),
        limit: pageSize(c.req.query("limit"), 200, 5000),
      }),
    ));
  api.get("/audit", async (c) =>
    c.json(
      await data.audit({
        correlationId: c.req.query("run") ?? c.req.query("correlation"),
        before: num(c.req.query("before")),
        limit: pageSize(c.req.query("limit"), 100, 1000),
      }),
    ));
  api.get("/audit/verify", async (c) => c.json(await data.chainStatus(0)));
  api.get("/audit/export", (c) => {
    const correlationId = c.req.query("run") ?? c.req.query("correlation");
    const sinceText = c.req.query("since");
    const since = sinceText ? new Date(sinceText) : undefined;
    if (since && Number.isNaN(since.getTime())) {
      throw new UsageError(`Invalid since "${sinceText!.slice(0, 40)}": expected an ISO date`);
    }
    const lines = data.auditExport({
      ...(correlationId ? { correlationId } : {}),
      ...(since ? { since } : {}),
    });
    const encoder = new TextEncoder();
    const iterator = lines[Symbol.asyncIterator]();
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const { value, done } = await iterator.next();
        if (done) controller.close();
        else controller.enqueue(encoder.encode(value));
      },
    });
    c.header("Content-Type", "application/x-ndjson; charset=utf-8");
    c.header("Content-Disposition", 'attachment; filename="carrel-audit.jsonl"');
    return c.body(stream);
  });
  api.get("/compliance", async (c) => c.json(await data.compliance()));

  api.post("/dags/:dag/trigger", async (c) => {
    const body = await readBody(c);
    const params = paramsOf(body.params);
    const result = await data.trigger(c.req.param("dag"), by(c), {
      ...(typeof body.date === "string" && body.date ? { date: body.date } : {}),
      ...(params ? { params } : {}),
    });
    return acted(
      c,
      body,
      result,
      `${result.created ? "Queued" : "Already exists"}: ${result.runId} (${result.state})`,
    );
  });
  for (const [name, paused] of [["pause", true], ["unpause", false]] as const) {
    api.post(`/dags/:dag/${name}`, async (c) => {
      const body = await readBody(c);
      const result = await data.pause(c.req.param("dag"), paused, by(c));
      return acted(c, body, result, `DAG ${result.dagId} ${paused ? "paused" : "unpaused"}`);
    });
  }
  api.post("/runs/:run/tasks/:task/clear", async (c) => {
    const body = await readBody(c);
    const downstream = body.downstream === true || body.downstream === "on" ||
      body.downstream === "true";
    const result = await data.clear(c.req.param("run"), c.req.param("task"), by(c), downstream);
    return acted(
      c,
      body,
      result,
      `Cleared ${result.cleared.length} task instance(s): ${result.cleared.join(", ") || "none"}`,
    );
  });
  api.all("*", (c) => c.json({ error: `Unknown API route ${c.req.method} ${c.req.path}` }, 404));
  app.route("/api/v1", api);

  app.get("/metrics", async (c) => {
    const { dags } = await data.dags();
    c.header("Content-Type", METRICS_CONTENT_TYPE);
    return c.body(await renderMetrics(data.store, data.history, { dagIds: [...dags.keys()] }));
  });

  // ---- Pages ----------------------------------------------------------------------------------
  app.get("/", async (c) => c.html((await pages.dagsPage(ctx(c), data)).text));
  app.get("/dags/:dag", async (c) =>
    c.html(
      (await pages.gridPage(ctx(c), data, c.req.param("dag"), {
        limit: pageSize(c.req.query("limit"), 25, 200),
        before: c.req.query("before"),
      })).text,
    ));
  app.get(
    "/dags/:dag/graph",
    async (c) =>
      c.html((await pages.graphPage(ctx(c), data, c.req.param("dag"), c.req.query("run"))).text),
  );
  app.get(
    "/dags/:dag/charts",
    async (c) => c.html((await pages.chartsPage(ctx(c), data, c.req.param("dag"))).text),
  );
  app.get("/runs", async (c) =>
    c.html(
      (await pages.runsPage(ctx(c), data, {
        dagId: c.req.query("dag"),
        states: runStates(c.req.query("state")),
        before: c.req.query("before"),
        limit: pageSize(c.req.query("limit"), 50, 500),
      })).text,
    ));
  app.get(
    "/runs/:run",
    async (c) => c.html((await pages.runPage(ctx(c), data, c.req.param("run"))).text),
  );
  app.get("/runs/:run/tasks/:task", async (c) =>
    c.html(
      (await pages.attemptPage(ctx(c), data, c.req.param("run"), c.req.param("task"), {
        attempt: num(c.req.query("attempt")),
        after: num(c.req.query("after")),
      })).text,
    ));
  app.get("/audit", async (c) =>
    c.html(
      (await pages.auditPage(ctx(c), data, {
        correlationId: c.req.query("run") || c.req.query("correlation") || undefined,
        before: num(c.req.query("before")),
      })).text,
    ));
  app.get("/compliance", async (c) => c.html((await pages.compliancePage(ctx(c), data)).text));
  app.all("*", () => {
    throw new NotFound("No such page");
  });
  return { app, data };
}

function takeFlash(session: Session & { flash?: string }): string | null {
  const flash = session.flash ?? null;
  delete session.flash;
  return flash;
}

/**
 * Serves the console until `signal` aborts.
 *
 * @example
 * ```ts ignore
 * import { serveConsole } from "./server.ts";
 * const server = serveConsole({ store, home, dagsDir, auth: {}, host: "127.0.0.1", port: 8080 });
 * await server.finished;
 * ```
 */
export function serveConsole(
  options: ConsoleOptions & {
    port: number;
    signal?: AbortSignal;
    onListen?: (addr: { hostname: string; port: number }) => void;
  },
): Deno.HttpServer<Deno.NetAddr> {
  assertBindAllowed(options.host, options.auth);
  const { app } = createConsole(options);
  return Deno.serve({
    hostname: options.host,
    port: options.port,
    ...(options.signal ? { signal: options.signal } : {}),
    onListen: options.onListen ?? (() => {}),
    onError: () => new Response("Internal error", { status: 500 }),
  }, (request, info) => app.fetch(request, { remoteAddr: info.remoteAddr }));
}
