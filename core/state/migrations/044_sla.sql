-- Carrel state store, version 44: SLA misses.
--
-- One row per missed SLA: of a run (task_id '') or of one task in it. The primary key makes each
-- miss recorded once, whoever detects it first (the process that ends the task or run late, or any
-- of several schedulers checking runs still unfinished past their deadline); only the process
-- whose insert took the row audits and notifies it. Purging a run takes its misses with it.
CREATE TABLE IF NOT EXISTS sla_misses (
  run_id       text NOT NULL REFERENCES dag_runs (run_id) ON DELETE CASCADE,
  task_id      text NOT NULL DEFAULT '',
  dag_id       text NOT NULL,
  sla_ms       bigint NOT NULL,
  deadline     timestamptz NOT NULL,
  detected_at  timestamptz NOT NULL DEFAULT now(),
  detected_by  text NOT NULL CHECK (detected_by IN ('executor', 'scheduler')),
  state        text NOT NULL,
  PRIMARY KEY (run_id, task_id)
);
CREATE INDEX IF NOT EXISTS sla_misses_dag_idx ON sla_misses (dag_id, deadline);
