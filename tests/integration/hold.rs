//! Hold for review (Twitch's chat delay), through the public API: messages of members who are
//! not staff reach the staff at once, marked, and everyone else once the hold has passed on the
//! engine clock (a `ManualClock`: no sleeps), in the room's order; a deletion during the hold
//! keeps them from the others; history and replay hide them until then; the hold and the
//! release times survive a restart.

use std::sync::Arc;
use std::time::Duration;

use roomcast::{
    AuditAction, ChatMessage, ChatRoomEvent, ClientEvent, Engine, EventStream, HistoryQuery,
    ManualClock, OutgoingMessage, RoomId,
};

use crate::support::*;

const T0: i64 = 1_700_000_000_000;

/// What `stream` gets up to and including its next room event: the messages before it, and
/// the event.
async fn until_event(stream: &mut EventStream) -> (Vec<ChatMessage>, ChatRoomEvent) {
    let mut messages = Vec::new();
    loop {
        match next_event(stream).await {
            Some(ClientEvent::Room(e)) => return (messages, (*e).clone()),
            Some(ClientEvent::Message(m)) => messages.push(m),
            Some(other) => panic!("{other:?}"),
            None => panic!("the stream ended"),
        }
    }
}

/// Skips `stream` past the next `HoldChanged` (events from before it, joins say, included).
async fn past_hold_changed(stream: &mut EventStream) {
    while !matches!(
        until_event(stream).await.1,
        ChatRoomEvent::HoldChanged { .. }
    ) {}
}

/// A room event the owner causes for every other member: a marker in their streams (events
/// are never held, so whatever a member got before it had been released before it).
async fn marker(owner: &roomcast::ChatClient, room: RoomId, n: u32) {
    owner
        .chat_room_manager()
        .update_chat_room_announcement(&room, format!("marker {n}"))
        .await
        .unwrap();
}

fn texts(messages: &[ChatMessage]) -> Vec<&str> {
    messages.iter().filter_map(|m| m.text()).collect()
}

async fn newest(client: &roomcast::ChatClient, room: RoomId) -> Vec<ChatMessage> {
    client
        .chat_manager()
        .fetch_history_messages(&room, HistoryQuery::after(0, 50))
        .await
        .unwrap()
        .data
}

