//! Idle rooms leave memory and come back on their next use, transparently.

use std::time::Duration;

use roomcast::{ChatRoomEvent, HistoryQuery, ManualClock, SetAttributes};

use crate::support::*;

const IDLE: Duration = Duration::from_secs(6 * 60);

/// Polls until `engine` has `n` rooms in memory.
async fn rooms_in_memory(engine: &roomcast::Engine, n: usize) {
    let done = async {
        while engine.rooms_in_memory() != n {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(DEADLINE, done)
        .await
        .unwrap_or_else(|_| panic!("{} rooms in memory, not {n}", engine.rooms_in_memory()));
}

/// An empty room hibernates after its idle time and wakes as it was: history, attributes, the
/// mute list with its end (and the mute ends on time after the wake), the announcement.
#[tokio::test]
async fn an_idle_empty_room_hibernates_and_wakes_as_it_was() {
    let clock = ManualClock::new(1_700_000_000_000);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "night").await.room_id;
    let rooms = owner.chat_room_manager();
    let spammer = join(&engine, "spammer", room).await;
    rooms
        .mute_chat_room_members(&room, ["spammer"], Duration::from_secs(3_600))
        .await
        .unwrap();
    spammer
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    rooms
        .set_chat_room_attributes(&room, SetAttributes::new([("topic", "jazz")]))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    rooms
        .update_chat_room_announcement(&room, "back at 9")
        .await
        .unwrap();
    for n in 1..=3 {
        say(&owner, room, &format!("m{n}")).await;
    }
    rooms.leave_chat_room(&room).await.unwrap();
    let mutes_before = rooms.fetch_chat_room_mute_list(&room, 1, 10).await.unwrap();

    clock.advance(IDLE);
    rooms_in_memory(&engine, 0).await;

    // A viewer joins: the room wakes, replays its newest messages, and holds what it held.
    let viewer = engine.login("viewer").await.unwrap();
    let got = inbox(&viewer, "inbox");
    viewer
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    got.wait_for_count(3).await;
    assert_eq!(got.texts(), ["m1", "m2", "m3"]);
    assert_eq!(engine.rooms_in_memory(), 1);
    let attrs = viewer
        .chat_room_manager()
        .fetch_all_chat_room_attributes(&room)
        .await
        .unwrap();
    assert_eq!(attrs["topic"], "jazz");
    assert_eq!(
        viewer
            .chat_room_manager()
            .fetch_chat_room_announcement(&room)
            .await
            .unwrap(),
        "back at 9"
    );
    let history = viewer
        .chat_manager()
        .fetch_history_messages(&room, HistoryQuery::newest(10))
        .await
        .unwrap();
    assert_eq!(history.data.len(), 3);
    // The owner, back, sees the same mute list, and the mute ends on time.
    rooms.join_chat_room(&room).await.unwrap();
    assert_eq!(
        rooms.fetch_chat_room_mute_list(&room, 1, 10).await.unwrap(),
        mutes_before
    );
    let heard = record(&owner, "rec");
    clock.advance(Duration::from_secs(3_600));
    heard
        .wait_until("the mute to end", |e| {
            e.iter()
                .any(|e| matches!(e, ChatRoomEvent::MuteListRemoved { .. }))
        })
        .await;
    assert_eq!(
        rooms
            .fetch_chat_room_mute_list(&room, 1, 10)
            .await
            .unwrap()
            .total,
        0
    );
    engine.shutdown().await;
}

/// A room whose only member is its owner, offline (exempt from the offline rule), hibernates;
/// the owner is still its owner and member when it wakes, and no recovery notice is sent.
#[tokio::test]
async fn a_room_with_only_an_offline_owner_hibernates_and_keeps_it() {
    let clock = ManualClock::new(1_700_000_000_000);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let heard = record(&owner, "rec");
    owner.disconnect().unwrap();
    clock.advance(IDLE);
    rooms_in_memory(&engine, 0).await;
    owner.reconnect().unwrap();
    let info = owner
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    assert_eq!(info.member_count, 1, "the owner is still in it");
    assert_eq!(info.owner.as_str(), "owner");
    // Still a member: it can send without joining again.
    say(&owner, room, "I'm back").await;
    let viewer = join(&engine, "viewer", room).await;
    heard
        .wait_until("the viewer's join", |e| e.contains(&joined(room, "viewer")))
        .await;
    assert!(
        !heard
            .events()
            .iter()
            .any(|e| matches!(e, ChatRoomEvent::ChatRoomRecovered { .. })),
        "a wake is not a recovery: {:?}",
        heard.events()
    );
    drop(viewer);
    engine.shutdown().await;
}

/// A room with an online member, or one called within its idle time, stays in memory.
#[tokio::test]
async fn a_room_with_an_online_member_or_recent_calls_stays() {
    let clock = ManualClock::new(1_700_000_000_000);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let busy = create_room(&owner, "busy").await.room_id;
    let quiet = create_room(&owner, "quiet").await.room_id;
    owner
        .chat_room_manager()
        .leave_chat_room(&quiet)
        .await
        .unwrap();
    let viewer = engine.login("viewer").await.unwrap();
    for _ in 0..3 {
        clock.advance(Duration::from_secs(2 * 60));
        // A call every two minutes keeps the quiet room awake.
        viewer
            .chat_room_manager()
            .fetch_chat_room_info(&quiet)
            .await
            .unwrap();
    }
    clock.advance(Duration::from_secs(2 * 60));
    // A sweep has run (minutes passed); give it a moment, then both are still in memory.
    owner
        .chat_room_manager()
        .fetch_chat_room_info(&busy)
        .await
        .unwrap();
    assert_eq!(engine.rooms_in_memory(), 2);
    clock.advance(IDLE);
    rooms_in_memory(&engine, 1).await; // the quiet one goes; the owner is online in the busy one
    engine.shutdown().await;
}

/// Calls racing hibernation, many times over, all succeed: a call that holds a room keeps it,
/// and a room that went is loaded again; every message is kept, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_racing_hibernation_all_succeed() {
    let clock = ManualClock::new(1_700_000_000_000);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "flicker").await.room_id;
    owner
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    let mut clients = Vec::new();
    for t in 0..6 {
        clients.push(engine.login(format!("u{t}")).await.unwrap());
    }
    let mut asleep = 0;
    let mut sent = 0;
    for round in 0..60 {
        // The sweep's hibernation request goes out as the calls start; every other round it
        // gets a head start.
        clock.advance(IDLE);
        if round % 10 == 0 {
            // Now and then, all the way: the calls below wake it.
            rooms_in_memory(&engine, 0).await;
        } else if round % 2 == 0 {
            for _ in 0..(round % 7) * 20 {
                tokio::task::yield_now().await;
            }
        }
        asleep += usize::from(engine.rooms_in_memory() == 0);
        let calls: Vec<_> = clients
            .iter()
            .map(|client| {
                let client = client.clone();
                tokio::spawn(async move {
                    let rooms = client.chat_room_manager();
                    rooms.join_chat_room(&room).await.expect("join");
                    client
                        .chat_manager()
                        .send_message(roomcast::OutgoingMessage::text(room, "hi"))
                        .await
                        .expect("send");
                    rooms.leave_chat_room(&room).await.expect("leave");
                    rooms.fetch_chat_room_info(&room).await.expect("info");
                })
            })
            .collect();
        for c in calls {
            c.await.expect("no call failed");
            sent += 1;
        }
    }
    eprintln!("{sent} sends, the room seen asleep before {asleep} of 60 rounds");
    assert!(asleep > 0, "the room hibernated at least once");
    let auditor = engine.login("auditor").await.unwrap();
    auditor
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    let page = auditor
        .chat_manager()
        .fetch_history_messages(&room, HistoryQuery::newest(200))
        .await
        .unwrap();
    let seqs: Vec<u64> = page.data.iter().map(|m| m.seq()).collect();
    assert_eq!(seqs[0], sent as u64, "every acknowledged message is kept");
    assert!(
        seqs.windows(2).all(|w| w[0] == w[1] + 1),
        "no gaps: {seqs:?}"
    );
    engine.shutdown().await;
}

