-- Audience snapshots in chunks: a campaign's calls are created a chunk at a
-- time in the audience's order, so its first dials start while the rest of
-- a large audience is still being copied. The cursor is the last
-- (added_at, contact_id) copied; snapshot_done is set with the last chunk.
ALTER TABLE campaigns
    ADD COLUMN snapshot_after_at timestamptz,
    ADD COLUMN snapshot_after_id text;
