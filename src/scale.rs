//! Workloads of the scale report (`examples/scale_report.rs`) and their baselines: how the same
//! work is commonly written without roomcast (a tokio task per room, an actix actor per room).
//!
//! Each workload runs from the caller's tokio runtime, as a user's service would call the
//! engine, and counts only acknowledged operations.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use roomcast::{ChatClient, CreateChatRoomOptions, Engine, Limits, RoomId};
use tokio::sync::{mpsc, oneshot};

/// The limits the scale report turns off, so that it measures the engine and not its limiters:
/// calls per user per second, the per-room delivery threshold, the per-member message window.
pub fn report_limits() -> Limits {
    Limits::default()
        .with_api_calls_per_user_per_second(None)
        .with_room_delivery_rate(None)
        .with_user_messages_per_window(None)
        .with_max_rooms(10_000_000)
        .with_max_users_cap(1_000_000)
}

/// Runs `tasks` copies of `op` (given the task's index and its iteration) for `for_how_long`,
/// and returns the operations completed per second (`op` returns how many it completed).
pub async fn run_tasks<F, Fut>(tasks: usize, for_how_long: Duration, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let n = op(t, i).await;
                    done.fetch_add(n, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(for_how_long).await;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        // unwrap: a panicking workload is a failed measurement.
        h.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Which room task `t` uses on iteration `i`: spread over all rooms, different per task.
pub fn room_of(t: usize, i: u64, rooms: usize) -> usize {
    ((t as u64).wrapping_mul(7_919) + i.wrapping_mul(104_729)) as usize % rooms
}

/// roomcast's side of the join workload: `rooms` rooms and one client per task.
#[derive(Debug, Clone)]
pub struct RoomcastJoins {
    /// The engine.
    pub engine: Engine,
    /// The rooms.
    pub rooms: Arc<Vec<RoomId>>,
    /// One client per task.
    pub clients: Arc<Vec<ChatClient>>,
}

impl RoomcastJoins {
    /// An engine (temporary store, [`report_limits`]) with `rooms` rooms and `tasks` clients.
    pub async fn new(rooms: usize, tasks: usize) -> RoomcastJoins {
        // unwrap: a report that cannot set up has nothing to measure.
        let engine = Engine::builder()
            .limits(report_limits())
            .build()
            .await
            .unwrap();
        engine.add_super_admin("owner").await.unwrap();
        let owner = engine.login("owner").await.unwrap();
        let mut ids = Vec::with_capacity(rooms);
        for n in 0..rooms {
            let room = owner
                .chat_room_manager()
                .create_chat_room(CreateChatRoomOptions::new(format!("room {n}")))
                .await
                .unwrap();
            ids.push(room.room_id);
        }
        let mut clients = Vec::with_capacity(tasks);
        for t in 0..tasks {
            clients.push(engine.login(format!("joiner{t}")).await.unwrap());
        }
        RoomcastJoins {
            engine,
            rooms: Arc::new(ids),
            clients: Arc::new(clients),
        }
    }

    /// Join and leave one room: 2 acknowledged operations.
    pub async fn join_leave(&self, t: usize, i: u64) -> u64 {
        let room = self.rooms[room_of(t, i, self.rooms.len())];
        let rooms = self.clients[t].chat_room_manager();
        // unwrap: every call is valid; a failure is a failed measurement.
        rooms.join_chat_room(&room).await.unwrap();
        rooms.leave_chat_room(&room).await.unwrap();
        2
    }
}

enum RoomOp {
    Join(u64, oneshot::Sender<bool>),
    Leave(u64, oneshot::Sender<bool>),
}

/// The tokio pattern: one task per room owning its member set, called over a channel with a
/// oneshot reply.
#[derive(Debug, Clone)]
pub struct TokioRoomTasks {
    rooms: Arc<Vec<mpsc::Sender<RoomOpBox>>>,
}

/// A boxed room operation (keeps the enum private).
pub struct RoomOpBox(RoomOp);

impl std::fmt::Debug for RoomOpBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomOpBox")
    }
}

