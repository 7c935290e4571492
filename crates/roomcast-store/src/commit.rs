//! Group commit: one flush (and one fsync) for every write set applied while the previous flush
//! ran.
//!
//! The store's writer thread applies write sets to sled, then hands each one's waiter to
//! [`Committer::request`]. A dedicated thread takes every pending waiter, flushes, and resolves
//! them. A waiter handed over after its write set was applied is covered by the next flush that
//! starts. Under load the group grows by itself; there is no timer and no added latency when idle
//! (a lone write waits for exactly one flush).
//!
//! sled 0.34's flush writes its log with `sync_file_range`, which neither flushes file metadata
//! nor the device's write cache, and it never syncs the files it keeps large values in
//! (`blobs/`). So with [`crate::Durability::GroupCommit`] each flush is followed by an
//! `fdatasync` of the log file and an `fsync` of every blob file written since the last one (and
//! of the `blobs` directory): an acknowledged write survives a power cut, not only a crash of
//! the process. [`crate::Durability::FlushOnly`] skips that step.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::mark::MarkFile;
use crate::StoreError;

pub(crate) type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// Counts shared by the store's threads: write sets submitted, applied, and covered by a
/// finished flush. `flushed <= applied <= submitted`.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) submitted: AtomicU64,
    pub(crate) applied: AtomicU64,
    pub(crate) flushed: AtomicU64,
    /// The last write set whose group wrote the write mark (groups that came to no write
    /// write no mark): the mark file is brought up to this, never further.
    pub(crate) marked: AtomicU64,
}

impl Progress {
    /// True if every write set submitted so far is durable.
    pub(crate) fn settled(&self) -> bool {
        self.flushed.load(Ordering::SeqCst) >= self.submitted.load(Ordering::SeqCst)
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    progress: Arc<Progress>,
}

struct State {
    waiters: Vec<Waiter>,
    closing: bool,
}

pub(crate) struct Committer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Flushes on a period instead of on request (a buffered store).
    period: Option<Duration>,
}

/// Makes what sled flushed durable against a power cut.
pub(crate) struct Syncer {
    log: File,
    blobs: PathBuf,
    synced_blobs: HashSet<OsString>,
}

impl Syncer {
    pub(crate) fn open(dir: &Path) -> Result<Syncer, StoreError> {
        let log = File::open(dir.join("db"))
            .map_err(|e| StoreError::Io(format!("cannot open the store's log to sync it: {e}")))?;
        // The files sled created at start-up are durable once their directory is.
        sync_dir(dir)?;
        Ok(Syncer {
            log,
            blobs: dir.join("blobs"),
            synced_blobs: HashSet::new(),
        })
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        self.log
            .sync_data()
            .map_err(|e| StoreError::Io(format!("fdatasync of the store's log failed: {e}")))?;
        let Ok(entries) = std::fs::read_dir(&self.blobs) else {
            return Ok(());
        };
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                File::open(entry.path())
                    .and_then(|f| f.sync_data())
                    .map_err(|e| StoreError::Io(format!("fsync of a blob failed: {e}")))?;
                new = true;
            }
            present.insert(name);
        }
        if new {
            sync_dir(&self.blobs)?;
        }
        // Forget blobs sled removed; their names may come back.
        self.synced_blobs = present;
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Io(format!("fsync of {} failed: {e}", dir.display())))
}

impl Committer {
    /// Starts the commit thread. With `sync` (the syncer, the mark file and the write mark at
    /// open), each flush is followed by an fdatasync and the mark file is brought up to date.
    pub(crate) fn start(
        db: sled::Db,
        sync: Option<(Syncer, MarkFile, u64)>,
        progress: Arc<Progress>,
    ) -> Result<Committer, StoreError> {
        Self::spawn(db, sync, progress, None)
    }

    /// Starts a thread that flushes every `period` whatever was applied since its last flush
    /// (a buffered store: nobody waits for it).
    pub(crate) fn periodic(
        db: sled::Db,
        period: Duration,
        progress: Arc<Progress>,
    ) -> Result<Committer, StoreError> {
        Self::spawn(
            db,
            None,
            progress,
            Some(period.max(Duration::from_millis(1))),
        )
    }

    pub(crate) fn is_periodic(&self) -> bool {
        self.period.is_some()
    }

