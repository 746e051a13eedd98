-- Carrel state store, version 94: concurrent workers claim from different runs.
--
-- Every task instance's end updates its run's row (version, unfinished) and appends to its run's
-- audit chain, so the writers of one run wait on each other. Workers all claimed the oldest ready
-- task, hence all from the same run, and queued behind each other's writes. A claim now passes
-- over the candidates whose run another transaction is writing at that instant (the run row
-- locked FOR SHARE SKIP LOCKED, as the candidate itself is FOR UPDATE SKIP LOCKED): each worker
-- tends to stay on a run of its own. Only when every candidate's run is being written does it
-- take the first candidate as before, so a claim never comes back empty while a task is ready.
-- Whether a task of pool `p` may start: the pool is not configured (unlimited), or one of its
-- slots is free.
CREATE OR REPLACE FUNCTION carrel_pool_open(p text) RETURNS boolean AS $$
  SELECT NOT EXISTS (SELECT 1 FROM pools x WHERE x.name = p)
    OR EXISTS (SELECT 1 FROM pool_slots ps JOIN pools x ON x.name = ps.pool
               WHERE ps.pool = p AND ps.holder IS NULL AND ps.slot <= x.slots)
$$ LANGUAGE sql STABLE;

CREATE OR REPLACE FUNCTION carrel_claim_task(
  p_owner text, p_token text, p_lease_ms float8, p_now timestamptz
) RETURNS TABLE (out_candidates int, out_tasks json, out_run json) AS $$
DECLARE
  c record;
  s record;
  tasks json;
BEGIN
  SELECT t.job_key, t.run_id, t.unit, t.pool INTO c
  FROM task_instances t JOIN dag_runs r ON r.run_id = t.run_id
  WHERE t.ready_at <= now() AND (t.pool IS NULL OR carrel_pool_open(t.pool))
  ORDER BY t.priority_weight DESC, t.ready_at, t.job_key
  LIMIT 1
  FOR UPDATE OF t SKIP LOCKED
  FOR SHARE OF r SKIP LOCKED;
  IF c.job_key IS NULL THEN
    SELECT t.job_key, t.run_id, t.unit, t.pool INTO c
    FROM task_instances t
    WHERE t.ready_at <= now() AND (t.pool IS NULL OR carrel_pool_open(t.pool))
    ORDER BY t.priority_weight DESC, t.ready_at, t.job_key
    LIMIT 1
    FOR UPDATE OF t SKIP LOCKED;
  END IF;
  IF c.job_key IS NULL THEN
    out_candidates := 0;
    RETURN NEXT;
    RETURN;
  END IF;
  out_candidates := 1;
  IF c.pool IS NOT NULL AND EXISTS (SELECT 1 FROM pools p WHERE p.name = c.pool) THEN
    SELECT ps.pool, ps.slot INTO s
    FROM pool_slots ps JOIN pools p ON p.name = ps.pool
    WHERE ps.pool = c.pool AND ps.holder IS NULL AND ps.slot <= p.slots
    ORDER BY ps.slot
    LIMIT 1
    FOR UPDATE OF ps SKIP LOCKED;
    IF s.pool IS NULL THEN
      RETURN NEXT; -- the slot went to another claim meanwhile
      RETURN;
    END IF;
    UPDATE pool_slots SET holder = c.job_key WHERE pool = s.pool AND slot = s.slot;
  END IF;
  WITH claimed AS (
    UPDATE task_instances t SET
      owner = p_owner, lease_token = p_token,
      lease_until = now() + p_lease_ms * interval '1 millisecond',
      ready_at = NULL, updated_at = now(), state = 'running', try_number = t.try_number + 1,
      started_at = p_now, ended_at = NULL, error = NULL, next_attempt_at = NULL
    WHERE t.job_key = c.job_key
    RETURNING t.*
  )
  SELECT json_agg(claimed) INTO tasks FROM claimed;
  IF c.unit IS NOT NULL THEN
    -- The rest of its enclave unit, reserved under the same token (started as decided).
    WITH members AS (
      UPDATE task_instances t SET
        owner = p_owner, lease_token = p_token,
        lease_until = now() + p_lease_ms * interval '1 millisecond',
        ready_at = NULL, updated_at = now()
      WHERE t.run_id = c.run_id AND t.unit = c.unit AND t.job_key <> c.job_key
        AND t.state IN ('queued', 'up_for_retry') AND t.lease_token IS NULL
      RETURNING t.*
    )
    SELECT json_agg(x.v) INTO tasks FROM (
      SELECT e.value AS v FROM json_array_elements(tasks) e
      UNION ALL SELECT row_to_json(m) FROM members m
    ) x;
  END IF;
  out_tasks := tasks;
  SELECT row_to_json(r) INTO out_run FROM dag_runs r WHERE r.run_id = c.run_id;
  RETURN NEXT;
END;
$$ LANGUAGE plpgsql ROWS 1 SET plan_cache_mode = force_generic_plan;
