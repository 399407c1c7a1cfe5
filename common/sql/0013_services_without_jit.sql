-- The services' statements are short, but some are planned as costly:
-- the scheduler's sweep for cancelled campaigns is estimated over every
-- pending call, so with a million calls pending the server compiled it
-- with JIT at every tick (28 ms of compiling for a statement that then ran
-- in 0.02 ms, several times a second), and a snapshot's chunks took longer
-- to compile than compiling saved. JIT pays off for long analytical
-- queries, which the services never run; dialerctl and the owner role
-- keep it.
ALTER ROLE dialer_api SET jit = off;
ALTER ROLE dialer_scheduler SET jit = off;
ALTER ROLE dialer_worker SET jit = off;
