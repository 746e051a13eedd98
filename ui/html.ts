/**
 * Safe HTML building: a tagged template that escapes every interpolated value unless it is
 * already `Html` (made by the template itself or by `raw` for server-made SVG).
 *
 * @module
 */

/** HTML that is safe to insert as is. */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

const ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Escapes text for HTML content and attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

type Part = Html | string | number | boolean | null | undefined | readonly Part[];

function render(value: Part): string {
  if (value === null || value === undefined || value === false) return "";
  if (value instanceof Html) return value.text;
  if (Array.isArray(value)) return value.map(render).join("");
  return escapeHtml(String(value));
}

/**
 * The HTML template tag: values are escaped, `Html` values and arrays of them are kept.
 *
 * @example
 * ```ts
 * import { html } from "./html.ts";
 * html`<p>${"<b>"}</p>`.text; // "<p>&lt;b&gt;</p>"
 * ```
 */
export function html(strings: TemplateStringsArray, ...values: Part[]): Html {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) out += render(values[i]!) + strings[i + 1]!;
  return new Html(out);
}

/** Marks server-made markup (SVG from the graph renderer) as safe. */
export function raw(text: string): Html {
  return new Html(text);
}

/** A path with each segment URL-encoded: `path("runs", runId)` gives `/runs/x%40...`. */
export function path(...segments: string[]): string {
  return "/" + segments.map(encodeURIComponent).join("/");
}

/** A query string from defined values (`?a=1&b=2`, or "" when none). */
export function query(params: Record<string, string | number | null | undefined>): string {
  const entries = Object.entries(params).filter(([, v]) =>
    v !== undefined && v !== null && v !== ""
  );
  if (entries.length === 0) return "";
  return "?" + new URLSearchParams(entries.map(([k, v]) => [k, String(v)])).toString();
}
