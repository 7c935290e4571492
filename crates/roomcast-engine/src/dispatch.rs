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
use std::task::{Context, Poll, Wake, Waker};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::session::Session;

/// How many batches a thread drains from one session before it lets others go first.
const BATCHES_PER_TURN: usize = 4;

/// What the pool's threads take off the ready queue.
enum Ready {
    Session(Arc<SessionWaker>),
    Stop,
}

/// What a session's mailbox wakes: puts the session on the ready queue. It holds only a weak
/// reference (the session holds the waker through its mailbox, so a strong one would be a
/// cycle), and finds the queue through the session.
pub(crate) struct SessionWaker {
    session: Weak<Session>,
}

impl Wake for SessionWaker {
    fn wake(self: Arc<Self>) {
        if let Some(session) = self.session.upgrade() {
            let _ = session.pool().ready.send(Ready::Session(self));
        }
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(session) = self.session.upgrade() {
            let _ = session.pool().ready.send(Ready::Session(self.clone()));
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

    /// Starts dispatching for `session`: it is polled once now, and again whenever its mailbox
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

fn run(rx: Receiver<Ready>) {
    let mut batch = VecDeque::new();
    let mut scratch = Vec::new();
    while let Ok(ready) = rx.recv() {
        let task = match ready {
            Ready::Session(task) => task,
            Ready::Stop => return,
        };
        let Some(session) = task.session.upgrade() else {
            continue;
        };
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        for turn in 0.. {
            if turn == BATCHES_PER_TURN {
                // Others have waited long enough: go to the back of the queue.
                waker.wake_by_ref();
                break;
            }
            match session.mailbox().poll_drain(&mut cx, &mut batch) {
                Poll::Ready(Some(missed)) => session.dispatch(missed, &mut batch, &mut scratch),
                Poll::Ready(None) => {
                    session.close_streams();
                    break;
                }
                Poll::Pending => break,
            }
        }
    }
}
