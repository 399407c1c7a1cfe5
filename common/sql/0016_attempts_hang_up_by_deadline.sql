-- The sweep for calls live past their timeout read every answered call
-- dialed longer ago than the shortest timeout (a minute and the grace),
-- four times a second: with long calls, nearly every live call at every
-- sweep. Each attempt now carries the time from which it can be due,
-- written when it is claimed (claim time, the campaign's callTimeoutMinutes
-- and the grace), and the sweep reads only the attempts past it; whether
-- one is really due is still decided by when it was dialed, which comes
-- after the claim. Attempts written without one (before this migration, or
-- by hand) are candidates at once, as every attempt was before.
ALTER TABLE call_attempts ADD COLUMN hangup_at timestamptz NOT NULL DEFAULT now();
DROP INDEX call_attempts_talking;
CREATE INDEX call_attempts_talking ON call_attempts (hangup_at) WHERE status = 'ACCEPTED' AND NOT hangup_sent;
