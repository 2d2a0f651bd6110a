//! One endpoint's lane: the deliveries claimed for it, and what may be sent next.
//!
//! Each endpoint has its own queue, in-flight limit, rate limit, circuit breaker and ordering
//! mode, so a slow or dead endpoint fills only its own lane. A full lane is reported
//! saturated and the dispatcher stops claiming work for that endpoint until it drains, which
//! keeps healthy endpoints flowing. Pure logic over explicit instants; no I/O.
//!
//! Ordering: `Concurrent` sends from one queue with up to `max_in_flight` at once. `Fifo` and
//! `Key` keep one queue per key (one key for all in `Fifo`, the message's `orderingKey` in
//! `Key`) and block a key while its head is in flight or waiting to retry in place, so nothing
//! with that key overtakes it; different keys still go in parallel.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use kait_core::DeliveryOrder;
use kait_store::ClaimedDelivery;

use crate::breaker::{Breaker, BreakerConfig};
use crate::rate::TokenBucket;

type Key = Option<Arc<str>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneSettings {
    pub max_in_flight: usize,
    pub rate_limit: Option<u16>,
    pub ordering: DeliveryOrder,
    /// Deliveries held (queued or waiting to retry) before the lane counts as saturated.
    pub queue_limit: usize,
}

pub struct Lane {
    settings: LaneSettings,
    queues: HashMap<Key, VecDeque<ClaimedDelivery>>,
    /// Keys with queued deliveries that may go now. Invariant: a key is here exactly when its
    /// queue is non-empty and it is not blocked.
    ready: VecDeque<Key>,
    /// Ordered modes: keys whose head is in flight or held for a retry.
    blocked: HashSet<Key>,
    /// Ordered modes: failed heads waiting to be retried in place, with their time.
    held: Vec<(Instant, ClaimedDelivery)>,
    queued: usize,
    in_flight: usize,
    bucket: TokenBucket,
    breaker: Breaker,
    /// Set by a receiver's `Retry-After`: nothing is sent to the endpoint before then.
    paused_until: Option<Instant>,
}

impl Lane {
    pub fn new(settings: LaneSettings, breaker: BreakerConfig, now: Instant) -> Self {
        Self {
            settings,
            queues: HashMap::new(),
            ready: VecDeque::new(),
            blocked: HashSet::new(),
            held: Vec::new(),
            queued: 0,
            in_flight: 0,
            bucket: TokenBucket::new(settings.rate_limit, now),
            breaker: Breaker::new(breaker),
            paused_until: None,
        }
    }

    fn ordered(&self) -> bool {
        self.settings.ordering != DeliveryOrder::Concurrent
    }

    fn key_of(&self, delivery: &ClaimedDelivery) -> Key {
        match self.settings.ordering {
            DeliveryOrder::Key => delivery.ordering_key.clone(),
            DeliveryOrder::Concurrent | DeliveryOrder::Fifo => None,
        }
    }

    /// Applies changed endpoint settings; a change of ordering regroups what is queued.
    pub fn update_settings(&mut self, settings: LaneSettings) {
        if settings == self.settings {
            return;
        }
        let regroup = settings.ordering != self.settings.ordering;
        self.settings = settings;
        self.bucket.set_rate(settings.rate_limit);
        if regroup {
            let mut queued: Vec<ClaimedDelivery> =
                self.queues.drain().flat_map(|(_, queue)| queue).collect();
            queued.sort_by_key(|delivery| delivery.delivery_id);
            self.ready.clear();
            self.blocked.clear();
            self.queued = 0;
            for (_, held) in std::mem::take(&mut self.held) {
                self.push(held);
            }
            for delivery in queued {
                self.push(delivery);
            }
        }
    }

    /// Adds a claimed delivery behind the others of its key.
    pub fn push(&mut self, delivery: ClaimedDelivery) {
        let key = self.key_of(&delivery);
        let queue = self.queues.entry(key.clone()).or_default();
        let was_empty = queue.is_empty();
        queue.push_back(delivery);
        self.queued += 1;
        if was_empty && !self.blocked.contains(&key) {
            self.ready.push_back(key);
        }
    }

