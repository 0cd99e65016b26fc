//! The browser side: a task accepting on each listener, and a task per browser connection
//! that reads its request, carries its login through the token request and the store, and
//! writes its answer.
//!
//! A callback is handled start to finish by its connection's task: the token request goes
//! out on it, the tokens are stored from it, and the answer is written by it. A login
//! crosses two tasks (the accept loop, then the connection's), as a request does in hyper.

use std::sync::Arc;
use std::time::Duration;

use async_channel::{Receiver, Sender};
use futures_lite::future;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use latchkey::ConnId;
use tracing::debug;

use super::shared::{ConnCommand, Shared};
use crate::runtime::{Runtime, until};

/// How long a connection may linger after its answer was written, waiting for the browser
/// to close first (closing with unread input would reset the connection and could lose
/// the answer).
const LINGER: Duration = Duration::from_secs(2);

/// The most a connection reads at once: a whole request head usually fits.
const READ_CHUNK: usize = 4096;

/// A listener and the token that keeps `Service::shutdown` waiting for it and for the
/// connections it accepted. Fields drop in order: the socket is closed before the token
/// goes.
pub(super) struct Listening<L> {
    pub listener: L,
    pub alive: Sender<()>,
}

/// Accepts connections for as long as the task lives.
pub(super) async fn accept_loop<R: Runtime>(
    shared: Arc<Shared<R>>,
    listening: Listening<R::Listener>,
) {
    loop {
        match shared.runtime.accept(&listening.listener).await {
            Ok(stream) => adopt(&shared, stream, &listening.alive),
            // Out of file descriptors, a connection reset before accept: keep listening, but
            // do not spin.
            Err(_) => future::yield_now().await,
        }
    }
}

/// Hands a new connection to the engine and starts its task, or drops it at the cap (S27).
fn adopt<R: Runtime>(shared: &Arc<Shared<R>>, stream: R::Stream, alive: &Sender<()>) {
    let accepted = shared.accept(|conn, inbox| {
        let serving = serve(Arc::clone(shared), stream, conn, inbox, alive.clone());
        shared.runtime.spawn(serving)
    });
    match accepted {
        Some(conn) => debug!(conn = conn.get(), "browser connected"),
        None => debug!("browser connection dropped: at the connection cap"),
    }
}

/// Serves one browser connection: forwards its bytes (no more than a request head's worth)
/// until the engine answers, carrying out the login the callback starts, then writes the
/// answer and lingers until the browser closes.
async fn serve<R: Runtime>(
    shared: Arc<Shared<R>>,
    mut stream: R::Stream,
    conn: ConnId,
    inbox: Receiver<ConnCommand>,
    _alive: Sender<()>,
) {
    enum Next {
        Read(std::io::Result<usize>),
        Told(Option<ConnCommand>),
    }
    let mut buf = [0; READ_CHUNK];
    let mut forwarded = 0;
    let mut reading = true;
    let answer = loop {
        let next = if reading {
            future::or(async { Next::Told(inbox.recv().await.ok()) }, async {
                Next::Read(stream.read(&mut buf).await)
            })
            .await
        } else {
            Next::Told(inbox.recv().await.ok())
        };
        let work = match next {
            Next::Read(Ok(0) | Err(_)) => {
                reading = false;
                shared.input(Some(conn), |engine, now| engine.handle_eof(now, conn))
            }
            Next::Read(Ok(n)) => {
                // Past a head's worth the engine has answered or will: stop reading.
                forwarded += n;
                reading = forwarded <= shared.max_head;
                let bytes = buf.get(..n).unwrap_or_default();
                shared.input(Some(conn), |engine, now| {
                    engine.handle_bytes(now, conn, bytes)
                })
            }
            Next::Told(Some(command)) => break command,
            Next::Told(None) => return, // forgotten: the service is gone
        };
        if let Some(command) = shared.carry_out(Some(conn), work, Some(&inbox)).await {
            break command;
        }
    };
    let ConnCommand::Respond(bytes) = answer else {
        return; // closing: dropping the stream does it
    };
    let written = async {
        stream.write_all(&bytes).await?;
        stream.close().await
    };
    if written.await.is_err() {
        return;
    }
    let deadline = shared.runtime.now() + LINGER;
    until(&shared.runtime, deadline, async {
        while let Ok(1..) = stream.read(&mut buf).await {}
    })
    .await;
}
