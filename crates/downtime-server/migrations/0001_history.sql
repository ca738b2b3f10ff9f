-- The history store: what happened to proxies and faults, drills, probe results, component
-- states per minute and per day, and incidents with their updates.
--
-- Portable on purpose (SQLite now, PostgreSQL later): times are BIGINT Unix milliseconds
-- (UTC), minutes and days are BIGINT counts since the Unix epoch, JSON is TEXT, states are
-- SMALLINT severity codes (0 operational, 1 under_maintenance, 2 degraded_performance,
-- 3 partial_outage, 4 major_outage). Only the `INTEGER PRIMARY KEY` row ids are
-- SQLite-specific; a PostgreSQL migration would spell them `BIGINT GENERATED ALWAYS AS
-- IDENTITY PRIMARY KEY`. Queries use `$N` parameters, `RETURNING` and
-- `ON CONFLICT ... DO UPDATE`, which both databases understand.

-- Raw events, kept for the configured number of days.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    proxy TEXT,
    fault TEXT,
    drill_id BIGINT,
    detail TEXT NOT NULL
);
CREATE INDEX events_at ON events (at_ms);
CREATE INDEX events_proxy_at ON events (proxy, at_ms);

-- Every component ever sampled: `proxy:<name>` or `endpoint:<probe name>`.
CREATE TABLE components (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL
);

-- The worst state of a component in each minute (raw; kept as long as events).
CREATE TABLE component_minutes (
    component TEXT NOT NULL,
    minute BIGINT NOT NULL,
    state SMALLINT NOT NULL,
    PRIMARY KEY (component, minute)
);
CREATE INDEX component_minutes_minute ON component_minutes (minute);

-- Minutes per state of a component per UTC day (kept for a year).
CREATE TABLE component_days (
    component TEXT NOT NULL,
    day BIGINT NOT NULL,
    minutes BIGINT NOT NULL,
    operational BIGINT NOT NULL,
    maintenance BIGINT NOT NULL,
    degraded BIGINT NOT NULL,
    partial BIGINT NOT NULL,
    major BIGINT NOT NULL,
    worst SMALLINT NOT NULL,
    PRIMARY KEY (component, day)
);
CREATE INDEX component_days_day ON component_days (day);

-- Probe results of drills, per endpoint and minute (raw).
CREATE TABLE probe_minutes (
    endpoint TEXT NOT NULL,
    minute BIGINT NOT NULL,
    total BIGINT NOT NULL,
    ok BIGINT NOT NULL,
    latency_sum_ms BIGINT NOT NULL,
    latency_max_ms BIGINT NOT NULL,
    PRIMARY KEY (endpoint, minute)
);
CREATE INDEX probe_minutes_minute ON probe_minutes (minute);

-- The same per UTC day (kept for a year).
CREATE TABLE probe_days (
    endpoint TEXT NOT NULL,
    day BIGINT NOT NULL,
    total BIGINT NOT NULL,
    ok BIGINT NOT NULL,
    latency_sum_ms BIGINT NOT NULL,
    latency_max_ms BIGINT NOT NULL,
    PRIMARY KEY (endpoint, day)
);

-- Drill runs with their verdict and report (kept for a year).
CREATE TABLE drills (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    seed TEXT,
    started_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    outcome TEXT,
    reason TEXT,
    report TEXT,
    incident_id BIGINT
);
CREATE INDEX drills_started ON drills (started_ms);

-- Incidents and scheduled maintenances (kept for a year after they close).
CREATE TABLE incidents (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    status TEXT NOT NULL,
    impact TEXT NOT NULL,
    source TEXT NOT NULL,
    drill_id BIGINT,
    scheduled_start_ms BIGINT,
    scheduled_end_ms BIGINT,
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    resolved_ms BIGINT
);
CREATE INDEX incidents_created ON incidents (created_ms);

CREATE TABLE incident_components (
    incident_id BIGINT NOT NULL REFERENCES incidents (id),
    position BIGINT NOT NULL,
    component TEXT NOT NULL,
    PRIMARY KEY (incident_id, component)
);

CREATE TABLE incident_updates (
    id INTEGER PRIMARY KEY,
    incident_id BIGINT NOT NULL REFERENCES incidents (id),
    at_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX incident_updates_incident ON incident_updates (incident_id, at_ms);