#[tokio::test]
async fn held_messages_reach_staff_at_once_and_viewers_on_time_in_order() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let admin = join(&engine, "admin", room).await;
    let rooms = owner.chat_room_manager();
    rooms.add_chat_room_admin(&room, "admin").await.unwrap();
    let bob = join(&engine, "bob", room).await;
    let dave = join(&engine, "dave", room).await;
    let carol = join(&engine, "carol", room).await;
    let admin_in = inbox(&admin, "i");
    let mut carol_events = carol.events();

    // Bounds and roles.
    for bad in [
        Duration::ZERO,
        Duration::from_millis(999),
        Duration::from_secs(61),
    ] {
        let err = rooms
            .set_chat_room_hold(&room, Some(bad))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 110, "{bad:?}");
    }
    let err = bob
        .chat_room_manager()
        .set_chat_room_hold(&room, Some(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 703);
    rooms
        .with_reason("raid")
        .set_chat_room_hold(&room, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    let (before, event) = until_event(&mut carol_events).await;
    assert!(before.is_empty());
    assert!(
        matches!(&event, ChatRoomEvent::HoldChanged { hold: Some(h), operator: Some(o), .. }
            if *h == Duration::from_secs(10) && *o == uid("owner")),
        "{event:?}"
    );
    assert_eq!(event.operator_reason(), Some("raid"));
    let info = carol
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    assert_eq!(info.hold, Some(Duration::from_secs(10)));
    let log = rooms
        .fetch_chat_room_audit_log(&room, None, 10)
        .await
        .unwrap();
    assert_eq!(
        log.data[0].action,
        AuditAction::Hold {
            hold_ms: Some(10_000)
        }
    );

    // bob at T0, dave at T0 + 3 s: both held; the owner's message comes behind them.
    let b1 = say(&bob, room, "b1").await;
    assert_eq!(
        b1.held_until(),
        Some(T0 + 10_000),
        "accepted with its seq, held"
    );
    clock.advance(Duration::from_secs(3));
    let d1 = say(&dave, room, "d1").await;
    assert_eq!(d1.held_until(), Some(T0 + 13_000));
    let o1 = say(&owner, room, "o1").await;
    assert!(!o1.is_held(), "staff messages are never held");
    assert_eq!((b1.seq(), d1.seq(), o1.seq()), (1, 2, 3));

    // The staff have them all at once, the held ones marked.
    admin_in.wait_for_count(3).await;
    let got = admin_in.messages();
    assert_eq!(texts(&got), ["b1", "d1", "o1"]);
    assert!(got[0].is_held() && got[1].is_held() && !got[2].is_held());
    // Carol has nothing yet live; history hides the held ones (the owner's is not held: it
    // waits only for live delivery, to keep the room's order).
    marker(&owner, room, 1).await;
    let (before, _) = until_event(&mut carol_events).await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(texts(&newest(&carol, room).await), ["o1"]);
    assert_eq!(newest(&admin, room).await.len(), 3);

    // T0 + 10 s: b1 is released; d1 still held, and o1 waits behind it.
    clock.advance(Duration::from_secs(7));
    marker(&owner, room, 2).await;
    let (before, _) = until_event(&mut carol_events).await;
    assert_eq!(texts(&before), ["b1"]);
    assert!(!before[0].is_held(), "released unmarked");
    // T0 + 13 s: d1, then o1.
    clock.advance(Duration::from_secs(3));
    marker(&owner, room, 3).await;
    let (before, _) = until_event(&mut carol_events).await;
    assert_eq!(texts(&before), ["d1", "o1"]);
    let history = newest(&carol, room).await;
    assert_eq!(texts(&history), ["b1", "d1", "o1"]);
    assert!(history.iter().all(|m| !m.is_held()));
    // Off: later messages go at once.
    rooms.set_chat_room_hold(&room, None).await.unwrap();
    past_hold_changed(&mut carol_events).await;
    say(&bob, room, "b2").await;
    match next_event(&mut carol_events).await {
        Some(ClientEvent::Message(m)) => assert_eq!(m.text(), Some("b2")),
        other => panic!("{other:?}"),
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn a_message_deleted_during_its_hold_never_reaches_viewers() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let bob = join(&engine, "bob", room).await;
    let carol = join(&engine, "carol", room).await;
    let rooms = owner.chat_room_manager();
    let mut carol_events = carol.events();
    let mut bob_events = bob.events();
    rooms
        .set_chat_room_hold(&room, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    past_hold_changed(&mut carol_events).await;
    past_hold_changed(&mut bob_events).await;
    let spam = say(&bob, room, "spam").await;
    let fine = say(&bob, room, "fine").await;
    // A member may not delete it; the owner may.
    let err = carol
        .chat_room_manager()
        .delete_chat_room_message(&room, spam.seq())
        .await
        .unwrap_err();
    assert_eq!(err.code(), 703);
    rooms
        .with_reason("spam")
        .delete_chat_room_message(&room, spam.seq())
        .await
        .unwrap();
    // Its sender is told; carol, who never saw it, is not.
    let (_, event) = until_event(&mut bob_events).await;
    assert!(
        matches!(&event, ChatRoomEvent::MessageRecalled { seq, .. } if *seq == spam.seq()),
        "{event:?}"
    );
    clock.advance(Duration::from_secs(5));
    marker(&owner, room, 1).await;
    let (before, event) = until_event(&mut carol_events).await;
    assert_eq!(
        texts(&before),
        ["fine"],
        "only the message that was not deleted"
    );
    assert!(
        matches!(event, ChatRoomEvent::AnnouncementChanged { .. }),
        "{event:?}"
    );
    // History shows it deleted, as any deletion, once its hold has passed.
    let history = newest(&carol, room).await;
    assert_eq!(history.len(), 2);
    assert!(history[0].is_recalled() && history[0].seq() == spam.seq());
    assert_eq!(history[1].seq(), fine.seq());
    engine.shutdown().await;
}

#[tokio::test]
async fn turning_the_hold_off_keeps_what_is_held_until_its_time() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let bob = join(&engine, "bob", room).await;
    let carol = join(&engine, "carol", room).await;
    let rooms = owner.chat_room_manager();
    let mut carol_events = carol.events();
    rooms
        .set_chat_room_hold(&room, Some(Duration::from_secs(30)))
        .await
        .unwrap();
    past_hold_changed(&mut carol_events).await;
    say(&bob, room, "held").await;
    rooms.set_chat_room_hold(&room, None).await.unwrap();
    let (before, event) = until_event(&mut carol_events).await;
    assert!(before.is_empty());
    assert!(matches!(
        event,
        ChatRoomEvent::HoldChanged { hold: None, .. }
    ));
    // Not held itself, but behind a held one: it keeps the room's order.
    let after = say(&bob, room, "after").await;
    assert!(!after.is_held());
    clock.advance(Duration::from_secs(29));
    marker(&owner, room, 1).await;
    let (before, _) = until_event(&mut carol_events).await;
    assert!(before.is_empty(), "{before:?}");
    clock.advance(Duration::from_secs(1));
    marker(&owner, room, 2).await;
    let (before, _) = until_event(&mut carol_events).await;
    assert_eq!(texts(&before), ["held", "after"]);
    engine.shutdown().await;
}

#[tokio::test]
async fn the_hold_and_held_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let open = || async {
        let engine = Engine::builder()
            .data_dir(dir.path())
            .clock(clock.clone())
            .limits(unthrottled())
            .build()
            .await
            .unwrap();
        engine.add_super_admin("owner").await.unwrap();
        engine
    };
    let engine = open().await;
    let owner = engine.login("owner").await.unwrap();
    let room = create_room(&owner, "stream").await.room_id;
    let bob = join(&engine, "bob", room).await;
    owner
        .chat_room_manager()
        .set_chat_room_hold(&room, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    let held = say(&bob, room, "held").await;
    engine.shutdown().await;
    drop((owner, bob));

    // Reopened before its release time: nobody is in the room any more (membership does not
    // persist), and a viewer who joins sees it neither on replay nor in history until then;
    // then it reaches her live, as it would have without the restart.
    clock.advance(Duration::from_secs(10));
    let engine = open().await;
    let carol_inbox_owner = engine.login("carol").await.unwrap();
    let carol_in = inbox(&carol_inbox_owner, "i");
    carol_inbox_owner
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    let carol = carol_inbox_owner;
    let info = carol
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    assert_eq!(
        info.hold,
        Some(Duration::from_secs(20)),
        "the hold persists"
    );
    assert!(newest(&carol, room).await.is_empty());
    let owner = join(&engine, "owner", room).await;
    let staff_view = newest(&owner, room).await;
    assert_eq!(staff_view.len(), 1);
    assert_eq!(staff_view[0].held_until(), held.held_until());
    assert!(carol_in.messages().is_empty(), "her replay was empty");
    clock.advance(Duration::from_secs(10));
    let history = newest(&carol, room).await;
    assert_eq!(texts(&history), ["held"]);
    carol_in.wait_for_count(1).await;
    let got = carol_in.messages();
    assert_eq!(texts(&got), ["held"], "released to her live, once");
    assert!(!got[0].is_held());
    // The owner, who had it at once on joining, does not get it again.
    marker(&owner, room, 1).await;
    assert_eq!(carol_in.messages().len(), 1);
    engine.shutdown().await;
}

/// Many senders, staff among them, race each other and the clock: every member who is not
/// staff receives every message exactly once, in the room's order, and the staff at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_senders_and_releases_keep_the_rooms_order() {
    const SENDERS: usize = 8;
    const EACH: usize = 15;
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let admin = join(&engine, "admin", room).await;
    owner
        .chat_room_manager()
        .add_chat_room_admin(&room, "admin")
        .await
        .unwrap();
    owner
        .chat_room_manager()
        .set_chat_room_hold(&room, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    let viewer = join(&engine, "viewer", room).await;
    let viewer_in = inbox(&viewer, "i");
    let owner_in = inbox(&owner, "i");
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        senders.push(join(&engine, &format!("s{i}"), room).await);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (clock, stop) = (clock.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                clock.advance(Duration::from_millis(50));
                tokio::task::yield_now().await;
            }
        })
    };
    let mut tasks = Vec::new();
    for (i, client) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..EACH {
                client
                    .chat_manager()
                    .send_message(OutgoingMessage::text(room, format!("s{i}-{n}")))
                    .await
                    .unwrap();
            }
            client
        }));
    }
    let admin_task = tokio::spawn(async move {
        for n in 0..EACH {
            say(&admin, room, &format!("admin-{n}")).await;
        }
        admin
    });
    let mut keep = Vec::new();
    for t in tasks {
        keep.push(t.await.unwrap());
    }
    let _admin = admin_task.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    ticker.await.unwrap();
    let total = (SENDERS + 1) * EACH;
    // The owner (staff) has every message without waiting for the clock.
    owner_in.wait_for_count(total).await;
    clock.advance(Duration::from_secs(2));
    // Let the last release run (a call goes through the room after the timer).
    marker(&owner, room, 1).await;
    viewer_in.wait_for_count(total).await;
    let seqs = viewer_in.seqs();
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "once each, in order"
    );
    assert!(viewer_in.messages().iter().all(|m| !m.is_held()));
    let mut owner_seqs = owner_in.seqs();
    owner_seqs.sort_unstable();
    assert_eq!(owner_seqs, (1..=total as u64).collect::<Vec<_>>());
    engine.shutdown().await;
}

