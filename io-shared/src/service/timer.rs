//! The one task that calls the engine when its next deadline comes: a flow's lifetime, an
//! exchange's timeout, a connection's header deadline (S19, S27).

use std::sync::Arc;

use super::shared::Shared;
use crate::alarm;
use crate::runtime::Runtime;

/// Sleeps until the engine's next deadline (or until an earlier one appears), then fires it.
pub(super) async fn run<R: Runtime>(shared: Arc<Shared<R>>) {
    loop {
        let (deadline, woken) = shared.arm_timer();
        if alarm::sleep(&shared.runtime, deadline, &woken).await {
            let work = shared.input(None, |engine, now| engine.handle_timeout(now));
            // Deadlines only end things: nothing is left to send or store.
            debug_assert!(work.exchange.is_none() && work.persist.is_none());
        }
    }
}
