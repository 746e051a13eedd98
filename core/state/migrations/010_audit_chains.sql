-- Carrel state store, version 10: one audit hash chain per run, plus a global chain.
--
-- Until now every audited transition extended one chain under one locked head row, so all runs and
-- workers took turns on it. Now an entry joins its run's chain (its correlation id is the run id of
-- its DAG) or the global chain (everything else), each with its own head row in audit_chains:
-- transitions of different runs lock different rows. When a run ends, its chain's newest position
-- and hash are sealed into the global chain in the same transaction; signed checkpoints of the
-- global chain (core/audit_checkpoint.ts) anchor it outside the database. See docs/audit.md.
--
-- Entries written before this version become the first entries of the global chain, unchanged:
-- their position is their old sequence number, which their hash already covers.

ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS chain text NOT NULL DEFAULT 'global';
ALTER TABLE audit_log ADD COLUMN IF NOT EXISTS pos bigint;
UPDATE audit_log SET pos = seq WHERE pos IS NULL;
ALTER TABLE audit_log ALTER COLUMN pos SET NOT NULL;
ALTER TABLE audit_log ALTER COLUMN chain DROP DEFAULT;
ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_chain_pos_key UNIQUE (chain, pos);

-- Row numbers: unique, increasing in append order within each chain (taken under its head lock).
CREATE SEQUENCE IF NOT EXISTS audit_log_seq;
SELECT setval('audit_log_seq', coalesce((SELECT max(seq) FROM audit_log), 0) + 1, false);

-- One head per chain. base_pos/base_hash: the last entry retention deleted (0 and the genesis hash
-- for none), so that appends after a purge continue the chain.
CREATE TABLE IF NOT EXISTS audit_chains (
  chain       text PRIMARY KEY,
  pos         bigint NOT NULL,
  hash        text NOT NULL,
  base_pos    bigint NOT NULL DEFAULT 0,
  base_hash   text NOT NULL DEFAULT '0000000000000000000000000000000000000000000000000000000000000000',
  CHECK (base_pos <= pos)
);
INSERT INTO audit_chains (chain, pos, hash, base_pos, base_hash)
SELECT 'global', h.seq, h.hash,
  coalesce((SELECT min(seq) - 1 FROM audit_log), h.seq),
  coalesce((SELECT prev_hash FROM audit_log ORDER BY seq LIMIT 1), h.hash)
FROM audit_head h WHERE h.id = 1
ON CONFLICT (chain) DO NOTHING;
INSERT INTO audit_chains (chain, pos, hash)
VALUES ('global', 0, '0000000000000000000000000000000000000000000000000000000000000000')
ON CONFLICT (chain) DO NOTHING;

-- Which position of each run chain the global chain has sealed last: what the next checkpoint
-- still has to seal. Written only under the global chain's lock; not evidence of anything.
CREATE TABLE IF NOT EXISTS audit_seals (
  chain  text PRIMARY KEY,
  pos    bigint NOT NULL
);

