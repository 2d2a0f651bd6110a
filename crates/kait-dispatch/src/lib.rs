//! Kait's dispatcher: claims due deliveries, sends them, records what happened.
//!
//! One loop task owns every endpoint's [`lane::Lane`]. It claims due deliveries from the store
//! in batches (skipping endpoints whose lane is full), routes each into its endpoint's lane,
//! and starts attempts as each lane's limits allow: per-endpoint in-flight limit, rate limit,
//! circuit breaker, `Retry-After` pauses and ordering. Each attempt runs as its own task; it
//! looks the endpoint up in an [`endpoints::EndpointCache`] (checked against the store's
//! endpoint epoch, so a change acknowledged by the API applies to the next attempt), sends
//! through `kait-deliver`, decides the next step from the retry schedule, hands the outcome to
//! the recorder (batched store writes) and tells the loop it finished.
//!
//! The loop sleeps until an attempt finishes, the store signals new due work, a lane's pause
//! or the earliest scheduled retry ends, or the poll interval passes (a safety net).

mod attempt;
pub mod breaker;
mod endpoints;
pub mod lane;
mod rate;
mod recorder;
pub mod transform;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kait_core::retry::RetrySchedule;
use kait_core::time::{Millis, now_millis};
use kait_core::{DeliveryOrder, EndpointId};
use kait_deliver::Sender;
use kait_store::operational::OperationalEvents;
use kait_store::{ClaimedDelivery, DeliveryQueue, Endpoints, NextStep};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use crate::breaker::{BreakerConfig, CircuitStates};
use crate::endpoints::EndpointCache;
use crate::lane::{Lane, LaneSettings};

#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Attempts in flight at once, over all endpoints.
    pub max_in_flight: usize,
    /// Attempts in flight at once to one endpoint (an ordered endpoint has one per key).
    pub endpoint_in_flight: usize,
    /// Claimed deliveries an endpoint's lane may hold before claiming skips that endpoint.
    pub endpoint_queue_limit: usize,
    /// Most deliveries claimed per store round trip.
    pub claim_batch: usize,
    pub retry_schedule: RetrySchedule,
    pub breaker: BreakerConfig,
    /// An endpoint failing without a single success for this long is disabled.
    pub disable_after: Option<Duration>,
    /// The longest pause a receiver's `Retry-After` can impose.
    pub max_retry_after: Duration,
    /// Longest sleep between claims when nothing signals new work.
    pub poll_interval: Duration,
    /// How long shutdown waits for attempts in flight before leaving them to the next start.
    pub shutdown_grace: Duration,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            endpoint_in_flight: 64,
            endpoint_queue_limit: 512,
            claim_batch: 512,
            retry_schedule: RetrySchedule::default(),
            breaker: BreakerConfig::default(),
            disable_after: Some(Duration::from_secs(5 * 24 * 3600)),
            max_retry_after: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// How often the dispatcher's gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// What every attempt task shares.
struct Shared {
    sender: Sender,
    endpoints: EndpointCache,
    retry_schedule: RetrySchedule,
    max_retry_after: Duration,
    /// Runs endpoint transformations (user JavaScript) off the async workers.
    scripts: kait_script::ScriptPool,
    pipes: Option<Arc<dyn PipeRunner>>,
    media: Option<kait_media::Media>,
    replies: Option<Arc<dyn ReplyRunner>>,
    traces: Option<Arc<dyn kait_core::trace::TraceExport>>,
    traceparent_to_receivers: bool,
}

/// What carries deliveries out: HTTP requests, user scripts (transformations) and pipes.
pub struct Runners {
    pub sender: Sender,
    pub scripts: kait_script::ScriptPool,
    /// Runs deliveries to endpoints of kind `pipe`; without it they fail (and are retried).
    pub pipes: Option<Arc<dyn PipeRunner>>,
    /// Signs attachment links (and reads small attachments to send inline); without it a
    /// message with attachments fails (and is retried).
    pub media: Option<kait_media::Media>,
    /// Runs the actions in plugins' answers; without it they are not read.
    pub replies: Option<Arc<dyn ReplyRunner>>,
    /// Where each attempt's span goes (`--otlp-endpoint`); `None`: no tracing.
    pub traces: Option<Arc<dyn kait_core::trace::TraceExport>>,
    /// Send each attempt's W3C `traceparent` to the receiver.
    pub traceparent_to_receivers: bool,
}

