/**
 * The owner's side of a shared embedded store: the process holding `CARREL_HOME/state.lock`
 * serves its PGlite database to the other Carrel processes of the same `CARREL_HOME` over a Unix
 * socket. Statements of every process take turns on PGlite's one backend; a transaction holds
 * it from `begin` to `end`, so nothing interleaves with it, exactly as in one process.
 *
 * Leaving is orderly: the owner stops accepting new work (answering `moved`, which the other
 * process sends again to the next owner), answers everything it accepted, lets open
 * transactions finish (rolling back one that stays open longer than `leaveTimeoutMs`), then says
 * `leaving` and closes. So no statement is ever half-known: it was answered, or never executed.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import type { SqlClient } from "./sql_client.ts";
import { FrameWriter, readFrames, type Reply, type Request, toWireError } from "./embedded_wire.ts";

const log = getLogger(["carrel", "store"]);

/** A transaction another process holds open. */
interface RemoteTx {
  id: number;
  /** Commands waiting for the transaction body to take them. */
  commands: { request: Request; settle: (reply: Reply) => void }[];
  wake: (() => void) | undefined;
  /** Rolled back by the owner: every later command fails. */
  aborted: string | undefined;
  /** The `end` request, answered once PGlite has committed or rolled back. */
  end: { id: number; commit: boolean; settle: (reply: Reply) => void } | undefined;
}

/** One connected process. */
class Peer {
  readonly writer: FrameWriter;
  readonly txs = new Map<number, RemoteTx>();
  readonly listens = new Map<string, () => Promise<void>>();
  /** Requests accepted and not answered yet (outside transactions). */
  inFlight = 0;
  idle: (() => void) | undefined;
  pid = 0;
  constructor(readonly conn: Deno.Conn) {
    this.writer = new FrameWriter(conn);
  }
  send(reply: Reply): void {
    this.writer.write(reply).catch(() => {});
  }
  get quiet(): boolean {
    return this.inFlight === 0 && this.txs.size === 0;
  }
}

class Rollback extends Error {}

/**
 * Serves `client` (the owner's PGlite) on `socketPath` until `close()`.
 *
 * @example
 * ```ts ignore
 * const server = await EmbeddedServer.start(pglite, "/srv/carrel/state.sock");
 * await server.close();
 * ```
 */
export class EmbeddedServer {
  readonly #peers = new Set<Peer>();
  #closing = false;
  #txSeq = 0;
  #accepting: Promise<void>;

  private constructor(
    readonly client: SqlClient,
    readonly socketPath: string,
    readonly listener: Deno.UnixListener,
    readonly options: { leaveTimeoutMs: number; idleTxTimeoutMs: number },
  ) {
    this.#accepting = this.#accept();
  }

  /** Listens on `socketPath` (removing a stale socket file: the caller holds the lock). */
  static async start(
    client: SqlClient,
    socketPath: string,
    options: { leaveTimeoutMs?: number; idleTxTimeoutMs?: number } = {},
  ): Promise<EmbeddedServer> {
    await Deno.remove(socketPath).catch(() => {});
    const listener = Deno.listen({ transport: "unix", path: socketPath });
    await Deno.chmod(socketPath, 0o600);
    return new EmbeddedServer(client, socketPath, listener, {
      leaveTimeoutMs: options.leaveTimeoutMs ?? 15_000,
      idleTxTimeoutMs: options.idleTxTimeoutMs ?? 60_000,
    });
  }

  /** How many processes are connected now. */
  get peers(): number {
    return this.#peers.size;
  }

