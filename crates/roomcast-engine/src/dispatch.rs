//! The dispatch pool: the threads that run handlers and feed event streams.
//!
//! A session's mailbox is drained by whichever pool thread picks the session up. A session with
//! nothing queued costs no task and no thread: its mailbox holds a waker that, on the next push,
//! puts the session on the pool's ready queue. A pool thread then drains the mailbox in batches
//! and hands each event to the session's handlers and streams. So handlers run off the room
//! actors and the shards, each session's events are handled one batch at a time in order, and an
//! idle member costs a few dozen bytes here instead of a task.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::mailbox::{Drain, Notifier, Pushed};
use crate::session::Session;

/// How many batches a thread drains from one session before it lets others go first.
const BATCHES_PER_TURN: usize = 4;

/// How often the pool's monitor looks for threads held up by one session's handler.
const MONITOR_EVERY: Duration = Duration::from_millis(2);

/// How long one session may hold a thread before the monitor adds a thread in its place.
const STUCK_AFTER: Duration = Duration::from_millis(10);

/// What the pool's threads take off the ready queue.
enum Ready {
    Session(Arc<SessionWaker>),
    Many(Arc<Chunk>),
    Stop,
}

/// How many sessions one queue entry carries at most: large enough that a shard hands a
/// broadcast's wake-ups over in a few operations, small enough that every pool thread gets a
/// share of a big room.
const CHUNK: usize = 256;

/// Sessions handed over together. Threads take them one at a time through a shared cursor, so
/// that a chunk whose thread is held up by one slow handler can be finished by another thread:
/// one blocked handler never holds up the other sessions of its chunk.
struct Chunk {
    tasks: Box<[Arc<SessionWaker>]>,
    next: AtomicUsize,
    /// Set once the chunk was put back on the queue for a second thread to share.
    shared: AtomicBool,
}

