//! Roles on PostgreSQL: `kait_role` names each role's node; a role whose node row is gone
//! (reaped after its lease, or removed at a clean stop) goes to the next node that asks.

use async_trait::async_trait;
use kait_core::time::now_millis;

use super::PgStore;
use crate::{Roles, StoreResult};

#[async_trait]
impl Roles for PgStore {
    async fn hold_role(&self, role: &str) -> StoreResult<bool> {
        let node = self.shared.node.get();
        let node: &str = &node;
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        // Only a live node may take or keep a role: one the reaper declared dead asks with
        // its old id, which no longer has a row, until its heartbeat notices and renews it.
        let inserted = transaction
            .query_opt(
                "INSERT INTO kait_role (role, node_id, since) \
                 SELECT $1, id, $3 FROM kait_node WHERE id = $2 \
                 ON CONFLICT (role) DO NOTHING RETURNING node_id",
                &[&role, &node, &now_millis()],
            )
            .await?;
        if inserted.is_some() {
            transaction.commit().await?;
            return Ok(true);
        }
        // Someone holds it (or held it). Lock the row first, then look at its holder with a
        // statement that starts after the lock: under READ COMMITTED each statement sees what
        // was committed before it began, and the holder's node row was committed before its
        // role row. (One statement that checked the holder's node in the same breath as the
        // upsert saw the world from before the holder's insert, so two nodes starting
        // together could both come away holding the role.)
        let Some(holder) = transaction
            .query_opt(
                "SELECT node_id FROM kait_role WHERE role = $1 FOR UPDATE",
                &[&role],
            )
            .await?
        else {
            // No row, and we could not insert one: this node is not (or no longer) live.
            transaction.commit().await?;
            return Ok(false);
        };
        let holder: String = holder.get(0);
        if holder == node {
            let live = transaction
                .query_opt("SELECT 1 FROM kait_node WHERE id = $1", &[&node])
                .await?
                .is_some();
            transaction.commit().await?;
            return Ok(live);
        }
        let taken = transaction
            .execute(
                "UPDATE kait_role SET node_id = $2, since = $3 WHERE role = $1 \
                 AND NOT EXISTS (SELECT 1 FROM kait_node n WHERE n.id = kait_role.node_id) \
                 AND EXISTS (SELECT 1 FROM kait_node n WHERE n.id = $2)",
                &[&role, &node, &now_millis()],
            )
            .await?;
        transaction.commit().await?;
        Ok(taken == 1)
    }
}