  async #accept(): Promise<void> {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await this.listener.accept();
      } catch {
        return;
      }
      if (this.#closing) {
        await new Peer(conn).writer.write({ push: "leaving" }).catch(() => {});
        conn.close();
        continue;
      }
      const peer = new Peer(conn);
      this.#peers.add(peer);
      this.#serve(peer).finally(() => this.#drop(peer));
    }
  }

  async #serve(peer: Peer): Promise<void> {
    try {
      for await (const request of readFrames<Request>(peer.conn)) {
        this.#dispatch(peer, request);
      }
    } catch (error) {
      log.warn("Dropped the embedded store's connection with process {pid}: {error}", {
        pid: peer.pid,
        error: error instanceof Error ? error.message : String(error),
      });
    }
  }

  #dispatch(peer: Peer, request: Request): void {
    const reply = (r: Reply) => peer.send(r);
    if ("tx" in request && request.tx !== undefined || request.op === "end") {
      const txId = (request as { tx: number }).tx;
      const tx = peer.txs.get(txId);
      if (!tx) {
        reply({
          id: request.id,
          ok: false,
          error: toWireError(new Error("Cannot continue a transaction the store no longer has")),
        });
        return;
      }
      if (tx.aborted) {
        reply({ id: request.id, ok: false, error: toWireError(new Error(tx.aborted)) });
        return;
      }
      tx.commands.push({ request, settle: reply });
      tx.wake?.();
      return;
    }
    if (this.#closing && request.op !== "hello") {
      reply({ id: request.id, moved: true });
      return;
    }
    peer.inFlight++;
    this.#run(peer, request).then(
      reply,
      (error) => reply({ id: request.id, ok: false, error: toWireError(error) }),
    ).finally(() => {
      peer.inFlight--;
      if (peer.quiet) peer.idle?.();
    });
  }

  async #run(peer: Peer, request: Request): Promise<Reply> {
    switch (request.op) {
      case "hello":
        peer.pid = request.pid;
        return { id: request.id, ok: true, value: { pid: Deno.pid } };
      case "query":
        return {
          id: request.id,
          ok: true,
          value: await this.client.query(request.text, request.params),
        };
      case "exec":
        await this.client.exec(request.script);
        return { id: request.id, ok: true, value: null };
      case "listen": {
        if (!peer.listens.has(request.channel)) {
          const stop = await this.client.listen(
            request.channel,
            (payload) => peer.send({ push: "notify", channel: request.channel, payload }),
          );
          peer.listens.set(request.channel, stop);
        }
        return { id: request.id, ok: true, value: null };
      }
      case "unlisten": {
        const stop = peer.listens.get(request.channel);
        peer.listens.delete(request.channel);
        await stop?.();
        return { id: request.id, ok: true, value: null };
      }
      case "begin":
        return await this.#begin(peer, request.id);
      default:
        throw new Error(`Cannot serve "${(request as { op: string }).op}" outside a transaction`);
    }
  }

  /** Opens a transaction for `peer`: answers once PGlite's backend is held for it. */
  #begin(peer: Peer, requestId: number): Promise<Reply> {
    const id = ++this.#txSeq;
    const tx: RemoteTx = { id, commands: [], wake: undefined, aborted: undefined, end: undefined };
    const next = (): Promise<{ request: Request; settle: (r: Reply) => void } | undefined> => {
      if (tx.aborted) return Promise.resolve(undefined);
      const ready = tx.commands.shift();
      if (ready) return Promise.resolve(ready);
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          tx.aborted ??= "Transaction rolled back: it stayed idle too long (or its process hung)";
          tx.wake?.();
        }, this.options.idleTxTimeoutMs);
        tx.wake = () => {
          clearTimeout(timer);
          tx.wake = undefined;
          resolve(tx.aborted ? undefined : tx.commands.shift());
        };
      });
    };
    return new Promise<Reply>((answer) => {
      this.client.transaction(async (db) => {
        peer.txs.set(id, tx);
        answer({ id: requestId, ok: true, value: id });
        while (true) {
          const command = await next();
          if (!command) throw new Rollback();
          const { request, settle } = command;
          if (request.op === "end") {
            tx.end = { id: request.id, commit: request.commit, settle };
            if (request.commit) return;
            throw new Rollback();
          }
          try {
            if (request.op === "query") {
              const rows = await db.query(request.text, request.params);
              settle({ id: request.id, ok: true, value: rows });
            } else if (request.op === "exec") {
              await db.exec(request.script);
              settle({ id: request.id, ok: true, value: null });
            } else {
              throw new Error(`Cannot serve "${request.op}" inside a transaction`);
            }
          } catch (error) {
            settle({ id: request.id, ok: false, error: toWireError(error) });
          }
        }
      }).then(
        () => tx.end?.settle({ id: tx.end.id, ok: true, value: null }),
        (error) => {
          if (!tx.end) return;
          if (error instanceof Rollback && !tx.end.commit) {
            tx.end.settle({ id: tx.end.id, ok: true, value: null });
          } else {
            tx.end.settle({ id: tx.end.id, ok: false, error: toWireError(error) });
          }
        },
      ).catch(() => {}).finally(() => {
        peer.txs.delete(id);
        const reason = tx.aborted ?? "Cannot continue a transaction that has ended";
        for (const c of tx.commands.splice(0)) {
          c.settle({ id: c.request.id, ok: false, error: toWireError(new Error(reason)) });
        }
        if (peer.quiet) peer.idle?.();
      });
      // A transaction that could not even start (PGlite closed) answers the begin itself.
    }).catch((error) => ({ id: requestId, ok: false, error: toWireError(error) }) as Reply);
  }

  async #drop(peer: Peer): Promise<void> {
    this.#peers.delete(peer);
    for (const tx of peer.txs.values()) {
      tx.aborted ??= "Transaction rolled back: its process disconnected";
      tx.wake?.();
    }
    for (const stop of peer.listens.values()) await stop().catch(() => {});
    peer.listens.clear();
    try {
      peer.conn.close();
    } catch { /* closed */ }
  }

  /**
   * Leaves in order: no new work, answers what was accepted, lets transactions finish (rolls
   * back those still open after `leaveTimeoutMs`), says `leaving` and closes every connection.
   */
  async close(): Promise<void> {
    if (this.#closing) return;
    this.#closing = true;
    try {
      this.listener.close();
    } catch { /* closed */ }
    await Deno.remove(this.socketPath).catch(() => {});
    const deadline = Date.now() + this.options.leaveTimeoutMs;
    await Promise.all([...this.#peers].map(async (peer) => {
      if (!peer.quiet) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        await new Promise<void>((resolve) => {
          peer.idle = resolve;
          timer = setTimeout(() => {
            for (const tx of peer.txs.values()) {
              tx.aborted ??=
                "Transaction rolled back: the process owning the embedded store is exiting";
              tx.wake?.();
            }
          }, Math.max(0, deadline - Date.now()));
        });
        clearTimeout(timer);
      }
      await peer.writer.write({ push: "leaving" }).catch(() => {});
      try {
        peer.conn.close();
      } catch { /* closed */ }
    }));
    await this.#accepting;
  }
}
