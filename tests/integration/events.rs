use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use roomcast::{ChatRoomEvent, ChatRoomEventHandler, ClientEvent, LeaveReason, RoomId, UserId};

use crate::support::*;

#[tokio::test]
async fn join_and_leave_reach_the_other_members_only() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "r").await;
    let other_room = create_room(&alice, "other").await;
    let alice_rec = record(&alice, "a");

    let bob = engine.login("bob").await.unwrap();
    let bob_rec = record(&bob, "b");
    let outsider = engine.login("outsider").await.unwrap();
    let outsider_rec = record(&outsider, "o");
    // The outsider is in another room of the same engine, and must hear nothing of `room`.
    outsider
        .chat_room_manager()
        .join_chat_room(&other_room.room_id)
        .await
        .unwrap();

    bob.chat_room_manager()
        .join_chat_room(&room.room_id)
        .await
        .unwrap();
    join(&engine, "carol", room.room_id).await;
    let carol = engine.login("carol").await.unwrap();
    carol
        .chat_room_manager()
        .leave_chat_room(&room.room_id)
        .await
        .unwrap();

    let id = room.room_id;
    // alice: the other room's join, then bob, carol joined, then carol exited.
    alice_rec.wait_for_count(4).await;
    assert_eq!(
        alice_rec.events(),
        vec![
            joined(other_room.room_id, "outsider"),
            joined(id, "bob"),
            joined(id, "carol"),
            exited(&room, "carol"),
        ]
    );
    // bob did not get his own join; he got carol's join and exit.
    bob_rec.wait_for_count(2).await;
    assert_eq!(
        bob_rec.events(),
        vec![joined(id, "carol"), exited(&room, "carol")]
    );

    // A sentinel: the outsider joins `room` and dave joins after. The outsider hears dave's
    // join through the same path as any earlier event of `room`, so once it has it, nothing
    // earlier can still arrive.
    outsider
        .chat_room_manager()
        .join_chat_room(&id)
        .await
        .unwrap();
    join(&engine, "dave", id).await;
    outsider_rec.wait_for_count(1).await;
    assert_eq!(outsider_rec.events(), vec![joined(id, "dave")]);
}

#[tokio::test]
async fn destroy_tells_every_other_member_and_removes_all() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "doomed").await;
    let alice_rec = record(&alice, "a");
    let bob = join(&engine, "bob", room.room_id).await;
    let bob_rec = record(&bob, "b");
    let carol = join(&engine, "carol", room.room_id).await;
    let carol_rec = record(&carol, "c");

    alice
        .chat_room_manager()
        .destroy_chat_room(&room.room_id)
        .await
        .unwrap();
    let expected = |who: &str| {
        vec![
            ChatRoomEvent::ChatRoomDestroyed {
                room_id: room.room_id,
                room_name: "doomed".into(),
            },
            ChatRoomEvent::RemovedFromChatRoom {
                operator_reason: None,
                room_id: room.room_id,
                room_name: "doomed".into(),
                participant: uid(who),
                reason: LeaveReason::Destroyed,
                operator: Some(uid("alice")),
            },
        ]
    };
    bob_rec.wait_for_count(3).await;
    let bob_events = bob_rec.events();
    assert_eq!(bob_events[0], joined(room.room_id, "carol"));
    assert_eq!(bob_events[1..], expected("bob")[..]);
    carol_rec.wait_for_count(2).await;
    assert_eq!(carol_rec.events(), expected("carol"));

    // alice (who acted) got bob's and carol's joins only.
    alice_rec.wait_for_count(2).await;
    let second_room = create_room(&alice, "second").await;
    join(&engine, "zed", second_room.room_id).await;
    alice_rec.wait_for_count(3).await;
    assert_eq!(
        alice_rec.events(),
        vec![
            joined(room.room_id, "bob"),
            joined(room.room_id, "carol"),
            joined(second_room.room_id, "zed"),
        ]
    );
}

