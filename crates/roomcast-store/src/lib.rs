//! roomcast's store: rooms, messages, local copies and super admins in sled, as versioned,
//! checksummed records.
//!
//! **Architecture Invariant:** this is the only crate that names sled or bincode, and neither
//! appears in its public API. Records are encoded by [`codec`] inside an envelope with a format
//! version and a CRC-32, so that a later format can replace bincode.
//!
//! # Threads and order
//! Everything touches sled on the store's own writer thread: a [`WriteSet`] (everything one
//! command stores, applied as one atomic sled batch) and a read ([`Store::read`]) are jobs on
//! one FIFO queue, so a read sees every write set submitted before it, and callers (room
//! actors, async tasks) never wait on the disk: they get a future. Only opening, the start-up
//! reads ([`Store::rooms`], [`Store::super_admins`]) and the checker block their caller.
//!
//! # Durability
//! [`Store::submit`] returns a [`Commit`] that resolves once the write set is durable. With
//! [`Durability::GroupCommit`] (the default for a directory) one flush covers every write set
//! applied while the previous flush ran, and is followed by an fdatasync of sled's log and an
//! fsync of new blob files: durable against a power cut. [`Durability::FlushOnly`] skips the
//! sync: durable against a crash of the process only. With [`Durability::Buffered`] a commit
//! resolves once queued and the store flushes every `flush_every`: a crash loses up to that interval
//! and one flush's duration.
//! A temporary store is never flushed for a commit (it too resolves once queued). Reads are
//! queued after every write set submitted before them either way.

#![forbid(unsafe_code)]

mod check;
pub mod codec;
mod commit;
mod error;
mod keys;
mod mark;
mod writeset;

use std::future::Future;
use std::ops::Bound;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use roomcast_model::{MessageData, RoomId, RoomRecord, UserId};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use check::{check, salvage, CheckReport, Problem};
pub use commit::Commit;
use commit::{Committer, Progress, Syncer};
pub use error::StoreError;
pub use writeset::WriteSet;

use codec::RecordKind;

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A temporary store, deleted when the engine stops.
    Temporary,
    /// A directory, created if missing.
    Dir(PathBuf),
}

/// When a write counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// A commit resolves after a group flush that covers the write, followed by an fdatasync of
    /// the log: durable against a crash of the process and a power cut. The default.
    GroupCommit,
    /// As [`Durability::GroupCommit`] without the fdatasync: durable against a crash of the
    /// process, not a power cut or a crash of the operating system. Faster on slow disks.
    FlushOnly,
    /// A commit resolves at once; the store flushes every `flush_every`. A crash loses what was
    /// acknowledged since the last flush began: up to `flush_every` plus one flush's duration.
    Buffered {
        /// How often sled flushes in the background.
        flush_every: Duration,
    },
}

/// How to open a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Where it lives.
    pub location: Location,
    /// When a write counts as done.
    pub durability: Durability,
    /// sled's page cache size in bytes.
    pub cache_bytes: u64,
    /// A cluster's log: every write set is also appended there, and counts as durable only
    /// once the log took it (cluster mode; `None` on one node).
    pub replicator: Option<Arc<dyn Replicator>>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            location: Location::Temporary,
            durability: Durability::GroupCommit,
            cache_bytes: 64 * 1024 * 1024,
            replicator: None,
        }
    }
}

/// Called once with the outcome of an append to a cluster's log.
pub type AppendDone = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// A cluster's log of write sets (cluster mode): the source of truth that outlives a node. The
/// store appends every write set it is given, in the order it is given them, and a write
/// counts as durable only once both the local store and the log have it.
///
/// Implementations keep each room's appends in call order (calls for one room come from one
/// room actor, one at a time) and call `done` once the entry is durable in the log, or with
/// [`StoreError::Replication`]; a failed append fails every later one of the same room until
/// the room reloads.
pub trait Replicator: Send + Sync + std::fmt::Debug + 'static {
    /// Appends `entry` ([`WriteSet::encode`]) to `room`'s log (`None`: the engine-wide log).
    fn append(&self, room: Option<RoomId>, entry: Vec<u8>, done: AppendDone);
    /// Calls `done` once every append made before this call is durable (or failed).
    fn barrier(&self, done: AppendDone);
    /// Whether `room`'s log has grown enough to be compacted ([`Store::snapshot_room`]).
    fn wants_snapshot(&self, _room: RoomId) -> bool {
        false
    }
    /// Appends, after every append of `room` made before this call, a snapshot of the room
    /// (`state`, once the store has read it: the room as those appends left it; see
    /// [`WriteSet::snapshot`]), and then drops the log's entries before it.
    fn append_snapshot(
        &self,
        _room: RoomId,
        _state: oneshot::Receiver<Result<RoomState, StoreError>>,
    ) {
    }
}

