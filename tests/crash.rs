//! Crash test: nothing acknowledged is lost when the process is killed.
//!
//! The test re-runs its own binary as a child that drives a seeded workload through the public
//! API (rooms, messages, attributes, mute and allow lists) on a data directory and prints each
//! operation once it was acknowledged. The parent kills the child with SIGKILL at a random
//! moment, reopens the directory, and checks that every acknowledged operation is there, that
//! every room opens, and that each room's messages have no gaps up to the last acknowledged one.
//! Cycles run on the same directory, so later cycles also reopen what earlier crashes left.
//!
//! Some operations race: the owner and an admin make the same change at the same instant
//! (mute-all on or off), and each prints its acknowledgement as soon as its own call returns.
//! The call that finds the change already made must not be acknowledged before the other
//! call's write is durable.
//!
//! `ROOMCAST_CRASH_CYCLES` (default 20) and `ROOMCAST_CRASH_SEED` (default: from the clock) set
//! the run; the seed is printed so that a failure can be replayed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use roomcast::{
    CreateChatRoomOptions, Engine, HistoryQuery, MuteDuration, OutgoingMessage, RoomId,
    SetAttributes,
};
use roomcast_workspace::{harness_limits, Rng};

const CHILD_DIR: &str = "ROOMCAST_CRASH_CHILD_DIR";
const CHILD_SEED: &str = "ROOMCAST_CRASH_CHILD_SEED";
const TEST_NAME: &str = "acknowledged_operations_survive_sigkill";

/// Each room keeps this many messages: small, so that retention runs in every cycle and a
/// crash can land in the middle of it.
const RETENTION: usize = 25;

async fn open(dir: &str) -> Engine {
    let mut limits = harness_limits();
    limits.history_retention = RETENTION;
    Engine::builder()
        .data_dir(dir)
        .limits(limits)
        .build()
        .await
        .expect("the store opens after a crash")
}

/// The child: runs operations until killed, printing `ACK ...` after each acknowledged one.
fn child(dir: String, seed: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut rng = Rng::new(seed);
        let engine = open(&dir).await;
        engine.add_super_admin("owner").await.unwrap();
        let owner = engine.login("owner").await.unwrap();
        let viewer = engine.login("viewer").await.unwrap();
        let moderator = engine.login("moderator").await.unwrap();
        let rooms = owner.chat_room_manager();
        let mut all_muted: BTreeMap<RoomId, bool> = BTreeMap::new();
        let mut mine: Vec<RoomId> = Vec::new();
        for i in 0u64.. {
            if mine.is_empty() || rng.below(20) == 0 {
                let name = format!("s{seed}-{i}");
                let room = rooms
                    .create_chat_room(CreateChatRoomOptions::new(name.clone()))
                    .await
                    .unwrap();
                viewer
                    .chat_room_manager()
                    .join_chat_room(&room.room_id)
                    .await
                    .unwrap();
                moderator
                    .chat_room_manager()
                    .join_chat_room(&room.room_id)
                    .await
                    .unwrap();
                rooms
                    .add_chat_room_admin(&room.room_id, "moderator")
                    .await
                    .unwrap();
                println!("ACK room {} {name}", room.room_id);
                mine.push(room.room_id);
                continue;
            }
            let room = mine[rng.below(mine.len())];
            if rng.below(4) == 0 {
                // The owner and the admin make the same change at once; each call is
                // acknowledged as soon as it returns, whichever returns first.
                let on = !all_muted.get(&room).copied().unwrap_or(false);
                all_muted.insert(room, on);
                println!("TRY allmuted {room} {on}");
                let change = |client: roomcast::ChatClient| async move {
                    let rooms = client.chat_room_manager();
                    if on {
                        rooms.mute_all_chat_room_members(&room).await.unwrap();
                    } else {
                        rooms.unmute_all_chat_room_members(&room).await.unwrap();
                    }
                    println!("ACK allmuted {room} {on}");
                };
                tokio::join!(change(owner.clone()), change(moderator.clone()));
                continue;
            }
            match rng.below(10) {
                0..=5 => {
                    let text = format!("t{i}");
                    let sent = owner
                        .chat_manager()
                        .send_message(OutgoingMessage::text(room, text.clone()))
                        .await
                        .unwrap();
                    println!("ACK msg {room} {} {text}", sent.seq());
                }
                6..=7 => {
                    let key = format!("k{}", rng.below(5));
                    let value = format!("v{i}");
                    let failed = rooms
                        .set_chat_room_attributes(
                            &room,
                            SetAttributes::new([(key.clone(), value.clone())]),
                        )
                        .await
                        .unwrap();
                    assert!(failed.is_empty());
                    println!("ACK attr {room} {key} {value}");
                }
                8 => {
                    rooms
                        .mute_chat_room_members(&room, ["viewer"], MuteDuration::Forever)
                        .await
                        .unwrap();
                    println!("ACK mute {room} viewer");
                }
                _ => {
                    rooms
                        .add_members_to_chat_room_allow_list(&room, ["viewer"])
                        .await
                        .unwrap();
                    println!("ACK allow {room} viewer");
                }
            }
        }
    });
}