/// Offline owner and admin whose clients were dropped (not disconnected) stay members of a
/// sleeping room however long it sleeps, and come back in the order they joined (found by a
/// review: their sessions were swept while the room slept).
#[tokio::test]
async fn members_whose_clients_were_dropped_stay_members_in_join_order() {
    let clock = ManualClock::new(1_700_000_000_000);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "r").await.room_id;
    let mut admins = Vec::new();
    for name in ["zed", "amy", "mia"] {
        admins.push(join(&engine, name, room).await);
        owner
            .chat_room_manager()
            .add_chat_room_admin(&room, name)
            .await
            .unwrap();
    }
    let order_before = owner
        .chat_room_manager()
        .fetch_chat_room_members(&room, None, 10)
        .await
        .unwrap()
        .data;
    drop(admins);
    drop(owner);
    clock.advance(IDLE);
    rooms_in_memory(&engine, 0).await;
    for _ in 0..10 {
        clock.advance(Duration::from_secs(60)); // sweeps
    }
    let owner = engine.login("owner").await.unwrap();
    let members = owner
        .chat_room_manager()
        .fetch_chat_room_members(&room, None, 10)
        .await
        .unwrap()
        .data;
    assert_eq!(members, order_before);
    engine.shutdown().await;
}

/// A room does not sleep while a member's message window runs: leaving and coming back after a
/// long idle time does not reset a spammer's window (found by a review).
#[tokio::test]
async fn a_running_message_window_keeps_the_room_awake() {
    let clock = ManualClock::new(1_700_000_000_000);
    let mut limits = unthrottled();
    limits.user_messages_per_window = Some((2, Duration::from_secs(3_600)));
    let (engine, owner) = engine_with(limits, Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "r").await.room_id;
    owner
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    // A room with no window running: asleep once the sweep has asked both rooms to sleep.
    let control = create_room(&owner, "control").await.room_id;
    owner
        .chat_room_manager()
        .leave_chat_room(&control)
        .await
        .unwrap();
    let spammer = join(&engine, "spammer", room).await;
    let chat = spammer.chat_manager();
    let send = || chat.send_message(roomcast::OutgoingMessage::text(room, "x"));
    send().await.unwrap();
    send().await.unwrap();
    assert_eq!(send().await.unwrap_err().code(), 509);
    spammer
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    clock.advance(IDLE);
    // The sweep asked both rooms; the control went. The window's room stays in memory; had it
    // slept, the rejoin below would find the window reset.
    rooms_in_memory(&engine, 1).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(engine.rooms_in_memory(), 1, "the window's room stays awake");
    spammer
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    assert_eq!(send().await.unwrap_err().code(), 509, "the window stands");
    // Once the window is over the room may sleep.
    spammer
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(3_600));
    rooms_in_memory(&engine, 0).await;
    engine.shutdown().await;
}