impl TokioRoomTasks {
    /// `rooms` room tasks on the current runtime.
    pub fn new(rooms: usize) -> TokioRoomTasks {
        let senders = (0..rooms)
            .map(|_| {
                let (tx, mut rx) = mpsc::channel::<RoomOpBox>(1024);
                tokio::spawn(async move {
                    let mut members = HashSet::new();
                    while let Some(RoomOpBox(op)) = rx.recv().await {
                        match op {
                            RoomOp::Join(u, reply) => {
                                let _ = reply.send(members.insert(u));
                            }
                            RoomOp::Leave(u, reply) => {
                                let _ = reply.send(members.remove(&u));
                            }
                        }
                    }
                });
                tx
            })
            .collect();
        TokioRoomTasks {
            rooms: Arc::new(senders),
        }
    }

    /// Join and leave one room: 2 acknowledged operations.
    pub async fn join_leave(&self, t: usize, i: u64) -> u64 {
        let room = &self.rooms[room_of(t, i, self.rooms.len())];
        let (tx, rx) = oneshot::channel();
        room.send(RoomOpBox(RoomOp::Join(t as u64, tx)))
            .await
            .unwrap();
        assert!(rx.await.unwrap());
        let (tx, rx) = oneshot::channel();
        room.send(RoomOpBox(RoomOp::Leave(t as u64, tx)))
            .await
            .unwrap();
        assert!(rx.await.unwrap());
        2
    }
}

mod actix_rooms {
    use std::collections::HashSet;

    use actix::prelude::*;

    pub struct RoomActor {
        pub members: HashSet<u64>,
    }

    impl Actor for RoomActor {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "bool")]
    pub struct Join(pub u64);

    #[derive(Message)]
    #[rtype(result = "bool")]
    pub struct Leave(pub u64);

    impl Handler<Join> for RoomActor {
        type Result = bool;
        fn handle(&mut self, msg: Join, _: &mut Context<Self>) -> bool {
            self.members.insert(msg.0)
        }
    }

    impl Handler<Leave> for RoomActor {
        type Result = bool;
        fn handle(&mut self, msg: Leave, _: &mut Context<Self>) -> bool {
            self.members.remove(&msg.0)
        }
    }
}

/// The actix pattern (the actix `ChatServer` example's shape, one actor per room): room actors on
/// an actix System thread, called with `Addr::send` from the caller's runtime.
pub struct ActixRoomActors {
    rooms: Arc<Vec<actix::Addr<actix_rooms::RoomActor>>>,
    system: Option<(actix::System, std::thread::JoinHandle<()>)>,
}

impl std::fmt::Debug for ActixRoomActors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActixRoomActors").finish_non_exhaustive()
    }
}

impl Clone for ActixRoomActors {
    fn clone(&self) -> Self {
        ActixRoomActors {
            rooms: self.rooms.clone(),
            system: None,
        }
    }
}

impl ActixRoomActors {
    /// `rooms` actors on a System thread of their own.
    pub fn new(rooms: usize) -> ActixRoomActors {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix::System::new();
            system.block_on(async {
                let addrs: Vec<_> = (0..rooms)
                    .map(|_| {
                        actix::Actor::start(actix_rooms::RoomActor {
                            members: HashSet::new(),
                        })
                    })
                    .collect();
                tx.send((addrs, actix::System::current())).unwrap();
            });
            system.run().unwrap();
        });
        let (addrs, system) = rx.recv().unwrap();
        ActixRoomActors {
            rooms: Arc::new(addrs),
            system: Some((system, thread)),
        }
    }

    /// Join and leave one room: 2 acknowledged operations.
    pub async fn join_leave(&self, t: usize, i: u64) -> u64 {
        let room = &self.rooms[room_of(t, i, self.rooms.len())];
        assert!(room.send(actix_rooms::Join(t as u64)).await.unwrap());
        assert!(room.send(actix_rooms::Leave(t as u64)).await.unwrap());
        2
    }

    /// Stops the System.
    pub fn stop(mut self) {
        if let Some((system, thread)) = self.system.take() {
            system.stop();
            let _ = thread.join();
        }
    }
}
