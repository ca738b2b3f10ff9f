-- Drill runners send heartbeats; a run whose heartbeats stop (its runner was killed, its
-- machine lost) is marked abandoned and its incident resolved, instead of staying
-- "running" for ever.
--
-- Same conventions as 0001_history.sql: BIGINT Unix milliseconds (UTC), NULL until the first
-- heartbeat (the start time counts as one).
ALTER TABLE drills ADD COLUMN heartbeat_ms BIGINT;
