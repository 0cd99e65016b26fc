//! The one task that calls the engine when its next deadline comes: a flow's lifetime, an
//! exchange's timeout, a connection's header deadline (S19, S27).

use std::sync::Arc;

use super::shared::{self, Shared};
use crate::alarm;
use crate::runtime::Runtime;

/// Sleeps until the engine's next deadline (or until an earlier one appears), then fires it.
pub(super) async fn run<R: Runtime>(shared: Arc<Shared<R>>) {
    loop {
        let (deadline, woken) = shared.arm_timer();
        if alarm::sleep(&shared.runtime, deadline, &woken).await {
            let work = shared.input(None, |engine, now| engine.handle_timeout(now));
            // A key-set fetch that timed out lets the logins waiting for it go on with the
            // keys known before: their tokens are stored.
            shared::spawn_work(&shared, work);
        }
    }
}
