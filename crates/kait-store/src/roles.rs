//! Roles: work that one node of a cluster does at a time.
//!
//! The MQTT bridge reads device messages on one node at a time (the broker keeps one session
//! for the cluster, which the holder of `mqtt-ingest` connects to), so that each device's
//! messages are stored in the order the broker sent them. A role is held for as long as the
//! holder's lease: a node that dies leaves it to the next caller once its lease has expired;
//! a node that stops cleanly hands it over at once.

use async_trait::async_trait;

use crate::StoreResult;

#[async_trait]
pub trait Roles: Send + Sync + 'static {
    /// Takes `role` for this node if no live node holds it, or keeps it: `true` while this
    /// node holds it. Called every few seconds by the would-be holder, which stops the role's
    /// work as soon as it answers `false`. A store of one node always holds every role.
    async fn hold_role(&self, role: &str) -> StoreResult<bool> {
        let _ = role;
        Ok(true)
    }
}
