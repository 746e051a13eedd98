-- Carrel state store, version 40: shared-zone datasets stored in the database.
--
-- dataset_chunks: with CARREL_DATASETS=database, the datasets of shared-zone tasks (and value-free
-- ones: quarantine reasons, token crosswalks) are written here in chunks of JSON Lines instead of
-- files under CARREL_HOME, so workers on different machines need no common CARREL_HOME. Enclave
-- datasets never come here: they stay encrypted files of the process that wrote them.
-- `path` is the dataset's path as a file would have it (the reference stored as a task's output
-- names it); `seq` orders its chunks. Purging a run deletes its chunks (cascade).
CREATE TABLE IF NOT EXISTS dataset_chunks (
  run_id   text NOT NULL REFERENCES dag_runs (run_id) ON DELETE CASCADE,
  path     text NOT NULL,
  seq      integer NOT NULL,
  records  integer NOT NULL,
  body     text NOT NULL,
  PRIMARY KEY (path, seq)
);
CREATE INDEX IF NOT EXISTS dataset_chunks_run_idx ON dataset_chunks (run_id);
