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
 * True when `owner` names a process on this host that no longer exists. Owners on other hosts
 * are judged by their lease instead.
 */
export function ownerIsDead(owner: string | null): boolean {
  if (!owner) return true;
  const [host, pid] = owner.split(":");
  if (host !== Deno.hostname() || !pid) return false;
  if (Number(pid) === Deno.pid) return owner !== ownerId();
  try {
    Deno.statSync(`/proc/${pid}`);
    return false;
  } catch {
    return Deno.build.os === "linux";
  }
}
