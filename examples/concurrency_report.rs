//! Concurrency report: what one blocked handler costs the other members, and whether a join
//! storm loses any of the owner's events.
//!
//! 1. **Blocked handler.** A room of `--members` members (10,000), each with a message handler
//!    that records the time from the send to its handler. The owner sends paced messages (100
//!    per second for 3 s). Run twice in the same process: once with every handler quick, once
//!    with one member's handler blocking for 2 s on the first message. Prints the others'
//!    p50/p99/max for both runs side by side.
//! 2. **Join storm.** `--members` users join one room at once (one task each); the owner has only
//!    a `ChatRoomEventHandler`, at the default queue size. Prints the time until every join was
//!    acknowledged, the time until the owner's handler saw every join event, and how many it
//!    missed, over three storms.
//!
//! ```sh
//! cargo run --release --example concurrency_report
//! cargo run --release --example concurrency_report -- --members 2000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use roomcast::{
    ChatClient, ChatEventHandler, ChatMessage, ChatRoomEventHandler, CreateChatRoomOptions, Engine,
    Limits, OutgoingMessage, RoomId, UserId,
};
use roomcast_workspace::{harness_limits, Percentiles};

fn members_arg() -> usize {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match argv.as_slice() {
        [] => 10_000,
        [flag, n] if flag == "--members" => n.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: concurrency_report [--members N]");
    std::process::exit(2)
}

fn limits() -> Limits {
    let mut limits = harness_limits();
    limits.max_users_cap = 1_000_000;
    limits.max_rooms_per_user = 1_000_000;
    limits.join_replay_count = 0;
    limits
}

/// Records, for each message, how long after its send the handler got it.
struct Timing {
    started: Instant,
    /// Microseconds since `started` at which each message was sent, by sequence number.
    sent: Arc<Mutex<Vec<u64>>>,
    samples: Arc<Mutex<Vec<u64>>>,
    /// Blocks on the first message for this long, if set.
    block: Option<Duration>,
    blocked: AtomicU64,
}

impl ChatEventHandler for Timing {
    fn on_messages_received(&self, messages: &[ChatMessage]) {
        let now = self.started.elapsed().as_micros() as u64;
        {
            let sent = self.sent.lock();
            let mut samples = self.samples.lock();
            for m in messages {
                if let Some(at) = sent.get(m.seq() as usize) {
                    samples.push(now.saturating_sub(*at));
                }
            }
        }
        if let Some(d) = self.block {
            if self.blocked.fetch_add(1, Ordering::SeqCst) == 0 {
                // The misbehaving handler this report is about: it blocks its thread.
                std::thread::sleep(d);
            }
        }
    }
}

/// One paced run; returns the p50/p99/max of every member but the blocked one.
async fn paced_run(members: usize, block_one: bool) -> Percentiles {
    let engine = Engine::builder().limits(limits()).build().await.unwrap();
    engine.add_super_admin("owner").await.unwrap();
    let owner = engine.login("owner").await.unwrap();
    let room = owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("paced").with_max_users(1_000_000))
        .await
        .unwrap()
        .room_id;
    let started = Instant::now();
    let sent = Arc::new(Mutex::new(vec![0u64; 1]));
    let healthy = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::with_capacity(members);
    for i in 0..members {
        let c = engine.login(format!("m{i}")).await.unwrap();
        c.chat_room_manager().join_chat_room(&room).await.unwrap();
        let blocked = block_one && i == members / 2;
        c.chat_manager().add_event_handler(
            "timing",
            Timing {
                started,
                sent: sent.clone(),
                samples: if blocked {
                    Arc::new(Mutex::new(Vec::new()))
                } else {
                    healthy.clone()
                },
                block: blocked.then_some(Duration::from_secs(2)),
                blocked: AtomicU64::new(0),
            },
        );
        clients.push(c);
    }
    let messages = 300;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for n in 0..messages {
        tick.tick().await;
        sent.lock().push(started.elapsed().as_micros() as u64);
        let m = owner
            .chat_manager()
            .send_message(OutgoingMessage::text(room, format!("n{n}")))
            .await
            .unwrap();
        assert_eq!(m.seq(), n as u64 + 1);
    }
    let expected = messages * (members - usize::from(block_one));
    let deadline = Instant::now() + Duration::from_secs(30);
    while healthy.lock().len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut samples = std::mem::take(&mut *healthy.lock());
    let got = samples.len();
    engine.shutdown().await;
    if got < expected {
        eprintln!("warning: {got} of {expected} deliveries arrived");
    }
    Percentiles::of(&mut samples)
}

