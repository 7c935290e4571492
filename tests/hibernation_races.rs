//! Hibernation and the public room list raced as a new user would (a fresh-context review of
//! the performance work, from README.md, docs/semantics.md and the public API). Tests marked
//! `// FINDING:` failed before their fix.

#![allow(dead_code, missing_docs)]

#[path = "integration/support.rs"]
mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roomcast::{
    ChatClient, ChatRoomEvent, ChatRoomEventHandler, CreateChatRoomOptions, Engine, HistoryQuery,
    LeaveReason, Limits, ManualClock, MuteDuration, OutgoingMessage, RoomId, RoomLimits,
    SetAttributes, UserId,
};

use support::*;

const T0: i64 = 1_700_000_000_000;
const MINUTE: Duration = Duration::from_secs(60);
const IDLE: Duration = Duration::from_secs(6 * 60);

fn limits() -> Limits {
    unthrottled()
}

async fn engine_on(limits: Limits, clock: &ManualClock, dir: Option<&std::path::Path>) -> Engine {
    let mut b = Engine::builder().limits(limits).clock(clock.clone());
    if let Some(dir) = dir {
        b = b.data_dir(dir);
    }
    let engine = b.build().await.unwrap();
    engine.add_super_admin("owner").await.unwrap();
    engine
}

/// Polls (yielding, no sleep) until `f` holds, failing after DEADLINE.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let done = async {
        while !f() {
            tokio::task::yield_now().await;
        }
    };
    if tokio::time::timeout(DEADLINE, done).await.is_err() {
        panic!("timed out waiting for {what}");
    }
}

async fn asleep(engine: &Engine, n: usize) {
    let e = engine.clone();
    until(&format!("{n} rooms in memory"), move || {
        e.rooms_in_memory() == n
    })
    .await;
}

/// Advances the clock a minute at a time (each a sweep) `n` times.
fn sweeps(clock: &ManualClock, n: usize) {
    for _ in 0..n {
        clock.advance(MINUTE);
    }
}

fn is_mute_removed(e: &ChatRoomEvent, who: &str) -> bool {
    matches!(e, ChatRoomEvent::MuteListRemoved { members, operator: None, .. }
        if members.iter().any(|m| m.as_str() == who))
}

// ---------------------------------------------------------------------------------------------
// Hibernation
// ---------------------------------------------------------------------------------------------

/// A mute that ends while the room sleeps: it stays in `pending_timers` until it falls, and is
/// applied when the room wakes, with its event (semantics: "Mute expiries that fall while it
/// sleeps are applied when it wakes, with their events").
#[tokio::test]
async fn a_mute_that_ends_while_the_room_sleeps_is_lifted_on_wake_with_its_event() {
    let clock = ManualClock::new(T0);
    let engine = engine_on(limits(), &clock, None).await;
    let owner = engine.login("owner").await.unwrap();
    let rooms = owner.chat_room_manager();
    let room = create_room(&owner, "r").await.room_id;
    let bob = join(&engine, "bob", room).await;
    rooms
        .mute_chat_room_members(&room, ["bob"], Duration::from_secs(10 * 60))
        .await
        .unwrap();
    bob.chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    owner.disconnect().unwrap(); // an offline owner: exempt, the room may sleep
    clock.advance(IDLE);
    asleep(&engine, 0).await;
    let e = engine.clone();
    until("the sleeping room's mute still pending", move || {
        e.pending_timers() == 1
    })
    .await;
    clock.advance(Duration::from_secs(5 * 60)); // the mute ends while it sleeps
    let e = engine.clone();
    until("the mute's deadline to fall", move || {
        e.pending_timers() == 0
    })
    .await;
    owner.reconnect().unwrap();
    let mutes = rooms.fetch_chat_room_mute_list(&room, 1, 10).await.unwrap();
    assert_eq!(
        mutes.total, 0,
        "the ended mute is gone once the room is awake"
    );
    // bob is not muted any more: he can rejoin and speak.
    bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    say(&bob, room, "free").await;
    engine.shutdown().await;
}

/// Destroying a sleeping room removes its deadlines, drops it from the list and from stats, and
/// tells its offline members `Destroyed` when they are back.
#[tokio::test]
async fn destroying_a_sleeping_room_removes_it_and_its_deadlines() {
    let clock = ManualClock::new(T0);
    let engine = engine_on(limits(), &clock, None).await;
    let owner = engine.login("owner").await.unwrap();
    let rooms = owner.chat_room_manager();
    let room = create_room(&owner, "doomed").await.room_id;
    let admin = join(&engine, "adm", room).await;
    rooms.add_chat_room_admin(&room, "adm").await.unwrap();
    let _bob = join(&engine, "bob", room).await;
    rooms
        .mute_chat_room_members(&room, ["bob"], Duration::from_secs(3_600))
        .await
        .unwrap();
    _bob.chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    let heard = record(&admin, "rec");
    admin.disconnect().unwrap();
    owner.disconnect().unwrap();
    clock.advance(IDLE);
    asleep(&engine, 0).await;
    owner.reconnect().unwrap();
    rooms.destroy_chat_room(&room).await.unwrap();
    assert_eq!(
        engine.pending_timers(),
        0,
        "destroying the room removes its deadlines"
    );
    assert_eq!(engine.room_stats(&room).await.unwrap_err().code(), 705);
    let list = rooms.fetch_public_chat_rooms(1, 20, None).await.unwrap();
    assert_eq!(list.total, 0);
    assert_eq!(
        rooms.fetch_chat_room_info(&room).await.unwrap_err().code(),
        705
    );
    admin.reconnect().unwrap();
    heard
        .wait_until("the admin to learn of the destruction", |e| {
            e.iter().any(|e| {
                matches!(
                    e,
                    ChatRoomEvent::RemovedFromChatRoom {
                        reason: LeaveReason::Destroyed,
                        ..
                    }
                )
            })
        })
        .await;
    // The user is in no room any more: its place is free.
    let again = engine.login("adm").await.unwrap();
    let other = create_room(&owner, "other").await.room_id;
    again
        .chat_room_manager()
        .join_chat_room(&other)
        .await
        .unwrap();
    engine.shutdown().await;
}

