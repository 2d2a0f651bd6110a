//! Keeping the data directory and the secrets in it private.
//!
//! The data directory is made `0700` and the database files `0600` (SQLite gives its WAL and
//! shared-memory files the database file's mode), so other local users cannot read them.
//! Endpoint secrets and headers are sealed ([`crate::sealing`]); at open, values written in
//! plain text by an older version, or sealed with a key that is no longer the current one, are
//! sealed again with the current key, with SQLite's `secure_delete` on so the old cells are
//! zeroed, and the WAL is truncated afterwards so no old page image survives there either.

use std::path::Path;

use rusqlite::{Connection, params};

use crate::StoreResult;
use crate::sealing::{SecretKeys, StoredEndpointSecrets, StoredSourceSecrets};

/// Files in the data directory that hold data or locks, made owner-only.
const PRIVATE_FILES: [&str; 4] = ["kait.db", "kait.lock", "kait.db-wal", "kait.db-shm"];

/// Creates the data directory owner-only (or narrows an existing one), and the database
/// file too, before SQLite creates it with the process's umask.
pub fn make_private(data_dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)?;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))?;
        // The database and the lock file; SQLite creates the others with the database's mode.
        for name in &PRIVATE_FILES[..2] {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(data_dir.join(name))?;
        }
        for name in PRIVATE_FILES {
            let path = data_dir.join(name);
            if path.exists() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(data_dir)?;
    Ok(())
}

/// Endpoints whose sealed columns are read and rewritten per transaction.
const RESEAL_BATCH: i64 = 500;

/// Seals again every endpoint secret and header set not sealed with the current key.
/// Returns how many endpoints changed. Fails (and the store does not open) when a value was
/// sealed with a key this process was not given.
pub fn reseal(connection: &mut Connection, keys: &SecretKeys) -> StoreResult<usize> {
    let mut resealed = 0;
    let mut after = String::new();
    loop {
        let rows: Vec<StoredEndpointSecrets> = connection
            .prepare(
                "SELECT id, secret, headers, previous_secret, previous_secret_expires_at \
                 FROM endpoint WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map(params![after, RESEAL_BATCH], |row| {
                let expiry: Option<i64> = row.get(4)?;
                Ok(StoredEndpointSecrets {
                    endpoint_id: row.get(0)?,
                    secret: row.get(1)?,
                    headers: row.get(2)?,
                    previous_secret: row
                        .get::<_, Option<String>>(3)?
                        .filter(|_| expiry.is_some()),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = rows.last() else { break };
        after = last.endpoint_id.clone();
        let transaction = connection.transaction()?;
        transaction.pragma_update(None, "secure_delete", true)?;
        for stored in &rows {
            let Some(sealed) = keys.reseal_endpoint(stored)? else {
                continue;
            };
            transaction.execute(
                "UPDATE endpoint SET secret = ?2, headers = ?3, previous_secret = ?4 WHERE id = ?1",
                params![
                    stored.endpoint_id,
                    sealed.secret,
                    sealed.headers,
                    sealed.previous_secret
                ],
            )?;
            resealed += 1;
        }
        transaction.commit()?;
    }
    if resealed > 0 {
        connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        tracing::info!(
            endpoints = resealed,
            key = keys.current_id(),
            "endpoint secrets sealed with the current secrets key"
        );
    }
    connection.pragma_update(None, "secure_delete", false)?;
    Ok(resealed + reseal_sources(connection, keys)?)
}

/// The same for sources' configs and tokens.
fn reseal_sources(connection: &mut Connection, keys: &SecretKeys) -> StoreResult<usize> {
    let mut resealed = 0;
    let mut after = String::new();
    loop {
        let rows: Vec<StoredSourceSecrets> = connection
            .prepare(
                "SELECT id, config, token, previous_token, previous_token_expires_at \
                 FROM source WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map(params![after, RESEAL_BATCH], |row| {
                let expiry: Option<i64> = row.get(4)?;
                Ok(StoredSourceSecrets {
                    source_id: row.get(0)?,
                    config: row.get(1)?,
                    token: row.get(2)?,
                    previous_token: row
                        .get::<_, Option<String>>(3)?
                        .filter(|_| expiry.is_some()),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(last) = rows.last() else { break };
        after = last.source_id.clone();
        let transaction = connection.transaction()?;
        transaction.pragma_update(None, "secure_delete", true)?;
        for stored in &rows {
            let Some(sealed) = keys.reseal_source(stored)? else {
                continue;
            };
            transaction.execute(
                "UPDATE source SET config = ?2, token = ?3, previous_token = ?4 WHERE id = ?1",
                params![
                    stored.source_id,
                    sealed.config,
                    sealed.token,
                    sealed.previous_token
                ],
            )?;
            resealed += 1;
        }
        transaction.commit()?;
    }
    if resealed > 0 {
        connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        tracing::info!(
            sources = resealed,
            key = keys.current_id(),
            "source configs and tokens sealed with the current secrets key"
        );
    }
    connection.pragma_update(None, "secure_delete", false)?;
    Ok(resealed)
}
