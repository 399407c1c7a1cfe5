-- calls.campaign_id loses its foreign key. Calls are only ever made by the
-- scheduler's snapshot from an existing campaign, and only a DRAFT campaign
-- (which has no calls) can be deleted; but the key's check locked the
-- campaign row for every call a snapshot chunk inserted, which held up the
-- dials and results of that same campaign while its audience was copied.
ALTER TABLE calls DROP CONSTRAINT IF EXISTS calls_campaign_id_fkey;
