//! Plugins, installations and installation tokens on SQLite: SQL and row mapping only.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, EndpointId, InstallationId, PluginId};
use rusqlite::{OptionalExtension, Row, params};

use super::SqliteStore;
use super::rows::{conflict_on_unique, from_json};
use crate::{
    AuditEntry, Installation, InstallationGrant, NewInstallationToken, Plugin, Plugins, StoreError,
    StoreResult, TokenRefusal,
};

const PLUGIN_COLUMNS: &str = "id, uid, manifest, credential_hash, created_at";
const INSTALLATION_COLUMNS: &str =
    "id, plugin_id, app_id, scopes, endpoint_id, granted_by, created_at";

fn plugin_row(row: &Row<'_>) -> rusqlite::Result<Plugin> {
    Ok(Plugin {
        id: PluginId::from_trusted(row.get(0)?),
        uid: row.get(1)?,
        manifest: from_json(2, &row.get::<_, String>(2)?)?,
        credential_hash: row.get(3)?,
        created_at: row.get(4)?,
    })
}

fn installation_row(row: &Row<'_>) -> rusqlite::Result<Installation> {
    Ok(Installation {
        id: InstallationId::from_trusted(row.get(0)?),
        plugin_id: PluginId::from_trusted(row.get(1)?),
        app_id: AppId::from_trusted(row.get(2)?),
        scopes: from_json(3, &row.get::<_, String>(3)?)?,
        endpoint_id: EndpointId::from_trusted(row.get(4)?),
        granted_by: row.get(5)?,
        created_at: row.get(6)?,
    })
}

fn scopes_text(scopes: &[String]) -> String {
    serde_json::to_string(scopes).expect("strings serialize")
}