/// Runs the actions a plugin put in its successful answer to one attempt (issue 17). Called
/// once per attempt, before the attempt is recorded: an attempt's actions never run twice,
/// and a retry is a new attempt with its own id (from which the actions derive the ids of
/// what they create, so a crash in between cannot double them either).
#[async_trait::async_trait]
pub trait ReplyRunner: Send + Sync + 'static {
    async fn run_reply(
        &self,
        delivery: &ClaimedDelivery,
        attempt_id: &kait_core::AttemptId,
        body: &str,
    );
}

/// Runs a pipe on one of its events: a delivery to the pipe's endpoint (kind `pipe`), so
/// that events reach pipes durably, in order per key, and are retried like webhooks.
#[async_trait::async_trait]
pub trait PipeRunner: Send + Sync + 'static {
    /// `Ok(summary)` when the run is finished (done or filtered), `Err(reason)` to retry it.
    async fn run_pipe(
        &self,
        endpoint_url: &str,
        delivery: &ClaimedDelivery,
    ) -> Result<String, String>;
}

/// Converts a store time to an instant on the monotonic clock.
fn instant_of(at: Millis, now: Instant, now_ms: Millis) -> Instant {
    now + Duration::from_millis((at - now_ms).max(0) as u64)
}

/// The loop's own state: every lane, and the totals that bound the whole dispatcher.
struct Dispatcher {
    store: Arc<dyn DeliveryQueue>,
    endpoints: Arc<dyn Endpoints>,
    shared: Arc<Shared>,
    config: DispatcherConfig,
    lanes: HashMap<EndpointId, Lane>,
    /// The last claim was cut short by the claim capacity (see [`Self::claims_resume`]).
    starved: bool,
    /// Endpoints the last claim skipped because their lane was full: their backlog in the
    /// store is claimed again once the lane is down to half.
    skipped: std::collections::HashSet<EndpointId>,
    /// Endpoints whose lane takes no hand-offs now; read by the store as it accepts messages.
    closed_to_handoffs: Arc<std::sync::Mutex<std::collections::HashSet<EndpointId>>>,
    circuit_states: CircuitStates,
    in_flight: usize,
    waiting: usize,
    finished: mpsc::Sender<attempt::Finished>,
    outcomes: mpsc::Sender<recorder::ToRecord>,
    ops: OperationalEvents,
    /// The attempt tasks, so that shutdown can stop those that outlive the grace period.
    attempts: JoinSet<()>,
    /// Endpoints whose per-endpoint gauges were published, so a lane that went away is
    /// reported as zero once instead of keeping its last value.
    published: std::collections::HashSet<EndpointId>,
}

impl Dispatcher {
    fn lane_settings(&self, endpoint: Option<&endpoints::PreparedEndpoint>) -> LaneSettings {
        let ordering = endpoint.map_or(DeliveryOrder::Concurrent, |endpoint| endpoint.ordering);
        LaneSettings {
            max_in_flight: self.config.endpoint_in_flight,
            rate_limit: endpoint.and_then(|endpoint| endpoint.rate_limit),
            ordering,
            queue_limit: self.config.endpoint_queue_limit,
        }
    }

    /// Claims what is due for endpoints that can take more, into their lanes. Returns when to
    /// claim next: now if the batch was full, else when the next pending delivery falls due
    /// (deliveries due now that were skipped wait for their lane to drain instead).
    async fn claim(&mut self) -> Option<Millis> {
        let free = self
            .claim_capacity()
            .saturating_sub(self.waiting + self.in_flight);
        let budget = free.min(self.config.claim_batch);
        if budget == 0 {
            self.starved = true;
            return None;
        }
        let skip: Vec<EndpointId> = self
            .lanes
            .iter()
            .filter(|(_, lane)| lane.is_saturated())
            .map(|(id, _)| id.clone())
            .collect();
        self.skipped = skip.iter().cloned().collect();
        let claim = match self.store.claim_due(now_millis(), budget, skip).await {
            Ok(claim) => claim,
            Err(error) => {
                tracing::error!(%error, "claiming due deliveries failed");
                return Some(now_millis() + self.config.poll_interval.as_millis() as Millis);
            }
        };
        let full = claim.deliveries.len() == budget;
        // Cut short by the capacity: more may be due than this node could take, and only
        // finished attempts make room ([`Self::claims_resume`]).
        self.starved = full && budget == free;
        self.accept(claim.deliveries).await;
        if full {
            return Some(now_millis());
        }
        claim.next_due_at.filter(|due_at| *due_at > now_millis())
    }

