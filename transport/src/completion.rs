//! The completion of one read: set once by the backend, awaited either as a
//! `Future` (async callers) or with a blocking `wait` (the engine thread).
//! The backend enforces the read's deadline, so both always finish.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Result, TransportError};

/// What a finished read reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadDone {
    /// Bytes moved.
    pub bytes: u64,
    /// Transfers issued (runs of adjacent blocks).
    pub runs: usize,
}

/// Runs on the backend's thread just before a successful read is reported
/// (the host-staged CUDA path copies the staged blocks to the device here).
pub(crate) type Finisher = Box<dyn FnOnce() -> Result<()> + Send>;

#[derive(Default)]
struct State {
    result: Option<Result<ReadDone>>,
    /// A thread is blocked in `wait` (only then is the condvar signalled).
    waiting: bool,
    waker: Option<Waker>,
    finisher: Option<Finisher>,
}

/// Shared between the backend (which completes) and the `ReadHandle`.
#[derive(Default)]
pub(crate) struct Completion {
    state: Mutex<State>,
    ready: Condvar,
}

impl Completion {
    pub(crate) fn new(finisher: Option<Finisher>) -> Arc<Self> {
        let c = Completion::default();
        c.state.lock().finisher = finisher;
        Arc::new(c)
    }

    /// Sets the result; only the first call counts (a read that timed out
    /// stays timed out even if late callbacks arrive).
    pub(crate) fn complete(&self, result: Result<ReadDone>) {
        let finisher = {
            let mut s = self.state.lock();
            if s.result.is_some() {
                return;
            }
            s.finisher.take()
        };
        let result = match (result, finisher) {
            (Ok(done), Some(f)) => f().map(|()| done),
            (r, _) => r,
        };
        let (waker, waiting) = {
            let mut s = self.state.lock();
            if s.result.is_some() {
                return;
            }
            s.result = Some(result);
            (s.waker.take(), s.waiting)
        };
        if waiting {
            self.ready.notify_all();
        }
        if let Some(w) = waker {
            w.wake();
        }
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.state.lock().result.is_some()
    }
}

/// A read in flight. Await it, or call [`ReadHandle::wait`].
#[must_use = "a read's result tells whether the blocks arrived"]
pub struct ReadHandle {
    completion: Arc<Completion>,
    /// Longest a blocking wait may take: the read's deadline plus slack for
    /// the backend to notice it.
    wait_limit: Instant,
    peer: String,
    timeout: Duration,
}

impl ReadHandle {
    pub(crate) fn new(completion: Arc<Completion>, peer: String, timeout: Duration) -> Self {
        ReadHandle {
            completion,
            wait_limit: Instant::now() + timeout + Duration::from_secs(2),
            peer,
            timeout,
        }
    }

    /// Blocks until the read finishes. Bounded: the backend fails the read
    /// at its deadline; should the backend itself be stuck, this gives up
    /// two seconds later with `Timeout`.
    pub fn wait(self) -> Result<ReadDone> {
        let mut s = self.completion.state.lock();
        loop {
            if let Some(r) = s.result.take() {
                return r;
            }
            let now = Instant::now();
            if now >= self.wait_limit {
                return Err(TransportError::Timeout {
                    peer: self.peer,
                    after: self.timeout,
                });
            }
            s.waiting = true;
            self.completion
                .ready
                .wait_for(&mut s, self.wait_limit - now);
            s.waiting = false;
        }
    }

    /// Whether the result is available (a `wait` would not block).
    pub fn is_finished(&self) -> bool {
        self.completion.is_complete()
    }
}

impl Future for ReadHandle {
    type Output = Result<ReadDone>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.completion.state.lock();
        match s.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
