//! Serving the browser: one thread accepts on each socket, one thread reads each
//! connection, and the [`Reporter`] writes every callback on standard output.
//!
//! The threads only move bytes: [`http::parse_head`] and [`http::judge`] decide. When the
//! program should stop (sixteen callbacks printed, or standard output gone), the connection
//! that found out sends a [`Stop`] to the main thread, which waits for it or the timeout.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::http::{self, MAX_HEAD, Refusal, RequestHead, Verdict};
use crate::json::Line;
use crate::note;
use crate::redirect::{Endpoint, Landing};

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 16;

/// Callbacks printed before the program stops by itself.
pub const MAX_CALLBACKS: usize = 16;

/// How long one connection may take to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long, and how much, is read after answering, so that closing does not reset the
/// connection while the browser still has the answer to read.
const LINGER: Duration = Duration::from_secs(2);
/// The most bytes read and thrown away after answering.
const LINGER_BYTES: usize = 64 * 1024;

/// Why the program stops before its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// [`MAX_CALLBACKS`] callbacks were printed.
    Finished,
    /// Standard output is closed: nobody reads the callbacks any more.
    OutputClosed,
}

/// What became of a callback handed to the [`Reporter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// It was printed; `last` when it was the last one allowed.
    Printed {
        /// Whether no more will be printed.
        last: bool,
    },
    /// Printing had already stopped (limit or timeout reached).
    Ended,
    /// Writing failed: standard output is closed.
    OutputClosed,
}

/// Writes the protocol lines and counts the callbacks.
#[derive(Debug)]
pub struct Reporter<W> {
    /// Standard output, or a buffer in tests.
    out: W,
    /// Callbacks printed so far.
    printed: usize,
    /// Whether more callbacks may be printed.
    open: bool,
}

impl<W: Write> Reporter<W> {
    /// A reporter that has printed nothing.
    pub fn new(out: W) -> Reporter<W> {
        Reporter {
            out,
            printed: 0,
            open: true,
        }
    }

    /// Writes one line and flushes it; an error means the reader has gone.
    pub fn line(&mut self, line: &Line<'_>) -> io::Result<()> {
        let mut text = line.to_json();
        text.push('\n');
        self.out.write_all(text.as_bytes())?;
        self.out.flush()
    }

    /// Prints a callback's query, unless printing has stopped.
    pub fn callback(&mut self, query: &str) -> Report {
        if !self.open {
            return Report::Ended;
        }
        if self.line(&Line::Callback(query)).is_err() {
            self.open = false;
            return Report::OutputClosed;
        }
        self.printed += 1;
        let last = self.printed >= MAX_CALLBACKS;
        if last {
            self.open = false;
        }
        Report::Printed { last }
    }

    /// Stops printing because the time is up. Returns whether any callback was printed;
    /// if none was, prints the timeout line with `message`.
    pub fn time_out(&mut self, message: &str) -> bool {
        self.open = false;
        if self.printed > 0 {
            return true;
        }
        // Nobody to tell if this fails; the exit status still says it.
        let _ = self.line(&Line::Error {
            kind: "timeout",
            message,
        });
        false
    }
}

/// A claim on one of [`MAX_CONNECTIONS`] connection places, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    /// The count of places taken.
    taken: Arc<AtomicUsize>,
}

impl Slot {
    /// Takes a place if one of `max` is free.
    pub fn take(taken: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                taken: Arc::clone(taken),
            })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every thread shares.
#[derive(Debug)]
pub struct Server {
    /// The redirect URI as listened on.
    endpoint: Endpoint,
    /// Where browsers go after their callback.
    landing: Landing,
    /// Standard output.
    reporter: Mutex<Reporter<io::Stdout>>,
    /// Connections being served.
    active: Arc<AtomicUsize>,
    /// Tells the main thread to stop.
    stop: Sender<Stop>,
}

impl Server {
    /// Shares the settings, the reporter and the way to the main thread.
    pub fn new(
        endpoint: Endpoint,
        landing: Landing,
        reporter: Reporter<io::Stdout>,
        stop: Sender<Stop>,
    ) -> Server {
        Server {
            endpoint,
            landing,
            reporter: Mutex::new(reporter),
            active: Arc::new(AtomicUsize::new(0)),
            stop,
        }
    }

    /// The reporter, even if a thread panicked while holding it (none should).
    pub fn reporter(&self) -> MutexGuard<'_, Reporter<io::Stdout>> {
        self.reporter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a thread accepting connections on `listener`.
    pub fn spawn_acceptor(self: &Arc<Self>, listener: TcpListener) -> io::Result<()> {
        let server = Arc::clone(self);
        thread::Builder::new()
            .name("accept".into())
            .spawn(move || server.accept_loop(&listener))
            .map(drop)
    }

