//! The calling contract the three machines share, as a trait: [`Machine`].

use std::time::Instant;

/// What [`Engine`](crate::Engine), [`Session`](crate::Session) and
/// [`Discovery`](crate::Discovery) have in common: actions drained after every input, and
/// deadlines the machine owns. Each has, besides, its own commands and `handle_*` inputs
/// (each taking `now`), and names every request and store operation it asks for with an
/// id that the matching input carries back.
///
/// **After every command or input, drain [`poll_action`](Machine::poll_action) until it
/// returns `None`**; then wait for the next answer or for
/// [`poll_timeout`](Machine::poll_timeout), and report that with
/// [`handle_timeout`](Machine::handle_timeout). Code that only moves actions and time
/// around (a driver loop, a test harness) can be written once for all three.
pub trait Machine {
    /// What the machine asks its driver to do.
    type Action;

    /// The next thing to do, in order.
    #[must_use]
    fn poll_action(&mut self) -> Option<Self::Action>;

    /// When [`handle_timeout`](Machine::handle_timeout) must be called next, if ever.
    #[must_use]
    fn poll_timeout(&self) -> Option<Instant>;

    /// Time passed: every deadline at or before `now` fires, in order.
    fn handle_timeout(&mut self, now: Instant);
}

macro_rules! machine {
    ($machine:ty, $action:ty) => {
        impl Machine for $machine {
            type Action = $action;

            fn poll_action(&mut self) -> Option<$action> {
                <$machine>::poll_action(self)
            }

            fn poll_timeout(&self) -> Option<Instant> {
                <$machine>::poll_timeout(self)
            }

            fn handle_timeout(&mut self, now: Instant) {
                <$machine>::handle_timeout(self, now);
            }
        }
    };
}

machine!(crate::Engine, crate::Action);
machine!(crate::Session, crate::SessionAction);
machine!(crate::Discovery, crate::DiscoveryAction);
