-- Pace is kept when dials happen, not only when jobs are made: every attempt
-- carries the latest moment it may still be dialed (its paced slot plus
-- scheduler.dial_late_ms). A job held back past it (in the outbox while the
-- broker was down, in the queue while no worker consumed) is refused by the
-- fence and its call goes back to PENDING, to be dialed again at a new slot:
-- no burst of held-back dials. And a hang-up is told apart from a call the
-- carrier ended by itself: hung_up is set only when a worker hung up a call
-- that was still live.
ALTER TABLE call_attempts
    ADD COLUMN dial_deadline timestamptz,   -- NULL: no deadline
    ADD COLUMN hung_up boolean NOT NULL DEFAULT false;

-- As in 0003, plus: an attempt past its dial deadline (by Postgres's clock)
-- is released, not dialed: 'expired'. It does not count as an attempt.
CREATE OR REPLACE FUNCTION dialer_fence_attempt(p_attempt text, p_worker text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    a record;
    camp_status text;
BEGIN
    SELECT at.id, at.status, at.call_id, at.campaign_id, at.dial_deadline INTO a
      FROM call_attempts at WHERE at.id = p_attempt FOR UPDATE;
    IF NOT FOUND OR a.status <> 'QUEUED' THEN
        RETURN 'duplicate';
    END IF;
    SELECT status INTO camp_status FROM campaigns WHERE id = a.campaign_id FOR UPDATE;
    IF camp_status = 'IN_PROGRESS' AND (a.dial_deadline IS NULL OR clock_timestamp() <= a.dial_deadline) THEN
        UPDATE call_attempts SET status = 'DIALING', dialed_at = now(), worker = p_worker
         WHERE id = p_attempt;
        UPDATE calls SET status = 'IN_PROGRESS', started_at = coalesce(started_at, now())
         WHERE id = a.call_id AND status = 'QUEUED';
        IF FOUND THEN
            UPDATE campaigns SET queued = queued - 1, in_progress = in_progress + 1
             WHERE id = a.campaign_id;
        END IF;
        RETURN 'dial';
    END IF;
    -- Not running, or too late to keep the pace: the attempt never happened.
    UPDATE call_attempts SET status = 'ENDED', outcome = 'released', ended_at = now()
     WHERE id = p_attempt;
    IF camp_status = 'CANCELLED' THEN
        UPDATE calls SET status = 'SKIPPED', outcome = 'cancelled', attempts = attempts - 1,
               completed_at = now()
         WHERE id = a.call_id AND status = 'QUEUED';
        IF FOUND THEN
            UPDATE campaigns SET queued = queued - 1, skipped = skipped + 1 WHERE id = a.campaign_id;
        END IF;
        RETURN 'cancelled';
    END IF;
    -- Back to PENDING, keeping a retry's due time (it is already past): the
    -- dispatcher claims it again at the campaign's next free slot.
    UPDATE calls SET status = 'PENDING', attempts = attempts - 1,
           next_attempt_at = CASE WHEN camp_status = 'IN_PROGRESS' THEN next_attempt_at END
     WHERE id = a.call_id AND status = 'QUEUED';
    IF FOUND THEN
        UPDATE campaigns SET queued = queued - 1, pending = pending + 1 WHERE id = a.campaign_id;
    END IF;
    RETURN CASE WHEN camp_status = 'IN_PROGRESS' THEN 'expired' ELSE 'paused' END;
END $$;

-- A hang-up whose result never came (the job lost, the carrier unreachable)
-- is sent again a few times before the attempt ends as a timeout.
ALTER TABLE call_attempts ADD COLUMN hangup_tries integer NOT NULL DEFAULT 0;
