/**
 * The Worker that tries DAG files before the loader imports them for real: it imports each file
 * it is sent, one after another, and says when each starts and ends. A file that never finishes
 * (an endless loop, a top-level await that never resolves) blocks only this Worker, which the
 * loader terminates at its time limit. Not part of the public API.
 *
 * @module
 */

/** What the loader sends: file URLs to import all at once, or one after another. */
export interface ProbeRequest {
  urls: string[];
  sequential: boolean;
}

/** What the probe says about file number `index` of the request. */
export type ProbeEvent =
  | { index: -1; event: "ready" }
  | { index: number; event: "start" }
  | { index: number; event: "done" }
  | { index: number; event: "failed"; message: string };

/** The Worker's global scope, as far as the probe uses it. */
interface ProbeScope {
  onmessage: ((e: MessageEvent<ProbeRequest>) => void) | null;
  postMessage(message: ProbeEvent): void;
}

const scope = globalThis as unknown as ProbeScope;

async function probeOne(index: number, url: string): Promise<void> {
  scope.postMessage({ index, event: "start" });
  try {
    await import(url);
    scope.postMessage({ index, event: "done" });
  } catch (error) {
    scope.postMessage({
      index,
      event: "failed",
      message: error instanceof Error ? error.message : String(error),
    });
  }
}

scope.onmessage = async (e) => {
  const { urls, sequential } = e.data;
  // The engine every DAG file imports loads before the clock starts: a cold module cache on a
  // busy machine must not count against the first file's time limit.
  await import("./mod.ts");
  scope.postMessage({ index: -1, event: "ready" });
  if (!sequential) {
    await Promise.all(urls.map((url, index) => probeOne(index, url)));
    return;
  }
  for (const [index, url] of urls.entries()) await probeOne(index, url);
};
