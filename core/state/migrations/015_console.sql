-- Carrel state store, version 15: what the console and `runs logs` read.
--
-- task_logs: value-free log records of task attempts (after redaction), written in batches by the
-- log sink of every process that runs tasks, so the lines of an attempt are reachable wherever
-- the worker ran. Read by run and task, in `id` order, within an attempt's time window (from the
-- audit trail's task:start entries); `attempt` is the number the task's logger was bound to.
CREATE TABLE IF NOT EXISTS task_logs (
  id          bigserial PRIMARY KEY,
  run_id      text NOT NULL,
  dag_id      text NOT NULL,
  task_id     text,
  attempt     integer,
  at          timestamptz NOT NULL,
  level       text NOT NULL CHECK (level IN ('trace', 'debug', 'info', 'warning', 'error', 'fatal')),
  category    text NOT NULL,
  message     text NOT NULL,
  properties  jsonb
);
CREATE INDEX IF NOT EXISTS task_logs_task_idx ON task_logs (run_id, task_id, id);
-- Retention deletes old lines by time.
CREATE INDEX IF NOT EXISTS task_logs_at_idx ON task_logs (at);

-- Pages over all runs, newest first (the DAG-scoped pages use UNIQUE (dag_id, logical_date)).
CREATE INDEX IF NOT EXISTS dag_runs_logical_idx ON dag_runs (logical_date, run_id);
-- Runs by DAG and state (DAG list, charts, /metrics) read from the index alone.
CREATE INDEX IF NOT EXISTS dag_runs_dag_state_idx ON dag_runs (dag_id, state);

-- One run's audit entries in chain order (run page, attempt history, audit filter).
CREATE INDEX IF NOT EXISTS audit_log_correlation_seq_idx ON audit_log (correlation_id, seq);
-- Counts that /metrics and the DAG pages aggregate without reading the whole trail.
CREATE INDEX IF NOT EXISTS audit_log_quarantine_idx ON audit_log (dag_id, seq)
  WHERE operation LIKE '%:quarantined';
CREATE INDEX IF NOT EXISTS audit_log_checkpoint_idx ON audit_log (dag_id, seq)
  WHERE operation = 'checkpoint:verdict';

-- Retention: a purged run takes its log lines with it.
CREATE OR REPLACE FUNCTION carrel_task_logs_purge() RETURNS trigger AS $$
BEGIN
  DELETE FROM task_logs WHERE run_id = OLD.run_id;
  RETURN OLD;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS dag_runs_task_logs_purge ON dag_runs;
CREATE TRIGGER dag_runs_task_logs_purge AFTER DELETE ON dag_runs
  FOR EACH ROW EXECUTE FUNCTION carrel_task_logs_purge();
