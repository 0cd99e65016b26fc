//! Running one scenario on both drivers, shared by the driver, interop and hostile-load
//! tests (each includes this module with `#[macro_use] mod support;`).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use latchkey::{FlowError, TokenSet};
use latchkey_io::driver::{Elapsed, Login, LoginEvent, Runtime};
use latchkey_smol::Smol;
use latchkey_tokio::Tokio;
use smol::future;

/// Instantiates each `async fn scenario<R: Runtime>(rt: R)` as a `smol` and a `tokio` test in
/// a module of the scenario's name, each bounded by the constant `$limit` of the including
/// file. Attributes (`#[ignore = "…"]`) go on both tests.
macro_rules! on_both_drivers {
    ($limit:ident; $($(#[$attr:meta])* $scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[test]
                $(#[$attr])*
                fn smol() {
                    crate::support::run_smol(super::$scenario, super::$limit);
                }

                #[test]
                $(#[$attr])*
                fn tokio() {
                    crate::support::run_tokio(super::$scenario, super::$limit);
                }
            }
        )*
    };
}

/// Runs `scenario` on smol, failing it after `limit`.
pub fn run_smol<F, Fut>(scenario: F, limit: Duration)
where
    F: FnOnce(Smol) -> Fut,
    Fut: Future<Output = ()>,
{
    // `block_on` drives only the scenario; the driver's tasks run on smol's global executor.
    smol::block_on(within(&Smol, limit, "the scenario", scenario(Smol)));
}

/// Runs `scenario` on a fresh two-thread tokio runtime, failing it after `limit`.
pub fn run_tokio<F, Fut>(scenario: F, limit: Duration)
where
    F: FnOnce(Tokio) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
        runtime.block_on(within(&Tokio, limit, "the scenario", scenario(Tokio)))
    }));
    // A failed scenario may leave a blocking call behind (an agent, a provider that does not
    // start): do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// `work`'s output, or a panic naming `what` once `limit` has passed.
pub async fn within<R: Runtime, T>(
    rt: &R,
    limit: Duration,
    what: &str,
    work: impl Future<Output = T>,
) -> T {
    let deadline = Instant::now() + limit;
    future::or(work, async {
        rt.sleep_until(deadline).await;
        panic!("{what} did not complete within {limit:?}");
    })
    .await
}

/// Every event of `login` up to and including `Finished`, within `limit`.
#[allow(dead_code)] // not every including file reads events
pub async fn events<R: Runtime>(rt: &R, login: &Login, limit: Duration) -> Vec<LoginEvent> {
    let deadline = Instant::now() + limit;
    let mut events = Vec::new();
    loop {
        match login.next_event_by(rt, deadline).await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return events,
            Err(Elapsed) => panic!("the login did not finish within {limit:?}: {events:?}"),
        }
    }
}

/// The outcome among `events`, checking that there is exactly one and that it comes last.
#[allow(dead_code)] // not every including file reads events
pub fn outcome(events: &[LoginEvent]) -> Result<TokenSet, FlowError> {
    let finished: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            LoginEvent::Finished(result) => Some(result.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 1, "exactly one outcome: {events:?}");
    assert!(
        matches!(events.last(), Some(LoginEvent::Finished(_))),
        "the outcome comes last: {events:?}"
    );
    finished.into_iter().next().expect("one outcome")
}