    /// Accepts connections until the program ends.
    fn accept_loop(self: &Arc<Self>, listener: &TcpListener) {
        loop {
            match listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                // The peer gave up before we accepted: nothing to do.
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) => {}
                // Out of file descriptors or memory, most likely: wait a little so that
                // the loop does not spin, then go on.
                Err(error) => {
                    note(&format!("accepting a connection failed: {error}"));
                    thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Serves a new connection on its own thread, if a place is free.
    fn admit(self: &Arc<Self>, stream: TcpStream) {
        let Some(slot) = Slot::take(&self.active, MAX_CONNECTIONS) else {
            note("too many connections at once; closed one");
            return;
        };
        let server = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name("connection".into())
            .spawn(move || {
                let _slot = slot;
                server.serve(stream);
            });
        if let Err(error) = spawned {
            note(&format!("cannot start a thread for a connection: {error}"));
        }
    }

    /// Reads one request head, answers it and closes.
    fn serve(&self, mut stream: TcpStream) {
        let deadline = Instant::now() + READ_TIMEOUT;
        // Without a write timeout a browser that stops reading would hold the thread.
        if stream.set_write_timeout(Some(READ_TIMEOUT)).is_err() {
            return;
        }
        let mut buf = vec![0u8; MAX_HEAD];
        let mut len = 0;
        let (answer, stop) = loop {
            match http::parse_head(&buf[..len]) {
                Ok(Some(head)) => break self.answer(&head),
                Ok(None) => {}
                Err(error) => break self.refuse(Refusal::for_head_error(error)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match stream.read(&mut buf[len..]) {
                // Closed, timed out or reset before a whole head: nobody to answer.
                Ok(0) => return,
                Ok(n) => len += n,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        };
        let written = stream.write_all(&answer).and_then(|()| stream.flush());
        if let Some(stop) = stop {
            // The main thread ends the process; the answer is already on its way.
            let _ = self.stop.send(stop);
        }
        if written.is_ok() {
            linger_close(stream);
        }
    }

    /// The answer to a request head, and whether the program should stop after it.
    fn answer(&self, head: &RequestHead<'_>) -> (Vec<u8>, Option<Stop>) {
        let query = match http::judge(head, &self.endpoint) {
            Verdict::Callback(query) => query,
            Verdict::Refuse(refusal) => return self.refuse(refusal),
        };
        let report = self.reporter().callback(query);
        match report {
            Report::Printed { last } => {
                note("received a callback; its query is on standard output");
                let stop = last.then(|| {
                    note(&format!("{MAX_CALLBACKS} callbacks received; stopping"));
                    Stop::Finished
                });
                (http::redirect_response(&self.landing), stop)
            }
            Report::Ended => self.refuse(Refusal::Ended),
            Report::OutputClosed => (Refusal::Ended.response(), Some(Stop::OutputClosed)),
        }
    }

    /// A refusal's answer, noted on standard error.
    fn refuse(&self, refusal: Refusal) -> (Vec<u8>, Option<Stop>) {
        let (code, _) = refusal.status();
        note(&format!("answered {code} to {}", refusal.describe()));
        (refusal.response(), None)
    }
}

/// Closes after answering without losing the answer: stops sending, then reads and drops
/// what the browser still sends (briefly), since closing a socket with unread bytes resets
/// the connection and can take the answer with it.
fn linger_close(mut stream: TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() || stream.set_read_timeout(Some(LINGER)).is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails, like standard output once its reader is gone.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn text(reporter: &Reporter<Vec<u8>>) -> String {
        String::from_utf8_lossy(&reporter.out).into_owned()
    }

    #[test]
    fn callbacks_are_printed_one_line_each_until_the_limit() {
        let mut reporter = Reporter::new(Vec::new());
        for _ in 1..MAX_CALLBACKS {
            assert_eq!(
                reporter.callback("?state=s&code=c"),
                Report::Printed { last: false }
            );
        }
        assert_eq!(
            reporter.callback("?state=\"q\""),
            Report::Printed { last: true }
        );
        assert_eq!(reporter.callback("?state=s&code=c"), Report::Ended);
        let output = text(&reporter);
        assert_eq!(output.lines().count(), MAX_CALLBACKS);
        assert!(output.starts_with("{\"callback\":\"?state=s&code=c\"}\n"));
        assert!(output.ends_with("{\"callback\":\"?state=\\\"q\\\"\"}\n"));
    }

    #[test]
    fn timeout_without_callbacks_prints_the_timeout_line() {
        let mut reporter = Reporter::new(Vec::new());
        assert!(!reporter.time_out("No sign-in arrived within 1 second."));
        assert_eq!(
            text(&reporter),
            "{\"error\":\"timeout\",\"message\":\"No sign-in arrived within 1 second.\"}\n"
        );
        assert_eq!(reporter.callback("?state=s&code=c"), Report::Ended);
    }

    #[test]
    fn timeout_after_a_callback_is_silent() {
        let mut reporter = Reporter::new(Vec::new());
        assert_eq!(
            reporter.callback("?state=s&code=c"),
            Report::Printed { last: false }
        );
        assert!(reporter.time_out("unused"));
        assert_eq!(text(&reporter).lines().count(), 1);
    }

    #[test]
    fn a_closed_output_stops_reporting() {
        let mut reporter = Reporter::new(Closed);
        assert_eq!(reporter.callback("?state=s&code=c"), Report::OutputClosed);
        assert_eq!(reporter.callback("?state=s&code=c"), Report::Ended);
    }

    #[test]
    fn connection_places_are_limited_and_given_back() {
        let taken = Arc::new(AtomicUsize::new(0));
        let slots: Vec<Slot> = (0..3).filter_map(|_| Slot::take(&taken, 3)).collect();
        assert_eq!(slots.len(), 3);
        assert!(Slot::take(&taken, 3).is_none());
        drop(slots);
        assert_eq!(taken.load(Ordering::Acquire), 0);
        assert!(Slot::take(&taken, 3).is_some());
    }
}
