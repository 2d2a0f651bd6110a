//! Plugins, installations and installation tokens on PostgreSQL: SQL and row mapping only.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, EndpointId, InstallationId, PluginId};
use tokio_postgres::Row;

use super::{PgStore, rows};
use crate::{
    AuditEntry, Installation, InstallationGrant, NewInstallationToken, Plugin, Plugins, StoreError,
    StoreResult, TokenRefusal,
};

const PLUGIN_COLUMNS: &str = "id, uid, manifest, credential_hash, created_at";
const INSTALLATION_COLUMNS: &str =
    "id, plugin_id, app_id, scopes, endpoint_id, granted_by, created_at";

fn plugin_row(row: &Row) -> StoreResult<Plugin> {
    Ok(Plugin {
        id: PluginId::from_trusted(row.try_get(0)?),
        uid: row.try_get(1)?,
        manifest: rows::from_json("manifest", row.try_get(2)?)?,
        credential_hash: row.try_get(3)?,
        created_at: row.try_get(4)?,
    })
}

fn installation_row(row: &Row) -> StoreResult<Installation> {
    Ok(Installation {
        id: InstallationId::from_trusted(row.try_get(0)?),
        plugin_id: PluginId::from_trusted(row.try_get(1)?),
        app_id: AppId::from_trusted(row.try_get(2)?),
        scopes: rows::from_json("scopes", row.try_get(3)?)?,
        endpoint_id: EndpointId::from_trusted(row.try_get(4)?),
        granted_by: row.try_get(5)?,
        created_at: row.try_get(6)?,
    })
}

fn scopes_text(scopes: &[String]) -> String {
    serde_json::to_string(scopes).expect("strings serialize")
}

#[async_trait]
impl Plugins for PgStore {
    async fn create_plugin(&self, plugin: Plugin) -> StoreResult<Plugin> {
        self.client()
            .await?
            .execute(
                &format!("INSERT INTO plugin ({PLUGIN_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"),
                &[
                    &plugin.id.as_str(),
                    &plugin.uid,
                    &plugin.manifest.to_string(),
                    &plugin.credential_hash,
                    &plugin.created_at,
                ],
            )
            .await
            .map_err(|error| rows::conflict_on_unique(error, "a plugin with this uid exists"))?;
        Ok(plugin)
    }

