-- Carrel state store, version 3: append audit entries in one call.
-- The caller sends each entry's canonical JSON in three fragments around the two values only the
-- database knows under the chain-head lock (the previous hash and the sequence number):
--   prefix || prev_hash || middle || seq || suffix
-- so the stored hash is SHA-256 over exactly the canonical JSON that core/audit.ts verifies.
CREATE OR REPLACE FUNCTION carrel_audit_append(entries jsonb)
RETURNS TABLE (out_seq bigint, out_hash text, out_prev text) AS $$
DECLARE
  e jsonb;
  head_seq bigint;
  head_hash text;
  next_hash text;
BEGIN
  IF entries IS NULL OR jsonb_array_length(entries) = 0 THEN
    RETURN;
  END IF;
  SELECT seq, hash INTO head_seq, head_hash FROM audit_head WHERE id = 1 FOR UPDATE;
  FOR e IN SELECT value FROM jsonb_array_elements(entries) LOOP
    head_seq := head_seq + 1;
    next_hash := encode(sha256(convert_to(
      (e->>'prefix') || head_hash || (e->>'middle') || head_seq::text || (e->>'suffix'), 'UTF8')), 'hex');
    INSERT INTO audit_log (seq, at, correlation_id, dag_id, task_id, operation, status,
      record_count, key_version, detail, prev_hash, hash)
    VALUES (head_seq, (e->>'at')::timestamptz, e->>'correlation_id', e->>'dag_id', e->>'task_id',
      e->>'operation', e->>'status', (e->>'record_count')::bigint, e->>'key_version',
      CASE WHEN e->'detail' = 'null'::jsonb THEN NULL ELSE e->'detail' END, head_hash, next_hash);
    out_seq := head_seq;
    out_prev := head_hash;
    out_hash := next_hash;
    RETURN NEXT;
    head_hash := next_hash;
  END LOOP;
  UPDATE audit_head SET seq = head_seq, hash = head_hash WHERE id = 1;
END;
$$ LANGUAGE plpgsql;