    fn spawn(
        db: sled::Db,
        sync: Option<(Syncer, MarkFile, u64)>,
        progress: Arc<Progress>,
        period: Option<Duration>,
    ) -> Result<Committer, StoreError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                waiters: Vec::new(),
                closing: false,
            }),
            wake: Condvar::new(),
            progress,
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("roomcast-commit".into())
            .spawn(move || run(db, sync, &thread_shared, period))
            .map_err(|e| StoreError::Io(format!("cannot start the commit thread: {e}")))?;
        Ok(Committer {
            shared,
            thread: Some(thread),
            period,
        })
    }

    /// Resolves `waiter` once every write set applied so far is durable (at once if it is).
    pub(crate) fn request(&self, waiter: Waiter) {
        let progress = &self.shared.progress;
        if progress.flushed.load(Ordering::SeqCst) >= progress.applied.load(Ordering::SeqCst) {
            let _ = waiter.send(Ok(()));
            return;
        }
        let mut state = self.shared.state.lock();
        if state.closing {
            let _ = waiter.send(Err(StoreError::Closed));
            return;
        }
        state.waiters.push(waiter);
        drop(state);
        self.shared.wake.notify_one();
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

fn run(
    db: sled::Db,
    mut sync: Option<(Syncer, MarkFile, u64)>,
    shared: &Shared,
    period: Option<Duration>,
) {
    loop {
        let (batch, closing) = {
            let mut state = shared.state.lock();
            while state.waiters.is_empty() && !state.closing {
                match period {
                    Some(p) => {
                        if shared.wake.wait_for(&mut state, p).timed_out() {
                            break;
                        }
                    }
                    None => shared.wake.wait(&mut state),
                }
            }
            (std::mem::take(&mut state.waiters), state.closing)
        };
        let progress = &shared.progress;
        let due = period.is_some()
            && progress.applied.load(Ordering::SeqCst) > progress.flushed.load(Ordering::SeqCst);
        if !batch.is_empty() || closing || due {
            // Every waiter in the batch was handed over after its write set was applied, and
            // this load comes after taking the batch: the flush covers `target` write sets.
            let target = shared.progress.applied.load(Ordering::SeqCst);
            let marked = shared.progress.marked.load(Ordering::SeqCst);
            let started = std::time::Instant::now();
            let mut result = db.flush().map(|_| ()).map_err(StoreError::from);
            if result.is_ok() {
                if let Some((syncer, mark, base)) = sync.as_mut() {
                    result = syncer.sync();
                    if result.is_ok() && marked > 0 {
                        // After the sync: the mark file is never ahead of a sound log.
                        if let Err(e) = mark.write(*base + marked) {
                            tracing::warn!(error = %e, "cannot update the store's mark file");
                        }
                    }
                }
            }
            match &result {
                Ok(()) => {
                    shared.progress.flushed.fetch_max(target, Ordering::SeqCst);
                    tracing::trace!(waiters = batch.len(), elapsed = ?started.elapsed(), "group commit");
                }
                Err(e) => tracing::error!(error = %e, "group commit flush failed"),
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
    /// Two commits (the local store's and a cluster log's): the first error, or both `Ok`.
    Both(Box<Commit>, Box<Commit>),
}

impl Commit {
    pub(crate) fn ready(result: Result<(), StoreError>) -> Commit {
        Commit(Inner::Ready(Some(result)))
    }

    pub(crate) fn waiting(rx: oneshot::Receiver<Result<(), StoreError>>) -> Commit {
        Commit(Inner::Waiting(rx))
    }

    pub(crate) fn both(a: Commit, b: Commit) -> Commit {
        Commit(Inner::Both(Box::new(a), Box::new(b)))
    }
}

impl std::fmt::Debug for Commit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Inner::Ready(_) => "Commit(ready)",
            Inner::Waiting(_) => "Commit(waiting)",
            Inner::Both(..) => "Commit(both)",
        })
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
            Inner::Both(a, b) => {
                // Each side is polled until done; a finished side turns into its result.
                let a_done = match Pin::new(&mut **a).poll(cx) {
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {
                        **a = Commit::ready(Ok(()));
                        true
                    }
                    Poll::Pending => false,
                };
                match Pin::new(&mut **b).poll(cx) {
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) if a_done => Poll::Ready(Ok(())),
                    Poll::Ready(Ok(())) => {
                        **b = Commit::ready(Ok(()));
                        Poll::Pending
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}
