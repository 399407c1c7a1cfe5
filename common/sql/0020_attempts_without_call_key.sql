-- call_attempts.call_id loses its foreign key, as calls.campaign_id did in
-- 0008. Attempts are only ever made by the dispatch claim, from the calls
-- row the same statement has just updated, and calls are never deleted (a
-- campaign with calls cannot be). The key's check ran a query for every
-- attempt inserted, a quarter of the dispatch claim's time: a pass over
-- fifty campaigns of a thousand dials took 9,436 jobs/s with it and 11,373
-- to 12,117 without (`BENCH_PHASES="floor dispatch" make bench`).
ALTER TABLE call_attempts DROP CONSTRAINT IF EXISTS call_attempts_call_id_fkey;
