//! I/O a machine asked for, carried out by the task that drained the machine rather than a
//! task of its own: a [`Job`] is a future that performs one piece of I/O, feeds its outcome
//! back to the machine and returns whatever I/O that asked for next.
//!
//! The task that has the input runs the jobs it produced while it waits for its answer
//! ([`carry`]), so a refresh costs no task switch; if it stops waiting (its answer came, or
//! its caller gave up and dropped it), the jobs still running move to a task of their own,
//! so that work a machine depends on always finishes.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use futures_lite::future;

use crate::runtime::Runtime;

/// One piece of I/O and what follows from it.
pub(crate) struct Job(Pin<Box<dyn Future<Output = Vec<Job>> + Send>>);

impl Job {
    pub(crate) fn new(work: impl Future<Output = Vec<Job>> + Send + 'static) -> Job {
        Job(Box::pin(work))
    }
}

/// Jobs being run by a task, handed to tasks of their own when it stops.
pub(crate) struct Carried<R: Runtime> {
    runtime: R,
    jobs: Vec<Job>,
    /// Whether dropping it with jobs left moves them to a task of their own. Not for the
    /// jobs such a task carries: that task is only dropped unfinished when the runtime shuts
    /// down, and a task spawned then would be dropped at once, spawning another, without
    /// end.
    hand_over: bool,
}

impl<R: Runtime> Carried<R> {
    pub(crate) fn new(runtime: &R, jobs: Vec<Job>) -> Carried<R> {
        Carried {
            runtime: runtime.clone(),
            jobs,
            hand_over: true,
        }
    }

    /// Adds jobs to run.
    pub(crate) fn extend(&mut self, jobs: Vec<Job>) {
        self.jobs.extend(jobs);
    }

    /// Runs the jobs (and the jobs they lead to) until `until` completes, and returns its
    /// output. Jobs still running then keep going elsewhere once `self` is dropped.
    pub(crate) async fn until<T>(&mut self, until: impl Future<Output = T>) -> T {
        let mut until = std::pin::pin!(until);
        future::poll_fn(|cx| {
            if let Poll::Ready(output) = until.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            let mut index = 0;
            while index < self.jobs.len() {
                match self.jobs[index].0.as_mut().poll(cx) {
                    Poll::Ready(next) => {
                        drop(self.jobs.swap_remove(index));
                        self.jobs.extend(next);
                        // A job that finished may have answered `until`.
                        if let Poll::Ready(output) = until.as_mut().poll(cx) {
                            return Poll::Ready(output);
                        }
                    }
                    Poll::Pending => index += 1,
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Runs every job, and every job they lead to, to the end.
    pub(crate) async fn finish(&mut self) {
        let jobs = &mut self.jobs;
        future::poll_fn(|cx| {
            let mut index = 0;
            while index < jobs.len() {
                match jobs[index].0.as_mut().poll(cx) {
                    Poll::Ready(next) => {
                        drop(jobs.swap_remove(index));
                        jobs.extend(next);
                    }
                    Poll::Pending => index += 1,
                }
            }
            if jobs.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

impl<R: Runtime> Drop for Carried<R> {
    fn drop(&mut self) {
        if self.jobs.is_empty() || !self.hand_over {
            return;
        }
        let mut orphans = Carried {
            runtime: self.runtime.clone(),
            jobs: std::mem::take(&mut self.jobs),
            hand_over: false,
        };
        let task = self.runtime.spawn(async move { orphans.finish().await });
        self.runtime.detach(task);
    }
}
