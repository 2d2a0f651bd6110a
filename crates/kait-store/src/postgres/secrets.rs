//! Sealing values again on PostgreSQL (endpoint secrets and headers, source configs and
//! tokens: every table in `SEALED_TABLES`): plain text written by an older version, and values
//! sealed with a key that is no longer the current one (the end of a key rotation).
//!
//! Runs when a node opens the store. Several nodes starting at once may do it together: each
//! update only replaces the exact values it read, so none undoes another's work or a change
//! made meanwhile. A value sealed with a key this node was not given stops the node at
//! start-up, with the key's id, instead of failing deliveries later.

use tokio_postgres::Client;

use crate::StoreResult;
use crate::sealing::{SEALED_TABLES, SealedTable, SecretKeys};

/// Rows read per statement.
const RESEAL_BATCH: i64 = 500;

/// Seals again every sealed value (endpoint secrets and headers, source configs and tokens)
/// not sealed with the current key. Returns how many rows changed.
pub async fn reseal(client: &Client, schema: &str, keys: &SecretKeys) -> StoreResult<usize> {
    let mut resealed = 0;
    for table in &SEALED_TABLES {
        resealed += reseal_table(client, schema, keys, table).await?;
    }
    Ok(resealed)
}

async fn reseal_table(
    client: &Client,
    schema: &str,
    keys: &SecretKeys,
    table: &SealedTable,
) -> StoreResult<usize> {
    let [first, second, third] = table.columns;
    let name = table.table;
    let select = format!(
        "SELECT id, {first}, {second}, {third}, {} FROM {schema}.{name} \
         WHERE id > $1 ORDER BY id LIMIT $2",
        table.expiry
    );
    // Only the exact values read are replaced, so nodes resealing together, or a change made
    // meanwhile, are never undone.
    let update = format!(
        "UPDATE {schema}.{name} SET {first} = $5, {second} = $6, {third} = $7 \
         WHERE id = $1 AND {first} = $2 AND {second} = $3 AND {third} IS NOT DISTINCT FROM $4"
    );
    let mut resealed = 0;
    let mut after = String::new();
    loop {
        let rows = client.query(&select, &[&after, &RESEAL_BATCH]).await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get(0)?;
        for row in &rows {
            let id: String = row.try_get(0)?;
            let (first, second): (String, String) = (row.try_get(1)?, row.try_get(2)?);
            let third: Option<String> = row.try_get(3)?;
            let expiry: Option<i64> = row.try_get(4)?;
            let values = [
                Some(first.clone()),
                Some(second.clone()),
                third.clone().filter(|_| expiry.is_some()),
            ];
            let Some([a, b, c]) = (table.reseal)(keys, &id, values)? else {
                continue;
            };
            resealed += client
                .execute(&update, &[&id, &first, &second, &third, &a, &b, &c])
                .await? as usize;
        }
    }
    if resealed > 0 {
        tracing::info!(
            table = name,
            rows = resealed,
            key = keys.current_id(),
            "sealed values sealed again with the current secrets key"
        );
    }
    Ok(resealed)
}