impl Chunk {
    fn take(&self) -> Option<&Arc<SessionWaker>> {
        self.tasks.get(self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn is_done(&self) -> bool {
        self.next.load(Ordering::Relaxed) >= self.tasks.len()
    }
}

/// A session waiting for the pool. It holds only a weak reference (the session holds it through
/// its mailbox, so a strong one would be a cycle) and finds the pool through the session.
pub(crate) struct SessionWaker {
    session: Weak<Session>,
}

impl SessionWaker {
    /// Puts the session on the ready queue.
    pub(crate) fn schedule(self: Arc<Self>) {
        if let Some(session) = self.session.upgrade() {
            let _ = session.pool().ready.send(Ready::Session(self));
        }
    }
}

/// Sessions collected by a shard while it delivers, handed to the pool together.
#[derive(Default)]
pub(crate) struct WakeBatch {
    sessions: Vec<Arc<SessionWaker>>,
}

impl WakeBatch {
    /// Takes what a push did: counts what it dropped and collects (or wakes) its consumer.
    pub(crate) fn add(&mut self, pushed: Pushed, pool: &DispatchPool) {
        pool.count_overflow(pushed.dropped);
        match pushed.notifier {
            Some(Notifier::Session(s)) => {
                self.sessions.push(s);
                if self.sessions.len() >= CHUNK {
                    self.flush(pool);
                }
            }
            Some(task) => task.notify(),
            None => {}
        }
    }

    pub(crate) fn flush(&mut self, pool: &DispatchPool) {
        match self.sessions.len() {
            0 => {}
            1 => {
                if let Some(s) = self.sessions.pop() {
                    let _ = pool.ready.send(Ready::Session(s));
                }
            }
            _ => {
                let chunk = Chunk {
                    tasks: std::mem::take(&mut self.sessions).into_boxed_slice(),
                    next: AtomicUsize::new(0),
                    shared: AtomicBool::new(false),
                };
                let _ = pool.ready.send(Ready::Many(Arc::new(chunk)));
            }
        }
    }
}

/// What the monitor sees of one pool thread.
#[derive(Default)]
struct Slot {
    /// Counts the sessions this thread has started serving; unchanged across two looks while
    /// busy means one session held it all along.
    serving: AtomicU64,
    busy: AtomicBool,
    /// Set by the monitor when it replaced this thread; the thread retires after its session
    /// if the pool has enough threads without it.
    replaced: AtomicBool,
    /// The chunk this thread is working through, for a replacement to finish.
    chunk: Mutex<Option<Arc<Chunk>>>,
}

struct Threads {
    /// Threads running now (held-up ones included), with their slots.
    slots: Vec<Arc<Slot>>,
    /// Threads not held up by a slow handler.
    healthy: usize,
    stopping: bool,
    next_name: usize,
}

/// The dispatch pool. It keeps `base` threads free to dispatch: a thread that one session's
/// handler holds for longer than [`STUCK_AFTER`] is replaced by a new thread (up to `max` in
/// all), which also finishes the held-up thread's chunk; the held-up thread retires when its
/// handler returns.
pub(crate) struct DispatchPool {
    ready: Sender<Ready>,
    rx: Receiver<Ready>,
    base: usize,
    max: usize,
    threads: Mutex<Threads>,
    /// Signalled whenever a thread ends.
    ended: Condvar,
    /// Deliveries this engine dropped because a consumer's queue was full.
    overflowed: AtomicU64,
    me: Weak<DispatchPool>,
}

impl DispatchPool {
    pub(crate) fn start(threads: usize) -> std::io::Result<Arc<DispatchPool>> {
        let base = threads.max(1);
        let (ready, rx) = crossbeam_channel::unbounded();
        let pool = Arc::new_cyclic(|me| DispatchPool {
            ready,
            rx,
            base,
            max: (base * 8).max(16),
            threads: Mutex::new(Threads {
                slots: Vec::new(),
                healthy: 0,
                stopping: false,
                next_name: 0,
            }),
            ended: Condvar::new(),
            overflowed: AtomicU64::new(0),
            me: me.clone(),
        });
        for _ in 0..base {
            pool.spawn_worker(&mut pool.threads.lock())?;
        }
        let weak = Arc::downgrade(&pool);
        std::thread::Builder::new()
            .name("roomcast-dispatch-monitor".into())
            .spawn(move || monitor(weak))?;
        Ok(pool)
    }

    fn spawn_worker(&self, threads: &mut Threads) -> std::io::Result<()> {
        let slot = Arc::new(Slot::default());
        let name = format!("roomcast-dispatch-{}", threads.next_name);
        let pool = self.me.clone();
        let rx = self.rx.clone();
        let worker_slot = slot.clone();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || run(rx, worker_slot, pool))?;
        threads.next_name += 1;
        threads.slots.push(slot);
        threads.healthy += 1;
        Ok(())
    }

    /// Counts deliveries dropped because a consumer's queue was full.
    pub(crate) fn count_overflow(&self, dropped: u64) {
        if dropped > 0 {
            self.overflowed.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Deliveries this engine dropped because a consumer's queue was full.
    pub(crate) fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// Starts dispatching for `session`: it is drained once now, and again whenever its mailbox
    /// has something.
    pub(crate) fn attach(&self, session: &Arc<Session>) {
        let waker = Arc::new(SessionWaker {
            session: Arc::downgrade(session),
        });
        let _ = self.ready.send(Ready::Session(waker));
    }

    /// Stops the threads after the sessions already queued (every mailbox must be closed first,
    /// so that no session is queued again), waiting at most `wait` for threads still running a
    /// handler: those finish their handler and end on their own, calling no other.
    pub(crate) fn stop(&self, wait: Duration, caller: Option<SlotRef>) {
        let deadline = Instant::now() + wait;
        let mut threads = self.threads.lock();
        if !threads.stopping {
            threads.stopping = true;
            for _ in 0..threads.slots.len() {
                let _ = self.ready.send(Ready::Stop);
            }
        }
        let mine = caller
            .map(|c| c.0)
            .or_else(|| CURRENT_SLOT.with(|c| c.borrow().clone()));
        let others = |t: &Threads| {
            t.slots
                .iter()
                .filter(|s| mine.as_ref().is_none_or(|m| !Arc::ptr_eq(m, s)))
                .count()
        };
        while others(&threads) > 0 {
            if self.ended.wait_until(&mut threads, deadline).timed_out() {
                break;
            }
        }
    }

    /// Called by a thread as it ends.
    fn ended(&self, slot: &Arc<Slot>) {
        let mut threads = self.threads.lock();
        threads.slots.retain(|s| !Arc::ptr_eq(s, slot));
        if !slot.replaced.load(Ordering::SeqCst) {
            threads.healthy = threads.healthy.saturating_sub(1);
        }
        self.ended.notify_all();
    }

    /// A thread that was replaced finished its handler: it retires if the pool has its `base`
    /// healthy threads without it (true), or becomes a healthy thread again (false).
    fn may_retire(&self, slot: &Slot) -> bool {
        let mut threads = self.threads.lock();
        if threads.healthy >= self.base || threads.stopping {
            true
        } else {
            slot.replaced.store(false, Ordering::SeqCst);
            threads.healthy += 1;
            false
        }
    }
}

/// The pool thread a call came from (see [`current_slot`]).
pub(crate) struct SlotRef(Arc<Slot>);

/// The pool thread this thread is, if it is one: a handler calling `shutdown` must not be
/// waited for by it.
pub(crate) fn current_slot() -> Option<SlotRef> {
    CURRENT_SLOT.with(|c| c.borrow().clone()).map(SlotRef)
}

thread_local! {
    /// The slot of the pool thread running on this thread, if any.
    static CURRENT_SLOT: std::cell::RefCell<Option<Arc<Slot>>> = const { std::cell::RefCell::new(None) };
}

/// Looks for threads that one session has held for longer than [`STUCK_AFTER`] and adds a
/// thread for each, handing it the held-up thread's chunk. Ends with the pool.
fn monitor(pool: Weak<DispatchPool>) {
    let mut seen: Vec<(Weak<Slot>, u64, Instant)> = Vec::new();
    loop {
        std::thread::sleep(MONITOR_EVERY);
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let mut threads = pool.threads.lock();
        if threads.stopping {
            return;
        }
        let now = Instant::now();
        let mut stuck = Vec::new();
        let mut next_seen = Vec::with_capacity(threads.slots.len());
        for slot in &threads.slots {
            let serving = slot.serving.load(Ordering::SeqCst);
            let since = seen
                .iter()
                .find(|(s, n, _)| *n == serving && s.as_ptr() == Arc::as_ptr(slot))
                .map_or(now, |(_, _, since)| *since);
            let busy = slot.busy.load(Ordering::SeqCst);
            if busy
                && now.duration_since(since) >= STUCK_AFTER
                && !slot.replaced.load(Ordering::SeqCst)
            {
                stuck.push(slot.clone());
            }
            next_seen.push((Arc::downgrade(slot), serving, since));
        }
        seen = next_seen;
        for slot in stuck {
            if threads.slots.len() >= pool.max {
                break;
            }
            slot.replaced.store(true, Ordering::SeqCst);
            threads.healthy = threads.healthy.saturating_sub(1);
            tracing::warn!(
                "an event handler has run for over {STUCK_AFTER:?}; adding a dispatch thread"
            );
            if pool.spawn_worker(&mut threads).is_err() {
                break;
            }
            if let Some(chunk) = slot.chunk.lock().clone() {
                if !chunk.is_done() {
                    let _ = pool.ready.send(Ready::Many(chunk));
                }
            }
        }
    }
}

struct Worker {
    batch: VecDeque<crate::ClientEvent>,
    messages: Vec<roomcast_model::ChatMessage>,
    slot: Arc<Slot>,
}

impl Worker {
    fn serve(&mut self, task: &Arc<SessionWaker>) {
        let Some(session) = task.session.upgrade() else {
            return;
        };
        self.slot.serving.fetch_add(1, Ordering::SeqCst);
        self.slot.busy.store(true, Ordering::SeqCst);
        for turn in 0.. {
            if turn == BATCHES_PER_TURN {
                // Others have waited long enough: go to the back of the queue.
                task.clone().schedule();
                break;
            }
            match session.mailbox().drain(task, &mut self.batch) {
                Drain::Items(missed) => {
                    session.dispatch(missed, &mut self.batch, &mut self.messages)
                }
                Drain::Closed => {
                    session.close_streams();
                    break;
                }
                Drain::Empty => break,
            }
        }
        self.slot.busy.store(false, Ordering::SeqCst);
    }

    /// After a session: false if this thread was replaced meanwhile and retires.
    fn carry_on(&self, pool: &Weak<DispatchPool>) -> bool {
        if !self.slot.replaced.load(Ordering::SeqCst) {
            return true;
        }
        pool.upgrade().is_some_and(|p| !p.may_retire(&self.slot))
    }
}

fn run(rx: Receiver<Ready>, slot: Arc<Slot>, pool: Weak<DispatchPool>) {
    CURRENT_SLOT.with(|c| *c.borrow_mut() = Some(slot.clone()));
    let mut worker = Worker {
        batch: VecDeque::new(),
        messages: Vec::new(),
        slot: slot.clone(),
    };
    'outer: while let Ok(ready) = rx.recv() {
        match ready {
            Ready::Session(task) => {
                worker.serve(&task);
                if !worker.carry_on(&pool) {
                    break;
                }
            }
            Ready::Many(chunk) => {
                // Put the chunk back once for a second thread to share: if a handler holds this
                // thread, the rest of the chunk goes on without waiting for the monitor.
                if !chunk.shared.swap(true, Ordering::Relaxed) && chunk.tasks.len() > 1 {
                    if let Some(pool) = pool.upgrade() {
                        let _ = pool.ready.send(Ready::Many(chunk.clone()));
                    }
                }
                *slot.chunk.lock() = Some(chunk.clone());
                while let Some(task) = chunk.take() {
                    worker.serve(task);
                    if !worker.carry_on(&pool) {
                        *slot.chunk.lock() = None;
                        break 'outer;
                    }
                }
                *slot.chunk.lock() = None;
            }
            Ready::Stop => break,
        }
    }
    if let Some(pool) = pool.upgrade() {
        pool.ended(&slot);
    }
}
