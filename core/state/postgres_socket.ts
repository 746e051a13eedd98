/**
 * The sockets Carrel's PostgreSQL clients (postgres.js) connect through: plain TCP or Unix sockets
 * with Nagle's algorithm off, as node-postgres sets by default. postgres.js leaves it on, and then
 * every statement the client sends in two writes (a COPY's data, then its `CopyDone`) waits for
 * the server's delayed acknowledgement of the first: about 40 ms on Linux, measured on a 1 MB
 * `COPY ... FROM STDIN` as 56 to 60 ms against 16 ms with it off (a load sends one per megabyte).
 *
 * @module
 */
import { Socket } from "node:net";

/** What of postgres.js' parsed options a socket is opened from. */
export interface PostgresSocketOptions {
  host: readonly string[];
  port: readonly number[];
  /** A Unix socket (`/run/postgresql/.s.PGSQL.5432`), when the host is a folder. */
  path?: string | false;
  /** TCP keep-alive in seconds (postgres.js' `keep_alive`, default 60; 0 or null: off). */
  keep_alive?: number | null;
}

/**
 * postgres.js' `socket` option for one client: each new connection is a socket with Nagle's
 * algorithm off, connecting to the URL's hosts in turn (several hosts: `postgres://a,b/db`), or
 * to its Unix socket, with postgres.js' keep-alive set once connected. postgres.js still does the
 * rest (TLS, start-up, time-outs).
 *
 * @example
 * ```ts ignore
 * import postgres from "postgres";
 * import { postgresSocket } from "./postgres_socket.ts";
 * const sql = postgres("postgres://carrel@localhost/carrel", { socket: postgresSocket() } as never);
 * ```
 */
export function postgresSocket(): (options: PostgresSocketOptions) => Socket {
  let next = 0;
  return (options) => {
    const socket = new Socket();
    socket.once("connect", () => {
      socket.setNoDelay(true);
      // postgres.js asks for keep-alive before this socket is connected; ask again once it is.
      if (options.keep_alive) socket.setKeepAlive(true, 1000 * options.keep_alive);
    });
    if (options.path) socket.connect(options.path);
    else {
      const at = next++ % Math.max(1, options.host.length);
      socket.connect(options.port[at] ?? options.port[0] ?? 5432, options.host[at] ?? "localhost");
    }
    return socket;
  };
}

/**
 * The client option that makes postgres.js connect through {@linkcode postgresSocket}, to spread
 * into its options (postgres.js documents `socket` but its types do not declare it).
 *
 * @example
 * ```ts ignore
 * import postgres from "postgres";
 * import { noDelay } from "./postgres_socket.ts";
 * const sql = postgres("postgres://carrel@localhost/carrel", { max: 1, ...noDelay() });
 * ```
 */
export function noDelay(): Record<never, never> {
  return { socket: postgresSocket() };
}
