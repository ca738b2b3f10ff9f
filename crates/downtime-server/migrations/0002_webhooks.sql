-- Webhook subscriptions, so that they survive a restart when the server has a history file.
--
-- Same conventions as 0001_history.sql: the creation time is BIGINT Unix milliseconds (UTC)
-- and the subscribed events are a JSON array of event names as TEXT (e.g.
-- `["component.updated","incident.created"]` or `["*"]`). Nothing here is SQLite-specific.
--
-- `secret` is stored as given because every delivery is signed with it (HMAC-SHA256), so
-- the database file holds secrets and must be protected like the configuration. The
-- delivery log is not stored: it stays in memory, bounded per hook.

CREATE TABLE webhooks (
    -- The id the API shows (`wh_` and 16 hex digits); kept across restarts.
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    events TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
