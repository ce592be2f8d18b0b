//! The receiving end of one request.

use tokio::sync::mpsc::UnboundedReceiver;

use super::request::{RequestOutput, ServingError};
use super::Command;
use crate::sequence::SeqId;

pub struct RequestStream {
    id: SeqId,
    rx: UnboundedReceiver<Result<RequestOutput, ServingError>>,
    commands: std::sync::mpsc::Sender<Command>,
    done: bool,
}

impl RequestStream {
    pub(super) fn new(
        id: SeqId,
        rx: UnboundedReceiver<Result<RequestOutput, ServingError>>,
        commands: std::sync::mpsc::Sender<Command>,
    ) -> Self {
        RequestStream {
            id,
            rx,
            commands,
            done: false,
        }
    }

    pub fn id(&self) -> SeqId {
        self.id
    }

    /// The next update; `None` once the request has finished.
    pub async fn next(&mut self) -> Option<Result<RequestOutput, ServingError>> {
        if self.done {
            return None;
        }
        let item = self.rx.recv().await;
        self.note(&item);
        item
    }

    /// Blocking variant for synchronous callers (never from async code).
    pub fn blocking_next(&mut self) -> Option<Result<RequestOutput, ServingError>> {
        if self.done {
            return None;
        }
        let item = self.rx.blocking_recv();
        self.note(&item);
        item
    }

    fn note(&mut self, item: &Option<Result<RequestOutput, ServingError>>) {
        self.done = match item {
            None | Some(Err(_)) => true,
            Some(Ok(o)) => o.finish_reason.is_some(),
        };
    }
}

impl Drop for RequestStream {
    /// A caller that stops listening (a client disconnect) aborts the
    /// request, which frees its KV blocks.
    /// A prompt detached into a lease that was never read (the caller left
    /// during its last prefill step) has its lease released here, or its
    /// blocks would be held with no timer to free them.
    fn drop(&mut self) {
        if !self.done {
            let _ = self.commands.send(Command::Abort(self.id));
        }
        // No more sends from here: what the engine sends later fails, and
        // the engine releases that lease itself.
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            if let Ok(RequestOutput {
                kv_handoff: Some(h),
                ..
            }) = item
            {
                let _ = self.commands.send(Command::ReleaseLease(h.lease));
            }
        }
    }
}
