-- Carrel state store, version 80: fewer statements per applied batch.
--
-- In PGlite every statement a function runs costs its executor's start-up, and a batch ran about
-- ten: carrel_apply_batch and carrel_audit_append walked their JSON arrays with a query each
-- (jsonb_array_elements) and audit_append checked for several chains with another. They now walk
-- the arrays by index, as plain expressions. Same writes, same checks, same results.
--
-- audit_log_hash_key goes: a unique index on random SHA-256 text, written on every appended entry
-- and read by no statement. Tamper evidence does not rest on it: `audit verify` recomputes every
-- hash and link along each chain's positions, which (chain, pos) keeps unique.

ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS audit_log_hash_key;

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
  i int;
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
  -- The writes are walked by index: an expression each, not a query.
  FOR i IN 0 .. jsonb_array_length(p_writes) - 1 LOOP
  w := p_writes->i;
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

CREATE OR REPLACE FUNCTION carrel_audit_append(entries jsonb)
RETURNS TABLE (out_seq bigint, out_hash text, out_prev text, out_chain text, out_pos bigint) AS $$
DECLARE
  e jsonb;
  t jsonb;
  c text;
  heads jsonb := '{}'::jsonb;
  seals jsonb := '[]'::jsonb;
  head record;
  n_pos bigint;
  n_prev text;
  n_hash text;
  n_seq bigint;
  rendered text;
  n int;
  i int;
  simple boolean := true;
BEGIN
  n := coalesce(jsonb_array_length(entries), 0);
  IF n = 0 THEN
    RETURN;
  END IF;
  c := entries->0->>'chain';
  -- The common case: entries of one chain, none ending a run. One head, locked once. (Walked by
  -- index, as expressions: no query per check.)
  FOR i IN 0 .. n - 1 LOOP
    IF entries->i->>'chain' <> c OR entries->i ? 'seal' THEN
      simple := false;
      EXIT;
    END IF;
  END LOOP;
  IF simple THEN
    SELECT h.pos, h.hash INTO n_pos, n_prev FROM audit_chains h WHERE h.chain = c FOR UPDATE;
    IF NOT FOUND THEN
      SELECT l.o_pos, l.o_hash INTO n_pos, n_prev FROM carrel_audit_lock(c) l;
    END IF;
    FOR i IN 0 .. n - 1 LOOP
      e := entries->i;
      n_pos := n_pos + 1;
      t := e->'template'->'parts';
      n_hash := encode(sha256(convert_to(
        (t->>0) || n_prev || (t->>1) || n_pos::text || (t->>2), 'UTF8')), 'hex');
      n_seq := nextval('audit_log_seq');
      INSERT INTO audit_log (seq, chain, pos, at, correlation_id, dag_id, task_id, operation,
        status, record_count, key_version, detail, prev_hash, hash)
      VALUES (n_seq, c, n_pos, (e->>'at')::timestamptz, e->>'correlation_id', e->>'dag_id',
        e->>'task_id', e->>'operation', e->>'status', (e->>'record_count')::bigint,
        e->>'key_version', CASE WHEN e->'detail' = 'null'::jsonb THEN NULL ELSE e->'detail' END,
        n_prev, n_hash);
      out_seq := n_seq; out_hash := n_hash; out_prev := n_prev; out_chain := c; out_pos := n_pos;
      RETURN NEXT;
      n_prev := n_hash;
    END LOOP;
    UPDATE audit_chains SET pos = n_pos, hash = n_prev WHERE chain = c;
    RETURN;
  END IF;

  -- Several chains, or a run's end: lock every head involved, in order.
  FOR c IN
    SELECT DISTINCT x.value->>'chain' FROM jsonb_array_elements(entries) x
    WHERE x.value->>'chain' <> 'global' ORDER BY 1
  LOOP
    SELECT * INTO head FROM carrel_audit_lock(c);
    heads := heads || jsonb_build_object(c, jsonb_build_array(head.o_pos, head.o_hash));
  END LOOP;
  IF EXISTS (SELECT 1 FROM jsonb_array_elements(entries)
             WHERE value->>'chain' = 'global' OR value ? 'seal') THEN
    SELECT * INTO head FROM carrel_audit_lock('global');
    heads := heads || jsonb_build_object('global', jsonb_build_array(head.o_pos, head.o_hash));
  END IF;

  FOR e IN SELECT value FROM jsonb_array_elements(entries) LOOP
    c := e->>'chain';
    n_pos := (heads->c->>0)::bigint + 1;
    n_prev := heads->c->>1;
    t := e->'template'->'parts';
    n_hash := encode(sha256(convert_to(
      (t->>0) || n_prev || (t->>1) || n_pos::text || (t->>2), 'UTF8')), 'hex');
    n_seq := nextval('audit_log_seq');
    INSERT INTO audit_log (seq, chain, pos, at, correlation_id, dag_id, task_id, operation, status,
      record_count, key_version, detail, prev_hash, hash)
    VALUES (n_seq, c, n_pos, (e->>'at')::timestamptz, e->>'correlation_id', e->>'dag_id',
      e->>'task_id', e->>'operation', e->>'status', (e->>'record_count')::bigint, e->>'key_version',
      CASE WHEN e->'detail' = 'null'::jsonb THEN NULL ELSE e->'detail' END, n_prev, n_hash);
    heads := jsonb_set(heads, ARRAY[c], jsonb_build_array(n_pos, n_hash));
    IF e ? 'seal' THEN
      seals := seals || jsonb_build_array(jsonb_build_object(
        'seal', e->'seal', 'chain', c, 'pos', n_pos, 'hash', n_hash));
    END IF;
    out_seq := n_seq; out_hash := n_hash; out_prev := n_prev; out_chain := c; out_pos := n_pos;
    RETURN NEXT;
  END LOOP;

  FOR e IN SELECT value FROM jsonb_array_elements(seals) LOOP
    n_pos := (heads->'global'->>0)::bigint + 1;
    n_prev := heads->'global'->>1;
    rendered := carrel_audit_render(e->'seal'->'template', jsonb_build_object(
      'prev', n_prev, 'pos', n_pos, 'sealed_hash', e->>'hash', 'sealed_pos', e->>'pos'));
    n_hash := encode(sha256(convert_to(rendered, 'UTF8')), 'hex');
    n_seq := nextval('audit_log_seq');
    INSERT INTO audit_log (seq, chain, pos, at, correlation_id, dag_id, task_id, operation, status,
      record_count, key_version, detail, prev_hash, hash)
    VALUES (n_seq, 'global', n_pos, (e->'seal'->>'at')::timestamptz,
      e->'seal'->>'correlation_id', NULL, NULL, e->'seal'->>'operation', e->'seal'->>'status',
      (e->'seal'->>'record_count')::bigint, NULL, rendered::jsonb->'detail', n_prev, n_hash);
    INSERT INTO audit_seals (chain, pos) VALUES (e->>'chain', (e->>'pos')::bigint)
    ON CONFLICT (chain) DO UPDATE SET pos = greatest(audit_seals.pos, EXCLUDED.pos);
    heads := jsonb_set(heads, ARRAY['global'], jsonb_build_array(n_pos, n_hash));
    out_seq := n_seq; out_hash := n_hash; out_prev := n_prev; out_chain := 'global';
    out_pos := n_pos;
    RETURN NEXT;
  END LOOP;

  UPDATE audit_chains a SET pos = (h.value->>0)::bigint, hash = h.value->>1
  FROM jsonb_each(heads) h
  WHERE a.chain = h.key AND a.pos <> (h.value->>0)::bigint;
END;
$$ LANGUAGE plpgsql;
