/**
 * `ui [--host H] [--port P] [--users FILE] [--token-file FILE]`: the web console and its JSON
 * API over the configured store; `ui hash-password` makes a users-file password hash.
 *
 * @module
 */
import type { Command } from "commander";
import { UsageError } from "../core/errors.ts";
import type { TriggerMode } from "../core/actions.ts";
import {
  type AuthConfig,
  checkToken,
  hashPassword,
  isLoopback,
  loadUsersFile,
} from "../ui/auth.ts";
import { assertBindAllowed, serveConsole } from "../ui/server.ts";
import { type CommandState, startLogging } from "./common.ts";
import type { CliContext } from "./context.ts";

async function readToken(file: string): Promise<string> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(file);
  } catch {
    throw new UsageError(`Cannot read --token-file ${file}: it does not exist`);
  }
  if (info.mode !== null && (info.mode & 0o077) !== 0) {
    throw new UsageError(
      `Cannot use --token-file ${file}: group or others may read it (chmod 600 ${file})`,
    );
  }
  return checkToken((await Deno.readTextFile(file)).trim(), `--token-file ${file}`);
}

/** The authentication the flags and environment configure. */
export async function authFromOptions(
  opts: { users?: string; tokenFile?: string },
): Promise<AuthConfig> {
  const auth: AuthConfig = {};
  const env = Deno.env.get("CARREL_UI_TOKEN");
  if (opts.tokenFile) auth.token = await readToken(opts.tokenFile);
  else if (env) auth.token = checkToken(env, "CARREL_UI_TOKEN");
  if (opts.users) auth.users = await loadUsersFile(opts.users);
  return auth;
}

function triggerMode(): TriggerMode {
  const env = Deno.env.get("CARREL_EXECUTOR");
  if (env && env !== "local" && env !== "workers") {
    throw new UsageError(`Invalid CARREL_EXECUTOR "${env}": expected local or workers`);
  }
  return (env as TriggerMode | undefined) ?? "local";
}

async function readStdin(): Promise<string> {
  const text = await new Response(Deno.stdin.readable).text();
  return text.replace(/\r?\n$/, "");
}

/** Registers `ui`. */
export function registerUi(
  program: Command,
  context: () => CliContext,
  _state: CommandState,
): void {
  const ui = program.command("ui")
    .description(
      "the web console and its JSON API under /api/v1, /metrics for Prometheus; 127.0.0.1 by default",
    )
    .option("--host <host>", "address to listen on", "127.0.0.1")
    .option("--port <port>", "port to listen on (0: any free port)", "8080")
    .option(
      "--users <file>",
      'users file (mode 0600): {"users": [{"name", "role": "viewer"|"operator", "password": hash}]}',
    )
    .option(
      "--token-file <file>",
      "file (mode 0600) holding the console token (else CARREL_UI_TOKEN)",
    )
    .option("--secure-cookies", "mark cookies Secure (behind a TLS-terminating proxy)")
    .action(
      async (
        opts: {
          host: string;
          port: string;
          users?: string;
          tokenFile?: string;
          secureCookies?: boolean;
        },
      ) => {
        const port = Number(opts.port);
        if (!Number.isInteger(port) || port < 0 || port > 65535) {
          throw new UsageError(`Invalid --port "${opts.port}": expected 0 to 65535`);
        }
        const auth = await authFromOptions(opts);
        assertBindAllowed(opts.host, auth);
        const mode = triggerMode();
        const ctx = context();
        const store = await ctx.store();
        startLogging(ctx, { console: true });
        const stop = new AbortController();
        const onSignal = () => stop.abort();
        const signals: Deno.Signal[] = ["SIGINT", "SIGTERM"];
        for (const s of signals) Deno.addSignalListener(s, onSignal);
        try {
          const server = serveConsole({
            store,
            home: ctx.home,
            dagsDir: ctx.dagsDir,
            triggerMode: mode,
            auth,
            host: opts.host,
            port,
            signal: stop.signal,
            ...(opts.secureCookies ? { secureCookies: true } : {}),
            onListen: ({ hostname, port }) => {
              const shown = hostname.includes(":") ? `[${hostname}]` : hostname;
              const login = auth.token && auth.users
                ? "token or users file"
                : auth.token
                ? "token"
                : auth.users
                ? "users file"
                : "none (loopback only)";
              console.log(`Carrel console on http://${shown}:${port}/ (login: ${login})`);
              if (!isLoopback(hostname)) {
                console.log(
                  "Off loopback: put it behind TLS (a reverse proxy) and use --secure-cookies",
                );
              }
            },
          });
          await server.finished;
        } finally {
          for (const s of signals) Deno.removeSignalListener(s, onSignal);
        }
      },
    );

  ui.command("hash-password")
    .description("reads a password on stdin and prints its scrypt hash for a users file")
    .action(async () => {
      const password = await readStdin();
      if (password.length < 12) {
        throw new UsageError("Cannot hash the password: use at least 12 characters");
      }
      console.log(await hashPassword(password));
    });
}
