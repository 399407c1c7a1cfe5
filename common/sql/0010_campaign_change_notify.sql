-- Every committed change of a campaign row is announced on the channel
-- dialer_campaigns, so that the API's read cache drops exactly what it
-- changed. The payload is '<organization_id> <campaign_id> <kind>':
--   l  the change shows in GET /v1/campaigns and GET /v1/campaigns/:id (an
--      insert, a delete, or a change of one of their columns);
--   p  only other columns changed (the progress counters, pacing and
--      snapshot bookkeeping): GET /v1/campaigns/:id/progress may differ.
-- An update that changes nothing announces nothing. NOTIFY is delivered at
-- commit, only if the transaction commits, and identical payloads of one
-- transaction are sent once.
--
-- The columns tested for 'l' must stay in step with CAMPAIGN_READ_COLS in
-- api/api_campaigns.c: a column added there must be added here (by a new
-- migration that replaces this function), or the list would be served stale.
CREATE FUNCTION dialer_campaign_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kind text := 'l';
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF ROW(OLD.*) IS NOT DISTINCT FROM ROW(NEW.*) THEN
            RETURN NULL;
        END IF;
        IF (OLD.id, OLD.name, OLD.status, OLD.flow_id, OLD.audience_id, OLD.calls_per_minute,
            OLD.max_concurrent_calls, OLD.max_retries, OLD.retry_delay_minutes, OLD.call_timeout_minutes,
            OLD.scheduled_at, OLD.timezone, OLD.organization_id, OLD.created_at, OLD.started_at,
            OLD.completed_at, OLD.pause_reason)
           IS NOT DISTINCT FROM
           (NEW.id, NEW.name, NEW.status, NEW.flow_id, NEW.audience_id, NEW.calls_per_minute,
            NEW.max_concurrent_calls, NEW.max_retries, NEW.retry_delay_minutes, NEW.call_timeout_minutes,
            NEW.scheduled_at, NEW.timezone, NEW.organization_id, NEW.created_at, NEW.started_at,
            NEW.completed_at, NEW.pause_reason) THEN
            kind := 'p';
        END IF;
        IF OLD.id IS DISTINCT FROM NEW.id OR OLD.organization_id IS DISTINCT FROM NEW.organization_id THEN
            PERFORM pg_notify('dialer_campaigns', OLD.organization_id || ' ' || OLD.id || ' l');
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('dialer_campaigns', OLD.organization_id || ' ' || OLD.id || ' l');
    ELSE
        PERFORM pg_notify('dialer_campaigns', NEW.organization_id || ' ' || NEW.id || ' ' || kind);
    END IF;
    RETURN NULL;
END $$;

-- Keep in step with CAMPAIGN_READ_COLS in api/api_campaigns.c (see above).
-- The function runs as whoever changes the row: the API, the scheduler, and
-- the workers through their SECURITY DEFINER functions (as the owner);
-- pg_notify is callable by every role.
CREATE TRIGGER campaigns_notify_change
    AFTER INSERT OR UPDATE OR DELETE ON campaigns
    FOR EACH ROW EXECUTE FUNCTION dialer_campaign_changed();
