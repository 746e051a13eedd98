/**
 * What the file-mode tests check: every folder under a root is 0700 and no file is readable by
 * group or others (this module declares no tests).
 *
 * @module
 */
import { join } from "node:path";

/** The paths under `root` that are not private, with their modes, and how many files were seen. */
export async function looseModes(root: string): Promise<{ loose: string[]; files: number }> {
  const loose: string[] = [];
  let files = 0;
  const walk = async (p: string) => {
    const info = await Deno.lstat(p);
    const mode = info.mode! & 0o777;
    if (info.isDirectory) {
      if (mode !== 0o700) loose.push(`${p} ${mode.toString(8)}`);
      for await (const e of Deno.readDir(p)) await walk(join(p, e.name));
    } else {
      files++;
      if (mode & 0o077) loose.push(`${p} ${mode.toString(8)}`);
    }
  };
  await walk(root);
  return { loose, files };
}
