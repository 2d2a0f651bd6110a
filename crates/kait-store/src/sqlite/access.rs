//! App-scoped tokens and remembered `Idempotency-Key` responses on SQLite. SQL and row
//! mapping only.

use async_trait::async_trait;
use kait_core::AppId;
use kait_core::access::Capabilities;
use kait_core::time::{Millis, now_millis};
use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::{AccessStore, AppTokenGrant, IdempotentResponse, NewAppToken, StoreResult};

#[async_trait]
impl AccessStore for SqliteStore {
    async fn idempotent_response(
        &self,
        key: &str,
        request: &str,
        not_before: Millis,
    ) -> StoreResult<Option<IdempotentResponse>> {
        let (key, request) = (key.to_owned(), request.to_owned());
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(
                    "SELECT app_id, fingerprint, status, body FROM idempotent_response \
                     WHERE key = ?1 AND request = ?2 AND created_at >= ?3",
                )?
                .query_row(params![key, request, not_before], |row| {
                    Ok(IdempotentResponse {
                        app_id: row.get::<_, Option<String>>(0)?.map(AppId::from_trusted),
                        fingerprint: row.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        status: row.get(2)?,
                        body: row.get(3)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn save_idempotent_response(
        &self,
        key: &str,
        request: &str,
        response: IdempotentResponse,
    ) -> StoreResult<()> {
        let (key, request) = (key.to_owned(), request.to_owned());
        self.writer
            .write(move |context| {
                // An expired entry is replaced; a live one is kept (the first response wins).
                context
                    .connection
                    .prepare_cached(
                        "INSERT INTO idempotent_response \
                         (key, request, app_id, fingerprint, status, body, created_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (key, request) DO UPDATE SET \
                         app_id = excluded.app_id, fingerprint = excluded.fingerprint, \
                         status = excluded.status, body = excluded.body, created_at = excluded.created_at \
                         WHERE created_at < ?7 - 86400000",
                    )?
                    .execute(params![
                        key,
                        request,
                        response.app_id.as_ref().map(AppId::as_str),
                        response.fingerprint,
                        response.status,
                        response.body,
                        now_millis()
                    ])?;
                Ok(())
            })
            .await
    }

    async fn create_app_token(&self, token: NewAppToken) -> StoreResult<()> {
        self.writer
            .write(move |context| {
                context
                    .connection
                    .prepare_cached(
                        "INSERT INTO app_token \
                         (token_hash, app_id, created_at, expires_at, capabilities, session_id) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![
                        token.token_hash,
                        token.app_id.as_str(),
                        now_millis(),
                        token.expires_at,
                        token.capabilities.bits(),
                        token.session_id
                    ])?;
                Ok(())
            })
            .await
    }

    async fn app_for_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<AppTokenGrant>> {
        let token_hash = token_hash.to_owned();
        self.read(move |connection| {
            Ok(connection
                .prepare_cached(
                    "SELECT app_id, capabilities FROM app_token \
                     WHERE token_hash = ?1 AND expires_at > ?2",
                )?
                .query_row(params![token_hash, now], |row| {
                    Ok(AppTokenGrant {
                        app_id: AppId::from_trusted(row.get(0)?),
                        capabilities: Capabilities::from_bits(row.get(1)?),
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn expire_app_tokens(
        &self,
        app_id: &AppId,
        session_ids: Option<Vec<String>>,
        expires_at: Millis,
    ) -> StoreResult<u64> {
        let app_id = app_id.clone();
        self.writer
            .write(move |context| {
                let sessions = session_ids.map(|ids| crate::columns::to_json(&ids));
                let changed = context
                    .connection
                    .prepare_cached(
                        "UPDATE app_token SET expires_at = ?2 \
                         WHERE app_id = ?1 AND expires_at > ?2 \
                         AND (?3 IS NULL OR session_id IN (SELECT value FROM json_each(?3)))",
                    )?
                    .execute(params![app_id.as_str(), expires_at, sessions])?;
                Ok(changed as u64)
            })
            .await
    }

    async fn end_app_token(&self, token_hash: &str) -> StoreResult<bool> {
        let token_hash = token_hash.to_owned();
        self.writer
            .write(move |context| {
                let changed = context
                    .connection
                    .prepare_cached("DELETE FROM app_token WHERE token_hash = ?1")?
                    .execute([token_hash.as_str()])?;
                Ok(changed > 0)
            })
            .await
    }
}