/// Every stored key of one room and its value ([`Reader::room_state`]).
pub type RoomState = Vec<(Vec<u8>, Vec<u8>)>;

/// The value stored for a super admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SuperAdminRecord {
    pub(crate) user: UserId,
}

/// A handle to the store. Cloning is shallow; the last clone dropped stops the store's threads
/// after a last flush.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

struct Inner {
    reader: Reader,
    /// `None` only while dropping.
    jobs: Option<mpsc::Sender<Job>>,
    /// The cluster's log, if any.
    replicator: Option<Arc<dyn Replicator>>,
    progress: Arc<Progress>,
    /// Commits wait for a flush (a directory with group commit); otherwise they resolve once
    /// queued (temporary and buffered stores: nothing to wait for).
    flushes: bool,
    writer: Mutex<Option<JoinHandle<()>>>,
    db: sled::Db,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer after the jobs already queued; it drops the
        // committer, which flushes one last time.
        self.jobs.take();
        if let Some(writer) = self.writer.lock().take() {
            if writer.thread().id() != std::thread::current().id() {
                let _ = writer.join();
            }
        }
    }
}

/// Called on the store's thread if a write set fails to apply.
type OnFailure = Box<dyn FnOnce(StoreError) + Send>;

enum Job {
    Write(WriteSet, commit::Waiter, u64, Option<OnFailure>),
    Barrier(commit::Waiter),
    Read(Box<dyn FnOnce(&Reader) + Send>),
}