/// What the acknowledgements say must be in the store.
#[derive(Default)]
struct Expected {
    rooms: BTreeMap<RoomId, String>,
    messages: BTreeMap<RoomId, BTreeMap<u64, String>>,
    attributes: BTreeMap<RoomId, BTreeMap<String, String>>,
    muted: BTreeSet<RoomId>,
    allowed: BTreeSet<RoomId>,
    /// Mute-all as last acknowledged, and whether a later change was tried (and may or may not
    /// have been stored when the process died).
    all_muted: BTreeMap<RoomId, (bool, bool)>,
}

impl Expected {
    fn record(&mut self, line: &str) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let room = |s: &str| s.parse::<RoomId>().unwrap();
        match parts.as_slice() {
            ["ACK", "room", id, name] => {
                self.rooms.insert(room(id), name.to_string());
            }
            ["ACK", "msg", id, seq, text] => {
                self.messages
                    .entry(room(id))
                    .or_default()
                    .insert(seq.parse().unwrap(), text.to_string());
            }
            ["ACK", "attr", id, key, value] => {
                self.attributes
                    .entry(room(id))
                    .or_default()
                    .insert(key.to_string(), value.to_string());
            }
            ["ACK", "mute", id, _] => {
                self.muted.insert(room(id));
            }
            ["ACK", "allow", id, _] => {
                self.allowed.insert(room(id));
            }
            ["TRY", "allmuted", id, on] => {
                let on: bool = on.parse().unwrap();
                let state = self.all_muted.entry(room(id)).or_insert((false, false));
                if state.0 != on {
                    state.1 = true;
                }
            }
            ["ACK", "allmuted", id, on] => {
                self.all_muted
                    .insert(room(id), (on.parse().unwrap(), false));
            }
            _ => {}
        }
    }

    async fn check(&self, dir: &str, cycle: usize) {
        // Before the engine opens (and closes what the crash left open): every record reads, and
        // the invariants across records hold (each room's last sequence number is its newest
        // message's; no message without its room).
        let report = roomcast::store::check(dir).expect("the store can be checked");
        assert!(
            report.is_clean(),
            "cycle {cycle}: the store has problems: {:?}",
            report.problems
        );
        let engine = open(dir).await;
        let owner = engine.login("owner").await.unwrap();
        let rooms = owner.chat_room_manager();
        for (id, name) in &self.rooms {
            let info = rooms
                .fetch_chat_room_info(id)
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: acknowledged room {id} is lost: {e}"));
            assert_eq!(&info.name, name);
            if let Err(e) = rooms.join_chat_room(id).await {
                assert_eq!(e.code(), 701, "cycle {cycle}: joining {id}: {e}");
            }
        }
        for (id, acked) in &self.messages {
            let (&last, _) = acked.last_key_value().unwrap();
            let history = owner
                .chat_manager()
                .fetch_history_messages(id, HistoryQuery::after(0, 200))
                .await
                .unwrap();
            let mut stored: BTreeMap<u64, String> = BTreeMap::new();
            let mut page = history;
            loop {
                for m in &page.data {
                    stored.insert(m.seq(), m.text().unwrap().to_string());
                }
                match page.cursor {
                    Some(c) => {
                        page = owner
                            .chat_manager()
                            .fetch_history_messages(id, HistoryQuery::after(c, 200))
                            .await
                            .unwrap()
                    }
                    None => break,
                }
            }
            // Retention is whole: the room holds one run of its newest messages, at most
            // RETENTION of them, ending at or after the last acknowledged one.
            let (&first, _) = stored
                .first_key_value()
                .expect("a room with messages keeps some");
            let (&newest, _) = stored.last_key_value().unwrap();
            assert!(
                newest >= last,
                "cycle {cycle}: room {id} lost its newest messages"
            );
            assert_eq!(
                stored.keys().copied().collect::<Vec<_>>(),
                (first..=newest).collect::<Vec<_>>(),
                "cycle {cycle}: room {id} has gaps"
            );
            assert!(
                stored.len() <= RETENTION,
                "cycle {cycle}: room {id} keeps {} messages",
                stored.len()
            );
            assert_eq!(
                stored.len(),
                RETENTION.min(newest as usize),
                "cycle {cycle}: room {id}: retention applied in part"
            );
            for (seq, text) in acked.range(first..) {
                assert_eq!(
                    stored.get(seq),
                    Some(text),
                    "cycle {cycle}: room {id} lost acknowledged message {seq}"
                );
            }
        }
        for (id, attrs) in &self.attributes {
            let stored = rooms.fetch_all_chat_room_attributes(id).await.unwrap();
            for (k, v) in attrs {
                // A later unacknowledged write may have replaced the value; it must still exist.
                assert!(
                    stored.contains_key(k),
                    "cycle {cycle}: room {id} lost attribute {k}={v}"
                );
            }
        }
        for id in &self.muted {
            let mutes = rooms.fetch_chat_room_mute_list(id, 1, 100).await.unwrap();
            assert!(
                mutes.data.iter().any(|m| m.user_id.as_str() == "viewer"),
                "cycle {cycle}: room {id} lost a mute"
            );
        }
        for id in &self.allowed {
            let allowed = rooms.fetch_chat_room_allow_list(id, 1, 100).await.unwrap();
            assert!(
                allowed.data.iter().any(|u| u.as_str() == "viewer"),
                "cycle {cycle}: room {id} lost an allow-list entry"
            );
        }
        for (id, &(on, changing)) in &self.all_muted {
            if changing {
                continue;
            }
            let info = rooms.fetch_chat_room_info(id).await.unwrap();
            assert_eq!(
                info.is_all_member_muted, on,
                "cycle {cycle}: room {id} lost an acknowledged mute-all change"
            );
        }
        engine.shutdown().await;
    }
}

