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

/// An engine on a temporary store under [`report_limits`] (on `clock` if given), with its super
/// admin `owner` logged in.
pub async fn report_engine(clock: Option<roomcast::ManualClock>) -> (Engine, ChatClient) {
    let mut builder = Engine::builder().limits(report_limits());
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    // unwrap: a report that cannot set up has nothing to measure.
    let engine = builder.build().await.unwrap();
    engine.add_super_admin("owner").await.unwrap();
    let owner = engine.login("owner").await.unwrap();
    (engine, owner)
}

/// Rooms named `room {n}` for each `n` of `names`, created by `owner`, who then leaves each:
/// rooms with nobody in them.
pub async fn empty_rooms(owner: &ChatClient, names: std::ops::Range<usize>) -> Vec<RoomId> {
    let manager = owner.chat_room_manager();
    let mut ids = Vec::with_capacity(names.len());
    for n in names {
        let room = manager
            .create_chat_room(CreateChatRoomOptions::new(format!("room {n}")))
            .await
            .unwrap()
            .room_id;
        manager.leave_chat_room(&room).await.unwrap();
        ids.push(room);
    }
    ids
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
        let (engine, owner) = report_engine(None).await;
        // The owner stays in each room: it hears every join and leave.
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

/// A handler that counts what it gets, in a counter of its own (no shared hot spot).
#[derive(Debug, Default)]
pub struct Counter {
    /// Messages received.
    pub messages: AtomicU64,
    /// Members who joined (room events).
    pub joins: AtomicU64,
    /// Events missed (queue overflow).
    pub missed: AtomicU64,
}

/// A `ChatEventHandler` / `ChatRoomEventHandler` over a shared [`Counter`].
#[derive(Debug, Clone, Default)]
pub struct Counting(pub Arc<Counter>);

impl roomcast::ChatEventHandler for Counting {
    fn on_messages_received(&self, messages: &[roomcast::ChatMessage]) {
        self.0
            .messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
    }

    fn on_events_missed(&self, count: u64) {
        self.0.missed.fetch_add(count, Ordering::Relaxed);
    }
}

impl roomcast::ChatRoomEventHandler for Counting {
    fn on_member_joined_from_chat_room(&self, _: &RoomId, _: &roomcast::UserId) {
        self.0.joins.fetch_add(1, Ordering::Relaxed);
    }

    fn on_events_missed(&self, count: u64) {
        self.0.missed.fetch_add(count, Ordering::Relaxed);
    }
}

/// Polls `done` until it holds or `limit` passes; true if it held.
pub async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    true
}

/// The join storm: `members` users, logged in beforehand, join one room at once, each from a
/// task of its own. Returns the time until every join was acknowledged and the time until the
/// owner's handler had heard every join.
pub async fn roomcast_storm(members: usize) -> (Duration, Duration) {
    let engine = Engine::builder()
        .limits(report_limits())
        .event_queue_capacity(members.max(4_096))
        .build()
        .await
        .unwrap();
    engine.add_super_admin("owner").await.unwrap();
    let owner = engine.login("owner").await.unwrap();
    let heard = Counting::default();
    owner
        .chat_room_manager()
        .add_event_handler("count", heard.clone());
    let room = owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("storm").with_max_users(members as u32 + 1))
        .await
        .unwrap()
        .room_id;
    let mut clients = Vec::with_capacity(members);
    for n in 0..members {
        clients.push(engine.login(format!("viewer{n}")).await.unwrap());
    }
    let start = Instant::now();
    let joins: Vec<_> = clients
        .iter()
        .map(|c| {
            let rooms = c.chat_room_manager();
            tokio::spawn(async move { rooms.join_chat_room(&room).await.map(drop) })
        })
        .collect();
    for j in joins {
        j.await.unwrap().unwrap();
    }
    let acked = start.elapsed();
    let all = wait_for(Duration::from_secs(60), || {
        heard.0.joins.load(Ordering::Relaxed) + heard.0.missed.load(Ordering::Relaxed)
            >= members as u64
    })
    .await;
    assert!(all, "the owner heard every join");
    let heard_all = start.elapsed();
    engine.shutdown().await;
    (acked, heard_all)
}

