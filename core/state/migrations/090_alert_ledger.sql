-- Alerts sent at least once: a transition that owes an alert says so in its audit entry
-- (`detail.alerts`, the number of callbacks), the process that sends it appends a receipt
-- (`alert:sent`), and the scheduler sends again an alert whose receipt never came (its process
-- died), noting each such try first (`alert:resend`). This index holds those entries only (a
-- few per run), so the scheduler's look at the last day reads them and nothing else.
CREATE INDEX IF NOT EXISTS audit_log_alerts_idx ON audit_log (at)
  WHERE detail ? 'alerts' OR operation IN ('alert:sent', 'alert:resend');
