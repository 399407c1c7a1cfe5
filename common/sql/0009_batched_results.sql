-- Results are applied many to a transaction. Ending an attempt no longer
-- locks and updates its campaign's row and its organization's row on the
-- spot: dialer_end_call ends the attempt and moves its call on, and returns
-- what the campaign's counters and the organization's minutes must change
-- by. The caller adds those up over its whole batch and applies them once
-- per campaign and organization, in id order, just before its commit: the
-- rows every result of a campaign shares are locked once per batch and for
-- a moment, and batches cannot deadlock on them. The workers' fence takes
-- many attempts at once in the same way (dialer_fence_attempts).

-- Moves the counters of campaign p_campaign; its call leaves p_from
-- (QUEUED or IN_PROGRESS, else nothing leaves) for p_to (PENDING on a
-- retry, COMPLETED or FAILED). Each argument is a count, so a batch's sum
-- is one call.
CREATE FUNCTION dialer_count_calls(p_campaign text, p_left_queued bigint, p_left_in_progress bigint,
                                   p_pending bigint, p_completed bigint, p_failed bigint) RETURNS void
LANGUAGE sql AS $$
    UPDATE campaigns SET queued = queued - p_left_queued, in_progress = in_progress - p_left_in_progress,
           pending = pending + p_pending, completed = completed + p_completed, failed = failed + p_failed
     WHERE id = p_campaign;
$$;