#[tokio::test]
async fn a_removed_handler_gets_nothing_more() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "r").await;
    let first = record(&alice, "first");
    let second = record(&alice, "second");
    join(&engine, "bob", room.room_id).await;
    first.wait_for_count(1).await;
    second.wait_for_count(1).await;

    assert!(alice.chat_room_manager().remove_event_handler("first"));
    assert!(!alice.chat_room_manager().remove_event_handler("first"));
    join(&engine, "carol", room.room_id).await;
    // Handlers of a client run in registration order for each event, so once `second` has
    // carol's join, `first` would have had it too.
    second.wait_for_count(2).await;
    assert_eq!(first.events(), vec![joined(room.room_id, "bob")]);
}

#[tokio::test]
async fn registering_an_id_again_replaces_the_handler() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "r").await;
    let old = record(&alice, "h");
    let new = record(&alice, "h");
    join(&engine, "bob", room.room_id).await;
    new.wait_for_count(1).await;
    let sentinel = record(&alice, "sentinel");
    join(&engine, "carol", room.room_id).await;
    sentinel.wait_for_count(1).await;
    assert!(old.events().is_empty());
    assert_eq!(new.events().len(), 2);
}

#[tokio::test]
async fn a_handler_may_remove_itself_from_its_callback() {
    struct OneShot {
        client: roomcast::ChatClient,
        calls: Arc<AtomicUsize>,
    }
    impl ChatRoomEventHandler for OneShot {
        fn on_member_joined_from_chat_room(&self, _: &RoomId, _: &UserId) {
            self.calls.fetch_add(1, Ordering::SeqCst);
            assert!(self.client.chat_room_manager().remove_event_handler("once"));
        }
    }
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "r").await;
    let calls = Arc::new(AtomicUsize::new(0));
    alice.chat_room_manager().add_event_handler(
        "once",
        OneShot {
            client: alice.clone(),
            calls: calls.clone(),
        },
    );
    let after = record(&alice, "after");
    join(&engine, "bob", room.room_id).await;
    join(&engine, "carol", room.room_id).await;
    after.wait_for_count(2).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_panicking_handler_stalls_nothing() {
    struct Panics;
    impl ChatRoomEventHandler for Panics {
        fn on_member_joined_from_chat_room(&self, _: &RoomId, _: &UserId) {
            panic!("handler bug (expected in this test)");
        }
    }
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "r").await;
    alice.chat_room_manager().add_event_handler("bad", Panics);
    let good = record(&alice, "good");
    for n in 0..20 {
        join(&engine, &format!("user{n}"), room.room_id).await;
    }
    good.wait_for_count(20).await;
    let info = alice
        .chat_room_manager()
        .fetch_chat_room_info(&room.room_id)
        .await
        .unwrap();
    assert_eq!(info.member_count, 21);
}

#[tokio::test]
async fn a_stuck_handler_stalls_neither_the_room_nor_other_clients() {
    /// Blocks its callback thread until the test drops the sender.
    struct Stuck(parking_lot::Mutex<std::sync::mpsc::Receiver<()>>);
    impl ChatRoomEventHandler for Stuck {
        fn on_member_joined_from_chat_room(&self, _: &RoomId, _: &UserId) {
            let _ = self.0.lock().recv();
        }
    }
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "r").await;
    let (release, blocked) = std::sync::mpsc::channel();
    let bob = join(&engine, "bob", room.room_id).await;
    bob.chat_room_manager()
        .add_event_handler("stuck", Stuck(parking_lot::Mutex::new(blocked)));
    let alice_rec = record(&alice, "a");
    for n in 0..50 {
        join(&engine, &format!("v{n}"), room.room_id).await;
    }
    alice_rec.wait_for_count(50).await;
    // Bob's handler is still blocked on its first event; release it so the test ends cleanly.
    drop(release);
    bob.chat_room_manager().remove_event_handler("stuck");
}

