//! What a driver's timer task sleeps until, and how an earlier deadline wakes it: the
//! piece the service and the token source share.

use std::time::Instant;

use async_channel::{Receiver, Sender};
use futures_lite::future;

use crate::runtime::Runtime;

/// A timer task's deadline, kept beside its machine (under the same lock), and the channel
/// that wakes the task when the machine's next deadline moves earlier.
pub(crate) struct Alarm {
    armed: Option<Instant>,
    wake: (Sender<()>, Receiver<()>),
}

impl Alarm {
    pub(crate) fn new() -> Alarm {
        Alarm {
            armed: None,
            wake: async_channel::bounded(1),
        }
    }

    /// What the timer task sleeps until, if anything.
    pub(crate) fn armed(&self) -> Option<Instant> {
        self.armed
    }

    /// The timer task is about to sleep until `deadline`.
    pub(crate) fn arm(&mut self, deadline: Option<Instant>) -> Option<Instant> {
        self.armed = deadline;
        deadline
    }

    /// The machine's next deadline is `next`: whether it is earlier than what the timer task
    /// sleeps until (or the task sleeps without one), in which case it is armed now and the
    /// task must hear of it ([`wake`](Alarm::wake), or a new task).
    pub(crate) fn moved(&mut self, next: Option<Instant>) -> bool {
        match (next, self.armed) {
            (None, _) => false,
            (Some(next), Some(armed)) if armed <= next => false,
            (next, _) => {
                self.armed = next;
                true
            }
        }
    }

    /// Wakes the timer task.
    pub(crate) fn wake(&self) {
        let _ = self.wake.0.try_send(());
    }

    /// What the timer task waits on, besides its deadline.
    pub(crate) fn woken(&self) -> Receiver<()> {
        self.wake.1.clone()
    }
}

/// Waits until `deadline` passes (`true`) or the alarm is woken for an earlier one
/// (`false`). Without a deadline, only the latter.
pub(crate) async fn sleep<R: Runtime>(
    runtime: &R,
    deadline: Option<Instant>,
    woken: &Receiver<()>,
) -> bool {
    future::or(
        async {
            let _ = woken.recv().await;
            false
        },
        async {
            match deadline {
                Some(at) => runtime.sleep_until(at).await,
                None => future::pending().await,
            }
            true
        },
    )
    .await
}
