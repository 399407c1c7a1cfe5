-- A reconcile that finds no call releases its attempt: the call goes back
-- to PENDING. dialer_release_attempt (0003) locked the campaign's row at
-- once and held it to the end of the scheduler's batch, while the batch's
-- later messages waited for their attempts' rows. A worker's fence holds
-- its attempts' rows while it waits for the campaign's row (0009), so the
-- two deadlocked: under load (workers behind, many attempts reconciled)
-- Postgres broke 35 such cycles in one end-to-end run of `make bench`, each
-- after a second's wait, and both sides then went again.
--
-- dialer_release_call releases the way dialer_end_call ends: it moves the
-- attempt and the call, and returns what the campaign's counters must
-- change by (the call left left_status for PENDING); the caller adds that
-- to its batch's tally, written once per campaign, in id order, just before
-- its commit. A call made PENDING in a campaign cancelled meanwhile is
-- skipped by the cancel sweep, as a retry's is.
CREATE FUNCTION dialer_release_call(p_attempt text, OUT campaign_id text, OUT left_status text)
LANGUAGE plpgsql AS $$
DECLARE
    a record;
    c record;
BEGIN
    UPDATE call_attempts SET status = 'ENDED', outcome = 'released', ended_at = now()
     WHERE id = p_attempt AND status = 'UNKNOWN'
    RETURNING call_attempts.call_id, call_attempts.campaign_id INTO a;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT cl.status INTO c FROM calls cl WHERE cl.id = a.call_id FOR UPDATE;
    IF c.status NOT IN ('QUEUED', 'IN_PROGRESS') THEN
        RETURN;
    END IF;
    UPDATE calls SET status = 'PENDING', attempts = attempts - 1, next_attempt_at = NULL WHERE id = a.call_id;
    campaign_id := a.campaign_id;
    left_status := c.status;
END $$;