/// A member offline (allow-listed, so exempt) in a room that slept is removed at once when it
/// loses its exemption after its grace period has passed: its time away counts from when it
/// went, not from the wake.
#[tokio::test]
async fn time_away_counts_from_when_the_member_went_across_a_wake() {
    let clock = ManualClock::new(1_700_000_000_000);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "r").await.room_id;
    let vip = join(&engine, "vip", room).await;
    let rooms = owner.chat_room_manager();
    rooms
        .add_members_to_chat_room_allow_list(&room, ["vip"])
        .await
        .unwrap();
    rooms.leave_chat_room(&room).await.unwrap();
    vip.disconnect().unwrap();
    clock.advance(IDLE);
    rooms_in_memory(&engine, 0).await;
    clock.advance(Duration::from_secs(4 * 60)); // away 10 minutes, grace 5
    rooms
        .remove_members_from_chat_room_allow_list(&room, ["vip"])
        .await
        .unwrap();
    let gone = async {
        while rooms
            .fetch_chat_room_info(&room)
            .await
            .unwrap()
            .member_count
            > 0
        {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(DEADLINE, gone)
        .await
        .expect("removed at once, not a grace period after the wake");
    engine.shutdown().await;
}

/// `Engine::room_stats` answers for a sleeping room without waking it (a monitoring loop over
/// every room must not keep them all in memory): members, who is online, the last sequence
/// number and what is retained, as the room had them.
#[tokio::test]
async fn room_stats_of_a_sleeping_room_do_not_wake_it() {
    let clock = ManualClock::new(1_700_000_000_000);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "r").await.room_id;
    for n in 1..=4 {
        say(&owner, room, &format!("m{n}")).await;
    }
    owner.disconnect().unwrap();
    clock.advance(IDLE);
    rooms_in_memory(&engine, 0).await;
    let stats = engine.room_stats(&room).await.unwrap();
    assert_eq!(engine.rooms_in_memory(), 0, "still asleep");
    assert_eq!(
        (
            stats.member_count,
            stats.online_count,
            stats.last_seq,
            stats.retained
        ),
        (1, 0, 4, 4)
    );
    owner.reconnect().unwrap();
    let stats = engine.room_stats(&room).await.unwrap();
    assert_eq!((stats.online_count, engine.rooms_in_memory()), (1, 0));
    engine.shutdown().await;
}