/// The tokio join storm: one room task; `members` tasks join over a channel with a oneshot
/// reply; the room tells the owner's task of each join over another channel.
pub async fn tokio_storm(members: usize) -> (Duration, Duration) {
    let (tx, mut rx) = mpsc::channel::<(u64, oneshot::Sender<bool>)>(4_096);
    let (owner_tx, mut owner_rx) = mpsc::unbounded_channel::<u64>();
    tokio::spawn(async move {
        let mut members = HashSet::new();
        while let Some((u, reply)) = rx.recv().await {
            let new = members.insert(u);
            let _ = owner_tx.send(u);
            let _ = reply.send(new);
        }
    });
    let heard = Arc::new(AtomicU64::new(0));
    let h = heard.clone();
    tokio::spawn(async move {
        while owner_rx.recv().await.is_some() {
            h.fetch_add(1, Ordering::Relaxed);
        }
    });
    let start = Instant::now();
    let joins: Vec<_> = (0..members as u64)
        .map(|u| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (reply, answer) = oneshot::channel();
                tx.send((u, reply)).await.unwrap();
                assert!(answer.await.unwrap());
            })
        })
        .collect();
    for j in joins {
        j.await.unwrap();
    }
    let acked = start.elapsed();
    wait_for(Duration::from_secs(60), || {
        heard.load(Ordering::Relaxed) >= members as u64
    })
    .await;
    (acked, start.elapsed())
}

/// Many small rooms: `rooms` rooms of `members` members each (every member with a counting
/// handler), and `publishers` publishers in every room.
#[derive(Debug)]
pub struct SmallRooms {
    /// The engine.
    pub engine: Engine,
    rooms: Arc<Vec<RoomId>>,
    publishers: Arc<Vec<ChatClient>>,
    counters: Vec<Arc<Counter>>,
    _members: Vec<ChatClient>,
}

impl SmallRooms {
    /// Sets the rooms up.
    pub async fn new(rooms: usize, members: usize, publishers: usize) -> SmallRooms {
        let engine = Engine::builder()
            .limits(report_limits().with_join_replay_count(0))
            .build()
            .await
            .unwrap();
        engine.add_super_admin("owner").await.unwrap();
        let owner = engine.login("owner").await.unwrap();
        let mut pubs = Vec::with_capacity(publishers);
        for p in 0..publishers {
            pubs.push(engine.login(format!("publisher{p}")).await.unwrap());
        }
        let mut ids = Vec::with_capacity(rooms);
        let mut counters = Vec::with_capacity(rooms * members);
        let mut clients = Vec::with_capacity(rooms * members);
        for r in 0..rooms {
            let room = owner
                .chat_room_manager()
                .create_chat_room(
                    CreateChatRoomOptions::new(format!("small {r}"))
                        .with_max_users((members + publishers + 1) as u32),
                )
                .await
                .unwrap()
                .room_id;
            // The owner leaves: each room's audience is its members.
            owner
                .chat_room_manager()
                .leave_chat_room(&room)
                .await
                .unwrap();
            for p in &pubs {
                p.chat_room_manager().join_chat_room(&room).await.unwrap();
            }
            for m in 0..members {
                let c = engine.login(format!("r{r}m{m}")).await.unwrap();
                let counter = Counting::default();
                c.chat_manager().add_event_handler("count", counter.clone());
                c.chat_room_manager().join_chat_room(&room).await.unwrap();
                counters.push(counter.0);
                clients.push(c);
            }
            ids.push(room);
        }
        SmallRooms {
            engine,
            rooms: Arc::new(ids),
            publishers: Arc::new(pubs),
            counters,
            _members: clients,
        }
    }

