//! Runs cron sources: at each tick of a source's schedule, its configured payload becomes a
//! message of the source's application, forwarded to the source's endpoints like a received
//! request (and logged in its received log).
//!
//! Durable without a lock: a tick's message carries the event id `cron-{tick}`, which the
//! store keeps unique per application, so a tick fired twice (a restart after the commit but
//! before the tick was recorded, two nodes on one database) is one message; the last tick
//! fired is recorded after the commit, so a kill -9 before it loses nothing (the tick is
//! still due after the restart). Which tick is due is decided by `kait_sources::due_tick`:
//! only the latest, so downtime never ends in a burst.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kait_core::time::{Millis, now_millis};
use kait_core::{Message, MessageId, RawPayload, ReceivedId, Source, SourceId};
use kait_sources::{Schedule, SourceConfig, SourceKind};
use kait_store::{NewMessage, ReceivedOutcome, ReceivedRequest, Store, StoreError, StoreResult};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How long the runner trusts its list of cron sources: changes made through this node wake
/// it at once; changes made through another node are seen within this time.
const REFRESH: Duration = Duration::from_secs(30);
/// After a store error, the runner tries again this much later.
const RETRY: Duration = Duration::from_secs(5);
/// Nesting bound of a configured payload's JSON reading.
const MAX_PAYLOAD_DEPTH: usize = 64;

/// A cron source as the runner keeps it.
struct CronSource {
    id: SourceId,
    created_at: Millis,
    schedule: Schedule,
    payload: String,
    content_type: Option<String>,
}

fn cron_source(source: &Source) -> Option<CronSource> {
    if SourceKind::parse(&source.kind)? != SourceKind::Cron {
        return None;
    }
    let SourceConfig::Cron {
        schedule,
        payload,
        content_type,
    } = SourceConfig::parse(SourceKind::Cron, &source.config).ok()?
    else {
        return None;
    };
    Some(CronSource {
        id: source.id.clone(),
        created_at: source.created_at,
        schedule: Schedule::parse(&schedule).ok()?,
        payload,
        content_type,
    })
}

/// Fires due ticks until shutdown. `sources_changed` is notified by the API when a source is
/// created, changed or deleted.
pub async fn run(store: Arc<dyn Store>, sources_changed: Arc<Notify>, shutdown: CancellationToken) {
    let mut sources: Option<(Instant, Vec<CronSource>)> = None;
    loop {
        if sources
            .as_ref()
            .is_none_or(|(loaded, _)| loaded.elapsed() >= REFRESH)
        {
            match load(store.as_ref()).await {
                Ok(loaded) => sources = Some((Instant::now(), loaded)),
                Err(error) => tracing::warn!(%error, "reading cron sources failed"),
            }
        }
        let wait = match &sources {
            Some((_, loaded)) => match fire_due(store.as_ref(), loaded, now_millis()).await {
                Ok(next) => next.map_or(REFRESH, |next| {
                    Duration::from_millis((next - now_millis()).max(0) as u64)
                }),
                Err(error) => {
                    tracing::warn!(%error, "firing cron ticks failed; trying again");
                    RETRY
                }
            },
            None => RETRY,
        };
        tokio::select! {
            () = tokio::time::sleep(wait.min(REFRESH)) => {}
            () = sources_changed.notified() => sources = None,
            () = shutdown.cancelled() => return,
        }
    }
}

async fn load(store: &dyn Store) -> StoreResult<Vec<CronSource>> {
    let mut found = Vec::new();
    let mut page = kait_store::PageRequest {
        limit: 250,
        ..Default::default()
    };
    loop {
        let listed = store.list_sources(page.clone()).await?;
        found.extend(listed.items.iter().filter_map(cron_source));
        match listed.items.last() {
            Some(last) if !listed.done => page.iterator = Some(last.id.to_string()),
            _ => return Ok(found),
        }
    }
}

/// Fires every source's due tick; returns when the next tick of any of them comes.
async fn fire_due(
    store: &dyn Store,
    sources: &[CronSource],
    now: Millis,
) -> StoreResult<Option<Millis>> {
    let fired: HashMap<SourceId, Millis> = store.last_ticks().await?;
    let mut next: Option<Millis> = None;
    for source in sources {
        let last = fired.get(&source.id).copied();
        if let Some(tick) = kait_sources::due_tick(&source.schedule, now, source.created_at, last) {
            fire(store, source, tick, now).await?;
        }
        if let Some(at) = source.schedule.next_after(now) {
            next = Some(next.map_or(at, |next| next.min(at)));
        }
    }
    Ok(next)
}

/// Makes the tick's message (once, whoever else tries) and records the tick.
async fn fire(
    store: &dyn Store,
    source: &CronSource,
    tick: Millis,
    now: Millis,
) -> StoreResult<()> {
    let application = kait_store::source_application(store, &source.id).await?;
    let content_type = source
        .content_type
        .clone()
        .unwrap_or_else(|| "application/json".to_owned());
    let body = source.payload.as_bytes();
    let read = kait_sources::body::read(Some(&content_type), body, MAX_PAYLOAD_DEPTH);
    let event_id = format!("cron-{tick}");
    let message = Message {
        id: MessageId::generate(),
        app_id: application.id,
        event_type: SourceKind::Cron.as_str().to_owned(),
        event_id: Some(event_id.clone()),
        channels: None,
        ordering_key: None,
        payload: read.payload,
        raw: read.raw.then(|| RawPayload {
            content_type: content_type.clone(),
            body: body.to_vec(),
            headers: Vec::new(),
        }),
        created_at: now,
        attachments: Vec::new(),
        deliver_at: None,
    };
    let received = ReceivedRequest {
        id: ReceivedId::generate(),
        source_id: source.id.clone(),
        received_at: now,
        outcome: ReceivedOutcome::Accepted,
        reason: None,
        content_type: Some(content_type),
        size: body.len() as u64,
        event_id: Some(event_id),
        msg_id: None,
    };
    match store
        .create_message(NewMessage {
            message,
            idempotency_key: None,
            received: Some(received),
            only_endpoint: None,
        })
        .await
    {
        // Conflict: this tick's message exists already (fired before a restart, or by
        // another node).
        Ok(_) | Err(StoreError::Conflict(_)) => store.record_tick(&source.id, tick).await,
        Err(error) => Err(error),
    }
}