#[test]
fn acknowledged_operations_survive_sigkill() {
    if let (Ok(dir), Ok(seed)) = (std::env::var(CHILD_DIR), std::env::var(CHILD_SEED)) {
        child(dir, seed.parse().unwrap());
        return;
    }
    let cycles: usize = std::env::var("ROOMCAST_CRASH_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("ROOMCAST_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash test: {cycles} cycles, ROOMCAST_CRASH_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let dir_str = dir.path().to_str().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = Rng::new(seed);
    let mut expected = Expected::default();
    let mut total_acks = 0;
    for cycle in 0..cycles {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads", "1"])
            .env(CHILD_DIR, &dir_str)
            .env(CHILD_SEED, (seed.wrapping_add(cycle as u64)).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let kill_after = 5 + rng.below(150);
        let mut acks = 0;
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // libtest may print its "test ... " prefix on the same line as the first output.
        let record = |line: &str, expected: &mut Expected| {
            if let Some(at) = line.find("TRY ") {
                expected.record(&line[at..]);
                false
            } else if let Some(at) = line.find("ACK ") {
                expected.record(&line[at..]);
                true
            } else {
                false
            }
        };
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if record(&line, &mut expected) {
                acks += 1;
                if acks >= kill_after {
                    break;
                }
            }
        }
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        // What the child printed before it died but after we stopped reading still happened: a
        // change tried then (mute-all off after on) may be in the store.
        for line in lines.map_while(Result::ok) {
            if record(&line, &mut expected) {
                acks += 1;
            }
        }
        total_acks += acks;
        rt.block_on(expected.check(&dir_str, cycle));
    }
    println!("crash test: {cycles} cycles, {total_acks} acknowledged operations, all present");
}

const EXIT_CHILD_DIR: &str = "ROOMCAST_EXIT_CHILD_DIR";
const EXIT_TEST_NAME: &str = "a_buffered_engine_dropped_before_exit_keeps_what_it_acknowledged";

/// A process that drops its engine (no `shutdown`) and exits at once keeps everything the
/// engine acknowledged, even with `Durability::Buffered`: dropping the last `Engine` flushes
/// before it returns.
#[test]
fn a_buffered_engine_dropped_before_exit_keeps_what_it_acknowledged() {
    if let Ok(dir) = std::env::var(EXIT_CHILD_DIR) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let engine = Engine::builder()
                .data_dir(&dir)
                .limits(harness_limits())
                .durability(roomcast::Durability::Buffered {
                    flush_every: std::time::Duration::from_secs(3_600),
                })
                .build()
                .await
                .unwrap();
            engine.add_super_admin("owner").await.unwrap();
            let owner = engine.login("owner").await.unwrap();
            let room = owner
                .chat_room_manager()
                .create_chat_room(CreateChatRoomOptions::new("kept"))
                .await
                .unwrap();
            for n in 1..=50 {
                owner
                    .chat_manager()
                    .send_message(OutgoingMessage::text(room.room_id, format!("m{n}")))
                    .await
                    .unwrap();
            }
            println!("ROOM {}", room.room_id);
            drop(owner);
            drop(engine);
        });
        std::process::exit(0);
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            EXIT_TEST_NAME,
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(EXIT_CHILD_DIR, dir.path())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let room: RoomId = stdout
        .lines()
        .find_map(|l| l.split("ROOM ").nth(1))
        .expect("the child reports its room")
        .trim()
        .parse()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let engine = Engine::builder()
            .data_dir(dir.path())
            .limits(harness_limits())
            .build()
            .await
            .unwrap();
        let owner = engine.login("owner").await.unwrap();
        owner
            .chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap();
        let page = owner
            .chat_manager()
            .fetch_history_messages(&room, HistoryQuery::newest(100))
            .await
            .unwrap();
        assert_eq!(page.data.len(), 50, "every acknowledged message is there");
        engine.shutdown().await;
    });
}
