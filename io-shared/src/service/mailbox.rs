//! A login's events on their way to its starter: a queue under a lock and a wake-up,
//! about 100 bytes per login where a general channel takes several hundred (a pending login
//! costs little; a backend may hold many thousands).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use event_listener::Event;

use super::login::LoginEvent;

/// The events of one login, with their two ends.
pub(super) fn mailbox() -> (Postman, Mailbox) {
    let slot = Arc::new(Slot {
        inbox: Mutex::new(Inbox::default()),
        posted: Event::new(),
    });
    (Postman(Arc::clone(&slot)), Mailbox(slot))
}

struct Slot {
    inbox: Mutex<Inbox>,
    posted: Event,
}

#[derive(Default)]
struct Inbox {
    events: VecDeque<LoginEvent>,
    /// The postman is gone: after the events left, there are no more.
    closed: bool,
}

impl Slot {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The service's end: posts events; dropping it tells the starter that no more come.
pub(super) struct Postman(Arc<Slot>);

impl Postman {
    /// Queues `event` (never waits) and wakes whoever awaits the login.
    pub(super) fn post(&self, event: LoginEvent) {
        self.0.inbox().events.push_back(event);
        self.0.posted.notify(usize::MAX);
    }
}

impl Drop for Postman {
    fn drop(&mut self) {
        self.0.inbox().closed = true;
        self.0.posted.notify(usize::MAX);
    }
}

/// The starter's end.
pub(super) struct Mailbox(Arc<Slot>);

impl Mailbox {
    /// The next event in order; `None` once they are all taken and the postman is gone.
    /// Any number of callers may wait at once: each event goes to one of them.
    pub(super) async fn recv(&self) -> Option<LoginEvent> {
        loop {
            if let Some(next) = self.try_recv() {
                return next;
            }
            let listener = self.0.posted.listen();
            // Posted between the look and the listening: look again before waiting.
            if let Some(next) = self.try_recv() {
                return next;
            }
            listener.await;
        }
    }

    /// `Some(Some(event))`, `Some(None)` when closed and empty, `None` to wait.
    fn try_recv(&self) -> Option<Option<LoginEvent>> {
        let mut inbox = self.0.inbox();
        match inbox.events.pop_front() {
            Some(event) => Some(Some(event)),
            None if inbox.closed => Some(None),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey::FlowError;

    #[test]
    fn events_arrive_in_order_then_none_once_the_postman_is_gone() {
        let (postman, mailbox) = mailbox();
        postman.post(LoginEvent::Callback);
        postman.post(LoginEvent::Stored);
        postman.post(LoginEvent::Finished(Err(FlowError::Cancelled)));
        drop(postman);
        futures_lite::future::block_on(async {
            assert!(matches!(mailbox.recv().await, Some(LoginEvent::Callback)));
            assert!(matches!(mailbox.recv().await, Some(LoginEvent::Stored)));
            assert!(matches!(
                mailbox.recv().await,
                Some(LoginEvent::Finished(Err(FlowError::Cancelled)))
            ));
            assert!(mailbox.recv().await.is_none());
            assert!(mailbox.recv().await.is_none());
        });
    }

    #[test]
    fn a_waiting_starter_is_woken_by_a_post_from_another_thread() {
        let (postman, mailbox) = mailbox();
        let poster = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            postman.post(LoginEvent::Callback);
            std::thread::sleep(std::time::Duration::from_millis(20));
            // Dropped: the second wait ends with `None`.
        });
        futures_lite::future::block_on(async {
            assert!(matches!(mailbox.recv().await, Some(LoginEvent::Callback)));
            assert!(mailbox.recv().await.is_none());
        });
        poster.join().expect("poster");
    }

    #[test]
    fn a_mailbox_is_small() {
        // The point of it: a pending login's events cost about a hundred bytes.
        assert!(
            std::mem::size_of::<Slot>() <= 96,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }
}
