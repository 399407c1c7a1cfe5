-- Dialer schema, version 1: organizations, keys, contacts, audiences, flows,
-- imports, do-not-call, campaigns, calls, attempts and the outbox.

-- Times in the API's format: ISO 8601 UTC with milliseconds.
CREATE FUNCTION iso_utc(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

CREATE TABLE organizations (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    quota_minutes   bigint NOT NULL DEFAULT 1000 CHECK (quota_minutes >= 0),
    used_minutes    bigint NOT NULL DEFAULT 0 CHECK (used_minutes >= 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Keys are stored as SHA-256 of the whole key; the prefix is for humans.
CREATE TABLE api_keys (
    id              text PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    key_hash        text NOT NULL UNIQUE,
    key_prefix      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);
CREATE INDEX api_keys_org ON api_keys (organization_id);

CREATE TABLE contacts (
    id              text PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    phone_number    text NOT NULL,
    name            text,
    language        text,
    metadata        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, phone_number)
);
CREATE INDEX contacts_org_created ON contacts (organization_id, created_at DESC, id DESC);

CREATE TABLE audiences (
    id              text PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name            text NOT NULL,
    description     text,
    contact_count   bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audiences_org_created ON audiences (organization_id, created_at DESC, id DESC);

CREATE TABLE audience_contacts (
    audience_id     text NOT NULL REFERENCES audiences(id) ON DELETE CASCADE,
    contact_id      text NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    added_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (audience_id, contact_id)
);
CREATE INDEX audience_contacts_contact ON audience_contacts (contact_id);

-- contact_count is kept by statement-level triggers so a 1,000,000-row add
-- costs one UPDATE, and "get audience" never counts.
CREATE FUNCTION audience_contacts_count_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE audiences a SET contact_count = a.contact_count + n.c
      FROM (SELECT audience_id, count(*) AS c FROM new_rows GROUP BY audience_id) n
     WHERE a.id = n.audience_id;
    RETURN NULL;
END $$;
CREATE FUNCTION audience_contacts_count_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE audiences a SET contact_count = a.contact_count - o.c
      FROM (SELECT audience_id, count(*) AS c FROM old_rows GROUP BY audience_id) o
     WHERE a.id = o.audience_id;
    RETURN NULL;
END $$;
CREATE TRIGGER audience_contacts_ins AFTER INSERT ON audience_contacts
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION audience_contacts_count_ins();
CREATE TRIGGER audience_contacts_del AFTER DELETE ON audience_contacts
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION audience_contacts_count_del();

CREATE TABLE flows (
    id              text PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name            text NOT NULL,
    voice_url       text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX flows_org_created ON flows (organization_id, created_at DESC, id DESC);

CREATE TABLE imports (
    id              text PRIMARY KEY,
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    audience_id     text REFERENCES audiences(id) ON DELETE SET NULL,
    webhook_url     text,
    status          text NOT NULL DEFAULT 'PENDING'
                    CHECK (status IN ('PENDING','PROCESSING','COMPLETED','COMPLETED_WITH_ERRORS','FAILED')),
    total           integer NOT NULL DEFAULT 0,
    processed       integer NOT NULL DEFAULT 0,
    created         integer NOT NULL DEFAULT 0,
    updated         integer NOT NULL DEFAULT 0,
    failed          integer NOT NULL DEFAULT 0,
    errors          jsonb NOT NULL DEFAULT '[]',
    payload         jsonb,           -- the rows, until processed
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz
);
CREATE INDEX imports_pending ON imports (created_at) WHERE status IN ('PENDING', 'PROCESSING');

CREATE TABLE dnc (
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    phone_number    text NOT NULL,
    reason          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, phone_number)
);

CREATE TABLE campaigns (
    id                   text PRIMARY KEY,
    organization_id      text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    name                 text NOT NULL,
    status               text NOT NULL DEFAULT 'DRAFT'
                         CHECK (status IN ('DRAFT','SCHEDULED','IN_PROGRESS','PAUSED','COMPLETED','CANCELLED')),
    flow_id              text NOT NULL REFERENCES flows(id),
    audience_id          text NOT NULL REFERENCES audiences(id),
    calls_per_minute     integer NOT NULL DEFAULT 10,
    max_concurrent_calls integer NOT NULL DEFAULT 5,
    max_retries          integer NOT NULL DEFAULT 3,
    retry_delay_minutes  integer NOT NULL DEFAULT 5,
    call_timeout_minutes integer NOT NULL DEFAULT 5,
    scheduled_at         timestamptz,
    timezone             text,
    pause_reason         text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    completed_at         timestamptz,
    -- Progress counters, kept by whoever changes a call's status.
    total                bigint NOT NULL DEFAULT 0,
    pending              bigint NOT NULL DEFAULT 0,
    queued               bigint NOT NULL DEFAULT 0,
    in_progress          bigint NOT NULL DEFAULT 0,
    completed            bigint NOT NULL DEFAULT 0,
    failed               bigint NOT NULL DEFAULT 0,
    skipped              bigint NOT NULL DEFAULT 0,
    snapshot_done        boolean NOT NULL DEFAULT false
);
CREATE INDEX campaigns_org_created ON campaigns (organization_id, created_at DESC, id DESC);
CREATE INDEX campaigns_org_status ON campaigns (organization_id, status, created_at DESC);
CREATE INDEX campaigns_active ON campaigns (status) WHERE status IN ('SCHEDULED', 'IN_PROGRESS');

-- One row per contact of a started campaign (the audience snapshot).
CREATE TABLE calls (
    id              bigserial PRIMARY KEY,
    campaign_id     text NOT NULL REFERENCES campaigns(id) ON DELETE CASCADE,
    contact_id      text NOT NULL,
    contact_name    text,
    phone_number    text NOT NULL,
    status          text NOT NULL DEFAULT 'PENDING'
                    CHECK (status IN ('PENDING','QUEUED','IN_PROGRESS','COMPLETED','FAILED','SKIPPED')),
    outcome         text,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    call_sid        text,
    duration        integer,
    started_at      timestamptz,
    completed_at    timestamptz,
    UNIQUE (campaign_id, contact_id)
);
CREATE INDEX calls_due ON calls (campaign_id, next_attempt_at) WHERE status = 'PENDING';

CREATE TABLE call_attempts (
    id              text PRIMARY KEY,
    call_id         bigint NOT NULL REFERENCES calls(id) ON DELETE CASCADE,
    campaign_id     text NOT NULL,
    attempt_no      integer NOT NULL,
    status          text NOT NULL DEFAULT 'QUEUED',
    call_sid        text,
    outcome         text,
    duration        integer,
    created_at      timestamptz NOT NULL DEFAULT now(),
    dialed_at       timestamptz,
    answered_at     timestamptz,
    ended_at        timestamptz,
    UNIQUE (call_id, attempt_no)
);
CREATE INDEX call_attempts_sid ON call_attempts (call_sid) WHERE call_sid IS NOT NULL;

-- Messages committed with the state change that causes them; a relay
-- publishes them with confirms and then deletes them.
CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    exchange        text NOT NULL,
    routing_key     text NOT NULL,
    message_id      text NOT NULL UNIQUE,
    message_type    text NOT NULL,
    body            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Wake the relay as soon as a message commits.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dialer_outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