    /// Deliveries this node holds at most (in lanes and in flight) before claims stop.
    fn claim_capacity(&self) -> usize {
        self.config.max_in_flight * 4
    }

    /// After a claim the capacity cut short, claim again once half of it is free. A backlog
    /// in the store has no other wake-up than the poll interval: with a low `max_in_flight`
    /// and lanes filled by hand-offs, delivery fell to one budget per second.
    fn claims_resume(&self) -> bool {
        self.starved && self.waiting + self.in_flight <= self.claim_capacity() / 2
    }

    /// Puts deliveries this node now owns (claimed, or handed over by the store as they were
    /// accepted) into their endpoints' lanes. Each endpoint's settings are checked once per
    /// batch, not once per delivery: a burst of hand-offs to one endpoint is one lookup.
    async fn accept(&mut self, deliveries: Vec<ClaimedDelivery>) {
        let mut touched: std::collections::HashSet<EndpointId> = Default::default();
        for delivery in deliveries {
            if !touched.contains(&delivery.endpoint_id) {
                let endpoint = self
                    .shared
                    .endpoints
                    .get(&delivery.endpoint_id)
                    .await
                    .ok()
                    .flatten();
                let settings = self.lane_settings(endpoint.as_deref());
                self.lanes
                    .entry(delivery.endpoint_id.clone())
                    .or_insert_with(|| Lane::new(settings, self.config.breaker, Instant::now()))
                    .update_settings(settings);
                touched.insert(delivery.endpoint_id.clone());
            }
            if let Some(lane) = self.lanes.get_mut(&delivery.endpoint_id) {
                lane.push(delivery);
                self.waiting += 1;
            }
        }
        for endpoint_id in &touched {
            self.update_handoff_gate(endpoint_id);
        }
    }

    /// Opens or closes an endpoint to hand-offs after its lane changed.
    fn update_handoff_gate(&self, endpoint_id: &EndpointId) {
        let takes = self
            .lanes
            .get(endpoint_id)
            .is_none_or(|lane| lane.takes_handoffs(Instant::now()));
        let mut closed = self.closed_to_handoffs.lock().expect("hand-off gate lock");
        if takes {
            closed.remove(endpoint_id);
        } else if !closed.contains(endpoint_id) {
            closed.insert(endpoint_id.clone());
        }
    }

    /// Starts every attempt the lanes and the global limit allow.
    fn start_attempts(&mut self) {
        let now = Instant::now();
        for lane in self.lanes.values_mut() {
            while self.in_flight < self.config.max_in_flight {
                let before = lane.waiting();
                let Some(delivery) = lane.next_ready(now) else {
                    break;
                };
                self.waiting -= before - lane.waiting();
                self.in_flight += 1;
                let hold_retry = lane_is_ordered(lane);
                let (shared, finished, outcomes) = (
                    self.shared.clone(),
                    self.finished.clone(),
                    self.outcomes.clone(),
                );
                self.attempts.spawn(async move {
                    let result = attempt::run(&shared, delivery, hold_retry).await;
                    // Recorded before the loop hears of it, so a held retry's attempt is logged first.
                    let to_record = recorder::ToRecord {
                        outcome: result.outcome.clone(),
                        prompt: hold_retry,
                    };
                    let _ = outcomes.send(to_record).await;
                    let _ = finished.send(result).await;
                });
            }
        }
    }

