-- The workers' fence looks up each attempt it is given by its id, a
-- primary-key lookup, from a plpgsql loop whose plans are cached per
-- session. Planned while call_attempts' statistics still described an empty
-- table (analyzed between campaigns, then filled within seconds), those
-- lookups ran as sequential scans: in a 60 s end-to-end run after an import,
-- 37,000 scans read 356 million rows and the fence took most of Postgres'
-- time. Nothing in the function is better served by a sequential scan (each
-- of its statements reads rows by key), so it never plans one.
ALTER FUNCTION dialer_fence_attempts(text[], text) SET enable_seqscan = off;