    /// Deliveries this lane holds that are not in flight.
    pub fn waiting(&self) -> usize {
        self.queued + self.held.len()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn is_saturated(&self) -> bool {
        self.waiting() >= self.settings.queue_limit
    }

    /// Whether new deliveries may be handed to this lane as they are accepted: not when it
    /// is half full, paused or its breaker is not closed (they wait in the store instead, so
    /// a dead endpoint's backlog never piles up in memory).
    pub fn takes_handoffs(&self, now: Instant) -> bool {
        self.waiting() < self.settings.queue_limit / 2
            && self.breaker.is_closed()
            && self.paused_until.is_none_or(|until| until <= now)
    }

    /// Down to half its queue: a lane that was skipped by a claim for being full should be
    /// refilled now, before it runs dry (a backlog in the store has no other wake-up).
    pub fn wants_refill(&self) -> bool {
        self.waiting() <= self.settings.queue_limit / 2
    }

    /// Nothing held and nothing to remember (no failures counted, no rate-limit debt, no
    /// pause): the lane can be dropped and made afresh when work comes.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.waiting() == 0
            && self.in_flight == 0
            && self.breaker.is_pristine()
            && self.bucket.is_full(now)
            && self.paused_until.is_none_or(|until| until <= now)
    }

    pub fn ordering(&self) -> DeliveryOrder {
        self.settings.ordering
    }