    /// Takes a finished attempt back into its lane. Returns whether claiming should resume: a
    /// lane the last claim skipped for being full is down to half, or a claim the capacity
    /// cut short now has half of it free.
    fn on_finished(&mut self, result: attempt::Finished) -> bool {
        self.in_flight -= 1;
        record_metrics(&result);
        let now = Instant::now();
        let now_ms = now_millis();
        let endpoint_id = result.delivery.endpoint_id.clone();
        if result.gone {
            tokio::spawn(disable_endpoint(
                self.endpoints.clone(),
                self.ops.clone(),
                endpoint_id.clone(),
            ));
        }
        self.report(&result);
        let Some(lane) = self.lanes.get_mut(&endpoint_id) else {
            return self.claims_resume();
        };
        let hold_until = match result.outcome.next {
            NextStep::RetryHeld(at) | NextStep::WaitHeld(at) => Some(instant_of(at, now, now_ms)),
            _ => None,
        };
        let pause_until = result.pause.map(|pause| now + pause);
        let held = hold_until.is_some();
        lane.finished(
            result.delivery,
            result.succeeded,
            hold_until,
            pause_until,
            now,
        );
        if held {
            self.waiting += 1;
        }
        self.circuit_states.set(&endpoint_id, lane.circuit_state());
        let room_again = lane.wants_refill() && self.skipped.remove(&endpoint_id);
        if lane.is_idle(now) {
            self.lanes.remove(&endpoint_id);
            // Nothing of this endpoint is held here now: another node may run it.
            self.store.endpoint_idle(&endpoint_id);
        }
        self.update_handoff_gate(&endpoint_id);
        room_again || self.claims_resume()
    }

    /// Sets the dispatcher's gauges: totals, each endpoint's attempts in flight and
    /// deliveries waiting (for endpoints with a lane), and how many endpoints are in each
    /// circuit-breaker state. Called about once a second, not per attempt: a scrape sees
    /// values at most that old, and the hot path pays nothing for them.
    fn publish_gauges(&mut self) {
        metrics::gauge!("kait_attempts_in_flight").set(self.in_flight as f64);
        metrics::gauge!("kait_deliveries_waiting").set(self.waiting as f64);
        let (mut open, mut half_open) = (0usize, 0usize);
        for (endpoint_id, lane) in &self.lanes {
            match lane.circuit_state() {
                "open" => open += 1,
                "half-open" => half_open += 1,
                _ => {}
            }
            let endpoint = endpoint_id.as_str().to_owned();
            metrics::gauge!("kait_endpoint_attempts_in_flight", "endpoint" => endpoint.clone())
                .set(lane.in_flight() as f64);
            metrics::gauge!("kait_endpoint_deliveries_waiting", "endpoint" => endpoint)
                .set(lane.waiting() as f64);
            if !self.published.contains(endpoint_id) {
                self.published.insert(endpoint_id.clone());
            }
        }
        let lanes = &self.lanes;
        self.published.retain(|endpoint_id| {
            if lanes.contains_key(endpoint_id) {
                return true;
            }
            let endpoint = endpoint_id.as_str().to_owned();
            metrics::gauge!("kait_endpoint_attempts_in_flight", "endpoint" => endpoint.clone())
                .set(0.0);
            metrics::gauge!("kait_endpoint_deliveries_waiting", "endpoint" => endpoint).set(0.0);
            false
        });
        // Counted over endpoints with a lane (work in hand); an endpoint without one is closed
        // too, since a lane stays while its breaker is open or half-open.
        let closed = self.lanes.len() - open - half_open;
        for (state, count) in [("closed", closed), ("open", open), ("half-open", half_open)] {
            metrics::gauge!("kait_endpoints_circuit", "state" => state).set(count as f64);
        }
    }

    /// Emits `message.attempt.exhausted` when a delivery gives up after real attempts, and
    /// `message.attempt.failing` when one has failed [`FAILING_AFTER_ATTEMPTS`] times.
    fn report(&self, result: &attempt::Finished) {
        let Some(event_type) = operational_event(
            result.succeeded,
            result.outcome.reached_endpoint,
            result.outcome.next,
            result.delivery.attempts_made,
        ) else {
            return;
        };
        let attempt = &result.outcome.attempt;
        let data = serde_json::json!({
            "appId": attempt.app_id,
            "msgId": attempt.msg_id,
            "endpointId": attempt.endpoint_id,
            "lastAttempt": {
                "id": attempt.id,
                "timestamp": kait_core::time::to_datetime(attempt.created_at),
                "responseStatusCode": attempt.response_status_code,
            },
        });
        let (ops, app_id) = (self.ops.clone(), attempt.app_id.clone());
        tokio::spawn(async move { ops.emit(event_type, &app_id, data).await });
    }