/// Reads of the store. Each blocks on sled: the engine calls them through [`Store::read`], on
/// the store's thread.
#[derive(Clone)]
pub struct Reader {
    tree: sled::Tree,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

/// The name of the tree every record lives in.
const TREE: &str = "data/v2";

impl Store {
    /// Opens (or creates) the store described by `config`. A store that cannot be opened (locked
    /// by another process, unreadable, corrupt) is an error naming the cause, never a panic.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let flush_every = match config.durability {
            Durability::Buffered { flush_every } => Some(
                u64::try_from(flush_every.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            ),
            Durability::GroupCommit | Durability::FlushOnly => Some(500),
        };
        // A buffered directory store is flushed by its own committer thread every
        // `flush_every` (sled's background flusher can fall far behind under load).
        let flush_every = match (&config.location, config.durability) {
            (Location::Dir(_), Durability::Buffered { .. }) => None,
            _ => flush_every,
        };
        let sled_config = sled::Config::new()
            .cache_capacity(config.cache_bytes)
            .flush_every_ms(flush_every);
        let sled_config = match &config.location {
            Location::Temporary => sled_config.temporary(true),
            Location::Dir(path) => sled_config.path(path),
        };
        let db = open_with_retry(&sled_config)?;
        let tree = guarded("opening the store's tree", || db.open_tree(TREE))??;
        migrate_v1(&db, &tree)?;
        let reader = Reader { tree };
        // The write groups applied so far, ever: the log must hold every acknowledged one.
        let base = guarded("reading the write mark", || reader.mark())??;
        if let Location::Dir(dir) = &config.location {
            if let Some(acknowledged) = mark::read(dir) {
                if base < acknowledged {
                    return Err(mark::lost(base, acknowledged));
                }
            }
        }
        let progress = Arc::new(Progress::default());
        let committer =
            match (&config.location, config.durability) {
                (Location::Dir(dir), Durability::GroupCommit) => Some(Committer::start(
                    db.clone(),
                    Some((Syncer::open(dir)?, mark::MarkFile::open(dir)?, base)),
                    progress.clone(),
                )?),
                (Location::Dir(_), Durability::FlushOnly) => {
                    Some(Committer::start(db.clone(), None, progress.clone())?)
                }
                (Location::Dir(_), Durability::Buffered { flush_every }) => Some(
                    Committer::periodic(db.clone(), flush_every, progress.clone())?,
                ),
                // A temporary store is deleted at exit: there is nothing to make durable, so it
                // never waits for a flush.
                _ => None,
            };
        let flushes = committer.as_ref().is_some_and(|c| !c.is_periodic());
        let (jobs, queue) = mpsc::channel();
        let writer_reader = reader.clone();
        let writer_progress = progress.clone();
        let writer = std::thread::Builder::new()
            .name("roomcast-store".into())
            .spawn(move || write_loop(queue, writer_reader, committer, writer_progress, base))
            .map_err(|e| StoreError::Io(format!("cannot start the store's thread: {e}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                reader,
                jobs: Some(jobs),
                replicator: config.replicator.clone(),
                progress,
                flushes,
                writer: Mutex::new(Some(writer)),
                db,
            }),
        })
    }

    fn send(&self, job: Job) -> Result<(), Job> {
        match self.inner.jobs.as_ref() {
            Some(jobs) => jobs.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    /// Applies `set` on the store's thread, atomically and after every write set submitted
    /// before it. The commit resolves once it is durable (see [`Durability`]), or with the error
    /// that kept it from being applied (then nothing of it was).
    pub fn submit(&self, set: WriteSet) -> Commit {
        self.submit_inner(set, None)
    }

    /// As [`Store::submit`]; if the write set fails to apply, `on_failure` is called (on the
    /// store's thread) before the commit resolves with the error: a writer whose memory is now
    /// ahead of the store can stop and reload.
    pub fn submit_or(
        &self,
        set: WriteSet,
        on_failure: impl FnOnce(StoreError) + Send + 'static,
    ) -> Commit {
        self.submit_inner(set, Some(Box::new(on_failure)))
    }

    fn submit_inner(&self, set: WriteSet, on_failure: Option<OnFailure>) -> Commit {
        if set.is_empty() {
            return self.commit();
        }
        let replicated = match &self.inner.replicator {
            None => None,
            Some(log) => match set.encode() {
                Ok(entry) => {
                    let (tx, rx) = oneshot::channel();
                    log.append(
                        set.room(),
                        entry,
                        Box::new(move |r| {
                            let _ = tx.send(r);
                        }),
                    );
                    Some(Commit::waiting(rx))
                }
                Err(e) => return Commit::ready(Err(e)),
            },
        };
        let local = self.submit_local(set, on_failure);
        match replicated {
            Some(log) => Commit::both(local, log),
            None => local,
        }
    }

    /// Whether `room`'s log in the cluster wants a snapshot ([`Store::snapshot_room`]); never on
    /// one node.
    pub fn wants_snapshot(&self, room: RoomId) -> bool {
        self.inner
            .replicator
            .as_ref()
            .is_some_and(|log| log.wants_snapshot(room))
    }

    /// Cluster mode: has the cluster's log take a snapshot of `room` at this point of its
    /// writes (the room's writer calls it between two write sets), so that the entries
    /// before it can go. The room's state is read on the store's thread, after every write set
    /// submitted before this call and before any submitted after.
    pub fn snapshot_room(&self, room: RoomId) {
        let Some(log) = &self.inner.replicator else {
            return;
        };
        let (tx, rx) = oneshot::channel();
        log.append_snapshot(room, rx);
        drop(self.read(move |reader| {
            let _ = tx.send(reader.room_state(room));
        }));
    }

    /// Applies a write set another node appended to a cluster's log (not appended again):
    /// bringing this node's copy of a room up to the log before it runs the room.
    pub fn apply_replicated(&self, entry: &[u8]) -> Result<Commit, StoreError> {
        let set = WriteSet::decode(entry)?;
        Ok(self.submit_local(set, None))
    }

    fn submit_local(&self, set: WriteSet, on_failure: Option<OnFailure>) -> Commit {
        if set.is_empty() {
            return self.commit_local();
        }
        let (tx, rx) = oneshot::channel();
        let seq = self.inner.progress.submitted.fetch_add(1, Ordering::SeqCst) + 1;
        match self.send(Job::Write(set, tx, seq, on_failure)) {
            Ok(()) if self.inner.flushes => Commit::waiting(rx),
            // Nothing to wait for: acknowledged once queued (a failure still stops the writer
            // through `on_failure`).
            Ok(()) => Commit::ready(Ok(())),
            Err(_) => Commit::ready(Err(StoreError::Closed)),
        }
    }

    /// A future that resolves once every write set submitted before this call is durable,
    /// whoever submitted it: a call that changed nothing, or a read, awaits it too, so that no
    /// caller is told `Ok` about state that a crash could still take back. It resolves at once
    /// when everything is durable already.
    pub fn commit(&self) -> Commit {
        let local = self.commit_local();
        match &self.inner.replicator {
            None => local,
            Some(log) => {
                let (tx, rx) = oneshot::channel();
                log.barrier(Box::new(move |r| {
                    let _ = tx.send(r);
                }));
                Commit::both(local, Commit::waiting(rx))
            }
        }
    }

    fn commit_local(&self) -> Commit {
        if !self.inner.flushes || self.inner.progress.settled() {
            return Commit::ready(Ok(()));
        }
        let (tx, rx) = oneshot::channel();
        match self.send(Job::Barrier(tx)) {
            Ok(()) => Commit::waiting(rx),
            Err(_) => Commit::ready(Err(StoreError::Closed)),
        }
    }

    /// Runs `read` on the store's thread, after every write set submitted before it; the
    /// future resolves with its result.
    pub fn read<T, F>(&self, read: F) -> Pending<T>
    where
        T: Send + 'static,
        F: FnOnce(&Reader) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Read(Box::new(move |reader: &Reader| {
            let _ = tx.send(read(reader));
        }));
        match self.send(job) {
            Ok(()) => Pending(Some(rx)),
            Err(_) => Pending(None),
        }
    }

    /// Applies every write set queued so far and flushes everything to disk, blocking the
    /// calling thread (shutdown, dropping the engine, tools).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        let (done, applied) = mpsc::channel();
        let job = Job::Read(Box::new(move |_: &Reader| {
            let _ = done.send(());
        }));
        if self.send(job).is_ok() {
            // The writer answers once everything queued before is applied; it is gone only if
            // the store is closing, which applies the queue too.
            let _ = applied.recv();
        }
        guarded("flushing the store", || self.inner.db.flush())??;
        Ok(())
    }

    /// The store's reads, blocking the calling thread: for start-up and tools only.
    pub fn blocking_reader(&self) -> &Reader {
        &self.inner.reader
    }

    /// Every room record, oldest first (blocking; start-up). A record that cannot be decoded is
    /// an `Err` item and the reading goes on past it; a store sled cannot read (it panics on a
    /// damaged file) is an error.
    pub fn rooms(&self) -> Result<Vec<Result<RoomRecord, StoreError>>, StoreError> {
        guarded("reading the rooms", || self.inner.reader.rooms().collect())
    }

    /// The super admins, in id order (blocking; start-up).
    pub fn super_admins(&self) -> Result<Vec<UserId>, StoreError> {
        guarded("reading the super admins", || {
            self.inner.reader.super_admins()
        })?
    }

    /// Closes every local copy's span left open by a crash (its user was in the room when the
    /// process died, and membership does not survive a restart) at the room's last message, so
    /// that the copy does not gain messages sent after its user was gone. Blocking; start-up.
    /// Returns how many copies it closed, durable once a commit resolves.
    pub fn close_open_copies(&self) -> Result<usize, StoreError> {
        guarded("closing open local copies", || {
            self.close_open_copies_inner()
        })?
    }

    fn close_open_copies_inner(&self) -> Result<usize, StoreError> {
        let reader = &self.inner.reader;
        let mut set = WriteSet::new();
        let mut closed = 0;
        for item in reader.tree.scan_prefix([keys::COPY]) {
            let (key, value) = item?;
            let copy: LocalCopy = match codec::decode(RecordKind::Copy, &value) {
                Ok(copy) => copy,
                Err(e) => {
                    tracing::error!(error = %e.at(keys::describe(&key)), "skipping a local copy that cannot be read");
                    continue;
                }
            };
            let Some(&(from, None)) = copy.spans.last() else {
                continue;
            };
            let last = reader.last_seq(copy.room)?;
            set.close_copy(copy.user, copy.room, last, from, false);
            closed += 1;
        }
        if closed > 0 {
            // Applied here, before anything else can touch the store.
            let batch = writeset::batch_of(std::slice::from_ref(&set), &reader.tree)?;
            reader.tree.apply_batch(batch.into_batch())?;
        }
        Ok(closed)
    }
}

