/**
 * Who runs something: an owner id (`host:pid:nonce`) recorded on runs and task instances, and
 * the check that tells whether an owner on this host is still alive.
 *
 * @module
 */

const NONCE = crypto.randomUUID().slice(0, 8);

/** This process's owner id. */
export function ownerId(): string {
  return `${Deno.hostname()}:${Deno.pid}:${NONCE}`;
}

/**
 * True when `owner` names a process on this host that no longer runs: gone, or a zombie (it has
 * exited and only waits for its parent to collect it). Owners on other hosts are judged by their
 * lease instead.
 *
 * @example
 * ```ts
 * import { ownerId, ownerIsDead } from "./owner.ts";
 * ownerIsDead(ownerId()); // false
 * ```
 */
export function ownerIsDead(owner: string | null): boolean {
  if (!owner) return true;
  const [host, pid] = owner.split(":");
  if (host !== Deno.hostname() || !pid) return false;
  if (Number(pid) === Deno.pid) return owner !== ownerId();
  if (Deno.build.os !== "linux") return false;
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return true;
  }
  // `pid (comm) state ...`: the command may hold spaces and parentheses, the state follows the
  // last ")".
  const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  return state === "Z" || state === "X";
}
