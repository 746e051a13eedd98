-- Claims read task_instances_ready_priority_idx only (priority, then ready time, then job key;
-- migration 045). The older (ready_at, job_key) index is no longer read by any statement, yet
-- every transition that makes a task instance claimable (queued, up for retry, rescheduled)
-- inserted an entry into it: it goes.
DROP INDEX IF EXISTS task_instances_ready_idx;
