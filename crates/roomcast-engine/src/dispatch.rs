//! The dispatch pool: the threads that run handlers and feed event streams.
//!
//! A session's mailbox is drained by whichever pool thread picks the session up. A session with
//! nothing queued costs no task and no thread: its mailbox holds a waker that, on the next push,
//! puts the session on the pool's ready queue. A pool thread then drains the mailbox in batches
//! and hands each event to the session's handlers and streams. So handlers run off the room
//! actors and the shards, each session's events are handled one batch at a time in order, and an
//! idle member costs a few dozen bytes here instead of a task.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::mailbox::{Drain, Notifier};
use crate::session::Session;

/// How many batches a thread drains from one session before it lets others go first.
const BATCHES_PER_TURN: usize = 4;

/// What the pool's threads take off the ready queue.
enum Ready {
    Session(Arc<SessionWaker>),
    Many(Vec<Arc<SessionWaker>>),
    Stop,
}

/// How many sessions one queue entry carries at most: large enough that a shard hands a
/// broadcast's wake-ups over in a few operations, small enough that every pool thread gets a
/// share of a big room.
const CHUNK: usize = 256;

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
    pub(crate) fn add(&mut self, notifier: Option<Notifier>, pool: &DispatchPool) {
        match notifier {
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
                let _ = pool
                    .ready
                    .send(Ready::Many(std::mem::take(&mut self.sessions)));
            }
        }
    }
}

pub(crate) struct DispatchPool {
    ready: Sender<Ready>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl DispatchPool {
    pub(crate) fn start(threads: usize) -> std::io::Result<DispatchPool> {
        let (ready, rx) = crossbeam_channel::unbounded();
        let mut handles = Vec::with_capacity(threads.max(1));
        for n in 0..threads.max(1) {
            let rx: Receiver<Ready> = rx.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("roomcast-dispatch-{n}"))
                    .spawn(move || run(rx))?,
            );
        }
        Ok(DispatchPool {
            ready,
            threads: Mutex::new(handles),
        })
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
    /// so that no session is queued again).
    pub(crate) fn stop(&self) {
        let threads: Vec<_> = self.threads.lock().drain(..).collect();
        for _ in &threads {
            let _ = self.ready.send(Ready::Stop);
        }
        for t in threads {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

struct Worker {
    batch: VecDeque<crate::ClientEvent>,
    messages: Vec<roomcast_model::ChatMessage>,
}

impl Worker {
    fn serve(&mut self, task: Arc<SessionWaker>) {
        let Some(session) = task.session.upgrade() else {
            return;
        };
        for turn in 0.. {
            if turn == BATCHES_PER_TURN {
                // Others have waited long enough: go to the back of the queue.
                task.schedule();
                return;
            }
            match session.mailbox().drain(&task, &mut self.batch) {
                Drain::Items(missed) => {
                    session.dispatch(missed, &mut self.batch, &mut self.messages)
                }
                Drain::Closed => {
                    session.close_streams();
                    return;
                }
                Drain::Empty => return,
            }
        }
    }
}

fn run(rx: Receiver<Ready>) {
    let mut worker = Worker {
        batch: VecDeque::new(),
        messages: Vec::new(),
    };
    while let Ok(ready) = rx.recv() {
        match ready {
            Ready::Session(task) => worker.serve(task),
            Ready::Many(tasks) => {
                for task in tasks {
                    worker.serve(task);
                }
            }
            Ready::Stop => return,
        }
    }
}