/// An ordinary member offline in a room that may otherwise sleep: it is still removed when its
/// grace period ends (it is not exempt), told `Offline` when back, and the room sleeps after.
#[tokio::test]
async fn an_offline_member_is_removed_on_time_around_hibernation() {
    let clock = ManualClock::new(T0);
    let engine = engine_on(
        limits().with_room_hibernate_after(Some(MINUTE)),
        &clock,
        None,
    )
    .await;
    let owner = engine.login("owner").await.unwrap();
    let room = create_room(&owner, "r").await.room_id;
    let bob = join(&engine, "bob", room).await;
    let heard_bob = record(&bob, "rec");
    owner
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    bob.disconnect().unwrap();
    sweeps(&clock, 3);
    // Bob is still a member (3 of 5 minutes).
    assert_eq!(engine.room_stats(&room).await.unwrap().member_count, 1);
    sweeps(&clock, 3);
    let e = engine.clone();
    let done = async {
        loop {
            if e.room_stats(&room).await.unwrap().member_count == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(DEADLINE, done)
        .await
        .expect("bob removed after his grace period");
    sweeps(&clock, 2);
    asleep(&engine, 0).await;
    bob.reconnect().unwrap();
    heard_bob
        .wait_until("bob told he was removed as offline", |e| {
            e.iter().any(|e| {
                matches!(
                    e,
                    ChatRoomEvent::RemovedFromChatRoom {
                        reason: LeaveReason::Offline,
                        ..
                    }
                )
            })
        })
        .await;
    let info = bob
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    assert_eq!(info.member_count, 0);
    engine.shutdown().await;
}

/// An exempt member who came back online while its room slept receives what is sent once the
/// room wakes (it is online, so it gets pushes).
#[tokio::test]
async fn a_member_back_online_in_a_sleeping_room_gets_messages_after_the_wake() {
    let clock = ManualClock::new(T0);
    let engine = engine_on(limits(), &clock, None).await;
    let owner = engine.login("owner").await.unwrap();
    let room = create_room(&owner, "r").await.room_id;
    let got = inbox(&owner, "inbox");
    owner.disconnect().unwrap();
    clock.advance(IDLE);
    asleep(&engine, 0).await;
    owner.reconnect().unwrap();
    let bob = join(&engine, "bob", room).await;
    say(&bob, room, "hello owner").await;
    got.wait_until("the owner to get bob's message", |i| {
        i.texts().contains(&"hello owner".to_string())
    })
    .await;
    engine.shutdown().await;
}

/// Same, but the owner's client was dropped while the room slept and the owner logs in anew.
#[tokio::test]
async fn an_owner_who_logs_in_again_after_the_room_slept_gets_messages() {
    let clock = ManualClock::new(T0);
    let engine = engine_on(limits(), &clock, None).await;
    let owner = engine.login("owner").await.unwrap();
    let room = create_room(&owner, "r").await.room_id;
    drop(owner);
    clock.advance(IDLE);
    asleep(&engine, 0).await;
    sweeps(&clock, 5);
    let owner = engine.login("owner").await.unwrap();
    let got = inbox(&owner, "inbox");
    let heard = record(&owner, "rec");
    let bob = join(&engine, "bob", room).await;
    heard
        .wait_until("bob's join", |e| e.contains(&joined(room, "bob")))
        .await;
    say(&bob, room, "hi").await;
    got.wait_for_count(1).await;
    let stats = engine.room_stats(&room).await.unwrap();
    assert_eq!((stats.member_count, stats.online_count), (2, 2));
    engine.shutdown().await;
}

/// Everything a room holds comes back from a sleep: owner (after a transfer), admins, mute-all,
/// block and allow lists, max members, description, its own limits, attributes with their
/// owners, and the local copy of a member who keeps copies.
#[tokio::test]
async fn every_room_setting_survives_a_sleep() {
    let clock = ManualClock::new(T0);
    let engine = engine_on(limits(), &clock, None).await;
    let owner = engine.login("owner").await.unwrap();
    let rooms = owner.chat_room_manager();
    let room = rooms
        .create_chat_room(
            CreateChatRoomOptions::new("settings")
                .with_description("desc")
                .with_max_users(50)
                .with_limits(
                    RoomLimits::default()
                        .with_offline_grace(Duration::from_secs(7_200))
                        .with_user_messages_per_window(Some((3, Duration::from_secs(10)))),
                ),
        )
        .await
        .unwrap()
        .room_id;
    let amy = join(&engine, "amy", room).await;
    let vip = join(&engine, "vip", room).await;
    let spam = join(&engine, "spam", room).await;
    rooms.add_chat_room_admin(&room, "amy").await.unwrap();
    rooms
        .add_members_to_chat_room_allow_list(&room, ["vip"])
        .await
        .unwrap();
    rooms
        .block_chat_room_members(&room, ["spam"])
        .await
        .unwrap();
    rooms.mute_all_chat_room_members(&room).await.unwrap();
    amy.chat_room_manager()
        .set_chat_room_attributes(&room, SetAttributes::new([("k", "amy's")]))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    rooms
        .update_chat_room_announcement(&room, "ann")
        .await
        .unwrap();
    rooms.change_owner(&room, "amy").await.unwrap();
    rooms.leave_chat_room(&room).await.unwrap();
    let before = amy
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    let members_before = amy
        .chat_room_manager()
        .fetch_chat_room_members(&room, None, 10)
        .await
        .unwrap()
        .data;
    amy.disconnect().unwrap();
    vip.disconnect().unwrap();
    drop(spam);
    clock.advance(IDLE);
    asleep(&engine, 0).await;

    amy.reconnect().unwrap();
    let after = amy
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    assert_eq!(after, before, "the room's info is as it was");
    assert_eq!(after.owner.as_str(), "amy");
    assert!(after.is_all_member_muted);
    let members_after = amy
        .chat_room_manager()
        .fetch_chat_room_members(&room, None, 10)
        .await
        .unwrap()
        .data;
    assert_eq!(members_after, members_before);
    // Lists.
    let blocked = amy
        .chat_room_manager()
        .fetch_chat_room_block_list(&room, 1, 10)
        .await
        .unwrap();
    assert_eq!(blocked.total, 1);
    let allowed = amy
        .chat_room_manager()
        .fetch_chat_room_allow_list(&room, 1, 10)
        .await
        .unwrap();
    assert_eq!(allowed.data, [uid("vip")]);
    let spam = engine.login("spam").await.unwrap();
    assert_eq!(
        spam.chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap_err()
            .code(),
        707
    );
    // Mute-all holds for a plain member; the allow-listed one is exempt.
    let joe = join(&engine, "joe", room).await;
    let sent = joe
        .chat_manager()
        .send_message(OutgoingMessage::text(room, "x"))
        .await;
    assert_eq!(sent.unwrap_err().code(), 219);
    vip.reconnect().unwrap();
    say(&vip, room, "vip speaks").await;
    // The attribute is still amy's: the former owner needs overwrite.
    let owner_rejoin = owner.chat_room_manager();
    owner_rejoin.join_chat_room(&room).await.unwrap();
    let failures = owner_rejoin
        .set_chat_room_attributes(&room, SetAttributes::new([("k", "mine")]))
        .await
        .unwrap();
    assert_eq!(failures.get("k").map(|e| e.code()), Some(703));
    engine.shutdown().await;
}

/// Sequence numbers continue without gaps or repeats across sleeps and a restart on a data
/// directory; stats of a room of a reopened store do not load it; a mute that ended while the
/// engine was down is lifted when the room loads.
#[tokio::test]
async fn sequence_numbers_continue_across_sleeps_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let engine = engine_on(limits(), &clock, Some(dir.path())).await;
    let owner = engine.login("owner").await.unwrap();
    let room = create_room(&owner, "r").await.room_id;
    let bob = join(&engine, "bob", room).await;
    owner
        .chat_room_manager()
        .mute_chat_room_members(&room, ["bob"], Duration::from_secs(30 * 60))
        .await
        .unwrap();
    bob.chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for cycle in 0..3 {
        for n in 0..3 {
            seqs.push(say(&owner, room, &format!("c{cycle}m{n}")).await.seq());
        }
        owner.disconnect().unwrap();
        clock.advance(IDLE);
        asleep(&engine, 0).await;
        owner.reconnect().unwrap();
    }
    let stats = engine.room_stats(&room).await.unwrap();
    assert_eq!(stats.last_seq, 9);
    engine.shutdown().await;
    drop((owner, bob));

    clock.advance(Duration::from_secs(3_600)); // the mute ends while the engine is down
    let engine = engine_on(limits(), &clock, Some(dir.path())).await;
    let stats = engine.room_stats(&room).await.unwrap();
    // (That this loads the room is room_stats_after_a_restart_does_not_load_the_room.)
    assert_eq!((stats.last_seq, stats.retained), (9, 9));
    let list = engine
        .login("viewer")
        .await
        .unwrap()
        .chat_room_manager()
        .fetch_public_chat_rooms(1, 10, None)
        .await
        .unwrap();
    assert_eq!(list.total, 1);
    let owner = engine.login("owner").await.unwrap();
    owner
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    for n in 0..2 {
        seqs.push(say(&owner, room, &format!("after{n}")).await.seq());
    }
    assert_eq!(seqs, (1..=11).collect::<Vec<u64>>());
    let history = owner
        .chat_manager()
        .fetch_history_messages(&room, HistoryQuery::after(0, 50))
        .await
        .unwrap();
    let hseqs: Vec<u64> = history.data.iter().map(|m| m.seq()).collect();
    assert_eq!(hseqs, (1..=11).collect::<Vec<u64>>());
    let mutes = owner
        .chat_room_manager()
        .fetch_chat_room_mute_list(&room, 1, 10)
        .await
        .unwrap();
    assert_eq!(mutes.total, 0);
    engine.shutdown().await;
}

/// Rooms a user is in count while those rooms sleep (the user's place is held, rooms-per-user is
/// exact) and rooms per engine count sleeping rooms.
#[tokio::test]
async fn limits_count_sleeping_rooms() {
    let clock = ManualClock::new(T0);
    let engine = engine_on(
        limits().with_max_rooms_per_user(2).with_max_rooms(3),
        &clock,
        None,
    )
    .await;
    let owner = engine.login("owner").await.unwrap();
    let rooms = owner.chat_room_manager();
    let a = create_room(&owner, "a").await.room_id;
    let b = create_room(&owner, "b").await.room_id;
    rooms.leave_chat_room(&a).await.unwrap();
    rooms.leave_chat_room(&b).await.unwrap();
    let adm = engine.login("adm").await.unwrap();
    for r in [a, b] {
        adm.chat_room_manager().join_chat_room(&r).await.unwrap();
        rooms.add_chat_room_admin(&r, "adm").await.unwrap();
    }
    drop(adm);
    let c = create_room(&owner, "c").await.room_id;
    rooms.leave_chat_room(&c).await.unwrap();
    clock.advance(IDLE);
    asleep(&engine, 0).await;
    sweeps(&clock, 5);
    let adm = engine.login("adm").await.unwrap();
    assert_eq!(
        adm.chat_room_manager()
            .join_chat_room(&c)
            .await
            .unwrap_err()
            .code(),
        4,
        "adm is still in two (sleeping) rooms"
    );
    let full = rooms
        .create_chat_room(CreateChatRoomOptions::new("d"))
        .await;
    assert_eq!(full.unwrap_err().code(), 4, "three rooms exist, asleep");
    engine.shutdown().await;
}

/// `room_hibernate_after: None` keeps every room; `Some(ZERO)` sleeps at the first check.
#[tokio::test]
async fn hibernate_after_none_and_zero() {
    let clock = ManualClock::new(T0);
    let engine = engine_on(limits().with_room_hibernate_after(None), &clock, None).await;
    let owner = engine.login("owner").await.unwrap();
    let room = create_room(&owner, "r").await.room_id;
    owner
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    for _ in 0..30 {
        clock.advance(Duration::from_secs(3_600));
        engine.room_stats(&room).await.unwrap();
    }
    assert_eq!(engine.rooms_in_memory(), 1);
    engine.shutdown().await;

    let clock = ManualClock::new(T0);
    let engine = engine_on(
        limits().with_room_hibernate_after(Some(Duration::ZERO)),
        &clock,
        None,
    )
    .await;
    let owner = engine.login("owner").await.unwrap();
    let room = create_room(&owner, "r").await.room_id;
    owner
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(61));
    asleep(&engine, 0).await;
    engine.shutdown().await;
}

