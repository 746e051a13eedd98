/**
 * Path helpers.
 *
 * @module
 */
import { pathToFileURL } from "node:url";

/** A `file://` URL for an absolute path. */
export function toFileUrl(path: string): string {
  return pathToFileURL(path).href;
}