    fn delivered(&self) -> u64 {
        self.counters
            .iter()
            .map(|c| c.messages.load(Ordering::Relaxed))
            .sum()
    }

    /// Publishes for `span` (each publisher awaiting each send, or keeping up to 256 in flight
    /// if `fire_and_forget`); returns deliveries per second, counted until every accepted
    /// message was delivered.
    pub async fn run(&self, span: Duration, fire_and_forget: bool) -> f64 {
        let members = (self.counters.len() / self.rooms.len()) as u64;
        let before = self.delivered();
        let sent = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..self.publishers.len())
            .map(|p| {
                let (rooms, pubs, sent) =
                    (self.rooms.clone(), self.publishers.clone(), sent.clone());
                tokio::spawn(async move {
                    let chat = pubs[p].chat_manager();
                    let mut in_flight = tokio::task::JoinSet::new();
                    let mut i = 0u64;
                    while start.elapsed() < span {
                        let room = rooms[room_of(p, i, rooms.len())];
                        i += 1;
                        if fire_and_forget {
                            let chat = chat.clone();
                            in_flight.spawn(async move {
                                chat.send_message(roomcast::OutgoingMessage::text(room, "hi"))
                                    .await
                            });
                            if in_flight.len() >= 256 {
                                let r = in_flight.join_next().await.unwrap().unwrap();
                                sent.fetch_add(u64::from(r.is_ok()), Ordering::Relaxed);
                            }
                        } else {
                            let r = chat
                                .send_message(roomcast::OutgoingMessage::text(room, "hi"))
                                .await;
                            sent.fetch_add(u64::from(r.is_ok()), Ordering::Relaxed);
                        }
                    }
                    while let Some(r) = in_flight.join_next().await {
                        sent.fetch_add(u64::from(r.unwrap().is_ok()), Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let expected = sent.load(Ordering::Relaxed) * members;
        wait_for(Duration::from_secs(60), || {
            self.delivered() - before >= expected
        })
        .await;
        (self.delivered() - before) as f64 / start.elapsed().as_secs_f64()
    }
}

/// The tokio-broadcast side of many small rooms: one channel per room, one receiver task per
/// member, `publishers` tasks sending to rooms in turn.
pub async fn tokio_small_rooms(
    rooms: usize,
    members: usize,
    publishers: usize,
    span: Duration,
) -> f64 {
    let counters: Vec<Arc<AtomicU64>> = (0..rooms * members)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let mut senders = Vec::with_capacity(rooms);
    for r in 0..rooms {
        let (tx, _) = tokio::sync::broadcast::channel::<Arc<String>>(1_024);
        for m in 0..members {
            let mut rx = tx.subscribe();
            let c = counters[r * members + m].clone();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(_) => {
                            c.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => break,
                    }
                }
            });
        }
        senders.push(tx);
    }
    let senders = Arc::new(senders);
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|p| {
            let (senders, sent) = (senders.clone(), sent.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while start.elapsed() < span {
                    let tx = &senders[room_of(p, i, senders.len())];
                    i += 1;
                    let _ = tx.send(Arc::new("hi".to_string()));
                    sent.fetch_add(1, Ordering::Relaxed);
                    if i % 64 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let expected = sent.load(Ordering::Relaxed) * members as u64;
    let total = || {
        counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    wait_for(Duration::from_secs(30), || total() >= expected).await;
    let rate = total() as f64 / start.elapsed().as_secs_f64();
    drop(senders);
    rate
}

/// `send_message` round trips on an idle room (`members` members with handlers), awaited one
/// after another: latencies in µs.
pub async fn send_latencies(
    engine: &Engine,
    sender: &ChatClient,
    room: RoomId,
    samples: usize,
) -> crate::Percentiles {
    let _ = engine;
    let chat = sender.chat_manager();
    let mut us = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        chat.send_message(roomcast::OutgoingMessage::text(room, "ping"))
            .await
            .unwrap();
        us.push(t.elapsed().as_micros() as u64);
    }
    crate::Percentiles::of(&mut us)
}
