//! Slots for requests held open while they wait for messages: long-polls and event streams.
//!
//! Each one holds a connection, a task and a wake-up, and reads the store whenever its
//! application gets a message. Without a bound, one token could open thousands of them and
//! make every commit to that application cost thousands of reads. Each token gets at most
//! [`StreamLimits::per_token`] at once and the server [`StreamLimits::total`]; past either,
//! the request is answered 429 at once, so the caller backs off instead of queueing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ApiError;

/// How many requests may wait for messages at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    pub total: usize,
    pub per_token: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            total: 2000,
            per_token: 100,
        }
    }
}

/// The open waiting requests, by token.
#[derive(Default)]
pub struct StreamSlots {
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_token: HashMap<String, usize>,
}

/// A taken slot, given back when dropped (with the stream's body, or the long-poll).
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    token: String,
}

impl StreamSlots {
    /// Takes a slot for `token`, or says which limit is reached.
    pub fn take(
        self: &Arc<Self>,
        token: &str,
        limits: StreamLimits,
    ) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock().expect("stream slots lock");
        if open.total >= limits.total {
            return Err(ApiError::TooManyRequests(format!(
                "the server holds its limit of {} streams and long-polls; retry later",
                limits.total
            )));
        }
        let for_token = open.by_token.entry(token.to_owned()).or_default();
        if *for_token >= limits.per_token {
            return Err(ApiError::TooManyRequests(format!(
                "this token holds its limit of {} streams and long-polls; close one first",
                limits.per_token
            )));
        }
        *for_token += 1;
        open.total += 1;
        metrics::gauge!("kait_api_streams_open").set(open.total as f64);
        Ok(StreamSlot {
            slots: self.clone(),
            token: token.to_owned(),
        })
    }

    /// Slots taken now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("stream slots lock").total
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("stream slots lock");
        open.total -= 1;
        if let Some(count) = open.by_token.get_mut(&self.token) {
            *count -= 1;
            if *count == 0 {
                open.by_token.remove(&self.token);
            }
        }
        metrics::gauge!("kait_api_streams_open").set(open.total as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_token_and_in_total() {
        let slots = Arc::new(StreamSlots::default());
        let limits = StreamLimits {
            total: 3,
            per_token: 2,
        };
        let a1 = slots.take("a", limits).unwrap();
        let _a2 = slots.take("a", limits).unwrap();
        assert!(matches!(
            slots.take("a", limits),
            Err(ApiError::TooManyRequests(_))
        ));
        let _b1 = slots.take("b", limits).unwrap();
        assert!(slots.take("c", limits).is_err(), "the total is reached");
        drop(a1);
        assert_eq!(slots.open(), 2);
        let _c1 = slots.take("c", limits).unwrap();
    }
}
