-- Idempotency-Key on the API's create and start calls: the first request
-- with a key stores its answer in the same transaction as its effect; a
-- repeat gets that answer back and changes nothing. Keys live 24 hours.
CREATE TABLE idempotency_keys (
    organization_id text NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    idem_key        text NOT NULL,
    request_hash    text NOT NULL,
    status          integer,
    response        text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
