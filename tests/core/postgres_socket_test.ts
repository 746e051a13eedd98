/**
 * The PostgreSQL clients' sockets: Nagle's algorithm off on every connection (the state store's
 * and the ILS operators'), hosts taken in turn, Unix sockets; with `CARREL_TEST_DATABASE_URL`,
 * both clients are checked against a real server.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createServer, type Server, Socket } from "node:net";
import { join } from "node:path";
import { postgresSocket } from "../../core/state/postgres_socket.ts";
import { PostgresClient } from "../../core/state/sql_client.ts";
import { sqlExtract } from "../../operators/ils/sql.ts";
import { notePostgresSkipped, TEST_DATABASE_URL, withTmpDir } from "../test_utils.ts";

notePostgresSkipped();

/** Records every `setNoDelay` and `setKeepAlive` call of any socket until disposed. */
function watchNoDelay(): { calls: boolean[]; keepAlive: [boolean, number][] } & Disposable {
  const noDelay = Socket.prototype.setNoDelay;
  const keepAlive = Socket.prototype.setKeepAlive;
  const calls: boolean[] = [];
  const kept: [boolean, number][] = [];
  Socket.prototype.setNoDelay = function (this: Socket, on?: boolean) {
    calls.push(on ?? true);
    return noDelay.call(this, on);
  };
  Socket.prototype.setKeepAlive = function (this: Socket, on?: boolean, delay?: number) {
    if (this.remotePort !== undefined) kept.push([on ?? false, delay ?? 0]);
    return keepAlive.call(this, on, delay);
  };
  return {
    calls,
    keepAlive: kept,
    [Symbol.dispose]() {
      Socket.prototype.setNoDelay = noDelay;
      Socket.prototype.setKeepAlive = keepAlive;
    },
  };
}

/** A server, where it listens, and a promise of its first accepted connection. */
async function listening(
  at: { port: 0 } | { path: string },
): Promise<{ server: Server; accepted: Promise<void>; port: number } & AsyncDisposable> {
  let accept!: () => void;
  const accepted = new Promise<void>((resolve) => accept = resolve);
  const open = new Set<Socket>();
  const server = createServer((s) => {
    accept();
    open.add(s);
    s.on("error", () => {});
  });
  await new Promise<void>((resolve) => {
    if ("path" in at) server.listen(at.path, resolve);
    else server.listen(0, "127.0.0.1", resolve);
  });
  const address = server.address();
  return {
    server,
    accepted,
    port: typeof address === "object" && address !== null ? address.port : 0,
    async [Symbol.asyncDispose]() {
      for (const s of open) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** `socket`, once it is connected. */
async function connected(socket: Socket): Promise<Socket> {
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", () => resolve());
    socket.once("error", reject);
  });
  return socket;
}

Deno.test("postgresSocket connects to the hosts in turn with Nagle's algorithm off", async () => {
  using watch = watchNoDelay();
  await using a = await listening({ port: 0 });
  await using b = await listening({ port: 0 });
  const open = postgresSocket();
  const options = { host: ["127.0.0.1", "127.0.0.1"], port: [a.port, b.port], keep_alive: 60 };
  const sockets = [
    await connected(open(options)),
    await connected(open(options)),
    await connected(open(options)),
  ];
  try {
    assert.deepEqual(sockets.map((s) => s.remotePort), [a.port, b.port, a.port]);
    assert.deepEqual(watch.calls, [true, true, true]);
    // Keep-alive as postgres.js asked for it, once each socket is connected.
    assert.deepEqual(watch.keepAlive, [[true, 60_000], [true, 60_000], [true, 60_000]]);
  } finally {
    for (const s of sockets) s.destroy();
  }
});

Deno.test("postgresSocket connects to a Unix socket when postgres.js gives a path", async () => {
  using watch = watchNoDelay();
  await using dir = await withTmpDir();
  const path = join(dir.path, ".s.PGSQL.5432");
  await using server = await listening({ path });
  const socket = await connected(postgresSocket()({ host: [dir.path], port: [5432], path }));
  // The server accepted it (the socket file is its only way in).
  await server.accepted;
  socket.destroy();
  // A Unix socket has no Nagle's algorithm; asking is harmless either way.
  assert.ok(watch.calls.every((c) => c === true));
});

Deno.test({
  name:
    "the state store's and the ILS operators' PostgreSQL connections turn Nagle's algorithm off",
  ignore: !TEST_DATABASE_URL,
  async fn() {
    {
      using watch = watchNoDelay();
      const client = await PostgresClient.connect(TEST_DATABASE_URL!, { max: 1 });
      try {
        assert.deepEqual([...await client.query("SELECT 1 AS one")], [{ one: 1 }]);
      } finally {
        await client.close();
      }
      assert.deepEqual(watch.calls, [true], "the state store's connection");
    }
    {
      using watch = watchNoDelay();
      const rows = [];
      for await (const row of sqlExtract(TEST_DATABASE_URL!, "SELECT 2 AS two")) rows.push(row);
      assert.deepEqual(rows, [{ two: 2 }]);
      assert.ok(watch.calls.length > 0 && watch.calls.every((c) => c === true), "sqlExtract's");
    }
  },
});
