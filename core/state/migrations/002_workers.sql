-- Carrel state store, version 2: distributed execution by workers, pools.

-- Named concurrency limits that hold across all workers.
CREATE TABLE IF NOT EXISTS pools (
  name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*$'),
  slots       integer NOT NULL CHECK (slots >= 1),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Who executes a run: this process ('local') or claiming workers ('workers').
ALTER TABLE dag_runs ADD COLUMN IF NOT EXISTS executor text NOT NULL DEFAULT 'local';
ALTER TABLE dag_runs DROP CONSTRAINT IF EXISTS dag_runs_executor_check;
ALTER TABLE dag_runs ADD CONSTRAINT dag_runs_executor_check CHECK (executor IN ('local', 'workers'));

-- The unit a worker claims: null for a shared task (claimed alone); for enclave tasks, the id of
-- their enclave component, claimed whole so enclave data never leaves one process.
ALTER TABLE task_instances ADD COLUMN IF NOT EXISTS unit text;
ALTER TABLE task_instances ADD COLUMN IF NOT EXISTS queued_at timestamptz;

CREATE INDEX IF NOT EXISTS task_instances_claim_idx ON task_instances (queued_at)
  WHERE state IN ('queued', 'up_for_retry');
CREATE INDEX IF NOT EXISTS task_instances_running_idx ON task_instances (lease_until)
  WHERE state = 'running';
CREATE INDEX IF NOT EXISTS task_instances_pool_idx ON task_instances (pool) WHERE state = 'running';