/// A read in flight on the store's thread.
#[must_use = "a read does nothing useful unless awaited"]
pub struct Pending<T>(Option<oneshot::Receiver<T>>);

impl<T> std::fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            Some(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.map_err(|_| StoreError::Closed)),
            None => Poll::Ready(Err(StoreError::Closed)),
        }
    }
}

/// Most write sets merged into one batch.
const MAX_GROUP: usize = 4096;

/// Write sets queued together, applied as one batch.
#[derive(Default)]
struct Group {
    /// The write mark when the store was opened.
    base: u64,
    sets: Vec<WriteSet>,
    waiters: Vec<(commit::Waiter, Option<OnFailure>)>,
    last_seq: u64,
}

impl Group {
    fn add(
        &mut self,
        set: WriteSet,
        waiter: commit::Waiter,
        seq: u64,
        on_failure: Option<OnFailure>,
    ) {
        self.sets.push(set);
        self.waiters.push((waiter, on_failure));
        self.last_seq = seq;
    }

    /// Applies the group as one batch and hands its waiters on. If the batch fails, each write
    /// set is applied on its own, so that one bad command fails alone.
    fn apply(&mut self, reader: &Reader, progress: &Progress, resolve: &dyn Fn(commit::Waiter)) {
        if self.waiters.is_empty() {
            return;
        }
        let mark = self.base + self.last_seq;
        // Each write set is resolved against the tree; one that comes to no write (deleting a
        // copy that was never stored) writes nothing, not even the mark. `Some(true)`: written
        // with the mark.
        let apply = |sets: &[WriteSet], with_mark: bool| -> Result<bool, StoreError> {
            guarded("applying a write set", || {
                let mut batch = writeset::batch_of(sets, &reader.tree)?;
                if batch.is_empty() {
                    return Ok(false);
                }
                if with_mark {
                    batch.put_mark(mark)?;
                }
                reader.tree.apply_batch(batch.into_batch())?;
                Ok(with_mark)
            })
            .and_then(|r| r)
        };
        let mut results = vec![apply(&self.sets, true)];
        if results[0].is_err() && self.sets.len() > 1 {
            // One by one, then the mark.
            results = self.sets.chunks(1).map(|s| apply(s, false)).collect();
            let mut mark_only = writeset::Resolved::default();
            let marked = mark_only.put_mark(mark).and_then(|()| {
                guarded("writing the write mark", || {
                    Ok(reader.tree.apply_batch(mark_only.into_batch())?)
                })
                .and_then(|r| r)
            });
            if marked.is_ok() {
                progress.marked.store(self.last_seq, Ordering::SeqCst);
            }
        } else if matches!(results[0], Ok(true)) {
            progress.marked.store(self.last_seq, Ordering::SeqCst);
        }
        let before = progress.applied.swap(self.last_seq, Ordering::SeqCst);
        if matches!(results.as_slice(), [Ok(false)])
            && progress.flushed.load(Ordering::SeqCst) >= before
        {
            // Nothing written, and everything before it durable already: so is this group.
            progress.flushed.fetch_max(self.last_seq, Ordering::SeqCst);
            for (waiter, _) in self.waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
            self.sets.clear();
            return;
        }
        let each = results.len() > 1;
        for (n, (waiter, on_failure)) in self.waiters.drain(..).enumerate() {
            match &results[if each { n } else { 0 }] {
                Ok(_) => resolve(waiter),
                Err(e) => {
                    tracing::error!(error = %e, "a write failed; nothing of it was applied");
                    if let Some(on_failure) = on_failure {
                        on_failure(e.clone());
                    }
                    let _ = waiter.send(Err(e.clone()));
                }
            }
        }
        self.sets.clear();
    }
}

