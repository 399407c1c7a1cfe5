-- The scheduler copies a large audience several ranges at once, each on its
-- own connection (scheduler.snapshot_connections). So that the calls keep
-- the audience's order (they are dialed and listed by id), each range's ids
-- are reserved before it is copied: a block of calls_id_seq as long as the
-- range, taken with setval, which needs UPDATE on the sequence.
GRANT UPDATE ON SEQUENCE calls_id_seq TO dialer_scheduler;

-- calls.contact_id compares bytewise (collation "C"), as campaign_id does
-- since 0012: the key (campaign_id, contact_id) is checked for every call a
-- snapshot inserts, and the locale's comparison function was a tenth of an
-- insert's cost. Contact ids are ASCII keys and calls.contact_id is never
-- compared with another column, so only the order of this index changes
-- (nothing reads calls in contact order). Rebuilds the index, not the table.
ALTER TABLE calls ALTER COLUMN contact_id TYPE text COLLATE "C";
