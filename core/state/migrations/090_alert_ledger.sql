-- Alerts sent at least once: a transition that owes an alert says so in its audit entry
-- (`detail.alerts`, the number of callbacks), the process that sends it appends a receipt
-- (`alert:sent`), and the scheduler sends again an alert whose receipt never came (its process
-- died), noting each such try first (`alert:resend`). This index holds the owing entries only (a
-- few per run), so the scheduler's look at the last day reads them and nothing else; their
-- receipts are found by run (audit_log_correlation_seq_idx).
CREATE INDEX IF NOT EXISTS audit_log_alerts_idx ON audit_log (at, seq) WHERE detail ? 'alerts';
