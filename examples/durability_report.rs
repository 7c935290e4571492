//! The durability report: persisted message throughput with each durability (power-loss safe
//! group commit, flush only, buffered) side by side, the send call's latency on an idle room,
//! fan-out latency on a durable store next to the in-memory one, and restart time with a million
//! retained messages.
//!
//! `cargo run --release --example durability_report` (add `--quick` for a smaller run).

use std::sync::Arc;
use std::time::{Duration, Instant};

use roomcast::{CreateChatRoomOptions, Durability, Engine, HistoryQuery, Limits, OutgoingMessage};
use roomcast_workspace::fanout::paced;
use roomcast_workspace::fanout::roomcast_contender::Roomcast;

fn limits() -> Limits {
    let mut limits = roomcast_workspace::harness_limits();
    limits.max_rooms = 1_000_000;
    // One host creates every room, and the creator is in each.
    limits.max_rooms_per_user = 1_000_000;
    limits
}

/// `rooms` rooms, `senders` senders each, `per_room` messages each, every send awaited
/// (durable).
async fn persisted_throughput(
    rooms: usize,
    senders: usize,
    per_room: usize,
    durability: Durability,
) -> (f64, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .data_dir(dir.path())
        .durability(durability)
        .limits(limits())
        .build()
        .await
        .unwrap();
    engine.add_super_admin("host").await.unwrap();
    let host = engine.login("host").await.unwrap();
    let mut ids = Vec::new();
    for n in 0..rooms {
        let room = host
            .chat_room_manager()
            .create_chat_room(CreateChatRoomOptions::new(format!("room {n}")))
            .await
            .unwrap();
        ids.push(room.room_id);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for id in ids {
        for s in 0..senders {
            let chat = host.chat_manager();
            tasks.push(tokio::spawn(async move {
                for k in (s..per_room).step_by(senders) {
                    chat.send_message(OutgoingMessage::text(id, format!("message {k}")))
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = start.elapsed();
    engine.shutdown().await;
    ((rooms * per_room) as f64 / elapsed.as_secs_f64(), elapsed)
}

/// One sender, one idle room (one other member), `count` sends each awaited: the send call's
/// latency percentiles in microseconds. `dir`: a data directory with `durability`, else a
/// temporary store.
async fn send_latency(
    count: usize,
    durability: Option<Durability>,
) -> roomcast_workspace::Percentiles {
    let dir = tempfile::tempdir().unwrap();
    let mut builder = Engine::builder().limits(limits());
    if let Some(durability) = durability {
        builder = builder.data_dir(dir.path()).durability(durability);
    }
    let engine = builder.build().await.unwrap();
    engine.add_super_admin("host").await.unwrap();
    let host = engine.login("host").await.unwrap();
    let room = host
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("latency"))
        .await
        .unwrap()
        .room_id;
    let viewer = engine.login("viewer").await.unwrap();
    viewer
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    let chat = host.chat_manager();
    let mut samples = Vec::with_capacity(count);
    for k in 0..count + 100 {
        let started = Instant::now();
        chat.send_message(OutgoingMessage::text(room, format!("m{k}")))
            .await
            .unwrap();
        if k >= 100 {
            samples.push(started.elapsed().as_micros() as u64);
        }
    }
    engine.shutdown().await;
    roomcast_workspace::Percentiles::of(&mut samples)
}

/// Fills a store with `rooms` rooms of `per_room` messages, then measures how long a restart
/// takes until the first calls are answered.
async fn restart(rooms: usize, per_room: usize) -> (Duration, Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let fill = Instant::now();
    {
        let mut l = limits();
        l.history_retention = per_room.max(1_000);
        let engine = Engine::builder()
            .data_dir(dir.path())
            .limits(l)
            // Filling is not what is measured: flush in the background, and once at shutdown.
            .durability(Durability::Buffered {
                flush_every: Duration::from_secs(1),
            })
            .build()
            .await
            .unwrap();
        engine.add_super_admin("host").await.unwrap();
        let host = Arc::new(engine.login("host").await.unwrap());
        let mut ids = Vec::new();
        for n in 0..rooms {
            let room = host
                .chat_room_manager()
                .create_chat_room(CreateChatRoomOptions::new(format!("room {n}")))
                .await
                .unwrap();
            ids.push(room.room_id);
        }
        let chunks: Vec<Vec<_>> = ids.chunks(rooms.div_ceil(64)).map(<[_]>::to_vec).collect();
        let mut tasks = Vec::new();
        for chunk in chunks {
            let chat = host.chat_manager();
            tasks.push(tokio::spawn(async move {
                for id in chunk {
                    for k in 0..per_room {
                        chat.send_message(OutgoingMessage::text(id, format!("m{k}")))
                            .await
                            .unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        engine.shutdown().await;
    }
    let filled = fill.elapsed();
    let start = Instant::now();
    let engine = Engine::builder()
        .data_dir(dir.path())
        .limits(limits())
        .build()
        .await
        .unwrap();
    let opened = start.elapsed();
    let host = engine.login("host").await.unwrap();
    let page = host
        .chat_room_manager()
        .fetch_public_chat_rooms(1, 20, None)
        .await
        .unwrap();
    let room = page.data[0].room_id;
    host.chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    let history = host
        .chat_manager()
        .fetch_history_messages(&room, HistoryQuery::newest(20))
        .await
        .unwrap();
    assert_eq!(history.data.len(), 20.min(per_room));
    let ready = start.elapsed();
    engine.shutdown().await;
    (filled, opened, ready)
}

/// The durabilities compared, with their names.
fn durabilities() -> Vec<(&'static str, Durability)> {
    vec![
        (
            "group commit + fdatasync (power-loss safe, default)",
            Durability::GroupCommit,
        ),
        (
            "group commit, flush only (process-crash safe)",
            Durability::FlushOnly,
        ),
        (
            "buffered, flush every 100 ms",
            Durability::Buffered {
                flush_every: Duration::from_millis(100),
            },
        ),
    ]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("# roomcast durability report\n");
    println!(
        "machine: {} cores; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let (rooms, per_room) = if quick { (20, 100) } else { (100, 1_000) };
    println!(
        "\n## persisted messages\n\n{rooms} rooms x {per_room} messages, each send awaited \
         (durable), data directory:\n"
    );
    for senders in [1, 10] {
        for (name, durability) in durabilities() {
            let (rate, elapsed) =
                rt.block_on(persisted_throughput(rooms, senders, per_room, durability));
            println!(
                "- {senders} sender(s) per room, {name}: **{rate:.0} persisted messages/s** \
                 ({:.2} s)",
                elapsed.as_secs_f64()
            );
        }
    }

    let count = if quick { 1_000 } else { 5_000 };
    println!("\n## send call latency, idle room ({count} awaited sends, one sender)\n");
    let mut stores = vec![("temporary store".to_string(), None)];
    for (name, durability) in durabilities() {
        stores.push((format!("data directory, {name}"), Some(durability)));
    }
    for (name, durability) in stores {
        let l = rt.block_on(send_latency(count, durability));
        println!(
            "- {name}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            l.p50 as f64 / 1000.0,
            l.p99 as f64 / 1000.0,
            l.max as f64 / 1000.0
        );
    }

    let (members, seconds) = if quick { (1_000, 1) } else { (10_000, 3) };
    println!(
        "\n## fan-out on a durable store ({members} members, 100 messages/s for {seconds} s)\n"
    );
    let messages = 100 * seconds as usize;
    let mut memory = Roomcast::new(members, 1024, None);
    let in_memory = paced(&mut memory, members, messages, 100);
    drop(memory);
    let dir = tempfile::tempdir().unwrap();
    let mut durable = Roomcast::with_store(members, 1024, None, Some(dir.path()));
    let on_disk = paced(&mut durable, members, messages, 100);
    drop(durable);
    for (name, r) in [
        ("temporary store", &in_memory),
        ("data directory, group commit", &on_disk),
    ] {
        let l = r.latency.unwrap_or_default();
        println!(
            "- {name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, lost {}",
            l.p50 as f64 / 1000.0,
            l.p99 as f64 / 1000.0,
            l.max as f64 / 1000.0,
            r.lost
        );
    }
    let p99 = |r: &roomcast_workspace::fanout::RunResult| r.latency.map_or(0, |l| l.p99) as f64;
    println!(
        "- p99 difference: {:+.2} ms",
        (p99(&on_disk) - p99(&in_memory)) / 1000.0
    );

    let (rooms, per_room) = if quick { (1_000, 10) } else { (10_000, 100) };
    let (filled, opened, ready) = rt.block_on(restart(rooms, per_room));
    println!(
        "\n## restart\n\n{} retained messages over {rooms} rooms (filled in {:.1} s): the engine \
         opened in **{:.0} ms** and answered its first calls (room list, join, history) after \
         **{:.0} ms**",
        rooms * per_room,
        filled.as_secs_f64(),
        opened.as_secs_f64() * 1000.0,
        ready.as_secs_f64() * 1000.0
    );
}
