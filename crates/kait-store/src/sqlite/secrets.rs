//! Keeping the data directory and the secrets in it private.
//!
//! The data directory is made `0700` and the database files `0600` (SQLite gives its WAL and
//! shared-memory files the database file's mode), so other local users cannot read them.
//! Endpoint secrets and headers and source configs and tokens are sealed
//! ([`crate::sealing::SEALED_TABLES`]); at open, values written in
//! plain text by an older version, or sealed with a key that is no longer the current one, are
//! sealed again with the current key, with SQLite's `secure_delete` on so the old cells are
//! zeroed, and the WAL is truncated afterwards so no old page image survives there either.

use std::path::Path;

use rusqlite::{Connection, params};

use crate::StoreResult;
use crate::sealing::{SEALED_TABLES, SealedTable, SecretKeys};

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

/// Rows whose sealed columns are read and rewritten per transaction.
const RESEAL_BATCH: i64 = 500;

/// Seals again every sealed value (endpoint secrets and headers, source configs and tokens)
/// not sealed with the current key. Returns how many rows changed. Fails (and the store does
/// not open) when a value was sealed with a key this process was not given.
pub fn reseal(connection: &mut Connection, keys: &SecretKeys) -> StoreResult<usize> {
    let mut resealed = 0;
    for table in &SEALED_TABLES {
        resealed += reseal_table(connection, keys, table)?;
    }
    if resealed > 0 {
        connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    connection.pragma_update(None, "secure_delete", false)?;
    Ok(resealed)
}

fn reseal_table(
    connection: &mut Connection,
    keys: &SecretKeys,
    table: &SealedTable,
) -> StoreResult<usize> {
    let [first, second, third] = table.columns;
    let select = format!(
        "SELECT id, {first}, {second}, {third}, {} FROM {} WHERE id > ?1 ORDER BY id LIMIT ?2",
        table.expiry, table.table
    );
    let update = format!(
        "UPDATE {} SET {first} = ?2, {second} = ?3, {third} = ?4 WHERE id = ?1",
        table.table
    );
    let mut resealed = 0;
    let mut after = String::new();
    loop {
        let rows: Vec<(String, [Option<String>; 3])> = connection
            .prepare(&select)?
            .query_map(params![after, RESEAL_BATCH], |row| {
                let expiry: Option<i64> = row.get(4)?;
                Ok((
                    row.get(0)?,
                    [
                        row.get(1)?,
                        row.get(2)?,
                        row.get::<_, Option<String>>(3)?
                            .filter(|_| expiry.is_some()),
                    ],
                ))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some((last, _)) = rows.last() else { break };
        after = last.clone();
        let transaction = connection.transaction()?;
        transaction.pragma_update(None, "secure_delete", true)?;
        for (id, values) in rows {
            let Some([a, b, c]) = (table.reseal)(keys, &id, values)? else {
                continue;
            };
            transaction.execute(&update, params![id, a, b, c])?;
            resealed += 1;
        }
        transaction.commit()?;
    }
    if resealed > 0 {
        tracing::info!(
            table = table.table,
            rows = resealed,
            key = keys.current_id(),
            "sealed values sealed again with the current secrets key"
        );
    }
    Ok(resealed)
}