/// Counts join events.
#[derive(Default)]
struct Joins {
    joined: AtomicU64,
    missed: AtomicU64,
}

struct JoinCounter(Arc<Joins>);

impl ChatRoomEventHandler for JoinCounter {
    fn on_member_joined_from_chat_room(&self, _room_id: &RoomId, _participant: &UserId) {
        self.0.joined.fetch_add(1, Ordering::Relaxed);
    }

    fn on_events_missed(&self, count: u64) {
        self.0.missed.fetch_add(count, Ordering::Relaxed);
    }
}

/// One storm; returns (all acknowledged, owner saw all, joins seen, missed).
async fn storm(
    engine: &Engine,
    owner: &ChatClient,
    n: usize,
    round: usize,
) -> (Duration, Option<Duration>, u64, u64) {
    let counts = Arc::new(Joins::default());
    let rooms = owner.chat_room_manager();
    rooms.add_event_handler(format!("joins{round}"), JoinCounter(counts.clone()));
    let room = rooms
        .create_chat_room(
            CreateChatRoomOptions::new(format!("storm{round}")).with_max_users(1_000_000),
        )
        .await
        .unwrap()
        .room_id;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        clients.push(engine.login(format!("s{round}-{i}")).await.unwrap());
    }
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| {
            let rooms = c.chat_room_manager();
            tokio::spawn(async move { rooms.join_chat_room(&room).await.map(drop) })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let acked = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen_all = None;
    while Instant::now() < deadline {
        if counts.joined.load(Ordering::Relaxed) >= n as u64 {
            seen_all = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    rooms.remove_event_handler(&format!("joins{round}"));
    (
        acked,
        seen_all,
        counts.joined.load(Ordering::Relaxed),
        counts.missed.load(Ordering::Relaxed),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let members = members_arg();
    println!(
        "concurrency report: {members} members, temporary store, threshold and rate limits off"
    );
    println!();
    println!("1. paced 100 msgs/s for 3 s; publish-to-handler latency of the other members");
    let quick = paced_run(members, false).await;
    let blocked = paced_run(members, true).await;
    println!(
        "   {:<34} {:>9} {:>9} {:>9}",
        "", "p50 ms", "p99 ms", "max ms"
    );
    for (name, p) in [
        ("every handler quick", quick),
        ("one handler blocked 2 s", blocked),
    ] {
        println!(
            "   {:<34} {:>9.2} {:>9.2} {:>9.2}",
            name,
            p.p50 as f64 / 1e3,
            p.p99 as f64 / 1e3,
            p.max as f64 / 1e3
        );
    }
    println!();
    println!("2. join storms of {members} users into one room; the owner has only a room handler, default queue");
    let engine = Engine::builder().limits(limits()).build().await.unwrap();
    engine.add_super_admin("owner").await.unwrap();
    let owner = engine.login("owner").await.unwrap();
    for round in 0..3 {
        let (acked, seen, joined, missed) = storm(&engine, &owner, members, round).await;
        println!(
            "   storm {}: all acknowledged in {:>7.1} ms; owner saw {joined} of {members} joins{}; missed {missed}",
            round + 1,
            acked.as_secs_f64() * 1e3,
            seen.map_or(String::from(" (not all within 20 s)"), |d| format!(
                " in {:.1} ms",
                d.as_secs_f64() * 1e3
            )),
        );
    }
    engine.shutdown().await;
}
