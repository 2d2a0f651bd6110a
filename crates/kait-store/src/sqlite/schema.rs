//! The SQLite schema and its migrations, applied in order and tracked in `PRAGMA user_version`.
//!
//! Queue rows (`delivery`) stay small: the payload lives once in `message` and is joined in at
//! claim time. The partial index `delivery_due` holds only pending rows in the order the claim
//! reads them, so claiming stays fast however large the history grows.

use rusqlite::Connection;

/// Each entry moves the schema from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE application (
    id          TEXT PRIMARY KEY,
    uid         TEXT UNIQUE,
    name        TEXT NOT NULL,
    rate_limit  INTEGER,
    metadata    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE TABLE event_type (
    name          TEXT PRIMARY KEY,
    description   TEXT NOT NULL,
    archived      INTEGER NOT NULL,
    deprecated    INTEGER NOT NULL,
    schemas       TEXT,
    feature_flag  TEXT,
    group_name    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE endpoint (
    id           TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL,
    uid          TEXT,
    url          TEXT NOT NULL,
    description  TEXT NOT NULL,
    version      INTEGER NOT NULL,
    disabled     INTEGER NOT NULL,
    event_types  TEXT,
    channels     TEXT,
    rate_limit   INTEGER,
    metadata     TEXT NOT NULL,
    secret       TEXT NOT NULL,
    headers      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX endpoint_app_uid ON endpoint (app_id, uid) WHERE uid IS NOT NULL;
CREATE INDEX endpoint_app ON endpoint (app_id, id);

CREATE TABLE message (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    app_id      TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    event_id    TEXT,
    channels    TEXT,
    payload     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX message_app_event_id ON message (app_id, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX message_app_seq ON message (app_id, seq);

CREATE TABLE idempotency_key (
    app_id      TEXT NOT NULL,
    key         TEXT NOT NULL,
    msg_seq     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (app_id, key)
) WITHOUT ROWID;

CREATE TABLE delivery (
    id            INTEGER PRIMARY KEY,
    msg_seq       INTEGER NOT NULL,
    endpoint_id   TEXT NOT NULL,
    status        INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    due_at        INTEGER,
    trigger_type  INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX delivery_msg_endpoint ON delivery (msg_seq, endpoint_id);
CREATE INDEX delivery_endpoint ON delivery (endpoint_id, msg_seq);
CREATE INDEX delivery_due ON delivery (due_at) WHERE status = 1;

CREATE TABLE attempt (
    seq                   INTEGER PRIMARY KEY,
    id                    TEXT NOT NULL UNIQUE,
    msg_seq               INTEGER NOT NULL,
    msg_id                TEXT NOT NULL,
    endpoint_id           TEXT NOT NULL,
    app_id                TEXT NOT NULL,
    url                   TEXT NOT NULL,
    status                INTEGER NOT NULL,
    response_status_code  INTEGER NOT NULL,
    response              TEXT NOT NULL,
    response_duration_ms  INTEGER NOT NULL,
    trigger_type          INTEGER NOT NULL,
    created_at            INTEGER NOT NULL
);
CREATE INDEX attempt_endpoint ON attempt (endpoint_id, seq);
CREATE INDEX attempt_msg ON attempt (msg_seq, seq);
"#,
    r#"
ALTER TABLE message ADD COLUMN ordering_key TEXT;
ALTER TABLE endpoint ADD COLUMN ordering TEXT NOT NULL DEFAULT 'concurrent';
"#,
    r#"
ALTER TABLE endpoint ADD COLUMN previous_secret TEXT;
ALTER TABLE endpoint ADD COLUMN previous_secret_expires_at INTEGER;
"#,
    r#"
CREATE TABLE idempotent_response (
    key         TEXT NOT NULL,
    request     TEXT NOT NULL,
    status      INTEGER NOT NULL,
    body        BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (key, request)
) WITHOUT ROWID;
"#,
    r#"
ALTER TABLE endpoint ADD COLUMN failing_since INTEGER;
"#,
    r#"
ALTER TABLE endpoint ADD COLUMN format TEXT NOT NULL DEFAULT 'json';
"#,
    r#"
ALTER TABLE endpoint ADD COLUMN kind TEXT NOT NULL DEFAULT 'webhook';
CREATE TABLE poller_consumer (
    endpoint_id  TEXT NOT NULL,
    consumer_id  TEXT NOT NULL,
    position     INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, consumer_id)
) WITHOUT ROWID;
"#,
    r#"
CREATE TABLE app_token (
    token_hash  TEXT PRIMARY KEY,
    app_id      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
CREATE INDEX idempotency_key_msg ON idempotency_key (msg_seq);
CREATE INDEX message_created ON message (created_at);
CREATE INDEX attempt_created ON attempt (created_at);
"#,
    r#"
CREATE INDEX delivery_endpoint_due ON delivery (endpoint_id, due_at, id) WHERE status = 1;
"#,
    r#"
-- Issue 11: app tokens carry capabilities (1 = ViewBase, what older tokens could do) and a
-- session id for expire-all; remembered POST responses are scoped to the resolved
-- application (purged with it) and keep a fingerprint of the request body.
ALTER TABLE app_token ADD COLUMN capabilities INTEGER NOT NULL DEFAULT 1;
ALTER TABLE app_token ADD COLUMN session_id TEXT;
CREATE INDEX app_token_app ON app_token (app_id);
ALTER TABLE idempotent_response ADD COLUMN app_id TEXT;
ALTER TABLE idempotent_response ADD COLUMN fingerprint TEXT;
CREATE INDEX idempotent_response_app ON idempotent_response (app_id) WHERE app_id IS NOT NULL;
"#,
    r#"
-- Issue 12: optimistic concurrency. Every change of an application's or endpoint's settings
-- names the revision it read and moves it on; a write from an older read is refused.
ALTER TABLE application ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoint ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
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
    previous_token_expires_at  INTEGER,
    created_at                 INTEGER NOT NULL,
    updated_at                 INTEGER NOT NULL,
    revision                   INTEGER NOT NULL DEFAULT 0
);
"#,
    r#"
-- Issue 13: a message may carry a body sent as received (content type, bytes, extra headers);
-- each source keeps a log of the requests it received and what became of them; cron sources
-- remember their last tick.
ALTER TABLE message ADD COLUMN raw_content_type TEXT;
ALTER TABLE message ADD COLUMN raw_body BLOB;
ALTER TABLE message ADD COLUMN raw_headers TEXT;
CREATE TABLE received_request (
    id            TEXT PRIMARY KEY,
    source_id     TEXT NOT NULL,
    received_at   INTEGER NOT NULL,
    outcome       TEXT NOT NULL,
    reason        TEXT,
    content_type  TEXT,
    size          INTEGER NOT NULL,
    event_id      TEXT,
    msg_id        TEXT
);
CREATE INDEX received_request_source ON received_request (source_id, id);
CREATE INDEX received_request_time ON received_request (received_at);
-- The last tick each cron source fired (see kait-sources' schedule.rs).
CREATE TABLE cron_tick (
    source_id   TEXT PRIMARY KEY,
    last_tick   INTEGER NOT NULL
);
"#,
    r#"
-- Issue 14: Svix's `deliverAt`; the deliveries are written due at that time.
ALTER TABLE message ADD COLUMN deliver_at INTEGER;
"#,
    r#"
-- Issue 14: Svix's endpoint transformation (JavaScript run on each webhook when enabled).
ALTER TABLE endpoint ADD COLUMN transformation_code TEXT;
ALTER TABLE endpoint ADD COLUMN transformation_enabled INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoint ADD COLUMN transformation_updated_at INTEGER;
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
    enabled     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    revision    INTEGER NOT NULL
);
CREATE TABLE pipe_run (
    id          TEXT PRIMARY KEY,
    pipe_id     TEXT NOT NULL,
    origin      TEXT NOT NULL,
    at          INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX pipe_run_pipe ON pipe_run (pipe_id, id);
CREATE INDEX pipe_run_time ON pipe_run (at);
CREATE TABLE timer (
    id            TEXT PRIMARY KEY,
    pipe_id       TEXT NOT NULL,
    due_at        INTEGER NOT NULL,
    state         TEXT NOT NULL,
    claimed_until INTEGER
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
    size          INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    filename      TEXT,
    created_at    INTEGER NOT NULL,
    referenced    INTEGER NOT NULL DEFAULT 0
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
    created_at  INTEGER NOT NULL
);
"#,
    r#"
-- Issue 16: the device registry (presence) and commands to devices. Deadlines are columns:
-- a device's silence (while online), a command's expiry or reply (while waiting).
CREATE TABLE device (
    app_id        TEXT NOT NULL,
    device        TEXT NOT NULL,
    online        INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    silent_at     INTEGER,
    changed_at    INTEGER NOT NULL,
    PRIMARY KEY (app_id, device)
);
CREATE INDEX device_silent ON device (silent_at) WHERE online = 1;
CREATE TABLE device_command (
    id            TEXT PRIMARY KEY,
    app_id        TEXT NOT NULL,
    device        TEXT NOT NULL,
    name          TEXT NOT NULL,
    payload       TEXT NOT NULL,
    asynchronous  INTEGER NOT NULL,
    status        TEXT NOT NULL,
    timeout_ms    INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    deadline_at   INTEGER NOT NULL,
    reply         BLOB,
    finished_at   INTEGER
);
CREATE INDEX device_command_due ON device_command (deadline_at) WHERE status IN ('queued', 'sent');
CREATE INDEX device_command_queued ON device_command (app_id, device, id) WHERE status = 'queued';
"#,
    r#"
-- Issue 17: plugins, their installations into applications, and installation tokens (by
-- hash). A token is valid while its installation exists and it has not expired.
CREATE TABLE plugin (
    id               TEXT PRIMARY KEY,
    uid              TEXT UNIQUE,
    manifest         TEXT NOT NULL,
    credential_hash  TEXT NOT NULL UNIQUE,
    created_at       INTEGER NOT NULL
);
CREATE TABLE installation (
    id           TEXT PRIMARY KEY,
    plugin_id    TEXT NOT NULL,
    app_id       TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    endpoint_id  TEXT NOT NULL,
    granted_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (plugin_id, app_id)
);
CREATE INDEX installation_app ON installation (app_id);
CREATE TABLE installation_token (
    token_hash       TEXT PRIMARY KEY,
    installation_id  TEXT NOT NULL,
    scopes           TEXT NOT NULL,
    expires_at       INTEGER NOT NULL
);
CREATE INDEX installation_token_installation ON installation_token (installation_id);
CREATE TABLE plugin_audit (
    seq              INTEGER PRIMARY KEY,
    at               INTEGER NOT NULL,
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
ALTER TABLE endpoint ADD COLUMN ownership_required INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoint ADD COLUMN verified_url TEXT;
"#,
    r#"
-- Issue 18: the request an attempt sent, when it was not the message's own body (JSON).
ALTER TABLE attempt ADD COLUMN sent TEXT;
"#,
    r#"
-- Issue 20: a resend asked for while the delivery is being sent, applied when its outcome is.
ALTER TABLE delivery ADD COLUMN resend_requested INTEGER NOT NULL DEFAULT 0;
"#,
];

/// Brings the database's schema up to date inside one transaction.
pub fn migrate(connection: &mut Connection) -> rusqlite::Result<()> {
    let current: usize =
        connection.query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))? as usize;
    if current >= MIGRATIONS.len() {
        return Ok(());
    }
    let transaction = connection.transaction()?;
    for migration in &MIGRATIONS[current..] {
        transaction.execute_batch(migration)?;
    }
    transaction.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    transaction.commit()
}
