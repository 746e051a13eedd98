/**
 * Carrel's version, recorded with every run (next to its DAG version) so that a run's code can be
 * told apart from a later engine's. Raise it with every release.
 *
 * @module
 */

/** This Carrel's version (semantic versioning). */
export const CARREL_VERSION = "0.14.0";
