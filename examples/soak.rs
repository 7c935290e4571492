//! Soak: steady churn must plateau. Each phase repeats one kind of churn for a while and prints
//! the process's RSS as it goes, with the engine's own counts (pending timed checks, sessions).
//!
//! Phases:
//! - `mute`: mute a member for an hour, then unmute it, over and over (the mute-expiry check
//!   must be cancelled on unmute, not kept for an hour);
//! - `reconnect`: members disconnect and reconnect (the offline check must go when they return);
//! - `users`: new users log in, join, leave and drop their client (sessions are swept);
//! - `rooms`: rooms are created, joined, muted in and destroyed (their checks go with them);
//! - `restarts`: whole engines are built and shut down in this process (threads, stores and
//!   caches must be released).
//!
//! For each phase it prints RSS at the start, half-way and at the end, and the growth per cycle
//! over the second half, which is what a leak shows as (the first half includes warm-up). With
//! `--check` it exits non-zero if a phase still grows in its second half beyond a small bound or
//! leaves pending checks behind.
//!
//! ```sh
//! cargo run --release --example soak                 # about a minute per phase
//! cargo run --release --example soak -- --seconds 3 --check
//! ```

use std::time::{Duration, Instant};

use roomcast::{ChatClient, CreateChatRoomOptions, Engine, ManualClock, RoomId};
use roomcast_workspace::{harness_limits, rss_bytes};

struct Args {
    seconds: f64,
    check: bool,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 60.0,
        check: false,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        match argv[i].as_str() {
            "--seconds" => {
                a.seconds = argv
                    .get(i + 1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| usage());
                i += 1;
            }
            "--check" => a.check = true,
            _ => usage(),
        }
        i += 1;
    }
    a
}

fn usage() -> ! {
    eprintln!("usage: soak [--seconds PER_PHASE] [--check]");
    std::process::exit(2)
}

/// Growth in a phase's second half below this is noise: the store's own log and caches, and
/// what the allocator keeps, move RSS by a megabyte or two in a short debug run. A short run
/// is thus a guard against gross leaks (and, exactly, against pending checks left behind); the
/// long release run (`--seconds 60`) is what shows a slow leak's bytes per cycle.
const NOISE_FLOOR: u64 = 4_000_000;

/// What one phase measured.
struct Phase {
    name: &'static str,
    cycles: u64,
    rss_start: u64,
    rss_half: u64,
    rss_end: u64,
    /// Cycles done by the half-way mark.
    half_cycles: u64,
    pending_timers: usize,
}

impl Phase {
    fn growth_per_cycle(&self) -> f64 {
        let cycles = self.cycles.saturating_sub(self.half_cycles).max(1);
        (self.rss_end as f64 - self.rss_half as f64) / cycles as f64
    }

    fn print(&self) {
        println!(
            "{:<10} {:>9} cycles  RSS {:>7.1} -> {:>7.1} -> {:>7.1} MB  second half {:>+8.2} B/cycle  pending checks {}",
            self.name,
            self.cycles,
            self.rss_start as f64 / 1e6,
            self.rss_half as f64 / 1e6,
            self.rss_end as f64 / 1e6,
            self.growth_per_cycle(),
            self.pending_timers,
        );
    }
}

/// Runs `cycle` repeatedly for `seconds`, measuring RSS at the start, half-way and the end.
async fn phase<F, Fut>(
    name: &'static str,
    seconds: f64,
    engine: Option<&Engine>,
    mut cycle: F,
) -> Phase
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let total = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let rss_start = rss_bytes();
    let mut n = 0u64;
    let mut half: Option<(u64, u64)> = None;
    while started.elapsed() < total {
        cycle(n).await;
        n += 1;
        if half.is_none() && started.elapsed() >= total / 2 {
            half = Some((n, rss_bytes()));
        }
    }
    let (half_cycles, rss_half) = half.unwrap_or((n, rss_bytes()));
    // The rooms handle the last cycle's notices (a presence change, say) on their own threads:
    // a check they still hold for a moment is not one left behind. Settled within a deadline.
    let settle = Instant::now() + Duration::from_secs(2);
    while engine.is_some_and(|e| e.pending_timers() > 0) && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Phase {
        name,
        cycles: n,
        rss_start,
        rss_half,
        rss_end: rss_bytes(),
        half_cycles,
        pending_timers: engine.map_or(0, Engine::pending_timers),
    }
}