/// A handler that calls back into the engine from an event the wake produces (the end of a
/// mute that fell while the room slept) gets its answer; nothing deadlocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_calling_into_the_engine_on_a_wake_event() {
    struct Reacts {
        client: ChatClient,
        rt: tokio::runtime::Handle,
        out: tokio::sync::mpsc::UnboundedSender<Result<usize, u32>>,
    }
    impl ChatRoomEventHandler for Reacts {
        fn on_mute_list_removed_from_chat_room(
            &self,
            room_id: &RoomId,
            _members: &[UserId],
            _operator: Option<&UserId>,
        ) {
            let client = self.client.clone();
            let out = self.out.clone();
            let room = *room_id;
            self.rt.spawn(async move {
                let r = client
                    .chat_room_manager()
                    .fetch_chat_room_mute_list(&room, 1, 10)
                    .await
                    .map(|p| p.total)
                    .map_err(|e| e.code());
                let _ = out.send(r);
                let sent = client
                    .chat_manager()
                    .send_message(OutgoingMessage::text(room, "welcome back"))
                    .await
                    .map(|_| 0)
                    .map_err(|e| e.code());
                let _ = out.send(sent);
            });
        }
    }
    let clock = ManualClock::new(T0);
    let engine = engine_on(limits(), &clock, None).await;
    let owner = engine.login("owner").await.unwrap();
    let room = create_room(&owner, "r").await.room_id;
    let bob = join(&engine, "bob", room).await;
    owner
        .chat_room_manager()
        .mute_chat_room_members(&room, ["bob"], Duration::from_secs(600))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    owner.chat_room_manager().add_event_handler(
        "reacts",
        Reacts {
            client: owner.clone(),
            rt: tokio::runtime::Handle::current(),
            out: tx,
        },
    );
    bob.disconnect().unwrap();
    owner.disconnect().unwrap();
    // Bob is allow-listed so that he is exempt too and the room sleeps.
    owner.reconnect().unwrap();
    owner
        .chat_room_manager()
        .add_members_to_chat_room_allow_list(&room, ["bob"])
        .await
        .unwrap();
    owner.disconnect().unwrap();
    clock.advance(IDLE);
    asleep(&engine, 0).await;
    clock.advance(Duration::from_secs(600));
    owner.reconnect().unwrap();
    let _ = owner
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    let first = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("handler ran");
    assert_eq!(first, Some(Ok(0)));
    let second = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("send ran");
    assert_eq!(second, Some(Ok(0)));
    engine.shutdown().await;
}