/// A timed block that ends while its room sleeps is lifted, and logged at its end, when the
/// room next runs; one that ends later keeps its end across the wake and ends on time.
#[tokio::test]
async fn timed_blocks_end_across_a_sleep() {
    const T0: i64 = 1_700_000_000_000;
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "night").await.room_id;
    let bob = join(&engine, "bob", room).await;
    let rooms = owner.chat_room_manager();
    rooms
        .with_reason("spam")
        .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(10 * 60))
        .await
        .unwrap();
    rooms
        .block_chat_room_members_for(&room, ["carol"], Duration::from_secs(30 * 60))
        .await
        .unwrap();
    owner.disconnect().unwrap();
    clock.advance(IDLE);
    rooms_in_memory(&engine, 0).await;
    clock.advance(Duration::from_secs(5 * 60)); // bob's block ends while the room sleeps
    owner.reconnect().unwrap();
    let expired = async {
        loop {
            let log = rooms
                .fetch_chat_room_audit_log(&room, None, 10)
                .await
                .unwrap();
            if log.data[0].action == roomcast::AuditAction::BlockExpired {
                return log.data[0].clone();
            }
            tokio::task::yield_now().await;
        }
    };
    let entry = tokio::time::timeout(DEADLINE, expired)
        .await
        .expect("the block that ended in its sleep is logged on the wake");
    assert_eq!(
        (entry.time, entry.operator, entry.targets),
        (T0 + 10 * 60_000, None, vec![uid("bob")])
    );
    let list = rooms
        .fetch_chat_room_block_list(&room, 1, 10)
        .await
        .unwrap();
    let list: Vec<_> = list
        .data
        .iter()
        .map(|b| (b.user_id.as_str(), b.expire_time))
        .collect();
    assert_eq!(list, [("carol", Some(T0 + 30 * 60_000))]);
    bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    // Carol's ends on time after the wake.
    let carol = engine.login("carol").await.unwrap();
    let err = carol.chat_room_manager().join_chat_room(&room).await;
    assert_eq!(err.unwrap_err().code(), 707);
    clock.advance(Duration::from_secs(19 * 60));
    let ended = async {
        while rooms
            .fetch_chat_room_block_list(&room, 1, 10)
            .await
            .unwrap()
            .total
            > 0
            || !rooms
                .fetch_chat_room_audit_log(&room, None, 1)
                .await
                .unwrap()
                .data[0]
                .targets
                .contains(&uid("carol"))
        {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(DEADLINE, ended)
        .await
        .expect("carol's block ended");
    carol
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    engine.shutdown().await;
}
