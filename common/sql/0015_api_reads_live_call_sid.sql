-- A live call's carrier sid stays on its attempt (the scheduler copies it
-- to the call when the attempt ends, and no longer writes the call's row
-- when the carrier accepts the dial). The API reads it there for the calls
-- still in progress: only those columns.
GRANT SELECT (call_id, attempt_no, call_sid) ON call_attempts TO dialer_api;
