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
        // Only a live node may take or keep a role: one the reaper declared dead asks with
        // its old id, which no longer has a row, until its heartbeat notices and renews it.
        let held = self
            .client()
            .await?
            .query_opt(
                "INSERT INTO kait_role (role, node_id, since) \
                 SELECT $1, id, $3 FROM kait_node WHERE id = $2 \
                 ON CONFLICT (role) DO UPDATE SET node_id = EXCLUDED.node_id, \
                   since = CASE WHEN kait_role.node_id = EXCLUDED.node_id \
                                THEN kait_role.since ELSE EXCLUDED.since END \
                 WHERE kait_role.node_id = EXCLUDED.node_id \
                    OR NOT EXISTS (SELECT 1 FROM kait_node n WHERE n.id = kait_role.node_id) \
                 RETURNING node_id",
                &[&role, &&*node, &now_millis()],
            )
            .await?;
        Ok(held.is_some())
    }
}
