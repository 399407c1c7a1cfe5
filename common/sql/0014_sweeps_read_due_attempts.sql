-- The scheduler sweeps call_attempts four times a second for calls live
-- past their timeout and for hang-ups the carrier has not answered. Each of
-- those statements read every live attempt to find the few that were due:
-- with 4,000 calls live, 46 ms of Postgres' time a sweep, a sixth of a core
-- at 1,000 calls a second. With these two indexes a sweep reads only the
-- attempts that can be due: the talking ones dialed longer ago than the
-- shortest timeout a campaign can have, and the hung-up ones whose answer
-- is overdue (few: only calls that ran out of time).
CREATE INDEX call_attempts_talking ON call_attempts (dialed_at) WHERE status = 'ACCEPTED' AND NOT hangup_sent;
CREATE INDEX call_attempts_hung_up ON call_attempts (reconcile_at) WHERE status = 'ACCEPTED' AND hangup_sent;