fn write_loop(
    queue: mpsc::Receiver<Job>,
    reader: Reader,
    committer: Option<Committer>,
    progress: Arc<Progress>,
    base: u64,
) {
    // A buffered store's committer flushes on its own period: nobody waits for it.
    let resolve = |waiter: commit::Waiter| match &committer {
        Some(c) if !c.is_periodic() => c.request(waiter),
        _ => {
            let _ = waiter.send(Ok(()));
        }
    };
    // Write sets queued together are merged into one sled batch (a batch costs a log marker
    // besides its writes): still atomic per command, now per group of commands. A read or a
    // barrier ends a group, so that it sees every write queued before it.
    let mut group = Group {
        base,
        ..Group::default()
    };
    while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Write(set, waiter, seq, on_failure) => {
                    group.add(set, waiter, seq, on_failure);
                    if group.waiters.len() >= MAX_GROUP {
                        group.apply(&reader, &progress, &resolve);
                    }
                }
                Job::Barrier(waiter) => {
                    group.apply(&reader, &progress, &resolve);
                    resolve(waiter);
                }
                Job::Read(read) => {
                    group.apply(&reader, &progress, &resolve);
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(&reader)))
                        .is_err()
                    {
                        tracing::error!("a store read panicked; its caller gets a storage error");
                    }
                }
            }
            next = queue.try_recv().ok();
        }
        group.apply(&reader, &progress, &resolve);
    }
    // The committer flushes once more as it is dropped here.
    drop(committer);
}