#[tokio::test]
async fn the_event_stream_gets_what_handlers_get() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "r").await;
    let mut stream = alice.events();
    let rec = record(&alice, "a");
    join(&engine, "bob", room.room_id).await;
    engine
        .login("bob")
        .await
        .unwrap()
        .chat_room_manager()
        .leave_chat_room(&room.room_id)
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        match next_event(&mut stream).await {
            Some(ClientEvent::Room(e)) => got.push((*e).clone()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, vec![joined(room.room_id, "bob"), exited(&room, "bob")]);
    rec.wait_for_count(2).await;
    assert_eq!(rec.events(), got);

    engine.shutdown().await;
    assert!(
        next_event(&mut stream).await.is_none(),
        "the stream ends at shutdown"
    );
}

#[tokio::test]
async fn a_stream_that_is_not_read_loses_its_oldest_events_and_says_how_many() {
    let engine = roomcast::Engine::builder()
        .event_queue_capacity(8)
        .build()
        .await
        .unwrap();
    engine.add_super_admin("alice").await.unwrap();
    let alice = engine.login("alice").await.unwrap();
    let room = create_room(&alice, "r").await;
    let mut stream = alice.events();
    let rec = record(&alice, "a");
    let counter = inbox(&alice, "missed counter");
    for n in 0..30 {
        join(&engine, &format!("u{n}"), room.room_id).await;
    }
    // Wait until the dispatcher has handled (or counted as missed) all 30, so that they have
    // all gone to the stream, which nobody has read: it must have overflowed.
    rec.wait_until("all 30 joins handled or missed", |e| {
        e.len() as u64 + counter.missed() == 30
    })
    .await;
    let mut missed = 0;
    let mut seen = Vec::new();
    while seen.len() + missed as usize != 30 {
        match next_event(&mut stream).await.unwrap() {
            ClientEvent::Missed { count } => missed += count,
            ClientEvent::Room(e) => seen.push((*e).clone()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(missed > 0);
    let order: Vec<_> = seen
        .iter()
        .map(|e| match e {
            ChatRoomEvent::MemberJoined { participant, .. } => {
                participant.as_str()[1..].parse::<u32>().unwrap()
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in order: {order:?}");
    assert_eq!(
        seen.last(),
        Some(&joined(room.room_id, "u29")),
        "the newest are kept"
    );
}

#[tokio::test]
async fn two_logins_of_one_user_share_one_session() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "r").await;
    let alice2 = engine.login("ALICE").await.unwrap();
    assert_eq!(alice2.current_user_id(), &uid("alice"));
    let err = alice2
        .chat_room_manager()
        .join_chat_room(&room.room_id)
        .await;
    assert_eq!(
        err.unwrap_err().code(),
        701,
        "the second login is the same member"
    );
    let mut s1 = alice.events();
    let mut s2 = alice2.events();
    join(&engine, "bob", room.room_id).await;
    for s in [&mut s1, &mut s2] {
        match next_event(s).await {
            Some(ClientEvent::Room(e)) => assert_eq!(*e, joined(room.room_id, "bob")),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_thousand_concurrent_joins_give_exact_counts() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = alice
        .chat_room_manager()
        .create_chat_room(roomcast::CreateChatRoomOptions::new("big").with_max_users(2_000))
        .await
        .unwrap();
    let rec = record(&alice, "a");
    let mut tasks = Vec::new();
    for n in 0..1_000 {
        let engine = engine.clone();
        let id = room.room_id;
        tasks.push(tokio::spawn(async move {
            let c = engine.login(format!("viewer{n}")).await.unwrap();
            c.chat_room_manager().join_chat_room(&id).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let info = alice
        .chat_room_manager()
        .fetch_chat_room_info(&room.room_id)
        .await
        .unwrap();
    assert_eq!(info.member_count, 1_001);
    rec.wait_for_count(1_000).await;
    let events = rec.events();
    assert_eq!(events.len(), 1_000);
    let distinct: std::collections::HashSet<UserId> = events
        .iter()
        .map(|e| match e {
            ChatRoomEvent::MemberJoined { participant, .. } => participant.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(distinct.len(), 1_000);
}
