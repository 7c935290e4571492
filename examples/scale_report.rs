//! The scale report: the workloads where roomcast has to be fast beyond one big room (joins,
//! join storms, many small rooms, send latency, memory per member, idle rooms, the room list),
//! each run for roomcast and its baseline in the same process (memory rows in child processes
//! of their own, so that each measures only itself), printed as one table with ratios.
//!
//! `cargo run --release --example scale_report -- [--quick] [--only ROW] [--seconds N]`
//!
//! Limits turned off for every roomcast row (`roomcast_workspace::scale::report_limits`): calls
//! per user per second, the per-room delivery threshold and the per-member message window, so
//! that the rows measure the engine and not its limiters; the room and member caps are raised.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use roomcast::{CreateChatRoomOptions, Engine};
use roomcast_workspace::rss_bytes;
use roomcast_workspace::scale::{
    empty_rooms, report_engine, report_limits, roomcast_storm, run_tasks, send_latencies,
    tokio_small_rooms, tokio_storm, ActixRoomActors, Counting, RoomcastJoins, SmallRooms,
    TokioRoomTasks,
};

struct Args {
    seconds: f64,
    only: Option<String>,
    quick: bool,
    child: Option<(String, usize)>,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 2.0,
        only: None,
        quick: false,
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--quick" => a.quick = true,
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds N"),
            "--only" => a.only = it.next(),
            "--child" => {
                let row = it.next().expect("--child ROW N");
                let n = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--child ROW N");
                a.child = Some((row, n));
            }
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// One line of the table.
struct Row {
    workload: String,
    roomcast: String,
    baseline: String,
    ratio: String,
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn main() {
    let args = args();
    if let Some((row, n)) = &args.child {
        child(row, *n);
        return;
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# roomcast scale report\n");
    println!(
        "machine: {cores} cores; allocator: {}; load average before: {}",
        if cfg!(feature = "mimalloc") {
            "mimalloc (feature `mimalloc`)"
        } else {
            "the system's (glibc malloc)"
        },
        loadavg()
    );
    println!(
        "roomcast rows run with these limits off: calls per user per second, the per-room \
         delivery threshold, the per-member message window.\n"
    );
    let started = Instant::now();
    let span = Duration::from_secs_f64(args.seconds);
    let wants = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    let mut rows = Vec::new();
    let rt = rt();
    if wants("joins") {
        rows.push(joins(&rt, span, if args.quick { 100 } else { 1_000 }));
    }
    if wants("storm") {
        rows.push(storm(&rt, if args.quick { 10_000 } else { 100_000 }));
    }
    if wants("small") {
        let (rooms, members) = if args.quick { (100, 20) } else { (1_000, 100) };
        rows.extend(small_rooms(&rt, span, rooms, members));
    }
    if wants("latency") {
        rows.extend(latency(&rt, if args.quick { 2_000 } else { 20_000 }));
    }
    if wants("list") {
        rows.extend(room_list(&rt, if args.quick { 5_000 } else { 50_000 }));
    }
    if wants("memory") {
        let (small, large) = if args.quick {
            (2_000, 20_000)
        } else {
            (10_000, 100_000)
        };
        rows.push(memory_row(small, large));
    }
    if wants("rooms") {
        rows.extend(idle_rooms_row(if args.quick { 20_000 } else { 200_000 }));
    }
    print_table(&rows);
    println!(
        "\nload average after: {}; report took {:.0} s",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
}

fn print_table(rows: &[Row]) {
    println!("| workload | roomcast | baseline (same run) | ratio |");
    println!("|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} |",
            r.workload, r.roomcast, r.baseline, r.ratio
        );
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn per_s(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M/s", x / 1e6)
    } else {
        format!("{:.0} k/s", x / 1e3)
    }
}

/// Join + leave round trips, 64 tasks over `rooms` rooms: roomcast, a tokio task per room, an
/// actix actor per room.
fn joins(rt: &tokio::runtime::Runtime, span: Duration, rooms: usize) -> Row {
    const TASKS: usize = 64;
    let roomcast = rt.block_on(RoomcastJoins::new(rooms, TASKS));
    let tokio_rooms = rt.block_on(async { TokioRoomTasks::new(rooms) });
    let actix_rooms = ActixRoomActors::new(rooms);
    let mut best = [0f64; 3];
    for _ in 0..2 {
        let r = roomcast.clone();
        best[0] = best[0].max(rt.block_on(run_tasks(TASKS, span, move |t, i| {
            let r = r.clone();
            async move { r.join_leave(t, i).await }
        })));
        if std::env::var_os("SCALE_ROOMCAST_ONLY").is_some() {
            continue; // for profiling roomcast alone
        }
        let b = tokio_rooms.clone();
        best[1] = best[1].max(rt.block_on(run_tasks(TASKS, span, move |t, i| {
            let b = b.clone();
            async move { b.join_leave(t, i).await }
        })));
        let b = actix_rooms.clone();
        best[2] = best[2].max(rt.block_on(run_tasks(TASKS, span, move |t, i| {
            let b = b.clone();
            async move { b.join_leave(t, i).await }
        })));
    }
    rt.block_on(roomcast.engine.shutdown());
    actix_rooms.stop();
    Row {
        workload: format!("join + leave, acknowledged ops/s, {TASKS} tasks over {rooms} rooms"),
        roomcast: per_s(best[0]),
        baseline: format!(
            "tokio room task {}; actix {}",
            per_s(best[1]),
            per_s(best[2])
        ),
        ratio: format!(
            "{:.2}x tokio, {:.2}x actix",
            best[0] / best[1],
            best[0] / best[2]
        ),
    }
}

fn storm(rt: &tokio::runtime::Runtime, members: usize) -> Row {
    let (acked, heard) = rt.block_on(roomcast_storm(members));
    let (t_acked, t_heard) = rt.block_on(tokio_storm(members));
    Row {
        workload: format!(
            "join storm: {members} users join one room at once; all acked / owner heard all"
        ),
        roomcast: format!("{:.0} / {:.0} ms", ms(acked), ms(heard)),
        baseline: format!("tokio room task {:.0} / {:.0} ms", ms(t_acked), ms(t_heard)),
        ratio: format!("{:.2}x (heard all)", ms(t_heard) / ms(heard)),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn small_rooms(
    rt: &tokio::runtime::Runtime,
    span: Duration,
    rooms: usize,
    members: usize,
) -> Vec<Row> {
    const PUBLISHERS: usize = 16;
    let setup = Instant::now();
    let small = rt.block_on(SmallRooms::new(rooms, members, PUBLISHERS));
    eprintln!(
        "small rooms set up in {:.1} s",
        setup.elapsed().as_secs_f64()
    );
    let awaited = rt.block_on(small.run(span, false));
    let fire = rt.block_on(small.run(span, true));
    rt.block_on(small.engine.shutdown());
    drop(small);
    let tokio = rt.block_on(tokio_small_rooms(rooms, members, PUBLISHERS, span));
    let what = format!("{rooms} rooms x {members} members, {PUBLISHERS} publishers: deliveries/s");
    vec![
        Row {
            workload: format!("{what}, each send awaited"),
            roomcast: per_s(awaited),
            baseline: format!("tokio broadcast {}", per_s(tokio)),
            ratio: format!("{:.2}x", awaited / tokio),
        },
        Row {
            workload: format!("{what}, sends not awaited (256 in flight per publisher)"),
            roomcast: per_s(fire),
            baseline: format!("tokio broadcast {}", per_s(tokio)),
            ratio: format!("{:.2}x", fire / tokio),
        },
    ]
}

fn latency(rt: &tokio::runtime::Runtime, samples: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    let dir = tempfile_dir();
    for (label, data_dir) in [
        ("temporary store", None),
        ("data directory (the flush included)", Some(dir.clone())),
    ] {
        let p = rt.block_on(async {
            let mut b = Engine::builder().limits(report_limits());
            if let Some(d) = &data_dir {
                b = b.data_dir(d);
            }
            let engine = b.build().await.unwrap();
            engine.add_super_admin("owner").await.unwrap();
            let owner = engine.login("owner").await.unwrap();
            let room = owner
                .chat_room_manager()
                .create_chat_room(CreateChatRoomOptions::new("idle"))
                .await
                .unwrap()
                .room_id;
            let mut members = Vec::new();
            for n in 0..10 {
                let c = engine.login(format!("m{n}")).await.unwrap();
                c.chat_manager()
                    .add_event_handler("count", Counting::default());
                c.chat_room_manager().join_chat_room(&room).await.unwrap();
                members.push(c);
            }
            // Warm up, then measure.
            send_latencies(&engine, &owner, room, 200).await;
            let p = send_latencies(&engine, &owner, room, samples).await;
            engine.shutdown().await;
            p
        });
        rows.push(Row {
            workload: format!("send_message round trip, idle room of 10, {label}: p50 / p99"),
            roomcast: format!("{} / {} us", p.p50, p.p99),
            baseline: "-".into(),
            ratio: "-".into(),
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    rows
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("roomcast-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn room_list(rt: &tokio::runtime::Runtime, rooms: usize) -> Vec<Row> {
    let (plain, filtered, deep) = rt.block_on(async {
        let (engine, owner) = report_engine(None).await;
        empty_rooms(&owner, 0..rooms).await;
        let viewer = engine.login("viewer").await.unwrap();
        let list = viewer.chat_room_manager();
        let time = |page: u32, filter: Option<&'static str>| {
            let list = list.clone();
            async move {
                let calls = 200;
                let t = Instant::now();
                for _ in 0..calls {
                    list.fetch_public_chat_rooms(page, 20, filter)
                        .await
                        .unwrap();
                }
                t.elapsed().as_secs_f64() * 1e6 / calls as f64
            }
        };
        let plain = time(1, None).await;
        let first = Instant::now();
        list.fetch_public_chat_rooms(1, 20, Some("room 1"))
            .await
            .unwrap();
        let first = first.elapsed().as_secs_f64() * 1e6;
        let next = time(2, Some("room 1")).await;
        let deep = time((rooms / 40).max(1) as u32, None).await;
        engine.shutdown().await;
        (plain, (first, next), deep)
    });
    vec![
        Row {
            workload: format!("public room list page (20, newest first) at {rooms} rooms"),
            roomcast: format!("{plain:.1} us"),
            baseline: "-".into(),
            ratio: "-".into(),
        },
        Row {
            workload: format!("... page in the middle of the list at {rooms} rooms"),
            roomcast: format!("{deep:.1} us"),
            baseline: "-".into(),
            ratio: "-".into(),
        },
        Row {
            workload: format!(
                "... with the name filter \"room 1\" at {rooms} rooms: first page / next pages"
            ),
            roomcast: format!("{:.0} / {:.1} us", filtered.0, filtered.1),
            baseline: "-".into(),
            ratio: "-".into(),
        },
    ]
}

/// Runs this report as a child process for one memory row; returns what it printed.
fn run_child(row: &str, n: usize) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--child", row, &n.to_string()])
        .output()
        .expect("the child runs");
    assert!(
        out.status.success(),
        "child {row} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn memory_row(small: usize, large: usize) -> Row {
    let parse = |s: String| -> f64 { s.parse().unwrap() };
    let roomcast = parse(run_child("members-roomcast", small * 1_000_000 + large));
    let tokio = parse(run_child("members-tokio", small * 1_000_000 + large));
    Row {
        workload: format!(
            "RSS per idle online member (client + handler), slope {small} to {large} members"
        ),
        roomcast: format!("{roomcast:.0} B"),
        baseline: format!("tokio broadcast {tokio:.0} B"),
        ratio: format!("{:.2}x the memory", roomcast / tokio),
    }
}

fn idle_rooms_row(rooms: usize) -> Vec<Row> {
    let out = run_child("rooms-roomcast", rooms);
    let v: Vec<f64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    let (awake, asleep, rss_mb, p50, p99) = (v[0], v[1], v[2], v[3], v[4]);
    vec![
        Row {
            workload: format!(
                "RSS per idle room (nobody in it), slope to {rooms} rooms: in memory / hibernated"
            ),
            roomcast: format!("{awake:.0} B / {asleep:.0} B"),
            baseline: "-".into(),
            ratio: "-".into(),
        },
        Row {
            workload: format!(
                "RSS of the process after {rooms} rooms in memory, then {rooms} more hibernated"
            ),
            roomcast: format!("{rss_mb:.0} MB"),
            baseline: "-".into(),
            ratio: "-".into(),
        },
        Row {
            workload: "first call on a hibernated room (room info, loads it): p50 / p99".into(),
            roomcast: format!("{p50:.0} / {p99:.0} us"),
            baseline: "-".into(),
            ratio: "-".into(),
        },
    ]
}

/// A memory row in a process of its own: prints one number.
fn child(row: &str, n: usize) {
    let rt = rt();
    match row {
        "members-roomcast" | "members-tokio" => {
            let (small, large) = (n / 1_000_000, n % 1_000_000);
            let per = if row == "members-roomcast" {
                rt.block_on(roomcast_members(small, large))
            } else {
                rt.block_on(tokio_members(small, large))
            };
            println!("{per}");
        }
        "rooms-roomcast" => println!("{}", rt.block_on(roomcast_rooms(n))),
        other => panic!("unknown row {other}"),
    }
}

async fn roomcast_members(small: usize, large: usize) -> f64 {
    let (engine, owner) = report_engine(None).await;
    let room = owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("big").with_max_users(large as u32 + 1))
        .await
        .unwrap()
        .room_id;
    let mut clients = Vec::with_capacity(large);
    let mut rss_small = 0;
    for n in 0..large {
        if n == small {
            tokio::time::sleep(Duration::from_millis(300)).await;
            rss_small = rss_bytes();
        }
        let c = engine.login(format!("viewer{n}")).await.unwrap();
        c.chat_manager()
            .add_event_handler("count", Counting::default());
        c.chat_room_manager().join_chat_room(&room).await.unwrap();
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_large = rss_bytes();
    (rss_large as f64 - rss_small as f64) / (large - small) as f64
}

async fn tokio_members(small: usize, large: usize) -> f64 {
    let (tx, _) = tokio::sync::broadcast::channel::<Arc<String>>(1_024);
    let mut tasks = Vec::with_capacity(large);
    let mut rss_small = 0;
    for n in 0..large {
        if n == small {
            tokio::time::sleep(Duration::from_millis(300)).await;
            rss_small = rss_bytes();
        }
        let mut rx = tx.subscribe();
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tasks.push(tokio::spawn(async move {
            while rx.recv().await.is_ok() {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_large = rss_bytes();
    drop(tx);
    (rss_large as f64 - rss_small as f64) / (large - small) as f64
}

async fn roomcast_rooms(rooms: usize) -> String {
    let clock = roomcast::ManualClock::new(1_700_000_000_000);
    let (engine, owner) = report_engine(Some(clock.clone())).await;
    let create = |from: usize, to: usize| empty_rooms(&owner, from..to);
    let settle = || tokio::time::sleep(Duration::from_millis(300));
    // Awake: rooms created and left, all in memory.
    let small = rooms / 10;
    create(0, small).await;
    settle().await;
    let rss_small = rss_bytes();
    create(small, rooms).await;
    settle().await;
    let awake = (rss_bytes() as f64 - rss_small as f64) / (rooms - small) as f64;
    // Hibernated: the same again in a fresh batch at a time, each batch put to sleep before the
    // next, so that what a sleeping room keeps is what grows.
    clock.advance(Duration::from_secs(6 * 60));
    while engine.rooms_in_memory() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    settle().await;
    let rss_before = rss_bytes();
    let batch = (rooms / 10).max(1);
    let mut made = rooms;
    while made < 2 * rooms {
        create(made, made + batch).await;
        made += batch;
        clock.advance(Duration::from_secs(6 * 60));
        while engine.rooms_in_memory() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    settle().await;
    let rss_asleep = rss_bytes();
    let asleep = (rss_asleep as f64 - rss_before as f64) / rooms as f64;
    let mut us = Vec::new();
    let viewer = engine.login("viewer").await.unwrap();
    let list = viewer
        .chat_room_manager()
        .fetch_public_chat_rooms(1, 100, None)
        .await
        .unwrap();
    for room in list.data.iter().take(100) {
        let t = Instant::now();
        viewer
            .chat_room_manager()
            .fetch_chat_room_info(&room.room_id)
            .await
            .unwrap();
        us.push(t.elapsed().as_micros() as u64);
    }
    let p = roomcast_workspace::Percentiles::of(&mut us);
    format!(
        "{awake} {asleep} {} {} {}",
        rss_asleep as f64 / 1048576.0,
        p.p50,
        p.p99
    )
}
