/**
 * Who may use the console: no login on loopback, a shared token, or a users file with scrypt
 * password hashes and roles. Sessions live in memory behind HttpOnly, SameSite=Strict cookies;
 * every session carries its own CSRF token.
 *
 * @module
 */
import { scrypt, timingSafeEqual } from "node:crypto";
import { UsageError } from "../core/errors.ts";

/** `viewer` reads; `operator` also acts (trigger, clear, pause). */
export type Role = "viewer" | "operator";

/** A person (or the token, or the local user) behind a request. */
export interface Principal {
  name: string;
  role: Role;
}

/** How people authenticate. */
export interface AuthConfig {
  /** The shared token (`CARREL_UI_TOKEN` or `--token-file`); it acts as an operator. */
  token?: string;
  /** Users by name, from `--users FILE`. */
  users?: Map<string, { role: Role; hash: string }>;
}

/** True when some authentication is configured. */
export function authRequired(config: AuthConfig): boolean {
  return config.token !== undefined || (config.users?.size ?? 0) > 0;
}

const SCRYPT = { N: 16384, r: 8, p: 1, keylen: 32 };
const MIN_TOKEN_LENGTH = 24;

function scryptAsync(
  password: string,
  salt: Uint8Array,
  options: { N: number; r: number; p: number; keylen: number },
): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    scrypt(
      password,
      salt,
      options.keylen,
      { N: options.N, r: options.r, p: options.p, maxmem: 64 * 1024 * 1024 },
      (error, key) => (error ? reject(error) : resolve(new Uint8Array(key))),
    );
  });
}

const b64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes));
const unb64 = (text: string) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

/**
 * Hashes a password for the users file: `scrypt$N$r$p$salt$key` (base64).
 *
 * @example
 * ```ts
 * import { hashPassword, verifyPassword } from "./auth.ts";
 * const hash = await hashPassword("correct horse battery staple");
 * await verifyPassword("correct horse battery staple", hash); // true
 * ```
 */
export async function hashPassword(password: string): Promise<string> {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const key = await scryptAsync(password, salt, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${b64(salt)}$${b64(key)}`;
}

/** Checks a password against a `scrypt$...` hash in constant time. */
export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  const parts = hash.split("$");
  if (parts.length !== 6 || parts[0] !== "scrypt") return false;
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number];
  if (![N, r, p].every((x) => Number.isInteger(x) && x > 0) || N > 2 ** 20) return false;
  let salt: Uint8Array, expected: Uint8Array;
  try {
    salt = unb64(parts[4]!);
    expected = unb64(parts[5]!);
  } catch {
    return false;
  }
  const key = await scryptAsync(password, salt, { N, r, p, keylen: expected.length });
  return key.length === expected.length && timingSafeEqual(key, expected);
}

/** Compares two secrets in constant time (for tokens and CSRF tokens). */
export function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Reads a users file: `{"users": [{"name": "alice", "role": "operator", "password": "scrypt$..."}]}`.
 * Refused when group or others may read it, or when an entry is malformed (naming the entry,
 * never a hash).
 */
export async function loadUsersFile(
  file: string,
): Promise<Map<string, { role: Role; hash: string }>> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(file);
  } catch {
    throw new UsageError(`Cannot read the users file ${file}: it does not exist`);
  }
  if (info.mode !== null && (info.mode & 0o077) !== 0) {
    throw new UsageError(
      `Cannot use the users file ${file}: group or others may read it (chmod 600 ${file})`,
    );
  }
  let doc: unknown;
  try {
    doc = JSON.parse(await Deno.readTextFile(file));
  } catch {
    throw new UsageError(`Cannot read the users file ${file}: it is not valid JSON`);
  }
  const list = (doc as { users?: unknown })?.users;
  if (!Array.isArray(list) || list.length === 0) {
    throw new UsageError(`Cannot read the users file ${file}: expected {"users": [...]}`);
  }
  const users = new Map<string, { role: Role; hash: string }>();
  list.forEach((u, i) => {
    const { name, role, password } = (u ?? {}) as Record<string, unknown>;
    if (typeof name !== "string" || !/^[A-Za-z0-9._@-]{1,64}$/.test(name)) {
      throw new UsageError(`Invalid users file ${file}: users[${i}].name`);
    }
    if (role !== "viewer" && role !== "operator") {
      throw new UsageError(
        `Invalid users file ${file}: users[${i}].role: expected "viewer" or "operator"`,
      );
    }
    if (typeof password !== "string" || !password.startsWith("scrypt$")) {
      throw new UsageError(
        `Invalid users file ${file}: users[${i}].password: expected a hash from \`carrel ui hash-password\``,
      );
    }
    users.set(name, { role, hash: password });
  });
  return users;
}