/// Runs `f`, turning a panic inside sled into an error that names `what`.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        StoreError::Corrupt {
            where_: None,
            reason: format!("sled failed while {what}: {message}"),
        }
    })
}

impl Reader {
    /// Every room record, oldest first. A record that cannot be decoded is an `Err` item; the
    /// iteration goes on past it.
    pub fn rooms(&self) -> impl Iterator<Item = Result<RoomRecord, StoreError>> + '_ {
        self.tree.scan_prefix([keys::ROOM]).map(|item| {
            let (key, value) = item?;
            codec::decode_room(&value).map_err(|e| e.at(keys::describe(&key)))
        })
    }

    /// Every stored key of room `id` and its value: its record, last sequence number, retained
    /// messages, audit log, idempotency keys and the local copies of it (a snapshot's content,
    /// see [`WriteSet::snapshot`]).
    pub fn room_state(&self, id: RoomId) -> Result<RoomState, StoreError> {
        let mut state = Vec::new();
        for key in [keys::room(id), keys::seq(id)] {
            if let Some(value) = self.tree.get(key)? {
                state.push((key.to_vec(), value.to_vec()));
            }
        }
        let messages = self
            .tree
            .range(keys::message(id, 0).to_vec()..keys::message_end(id));
        let audit = self
            .tree
            .range(keys::audit(id, 0)..=keys::audit(id, u64::MAX));
        for item in messages.chain(audit) {
            let (key, value) = item?;
            state.push((key.to_vec(), value.to_vec()));
        }
        for item in self
            .tree
            .scan_prefix(keys::idempotency_prefix(id))
            .chain(self.tree.scan_prefix(keys::departure_prefix(id)))
        {
            let (key, value) = item?;
            state.push((key.to_vec(), value.to_vec()));
        }
        let room = id.as_u64().to_be_bytes();
        for item in self.tree.scan_prefix([keys::COPY]) {
            let (key, value) = item?;
            if key.ends_with(&room) {
                state.push((key.to_vec(), value.to_vec()));
            }
        }
        Ok(state)
    }

    /// The record of room `id`, if stored.
    pub fn room(&self, id: RoomId) -> Result<Option<RoomRecord>, StoreError> {
        match self.tree.get(keys::room(id))? {
            Some(value) => codec::decode_room(&value)
                .map(Some)
                .map_err(|e| e.at(format!("room {id}"))),
            None => Ok(None),
        }
    }

    /// The write mark: write groups applied, ever (0 for a new store).
    pub(crate) fn mark(&self) -> Result<u64, StoreError> {
        match self.tree.get(keys::MARK)? {
            Some(v) => codec::decode(RecordKind::Mark, &v).map_err(|e| e.at("write mark".into())),
            None => Ok(0),
        }
    }

    /// Room `id`'s last sequence number: the stored one, or its newest message's if that is
    /// newer (a store written before sequence numbers were stored), or 0.
    pub fn last_seq(&self, id: RoomId) -> Result<u64, StoreError> {
        let stored = match self.tree.get(keys::seq(id))? {
            Some(value) => codec::decode::<u64>(RecordKind::RoomSeq, &value)
                .map_err(|e| e.at(format!("sequence of room {id}")))?,
            None => 0,
        };
        let newest = self.message_bounds(id)?.map_or(0, |(_, last)| last);
        Ok(stored.max(newest))
    }

    /// Up to `limit` of `room`'s messages with sequence numbers in `range`, in sequence order
    /// (`newest_first`: reversed). Reads only what it returns.
    pub fn messages(
        &self,
        room: RoomId,
        range: (Bound<u64>, Bound<u64>),
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<MessageData>, StoreError> {
        let lo = match range.0 {
            Bound::Included(s) => Bound::Included(keys::message(room, s)),
            Bound::Excluded(s) => Bound::Excluded(keys::message(room, s)),
            Bound::Unbounded => Bound::Included(keys::message(room, 0)),
        };
        let hi = match range.1 {
            Bound::Included(s) => Bound::Included(keys::message(room, s)),
            Bound::Excluded(s) => Bound::Excluded(keys::message(room, s)),
            Bound::Unbounded => Bound::Included(keys::message(room, u64::MAX)),
        };
        let iter = self.tree.range::<[u8; 17], _>((lo, hi));
        let decode = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            let (key, value) = item?;
            codec::decode_message(&value).map_err(|e| e.at(keys::describe(&key)))
        };
        if newest_first {
            iter.rev().take(limit).map(decode).collect()
        } else {
            iter.take(limit).map(decode).collect()
        }
    }

    /// Up to `limit` entries of `room`'s audit log, newest first, older than entry `before` if
    /// given.
    pub fn audit_log(
        &self,
        room: RoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<roomcast_model::AuditEntry>, StoreError> {
        let hi = match before {
            Some(b) => Bound::Excluded(keys::audit(room, b)),
            None => Bound::Included(keys::audit(room, u64::MAX)),
        };
        self.tree
            .range::<[u8; 17], _>((Bound::Included(keys::audit(room, 0)), hi))
            .rev()
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                codec::decode(RecordKind::Audit, &value).map_err(|e| e.at(keys::describe(&key)))
            })
            .collect()
    }

    /// The number of `room`'s newest audit-log entry (0 if none).
    pub fn last_audit_seq(&self, room: RoomId) -> Result<u64, StoreError> {
        let range = keys::audit(room, 0)..=keys::audit(room, u64::MAX);
        Ok(self
            .tree
            .range(range)
            .next_back()
            .transpose()?
            .and_then(|(k, _)| keys::seq_of(&k))
            .unwrap_or(0))
    }

    /// The sequence numbers of `room`'s oldest and newest retained messages.
    pub fn message_bounds(&self, room: RoomId) -> Result<Option<(u64, u64)>, StoreError> {
        let range = keys::message(room, 0)..=keys::message(room, u64::MAX);
        let first = self.tree.range(range.clone()).next().transpose()?;
        let last = self.tree.range(range).next_back().transpose()?;
        Ok(match (first, last) {
            (Some((a, _)), Some((b, _))) => keys::seq_of(&a).zip(keys::seq_of(&b)),
            _ => None,
        })
    }

    /// A user's local copy of a room's conversation, if any.
    pub fn copy(&self, user: &UserId, room: RoomId) -> Result<Option<LocalCopy>, StoreError> {
        match self.tree.get(keys::copy(user, room))? {
            Some(v) => codec::decode(RecordKind::Copy, &v)
                .map(Some)
                .map_err(|e| e.at(format!("copy of room {room} for {user}"))),
            None => Ok(None),
        }
    }

    /// Every idempotency key stored for `room` (expired ones included: the caller decides).
    pub fn idempotency_keys(&self, room: RoomId) -> Result<Vec<IdempotencyRecord>, StoreError> {
        self.tree
            .scan_prefix(keys::idempotency_prefix(room))
            .map(|item| {
                let (key, value) = item?;
                codec::decode(RecordKind::Idempotency, &value)
                    .map_err(|e| e.at(keys::describe(&key)))
            })
            .collect()
    }

    /// Cluster mode: the departures of `room`'s members kept ([`Departure`]), in user order.
    pub fn departures(&self, room: RoomId) -> Result<Vec<Departure>, StoreError> {
        self.tree
            .scan_prefix(keys::departure_prefix(room))
            .map(|item| {
                let (key, value) = item?;
                codec::decode(RecordKind::Departure, &value).map_err(|e| e.at(keys::describe(&key)))
            })
            .collect()
    }

    /// The super admins, in id order.
    pub fn super_admins(&self) -> Result<Vec<UserId>, StoreError> {
        self.tree
            .scan_prefix([keys::ADMIN])
            .map(|item| {
                let (key, value) = item?;
                codec::decode::<SuperAdminRecord>(RecordKind::SuperAdmin, &value)
                    .map(|r| r.user)
                    .map_err(|e| e.at(keys::describe(&key)))
            })
            .collect()
    }
}