    pub fn circuit_state(&self) -> &'static str {
        self.breaker.state_name()
    }

    /// The next delivery to send now, if the limits allow one.
    pub fn next_ready(&mut self, now: Instant) -> Option<ClaimedDelivery> {
        if self.in_flight >= self.settings.max_in_flight
            || self.paused_until.is_some_and(|until| now < until)
        {
            return None;
        }
        let held_index = self.held.iter().position(|(at, _)| *at <= now);
        if held_index.is_none() && self.ready.is_empty() {
            return None;
        }
        if !self.breaker.may_send(now, self.in_flight) || !self.bucket.try_take(now) {
            return None;
        }
        self.in_flight += 1;
        self.breaker.on_send();
        if let Some(index) = held_index {
            // Its key stays blocked: the retry is the key's head.
            return Some(self.held.swap_remove(index).1);
        }
        let key = self.ready.pop_front()?;
        let queue = self.queues.get_mut(&key)?;
        let delivery = queue.pop_front()?;
        self.queued -= 1;
        let more = !queue.is_empty();
        if !more {
            self.queues.remove(&key);
        }
        if self.ordered() {
            self.blocked.insert(key);
        } else if more {
            self.ready.push_back(key);
        }
        Some(delivery)
    }

    /// Records that an attempt finished. `hold_until` keeps a failed head in the lane to be
    /// retried in place (ordered modes); `pause_until` holds the whole endpoint back.
    pub fn finished(
        &mut self,
        delivery: ClaimedDelivery,
        succeeded: bool,
        hold_until: Option<Instant>,
        pause_until: Option<Instant>,
        now: Instant,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.breaker.on_result(succeeded, now);
        if let Some(until) = pause_until {
            self.paused_until = Some(
                self.paused_until
                    .map_or(until, |current| current.max(until)),
            );
        }
        if let (Some(at), true) = (hold_until, self.ordered()) {
            self.held.push((at, delivery));
            return;
        }
        let key = self.key_of(&delivery);
        if self.blocked.remove(&key) && self.queues.get(&key).is_some_and(|queue| !queue.is_empty())
        {
            self.ready.push_back(key);
        }
    }

    /// The earliest future moment at which something held back may become sendable.
    pub fn wake_at(&self, now: Instant) -> Option<Instant> {
        if self.waiting() == 0 {
            return None;
        }
        [
            self.paused_until,
            self.breaker.reopens_at(),
            self.bucket.next_token_at(),
            self.held.iter().map(|(at, _)| *at).min(),
        ]
        .into_iter()
        .flatten()
        .filter(|at| *at > now)
        .min()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kait_core::{AppId, EndpointId, MessageId, TriggerType};

    use super::*;

    fn delivery(id: i64, key: Option<&str>) -> ClaimedDelivery {
        ClaimedDelivery {
            delivery_id: id,
            endpoint_id: EndpointId::from_trusted("ep_test".into()),
            app_id: AppId::from_trusted("app_test".into()),
            msg_id: MessageId::from_trusted(format!("msg_{id}")),
            event_type: "a.b".into(),
            payload: "{}".into(),
            raw: None,
            attachments: None,
            ordering_key: key.map(Arc::from),
            created_at: 0,
            attempts_made: 0,
            trigger_type: TriggerType::Scheduled,
        }
    }

    fn lane(ordering: DeliveryOrder, max_in_flight: usize) -> (Lane, Instant) {
        let now = Instant::now();
        let settings = LaneSettings {
            max_in_flight,
            rate_limit: None,
            ordering,
            queue_limit: 8,
        };
        let breaker = BreakerConfig {
            threshold: 3,
            initial_cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(60),
        };
        (Lane::new(settings, breaker, now), now)
    }

    fn drain(lane: &mut Lane, now: Instant) -> Vec<i64> {
        std::iter::from_fn(|| lane.next_ready(now))
            .map(|delivery| delivery.delivery_id)
            .collect()
    }

    #[test]
    fn hand_offs_stop_when_the_lane_is_half_full_or_tripped_and_refill_at_half() {
        let (mut filling, now) = lane(DeliveryOrder::Concurrent, 1);
        assert!(filling.takes_handoffs(now));
        for id in 1..=4 {
            filling.push(delivery(id, None));
        }
        assert!(
            !filling.takes_handoffs(now),
            "half of the queue limit of 8 waits"
        );
        assert!(
            filling.wants_refill(),
            "at half, a skipped lane is refilled"
        );
        filling.push(delivery(5, None));
        assert!(!filling.wants_refill());

        // Three failures trip the breaker: no hand-offs however empty the queue.
        let (mut tripped, now) = lane(DeliveryOrder::Concurrent, 8);
        for id in 1..=3 {
            tripped.push(delivery(id, None));
        }
        for id in drain(&mut tripped, now) {
            tripped.finished(delivery(id, None), false, None, None, now);
        }
        assert_eq!(tripped.waiting(), 0);
        assert_eq!(tripped.circuit_state(), "open");
        assert!(!tripped.takes_handoffs(now));

        // Nor while a Retry-After pause lasts.
        let (mut paused, now) = lane(DeliveryOrder::Concurrent, 8);
        paused.push(delivery(1, None));
        let sent = drain(&mut paused, now);
        paused.finished(
            delivery(sent[0], None),
            false,
            None,
            Some(now + Duration::from_secs(5)),
            now,
        );
        assert!(!paused.takes_handoffs(now));
        assert!(paused.takes_handoffs(now + Duration::from_secs(6)));
    }

    #[test]
    fn concurrent_respects_the_in_flight_limit() {
        let (mut lane, now) = lane(DeliveryOrder::Concurrent, 2);
        for id in 1..=4 {
            lane.push(delivery(id, None));
        }
        assert_eq!(drain(&mut lane, now), vec![1, 2]);
        lane.finished(delivery(1, None), true, None, None, now);
        assert_eq!(drain(&mut lane, now), vec![3]);
    }

    #[test]
    fn fifo_holds_a_failed_head_and_everything_behind_it() {
        let (mut lane, now) = lane(DeliveryOrder::Fifo, 8);
        for id in 1..=3 {
            lane.push(delivery(id, None));
        }
        assert_eq!(drain(&mut lane, now), vec![1], "one at a time");
        let retry_at = now + Duration::from_secs(5);
        lane.finished(delivery(1, None), false, Some(retry_at), None, now);
        assert_eq!(
            drain(&mut lane, now),
            Vec::<i64>::new(),
            "2 may not overtake 1"
        );
        assert_eq!(lane.wake_at(now), Some(retry_at));
        assert_eq!(drain(&mut lane, retry_at), vec![1], "the retry goes first");
        lane.finished(delivery(1, None), true, None, None, retry_at);
        assert_eq!(drain(&mut lane, retry_at), vec![2]);
    }

    #[test]
    fn keys_are_ordered_apart_from_each_other() {
        let (mut lane, now) = lane(DeliveryOrder::Key, 8);
        lane.push(delivery(1, Some("door")));
        lane.push(delivery(2, Some("door")));
        lane.push(delivery(3, Some("window")));
        lane.push(delivery(4, Some("window")));
        assert_eq!(
            drain(&mut lane, now),
            vec![1, 3],
            "one per key, keys in parallel"
        );
        lane.finished(
            delivery(1, Some("door")),
            false,
            Some(now + Duration::from_secs(60)),
            None,
            now,
        );
        lane.finished(delivery(3, Some("window")), true, None, None, now);
        assert_eq!(
            drain(&mut lane, now),
            vec![4],
            "a stuck door never blocks the window"
        );
    }

    #[test]
    fn saturation_and_pause() {
        let (mut lane, now) = lane(DeliveryOrder::Concurrent, 1);
        for id in 1..=8 {
            lane.push(delivery(id, None));
        }
        assert!(lane.is_saturated());
        let first = lane.next_ready(now).unwrap();
        assert!(!lane.is_saturated());
        let pause = now + Duration::from_secs(3);
        lane.finished(first, false, None, Some(pause), now);
        assert_eq!(
            lane.next_ready(now).map(|d| d.delivery_id),
            None,
            "paused by Retry-After"
        );
        assert_eq!(lane.wake_at(now), Some(pause));
        assert_eq!(lane.next_ready(pause).map(|d| d.delivery_id), Some(2));
    }

    #[test]
    fn breaker_stops_sending_after_repeated_failures() {
        let (mut lane, now) = lane(DeliveryOrder::Concurrent, 8);
        for id in 1..=6 {
            lane.push(delivery(id, None));
        }
        let sent: Vec<_> = std::iter::from_fn(|| lane.next_ready(now))
            .take(3)
            .collect();
        for delivery in sent {
            lane.finished(delivery, false, None, None, now);
        }
        assert_eq!(lane.circuit_state(), "open");
        assert!(lane.next_ready(now).is_none());
        let probe_time = now + Duration::from_secs(10);
        assert_eq!(lane.wake_at(now), Some(probe_time));
        assert_eq!(drain(&mut lane, probe_time), vec![4], "a single probe");
    }

    #[test]
    fn a_lane_remembers_counted_failures() {
        let (mut lane, now) = lane(DeliveryOrder::Concurrent, 8);
        lane.push(delivery(1, None));
        let sent = lane.next_ready(now).unwrap();
        lane.finished(sent, false, None, None, now);
        assert!(
            !lane.is_idle(now),
            "dropping it would forget the failure count"
        );
        lane.push(delivery(2, None));
        let sent = lane.next_ready(now).unwrap();
        lane.finished(sent, true, None, None, now);
        assert!(lane.is_idle(now));
    }

    #[test]
    fn changing_the_ordering_regroups_the_queue() {
        let (mut lane, now) = lane(DeliveryOrder::Concurrent, 8);
        for id in 1..=3 {
            lane.push(delivery(id, Some("k")));
        }
        lane.update_settings(LaneSettings {
            max_in_flight: 8,
            rate_limit: None,
            ordering: DeliveryOrder::Fifo,
            queue_limit: 8,
        });
        assert_eq!(drain(&mut lane, now), vec![1]);
    }
}
