//! Group commit: one flush for every write that arrived while the previous flush ran.
//!
//! Writers apply their write to sled, then call [`Committer::request`]. A dedicated thread takes
//! all pending requests, flushes, and resolves them. A request taken by a flush was made after its
//! write, so that flush covers it. Under load the batch grows by itself; there is no timer and no
//! added latency when idle (a lone write waits for exactly one flush).
//!
//! Writes are counted: a flush records how many writes it covers, so a commit asked for when
//! every write so far is already flushed resolves at once, and one asked for while any write is
//! not yet flushed (its own or anyone's) waits for the next flush.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::StoreError;

type Waiter = oneshot::Sender<Result<(), StoreError>>;

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Writes applied to sled so far (counted after each write).
    written: AtomicU64,
    /// Writes covered by the last flush that succeeded.
    flushed: AtomicU64,
}

struct State {
    waiters: Vec<Waiter>,
    closing: bool,
}

pub(crate) struct Committer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    pub(crate) fn start(db: sled::Db) -> Result<Committer, StoreError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                waiters: Vec::new(),
                closing: false,
            }),
            wake: Condvar::new(),
            written: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("roomcast-commit".into())
            .spawn(move || run(db, &thread_shared))
            .map_err(|e| StoreError::Io(format!("cannot start the commit thread: {e}")))?;
        Ok(Committer {
            shared,
            thread: Some(thread),
        })
    }

    /// Counts one write applied to sled.
    pub(crate) fn wrote(&self) {
        self.shared.written.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn request(&self) -> Commit {
        if self.shared.flushed.load(Ordering::SeqCst) >= self.shared.written.load(Ordering::SeqCst)
        {
            return Commit::ready(Ok(()));
        }
        let (tx, rx) = oneshot::channel();
        let mut state = self.shared.state.lock();
        if state.closing {
            return Commit::ready(Err(StoreError::Closed));
        }
        state.waiters.push(tx);
        drop(state);
        self.shared.wake.notify_one();
        Commit(Inner::Waiting(rx))
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.shared.state.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // The thread ends after one last flush; joining it releases its handle on the
            // database, so the directory can be reopened right after the store is dropped.
            let _ = thread.join();
        }
    }
}

fn run(db: sled::Db, shared: &Shared) {
    loop {
        let (batch, closing) = {
            let mut state = shared.state.lock();
            while state.waiters.is_empty() && !state.closing {
                shared.wake.wait(&mut state);
            }
            (std::mem::take(&mut state.waiters), state.closing)
        };
        if !batch.is_empty() || closing {
            // Every request in the batch was made after the writes it must cover were counted,
            // and this load comes after taking the batch: the flush covers `target` writes.
            let target = shared.written.load(Ordering::SeqCst);
            let result = db.flush().map(|_| ()).map_err(StoreError::from);
            if result.is_ok() {
                shared.flushed.fetch_max(target, Ordering::SeqCst);
            }
            if let Err(e) = &result {
                tracing::error!(error = %e, "group commit flush failed");
            }
            for waiter in batch {
                let _ = waiter.send(result.clone());
            }
        }
        if closing {
            return;
        }
    }
}

/// A pending commit: resolves to `Ok` once the writes before it are durable.
#[must_use = "a write is not durable until its commit resolves"]
pub struct Commit(Inner);

enum Inner {
    Ready(Option<Result<(), StoreError>>),
    Waiting(oneshot::Receiver<Result<(), StoreError>>),
}

impl Commit {
    pub(crate) fn ready(result: Result<(), StoreError>) -> Commit {
        Commit(Inner::Ready(Some(result)))
    }
}

impl Future for Commit {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Inner::Ready(result) => Poll::Ready(result.take().unwrap_or(Ok(()))),
            Inner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(StoreError::Closed))),
        }
    }
}
