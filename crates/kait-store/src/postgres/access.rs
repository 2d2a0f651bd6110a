//! App-scoped tokens and remembered `Idempotency-Key` responses on PostgreSQL. SQL and row
//! mapping only.

use async_trait::async_trait;
use kait_core::AppId;
use kait_core::access::Capabilities;
use kait_core::time::{Millis, now_millis};

use super::PgStore;
use crate::{AccessStore, AppTokenGrant, IdempotentResponse, NewAppToken, StoreResult};

#[async_trait]
impl AccessStore for PgStore {
    async fn idempotent_response(
        &self,
        key: &str,
        request: &str,
        not_before: Millis,
    ) -> StoreResult<Option<IdempotentResponse>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT app_id, fingerprint, status, body FROM idempotent_response \
                 WHERE key = $1 AND request = $2 AND created_at >= $3",
                &[&key, &request, &not_before],
            )
            .await?;
        row.map(|row| {
            Ok(IdempotentResponse {
                app_id: row
                    .try_get::<_, Option<String>>(0)?
                    .map(AppId::from_trusted),
                fingerprint: row.try_get::<_, Option<String>>(1)?.unwrap_or_default(),
                status: row.try_get::<_, i64>(2)? as u16,
                body: row.try_get(3)?,
            })
        })
        .transpose()
    }

    async fn save_idempotent_response(
        &self,
        key: &str,
        request: &str,
        response: IdempotentResponse,
    ) -> StoreResult<()> {
        // An expired entry is replaced; a live one is kept (the first response wins).
        self.client()
            .await?
            .execute(
                "INSERT INTO idempotent_response \
                 (key, request, app_id, fingerprint, status, body, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key, request) DO UPDATE SET \
                 app_id = EXCLUDED.app_id, fingerprint = EXCLUDED.fingerprint, \
                 status = EXCLUDED.status, body = EXCLUDED.body, created_at = EXCLUDED.created_at \
                 WHERE idempotent_response.created_at < $7 - 86400000",
                &[
                    &key,
                    &request,
                    &response.app_id.as_ref().map(AppId::as_str),
                    &response.fingerprint,
                    &i64::from(response.status),
                    &response.body,
                    &now_millis(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn create_app_token(&self, token: NewAppToken) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO app_token \
                 (token_hash, app_id, created_at, expires_at, capabilities, session_id) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &token.token_hash,
                    &token.app_id.as_str(),
                    &now_millis(),
                    &token.expires_at,
                    &i64::from(token.capabilities.bits()),
                    &token.session_id,
                ],
            )
            .await?;
        Ok(())
    }

    async fn app_for_token(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> StoreResult<Option<AppTokenGrant>> {
        self.client()
            .await?
            .query_opt(
                "SELECT app_id, capabilities FROM app_token \
                 WHERE token_hash = $1 AND expires_at > $2",
                &[&token_hash, &now],
            )
            .await?
            .map(|row| {
                Ok(AppTokenGrant {
                    app_id: AppId::from_trusted(row.try_get(0)?),
                    capabilities: Capabilities::from_bits(row.try_get::<_, i64>(1)? as u32),
                })
            })
            .transpose()
    }

    async fn expire_app_tokens(
        &self,
        app_id: &AppId,
        session_ids: Option<Vec<String>>,
        expires_at: Millis,
    ) -> StoreResult<u64> {
        Ok(self
            .client()
            .await?
            .execute(
                "UPDATE app_token SET expires_at = $2 \
                 WHERE app_id = $1 AND expires_at > $2 \
                 AND ($3::text[] IS NULL OR session_id = ANY($3))",
                &[&app_id.as_str(), &expires_at, &session_ids],
            )
            .await?)
    }

    async fn end_app_token(&self, token_hash: &str) -> StoreResult<bool> {
        let changed = self
            .client()
            .await?
            .execute(
                "DELETE FROM app_token WHERE token_hash = $1",
                &[&token_hash],
            )
            .await?;
        Ok(changed > 0)
    }
}
