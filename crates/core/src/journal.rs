//! The journal: how parts other than the fleet (control actions, operations, alerts,
//! recovery) put events into history.
//!
//! Worker events reach the recorder through the fleet's `watch`; these do not come from the
//! fleet, so they are sent to the recorder directly. Sending never waits: the channel is
//! bounded, and an event that finds it full is dropped and counted (a slow store must not
//! slow a control RPC). Without a store the journal is disconnected and records nothing.
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::mpsc;

use crate::history::HistoryEvent;

/// Events waiting for the recorder, at most.
pub const JOURNAL_CAPACITY: usize = 4_096;

/// A cloneable sender of history events.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: Option<mpsc::Sender<HistoryEvent>>,
    dropped: Arc<AtomicU64>,
}

/// The recorder's end of the journal.
pub type JournalInbox = mpsc::Receiver<HistoryEvent>;

impl Journal {
    /// A journal and the inbox the recorder reads.
    pub fn channel(capacity: usize) -> (Journal, JournalInbox) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Journal {
                tx: Some(tx),
                dropped: Arc::default(),
            },
            rx,
        )
    }

    /// A journal that records nothing (no history store).
    pub fn disconnected() -> Journal {
        Journal {
            tx: None,
            dropped: Arc::default(),
        }
    }

    /// Whether events are kept (a store is configured).
    pub fn is_connected(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| !tx.is_closed())
    }

    /// Hands `event` to the recorder without waiting; a full inbox drops it (counted).
    pub fn record(&self, event: HistoryEvent) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(event).is_err() {
            let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(dropped_total = total, "history journal full: event dropped");
        }
    }

    /// Events dropped because the inbox was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::history::{EventKind, Severity};

    fn event(n: u32) -> HistoryEvent {
        HistoryEvent {
            at: SystemTime::UNIX_EPOCH,
            kind: EventKind::Control,
            severity: Severity::Info,
            worker: None,
            group: None,
            message: format!("event {n}"),
            attributes: vec![],
        }
    }

    #[test]
    fn a_full_journal_drops_and_counts_and_never_waits() {
        let (journal, mut inbox) = Journal::channel(2);
        for n in 0..5 {
            journal.record(event(n));
        }
        assert_eq!(journal.dropped(), 3);
        assert_eq!(inbox.try_recv().unwrap().message, "event 0");
        assert_eq!(inbox.try_recv().unwrap().message, "event 1");
        assert!(inbox.try_recv().is_err());
    }

    #[test]
    fn a_disconnected_journal_records_nothing() {
        let journal = Journal::disconnected();
        journal.record(event(0));
        assert!(!journal.is_connected());
        assert_eq!(journal.dropped(), 0);
    }
}
