-- Dialer schema, version 2: what audience membership and the import worker need.

-- GET /v1/audiences/:id/contacts pages in the order contacts were added.
CREATE INDEX audience_contacts_added ON audience_contacts (audience_id, added_at, contact_id);
-- Deleting an audience checks the campaigns and imports that refer to it.
CREATE INDEX campaigns_audience ON campaigns (audience_id);
CREATE INDEX imports_audience ON imports (audience_id) WHERE audience_id IS NOT NULL;

-- The import worker's claim: when it was taken and how many times, so an
-- import left PROCESSING by a crashed worker is taken again, and one that
-- keeps crashing its worker is given up.
ALTER TABLE imports ADD COLUMN claimed_at timestamptz;
ALTER TABLE imports ADD COLUMN attempts integer NOT NULL DEFAULT 0;
