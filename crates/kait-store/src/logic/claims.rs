//! Turning claimed delivery rows into the deliveries the dispatcher sends.

use std::collections::HashMap;
use std::sync::Arc;

use kait_core::time::Millis;
use kait_core::{AppId, EndpointId, MessageId, RawPayload, TriggerType};

use crate::ClaimedDelivery;

/// One claimed delivery row, as both backends return it from their claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedRow {
    pub delivery_id: i64,
    pub msg_seq: i64,
    pub endpoint_id: String,
    pub attempts_made: u32,
    pub trigger_type: i64,
    pub due_at: Millis,
}

/// The message fields every delivery of one message shares in a claim: loaded once per
/// message however many endpoints it fans out to.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub msg_id: MessageId,
    pub app_id: AppId,
    pub event_type: Arc<str>,
    pub payload: Arc<str>,
    pub raw: Option<Arc<RawPayload>>,
    pub attachments: Option<Arc<[kait_core::Attachment]>>,
    pub ordering_key: Option<Arc<str>>,
    pub created_at: Millis,
}

/// A message's attachment records as deliveries share them: `None` when it has none.
pub fn shared_attachments(
    attachments: Vec<kait_core::Attachment>,
) -> Option<Arc<[kait_core::Attachment]>> {
    (!attachments.is_empty()).then(|| Arc::from(attachments))
}

/// The distinct messages the rows need, in ascending order.
pub fn message_seqs(rows: &[ClaimedRow]) -> Vec<i64> {
    let mut seqs: Vec<i64> = rows.iter().map(|row| row.msg_seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    seqs
}

/// The deliveries in claim order (oldest due first, then by id: `RETURNING` has no defined
/// order, and ordered endpoints need this one). A row whose message is gone (purged between
/// the claim and the read) is left out.
pub fn assemble(
    mut rows: Vec<ClaimedRow>,
    messages: &HashMap<i64, ClaimedMessage>,
) -> Vec<ClaimedDelivery> {
    rows.sort_unstable_by_key(|row| (row.due_at, row.delivery_id));
    rows.into_iter()
        .filter_map(|row| {
            let message = messages.get(&row.msg_seq)?;
            Some(ClaimedDelivery {
                delivery_id: row.delivery_id,
                endpoint_id: EndpointId::from_trusted(row.endpoint_id),
                app_id: message.app_id.clone(),
                msg_id: message.msg_id.clone(),
                event_type: message.event_type.clone(),
                payload: message.payload.clone(),
                raw: message.raw.clone(),
                attachments: message.attachments.clone(),
                ordering_key: message.ordering_key.clone(),
                created_at: message.created_at,
                attempts_made: row.attempts_made,
                trigger_type: TriggerType::from_code(row.trigger_type),
            })
        })
        .collect()
}

/// The earlier of two optional due times.
pub fn earliest(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(delivery_id: i64, msg_seq: i64, due_at: Millis) -> ClaimedRow {
        ClaimedRow {
            delivery_id,
            msg_seq,
            endpoint_id: "ep_x".into(),
            attempts_made: 2,
            trigger_type: 1,
            due_at,
        }
    }

    fn message(seq: i64) -> (i64, ClaimedMessage) {
        (
            seq,
            ClaimedMessage {
                msg_id: MessageId::generate(),
                app_id: AppId::generate(),
                event_type: Arc::from("a.b"),
                payload: Arc::from(format!("{{\"seq\":{seq}}}")),
                raw: None,
                attachments: None,
                ordering_key: None,
                created_at: seq,
            },
        )
    }

    #[test]
    fn deliveries_come_in_claim_order_sharing_their_message() {
        let rows = vec![row(3, 1, 20), row(1, 1, 10), row(2, 2, 10), row(4, 9, 5)];
        assert_eq!(message_seqs(&rows), vec![1, 2, 9]);
        let messages: HashMap<_, _> = [message(1), message(2)].into_iter().collect();
        let deliveries = assemble(rows, &messages);
        let order: Vec<i64> = deliveries.iter().map(|d| d.delivery_id).collect();
        // Row 4's message is gone; the rest by (due_at, id).
        assert_eq!(order, vec![1, 2, 3]);
        assert!(Arc::ptr_eq(&deliveries[0].payload, &deliveries[2].payload));
        assert_eq!(deliveries[0].attempts_made, 2);
        assert_eq!(deliveries[0].trigger_type, TriggerType::Manual);
    }

    #[test]
    fn earliest_ignores_missing_times() {
        assert_eq!(earliest(None, None), None);
        assert_eq!(earliest(Some(3), None), Some(3));
        assert_eq!(earliest(None, Some(4)), Some(4));
        assert_eq!(earliest(Some(5), Some(4)), Some(4));
    }
}
