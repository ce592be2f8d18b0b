//! Notifications: a short message a reader sends to the peer it read from
//! once its blocks have arrived (prefill frees the blocks when it gets one).
//! Each carries the sender's name and epoch and the epoch it was addressed
//! to, so a restarted agent ignores messages meant for its predecessor.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::MetadataError;
use crate::metadata::MAX_NAME;
use crate::wire::{Reader, Writer};

/// Largest notification payload: it must fit one eager message.
pub const MAX_NOTIFY: usize = 4096;

/// A notification received from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The sending agent's name.
    pub from: String,
    /// The sending agent's epoch.
    pub from_epoch: u64,
    /// The application's bytes.
    pub payload: Vec<u8>,
}

/// Encodes a notification addressed to the incarnation `to_epoch`.
pub(crate) fn encode(from: &str, from_epoch: u64, to_epoch: u64, payload: &[u8]) -> Vec<u8> {
    let mut w = Writer::default();
    w.str(from);
    w.u64(from_epoch);
    w.u64(to_epoch);
    w.bytes(payload);
    w.buf
}

/// Decodes a notification and the epoch it was addressed to.
pub(crate) fn decode(bytes: &[u8]) -> Result<(Notification, u64), MetadataError> {
    let mut r = Reader::new(bytes);
    let from = r.str("from", MAX_NAME)?;
    let from_epoch = r.u64("from_epoch")?;
    let to_epoch = r.u64("to_epoch")?;
    let payload = r.bytes("payload", MAX_NOTIFY)?.to_vec();
    r.finish()?;
    Ok((
        Notification {
            from,
            from_epoch,
            payload,
        },
        to_epoch,
    ))
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Notification>,
    waker: Option<Waker>,
}

/// The inbox backends deliver into; `Notifications` reads from it.
#[derive(Default)]
pub(crate) struct Inbox {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Inbox {
    /// Decodes `bytes` and queues it if it was meant for `my_epoch`.
    pub(crate) fn deliver(&self, bytes: &[u8], my_epoch: u64) {
        match decode(bytes) {
            Ok((n, to)) if to == my_epoch => {
                let waker = {
                    let mut q = self.queue.lock();
                    q.items.push_back(n);
                    q.waker.take()
                };
                self.ready.notify_all();
                if let Some(w) = waker {
                    w.wake();
                }
            }
            Ok((n, to)) => tracing::warn!(
                from = %n.from, addressed_to = to, my_epoch,
                "dropping a notification meant for an earlier incarnation of this agent"
            ),
            Err(e) => tracing::warn!(error = %e, "dropping a malformed notification"),
        }
    }
}

/// The stream of notifications sent to an agent. Clones share one inbox:
/// each notification is taken by exactly one receiver.
#[derive(Clone)]
pub struct Notifications {
    pub(crate) inbox: Arc<Inbox>,
}

impl Notifications {
    /// The next notification, if one is queued.
    pub fn try_recv(&self) -> Option<Notification> {
        self.inbox.queue.lock().items.pop_front()
    }

    /// Waits up to `timeout` for the next notification.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Notification> {
        let deadline = Instant::now() + timeout;
        let mut q = self.inbox.queue.lock();
        loop {
            if let Some(n) = q.items.pop_front() {
                return Some(n);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            self.inbox.ready.wait_for(&mut q, deadline - now);
        }
    }
}

impl futures::Stream for Notifications {
    type Item = Notification;

    /// Never ends: an agent can always be notified while it lives.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        let mut q = self.inbox.queue.lock();
        match q.items.pop_front() {
            Some(n) => Poll::Ready(Some(n)),
            None => {
                q.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
