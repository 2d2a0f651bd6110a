//! The ingest path's cache of application ids.
//!
//! `POST /api/v1/app/{app}/msg` names its application by id or `uid`; looking it up in the
//! store for every message cost a read transaction on a blocking thread per message, about
//! a tenth of the server's CPU at full load (BENCHMARKS.md). Applications change rarely, so
//! the id a key resolves to is cached until the store's config epoch moves (it moves after
//! any application or endpoint change commits, on any node). A stale hit cannot write for a
//! deleted application: the store checks that the application exists inside the transaction
//! that writes the message.

use std::collections::HashMap;
use std::sync::Mutex;

use kait_core::AppId;
use kait_store::Store;

use crate::ApiError;

/// Most keys kept; the cache is emptied when it is full (applications are few next to the
/// messages sent to them, so this only bounds memory against a flood of distinct keys).
const CAPACITY: usize = 4096;

#[derive(Default)]
pub struct AppIds {
    /// Path key (id or uid) → the id it resolved to and the epoch it was resolved at.
    entries: Mutex<HashMap<Box<str>, (u64, AppId)>>,
}

impl AppIds {
    /// The id of the application named by `key`, from the cache while the epoch holds.
    pub async fn resolve(&self, store: &dyn Store, key: &str) -> Result<AppId, ApiError> {
        // Read the epoch before loading: a change racing with the load moves it past the
        // value stored with the entry, so the entry is not trusted afterwards.
        let epoch = store.config_epoch();
        if let Some((cached_epoch, id)) = self.entries.lock().expect("app id cache").get(key)
            && *cached_epoch == epoch
        {
            return Ok(id.clone());
        }
        let application = store
            .get_application(key)
            .await?
            .ok_or(ApiError::NotFound("application"))?;
        let mut entries = self.entries.lock().expect("app id cache");
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key.into(), (epoch, application.id.clone()));
        Ok(application.id)
    }
}
