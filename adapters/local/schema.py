"""The embedded local workspace's schema: one SQLite file per workspace (adapters.local.workspace).

`SCHEMA` builds version 1 of a new file; `MIGRATIONS[n]` takes a file from version n-1 to n
(ALTER/CREATE only, data kept). `PRAGMA user_version` holds a file's version, and a file newer
than SCHEMA_VERSION is refused rather than misread.
"""

SCHEMA_VERSION = 2                         # SCHEMA is version 1; MIGRATIONS lead from there

TABLES = ("models", "endpoints", "deployments", "batch_endpoints", "batch_deployments", "jobs", "schedules",
           "compute", "feature_stores", "feature_entities", "feature_sets", "materializations")

SCHEMA = """
CREATE TABLE models (
    name TEXT NOT NULL, version TEXT NOT NULL, stage TEXT NOT NULL, description TEXT NOT NULL,
    tags TEXT NOT NULL, metrics TEXT NOT NULL, created_at TEXT, created_by TEXT NOT NULL, path TEXT NOT NULL,
    PRIMARY KEY (name, version));
CREATE TABLE endpoints (
    name TEXT PRIMARY KEY, provisioning_state TEXT NOT NULL, auth_mode TEXT NOT NULL,
    scoring_uri TEXT NOT NULL, description TEXT NOT NULL, traffic TEXT NOT NULL,
    mirror_traffic TEXT NOT NULL, tags TEXT NOT NULL, load_rpm REAL NOT NULL);
CREATE TABLE deployments (
    endpoint TEXT NOT NULL, name TEXT NOT NULL, model TEXT NOT NULL, instance_type TEXT NOT NULL,
    instance_count INTEGER NOT NULL, provisioning_state TEXT NOT NULL, health TEXT NOT NULL,
    PRIMARY KEY (endpoint, name));
CREATE TABLE batch_endpoints (
    name TEXT PRIMARY KEY, provisioning_state TEXT NOT NULL, default_deployment TEXT NOT NULL,
    scoring_uri TEXT NOT NULL, description TEXT NOT NULL);
CREATE TABLE batch_deployments (
    endpoint TEXT NOT NULL, name TEXT NOT NULL, model TEXT NOT NULL, compute TEXT NOT NULL,
    PRIMARY KEY (endpoint, name));
CREATE TABLE jobs (
    name TEXT PRIMARY KEY, status TEXT NOT NULL, type TEXT NOT NULL, display_name TEXT NOT NULL,
    experiment TEXT NOT NULL, compute TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT,
    ended_at TEXT, created_by TEXT NOT NULL, error TEXT NOT NULL, parent TEXT NOT NULL, tags TEXT NOT NULL,
    plan_start TEXT, plan_end TEXT, plan_outcome TEXT, plan_error TEXT);
CREATE INDEX jobs_by_parent ON jobs (parent, created_at);
CREATE TABLE schedules (
    name TEXT PRIMARY KEY, enabled INTEGER NOT NULL, trigger TEXT NOT NULL, expression TEXT NOT NULL,
    time_zone TEXT NOT NULL, action TEXT NOT NULL, provisioning_state TEXT NOT NULL,
    description TEXT NOT NULL, template TEXT NOT NULL);
CREATE TABLE compute (
    name TEXT PRIMARY KEY, type TEXT NOT NULL, state TEXT NOT NULL, size TEXT NOT NULL,
    min_nodes INTEGER, max_nodes INTEGER, current_nodes INTEGER);
"""

# Each entry takes a file from the version before to this one (ALTER/CREATE only, data kept).
MIGRATIONS = {
    2: """
ALTER TABLE models ADD COLUMN archived INTEGER NOT NULL DEFAULT 0;
ALTER TABLE models ADD COLUMN job TEXT NOT NULL DEFAULT '';
CREATE TABLE feature_stores (
    name TEXT PRIMARY KEY, location TEXT NOT NULL, description TEXT NOT NULL);
CREATE TABLE feature_entities (
    store TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, description TEXT NOT NULL,
    join_keys TEXT NOT NULL, PRIMARY KEY (store, name, version));
CREATE TABLE feature_sets (
    store TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, description TEXT NOT NULL,
    tags TEXT NOT NULL, stage TEXT NOT NULL, entities TEXT NOT NULL, features TEXT NOT NULL,
    offline_enabled INTEGER NOT NULL, online_enabled INTEGER NOT NULL, schedule TEXT NOT NULL,
    created_at TEXT NOT NULL, PRIMARY KEY (store, name, version));
CREATE TABLE materializations (
    store TEXT NOT NULL, feature_set TEXT NOT NULL, version TEXT NOT NULL, job TEXT NOT NULL,
    status TEXT NOT NULL, type TEXT NOT NULL, window_start TEXT, window_end TEXT, created_at TEXT NOT NULL,
    PRIMARY KEY (store, job));
""",
}
