//! Plugins (issue 17): extensions registered with Kait, installed into applications with
//! granted scopes, acting through short-lived installation tokens.
//!
//! The store keeps a plugin's manifest as JSON it does not read (the API owns its meaning,
//! like a pipe's definition) and scopes as text (`kait_core::scope` reads them); credentials
//! and tokens only as hashes. A token is valid while it has not expired and its installation
//! exists: uninstalling (or deleting the plugin or the application) revokes its tokens in the
//! same transaction, so the next request with one is refused, on every node.

use async_trait::async_trait;
use kait_core::time::Millis;
use kait_core::{AppId, EndpointId, InstallationId, PluginId};

use crate::StoreResult;

/// A registered plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Plugin {
    pub id: PluginId,
    pub uid: Option<String>,
    /// The manifest as the API accepted it (name, description, URL, event types, scopes…).
    pub manifest: serde_json::Value,
    /// SHA-256 of the plugin's credential (shown once, at registration).
    pub credential_hash: String,
    pub created_at: Millis,
}

/// A plugin installed into an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    pub id: InstallationId,
    pub plugin_id: PluginId,
    pub app_id: AppId,
    /// The scopes granted (a subset of those the plugin asked for).
    pub scopes: Vec<String>,
    /// The endpoint the installation created for the plugin's webhooks.
    pub endpoint_id: EndpointId,
    /// Who granted it (the caller of the install request).
    pub granted_by: String,
    pub created_at: Millis,
}

/// A token to remember (by its hash), confined to one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstallationToken {
    pub token_hash: String,
    pub installation_id: InstallationId,
    /// The token's scopes: its installation's, or fewer.
    pub scopes: Vec<String>,
    pub expires_at: Millis,
}

/// What a presented installation token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationGrant {
    pub installation_id: InstallationId,
    pub plugin_id: PluginId,
    pub app_id: AppId,
    pub scopes: Vec<String>,
    pub expires_at: Millis,
}

/// One line of the plugins' audit log: a call made with an installation token, or one action
/// of a plugin's reply, with the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its place in the log (assigned by the store; 0 when appending).
    pub seq: i64,
    pub at: Millis,
    pub plugin_id: PluginId,
    pub installation_id: InstallationId,
    pub app_id: AppId,
    /// `call` or `action`.
    pub kind: String,
    /// The call's method and route (`POST /api/v1/app/{app_id}/msg`), or the action's type.
    pub subject: String,
    /// `allowed` (or `done`), or `refused`.
    pub decision: String,
    /// The answer's status, or why it was refused, or what the action did.
    pub detail: String,
    /// The attempt whose reply held the action.
    pub attempt_id: Option<String>,
}

/// Why a token is not valid, for a clear 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No such token (never issued, revoked, or its installation is gone).
    Unknown,
    Expired,
}

#[async_trait]
pub trait Plugins: Send + Sync + 'static {
    /// Registers a plugin; `Conflict` when its `uid` is taken.
    async fn create_plugin(&self, plugin: Plugin) -> StoreResult<Plugin>;
    /// A plugin by id or `uid`.
    async fn get_plugin(&self, key: &str) -> StoreResult<Option<Plugin>>;
    /// The plugin whose credential hashes to `credential_hash`.
    async fn plugin_for_credential(&self, credential_hash: &str) -> StoreResult<Option<Plugin>>;
    /// Every plugin, oldest first.
    async fn list_plugins(&self) -> StoreResult<Vec<Plugin>>;
    /// Deletes a plugin with its installations and their tokens (not their endpoints: the
    /// caller deletes those through `Endpoints`). `NotFound` when there is none.
    async fn delete_plugin(&self, id: &PluginId) -> StoreResult<()>;

    /// Records an installation; `Conflict` when the plugin is already installed there.
    async fn create_installation(&self, installation: Installation) -> StoreResult<Installation>;
    async fn get_installation(&self, id: &InstallationId) -> StoreResult<Option<Installation>>;
    /// Installations of one application, or of one plugin, oldest first.
    async fn list_installations(
        &self,
        app_id: Option<&AppId>,
        plugin_id: Option<&PluginId>,
    ) -> StoreResult<Vec<Installation>>;
    /// Uninstalls: the installation and its tokens go in one transaction. `NotFound` when
    /// there is none.
    async fn delete_installation(&self, id: &InstallationId) -> StoreResult<()>;

    async fn create_installation_token(&self, token: NewInstallationToken) -> StoreResult<()>;
    /// What a token grants at `now`, or why it grants nothing.
    async fn installation_for_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Result<InstallationGrant, TokenRefusal>>;
    /// Revokes every token of an installation (the operator's switch). Returns how many.
    async fn revoke_installation_tokens(&self, id: &InstallationId) -> StoreResult<u64>;

    /// Appends to the audit log (kept as long as attempts: `purge_history` ends it too).
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> StoreResult<()>;
    /// The newest entries first, of one application or one plugin (or both), older than
    /// `before` (a `seq`) if given: at most `limit`.
    async fn list_audit(
        &self,
        app_id: Option<&AppId>,
        plugin_id: Option<&PluginId>,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>>;
}