/// Opens sled, waiting a little if the directory's lock is still held: sled releases it from its
/// own background threads a moment after the previous store in this process was dropped. A
/// lock held by another live store (or process) is still an error, after `LOCK_WAIT`. A panic
/// inside sled (a truncated or mangled file) is an error that names it.
fn open_with_retry(config: &sled::Config) -> Result<sled::Db, StoreError> {
    const LOCK_WAIT: Duration = Duration::from_secs(2);
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match guarded("opening the store", || config.open())? {
            Ok(db) => return Ok(db),
            // sled reports a held lock as an `Other` IO error with this text.
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Moves a store written by the first layout (one tree per kind of record) into the one tree.
/// Idempotent: a crash half-way copies again on the next open; the old trees are dropped only
/// once the new one is flushed.
fn migrate_v1(db: &sled::Db, tree: &sled::Tree) -> Result<(), StoreError> {
    let names = db.tree_names();
    let has = |name: &str| names.iter().any(|n| n.as_ref() == name.as_bytes());
    let old = ["rooms/v1", "messages/v1", "copies/v1", "super_admins/v1"];
    if !old.iter().any(|n| has(n)) {
        return Ok(());
    }
    let mut moved = 0usize;
    for name in old.iter().filter(|n| has(n)) {
        let from = db.open_tree(name)?;
        let prefix = match *name {
            "rooms/v1" => keys::ROOM,
            "messages/v1" => keys::MESSAGE,
            "copies/v1" => keys::COPY,
            _ => keys::ADMIN,
        };
        for item in from.iter() {
            let (key, value) = item?;
            let mut new_key = Vec::with_capacity(key.len() + 1);
            new_key.push(prefix);
            new_key.extend_from_slice(&key);
            tree.insert(new_key, value)?;
            moved += 1;
        }
    }
    db.flush()?;
    for name in old.iter().filter(|n| has(n)) {
        db.drop_tree(name)?;
    }
    db.flush()?;
    tracing::info!(
        records = moved,
        "moved a store of the first layout into one tree"
    );
    Ok(())
}

/// A user's local copy of a room's conversation: the spans of the room's sequence numbers it was
/// a member for. The messages themselves are stored once per room; a copy only says which of
/// them the user has, so keeping or deleting a copy is one small record whatever its length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalCopy {
    /// The user.
    pub user: UserId,
    /// The room.
    pub room: RoomId,
    /// Inclusive spans of sequence numbers; the last one's end is `None` while the user is in
    /// the room.
    pub spans: Vec<(u64, Option<u64>)>,
}

/// A message's idempotency key: the sender's retry of the same key in the same room within the
/// engine's window gets this message back. Its own record (not part of the message's), written
/// with the message and removed when the window has passed or the room is destroyed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    /// The room.
    pub room: RoomId,
    /// The sender.
    pub from: UserId,
    /// The client's key.
    pub key: String,
    /// The message's id.
    pub msg_id: roomcast_model::MessageId,
    /// The message's sequence number.
    pub seq: u64,
    /// When the room accepted it (engine clock, ms): the window runs from here.
    pub at: roomcast_model::Timestamp,
}

/// Cluster mode: a member's latest departure from a room (it left, or was kicked, blocked or
/// removed as offline), kept in the room's log so that a node that missed it (cut off from the
/// cluster) cannot bring the member back after the room changed owners. Written with the
/// departure; removed when old enough or with the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Departure {
    /// The room.
    pub room: RoomId,
    /// The member who went.
    pub user: UserId,
    /// Where it stands among the room's membership changes: the owner's term (its lease's
    /// revision when it took the room) and a count within the term. A member that joined at a
    /// lower mark is out.
    pub mark: (u64, u64),
    /// When (engine clock, ms).
    pub at: roomcast_model::Timestamp,
    /// Why: `None` if it left, else why it was removed.
    pub reason: Option<roomcast_model::LeaveReason>,
    /// Who removed it, if someone did.
    pub operator: Option<UserId>,
}

#[cfg(test)]
mod tests;
