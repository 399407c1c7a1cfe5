-- The reconcile sweep looks for attempts fenced and silent longer than
-- reconcile_after_s, four times a second. It read every attempt being
-- dialed to find them (19 ms a sweep in `make bench`'s end-to-end run, with
-- a thousand or two dials in flight); with this index it reads only those
-- dialed long enough ago (none, while the workers keep up).
CREATE INDEX call_attempts_dialing ON call_attempts (dialed_at) WHERE status = 'DIALING';
