/**
 * The embedded store shared by any number of Carrel processes on one `CARREL_HOME`.
 *
 * PGlite is one PostgreSQL backend inside one process: two processes opening the same data
 * folder corrupt it. So the first process to open `CARREL_HOME/state` takes an exclusive lock on
 * `CARREL_HOME/state.lock` and becomes the store's **owner**: it runs PGlite and serves it to the
 * others over the Unix socket `CARREL_HOME/state.sock` (both 0600, in the 0700 `CARREL_HOME`).
 * Every other process is a **guest**: its statements and transactions run in the owner, taking
 * turns with the owner's own, with exactly PGlite's semantics (one backend, so a transaction
 * excludes every other statement). When the owner exits, it first answers everything it accepted
 * and lets open transactions finish; a guest then takes the lock and becomes the owner (or
 * connects to whichever guest did), and sends again what the old owner did not execute. The
 * store code above this cannot tell: `EmbeddedClient` is an ordinary `SqlClient`.
 *
 * A guest waits for an owner up to `waitMs` (default 60 s, `CARREL_STORE_WAIT`), then fails
 * naming the process that holds the lock.
 *
 * @module
 */
import { getLogger } from "@logtape/logtape";
import { createHash } from "node:crypto";
import { basename, dirname, join } from "node:path";
import { PgliteClient, type SqlClient } from "./sql_client.ts";
import { EmbeddedServer } from "./embedded_server.ts";
import {
  FrameWriter,
  fromWireError,
  readFrames,
  type Reply,
  type Request,
} from "./embedded_wire.ts";
import { privateTree } from "./embedded_files.ts";
import { sleep } from "../sleep.ts";
import { errorMessage } from "../errors.ts";

const log = getLogger(["carrel", "store"]);

/** The lock file and socket of an embedded data folder. */
export interface EmbeddedPaths {
  dataDir: string;
  lockFile: string;
  socket: string;
}

/**
 * Where the lock and the socket of `dataDir` live: beside it. A Unix socket path is limited to
 * 107 bytes; a longer one goes to a private folder under the temporary folder, named by a hash
 * of the data folder's path, so every process finds the same one.
 *
 * @example
 * ```ts
 * import { embeddedPaths } from "./embedded_client.ts";
 * embeddedPaths("/srv/carrel/state").socket; // "/srv/carrel/state.sock"
 * ```
 */
export function embeddedPaths(dataDir: string): EmbeddedPaths {
  const parent = dirname(dataDir);
  const name = basename(dataDir);
  let socket = join(parent, `${name}.sock`);
  if (new TextEncoder().encode(socket).length > 100) {
    const hash = createHash("sha256").update(dataDir).digest("hex").slice(0, 16);
    socket = join(Deno.env.get("TMPDIR") ?? "/tmp", `carrel-${Deno.uid() ?? 0}-${hash}`, "s.sock");
  }
  return { dataDir, lockFile: join(parent, `${name}.lock`), socket };
}

/**
 * Makes sure the socket's folder is private and ours: the fallback folder under the temporary
 * folder could have been made by another user to catch the store's traffic.
 */
async function privateSocketFolder(socket: string): Promise<void> {
  const folder = dirname(socket);
  await Deno.mkdir(folder, { recursive: true, mode: 0o700 });
  const info = await Deno.stat(folder);
  const uid = Deno.uid();
  if (uid !== null && info.uid !== uid) {
    throw new EmbeddedStoreError(
      `Cannot share the embedded store through ${folder}: the folder belongs to another user; choose a CARREL_HOME you own`,
    );
  }
  if (((info.mode ?? 0) & 0o077) !== 0) await Deno.chmod(folder, 0o700);
}

/** The owner exited, or is exiting, before executing a statement: send it to the next owner. */
class Moved extends Error {
  override name = "Moved";
}

/** The store could not be reached in time, or the owner died during a statement. */
export class EmbeddedStoreError extends Error {
  override name = "EmbeddedStoreError";
}

/** A guest's connection to the owner. */
class OwnerLink {
  readonly writer: FrameWriter;
  readonly #pending = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();
  #nextId = 0;
  /** Why this link can take no more requests; set once. */
  gone: "leaving" | "lost" | undefined;
  readonly closed: Promise<void>;
  ownerPid = 0;

  constructor(
    readonly conn: Deno.Conn,
    readonly onNotify: (channel: string, payload: string) => void,
  ) {
    this.writer = new FrameWriter(conn);
    this.closed = this.#read();
  }

