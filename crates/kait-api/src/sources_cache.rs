//! The receiving path's cache of sources.
//!
//! Every request to a receiving URL needs its source: the token, and the type's parsed
//! configuration with its secret. Reading and unsealing it from the store per request cost
//! more than the rest of receiving (BENCHMARKS.md, `ingest`), and sources change rarely, so a
//! source is kept, parsed, until the store's config epoch moves (it moves after any change or
//! deletion of a source commits, on any node, as for applications in `app_ids.rs`). A token
//! rotated or a source deleted is therefore seen by the next request that starts after the
//! change was acknowledged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kait_core::Source;
use kait_sources::{SourceConfig, SourceKind};
use kait_store::Store;

use crate::ApiError;

/// Most sources kept; emptied when full (a flood of unknown ids never fills it: only sources
/// found in the store are kept).
const CAPACITY: usize = 4096;

/// A source with its type and configuration parsed once.
pub struct CachedSource {
    pub source: Source,
    /// The type and configuration, or why they cannot be used (a source stored by a version
    /// that knew other types): every request to it is then refused with this reason.
    pub parsed: Result<(SourceKind, SourceConfig), String>,
}

/// A cached source and the config epoch it was read at.
type Entry = (u64, Arc<CachedSource>);

#[derive(Default)]
pub struct SourcesCache {
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

impl SourcesCache {
    /// The source with this id (`src_…`), from the cache while the epoch holds.
    pub async fn get(
        &self,
        store: &dyn Store,
        source_id: &str,
    ) -> Result<Option<Arc<CachedSource>>, ApiError> {
        // Read the epoch before loading, so a change racing the load invalidates the entry.
        let epoch = store.config_epoch();
        if let Some((cached_epoch, source)) =
            self.entries.lock().expect("sources cache").get(source_id)
            && *cached_epoch == epoch
        {
            return Ok(Some(source.clone()));
        }
        let Some(source) = store.get_source(source_id).await? else {
            return Ok(None);
        };
        let parsed = SourceKind::parse(&source.kind)
            .ok_or_else(|| format!("unknown source type {:?}", source.kind))
            .and_then(|kind| {
                SourceConfig::parse(kind, &source.config)
                    .map(|config| (kind, config))
                    .map_err(|problem| problem.to_string())
            });
        let cached = Arc::new(CachedSource { source, parsed });
        let mut entries = self.entries.lock().expect("sources cache");
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(source_id.into(), (epoch, cached.clone()));
        Ok(Some(cached))
    }
}
