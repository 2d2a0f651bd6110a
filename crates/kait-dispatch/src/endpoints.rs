//! The dispatcher's endpoint cache.
//!
//! Loading the endpoint for every attempt would cost a store read per webhook; caching it
//! forever would send with stale secrets or headers. Each entry remembers the store's config
//! epoch it was loaded at and is reloaded once the epoch has moved, which the store does
//! before it acknowledges any endpoint change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kait_core::signing::SigningKey;
use kait_core::{DeliveryOrder, Endpoint, EndpointId, EndpointKind, PayloadFormat};
use kait_deliver::header::{HeaderMap, HeaderName, HeaderValue};
use kait_deliver::{SendError, Target};
use kait_store::{Endpoints, StoreResult};

/// An endpoint in the form an attempt needs it: key schedule and headers prepared once.
pub struct PreparedEndpoint {
    pub url: String,
    /// The URL parsed once; an unparsable one fails each attempt with its reason.
    pub target: Result<Target, SendError>,
    pub disabled: bool,
    pub rate_limit: Option<u16>,
    pub ordering: DeliveryOrder,
    pub format: PayloadFormat,
    pub kind: EndpointKind,
    pub signing_key: SigningKey,
    /// The rotated-out key and until when (ms) it also signs.
    pub previous_signing_key: Option<(SigningKey, i64)>,
    pub headers: HeaderMap,
    /// The transformation's code, when one is switched on.
    pub transformation: Option<Arc<str>>,
    /// How it receives attachments (link lifetime, inline size).
    pub media: kait_core::MediaSettings,
    /// Deliveries wait until the receiver echoes the ownership challenge.
    pub ownership_pending: bool,
}

impl PreparedEndpoint {
    fn new(endpoint: &Endpoint) -> Self {
        let mut headers = HeaderMap::with_capacity(endpoint.headers.len());
        for (name, value) in &endpoint.headers {
            // Validated at the API; a header that still does not parse is skipped, not sent.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        Self {
            url: endpoint.url.clone(),
            target: Target::parse(&endpoint.url),
            disabled: endpoint.disabled,
            rate_limit: endpoint.rate_limit,
            ordering: endpoint.ordering,
            format: endpoint.format,
            kind: endpoint.kind,
            signing_key: endpoint.secret.signing_key(),
            previous_signing_key: endpoint
                .previous_secret
                .as_ref()
                .map(|(secret, expires_at)| (secret.signing_key(), *expires_at)),
            headers,
            transformation: endpoint.transformation.active_code().map(Arc::from),
            media: endpoint.media,
            ownership_pending: endpoint.ownership.pending(&endpoint.url),
        }
    }
}

pub struct EndpointCache {
    store: Arc<dyn Endpoints>,
    entries: Mutex<HashMap<EndpointId, (u64, Arc<PreparedEndpoint>)>>,
}

impl EndpointCache {
    pub fn new(store: Arc<dyn Endpoints>) -> Self {
        Self {
            store,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The endpoint as it is now, or `None` if it was deleted.
    /// Records that the receiver at `url` echoed the ownership challenge (the epoch moves,
    /// so the next [`EndpointCache::get`] reloads the endpoint).
    pub async fn verify(&self, id: &EndpointId, url: &str, at: i64) -> StoreResult<bool> {
        self.store.verify_endpoint(id, url, at).await
    }

    pub async fn get(&self, id: &EndpointId) -> StoreResult<Option<Arc<PreparedEndpoint>>> {
        // Read the epoch before loading: a change racing with the load moves the epoch past
        // the one recorded, so the next call reloads.
        let epoch = self.store.config_epoch();
        if let Some((cached_epoch, endpoint)) = self.entries.lock().expect("cache lock").get(id)
            && *cached_epoch == epoch
        {
            return Ok(Some(endpoint.clone()));
        }
        let Some(endpoint) = self.store.get_endpoint_by_id(id).await? else {
            self.entries.lock().expect("cache lock").remove(id);
            return Ok(None);
        };
        let prepared = Arc::new(PreparedEndpoint::new(&endpoint));
        self.entries
            .lock()
            .expect("cache lock")
            .insert(id.clone(), (epoch, prepared.clone()));
        Ok(Some(prepared))
    }
}
