/**
 * Private files: everything under `CARREL_HOME` is readable by its owner only (folders 0700,
 * files 0600), whatever the umask and whatever the parent folder allows. PGlite's emscripten
 * file system creates files 0666 and folders 0755, so its data folder is swept when it is opened
 * and closed (between the two, the 0700 folders keep others out).
 *
 * @module
 */

/**
 * Makes `path` private: 0700 for a folder and everything in it, 0600 for files. Symbolic links
 * are left alone (never followed).
 *
 * @example
 * ```ts ignore
 * import { privateTree } from "./embedded_files.ts";
 * await privateTree("/srv/carrel/state");
 * ```
 */
export async function privateTree(path: string): Promise<void> {
  const info = await Deno.lstat(path).catch(() => undefined);
  if (!info || info.isSymlink) return;
  if (info.isDirectory) {
    if ((info.mode ?? 0) & 0o077 || ((info.mode ?? 0) & 0o700) !== 0o700) {
      await Deno.chmod(path, 0o700);
    }
    for await (const entry of Deno.readDir(path)) await privateTree(`${path}/${entry.name}`);
  } else if (info.isFile && (info.mode ?? 0) & 0o077) {
    await Deno.chmod(path, (info.mode ?? 0o600) & 0o700);
  }
}

/**
 * Creates `CARREL_HOME` (0700) or makes an existing one private: a folder readable by others is
 * tightened to 0700; one that cannot be tightened (owned by another user) is refused, since run
 * workspaces, logs and the store live in it.
 *
 * @example
 * ```ts ignore
 * import { ensurePrivateHome } from "./embedded_files.ts";
 * await ensurePrivateHome("/var/lib/carrel");
 * ```
 */
export async function ensurePrivateHome(home: string): Promise<void> {
  await Deno.mkdir(home, { recursive: true, mode: 0o700 });
  const info = await Deno.stat(home);
  if (!info.isDirectory) {
    throw new Error(`Cannot use CARREL_HOME ${home}: it is not a folder`);
  }
  if (((info.mode ?? 0) & 0o777) === 0o700) return;
  try {
    await Deno.chmod(home, 0o700);
  } catch {
    throw new Error(
      `Cannot use CARREL_HOME ${home}: it is readable by others (mode ${
        ((info.mode ?? 0) & 0o777).toString(8)
      }) and cannot be made private (owned by another user?); run \`chmod 700 ${home}\` as its owner or choose another CARREL_HOME`,
    );
  }
}
