//! Wake-ups for long-polls and event streams, one per application.
//!
//! A single "messages were added" signal woke every waiting stream of every application at
//! each commit, and each woken stream ran its own database read: a thousand idle streams on
//! one application slowed every other application's ingest. Here a commit wakes only the
//! streams of the applications it added messages to. Entries exist only while someone waits:
//! an application nobody follows costs one failed map lookup per commit.

use std::collections::HashMap;
use std::sync::Mutex;

use kait_core::AppId;
use tokio::sync::watch;

/// How many entries may pile up before the ones nobody waits on any more are swept.
const SWEEP_AT: usize = 1024;

#[derive(Default)]
pub struct AppSignals {
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    by_app: HashMap<AppId, watch::Sender<u64>>,
    /// The map's size after the last sweep; the next sweep comes when it has grown by
    /// [`SWEEP_AT`], so sweeping stays amortised O(1) per subscription.
    swept_at: usize,
}

impl AppSignals {
    /// A receiver that changes whenever a commit adds messages to `app_id`.
    pub fn subscribe(&self, app_id: &AppId) -> watch::Receiver<u64> {
        let mut waiting = self.waiting.lock().expect("app signals lock");
        if waiting.by_app.len() >= waiting.swept_at + SWEEP_AT {
            waiting
                .by_app
                .retain(|_, sender| sender.receiver_count() > 0);
            waiting.swept_at = waiting.by_app.len();
        }
        waiting
            .by_app
            .entry(app_id.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes whoever waits on these applications.
    pub fn notify<'a>(&self, app_ids: impl IntoIterator<Item = &'a AppId>) {
        let mut waiting = self.waiting.lock().expect("app signals lock");
        for app_id in app_ids {
            if let Some(sender) = waiting.by_app.get(app_id) {
                if sender.receiver_count() == 0 {
                    waiting.by_app.remove(app_id);
                } else {
                    sender.send_modify(|version| *version += 1);
                }
            }
        }
    }

    /// Wakes everyone (after a gap in what this node heard, e.g. a lost listener connection).
    pub fn notify_all(&self) {
        let waiting = self.waiting.lock().expect("app signals lock");
        for sender in waiting.by_app.values() {
            sender.send_modify(|version| *version += 1);
        }
    }

    /// Applications someone waits on now (for tests and metrics).
    pub fn waited_on(&self) -> usize {
        let waiting = self.waiting.lock().expect("app signals lock");
        waiting
            .by_app
            .values()
            .filter(|sender| sender.receiver_count() > 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_wakes_only_its_applications() {
        let signals = AppSignals::default();
        let (a, b) = (AppId::generate(), AppId::generate());
        let mut on_a = signals.subscribe(&a);
        let on_b = signals.subscribe(&b);
        signals.notify([&a]);
        assert!(on_a.has_changed().unwrap());
        assert!(!on_b.has_changed().unwrap());
        on_a.borrow_and_update();
        signals.notify_all();
        assert!(on_a.has_changed().unwrap() && on_b.has_changed().unwrap());
    }

    #[test]
    fn entries_nobody_waits_on_go_away() {
        let signals = AppSignals::default();
        let app = AppId::generate();
        drop(signals.subscribe(&app));
        assert_eq!(signals.waited_on(), 0);
        signals.notify([&app]);
        assert!(signals.waiting.lock().unwrap().by_app.is_empty());
        for _ in 0..SWEEP_AT * 3 {
            drop(signals.subscribe(&AppId::generate()));
        }
        assert!(signals.waiting.lock().unwrap().by_app.len() <= SWEEP_AT + 1);
    }
}
