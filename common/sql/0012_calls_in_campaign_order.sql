-- GET /v1/campaigns/:id/calls pages a campaign's calls in snapshot order
-- (ORDER BY id). No index gave that order within a campaign, so the
-- planner walked the primary key and filtered out other campaigns' calls:
-- the further a campaign's calls lay in the table, the more rows a page
-- read (10 ms and 31,000 rows for a page of 100 with 3.5 million call
-- rows). With this index a page reads its own rows only.
--
-- Call rows are written a million at a time when a large audience is
-- snapshotted, and every index on calls costs each of those inserts. Calls
-- are found by campaign, and campaign ids are ASCII keys, so the column
-- compares bytewise (collation "C": the same order and equality as the
-- database's for these ids, without the locale's comparison function); that
-- pays for most of the new index. Changing the collation rebuilds the
-- indexes on the column, not the table.
ALTER TABLE calls ALTER COLUMN campaign_id TYPE text COLLATE "C";
CREATE INDEX calls_campaign_order ON calls (campaign_id, id);