  async #read(): Promise<void> {
    try {
      for await (const reply of readFrames<Reply>(this.conn)) {
        if ("push" in reply) {
          if (reply.push === "notify") this.onNotify(reply.channel, reply.payload);
          else this.gone ??= "leaving";
          continue;
        }
        const waiter = this.#pending.get(reply.id);
        if (!waiter) continue;
        this.#pending.delete(reply.id);
        if ("moved" in reply) waiter.reject(new Moved());
        else if (reply.ok) waiter.resolve(reply.value);
        else waiter.reject(fromWireError(reply.error));
      }
    } catch { /* the connection broke: handled below */ }
    this.gone ??= "lost";
    const unanswered = [...this.#pending.values()];
    this.#pending.clear();
    for (const waiter of unanswered) {
      // After "leaving", the owner had answered all it executed: the rest never ran.
      waiter.reject(
        this.gone === "leaving" ? new Moved() : new EmbeddedStoreError(
          `The process owning the embedded store (pid ${this.ownerPid}) exited during a statement; its outcome is unknown (resume the run to finish it)`,
        ),
      );
    }
    try {
      this.conn.close();
    } catch { /* closed */ }
  }

  /** Sends a request and waits for its answer. */
  request(body: DistributiveOmit<Request, "id">): Promise<unknown> {
    if (this.gone) return Promise.reject(new Moved());
    const id = ++this.#nextId;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.writer.write({ ...body, id } as Request).catch(() => {
        // Not written: it never ran.
        if (this.#pending.delete(id)) reject(new Moved());
      });
    });
  }

  close(): void {
    this.gone ??= "leaving";
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

type Mode =
  | { role: "owner"; pglite: PgliteClient; server: EmbeddedServer }
  | { role: "guest"; link: OwnerLink };

/** A transaction a guest holds in the owner. */
class GuestTx implements SqlClient {
  readonly kind = "pglite" as const;
  constructor(readonly link: OwnerLink, readonly tx: number) {}
  async query<T>(text: string, params: readonly unknown[] = []): Promise<T[]> {
    return await this.link.request({ op: "query", text, params: [...params], tx: this.tx }) as T[];
  }
  async exec(script: string): Promise<void> {
    await this.link.request({ op: "exec", script, tx: this.tx });
  }
  transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T> {
    return fn(this);
  }
  listen(): Promise<() => Promise<void>> {
    return Promise.reject(new Error("Cannot LISTEN inside a transaction"));
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

/** Options of {@linkcode EmbeddedClient.open}. */
export interface EmbeddedOptions {
  /** How long a guest waits for an owner to answer. Default `CARREL_STORE_WAIT` or 60 s. */
  waitMs?: number;
  /** How long a leaving owner lets open transactions of guests finish. Default 15 s. */
  leaveTimeoutMs?: number;
}

/**
 * The embedded store's client: the owner's PGlite in this process, or the owner's over the
 * socket, switching when the owner changes.
 *
 * @example
 * ```ts ignore
 * import { EmbeddedClient } from "./embedded_client.ts";
 * const client = await EmbeddedClient.open("/srv/carrel/state");
 * console.log(client.role, await client.query("SELECT 1 AS one"));
 * await client.close();
 * ```
 */
export class EmbeddedClient implements SqlClient {
  readonly kind = "pglite" as const;
  readonly paths: EmbeddedPaths;
  #mode: Mode | undefined;
  #switching: Promise<Mode> | undefined;
  #lock: Deno.FsFile | undefined;
  #closed = false;
  readonly #listeners = new Map<string, Set<(payload: string) => void>>();
  readonly #localUnlisten = new Map<string, () => Promise<void>>();
  readonly #waitMs: number;
  readonly #leaveTimeoutMs: number;

  private constructor(dataDir: string, options: EmbeddedOptions) {
    this.paths = embeddedPaths(dataDir);
    const env = Number(Deno.env.get("CARREL_STORE_WAIT") ?? "");
    this.#waitMs = options.waitMs ?? (env > 0 ? env * 1000 : 60_000);
    this.#leaveTimeoutMs = options.leaveTimeoutMs ?? 15_000;
  }

  /** Opens the embedded store in `dataDir`: as its owner, or as a guest of the process that is. */
  static async open(dataDir: string, options: EmbeddedOptions = {}): Promise<EmbeddedClient> {
    const client = new EmbeddedClient(dataDir, options);
    await client.#current();
    return client;
  }

  /** `owner` when PGlite runs in this process, `guest` when another process serves it. */
  get role(): "owner" | "guest" | "closed" {
    return this.#closed ? "closed" : this.#mode?.role ?? "guest";
  }

  /** The pid of the process running PGlite. */
  get ownerPid(): number {
    return this.#mode?.role === "guest" ? this.#mode.link.ownerPid : Deno.pid;
  }

  #current(): Promise<Mode> {
    if (this.#closed) return Promise.reject(new Error("Cannot use the state store: it is closed"));
    const mode = this.#mode;
    if (mode && (mode.role === "owner" || !mode.link.gone)) return Promise.resolve(mode);
    this.#switching ??= this.#connect().finally(() => (this.#switching = undefined));
    return this.#switching;
  }

  /** Becomes the owner, or a guest of the owner, within the wait limit. */
  async #connect(): Promise<Mode> {
    this.#mode = undefined;
    const started = Date.now();
    let delay = 20;
    let warned = false;
    let lastError = "";
    await privateSocketFolder(this.paths.socket);
    while (true) {
      if (this.#closed) throw new Error("Cannot use the state store: it is closed");
      const owned = await this.#tryOwn();
      if (owned) return this.#mode = owned;
      try {
        const link = await this.#join();
        this.#mode = { role: "guest", link };
        await this.#relisten();
        // Listeners must hear the next owner too: follow the owner change at once.
        link.closed.then(() => {
          if (this.#closed || this.#listeners.size === 0 || this.#mode?.role !== "guest") return;
          if (this.#mode.link !== link) return;
          this.#current().catch((error) =>
            log.error("Cannot follow the embedded store's new owner: {error}", {
              error: error instanceof Error ? error.message : String(error),
            })
          );
        });
        return this.#mode;
      } catch (error) {
        lastError = error instanceof Error ? error.message : String(error);
      }
      const waited = Date.now() - started;
      if (waited > this.#waitMs) {
        const holder = await this.#holder();
        throw new EmbeddedStoreError(
          `Cannot open the embedded store ${this.paths.dataDir}: ${holder} holds ${this.paths.lockFile} but does not answer on ${this.paths.socket} (waited ${
            Math.round(waited / 1000)
          }s; ${lastError}). Wait for it to finish or stop it; set CARREL_STORE_WAIT to wait longer`,
        );
      }
      if (!warned && waited > 2_000) {
        warned = true;
        log.warn("Waiting for the embedded store: {holder} is opening it", {
          holder: await this.#holder(),
        });
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 250);
    }
  }

  /** Who holds the lock, for messages. */
  async #holder(): Promise<string> {
    const text = await Deno.readTextFile(this.paths.lockFile).catch(() => "");
    const pid = /^\d+/.exec(text.trim())?.[0];
    return pid ? `process ${pid}` : "another process";
  }

  /** Takes the lock and starts PGlite and the server; undefined when another process owns it. */
  async #tryOwn(): Promise<Mode | undefined> {
    this.#lock ??= await Deno.open(this.paths.lockFile, {
      read: true,
      write: true,
      create: true,
      mode: 0o600,
    });
    if (!(await this.#lock.tryLock(true))) return undefined;
    try {
      await Deno.chmod(this.paths.lockFile, 0o600);
      await this.#lock.truncate(0);
      await this.#lock.write(new TextEncoder().encode(`${Deno.pid}\n`));
      await Deno.mkdir(this.paths.dataDir, { recursive: true, mode: 0o700 });
      const pglite = await PgliteClient.open(this.paths.dataDir);
      await privateTree(this.paths.dataDir);
      const server = await EmbeddedServer.start(pglite, this.paths.socket, {
        leaveTimeoutMs: this.#leaveTimeoutMs,
      });
      const mode: Mode = { role: "owner", pglite, server };
      this.#mode = mode;
      await this.#relisten();
      return mode;
    } catch (error) {
      await this.#lock.unlock().catch(() => {});
      throw new EmbeddedStoreError(
        `Cannot open the embedded store ${this.paths.dataDir}: ${errorMessage(error)}`,
        { cause: error },
      );
    }
  }

  async #join(): Promise<OwnerLink> {
    const conn = await Deno.connect({ transport: "unix", path: this.paths.socket });
    const link = new OwnerLink(conn, (channel, payload) => this.#notify(channel, payload));
    try {
      const hello = await link.request({ op: "hello", pid: Deno.pid }) as { pid: number };
      link.ownerPid = hello.pid;
      return link;
    } catch (error) {
      link.close();
      throw error instanceof Moved ? new Error("the owner is leaving") : error;
    }
  }

  #notify(channel: string, payload: string): void {
    for (const fn of this.#listeners.get(channel) ?? []) fn(payload);
  }

  /** Subscribes again, after a change of owner, to every channel listened to. */
  async #relisten(): Promise<void> {
    const mode = this.#mode;
    if (!mode) return;
    for (const channel of this.#listeners.keys()) await this.#subscribe(mode, channel);
  }

  async #subscribe(mode: Mode, channel: string): Promise<void> {
    if (mode.role === "owner") {
      if (this.#localUnlisten.has(channel)) return;
      this.#localUnlisten.set(
        channel,
        await mode.pglite.listen(channel, (payload) => this.#notify(channel, payload)),
      );
    } else {
      await mode.link.request({ op: "listen", channel });
    }
  }

  /** Runs `fn` on the current owner; sends again what a leaving owner did not execute. */
  async #call<T>(fn: (mode: Mode) => Promise<T>): Promise<T> {
    while (true) {
      const mode = await this.#current();
      try {
        return await fn(mode);
      } catch (error) {
        if (!(error instanceof Moved)) throw error;
        if (mode.role === "guest") mode.link.gone ??= "leaving";
      }
    }
  }

  query<T = Record<string, unknown>>(text: string, params: readonly unknown[] = []): Promise<T[]> {
    return this.#call(async (mode) =>
      mode.role === "owner"
        ? await mode.pglite.query<T>(text, params)
        : await mode.link.request({ op: "query", text, params: [...params] }) as T[]
    );
  }

  exec(script: string): Promise<void> {
    return this.#call(async (mode) => {
      if (mode.role === "owner") await mode.pglite.exec(script);
      else await mode.link.request({ op: "exec", script });
    });
  }

  transaction<T>(fn: (tx: SqlClient) => Promise<T>): Promise<T> {
    return this.#call(async (mode) => {
      if (mode.role === "owner") return await mode.pglite.transaction(fn);
      const link = mode.link;
      const tx = await link.request({ op: "begin" }) as number;
      let result: T;
      try {
        result = await fn(new GuestTx(link, tx));
      } catch (error) {
        await link.request({ op: "end", tx, commit: false }).catch(() => {});
        // Never sent again as a whole: the caller's transaction body is not repeated.
        if (error instanceof Moved) {
          throw new EmbeddedStoreError(
            "The process owning the embedded store exited during the transaction; it was rolled back",
          );
        }
        throw error;
      }
      try {
        await link.request({ op: "end", tx, commit: true });
      } catch (error) {
        // A transaction is never sent again: a lost commit is reported, not repeated.
        if (error instanceof Moved) {
          throw new EmbeddedStoreError(
            "The process owning the embedded store exited before the transaction committed; it was rolled back",
          );
        }
        throw error;
      }
      return result;
    });
  }

  async listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>> {
    let set = this.#listeners.get(channel);
    if (!set) this.#listeners.set(channel, set = new Set());
    set.add(onNotify);
    await this.#call((mode) => this.#subscribe(mode, channel));
    return async () => {
      set.delete(onNotify);
      if (set.size > 0) return;
      this.#listeners.delete(channel);
      const mode = this.#mode;
      if (mode?.role === "owner") {
        await this.#localUnlisten.get(channel)?.();
        this.#localUnlisten.delete(channel);
      } else if (mode?.role === "guest" && !mode.link.gone) {
        await mode.link.request({ op: "unlisten", channel }).catch(() => {});
      }
    };
  }

  /** Closes: a guest disconnects; the owner hands over in order and releases the lock. */
  async close(): Promise<void> {
    if (this.#closed) return;
    // First: a wait for an owner in progress gives up at once instead of waiting its limit.
    this.#closed = true;
    await this.#switching?.catch(() => {});
    const mode = this.#mode;
    this.#mode = undefined;
    try {
      if (mode?.role === "owner") {
        await mode.server.close();
        for (const stop of this.#localUnlisten.values()) await stop().catch(() => {});
        this.#localUnlisten.clear();
        await mode.pglite.close();
        await privateTree(this.paths.dataDir).catch(() => {});
      } else if (mode?.role === "guest") {
        mode.link.close();
        await mode.link.closed;
      }
    } finally {
      if (this.#lock) {
        await this.#lock.unlock().catch(() => {});
        this.#lock.close();
        this.#lock = undefined;
      }
    }
  }
}