/** Checks a token's strength. */
export function checkToken(token: string, source: string): string {
  if (token.length < MIN_TOKEN_LENGTH) {
    throw new UsageError(
      `Invalid ${source}: a console token needs at least ${MIN_TOKEN_LENGTH} characters`,
    );
  }
  return token;
}

/** A login session. */
export interface Session {
  id: string;
  principal: Principal | null;
  csrf: string;
  expiresAt: number;
}

const randomToken = () =>
  b64(crypto.getRandomValues(new Uint8Array(32))).replace(/\+/g, "-")
    .replace(/\//g, "_").replace(/=+$/, "");

/** Sessions in memory, each expiring after `idleMs` without use. */
export class Sessions {
  readonly #sessions = new Map<string, Session>();
  constructor(readonly idleMs = 8 * 60 * 60 * 1000, readonly max = 10_000) {}

  /** A new session (anonymous until `login`). */
  create(principal: Principal | null = null): Session {
    this.#sweep();
    const session = {
      id: randomToken(),
      principal,
      csrf: randomToken(),
      expiresAt: Date.now() + this.idleMs,
    };
    this.#sessions.set(session.id, session);
    return session;
  }

  /** The live session of a cookie value, its expiry pushed forward. */
  get(id: string | undefined): Session | undefined {
    if (!id) return undefined;
    const s = this.#sessions.get(id);
    if (!s) return undefined;
    if (s.expiresAt < Date.now()) {
      this.#sessions.delete(id);
      return undefined;
    }
    s.expiresAt = Date.now() + this.idleMs;
    return s;
  }

  /** Replaces a session by a fresh one for `principal` (no session fixation). */
  login(old: Session | undefined, principal: Principal): Session {
    if (old) this.#sessions.delete(old.id);
    return this.create(principal);
  }

  delete(id: string): void {
    this.#sessions.delete(id);
  }

  #sweep(): void {
    if (this.#sessions.size < this.max) return;
    const now = Date.now();
    for (const [id, s] of this.#sessions) if (s.expiresAt < now) this.#sessions.delete(id);
    while (this.#sessions.size >= this.max) {
      const oldest = this.#sessions.keys().next().value;
      if (oldest === undefined) break;
      this.#sessions.delete(oldest);
    }
  }
}

/** Failed logins by client address: at most `limit` per `windowMs`. */
export class LoginThrottle {
  readonly #failures = new Map<string, number[]>();
  constructor(readonly limit = 10, readonly windowMs = 5 * 60 * 1000) {}

  blocked(client: string): boolean {
    const since = Date.now() - this.windowMs;
    const list = (this.#failures.get(client) ?? []).filter((t) => t > since);
    this.#failures.set(client, list);
    return list.length >= this.limit;
  }

  fail(client: string): void {
    const list = this.#failures.get(client) ?? [];
    list.push(Date.now());
    this.#failures.set(client, list);
  }
}

/**
 * Checks login credentials against the configuration: the token (as `token`), or a user's
 * name and password.
 */
export async function authenticate(
  config: AuthConfig,
  credentials: { token?: string; name?: string; password?: string },
): Promise<Principal | null> {
  if (credentials.token && config.token && sameSecret(credentials.token, config.token)) {
    return { name: "token", role: "operator" };
  }
  if (credentials.name && credentials.password && config.users) {
    const user = config.users.get(credentials.name);
    // Hash even for unknown users, so the response time does not tell which names exist.
    const ok = await verifyPassword(credentials.password, user?.hash ?? DUMMY_HASH);
    if (user && ok) return { name: credentials.name, role: user.role };
  }
  return null;
}

const DUMMY_HASH =
  "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/** True for addresses that never leave the machine. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}
