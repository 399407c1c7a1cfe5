-- Campaign execution: the scheduler's lease and pacing state, attempt
-- fencing for the dialer workers, and the worker's least-privileged role.

-- One row: whoever holds it with an unexpired lease leads.
CREATE TABLE scheduler_lease (
    id          integer PRIMARY KEY CHECK (id = 1),
    holder      text NOT NULL,
    term        bigint NOT NULL,
    expires_at  timestamptz NOT NULL
);

ALTER TABLE campaigns
    ADD COLUMN next_dial_at timestamptz,        -- pacing: the earliest next dial start
    ADD COLUMN quota_paused boolean NOT NULL DEFAULT false;

-- Every attempt ever made gets the next number, including released ones,
-- which do not count in calls.attempts.
ALTER TABLE calls ADD COLUMN attempt_seq integer NOT NULL DEFAULT 0;

ALTER TABLE call_attempts
    ADD COLUMN worker text,
    ADD COLUMN to_number text,
    ADD COLUMN last_sequence integer NOT NULL DEFAULT -1,
    ADD COLUMN reconcile_at timestamptz,
    ADD COLUMN hangup_sent boolean NOT NULL DEFAULT false;
CREATE INDEX call_attempts_live ON call_attempts (status, campaign_id)
    WHERE status IN ('QUEUED', 'DIALING', 'ACCEPTED', 'UNKNOWN');