    fn next_wake(&self, next_due_at: Option<Millis>) -> Instant {
        let now = Instant::now();
        let now_ms = now_millis();
        let mut wake = now + self.config.poll_interval;
        if let Some(due_at) = next_due_at {
            wake = wake.min(instant_of(due_at, now, now_ms));
        }
        for lane in self.lanes.values() {
            if let Some(at) = lane.wake_at(now) {
                wake = wake.min(at);
            }
        }
        wake
    }
}

/// The next delivery the store hands over, or never when it hands none over.
async fn next_handoff(
    handoff: &mut Option<mpsc::Receiver<ClaimedDelivery>>,
) -> Option<ClaimedDelivery> {
    match handoff {
        Some(queue) => queue.recv().await,
        None => std::future::pending().await,
    }
}

fn lane_is_ordered(lane: &Lane) -> bool {
    lane.ordering() != DeliveryOrder::Concurrent
}

/// Counts the attempt in the Prometheus metrics (a no-op without a recorder installed).
fn record_metrics(result: &attempt::Finished) {
    let outcome = match result.outcome.next {
        NextStep::Succeeded => "success",
        NextStep::RetryAt(_) | NextStep::RetryHeld(_) => "retry",
        NextStep::GiveUp => "failed",
        NextStep::Canceled => "canceled",
        NextStep::Wait(_) | NextStep::WaitHeld(_) => "waiting",
    };
    metrics::counter!("kait_deliveries_total", "outcome" => outcome).increment(1);
    if result.outcome.reached_endpoint {
        let seconds = result.outcome.attempt.response_duration_ms as f64 / 1000.0;
        metrics::histogram!("kait_attempt_duration_seconds").record(seconds);
    }
    if outcome == "success" {
        let latency_ms = (now_millis() - result.delivery.created_at).max(0);
        metrics::histogram!("kait_delivery_latency_seconds").record(latency_ms as f64 / 1000.0);
    }
}

/// Failed attempts after which `message.attempt.failing` is emitted.
const FAILING_AFTER_ATTEMPTS: u32 = 4;

/// The operational event an attempt's result calls for, if any. Attempts that never reached
/// the receiver (endpoint disabled or deleted) report nothing.
fn operational_event(
    succeeded: bool,
    reached_endpoint: bool,
    next: NextStep,
    attempts_made: u32,
) -> Option<&'static str> {
    if succeeded || !reached_endpoint {
        return None;
    }
    match next {
        NextStep::GiveUp => Some("message.attempt.exhausted"),
        _ if attempts_made == FAILING_AFTER_ATTEMPTS => Some("message.attempt.failing"),
        _ => None,
    }
}

/// Disables an endpoint whose receiver answered `410 Gone`, and reports it. One statement
/// in the store, so it cannot undo a change made to the endpoint meanwhile.
async fn disable_endpoint(
    endpoints: Arc<dyn Endpoints>,
    ops: OperationalEvents,
    endpoint_id: EndpointId,
) {
    match endpoints.disable_endpoint(&endpoint_id, now_millis()).await {
        Ok(Some(endpoint)) => {
            tracing::warn!(%endpoint_id, "endpoint answered 410 Gone and was disabled");
            let data = serde_json::json!({
                "appId": endpoint.app_id,
                "endpointId": endpoint_id,
                "trigger": "gone",
            });
            ops.emit("endpoint.disabled", &endpoint.app_id, data).await;
        }
        Ok(None) | Err(kait_store::StoreError::NotFound) => {}
        Err(error) => tracing::error!(%endpoint_id, %error, "disabling a gone endpoint failed"),
    }
}

