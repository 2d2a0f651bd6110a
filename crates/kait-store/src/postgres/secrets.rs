//! Sealing endpoint secrets again on PostgreSQL: plain text written by an older version, and
//! values sealed with a key that is no longer the current one (the end of a key rotation).
//!
//! Runs when a node opens the store. Several nodes starting at once may do it together: each
//! update only replaces the exact values it read, so none undoes another's work or a change
//! made meanwhile. A value sealed with a key this node was not given stops the node at
//! start-up, with the key's id, instead of failing deliveries later.

use tokio_postgres::Client;

use crate::StoreResult;
use crate::sealing::{SecretKeys, StoredEndpointSecrets, StoredSourceSecrets};

/// Endpoints read per statement.
const RESEAL_BATCH: i64 = 500;

pub async fn reseal(client: &Client, schema: &str, keys: &SecretKeys) -> StoreResult<usize> {
    let select = format!(
        "SELECT id, secret, headers, previous_secret, previous_secret_expires_at \
         FROM {schema}.endpoint WHERE id > $1 ORDER BY id LIMIT $2"
    );
    let update = format!(
        "UPDATE {schema}.endpoint SET secret = $5, headers = $6, previous_secret = $7 \
         WHERE id = $1 AND secret = $2 AND headers = $3 \
         AND previous_secret IS NOT DISTINCT FROM $4"
    );
    let mut resealed = 0;
    let mut after = String::new();
    loop {
        let rows = client.query(&select, &[&after, &RESEAL_BATCH]).await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get(0)?;
        for row in &rows {
            let expiry: Option<i64> = row.try_get(4)?;
            let previous: Option<String> = row.try_get(3)?;
            let stored = StoredEndpointSecrets {
                endpoint_id: row.try_get(0)?,
                secret: row.try_get(1)?,
                headers: row.try_get(2)?,
                previous_secret: previous.clone().filter(|_| expiry.is_some()),
            };
            let Some(sealed) = keys.reseal_endpoint(&stored)? else {
                continue;
            };
            resealed += client
                .execute(
                    &update,
                    &[
                        &stored.endpoint_id,
                        &stored.secret,
                        &stored.headers,
                        &previous,
                        &sealed.secret,
                        &sealed.headers,
                        &sealed.previous_secret,
                    ],
                )
                .await? as usize;
        }
    }
    if resealed > 0 {
        tracing::info!(
            endpoints = resealed,
            key = keys.current_id(),
            "endpoint secrets sealed with the current secrets key"
        );
    }
    Ok(resealed + reseal_sources(client, schema, keys).await?)
}

/// The same for sources' configs and tokens.
async fn reseal_sources(client: &Client, schema: &str, keys: &SecretKeys) -> StoreResult<usize> {
    let select = format!(
        "SELECT id, config, token, previous_token, previous_token_expires_at \
         FROM {schema}.source WHERE id > $1 ORDER BY id LIMIT $2"
    );
    let update = format!(
        "UPDATE {schema}.source SET config = $5, token = $6, previous_token = $7 \
         WHERE id = $1 AND config = $2 AND token = $3 \
         AND previous_token IS NOT DISTINCT FROM $4"
    );
    let mut resealed = 0;
    let mut after = String::new();
    loop {
        let rows = client.query(&select, &[&after, &RESEAL_BATCH]).await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get(0)?;
        for row in &rows {
            let expiry: Option<i64> = row.try_get(4)?;
            let previous: Option<String> = row.try_get(3)?;
            let stored = StoredSourceSecrets {
                source_id: row.try_get(0)?,
                config: row.try_get(1)?,
                token: row.try_get(2)?,
                previous_token: previous.clone().filter(|_| expiry.is_some()),
            };
            let Some(sealed) = keys.reseal_source(&stored)? else {
                continue;
            };
            resealed += client
                .execute(
                    &update,
                    &[
                        &stored.source_id,
                        &stored.config,
                        &stored.token,
                        &previous,
                        &sealed.config,
                        &sealed.token,
                        &sealed.previous_token,
                    ],
                )
                .await? as usize;
        }
    }
    if resealed > 0 {
        tracing::info!(
            sources = resealed,
            key = keys.current_id(),
            "source configs and tokens sealed with the current secrets key"
        );
    }
    Ok(resealed)
}
