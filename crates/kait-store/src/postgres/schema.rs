//! The PostgreSQL schema and its migrations.
//!
//! Every node runs [`migrate`] at start-up (and `kait migrate` runs it alone); a transaction-
//! scoped advisory lock makes concurrent starts apply each migration once. The applied version
//! lives in `kait_schema_version`.
//!
//! The shape follows the SQLite schema, with what many nodes need on top:
//! - `kait_node`: one row per running node and its heartbeat; a node's claims are valid while
//!   its row exists. The reaper deletes an expired row and frees its claims in one statement.
//! - `endpoint_owner`: which node currently runs an endpoint's lane. Only the owner claims an
//!   endpoint's deliveries, so rate limits, ordering and the circuit breaker hold cluster-wide.
//! - `app_position`: the per-application counter behind the pull API's positions. It is taken
//!   with a row lock that is held until commit, so positions become visible in commit order.
//! - `delivery.claimed_by`: the node whose lease covers a `Sending` delivery.

use tokio_postgres::Client;

/// Each entry moves the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE kait_node (
    id            TEXT PRIMARY KEY,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL
);

CREATE TABLE application (
    id          TEXT PRIMARY KEY,
    uid         TEXT UNIQUE,
    name        TEXT NOT NULL,
    rate_limit  BIGINT,
    metadata    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE app_position (
    app_id  TEXT PRIMARY KEY,
    last    BIGINT NOT NULL
);

CREATE TABLE event_type (
    name          TEXT PRIMARY KEY,
    description   TEXT NOT NULL,
    archived      BOOLEAN NOT NULL,
    deprecated    BOOLEAN NOT NULL,
    schemas       TEXT,
    feature_flag  TEXT,
    group_name    TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE endpoint (
    id                          TEXT PRIMARY KEY,
    app_id                      TEXT NOT NULL,
    uid                         TEXT,
    url                         TEXT NOT NULL,
    description                 TEXT NOT NULL,
    version                     BIGINT NOT NULL,
    disabled                    BOOLEAN NOT NULL,
    event_types                 TEXT,
    channels                    TEXT,
    rate_limit                  BIGINT,
    metadata                    TEXT NOT NULL,
    secret                      TEXT NOT NULL,
    headers                     TEXT NOT NULL,
    created_at                  BIGINT NOT NULL,
    updated_at                  BIGINT NOT NULL,
    ordering                    TEXT NOT NULL,
    previous_secret             TEXT,
    previous_secret_expires_at  BIGINT,
    format                      TEXT NOT NULL,
    kind                        TEXT NOT NULL,
    failing_since               BIGINT
);
CREATE UNIQUE INDEX endpoint_app_uid ON endpoint (app_id, uid) WHERE uid IS NOT NULL;
CREATE INDEX endpoint_app ON endpoint (app_id, id);

CREATE TABLE endpoint_owner (
    endpoint_id  TEXT PRIMARY KEY,
    node_id      TEXT NOT NULL
);

CREATE TABLE message (
    seq           BIGSERIAL PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    app_id        TEXT NOT NULL,
    pos           BIGINT NOT NULL,
    event_type    TEXT NOT NULL,
    event_id      TEXT,
    channels      JSONB,
    payload       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    ordering_key  TEXT
);
CREATE UNIQUE INDEX message_app_event_id ON message (app_id, event_id) WHERE event_id IS NOT NULL;
CREATE UNIQUE INDEX message_app_pos ON message (app_id, pos);
CREATE INDEX message_app_seq ON message (app_id, seq);
CREATE INDEX message_created ON message (created_at);

CREATE TABLE idempotency_key (
    app_id      TEXT NOT NULL,
    key         TEXT NOT NULL,
    msg_seq     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (app_id, key)
);
CREATE INDEX idempotency_key_msg ON idempotency_key (msg_seq);

CREATE TABLE delivery (
    id            BIGSERIAL PRIMARY KEY,
    msg_seq       BIGINT NOT NULL,
    endpoint_id   TEXT NOT NULL,
    status        BIGINT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    due_at        BIGINT,
    trigger_type  BIGINT NOT NULL DEFAULT 0,
    updated_at    BIGINT NOT NULL,
    claimed_by    TEXT
);
CREATE UNIQUE INDEX delivery_msg_endpoint ON delivery (msg_seq, endpoint_id);
CREATE INDEX delivery_endpoint ON delivery (endpoint_id, msg_seq);
CREATE INDEX delivery_due ON delivery (due_at, id) WHERE status = 1;
CREATE INDEX delivery_claimed ON delivery (claimed_by, endpoint_id) WHERE status = 3;

CREATE TABLE attempt (
    seq                   BIGSERIAL PRIMARY KEY,
    id                    TEXT NOT NULL UNIQUE,
    msg_seq               BIGINT NOT NULL,
    msg_id                TEXT NOT NULL,
    endpoint_id           TEXT NOT NULL,
    app_id                TEXT NOT NULL,
    url                   TEXT NOT NULL,
    status                BIGINT NOT NULL,
    response_status_code  BIGINT NOT NULL,
    response              TEXT NOT NULL,
    response_duration_ms  BIGINT NOT NULL,
    trigger_type          BIGINT NOT NULL,
    created_at            BIGINT NOT NULL
);
CREATE INDEX attempt_endpoint ON attempt (endpoint_id, seq);
CREATE INDEX attempt_msg ON attempt (msg_seq, seq);
CREATE INDEX attempt_app ON attempt (app_id, seq);
CREATE INDEX attempt_created ON attempt (created_at);

CREATE TABLE idempotent_response (
    key         TEXT NOT NULL,
    request     TEXT NOT NULL,
    status      BIGINT NOT NULL,
    body        BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (key, request)
);

CREATE TABLE poller_consumer (
    endpoint_id  TEXT NOT NULL,
    consumer_id  TEXT NOT NULL,
    position     BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, consumer_id)
);

CREATE TABLE app_token (
    token_hash  TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
"#,
    r#"
CREATE INDEX delivery_endpoint_due ON delivery (endpoint_id, due_at, id) WHERE status = 1;
"#,
    r#"
-- Issue 11: app tokens carry capabilities (1 = ViewBase, what older tokens could do) and a
-- session id for expire-all; remembered POST responses are scoped to the resolved
-- application (purged with it) and keep a fingerprint of the request body.
ALTER TABLE app_token ADD COLUMN capabilities BIGINT NOT NULL DEFAULT 1;
ALTER TABLE app_token ADD COLUMN session_id TEXT;
CREATE INDEX app_token_app ON app_token (app_id);
ALTER TABLE idempotent_response ADD COLUMN app_id TEXT;
ALTER TABLE idempotent_response ADD COLUMN fingerprint TEXT;
CREATE INDEX idempotent_response_app ON idempotent_response (app_id) WHERE app_id IS NOT NULL;
"#,
    r#"
-- Issue 12: optimistic concurrency. Every change of an application's or endpoint's settings
-- names the revision it read and moves it on; a write from an older read is refused.
ALTER TABLE application ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
ALTER TABLE endpoint ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
"#,
    r#"
-- Issue 13: incoming sources. `config` and the tokens are sealed (see sealing.rs).
CREATE TABLE source (
    id                         TEXT PRIMARY KEY,
    uid                        TEXT UNIQUE,
    name                       TEXT NOT NULL,
    kind                       TEXT NOT NULL,
    config                     TEXT NOT NULL,
    metadata                   TEXT NOT NULL,
    token                      TEXT NOT NULL,
    previous_token             TEXT,
    previous_token_expires_at  BIGINT,
    created_at                 BIGINT NOT NULL,
    updated_at                 BIGINT NOT NULL,
    revision                   BIGINT NOT NULL DEFAULT 0
);
"#,
    r#"
-- Issue 13: a message may carry a body sent as received (content type, bytes, extra headers);
-- each source keeps a log of the requests it received and what became of them; cron sources
-- remember their last tick.
ALTER TABLE message ADD COLUMN raw_content_type TEXT;
ALTER TABLE message ADD COLUMN raw_body BYTEA;
ALTER TABLE message ADD COLUMN raw_headers TEXT;
CREATE TABLE received_request (
    id            TEXT PRIMARY KEY,
    source_id     TEXT NOT NULL,
    received_at   BIGINT NOT NULL,
    outcome       TEXT NOT NULL,
    reason        TEXT,
    content_type  TEXT,
    size          BIGINT NOT NULL,
    event_id      TEXT,
    msg_id        TEXT
);
CREATE INDEX received_request_source ON received_request (source_id, id);
CREATE INDEX received_request_time ON received_request (received_at);
-- The last tick each cron source fired (see kait-sources' schedule.rs).
CREATE TABLE cron_tick (
    source_id   TEXT PRIMARY KEY,
    last_tick   BIGINT NOT NULL
);
"#,
    r#"
-- Issue 14: Svix's `deliverAt`; the deliveries are written due at that time.
ALTER TABLE message ADD COLUMN deliver_at BIGINT;
"#,
    r#"
-- Issue 14: Svix's endpoint transformation (JavaScript run on each webhook when enabled).
ALTER TABLE endpoint ADD COLUMN transformation_code TEXT;
ALTER TABLE endpoint ADD COLUMN transformation_enabled BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE endpoint ADD COLUMN transformation_updated_at BIGINT;
"#,
    r#"
-- Issue 14: pipes (rules on events), their runs and their durable timers.
CREATE TABLE pipe (
    id          TEXT PRIMARY KEY,
    uid         TEXT UNIQUE,
    name        TEXT NOT NULL,
    app_id      TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    definition  TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    revision    BIGINT NOT NULL
);
CREATE TABLE pipe_run (
    id          TEXT PRIMARY KEY,
    pipe_id     TEXT NOT NULL,
    origin      TEXT NOT NULL,
    at          BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX pipe_run_pipe ON pipe_run (pipe_id, id);
CREATE INDEX pipe_run_time ON pipe_run (at);
CREATE TABLE timer (
    id            TEXT PRIMARY KEY,
    pipe_id       TEXT NOT NULL,
    due_at        BIGINT NOT NULL,
    state         TEXT NOT NULL,
    claimed_until BIGINT
);
CREATE INDEX timer_due ON timer (due_at);
CREATE INDEX timer_pipe ON timer (pipe_id);
"#,
    r#"
-- Issue 15: attachments (blobs stored once, referenced by messages), the references that
-- keep them, a message's attachment records, an endpoint's media settings.
CREATE TABLE attachment (
    id            TEXT PRIMARY KEY,
    app_id        TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    filename      TEXT,
    created_at    BIGINT NOT NULL,
    referenced    BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX attachment_unreferenced ON attachment (created_at) WHERE referenced = 0;
CREATE TABLE message_attachment (
    attachment_id TEXT NOT NULL,
    msg_id        TEXT NOT NULL,
    PRIMARY KEY (attachment_id, msg_id)
);
CREATE INDEX message_attachment_msg ON message_attachment (msg_id);
ALTER TABLE message ADD COLUMN attachments TEXT;
ALTER TABLE endpoint ADD COLUMN media TEXT;
"#,
    r#"
-- Issue 16: routes from MQTT topics to events (the definition is kait-devices' RouteSpec).
CREATE TABLE mqtt_route (
    id          TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
"#,
    r#"
-- Issue 16: the device registry (presence) and commands to devices. Deadlines are columns:
-- a device's silence (while online), a command's expiry or reply (while waiting).
CREATE TABLE device (
    app_id        TEXT NOT NULL,
    device        TEXT NOT NULL,
    online        BOOLEAN NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    silent_at     BIGINT,
    changed_at    BIGINT NOT NULL,
    PRIMARY KEY (app_id, device)
);
CREATE INDEX device_silent ON device (silent_at) WHERE online = TRUE;
CREATE TABLE device_command (
    id            TEXT PRIMARY KEY,
    app_id        TEXT NOT NULL,
    device        TEXT NOT NULL,
    name          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    asynchronous  BOOLEAN NOT NULL,
    status        TEXT NOT NULL,
    timeout_ms    BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    deadline_at   BIGINT NOT NULL,
    reply         BYTEA,
    finished_at   BIGINT
);
CREATE INDEX device_command_due ON device_command (deadline_at) WHERE status IN ('queued', 'sent');
CREATE INDEX device_command_queued ON device_command (app_id, device, id) WHERE status = 'queued';
"#,
    r#"
-- Issue 16: work that one node does at a time (the MQTT bridge's reading of device messages).
-- A role is held while its node's row exists: the reaper's removal of a dead node frees it.
CREATE TABLE kait_role (
    role      TEXT PRIMARY KEY,
    node_id   TEXT NOT NULL,
    since     BIGINT NOT NULL
);
"#,
    r#"
-- Issue 17: plugins, their installations into applications, and installation tokens (by
-- hash). A token is valid while its installation exists and it has not expired.
CREATE TABLE plugin (
    id               TEXT PRIMARY KEY,
    uid              TEXT UNIQUE,
    manifest         TEXT NOT NULL,
    credential_hash  TEXT NOT NULL UNIQUE,
    created_at       BIGINT NOT NULL
);
CREATE TABLE installation (
    id           TEXT PRIMARY KEY,
    plugin_id    TEXT NOT NULL,
    app_id       TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    endpoint_id  TEXT NOT NULL,
    granted_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    UNIQUE (plugin_id, app_id)
);
CREATE INDEX installation_app ON installation (app_id);
CREATE TABLE installation_token (
    token_hash       TEXT PRIMARY KEY,
    installation_id  TEXT NOT NULL,
    scopes           TEXT NOT NULL,
    expires_at       BIGINT NOT NULL
);
CREATE INDEX installation_token_installation ON installation_token (installation_id);
CREATE TABLE plugin_audit (
    seq              BIGSERIAL PRIMARY KEY,
    at               BIGINT NOT NULL,
    plugin_id        TEXT NOT NULL,
    installation_id  TEXT NOT NULL,
    app_id           TEXT NOT NULL,
    kind             TEXT NOT NULL,
    subject          TEXT NOT NULL,
    decision         TEXT NOT NULL,
    detail           TEXT NOT NULL,
    attempt_id       TEXT
);
CREATE INDEX plugin_audit_app ON plugin_audit (app_id, seq);
CREATE INDEX plugin_audit_plugin ON plugin_audit (plugin_id, seq);
CREATE INDEX plugin_audit_at ON plugin_audit (at);
"#,
    r#"
-- Issue 17: the endpoint ownership check (a challenge the receiver echoes before deliveries).
ALTER TABLE endpoint ADD COLUMN ownership_required BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE endpoint ADD COLUMN verified_url TEXT;
"#,
    r#"
-- Issue 18: the request an attempt sent, when it was not the message's own body (JSON).
ALTER TABLE attempt ADD COLUMN sent TEXT;
"#,
    r#"
-- Issue 20: a resend asked for while the delivery is being sent, applied when its outcome is.
ALTER TABLE delivery ADD COLUMN resend_requested BOOLEAN NOT NULL DEFAULT FALSE;
"#,
];

/// The advisory lock key that serialises migrations (any constant shared by all nodes).
const MIGRATION_LOCK: i64 = 0x6b61_6974_6d69_6772;

/// Creates the schema if needed and brings it up to date inside one transaction.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<usize, tokio_postgres::Error> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    transaction
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET LOCAL search_path TO {schema}; \
             CREATE TABLE IF NOT EXISTS kait_schema_version (version BIGINT NOT NULL)"
        ))
        .await?;
    let current: i64 = transaction
        .query_opt("SELECT version FROM kait_schema_version", &[])
        .await?
        .map_or(0, |row| row.get(0));
    let current = current as usize;
    if current >= MIGRATIONS.len() {
        transaction.commit().await?;
        return Ok(0);
    }
    for migration in &MIGRATIONS[current..] {
        transaction.batch_execute(migration).await?;
    }
    transaction
        .batch_execute(&format!(
            "DELETE FROM kait_schema_version; INSERT INTO kait_schema_version VALUES ({})",
            MIGRATIONS.len()
        ))
        .await?;
    transaction.commit().await?;
    Ok(MIGRATIONS.len() - current)
}
