//! The scale report: every workload of issue 12 for roomcast and its baselines, interleaved in
//! one process, in one table with ratios.
//!
//! `cargo run --release --example scale_report -- [--seconds N] [--only joins]`

use std::time::Duration;

use roomcast_workspace::scale::{ActixRoomActors, RoomcastJoins, TokioRoomTasks};

struct Args {
    seconds: f64,
    only: Option<String>,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 2.0,
        only: None,
        rounds: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--seconds" => a.seconds = value.parse().expect("--seconds N"),
            "--only" => a.only = Some(value),
            "--rounds" => a.rounds = value.parse().expect("--rounds N"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn main() {
    let args = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let span = Duration::from_secs_f64(args.seconds);
    let wants = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    if wants("joins") {
        const TASKS: usize = 64;
        const ROOMS: usize = 1_000;
        let roomcast = rt.block_on(RoomcastJoins::new(ROOMS, TASKS));
        let tokio_rooms = rt.block_on(async { TokioRoomTasks::new(ROOMS) });
        let actix_rooms = ActixRoomActors::new(ROOMS);
        let mut best = [0f64; 3];
        for _ in 0..args.rounds {
            let r = roomcast.clone();
            best[0] = best[0].max(rt.block_on(roomcast_workspace::scale::run_tasks(
                TASKS,
                span,
                move |t, i| {
                    let r = r.clone();
                    async move { r.join_leave(t, i).await }
                },
            )));
            if std::env::var_os("SCALE_ROOMCAST_ONLY").is_some() {
                continue;
            }
            let b = tokio_rooms.clone();
            best[1] = best[1].max(rt.block_on(roomcast_workspace::scale::run_tasks(
                TASKS,
                span,
                move |t, i| {
                    let b = b.clone();
                    async move { b.join_leave(t, i).await }
                },
            )));
            let b = actix_rooms.clone();
            best[2] = best[2].max(rt.block_on(roomcast_workspace::scale::run_tasks(
                TASKS,
                span,
                move |t, i| {
                    let b = b.clone();
                    async move { b.join_leave(t, i).await }
                },
            )));
        }
        println!(
            "join+leave ops/s, {TASKS} tasks over {ROOMS} rooms: roomcast {:.0}, tokio room task {:.0} ({:.2}x), actix {:.0} ({:.2}x)",
            best[0],
            best[1],
            best[0] / best[1],
            best[2],
            best[0] / best[2]
        );
        rt.block_on(roomcast.engine.shutdown());
        actix_rooms.stop();
    }
}