#[async_trait]
impl Plugins for SqliteStore {
    async fn create_plugin(&self, plugin: Plugin) -> StoreResult<Plugin> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(&format!(
                        "INSERT INTO plugin ({PLUGIN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"
                    ))?
                    .execute(params![
                        plugin.id.as_str(),
                        plugin.uid,
                        plugin.manifest.to_string(),
                        plugin.credential_hash,
                        plugin.created_at
                    ])
                    .map_err(|error| conflict_on_unique(error, "a plugin with this uid exists"))?;
                Ok(plugin)
            })
            .await
    }

    async fn get_plugin(&self, key: &str) -> StoreResult<Option<Plugin>> {
        let key = key.to_owned();
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {PLUGIN_COLUMNS} FROM plugin WHERE id = ?1 OR uid = ?1"
                ))?
                .query_row([key], plugin_row)
                .optional()?)
        })
        .await
    }

    async fn plugin_for_credential(&self, credential_hash: &str) -> StoreResult<Option<Plugin>> {
        let hash = credential_hash.to_owned();
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {PLUGIN_COLUMNS} FROM plugin WHERE credential_hash = ?1"
                ))?
                .query_row([hash], plugin_row)
                .optional()?)
        })
        .await
    }

    async fn list_plugins(&self) -> StoreResult<Vec<Plugin>> {
        self.read(|connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {PLUGIN_COLUMNS} FROM plugin ORDER BY created_at, id"
                ))?
                .query_map([], plugin_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_plugin(&self, id: &PluginId) -> StoreResult<()> {
        let id = id.clone();
        self.writer
            .write(move |context| {
                let connection = &context.connection;
                connection.execute(
                    "DELETE FROM installation_token WHERE installation_id IN \
                     (SELECT id FROM installation WHERE plugin_id = ?1)",
                    [id.as_str()],
                )?;
                connection.execute(
                    "DELETE FROM installation WHERE plugin_id = ?1",
                    [id.as_str()],
                )?;
                if connection.execute("DELETE FROM plugin WHERE id = ?1", [id.as_str()])? == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn create_installation(&self, installation: Installation) -> StoreResult<Installation> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(&format!(
                        "INSERT INTO installation ({INSTALLATION_COLUMNS}) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                    ))?
                    .execute(params![
                        installation.id.as_str(),
                        installation.plugin_id.as_str(),
                        installation.app_id.as_str(),
                        scopes_text(&installation.scopes),
                        installation.endpoint_id.as_str(),
                        installation.granted_by,
                        installation.created_at
                    ])
                    .map_err(|error| {
                        conflict_on_unique(error, "the plugin is already installed there")
                    })?;
                Ok(installation)
            })
            .await
    }

    async fn get_installation(&self, id: &InstallationId) -> StoreResult<Option<Installation>> {
        let id = id.clone();
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {INSTALLATION_COLUMNS} FROM installation WHERE id = ?1"
                ))?
                .query_row([id.as_str()], installation_row)
                .optional()?)
        })
        .await
    }

    async fn list_installations(
        &self,
        app_id: Option<&AppId>,
        plugin_id: Option<&PluginId>,
    ) -> StoreResult<Vec<Installation>> {
        let app_id = app_id.map(|id| id.as_str().to_owned());
        let plugin_id = plugin_id.map(|id| id.as_str().to_owned());
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(&format!(
                    "SELECT {INSTALLATION_COLUMNS} FROM installation \
                     WHERE (?1 IS NULL OR app_id = ?1) AND (?2 IS NULL OR plugin_id = ?2) \
                     ORDER BY created_at, id"
                ))?
                .query_map(params![app_id, plugin_id], installation_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_installation(&self, id: &InstallationId) -> StoreResult<()> {
        let id = id.clone();
        self.writer
            .write(move |context| {
                let connection = &context.connection;
                connection.execute(
                    "DELETE FROM installation_token WHERE installation_id = ?1",
                    [id.as_str()],
                )?;
                if connection.execute("DELETE FROM installation WHERE id = ?1", [id.as_str()])? == 0
                {
                    return Err(StoreError::NotFound);
                }
                Ok(())
            })
            .await
    }

    async fn create_installation_token(&self, token: NewInstallationToken) -> StoreResult<()> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(
                        "INSERT INTO installation_token \
                         (token_hash, installation_id, scopes, expires_at) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![
                        token.token_hash,
                        token.installation_id.as_str(),
                        scopes_text(&token.scopes),
                        token.expires_at
                    ])?;
                Ok(())
            })
            .await
    }

    async fn installation_for_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Result<InstallationGrant, TokenRefusal>> {
        let hash = token_hash.to_owned();
        self.read(move |connection| {
            let found = connection
                .prepare_cached(
                    "SELECT i.id, i.plugin_id, i.app_id, t.scopes, t.expires_at \
                     FROM installation_token t JOIN installation i ON i.id = t.installation_id \
                     WHERE t.token_hash = ?1",
                )?
                .query_row([hash], |row| {
                    Ok(InstallationGrant {
                        installation_id: InstallationId::from_trusted(row.get(0)?),
                        plugin_id: PluginId::from_trusted(row.get(1)?),
                        app_id: AppId::from_trusted(row.get(2)?),
                        scopes: from_json(3, &row.get::<_, String>(3)?)?,
                        expires_at: row.get(4)?,
                    })
                })
                .optional()?;
            Ok(match found {
                None => Err(TokenRefusal::Unknown),
                Some(grant) if grant.expires_at <= now => Err(TokenRefusal::Expired),
                Some(grant) => Ok(grant),
            })
        })
        .await
    }

    async fn revoke_installation_tokens(&self, id: &InstallationId) -> StoreResult<u64> {
        let id = id.clone();
        self.writer
            .write(move |context| {
                Ok(context.connection.execute(
                    "DELETE FROM installation_token WHERE installation_id = ?1",
                    [id.as_str()],
                )? as u64)
            })
            .await
    }

    async fn append_audit(&self, entries: Vec<AuditEntry>) -> StoreResult<()> {
        self.writer
            .write(move |context| {
                let mut insert = context.connection.prepare_cached(
                    "INSERT INTO plugin_audit (at, plugin_id, installation_id, app_id, kind, \
                     subject, decision, detail, attempt_id) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for entry in &entries {
                    insert.execute(params![
                        entry.at,
                        entry.plugin_id.as_str(),
                        entry.installation_id.as_str(),
                        entry.app_id.as_str(),
                        entry.kind,
                        entry.subject,
                        entry.decision,
                        entry.detail,
                        entry.attempt_id
                    ])?;
                }
                Ok(())
            })
            .await
    }

    async fn list_audit(
        &self,
        app_id: Option<&AppId>,
        plugin_id: Option<&PluginId>,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        let app_id = app_id.map(|id| id.as_str().to_owned());
        let plugin_id = plugin_id.map(|id| id.as_str().to_owned());
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(
                    "SELECT seq, at, plugin_id, installation_id, app_id, kind, subject, decision, \
                     detail, attempt_id FROM plugin_audit \
                     WHERE (?1 IS NULL OR app_id = ?1) AND (?2 IS NULL OR plugin_id = ?2) \
                     AND (?3 IS NULL OR seq < ?3) ORDER BY seq DESC LIMIT ?4",
                )?
                .query_map(params![app_id, plugin_id, before, limit as i64], |row| {
                    Ok(AuditEntry {
                        seq: row.get(0)?,
                        at: row.get(1)?,
                        plugin_id: PluginId::from_trusted(row.get(2)?),
                        installation_id: InstallationId::from_trusted(row.get(3)?),
                        app_id: AppId::from_trusted(row.get(4)?),
                        kind: row.get(5)?,
                        subject: row.get(6)?,
                        decision: row.get(7)?,
                        detail: row.get(8)?,
                        attempt_id: row.get(9)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}