/// Advances `clock` by `step` until `engine` has `n` rooms in memory, at most `times` times.
async fn advance_until(engine: &Engine, clock: &ManualClock, step: Duration, times: u32, n: usize) {
    for _ in 0..times {
        clock.advance(step);
        let done = async {
            while engine.rooms_in_memory() != n {
                tokio::task::yield_now().await;
            }
        };
        if tokio::time::timeout(Duration::from_millis(500), done)
            .await
            .is_ok()
        {
            return;
        }
    }
    panic!("{} rooms in memory, not {n}", engine.rooms_in_memory());
}

/// A room with messages still held does not hibernate; once they are out, it may.
#[tokio::test]
async fn a_room_with_held_messages_stays_awake_until_they_are_out() {
    let clock = ManualClock::new(T0);
    let mut limits = unthrottled();
    limits.room_hibernate_after = Some(Duration::from_secs(5));
    let (engine, owner) = engine_with(limits, Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let control = create_room(&owner, "control").await.room_id;
    let rooms = owner.chat_room_manager();
    rooms.leave_chat_room(&control).await.unwrap();
    // A sweep (the control goes; the owner is in the other room): the next is a minute later.
    advance_until(&engine, &clock, Duration::from_secs(60), 3, 1).await;
    clock.advance(Duration::from_secs(30));
    // A message held for 60 s; everyone leaves both rooms.
    rooms.join_chat_room(&control).await.unwrap();
    rooms.leave_chat_room(&control).await.unwrap();
    rooms
        .set_chat_room_hold(&room, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let bob = join(&engine, "bob", room).await;
    say(&bob, room, "held").await;
    rooms.leave_chat_room(&room).await.unwrap();
    bob.chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    // Within the next 50 s a sweep asks both idle, empty rooms to sleep: only the control goes.
    advance_until(&engine, &clock, Duration::from_secs(10), 5, 1).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        engine.rooms_in_memory(),
        1,
        "held messages keep the room awake"
    );
    // Released (to nobody) at its time; a later sweep puts it to sleep.
    advance_until(&engine, &clock, Duration::from_secs(60), 5, 0).await;
    engine.shutdown().await;
}

/// A staff member who joins during a hold gets the held message in its join replay, marked,
/// and not a second time at its release.
#[tokio::test]
async fn a_staff_member_joining_during_a_hold_gets_the_held_message_once() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let admin = join(&engine, "admin", room).await;
    let rooms = owner.chat_room_manager();
    rooms.add_chat_room_admin(&room, "admin").await.unwrap();
    admin
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    let bob = join(&engine, "bob", room).await;
    rooms
        .set_chat_room_hold(&room, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    let b1 = say(&bob, room, "b1").await;
    assert!(b1.is_held());

    // The admin comes back during the hold: the replay has b1, marked.
    let mut admin_events = admin.events();
    admin
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(10));
    marker(&owner, room, 1).await;
    let mut got = Vec::new();
    loop {
        match next_event(&mut admin_events).await {
            Some(ClientEvent::Message(m)) => got.push(m),
            Some(ClientEvent::Room(e))
                if matches!(&*e, ChatRoomEvent::AnnouncementChanged { .. }) =>
            {
                break
            }
            Some(_) => {}
            None => panic!("the stream ended"),
        }
    }
    assert_eq!(texts(&got), ["b1"], "once: {got:?}");
    assert!(got[0].is_held(), "the replay shows it held");
    engine.shutdown().await;
}
