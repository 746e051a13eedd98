-- Carrel state store, version 60: a batch's task writes found by their keys.
--
-- carrel_apply_batch (migration 004) updated a batch's task instances with one join of the batch's
-- writes against task_instances. Its plan is generic (planned once per session), and for a store
-- whose task_instances table looked small when it was planned (a fresh store, PGlite) that plan was
-- a sequential scan of every task instance of every run, on every batch: a chain of n tasks cost
-- O(n^2). Each write now updates its one row by primary key, an index scan whatever the table's
-- size, with the same compare-and-set (state and lease token) and the same all-or-nothing failure.
--
-- audit_log_correlation_idx (correlation_id) is dropped: audit_log_correlation_seq_idx
-- (correlation_id, seq) serves every lookup by correlation id, and each appended entry no longer
-- maintains both.

DROP INDEX IF EXISTS audit_log_correlation_idx;

CREATE OR REPLACE FUNCTION carrel_apply_batch(
  p_run text, p_version bigint, p_token_mode int, p_run_token text,
  p_guard_key text, p_guard_token text, p_run_patch jsonb, p_writes jsonb,
  p_finished int, p_notify boolean, p_pooled boolean, p_keys text[]
) RETURNS TABLE (out_version bigint, out_unfinished int, out_held boolean) AS $$
DECLARE
  v bigint;
  u int;
  p jsonb := p_run_patch;
  w jsonb;
BEGIN
  UPDATE dag_runs r SET
    version = r.version + 1,
    unfinished = r.unfinished - p_finished,
    state = CASE WHEN p ? 'state' THEN p->>'state' ELSE r.state END,
    owner = CASE WHEN p ? 'owner' THEN p->>'owner' ELSE r.owner END,
    lease_token = CASE WHEN p ? 'leaseToken' THEN p->>'leaseToken' ELSE r.lease_token END,
    key_version = CASE WHEN p ? 'keyVersion' THEN p->>'keyVersion' ELSE r.key_version END,
    started_at = CASE WHEN p ? 'startedAt' THEN (p->>'startedAt')::timestamptz ELSE r.started_at END,
    ended_at = CASE WHEN p ? 'endedAt' THEN (p->>'endedAt')::timestamptz ELSE r.ended_at END,
    executor = CASE WHEN p ? 'executor' THEN p->>'executor' ELSE r.executor END,
    lease_until = CASE
      WHEN p ? 'leaseMs' THEN now() + (p->>'leaseMs')::float8 * interval '1 millisecond'
      WHEN p ? 'leaseUntil' THEN (p->>'leaseUntil')::timestamptz
      ELSE r.lease_until END,
    updated_at = now()
  WHERE r.run_id = p_run
    AND (p_version IS NULL OR r.version = p_version)
    AND CASE p_token_mode WHEN 0 THEN true WHEN 1 THEN r.lease_token IS NULL
      ELSE r.lease_token = p_run_token END
    AND (p_guard_key IS NULL OR EXISTS (
      SELECT 1 FROM task_instances x WHERE x.job_key = p_guard_key AND x.lease_token = p_guard_token))
  RETURNING r.version, r.unfinished INTO v, u;
  IF v IS NULL THEN
    out_held := CASE WHEN p_token_mode = 2 THEN coalesce(
        (SELECT r.lease_token = p_run_token FROM dag_runs r WHERE r.run_id = p_run), false)
      ELSE true END
      AND (p_guard_key IS NULL OR EXISTS (
        SELECT 1 FROM task_instances x WHERE x.job_key = p_guard_key AND x.lease_token = p_guard_token));
    RETURN NEXT;
    RETURN;
  END IF;

  -- One write per task instance, each found by its key (an index scan whatever the table's
  -- size; a join over every instance of every run was a scan of the whole table per batch).
  FOR w IN SELECT e.value FROM jsonb_array_elements(p_writes) e LOOP
  UPDATE task_instances t SET
    version = v,
    state = CASE WHEN w ? 'state' THEN w->>'state' ELSE t.state END,
    try_number = CASE WHEN w ? 'tryNumber' THEN (w->>'tryNumber')::int ELSE t.try_number END,
    max_tries = CASE WHEN w ? 'maxTries' THEN (w->>'maxTries')::int ELSE t.max_tries END,
    next_attempt_at = CASE WHEN w ? 'nextAttemptAt' THEN (w->>'nextAttemptAt')::timestamptz
      ELSE t.next_attempt_at END,
    queued_at = CASE WHEN w ? 'queuedAt' THEN (w->>'queuedAt')::timestamptz ELSE t.queued_at END,
    owner = CASE WHEN w ? 'owner' THEN w->>'owner' ELSE t.owner END,
    lease_token = CASE WHEN w ? 'leaseToken' THEN w->>'leaseToken' ELSE t.lease_token END,
    started_at = CASE WHEN w ? 'startedAt' THEN (w->>'startedAt')::timestamptz ELSE t.started_at END,
    ended_at = CASE WHEN w ? 'endedAt' THEN (w->>'endedAt')::timestamptz ELSE t.ended_at END,
    output_kind = CASE WHEN w ? 'outputKind' THEN w->>'outputKind' ELSE t.output_kind END,
    output = CASE WHEN w ? 'output' THEN nullif(w->'output', 'null'::jsonb) ELSE t.output END,
    error = CASE WHEN w ? 'error' THEN w->>'error' ELSE t.error END,
    lease_until = CASE
      WHEN w ? 'leaseMs' THEN now() + (w->>'leaseMs')::float8 * interval '1 millisecond'
      WHEN w ? 'leaseUntil' THEN (w->>'leaseUntil')::timestamptz
      ELSE t.lease_until END,
    ready_at = CASE
      WHEN w ? 'readyNow' THEN now()
      WHEN w ? 'readyAt' THEN (w->>'readyAt')::timestamptz
      ELSE t.ready_at END,
    updated_at = now()
  WHERE t.job_key = w->>'jobKey' AND t.state = w->>'from'
    AND (NOT (w ? 'token') OR t.lease_token IS NOT DISTINCT FROM w->>'token');
    IF NOT FOUND THEN
      RAISE EXCEPTION 'carrel: a task instance changed while its transition was decided'
        USING ERRCODE = '40001';
    END IF;
  END LOOP;

  IF p_pooled THEN
    UPDATE pool_slots ps SET holder = NULL
    FROM task_instances t
    WHERE ps.holder = t.job_key AND t.job_key = ANY(p_keys) AND t.state <> 'running';
  END IF;
  IF p_notify THEN
    PERFORM pg_notify('carrel_queue', p_run);
  END IF;
  out_version := v;
  out_unfinished := u;
  out_held := true;
  RETURN NEXT;
END;
$$ LANGUAGE plpgsql ROWS 1 SET plan_cache_mode = force_generic_plan;