// FINDING: under calls racing hibernation over several rooms, acknowledged attributes and
// messages are missing afterwards (same cause as
// acknowledged_attributes_survive_hibernation_across_rooms: a room live twice).
/// Many tasks on a multi-thread runtime calling into rooms as they go to sleep (the clock moved
/// past the idle time continuously, `Some(ZERO)`): joins, sends, leaves, moderation, attributes,
/// stats, info, the list. Every call succeeds; nothing is lost; sequence numbers have no gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn everything_races_hibernation() {
    let clock = ManualClock::new(T0);
    let mut lim = limits().with_room_hibernate_after(Some(Duration::ZERO));
    lim.history_max_age = None; // the clock runs for weeks here
    let engine = engine_on(lim, &clock, None).await;
    let owner = engine.login("owner").await.unwrap();
    let mut room_ids = Vec::new();
    for n in 0..4 {
        let r = create_room(&owner, &format!("race{n}")).await.room_id;
        room_ids.push(r);
    }
    // The owner stays a member (offline, exempt) so moderation has a room owner.
    owner.disconnect().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let clock = clock.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                clock.advance(MINUTE);
                tokio::task::yield_now().await;
            }
        })
    };
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..8 {
        let engine = engine.clone();
        let room_ids = room_ids.clone();
        let sent = sent.clone();
        let owner = owner.clone();
        tasks.push(tokio::spawn(async move {
            let me = engine.login(format!("u{t}")).await.unwrap();
            let rooms = me.chat_room_manager();
            let own = owner.chat_room_manager();
            for i in 0..40 {
                let room = room_ids[(t + i) % room_ids.len()];
                rooms.join_chat_room(&room).await.expect("join");
                me.chat_manager()
                    .send_message(OutgoingMessage::text(room, format!("{t}-{i}")))
                    .await
                    .expect("send");
                sent.fetch_add(1, Ordering::Relaxed);
                rooms
                    .set_chat_room_attributes(
                        &room,
                        SetAttributes::new([(format!("k{t}-{i}"), "v")]),
                    )
                    .await
                    .expect("attributes")
                    .into_result()
                    .expect("attribute applied");
                own.mute_chat_room_members(&room, [format!("u{t}")], Duration::from_secs(30))
                    .await
                    .expect("mute");
                own.unmute_chat_room_members(&room, [format!("u{t}")])
                    .await
                    .expect("unmute");
                rooms.leave_chat_room(&room).await.expect("leave");
                engine.room_stats(&room).await.expect("stats");
                rooms.fetch_chat_room_info(&room).await.expect("info");
                let page = rooms
                    .fetch_public_chat_rooms(1, 10, Some("RACE"))
                    .await
                    .expect("list");
                assert_eq!(page.total, 4);
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("no call hangs")
            .expect("every call succeeds");
    }
    stop.store(true, Ordering::Relaxed);
    ticker.await.unwrap();
    owner.reconnect().unwrap();
    let mut total = 0;
    for room in &room_ids {
        let h = owner
            .chat_manager()
            .fetch_history_messages(room, HistoryQuery::after(0, 200))
            .await
            .unwrap();
        let seqs: Vec<u64> = h.data.iter().map(|m| m.seq()).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "no gaps or repeats"
        );
        total += seqs.len() as u64;
        let attrs = owner
            .chat_room_manager()
            .fetch_all_chat_room_attributes(room)
            .await
            .unwrap();
        let mut missing = Vec::new();
        for t in 0..8 {
            for i in 0..40 {
                if room_ids[(t + i) % room_ids.len()] == *room
                    && !attrs.contains_key(&format!("k{t}-{i}"))
                {
                    missing.push(format!("k{t}-{i}"));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "acknowledged attributes lost: {missing:?}"
        );
        let stats = engine.room_stats(room).await.unwrap();
        assert_eq!(stats.member_count, 1, "only the owner is left");
    }
    assert_eq!(total, sent.load(Ordering::Relaxed));
    assert_eq!(engine.pending_timers(), 0, "every mute was lifted");
    engine.shutdown().await;
}

/// A sleeping room destroyed while joins race the destruction: each join either succeeds (and
/// then its user is removed as `Destroyed`) or fails with 705; none hangs; the room is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_racing_the_destruction_of_a_sleeping_room() {
    for round in 0..10 {
        let clock = ManualClock::new(T0);
        let engine = engine_on(limits(), &clock, None).await;
        let owner = engine.login("owner").await.unwrap();
        let room = create_room(&owner, &format!("r{round}")).await.room_id;
        owner.disconnect().unwrap();
        clock.advance(IDLE);
        asleep(&engine, 0).await;
        owner.reconnect().unwrap();
        let mut joins = Vec::new();
        for t in 0..6 {
            let c = engine.login(format!("j{t}")).await.unwrap();
            joins.push(tokio::spawn(async move {
                let r = c.chat_room_manager().join_chat_room(&room).await;
                (c, r.map(|_| ()).map_err(|e| e.code()))
            }));
        }
        let own = owner.chat_room_manager();
        tokio::time::timeout(DEADLINE, own.destroy_chat_room(&room))
            .await
            .expect("no hang")
            .unwrap();
        for j in joins {
            let (c, r) = tokio::time::timeout(DEADLINE, j)
                .await
                .expect("no hang")
                .unwrap();
            assert!(matches!(r, Ok(()) | Err(705)), "join: {r:?}");
            // Whatever happened, the user is in no room: it can join another.
            let info = c.chat_room_manager().fetch_chat_room_info(&room).await;
            assert_eq!(info.unwrap_err().code(), 705);
        }
        assert_eq!(engine.room_stats(&room).await.unwrap_err().code(), 705);
        let e = engine.clone();
        until("no room in memory", move || e.rooms_in_memory() == 0).await;
        engine.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The public room list
// ---------------------------------------------------------------------------------------------

fn names(page: &roomcast::ChatPageResult<roomcast::ChatRoom>) -> Vec<String> {
    page.data.iter().map(|r| r.name.clone()).collect()
}

/// Page numbers and sizes at the bounds: page 0 and size 0 are 110, the engine's maximum passes
/// and one more is 110 (LIST_PAGE_MAX is for the room's own lists), a page far past the end is
/// empty with the true total, even where page x size overflows 32 bits.
#[tokio::test]
async fn public_list_bounds() {
    let (engine, owner) = engine_with_admin("owner").await;
    let rooms = owner.chat_room_manager();
    for n in 0..3 {
        create_room(&owner, &format!("room{n}")).await;
    }
    let max = engine.limits().public_room_page_max;
    assert_eq!(
        rooms
            .fetch_public_chat_rooms(0, 10, None)
            .await
            .unwrap_err()
            .code(),
        110
    );
    assert_eq!(
        rooms
            .fetch_public_chat_rooms(1, 0, None)
            .await
            .unwrap_err()
            .code(),
        110
    );
    assert_eq!(
        rooms
            .fetch_public_chat_rooms(1, max + 1, None)
            .await
            .unwrap_err()
            .code(),
        110
    );
    assert_eq!(
        rooms
            .fetch_public_chat_rooms(1, roomcast::LIST_PAGE_MAX, None)
            .await
            .unwrap_err()
            .code(),
        110
    );
    assert_eq!(
        rooms
            .fetch_public_chat_rooms(1, max, None)
            .await
            .unwrap()
            .data
            .len(),
        3
    );
    let one = rooms.fetch_public_chat_rooms(3, 1, None).await.unwrap();
    assert_eq!((names(&one), one.total), (vec!["room0".to_string()], 3));
    assert!(!one.has_more());
    for page in [4, 1_000, u32::MAX / 2, u32::MAX / max + 2, u32::MAX] {
        let p = tokio::time::timeout(DEADLINE, rooms.fetch_public_chat_rooms(page, max, None))
            .await
            .expect("answers")
            .unwrap();
        assert!(p.data.is_empty(), "page {page}");
        assert_eq!(p.total, 3, "page {page}");
        let p = rooms
            .fetch_public_chat_rooms(page, max, Some("ROOM"))
            .await
            .unwrap();
        assert!(p.data.is_empty(), "filtered page {page}");
        assert_eq!(p.total, 3, "filtered page {page}");
    }
    let all = rooms
        .fetch_public_chat_rooms(1, 10, Some(""))
        .await
        .unwrap();
    assert_eq!(all.total, 3, "an empty filter is contained in every name");
    engine.shutdown().await;
}

/// The name filter: substring, ignoring case, for non-ASCII names and filters too.
#[tokio::test]
async fn public_list_filter_unicode() {
    let (engine, owner) = engine_with_admin("owner").await;
    let rooms = owner.chat_room_manager();
    for name in [
        "Café Élan",
        "ÜBER alles",
        "straße",
        "日本語チャット",
        "plain",
        "ÉCOLE",
    ] {
        create_room(&owner, name).await;
    }
    let find = |f: &'static str| {
        let rooms = rooms.clone();
        async move {
            let mut n = names(&rooms.fetch_public_chat_rooms(1, 50, Some(f)).await.unwrap());
            n.sort();
            n
        }
    };
    assert_eq!(find("élan").await, ["Café Élan"]);
    assert_eq!(find("ÉLAN").await, ["Café Élan"]);
    assert_eq!(find("CAFÉ").await, ["Café Élan"]);
    assert_eq!(find("caf").await, ["Café Élan"]);
    assert_eq!(find("über").await, ["ÜBER alles"]);
    assert_eq!(find("Ü").await, ["ÜBER alles"]);
    assert_eq!(find("école").await, ["ÉCOLE"]);
    assert_eq!(find("é").await, ["Café Élan", "ÉCOLE"]);
    assert_eq!(find("STRASSE").await, Vec::<String>::new());
    assert_eq!(find("STRAßE").await, ["straße"]);
    assert_eq!(find("本語").await, ["日本語チャット"]);
    assert_eq!(find("e").await, ["straße", "ÉCOLE", "ÜBER alles"]);
    assert_eq!(find("AIN").await, ["plain"]);
    // No panic on odd case mappings (İ lowercases to two chars, ß uppercases to two).
    for f in ["İ", "i̇", "ẞ", "ﬃ", "Σ", "\u{0}", "🦀"] {
        rooms.fetch_public_chat_rooms(1, 50, Some(f)).await.unwrap();
    }
    engine.shutdown().await;
}

/// The filtered list follows changes: new rooms, renames in and out, destroyed rooms, member
/// counts (the first filtered page is the expensive one: a cache must not go stale).
#[tokio::test]
async fn public_list_filter_follows_changes() {
    let (engine, owner) = engine_with_admin("owner").await;
    let rooms = owner.chat_room_manager();
    let mut jazz = Vec::new();
    for n in 0..5 {
        jazz.push(create_room(&owner, &format!("jazz {n}")).await.room_id);
        create_room(&owner, &format!("rock {n}")).await;
    }
    let page = |p: u32| rooms.fetch_public_chat_rooms(p, 2, Some("JAZZ"));
    assert_eq!(page(1).await.unwrap().total, 5);
    assert_eq!(page(2).await.unwrap().total, 5);
    let fresh = create_room(&owner, "Jazz late").await.room_id;
    let p1 = page(1).await.unwrap();
    assert_eq!(p1.total, 6);
    assert_eq!(p1.data[0].room_id, fresh, "newest first");
    rooms
        .change_chat_room_name(&jazz[4], "blues")
        .await
        .unwrap();
    let p1 = page(1).await.unwrap();
    assert_eq!(p1.total, 5);
    assert_eq!(names(&p1), ["Jazz late", "jazz 3"]);
    let rock = rooms
        .fetch_public_chat_rooms(1, 10, Some("rock 0"))
        .await
        .unwrap()
        .data[0]
        .room_id;
    rooms
        .change_chat_room_name(&rock, "JAZZ rock")
        .await
        .unwrap();
    let all: Vec<String> = {
        let mut v = Vec::new();
        for p in 1..=4 {
            v.extend(names(&page(p).await.unwrap()));
        }
        v
    };
    // "rock 0" was created between "jazz 0" and "jazz 1".
    assert_eq!(
        all,
        [
            "Jazz late",
            "jazz 3",
            "jazz 2",
            "jazz 1",
            "JAZZ rock",
            "jazz 0"
        ]
    );
    rooms.destroy_chat_room(&jazz[2]).await.unwrap();
    let p2 = page(2).await.unwrap();
    assert_eq!(p2.total, 5);
    assert_eq!(names(&p2), ["jazz 1", "JAZZ rock"]);
    let _bob = join(&engine, "bob", jazz[1]).await;
    let p2 = page(2).await.unwrap();
    assert_eq!(p2.data[0].member_count, 2, "current member count");
    engine.shutdown().await;
}

/// The list of sleeping rooms: answered without waking them, with their names (after a rename
/// just before the sleep) and member counts (offline exempt members).
#[tokio::test]
async fn public_list_of_sleeping_rooms() {
    let clock = ManualClock::new(T0);
    let engine = engine_on(limits(), &clock, None).await;
    let owner = engine.login("owner").await.unwrap();
    let rooms = owner.chat_room_manager();
    let a = create_room(&owner, "alpha").await.room_id;
    let b = create_room(&owner, "beta").await.room_id;
    rooms
        .change_chat_room_name(&a, "Alpha Renamed")
        .await
        .unwrap();
    rooms.leave_chat_room(&b).await.unwrap();
    owner.disconnect().unwrap();
    clock.advance(IDLE);
    asleep(&engine, 0).await;
    let viewer = engine.login("viewer").await.unwrap();
    let page = viewer
        .chat_room_manager()
        .fetch_public_chat_rooms(1, 10, None)
        .await
        .unwrap();
    assert_eq!(engine.rooms_in_memory(), 0, "the list wakes nothing");
    assert_eq!(names(&page), ["beta", "Alpha Renamed"]);
    let counts: Vec<u32> = page.data.iter().map(|r| r.member_count).collect();
    assert_eq!(counts, [0, 1]);
    let found = viewer
        .chat_room_manager()
        .fetch_public_chat_rooms(1, 10, Some("renamed"))
        .await
        .unwrap();
    assert_eq!(found.total, 1);
    let gone = viewer
        .chat_room_manager()
        .fetch_public_chat_rooms(1, 10, Some("alpha"))
        .await
        .unwrap();
    assert_eq!(gone.total, 1);
    assert_eq!(
        engine.rooms_in_memory(),
        0,
        "the filtered list wakes nothing"
    );
    engine.shutdown().await;
}

// FINDING: with renames racing the list, a filtered page shows rooms whose name does not
// contain the filter, and holds fewer rooms than its `total` implies (see
// filtered_list_racing_renames_only_shows_matching_names).
/// Under concurrent creation, destruction and renames, every page is one consistent snapshot:
/// at most `size` rooms, no room twice, newest first, every name matching the filter, and as
/// many rooms as `total` leaves for that page.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn public_list_pages_are_consistent_under_churn() {
    let mut lim = limits();
    lim.max_rooms_per_user = 100_000;
    let clock = ManualClock::new(T0);
    let engine = engine_on(lim, &clock, None).await;
    let owner = engine.login("owner").await.unwrap();
    for n in 0..200 {
        let r = create_room(&owner, &format!("Base {n}")).await.room_id;
        owner.chat_room_manager().leave_chat_room(&r).await.unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let owner = owner.clone();
        let stop = stop.clone();
        let clock = clock.clone();
        writers.push(tokio::spawn(async move {
            let rooms = owner.chat_room_manager();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = rooms
                    .create_chat_room(CreateChatRoomOptions::new(format!("churn {w} {i}")))
                    .await
                    .unwrap()
                    .room_id;
                if i % 2 == 0 {
                    rooms
                        .change_chat_room_name(&r, format!("renamed {w} {i}"))
                        .await
                        .unwrap();
                }
                if i % 3 != 0 {
                    rooms.destroy_chat_room(&r).await.unwrap();
                } else {
                    rooms.leave_chat_room(&r).await.unwrap();
                }
                if i % 10 == 0 {
                    clock.advance(Duration::from_millis(1));
                }
                i += 1;
            }
        }));
    }
    let viewer = engine.login("viewer").await.unwrap();
    let rooms = viewer.chat_room_manager();
    let mut checked = 0;
    for round in 0..300 {
        let (filter, size) = match round % 4 {
            0 => (None, 7),
            1 => (Some("CHURN"), 5),
            2 => (Some("renamed"), 3),
            _ => (Some("base 1"), 10),
        };
        for p in 1..=6u32 {
            let page = rooms
                .fetch_public_chat_rooms(p, size, filter)
                .await
                .unwrap();
            let ids: HashSet<RoomId> = page.data.iter().map(|r| r.room_id).collect();
            assert_eq!(ids.len(), page.data.len(), "no room twice in a page");
            let skip = (p as usize - 1) * size as usize;
            let expect = page.total.saturating_sub(skip).min(size as usize);
            assert_eq!(
                page.data.len(),
                expect,
                "page {p} of {} by {size}",
                page.total
            );
            assert!(
                page.data
                    .windows(2)
                    .all(|w| w[0].created_at >= w[1].created_at),
                "newest first"
            );
            if let Some(f) = filter {
                for r in &page.data {
                    assert!(
                        r.name.to_lowercase().contains(&f.to_lowercase()),
                        "{:?} does not match {f:?}",
                        r.name
                    );
                }
            }
            checked += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let base = rooms
        .fetch_public_chat_rooms(1, 100, Some("base 1"))
        .await
        .unwrap();
    assert_eq!(base.total, 111); // "Base 1", "Base 10".."Base 19", "Base 100".."Base 199"
    eprintln!("{checked} pages checked");
    engine.shutdown().await;
}

/// `room_stats` of a sleeping room does not wake it, and neither does `pending_timers` or the
/// engine's other monitoring calls; `MuteDuration::Forever` survives a sleep as `None`.
#[tokio::test]
async fn monitoring_does_not_wake_and_forever_mutes_survive() {
    let clock = ManualClock::new(T0);
    let engine = engine_on(limits(), &clock, None).await;
    let owner = engine.login("owner").await.unwrap();
    let room = create_room(&owner, "r").await.room_id;
    let bob = join(&engine, "bob", room).await;
    owner
        .chat_room_manager()
        .mute_chat_room_members(&room, ["bob"], MuteDuration::Forever)
        .await
        .unwrap();
    bob.chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    owner.disconnect().unwrap();
    clock.advance(IDLE);
    asleep(&engine, 0).await;
    for _ in 0..5 {
        engine.room_stats(&room).await.unwrap();
        let _ = engine.pending_timers();
        let _ = engine.session_count();
    }
    assert_eq!(engine.rooms_in_memory(), 0);
    owner.reconnect().unwrap();
    let mutes = owner
        .chat_room_manager()
        .fetch_chat_room_mute_list(&room, 1, 10)
        .await
        .unwrap();
    assert_eq!(mutes.total, 1);
    assert_eq!(mutes.data[0].expire_time, None);
    engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Focused reproductions
// ---------------------------------------------------------------------------------------------

/// Sets attributes (one key per call, each acknowledged) from tasks that join, set and leave
/// while the room goes to sleep between calls; returns the keys acknowledged and the keys kept.
async fn attributes_across_sleeps(
    hibernate: Option<Duration>,
    moderate: bool,
    dir: Option<&std::path::Path>,
) -> (Vec<String>, Vec<String>) {
    let clock = ManualClock::new(T0);
    let mut lim = limits().with_room_hibernate_after(hibernate);
    lim.history_max_age = None;
    let engine = engine_on(lim, &clock, dir).await;
    let owner = engine.login("owner").await.unwrap();
    let room = create_room(&owner, "attrs").await.room_id;
    owner.disconnect().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let clock = clock.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                clock.advance(MINUTE);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = Vec::new();
    for t in 0..6 {
        let engine = engine.clone();
        let own = owner.chat_room_manager();
        tasks.push(tokio::spawn(async move {
            let me = engine.login(format!("u{t}")).await.unwrap();
            let rooms = me.chat_room_manager();
            let mut acked = Vec::new();
            for i in 0..12 {
                if moderate {
                    own.mute_chat_room_members(&room, [format!("u{t}")], MINUTE)
                        .await
                        .ok();
                    own.unmute_chat_room_members(&room, [format!("u{t}")])
                        .await
                        .unwrap();
                }
                rooms.join_chat_room(&room).await.expect("join");
                let key = format!("k{t}-{i}");
                rooms
                    .set_chat_room_attributes(&room, SetAttributes::new([(key.clone(), "v")]))
                    .await
                    .expect("set")
                    .into_result()
                    .expect("applied");
                acked.push(key);
                rooms.leave_chat_room(&room).await.expect("leave");
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    ticker.await.unwrap();
    owner.reconnect().unwrap();
    let kept = owner
        .chat_room_manager()
        .fetch_all_chat_room_attributes(&room)
        .await
        .unwrap();
    let mut kept: Vec<String> = kept.keys().cloned().collect();
    acked.sort();
    kept.sort();
    engine.shutdown().await;
    (acked, kept)
}

/// Holds: with one room, attributes acknowledged between sleeps are all kept (with and without
/// moderation in between, temporary store and data directory). Compare
/// acknowledged_attributes_survive_hibernation_across_rooms, which fails with two rooms or more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_attributes_survive_hibernation_races() {
    let (acked, kept) = attributes_across_sleeps(None, true, None).await;
    assert_eq!(
        kept, acked,
        "control: without hibernation every key is kept"
    );
    let mut report = Vec::new();
    for moderate in [false, true] {
        for durable in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let dir = durable.then(|| dir.path());
            let (acked, kept) = attributes_across_sleeps(Some(Duration::ZERO), moderate, dir).await;
            let lost: Vec<&String> = acked.iter().filter(|k| !kept.contains(k)).collect();
            if !lost.is_empty() {
                report.push(format!(
                    "moderate {moderate} durable {durable}: lost {lost:?}"
                ));
            }
        }
    }
    assert!(
        report.is_empty(),
        "acknowledged keys lost across sleeps: {report:#?}"
    );
}

// FINDING: `Engine::room_stats` on a room of a reopened store loads it into memory; the docs
// say a room not in memory is answered without waking it ("as a room of a reopened store is").
#[tokio::test]
async fn room_stats_after_a_restart_does_not_load_the_room() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let engine = engine_on(limits(), &clock, Some(dir.path())).await;
    let owner = engine.login("owner").await.unwrap();
    let room = create_room(&owner, "r").await.room_id;
    say(&owner, room, "hello").await;
    engine.shutdown().await;
    drop(owner);
    let engine = engine_on(limits(), &clock, Some(dir.path())).await;
    assert_eq!(
        engine.rooms_in_memory(),
        0,
        "a reopened store loads rooms lazily"
    );
    let stats = engine.room_stats(&room).await.unwrap();
    assert_eq!(
        (stats.member_count, stats.last_seq, stats.retained),
        (0, 1, 1)
    );
    assert_eq!(
        engine.rooms_in_memory(),
        0,
        "room_stats does not load the room"
    );
    engine.shutdown().await;
}

// FINDING: a filtered page of the public room list that races a rename returns a room whose
// (new) name does not contain the filter, and pages whose length disagrees with their `total`.
// The docs: "only the rooms whose name contains `name_contains`".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filtered_list_racing_renames_only_shows_matching_names() {
    let (engine, owner) = engine_with(limits(), None, "owner").await;
    let rooms = owner.chat_room_manager();
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(create_room(&owner, &format!("aaa {n}")).await.room_id);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let renamer = {
        let rooms = rooms.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let id = ids[(i as usize) % ids.len()];
                let name = if (i / 4) % 2 == 0 { "bbb" } else { "aaa" };
                rooms
                    .change_chat_room_name(&id, format!("{name} {i}"))
                    .await
                    .unwrap();
                i += 1;
            }
        })
    };
    let viewer = engine.login("viewer").await.unwrap();
    let list = viewer.chat_room_manager();
    let mut bad = Vec::new();
    for _ in 0..3_000 {
        let page = list
            .fetch_public_chat_rooms(1, 10, Some("aaa"))
            .await
            .unwrap();
        for r in &page.data {
            if !r.name.contains("aaa") {
                bad.push(format!("shown {:?}", r.name));
            }
        }
        if page.data.len() != page.total.min(10) {
            bad.push(format!("{} rooms, total {}", page.data.len(), page.total));
        }
    }
    stop.store(true, Ordering::Relaxed);
    renamer.await.unwrap();
    engine.shutdown().await;
    assert!(
        bad.is_empty(),
        "{} bad pages, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}

// Note: passes almost always; it failed twice in about 30 full runs of this file under load
// (message not captured, cause not pinned). Treat a failure here as a lead, not a finding.
/// The owner is back online before a mute of its sleeping room ends: it hears the end (with
/// the engine as operator) by the time the room answers a call.
#[tokio::test]
async fn an_online_owner_hears_a_mute_end_that_falls_while_the_room_sleeps() {
    let clock = ManualClock::new(T0);
    let engine = engine_on(limits(), &clock, None).await;
    let owner = engine.login("owner").await.unwrap();
    let rooms = owner.chat_room_manager();
    let room = create_room(&owner, "r").await.room_id;
    let bob = join(&engine, "bob", room).await;
    rooms
        .mute_chat_room_members(&room, ["bob"], Duration::from_secs(10 * 60))
        .await
        .unwrap();
    bob.chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    let heard = record(&owner, "rec");
    owner.disconnect().unwrap();
    clock.advance(IDLE);
    asleep(&engine, 0).await;
    owner.reconnect().unwrap();
    clock.advance(Duration::from_secs(5 * 60));
    let e = engine.clone();
    until("the deadline to fall", move || e.pending_timers() == 0).await;
    assert_eq!(
        rooms
            .fetch_chat_room_mute_list(&room, 1, 10)
            .await
            .unwrap()
            .total,
        0
    );
    heard
        .wait_until("the mute's end", |e| {
            e.iter().any(|e| is_mute_removed(e, "bob"))
        })
        .await;
    engine.shutdown().await;
}

#[derive(Clone, Copy, Debug)]
struct Mix {
    hibernate: Option<Duration>,
    tasks: usize,
    rooms: usize,
    send: bool,
    moderate: bool,
    reads: bool,
}

static SEQS: std::sync::Mutex<Vec<(RoomId, u64)>> = std::sync::Mutex::new(Vec::new());

/// Returns the acknowledged attribute keys lost.
async fn race_mix(mix: Mix) -> Vec<String> {
    SEQS.lock().unwrap().clear();
    let clock = ManualClock::new(T0);
    let mut lim = limits().with_room_hibernate_after(mix.hibernate);
    lim.history_max_age = None;
    let engine = engine_on(lim, &clock, None).await;
    let owner = engine.login("owner").await.unwrap();
    let mut room_ids = Vec::new();
    for n in 0..mix.rooms {
        room_ids.push(create_room(&owner, &format!("race{n}")).await.room_id);
    }
    owner.disconnect().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ticker = {
        let clock = clock.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                clock.advance(MINUTE);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = Vec::new();
    for t in 0..mix.tasks {
        let engine = engine.clone();
        let room_ids = room_ids.clone();
        let owner = owner.clone();
        tasks.push(tokio::spawn(async move {
            let me = engine.login(format!("u{t}")).await.unwrap();
            let rooms = me.chat_room_manager();
            let own = owner.chat_room_manager();
            let mut acked = Vec::new();
            for i in 0..96 * mix.rooms / mix.tasks {
                let room = room_ids[(t + i) % room_ids.len()];
                rooms.join_chat_room(&room).await.expect("join");
                if mix.send {
                    let m = me
                        .chat_manager()
                        .send_message(OutgoingMessage::text(room, "x"))
                        .await
                        .expect("send");
                    SEQS.lock().unwrap().push((room, m.seq()));
                }
                let key = format!("k{t}-{i}");
                rooms
                    .set_chat_room_attributes(&room, SetAttributes::new([(key.clone(), "v")]))
                    .await
                    .expect("set")
                    .into_result()
                    .expect("applied");
                acked.push((room, key));
                if mix.moderate {
                    own.mute_chat_room_members(&room, [format!("u{t}")], Duration::from_secs(30))
                        .await
                        .expect("mute");
                    own.unmute_chat_room_members(&room, [format!("u{t}")])
                        .await
                        .expect("unmute");
                }
                rooms.leave_chat_room(&room).await.expect("leave");
                if mix.reads {
                    engine.room_stats(&room).await.expect("stats");
                    rooms.fetch_chat_room_info(&room).await.expect("info");
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    ticker.await.unwrap();
    owner.reconnect().unwrap();
    let mut lost = Vec::new();
    for room in &room_ids {
        let attrs = owner
            .chat_room_manager()
            .fetch_all_chat_room_attributes(room)
            .await
            .unwrap();
        for (r, k) in &acked {
            if r == room && !attrs.contains_key(k) {
                lost.push(k.clone());
            }
            if r != room && attrs.contains_key(k) {
                lost.push(format!("{k} in the wrong room"));
            }
        }
        if mix.send {
            let h = owner
                .chat_manager()
                .fetch_history_messages(room, HistoryQuery::after(0, 200))
                .await
                .unwrap();
            let want = acked.iter().filter(|(r, _)| r == room).count();
            if h.data.len() != want {
                lost.push(format!("{} of {want} messages in history", h.data.len()));
            }
            let mut acked: Vec<u64> = SEQS
                .lock()
                .unwrap()
                .iter()
                .filter(|(r, _)| r == room)
                .map(|(_, s)| *s)
                .collect();
            acked.sort();
            let n = acked.len();
            acked.dedup();
            if acked.len() != n {
                lost.push(format!("{} sequence numbers given twice", n - acked.len()));
            }
        }
    }
    engine.shutdown().await;
    lost
}

// FINDING: with two or more rooms going to sleep and waking under calls (join, send, set an
// attribute, leave; `room_hibernate_after: Some(ZERO)`), one room is served twice: two sends
// are acknowledged with the same sequence number, acknowledged messages are missing from
// history and acknowledged attributes are gone. The same run without hibernation, and one
// room with four tasks, lose nothing. Docs: a hibernated room wakes with its attributes "as
// they were", and "a call in flight holds the room, so no call is lost to a hibernation".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_attributes_survive_hibernation_across_rooms() {
    let base = Mix {
        hibernate: None,
        tasks: 8,
        rooms: 4,
        send: true,
        moderate: false,
        reads: false,
    };
    let lost = race_mix(base).await;
    assert!(lost.is_empty(), "control without hibernation: {lost:?}");
    let mut report = Vec::new();
    for (tasks, rooms) in [(8, 4), (2, 2), (4, 1)] {
        let mix = Mix {
            hibernate: Some(Duration::ZERO),
            tasks,
            rooms,
            ..base
        };
        let lost = race_mix(mix).await;
        if !lost.is_empty() {
            report.push(format!(
                "{tasks} tasks over {rooms} rooms: {} lost: {lost:?}",
                lost.len()
            ));
        }
    }
    assert!(report.is_empty(), "{report:#?}");
}

/// Without renames: pages racing creations and destructions agree with their own `total`
/// (filtered and not).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_pages_agree_with_their_total_under_create_and_destroy() {
    let (engine, owner) =
        engine_with(limits().with_max_rooms_per_user(100_000), None, "owner").await;
    for n in 0..30 {
        create_room(&owner, &format!("keep {n}")).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let rooms = owner.chat_room_manager();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = rooms
                    .create_chat_room(CreateChatRoomOptions::new(format!("keep churn {i}")))
                    .await
                    .unwrap()
                    .room_id;
                rooms.destroy_chat_room(&r).await.unwrap();
                i += 1;
            }
        })
    };
    let viewer = engine.login("viewer").await.unwrap();
    let list = viewer.chat_room_manager();
    let mut bad = Vec::new();
    for round in 0..2_000u32 {
        let filter = if round % 2 == 0 { None } else { Some("KEEP") };
        let p = 1 + round % 4;
        let page = list.fetch_public_chat_rooms(p, 10, filter).await.unwrap();
        let expect = page.total.saturating_sub((p as usize - 1) * 10).min(10);
        if page.data.len() != expect {
            bad.push(format!(
                "{filter:?} page {p}: {} rooms, total {}",
                page.data.len(),
                page.total
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    churn.await.unwrap();
    engine.shutdown().await;
    assert!(
        bad.is_empty(),
        "{} bad pages, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
}