    async fn get_plugin(&self, key: &str) -> StoreResult<Option<Plugin>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {PLUGIN_COLUMNS} FROM plugin WHERE id = $1 OR uid = $1"),
                &[&key],
            )
            .await?;
        row.as_ref().map(plugin_row).transpose()
    }

    async fn plugin_for_credential(&self, credential_hash: &str) -> StoreResult<Option<Plugin>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {PLUGIN_COLUMNS} FROM plugin WHERE credential_hash = $1"),
                &[&credential_hash],
            )
            .await?;
        row.as_ref().map(plugin_row).transpose()
    }

    async fn list_plugins(&self) -> StoreResult<Vec<Plugin>> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT {PLUGIN_COLUMNS} FROM plugin ORDER BY created_at, id"),
                &[],
            )
            .await?;
        rows.iter().map(plugin_row).collect()
    }

    async fn delete_plugin(&self, id: &PluginId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        transaction
            .execute(
                "DELETE FROM installation_token WHERE installation_id IN \
                 (SELECT id FROM installation WHERE plugin_id = $1)",
                &[&id.as_str()],
            )
            .await?;
        transaction
            .execute(
                "DELETE FROM installation WHERE plugin_id = $1",
                &[&id.as_str()],
            )
            .await?;
        let deleted = transaction
            .execute("DELETE FROM plugin WHERE id = $1", &[&id.as_str()])
            .await?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn create_installation(&self, installation: Installation) -> StoreResult<Installation> {
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO installation ({INSTALLATION_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)"
                ),
                &[
                    &installation.id.as_str(),
                    &installation.plugin_id.as_str(),
                    &installation.app_id.as_str(),
                    &scopes_text(&installation.scopes),
                    &installation.endpoint_id.as_str(),
                    &installation.granted_by,
                    &installation.created_at,
                ],
            )
            .await
            .map_err(|error| {
                rows::conflict_on_unique(error, "the plugin is already installed there")
            })?;
        Ok(installation)
    }

    async fn get_installation(&self, id: &InstallationId) -> StoreResult<Option<Installation>> {
        let row = self
            .client()
            .await?
            .query_opt(
                &format!("SELECT {INSTALLATION_COLUMNS} FROM installation WHERE id = $1"),
                &[&id.as_str()],
            )
            .await?;
        row.as_ref().map(installation_row).transpose()
    }

    async fn list_installations(
        &self,
        app_id: Option<&AppId>,
        plugin_id: Option<&PluginId>,
    ) -> StoreResult<Vec<Installation>> {
        let app_id = app_id.map(AppId::as_str);
        let plugin_id = plugin_id.map(PluginId::as_str);
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {INSTALLATION_COLUMNS} FROM installation \
                     WHERE ($1::TEXT IS NULL OR app_id = $1) AND ($2::TEXT IS NULL OR plugin_id = $2) \
                     ORDER BY created_at, id"
                ),
                &[&app_id, &plugin_id],
            )
            .await?;
        rows.iter().map(installation_row).collect()
    }

    async fn delete_installation(&self, id: &InstallationId) -> StoreResult<()> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        transaction
            .execute(
                "DELETE FROM installation_token WHERE installation_id = $1",
                &[&id.as_str()],
            )
            .await?;
        let deleted = transaction
            .execute("DELETE FROM installation WHERE id = $1", &[&id.as_str()])
            .await?;
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        transaction.commit().await?;
        Ok(())
    }

    async fn create_installation_token(&self, token: NewInstallationToken) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO installation_token (token_hash, installation_id, scopes, expires_at) \
                 VALUES ($1, $2, $3, $4)",
                &[
                    &token.token_hash,
                    &token.installation_id.as_str(),
                    &scopes_text(&token.scopes),
                    &token.expires_at,
                ],
            )
            .await?;
        Ok(())
    }

    async fn installation_for_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Result<InstallationGrant, TokenRefusal>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT i.id, i.plugin_id, i.app_id, t.scopes, t.expires_at \
                 FROM installation_token t JOIN installation i ON i.id = t.installation_id \
                 WHERE t.token_hash = $1",
                &[&token_hash],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Err(TokenRefusal::Unknown));
        };
        let grant = InstallationGrant {
            installation_id: InstallationId::from_trusted(row.try_get(0)?),
            plugin_id: PluginId::from_trusted(row.try_get(1)?),
            app_id: AppId::from_trusted(row.try_get(2)?),
            scopes: rows::from_json("scopes", row.try_get(3)?)?,
            expires_at: row.try_get(4)?,
        };
        Ok(if grant.expires_at <= now {
            Err(TokenRefusal::Expired)
        } else {
            Ok(grant)
        })
    }

    async fn revoke_installation_tokens(&self, id: &InstallationId) -> StoreResult<u64> {
        Ok(self
            .client()
            .await?
            .execute(
                "DELETE FROM installation_token WHERE installation_id = $1",
                &[&id.as_str()],
            )
            .await?)
    }

    async fn append_audit(&self, entries: Vec<AuditEntry>) -> StoreResult<()> {
        let client = self.client().await?;
        let insert = client
            .prepare_cached(
                "INSERT INTO plugin_audit (at, plugin_id, installation_id, app_id, kind, subject, \
                 decision, detail, attempt_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .await?;
        for entry in &entries {
            client
                .execute(
                    &insert,
                    &[
                        &entry.at,
                        &entry.plugin_id.as_str(),
                        &entry.installation_id.as_str(),
                        &entry.app_id.as_str(),
                        &entry.kind,
                        &entry.subject,
                        &entry.decision,
                        &entry.detail,
                        &entry.attempt_id,
                    ],
                )
                .await?;
        }
        Ok(())
    }

    async fn list_audit(
        &self,
        app_id: Option<&AppId>,
        plugin_id: Option<&PluginId>,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        let app_id = app_id.map(AppId::as_str);
        let plugin_id = plugin_id.map(PluginId::as_str);
        let rows = self
            .client()
            .await?
            .query(
                "SELECT seq, at, plugin_id, installation_id, app_id, kind, subject, decision, \
                 detail, attempt_id FROM plugin_audit \
                 WHERE ($1::TEXT IS NULL OR app_id = $1) AND ($2::TEXT IS NULL OR plugin_id = $2) \
                 AND ($3::BIGINT IS NULL OR seq < $3) ORDER BY seq DESC LIMIT $4",
                &[&app_id, &plugin_id, &before, &(limit as i64)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    seq: row.try_get(0)?,
                    at: row.try_get(1)?,
                    plugin_id: PluginId::from_trusted(row.try_get(2)?),
                    installation_id: InstallationId::from_trusted(row.try_get(3)?),
                    app_id: AppId::from_trusted(row.try_get(4)?),
                    kind: row.try_get(5)?,
                    subject: row.try_get(6)?,
                    decision: row.try_get(7)?,
                    detail: row.try_get(8)?,
                    attempt_id: row.try_get(9)?,
                })
            })
            .collect()
    }
}