-- The store's identity, which signed checkpoints name: a replaced or re-created store has
-- another one.
-- legacy_pos: the global chain's entries up to here were written by the single-chain design, when
-- run entries were in the one chain too.
CREATE TABLE IF NOT EXISTS audit_store (
  id          integer PRIMARY KEY CHECK (id = 1),
  store_id    text NOT NULL,
  legacy_pos  bigint NOT NULL DEFAULT 0,
  created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO audit_store (id, store_id, legacy_pos)
VALUES (1, gen_random_uuid()::text, (SELECT pos FROM audit_chains WHERE chain = 'global'))
ON CONFLICT (id) DO NOTHING;

DROP FUNCTION IF EXISTS carrel_audit_append(jsonb);
DROP TABLE IF EXISTS audit_head;

-- Append-only: UPDATE and TRUNCATE are always rejected. DELETE only by retention, which sets
-- carrel.audit_retention_before (a time not in the future) for its own transaction, may delete
-- only entries older than that, and appends an anchor entry in the same transaction.
CREATE OR REPLACE FUNCTION carrel_audit_append_only() RETURNS trigger AS $$
DECLARE
  cutoff text;
BEGIN
  IF TG_OP = 'DELETE' THEN
    cutoff := current_setting('carrel.audit_retention_before', true);
    IF cutoff IS NOT NULL AND cutoff <> '' AND cutoff::timestamptz <= now()
       AND OLD.at < cutoff::timestamptz THEN
      RETURN OLD;
    END IF;
  END IF;
  RAISE EXCEPTION 'audit_log is append-only: % rejected', TG_OP;
END;
$$ LANGUAGE plpgsql;

-- Heads only move forward, and are never deleted. (The WHEN clause keeps appends from calling
-- the function at all.)
CREATE OR REPLACE FUNCTION carrel_audit_heads_forward() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'audit_chains heads only move forward: % rejected', TG_OP;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_chains_forward ON audit_chains;
CREATE TRIGGER audit_chains_forward BEFORE UPDATE ON audit_chains
  FOR EACH ROW WHEN (NEW.chain <> OLD.chain OR NEW.pos < OLD.pos OR NEW.base_pos < OLD.base_pos)
  EXECUTE FUNCTION carrel_audit_heads_forward();
DROP TRIGGER IF EXISTS audit_chains_kept ON audit_chains;
CREATE TRIGGER audit_chains_kept BEFORE DELETE ON audit_chains
  FOR EACH ROW EXECUTE FUNCTION carrel_audit_heads_forward();
DROP TRIGGER IF EXISTS audit_chains_no_truncate ON audit_chains;
CREATE TRIGGER audit_chains_no_truncate BEFORE TRUNCATE ON audit_chains
  FOR EACH STATEMENT EXECUTE FUNCTION carrel_audit_heads_forward();

CREATE OR REPLACE FUNCTION carrel_audit_store_fixed() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'audit_store is fixed: % rejected', TG_OP;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS audit_store_fixed ON audit_store;
CREATE TRIGGER audit_store_fixed BEFORE UPDATE OR DELETE ON audit_store
  FOR EACH ROW EXECUTE FUNCTION carrel_audit_store_fixed();
DROP TRIGGER IF EXISTS audit_store_no_truncate ON audit_store;
CREATE TRIGGER audit_store_no_truncate BEFORE TRUNCATE ON audit_store
  FOR EACH STATEMENT EXECUTE FUNCTION carrel_audit_store_fixed();

-- Locks a chain's head (creating it at the genesis hash when new) and returns it.
CREATE OR REPLACE FUNCTION carrel_audit_lock(c text, OUT o_pos bigint, OUT o_hash text) AS $$
BEGIN
  SELECT h.pos, h.hash INTO o_pos, o_hash FROM audit_chains h WHERE h.chain = c FOR UPDATE;
  IF NOT FOUND THEN
    INSERT INTO audit_chains (chain, pos, hash)
    VALUES (c, 0, '0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT DO NOTHING;
    SELECT h.pos, h.hash INTO o_pos, o_hash FROM audit_chains h WHERE h.chain = c FOR UPDATE;
  END IF;
END;
$$ LANGUAGE plpgsql;

-- An entry's canonical JSON: the template's parts with its slots filled in.
CREATE OR REPLACE FUNCTION carrel_audit_render(t jsonb, vals jsonb) RETURNS text AS $$
DECLARE
  text_ text := t->'parts'->>0;
  i integer;
BEGIN
  FOR i IN 0 .. jsonb_array_length(t->'slots') - 1 LOOP
    text_ := text_ || (vals->>(t->'slots'->>i)) || (t->'parts'->>(i + 1));
  END LOOP;
  RETURN text_;
END;
$$ LANGUAGE plpgsql IMMUTABLE;

-- Appends entries, each to its chain. The caller (core/state/audit_log.ts) sends, per entry, the
-- row values, its chain, and the template of its canonical JSON (parts around the previous hash and
-- the position, in that order); an entry that ends a run also carries the template of the seal
-- that records the run chain's head in the global chain. Heads are locked run chains first, in
-- name order, then the global chain, so that two appends never wait on each other in a cycle.
-- Returns one row per appended entry, seals last.
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
BEGIN
  IF entries IS NULL OR jsonb_array_length(entries) = 0 THEN
    RETURN;
  END IF;
  c := entries->0->>'chain';
  -- The common case: entries of one chain, none ending a run. One head, locked once.
  IF NOT EXISTS (SELECT 1 FROM jsonb_array_elements(entries) x
                 WHERE x.value->>'chain' <> c OR x.value ? 'seal') THEN
    SELECT h.pos, h.hash INTO n_pos, n_prev FROM audit_chains h WHERE h.chain = c FOR UPDATE;
    IF NOT FOUND THEN
      SELECT l.o_pos, l.o_hash INTO n_pos, n_prev FROM carrel_audit_lock(c) l;
    END IF;
    FOR e IN SELECT value FROM jsonb_array_elements(entries) LOOP
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