-- Charges p_minutes to the organization; when none are left its running
-- campaigns are paused. Returns the minutes left.
CREATE FUNCTION dialer_charge_minutes(p_org text, p_minutes bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    minutes_left bigint;
BEGIN
    UPDATE organizations SET used_minutes = used_minutes + p_minutes WHERE id = p_org
    RETURNING quota_minutes - used_minutes INTO minutes_left;
    IF minutes_left <= 0 THEN
        UPDATE campaigns SET status = 'PAUSED', pause_reason = 'quota_exhausted'
         WHERE organization_id = p_org AND status = 'IN_PROGRESS';
    END IF;
    RETURN minutes_left;
END $$;

-- What dialer_end_attempt (0003) did, short of the campaign's counters and
-- the organization's minutes: result is 'ignored', 'retry', 'COMPLETED' or
-- 'FAILED'; left is the status the call left (NULL when ignored); minutes
-- are those to charge. p_sequence is the SequenceNumber of the carrier's
-- status that ended it (-1: none).
CREATE FUNCTION dialer_end_call(p_attempt text, p_outcome text, p_duration integer,
                                p_retryable boolean, p_minute_ms integer, p_sequence integer,
                                OUT result text, OUT campaign_id text, OUT organization_id text,
                                OUT left_status text, OUT minutes bigint)
LANGUAGE plpgsql AS $$
DECLARE
    a record;
    camp record;
    c record;
BEGIN
    result := 'ignored';
    minutes := 0;
    UPDATE call_attempts SET status = 'ENDED', outcome = p_outcome, duration = p_duration, ended_at = now(),
           last_sequence = greatest(last_sequence, p_sequence)
     WHERE id = p_attempt AND status <> 'ENDED'
    RETURNING call_attempts.call_id, call_attempts.campaign_id, call_attempts.call_sid INTO a;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT cp.id, cp.status, cp.max_retries, cp.retry_delay_minutes, cp.organization_id INTO camp
      FROM campaigns cp WHERE cp.id = a.campaign_id;
    SELECT cl.id, cl.attempts, cl.status INTO c FROM calls cl WHERE cl.id = a.call_id FOR UPDATE;
    IF c.status NOT IN ('QUEUED', 'IN_PROGRESS') THEN
        RETURN;
    END IF;
    campaign_id := camp.id;
    organization_id := camp.organization_id;
    left_status := c.status;
    IF p_retryable AND c.attempts < 1 + camp.max_retries AND camp.status <> 'CANCELLED' THEN
        UPDATE calls SET status = 'PENDING', outcome = p_outcome, call_sid = coalesce(a.call_sid, calls.call_sid),
               next_attempt_at = now() + make_interval(secs => camp.retry_delay_minutes * p_minute_ms / 1000.0)
         WHERE id = c.id;
        result := 'retry';
        RETURN;
    END IF;
    result := CASE WHEN p_outcome IN ('answered', 'voicemail') THEN 'COMPLETED' ELSE 'FAILED' END;
    UPDATE calls SET status = result, outcome = p_outcome, duration = p_duration,
           call_sid = coalesce(a.call_sid, calls.call_sid), completed_at = now()
     WHERE id = c.id;
    IF p_outcome IN ('answered', 'voicemail', 'timeout') AND p_duration > 0 THEN
        minutes := (p_duration + 59) / 60;
    END IF;
END $$;

-- One attempt ended on its own (the sweep's timeouts): the same, applied at
-- once.
CREATE OR REPLACE FUNCTION dialer_end_attempt(p_attempt text, p_outcome text, p_duration integer,
                                              p_retryable boolean, p_minute_ms integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    e record;
BEGIN
    SELECT * INTO e FROM dialer_end_call(p_attempt, p_outcome, p_duration, p_retryable, p_minute_ms, -1);
    IF e.left_status IS NOT NULL THEN
        PERFORM dialer_count_calls(e.campaign_id, (e.left_status = 'QUEUED')::int,
                                   (e.left_status = 'IN_PROGRESS')::int, (e.result = 'retry')::int,
                                   (e.result = 'COMPLETED')::int, (e.result = 'FAILED')::int);
    END IF;
    IF e.minutes > 0 THEN
        PERFORM dialer_charge_minutes(e.organization_id, e.minutes);
    END IF;
    RETURN e.result;
END $$;

-- The fence, for many attempts at once: a worker fences the dial jobs it
-- holds in one round trip, and the counters of their campaigns move once
-- per campaign, in id order, at the end (a dial moves a call from queued to
-- in progress; a refused one back to pending or to skipped). The campaign's
-- status is read, not locked: a dial fenced while a pause commits goes
-- ahead, as it would have a moment earlier. Attempts are taken in id order;
-- each appears once in the result. Otherwise as dialer_fence_attempt (0006).
CREATE FUNCTION dialer_fence_attempts(p_attempts text[], p_worker text)
RETURNS TABLE (attempt_id text, verdict text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    att text;
    a record;
    camp_status text;
    camps text[] := '{}';
    kinds text[] := '{}';
    kind text;
    moved boolean;
    d record;
BEGIN
    FOR att IN SELECT DISTINCT x FROM unnest(p_attempts) AS x WHERE x IS NOT NULL ORDER BY 1 LOOP
        attempt_id := att;
        SELECT ca.status, ca.call_id, ca.campaign_id, ca.dial_deadline INTO a
          FROM call_attempts ca WHERE ca.id = att FOR UPDATE;
        IF NOT FOUND OR a.status <> 'QUEUED' THEN
            verdict := 'duplicate';
            RETURN NEXT;
            CONTINUE;
        END IF;
        SELECT cp.status INTO camp_status FROM campaigns cp WHERE cp.id = a.campaign_id;
        IF camp_status = 'IN_PROGRESS' AND (a.dial_deadline IS NULL OR clock_timestamp() <= a.dial_deadline) THEN
            UPDATE call_attempts SET status = 'DIALING', dialed_at = now(), worker = p_worker WHERE id = att;
            UPDATE calls SET status = 'IN_PROGRESS', started_at = coalesce(started_at, now())
             WHERE id = a.call_id AND status = 'QUEUED';
            moved := FOUND;
            kind := 'dial';
            verdict := 'dial';
        ELSE
            -- Not running, or too late to keep the pace: the attempt never happened.
            UPDATE call_attempts SET status = 'ENDED', outcome = 'released', ended_at = now() WHERE id = att;
            IF camp_status = 'CANCELLED' THEN
                UPDATE calls SET status = 'SKIPPED', outcome = 'cancelled', attempts = attempts - 1,
                       completed_at = now()
                 WHERE id = a.call_id AND status = 'QUEUED';
                moved := FOUND;
                kind := 'skip';
                verdict := 'cancelled';
            ELSE
                -- Back to PENDING, keeping a retry's due time (it is already past).
                UPDATE calls SET status = 'PENDING', attempts = attempts - 1,
                       next_attempt_at = CASE WHEN camp_status = 'IN_PROGRESS' THEN next_attempt_at END
                 WHERE id = a.call_id AND status = 'QUEUED';
                moved := FOUND;
                kind := 'pend';
                verdict := CASE WHEN camp_status = 'IN_PROGRESS' THEN 'expired' ELSE 'paused' END;
            END IF;
        END IF;
        IF moved THEN
            camps := camps || a.campaign_id;
            kinds := kinds || kind;
        END IF;
        RETURN NEXT;
    END LOOP;
    FOR d IN SELECT c AS id, count(*) AS n, count(*) FILTER (WHERE k = 'dial') AS dialed,
                    count(*) FILTER (WHERE k = 'skip') AS skipped, count(*) FILTER (WHERE k = 'pend') AS pended
               FROM unnest(camps, kinds) AS u(c, k) GROUP BY c ORDER BY c LOOP
        UPDATE campaigns SET queued = queued - d.n, in_progress = in_progress + d.dialed,
               skipped = skipped + d.skipped, pending = pending + d.pended
         WHERE id = d.id;
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION dialer_fence_attempts(text[], text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION dialer_fence_attempts(text[], text) TO dialer_worker;

-- One attempt: the same.
CREATE OR REPLACE FUNCTION dialer_fence_attempt(p_attempt text, p_worker text) RETURNS text
LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
    SELECT verdict FROM dialer_fence_attempts(ARRAY[p_attempt], p_worker);
$$;
