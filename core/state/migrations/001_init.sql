-- Carrel state store, version 1: runs, task instances, DAG flags, the audit trail.
-- Applied by core/state/migrate.ts on PGlite and PostgreSQL alike.

CREATE TABLE IF NOT EXISTS dag_runs (
  run_id          text PRIMARY KEY,
  dag_id          text NOT NULL,
  logical_date    timestamptz NOT NULL,
  interval_start  timestamptz NOT NULL,
  interval_end    timestamptz NOT NULL,
  params          jsonb NOT NULL DEFAULT '{}'::jsonb,
  params_hash     text NOT NULL,
  run_type        text NOT NULL DEFAULT 'manual'
                  CHECK (run_type IN ('manual', 'scheduled', 'backfill', 'triggered')),
  state           text NOT NULL
                  CHECK (state IN ('queued', 'running', 'success', 'failed')),
  owner           text,
  lease_until     timestamptz,
  key_version     text,
  created_at      timestamptz NOT NULL DEFAULT now(),
  started_at      timestamptz,
  ended_at        timestamptz,
  updated_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (dag_id, logical_date)
);
CREATE INDEX IF NOT EXISTS dag_runs_state_idx ON dag_runs (state, dag_id);
CREATE INDEX IF NOT EXISTS dag_runs_created_idx ON dag_runs (created_at);

CREATE TABLE IF NOT EXISTS task_instances (
  job_key          text PRIMARY KEY CHECK (job_key ~ '^[0-9a-f]{64}$'),
  run_id           text NOT NULL REFERENCES dag_runs (run_id) ON DELETE CASCADE,
  dag_id           text NOT NULL,
  task_id          text NOT NULL,
  map_index        integer NOT NULL DEFAULT -1,
  zone             text NOT NULL CHECK (zone IN ('shared', 'enclave')),
  pool             text,
  state            text NOT NULL CHECK (state IN ('scheduled', 'queued', 'running', 'success',
                   'failed', 'up_for_retry', 'upstream_failed', 'skipped')),
  try_number       integer NOT NULL DEFAULT 0,
  max_tries        integer NOT NULL DEFAULT 1,
  next_attempt_at  timestamptz,
  owner            text,
  lease_until      timestamptz,
  started_at       timestamptz,
  ended_at         timestamptz,
  output_kind      text CHECK (output_kind IN ('json', 'dataset', 'enclave')),
  output           jsonb,
  error            text,
  updated_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (run_id, task_id, map_index)
);
CREATE INDEX IF NOT EXISTS task_instances_state_idx ON task_instances (state, next_attempt_at);

CREATE TABLE IF NOT EXISTS dag_flags (
  dag_id      text PRIMARY KEY,
  paused      boolean NOT NULL DEFAULT false,
  updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS audit_log (
  seq             bigint PRIMARY KEY,
  at              timestamptz NOT NULL,
  correlation_id  text NOT NULL,
  dag_id          text,
  task_id         text,
  operation       text NOT NULL,
  status          text NOT NULL,
  record_count    bigint,
  key_version     text,
  detail          jsonb,
  prev_hash       text NOT NULL,
  hash            text NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS audit_log_correlation_idx ON audit_log (correlation_id);
CREATE INDEX IF NOT EXISTS audit_log_at_idx ON audit_log (at);

-- The head of the hash chain: one row, locked FOR UPDATE by every append.
CREATE TABLE IF NOT EXISTS audit_head (
  id    integer PRIMARY KEY CHECK (id = 1),
  seq   bigint NOT NULL,
  hash  text NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000')
ON CONFLICT (id) DO NOTHING;

-- Append-only: UPDATE and TRUNCATE are always rejected; DELETE only by retention, which sets
-- carrel.audit_retention for its own transaction and appends an anchor entry in the same one.
CREATE OR REPLACE FUNCTION carrel_audit_append_only() RETURNS trigger AS $$
BEGIN
  IF TG_OP = 'DELETE' AND current_setting('carrel.audit_retention', true) = 'on' THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit_log is append-only: % rejected', TG_OP;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION carrel_audit_append_only();
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
  FOR EACH STATEMENT EXECUTE FUNCTION carrel_audit_append_only();
