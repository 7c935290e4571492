//! The three baselines: how the same fan-out is commonly written without roomcast.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc};

use super::{Consumer, Contender, Msg, Probe};

fn callback_runtime() -> tokio::runtime::Runtime {
    // Sized like roomcast's callback runtime: one worker per core, at least two.
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        // unwrap: a benchmark that cannot start a runtime has nothing to measure.
        .unwrap()
}

/// Raw `tokio::sync::broadcast`: one channel, one receiver task per member.
pub struct TokioBroadcast {
    rt: tokio::runtime::Runtime,
    members: usize,
    capacity: usize,
    tx: Option<broadcast::Sender<Arc<Msg>>>,
}

impl std::fmt::Debug for TokioBroadcast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokioBroadcast").finish_non_exhaustive()
    }
}

impl TokioBroadcast {
    /// `members` receivers on a channel of `capacity`.
    pub fn new(members: usize, capacity: usize) -> Self {
        TokioBroadcast {
            rt: callback_runtime(),
            members,
            capacity,
            tx: None,
        }
    }
}

impl Contender for TokioBroadcast {
    fn name(&self) -> &'static str {
        "tokio broadcast"
    }

    fn prepare(&mut self, probe: &Arc<Probe>) {
        let (tx, _) = broadcast::channel::<Arc<Msg>>(self.capacity);
        for _ in 0..self.members {
            let mut rx = tx.subscribe();
            let consumer = Consumer::new(probe.clone());
            let target = probe.per_consumer;
            self.rt.spawn(async move {
                let mut seen = 0;
                while seen < target {
                    match rx.recv().await {
                        Ok(m) => {
                            consumer.received(m.index);
                            seen += 1;
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            consumer.lost(n);
                            seen += n;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
        }
        self.tx = Some(tx);
    }

    fn publish(&mut self, index: usize) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Arc::new(Msg {
                index,
                text: format!("message {index}"),
            }));
        }
    }
}

/// One tokio task and one bounded mpsc channel per member; the publisher loops over them.
pub struct MpscPerMember {
    rt: tokio::runtime::Runtime,
    members: usize,
    capacity: usize,
    txs: Vec<(mpsc::Sender<Arc<Msg>>, Arc<Consumer>)>,
}

impl std::fmt::Debug for MpscPerMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpscPerMember").finish_non_exhaustive()
    }
}

impl MpscPerMember {
    /// `members` tasks with channels of `capacity`.
    pub fn new(members: usize, capacity: usize) -> Self {
        MpscPerMember {
            rt: callback_runtime(),
            members,
            capacity,
            txs: Vec::new(),
        }
    }
}

impl Contender for MpscPerMember {
    fn name(&self) -> &'static str {
        "mpsc + task per member"
    }

    fn prepare(&mut self, probe: &Arc<Probe>) {
        self.txs.clear();
        for _ in 0..self.members {
            let (tx, mut rx) = mpsc::channel::<Arc<Msg>>(self.capacity);
            let consumer = Consumer::new(probe.clone());
            let task_consumer = consumer.clone();
            self.rt.spawn(async move {
                while let Some(m) = rx.recv().await {
                    task_consumer.received(m.index);
                }
            });
            self.txs.push((tx, consumer));
        }
    }

    fn publish(&mut self, index: usize) {
        let msg = Arc::new(Msg {
            index,
            text: format!("message {index}"),
        });
        for (tx, consumer) in &self.txs {
            if tx.try_send(msg.clone()).is_err() {
                consumer.lost(1);
            }
        }
    }
}

/// The actix websocket-chat pattern: a room actor with a `Recipient` per member actor, one
/// `do_send` per member per message.
pub struct ActixChatServer {
    members: usize,
    system: actix_rt::System,
    arbiters: Vec<actix_rt::ArbiterHandle>,
    room: Addr<ChatServer>,
}

impl std::fmt::Debug for ActixChatServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActixChatServer").finish_non_exhaustive()
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Deliver(Arc<Msg>);

#[derive(Message)]
#[rtype(result = "()")]
struct Publish(Arc<Msg>);

#[derive(Message)]
#[rtype(result = "()")]
struct SetMembers(Vec<Recipient<Deliver>>, std::sync::mpsc::Sender<()>);

struct Session(Arc<Consumer>);

impl Actor for Session {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Session {
    type Result = ();
    fn handle(&mut self, Deliver(m): Deliver, _: &mut Context<Self>) {
        self.0.received(m.index);
    }
}

struct ChatServer {
    members: Vec<Recipient<Deliver>>,
}

impl Actor for ChatServer {
    type Context = Context<Self>;
}

impl Handler<Publish> for ChatServer {
    type Result = ();
    fn handle(&mut self, Publish(m): Publish, _: &mut Context<Self>) {
        for member in &self.members {
            member.do_send(Deliver(m.clone()));
        }
    }
}

impl Handler<SetMembers> for ChatServer {
    type Result = ();
    fn handle(&mut self, SetMembers(members, done): SetMembers, _: &mut Context<Self>) {
        self.members = members;
        let _ = done.send(());
    }
}

impl ActixChatServer {
    /// A room actor on its own System, member actors spread over one arbiter per core.
    pub fn new(members: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runner = actix_rt::System::new();
            let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
            let (arbiters, room) = runner.block_on(async {
                let arbiters: Vec<actix_rt::Arbiter> =
                    (0..workers).map(|_| actix_rt::Arbiter::new()).collect();
                let room = ChatServer {
                    members: Vec::new(),
                }
                .start();
                (arbiters, room)
            });
            let handles = arbiters.iter().map(|a| a.handle()).collect::<Vec<_>>();
            let _ = tx.send((actix_rt::System::current(), handles, room));
            let _ = runner.run();
            for a in arbiters {
                a.stop();
                let _ = a.join();
            }
        });
        // unwrap: the thread above always sends before running.
        let (system, arbiters, room) = rx.recv().unwrap();
        ActixChatServer {
            members,
            system,
            arbiters,
            room,
        }
    }
}

impl Drop for ActixChatServer {
    fn drop(&mut self) {
        self.system.stop();
    }
}

impl Contender for ActixChatServer {
    fn name(&self) -> &'static str {
        "actix ChatServer (Recipient per member)"
    }

    fn prepare(&mut self, probe: &Arc<Probe>) {
        let recipients = (0..self.members)
            .map(|i| {
                let consumer = Consumer::new(probe.clone());
                let arbiter = &self.arbiters[i % self.arbiters.len()];
                Session::start_in_arbiter(arbiter, move |_| Session(consumer)).recipient()
            })
            .collect();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        self.room.do_send(SetMembers(recipients, done_tx));
        let _ = done_rx.recv();
    }

    fn publish(&mut self, index: usize) {
        self.room.do_send(Publish(Arc::new(Msg {
            index,
            text: format!("message {index}"),
        })));
    }
}
