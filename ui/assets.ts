/**
 * The console's static assets (stylesheet, script), read once from `ui/assets/` and served
 * from the console itself: no CDN, no third-party host.
 *
 * @module
 */

const DIR = new URL("./assets/", import.meta.url);

const TYPES: Record<string, string> = {
  css: "text/css; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  svg: "image/svg+xml",
};

async function load(): Promise<Record<string, { type: string; body: Uint8Array<ArrayBuffer> }>> {
  const out: Record<string, { type: string; body: Uint8Array<ArrayBuffer> }> = {};
  for await (const entry of Deno.readDir(DIR)) {
    const ext = entry.name.split(".").pop() ?? "";
    if (!entry.isFile || !TYPES[ext]) continue;
    out[entry.name] = {
      type: TYPES[ext]!,
      body: new Uint8Array(await Deno.readFile(new URL(entry.name, DIR))),
    };
  }
  return out;
}

/** The assets by file name. */
export const ASSETS: Readonly<Record<string, { type: string; body: Uint8Array<ArrayBuffer> }>> =
  await load();
