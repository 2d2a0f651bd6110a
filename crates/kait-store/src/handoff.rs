//! Deliveries handed straight from the commit that accepted their message to the dispatcher,
//! already marked `Sending`, so that they need no claim (see [`crate::DeliveryQueue::handoff`]).
//! Both stores use this: the SQLite writer and the PostgreSQL group commit.
//!
//! The store reserves room in the queue *before* it writes a delivery as `Sending` and sends
//! only after the commit: a delivery is either in the queue or pending in the store, never
//! marked `Sending` with nobody to send it (short of the process dying, which a restart or
//! the cluster's lease takes care of).

use std::sync::{Arc, Mutex};

use kait_core::{Attachment, EndpointId, Message, RawPayload, TriggerType};
use tokio::sync::mpsc::{self, OwnedPermit};

use crate::{ClaimedDelivery, HandoffFilter};

/// New deliveries that may wait in the hand-off queue; past that they go through the claim.
const CAPACITY: usize = 2048;

/// Where new deliveries go when they skip the claim: set once the dispatcher asks for them.
#[derive(Default)]
pub struct Handoff {
    queue: Mutex<Option<(mpsc::Sender<ClaimedDelivery>, HandoffFilter)>>,
}

impl Handoff {
    /// Starts handing deliveries over (replacing an earlier queue); `accepts` tells whether an
    /// endpoint's lane takes them now.
    pub fn open(&self, accepts: HandoffFilter) -> mpsc::Receiver<ClaimedDelivery> {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        *self.queue.lock().expect("hand-off lock") = Some((sender, accepts));
        receiver
    }

    /// Reserves room for one delivery to `endpoint_id`, if the dispatcher takes hand-offs for
    /// it and has room; the caller writes the delivery as `Sending` and, once committed, sends
    /// it through the permit.
    pub fn reserve(&self, endpoint_id: &EndpointId) -> Option<OwnedPermit<ClaimedDelivery>> {
        let queue = self.queue.lock().expect("hand-off lock");
        let (sender, accepts) = queue.as_ref()?;
        if !accepts(endpoint_id) {
            return None;
        }
        sender.clone().try_reserve_owned().ok()
    }
}

/// Whether a new delivery may be handed over at all: only to an unordered endpoint (an
/// ordered one's queue order is kept by the claim) and only when due now (a `deliverAt` in
/// the future is due later, through the claim).
pub fn may_hand_off(message: &Message, endpoint_ordering: kait_core::DeliveryOrder) -> bool {
    let held = message
        .deliver_at
        .is_some_and(|due_at| due_at > message.created_at);
    !held && endpoint_ordering == kait_core::DeliveryOrder::Concurrent
}

/// Builds the handed-over deliveries of one message, sharing its payload (and raw body and
/// attachments) between them as a claim does.
pub struct FreshDeliveries<'m> {
    message: &'m Message,
    shared: Option<Shared>,
}

type Shared = (
    Arc<str>,
    Arc<str>,
    Option<Arc<str>>,
    Option<Arc<RawPayload>>,
    Option<Arc<[Attachment]>>,
);

impl<'m> FreshDeliveries<'m> {
    pub fn of(message: &'m Message) -> Self {
        Self {
            message,
            shared: None,
        }
    }

    /// The delivery `delivery_id` of this message to `endpoint_id`, before its first attempt.
    pub fn delivery(&mut self, delivery_id: i64, endpoint_id: EndpointId) -> ClaimedDelivery {
        let message = self.message;
        let (event_type, payload, ordering_key, raw, attachments) = self
            .shared
            .get_or_insert_with(|| {
                (
                    Arc::from(message.event_type.as_str()),
                    Arc::from(message.payload.as_str()),
                    message.ordering_key.as_deref().map(Arc::from),
                    message.raw.clone().map(Arc::new),
                    (!message.attachments.is_empty())
                        .then(|| Arc::from(message.attachments.as_slice())),
                )
            })
            .clone();
        ClaimedDelivery {
            delivery_id,
            endpoint_id,
            app_id: message.app_id.clone(),
            msg_id: message.id.clone(),
            event_type,
            payload,
            raw,
            attachments,
            ordering_key,
            created_at: message.created_at,
            attempts_made: 0,
            trigger_type: TriggerType::Scheduled,
        }
    }
}