/// Runs the dispatcher until `shutdown` is cancelled, publishing breaker states to
/// `circuit_states`.
/// The dispatcher sees the store only as the delivery queue and the endpoints it sends to.
pub async fn run(
    store: Arc<dyn DeliveryQueue>,
    endpoints: Arc<dyn Endpoints>,
    config: DispatcherConfig,
    circuit_states: CircuitStates,
    ops: OperationalEvents,
    runners: Runners,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        endpoints: EndpointCache::new(endpoints.clone()),
        sender: runners.sender,
        retry_schedule: config.retry_schedule.clone(),
        max_retry_after: config.max_retry_after,
        scripts: runners.scripts,
        media: runners.media,
        pipes: runners.pipes,
        replies: runners.replies,
        traces: runners.traces,
        traceparent_to_receivers: runners.traceparent_to_receivers,
    });
    let (outcomes, outcome_receiver) = mpsc::channel(config.max_in_flight.max(64) * 2);
    let disable_after = config
        .disable_after
        .map(|after| after.as_millis() as Millis);
    let recorder = tokio::spawn(recorder::run(
        store.clone(),
        outcome_receiver,
        disable_after,
        ops.clone(),
    ));
    let (finished, mut finished_receiver) = mpsc::channel(config.max_in_flight.max(64) * 2);
    let due = store.due_signal();
    let closed_to_handoffs: Arc<std::sync::Mutex<std::collections::HashSet<EndpointId>>> =
        Default::default();
    let gate = closed_to_handoffs.clone();
    let mut handoff = store.handoff(Arc::new(move |endpoint_id: &EndpointId| {
        !gate
            .lock()
            .expect("hand-off gate lock")
            .contains(endpoint_id)
    }));
    let mut dispatcher = Dispatcher {
        store,
        endpoints,
        shared,
        config,
        lanes: HashMap::new(),
        skipped: Default::default(),
        starved: false,
        closed_to_handoffs,
        circuit_states,
        in_flight: 0,
        waiting: 0,
        finished,
        outcomes,
        ops,
        attempts: JoinSet::new(),
        published: Default::default(),
    };

    let mut claim_now = true;
    let mut last_claim = Instant::now();
    let mut last_gauges: Option<Instant> = None;
    let mut next_due_at: Option<Millis> = None;
    while !shutdown.is_cancelled() {
        while let Ok(result) = finished_receiver.try_recv() {
            claim_now |= dispatcher.on_finished(result);
        }
        // Reap finished attempt tasks so the set does not grow.
        while dispatcher.attempts.try_join_next().is_some() {}
        let poll_due = last_claim.elapsed() >= dispatcher.config.poll_interval;
        if claim_now || poll_due || next_due_at.is_some_and(|due_at| due_at <= now_millis()) {
            next_due_at = dispatcher.claim().await;
            last_claim = Instant::now();
        }
        dispatcher.start_attempts();
        if last_gauges.is_none_or(|at| at.elapsed() >= GAUGE_INTERVAL) {
            dispatcher.publish_gauges();
            last_gauges = Some(Instant::now());
        }
        let wake = dispatcher.next_wake(next_due_at);
        claim_now = tokio::select! {
            Some(result) = finished_receiver.recv() => dispatcher.on_finished(result),
            Some(delivery) = next_handoff(&mut handoff) => {
                // Take what else arrived with it before starting attempts.
                let mut deliveries = vec![delivery];
                while let Some(delivery) = handoff.as_mut().and_then(|queue| queue.try_recv().ok()) {
                    deliveries.push(delivery);
                }
                dispatcher.accept(deliveries).await;
                false
            }
            _ = due.notified() => true,
            // A lane's pause or rate limit is over, a retry fell due, or the poll interval
            // passed: the checks at the top of the loop tell which.
            _ = tokio::time::sleep_until(wake.into()) => false,
            _ = shutdown.cancelled() => break,
        };
    }

    // Let attempts in flight finish (bounded); their outcomes are recorded by then.
    let deadline = tokio::time::Instant::now() + dispatcher.config.shutdown_grace;
    while dispatcher.in_flight > 0 {
        match tokio::time::timeout_at(deadline, finished_receiver.recv()).await {
            Ok(Some(result)) => {
                dispatcher.on_finished(result);
            }
            _ => {
                tracing::warn!(
                    "attempts still in flight at shutdown will be retried on the next start"
                );
                break;
            }
        }
    }
    drop(dispatcher);
    let _ = recorder.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operational_events_for_attempts() {
        let retry = NextStep::RetryAt(0);
        assert_eq!(
            operational_event(false, true, NextStep::GiveUp, 8),
            Some("message.attempt.exhausted")
        );
        assert_eq!(
            operational_event(false, true, retry, 4),
            Some("message.attempt.failing")
        );
        assert_eq!(operational_event(false, true, retry, 3), None);
        assert_eq!(
            operational_event(false, true, retry, 5),
            None,
            "reported once"
        );
        assert_eq!(operational_event(true, true, NextStep::Succeeded, 4), None);
        assert_eq!(
            operational_event(false, false, NextStep::GiveUp, 1),
            None,
            "never reached the receiver"
        );
    }
}