async fn engine_with_room(
    clock: &ManualClock,
    members: usize,
) -> (Engine, ChatClient, RoomId, Vec<ChatClient>) {
    // Every mute and unmute is an audit-log entry, kept up to the retention (10,000 per room by
    // default): a soak looks for leaks, so its rooms keep a short log, which it fills at once.
    let engine = Engine::builder()
        .limits(harness_limits().with_audit_log_retention(16))
        .clock(clock.clone())
        .build()
        .await
        .expect("engine");
    engine.add_super_admin("owner").await.expect("super admin");
    let owner = engine.login("owner").await.expect("login");
    let room = owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("soak").with_max_users(100_000))
        .await
        .expect("room");
    let mut clients = Vec::with_capacity(members);
    for i in 0..members {
        let c = engine.login(format!("m{i}")).await.expect("login");
        c.chat_room_manager()
            .join_chat_room(&room.room_id)
            .await
            .expect("join");
        clients.push(c);
    }
    (engine, owner, room.room_id, clients)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let clock = ManualClock::new(1_000_000);
    let mut phases = Vec::new();
    println!("soak: {} s per phase", args.seconds);

    let (engine, owner, room, members) = engine_with_room(&clock, 1_000).await;
    let rooms = owner.chat_room_manager();
    phases.push(
        phase("mute", args.seconds, Some(&engine), |n| {
            let rooms = rooms.clone();
            async move {
                let who = format!("m{}", n % 1_000);
                rooms
                    .mute_chat_room_members(&room, [who.as_str()], Duration::from_millis(3_600_000))
                    .await
                    .expect("mute");
                rooms
                    .unmute_chat_room_members(&room, [who.as_str()])
                    .await
                    .expect("unmute");
            }
        })
        .await,
    );
    phases.push(
        phase("reconnect", args.seconds, Some(&engine), |n| {
            let member = members[(n % members.len() as u64) as usize].clone();
            async move {
                member.disconnect().expect("disconnect");
                member.reconnect().expect("reconnect");
            }
        })
        .await,
    );
    phases.push(
        phase("users", args.seconds, Some(&engine), |n| {
            let engine = engine.clone();
            let clock = clock.clone();
            async move {
                let user = engine.login(format!("u{n}")).await.expect("login");
                let rooms = user.chat_room_manager();
                rooms.join_chat_room(&room).await.expect("join");
                rooms.leave_chat_room(&room).await.expect("leave");
                drop(user);
                if n % 1_000 == 0 {
                    // Idle sessions are swept about once a minute of engine time.
                    clock.advance(Duration::from_secs(61));
                }
            }
        })
        .await,
    );
    phases.push(
        phase("rooms", args.seconds, Some(&engine), |n| {
            let rooms = rooms.clone();
            let member = members[(n % members.len() as u64) as usize].clone();
            async move {
                let created = rooms
                    .create_chat_room(CreateChatRoomOptions::new(format!("r{n}")))
                    .await
                    .expect("create");
                member
                    .chat_room_manager()
                    .join_chat_room(&created.room_id)
                    .await
                    .expect("join");
                rooms
                    .mute_chat_room_members(
                        &created.room_id,
                        [member.current_user_id().as_str()],
                        Duration::from_millis(3_600_000),
                    )
                    .await
                    .expect("mute");
                rooms
                    .destroy_chat_room(&created.room_id)
                    .await
                    .expect("destroy");
            }
        })
        .await,
    );
    drop(members);
    engine.shutdown().await;
    drop(engine);

    phases.push(
        phase("restarts", args.seconds, None, |_| async {
            let clock = ManualClock::new(0);
            let (engine, _owner, _room, clients) = engine_with_room(&clock, 10).await;
            drop(clients);
            engine.shutdown().await;
        })
        .await,
    );

    println!();
    for p in &phases {
        p.print();
    }
    if args.check {
        let mut failed = false;
        for p in &phases {
            // Allocators keep some of what was freed, and a short run still warms up: growth
            // under `NOISE_FLOOR` in the second half is noise. Past that, a leak shows as bytes
            // per cycle (tens for a lost timer entry; megabytes for a restart that keeps its
            // store or threads).
            let bound = if p.name == "restarts" {
                100_000.0
            } else {
                32.0
            };
            let grown = p.rss_end.saturating_sub(p.rss_half);
            if grown > NOISE_FLOOR && p.growth_per_cycle() > bound {
                eprintln!(
                    "soak: {} still grows {:.1} B per cycle in its second half (bound {bound})",
                    p.name,
                    p.growth_per_cycle()
                );
                failed = true;
            }
            if p.pending_timers > 0 {
                eprintln!("soak: {} left {} pending checks", p.name, p.pending_timers);
                failed = true;
            }
        }
        if failed {
            std::process::exit(1);
        }
        println!("soak: every phase plateaued");
    }
}
