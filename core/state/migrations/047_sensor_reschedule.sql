-- Sensors in `reschedule` mode (issue 14): a task instance waiting for its next poke has freed its
-- slot and is in state `up_for_reschedule` until `ready_at` (workers) or `next_attempt_at` (a
-- local run). Claims are by `ready_at` whatever the state, so only the state check changes.
ALTER TABLE task_instances DROP CONSTRAINT IF EXISTS task_instances_state_check;
ALTER TABLE task_instances ADD CONSTRAINT task_instances_state_check CHECK (state IN (
  'scheduled', 'queued', 'running', 'success', 'failed', 'up_for_retry', 'upstream_failed',
  'skipped', 'up_for_reschedule'));
