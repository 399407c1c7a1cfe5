-- Each service connects with its own role, granted only what it uses
-- (dialerctl and migrations keep the owner). The local stack gives these
-- roles passwords equal to their names; production sets real ones
-- (ALTER ROLE ... PASSWORD) right after the first migration.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dialer_api') THEN
        CREATE ROLE dialer_api LOGIN PASSWORD 'dialer_api';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dialer_scheduler') THEN
        CREATE ROLE dialer_scheduler LOGIN PASSWORD 'dialer_scheduler';
    END IF;
END $$;

-- The API: the public resources, commands through the outbox (and its relay).
GRANT SELECT ON organizations, api_keys, flows, calls TO dialer_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON contacts, audiences, audience_contacts, imports, dnc,
    campaigns, idempotency_keys TO dialer_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO dialer_api; -- UPDATE: the relay claims rows FOR UPDATE
GRANT USAGE ON SEQUENCE outbox_id_seq TO dialer_api;

-- The scheduler: campaign execution, its lease, its jobs (and the relay).
GRANT SELECT ON flows, contacts, audience_contacts, dnc TO dialer_scheduler;
GRANT SELECT, UPDATE ON campaigns, organizations TO dialer_scheduler;
GRANT SELECT, INSERT, UPDATE ON calls, call_attempts, scheduler_lease TO dialer_scheduler;
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO dialer_scheduler;
GRANT USAGE ON SEQUENCE outbox_id_seq, calls_id_seq TO dialer_scheduler;