-- The one write a dialer worker may make: move an attempt from QUEUED to
-- DIALING, exactly once. Anything else (a redelivery, a duplicate publish, a
-- replay from the dead-letter queue) finds it already moved and is refused.
-- A job of a campaign that is no longer running releases its call instead.
CREATE FUNCTION dialer_fence_attempt(p_attempt text, p_worker text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    a record;
    camp_status text;
BEGIN
    SELECT at.id, at.status, at.call_id, at.campaign_id INTO a
      FROM call_attempts at WHERE at.id = p_attempt FOR UPDATE;
    IF NOT FOUND OR a.status <> 'QUEUED' THEN
        RETURN 'duplicate';
    END IF;
    SELECT status INTO camp_status FROM campaigns WHERE id = a.campaign_id FOR UPDATE;
    IF camp_status = 'IN_PROGRESS' THEN
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
    -- Not running: the attempt never happened.
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
    UPDATE calls SET status = 'PENDING', attempts = attempts - 1, next_attempt_at = NULL
     WHERE id = a.call_id AND status = 'QUEUED';
    IF FOUND THEN
        UPDATE campaigns SET queued = queued - 1, pending = pending + 1 WHERE id = a.campaign_id;
    END IF;
    RETURN 'paused';
END $$;

-- The worker's role: it can log in and call the fence, nothing else. The
-- local stack gives it a password; production sets its own.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dialer_worker') THEN
        CREATE ROLE dialer_worker LOGIN PASSWORD 'dialer_worker';
    END IF;
END $$;
REVOKE ALL ON FUNCTION dialer_fence_attempt(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dialer_fence_attempt(text, text) TO dialer_worker;

-- Dispatch order: due retries by due time, fresh calls in snapshot order.
DROP INDEX calls_due;
CREATE INDEX calls_fresh ON calls (campaign_id, id) WHERE status = 'PENDING' AND next_attempt_at IS NULL;
CREATE INDEX calls_retry ON calls (campaign_id, next_attempt_at) WHERE status = 'PENDING' AND next_attempt_at IS NOT NULL;
CREATE INDEX campaigns_cancelled_pending ON campaigns (id) WHERE status = 'CANCELLED' AND pending > 0;

-- Ends an attempt once, and moves its call on: back to PENDING after the
-- retry delay when the outcome is retryable and attempts remain, else to its
-- final status. Keeps the campaign's counters, charges the organization's
-- minutes for answered calls and pauses its campaigns when they run out.
-- Returns 'ignored' (already ended), 'retry', 'COMPLETED' or 'FAILED'.
CREATE FUNCTION dialer_end_attempt(p_attempt text, p_outcome text, p_duration integer,
                                   p_retryable boolean, p_minute_ms integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    a record;
    camp record;
    c record;
    final_status text;
    minutes_left bigint;
BEGIN
    UPDATE call_attempts SET status = 'ENDED', outcome = p_outcome, duration = p_duration, ended_at = now()
     WHERE id = p_attempt AND status <> 'ENDED'
    RETURNING call_id, campaign_id, call_sid INTO a;
    IF NOT FOUND THEN
        RETURN 'ignored';
    END IF;
    SELECT id, status, max_retries, retry_delay_minutes, organization_id INTO camp
      FROM campaigns WHERE id = a.campaign_id FOR UPDATE;
    SELECT id, attempts, status INTO c FROM calls WHERE id = a.call_id FOR UPDATE;
    IF c.status NOT IN ('QUEUED', 'IN_PROGRESS') THEN
        RETURN 'ignored';
    END IF;
    IF p_retryable AND c.attempts < 1 + camp.max_retries AND camp.status <> 'CANCELLED' THEN
        UPDATE calls SET status = 'PENDING', outcome = p_outcome, call_sid = coalesce(a.call_sid, call_sid),
               next_attempt_at = now() + make_interval(secs => camp.retry_delay_minutes * p_minute_ms / 1000.0)
         WHERE id = c.id;
        UPDATE campaigns SET queued = queued - (c.status = 'QUEUED')::int,
               in_progress = in_progress - (c.status = 'IN_PROGRESS')::int, pending = pending + 1
         WHERE id = camp.id;
        RETURN 'retry';
    END IF;
    final_status := CASE WHEN p_outcome IN ('answered', 'voicemail') THEN 'COMPLETED' ELSE 'FAILED' END;
    UPDATE calls SET status = final_status, outcome = p_outcome, duration = p_duration,
           call_sid = coalesce(a.call_sid, call_sid), completed_at = now()
     WHERE id = c.id;
    UPDATE campaigns SET queued = queued - (c.status = 'QUEUED')::int,
           in_progress = in_progress - (c.status = 'IN_PROGRESS')::int,
           completed = completed + (final_status = 'COMPLETED')::int,
           failed = failed + (final_status = 'FAILED')::int
     WHERE id = camp.id;
    IF p_outcome IN ('answered', 'voicemail', 'timeout') AND p_duration > 0 THEN
        UPDATE organizations SET used_minutes = used_minutes + (p_duration + 59) / 60
         WHERE id = camp.organization_id
        RETURNING quota_minutes - used_minutes INTO minutes_left;
        IF minutes_left <= 0 THEN
            UPDATE campaigns SET status = 'PAUSED', pause_reason = 'quota_exhausted'
             WHERE organization_id = camp.organization_id AND status = 'IN_PROGRESS';
        END IF;
    END IF;
    RETURN final_status;
END $$;

-- An attempt the carrier never saw (a worker died after the fence, before
-- its request left) did not happen: its call goes back to PENDING at once,
-- and the attempt does not count against maxRetries.
CREATE FUNCTION dialer_release_attempt(p_attempt text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    a record;
    c record;
BEGIN
    UPDATE call_attempts SET status = 'ENDED', outcome = 'released', ended_at = now()
     WHERE id = p_attempt AND status = 'UNKNOWN'
    RETURNING call_id, campaign_id INTO a;
    IF NOT FOUND THEN
        RETURN 'ignored';
    END IF;
    PERFORM 1 FROM campaigns WHERE id = a.campaign_id FOR UPDATE;
    SELECT status INTO c FROM calls WHERE id = a.call_id FOR UPDATE;
    IF c.status NOT IN ('QUEUED', 'IN_PROGRESS') THEN
        RETURN 'ignored';
    END IF;
    UPDATE calls SET status = 'PENDING', attempts = attempts - 1, next_attempt_at = NULL WHERE id = a.call_id;
    UPDATE campaigns SET queued = queued - (c.status = 'QUEUED')::int,
           in_progress = in_progress - (c.status = 'IN_PROGRESS')::int, pending = pending + 1
     WHERE id = a.campaign_id;
    RETURN 'released';
END $$;
