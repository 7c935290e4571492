use std::time::Duration;

use roomcast::{ChatRoomEvent, CreateChatRoomOptions, HistoryQuery, LeaveReason, ManualClock};

use crate::support::*;

const GRACE: Duration = Duration::from_secs(5 * 60);

async fn setup() -> (
    ManualClock,
    roomcast::Engine,
    roomcast::ChatClient,
    roomcast::ChatRoom,
) {
    let clock = ManualClock::new(1_700_000_000_000);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "r").await;
    (clock, engine, owner, room)
}

fn removed(room: &roomcast::ChatRoom, who: &str, reason: LeaveReason) -> ChatRoomEvent {
    ChatRoomEvent::RemovedFromChatRoom {
        operator_reason: None,
        room_id: room.room_id,
        room_name: room.name.clone(),
        participant: uid(who),
        reason,
        operator: None,
    }
}

#[tokio::test]
async fn offline_members_get_no_pushes_and_resume_from_history_without_gaps() {
    let (clock, engine, owner, room) = setup().await;
    let bob = join(&engine, "bob", room.room_id).await;
    let bob_in = inbox(&bob, "b");
    say(&owner, room.room_id, "before").await;
    bob_in.wait_for_count(1).await;
    let last_seen = bob_in.seqs()[0];

    bob.disconnect().unwrap();
    assert!(!bob.is_online());
    for n in 0..5 {
        say(&owner, room.room_id, &format!("while away {n}")).await;
    }
    clock.advance(GRACE - Duration::from_secs(1));
    bob.reconnect().unwrap();
    say(&owner, room.room_id, "after").await;
    bob_in.wait_for_count(2).await;
    assert_eq!(
        bob_in.texts(),
        ["before", "after"],
        "nothing was pushed while offline"
    );

    let missed = bob
        .chat_manager()
        .fetch_history_messages(&room.room_id, HistoryQuery::after(last_seen, 50))
        .await
        .unwrap();
    let texts: Vec<_> = missed
        .data
        .iter()
        .map(|m| m.text().unwrap().to_string())
        .collect();
    assert_eq!(
        texts,
        [
            "while away 0",
            "while away 1",
            "while away 2",
            "while away 3",
            "while away 4",
            "after"
        ]
    );
    // Still a member after the whole grace period has passed, because it came back in time.
    clock.advance(GRACE * 2);
    let info = owner
        .chat_room_manager()
        .fetch_chat_room_info(&room.room_id)
        .await
        .unwrap();
    assert_eq!(info.member_count, 2);
}

#[tokio::test]
async fn a_member_away_past_the_grace_period_is_removed() {
    let (clock, engine, owner, room) = setup().await;
    let owner_rec = record(&owner, "o");
    let bob = join(&engine, "bob", room.room_id).await;
    let bob_rec = record(&bob, "b");
    let carol = join(&engine, "carol", room.room_id).await;
    let carol_rec = record(&carol, "c");
    owner_rec.wait_for_count(2).await;
    bob_rec.wait_for_count(1).await;

    bob.disconnect().unwrap();
    clock.advance(GRACE - Duration::from_millis(1));
    // Not yet: a sentinel join proves the check ran without removing bob.
    join(&engine, "dave", room.room_id).await;
    carol_rec.wait_for_count(1).await;
    assert_eq!(carol_rec.events(), vec![joined(room.room_id, "dave")]);

    clock.advance(Duration::from_millis(1));
    carol_rec.wait_for_count(2).await;
    assert_eq!(carol_rec.events()[1], exited(&room, "bob"));
    owner_rec
        .wait_until("bob's exit", |e| e.contains(&exited(&room, "bob")))
        .await;
    let info = owner
        .chat_room_manager()
        .fetch_chat_room_info(&room.room_id)
        .await
        .unwrap();
    assert_eq!(info.member_count, 3);

    // bob heard carol join before it went away, and nothing while it was away (not dave).
    assert_eq!(bob_rec.events(), vec![joined(room.room_id, "carol")]);
    bob.reconnect().unwrap();
    bob_rec.wait_for_count(2).await;
    assert_eq!(
        bob_rec.events(),
        vec![
            joined(room.room_id, "carol"),
            removed(&room, "bob", LeaveReason::Offline)
        ]
    );
    let err = bob
        .chat_room_manager()
        .leave_chat_room(&room.room_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), 702);
    bob.chat_room_manager()
        .join_chat_room(&room.room_id)
        .await
        .unwrap();
}

#[tokio::test]
async fn dropping_every_client_is_going_offline() {
    let (clock, engine, owner, room) = setup().await;
    let owner_rec = record(&owner, "o");
    let bob = join(&engine, "bob", room.room_id).await;
    let bob2 = engine.login("bob").await.unwrap();
    drop(bob);
    clock.advance(GRACE * 2);
    // bob2 still holds the session online: a sentinel shows no removal happened.
    join(&engine, "zed", room.room_id).await;
    owner_rec.wait_for_count(2).await;
    assert_eq!(
        owner_rec.events(),
        vec![joined(room.room_id, "bob"), joined(room.room_id, "zed")]
    );
    drop(bob2);
    clock.advance(GRACE);
    owner_rec
        .wait_until("bob's exit", |e| e.contains(&exited(&room, "bob")))
        .await;
}

#[tokio::test]
async fn the_owner_admins_and_allow_listed_are_exempt() {
    let (clock, engine, owner, room) = setup().await;
    let watcher = join(&engine, "watcher", room.room_id).await;
    let watcher_rec = record(&watcher, "w");
    owner.disconnect().unwrap();
    clock.advance(GRACE * 10);
    let probe = join(&engine, "probe", room.room_id).await;
    watcher_rec.wait_for_count(1).await;
    assert_eq!(watcher_rec.events(), vec![joined(room.room_id, "probe")]);
    let info = probe
        .chat_room_manager()
        .fetch_chat_room_info(&room.room_id)
        .await
        .unwrap();
    assert_eq!(info.member_count, 3, "the owner is still in");
}

#[tokio::test]
async fn a_room_may_set_its_own_grace_period() {
    let (clock, engine, owner, _) = setup().await;
    let room = owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("quick").with_limits(
            roomcast::RoomLimits::default().with_offline_grace(Duration::from_secs(10)),
        ))
        .await
        .unwrap();
    let owner_rec = record(&owner, "o");
    let bob = join(&engine, "bob", room.room_id).await;
    bob.disconnect().unwrap();
    clock.advance(Duration::from_secs(10));
    owner_rec
        .wait_until("bob's exit", |e| e.contains(&exited(&room, "bob")))
        .await;
}

#[tokio::test]
async fn members_added_at_creation_without_a_client_are_offline() {
    let (clock, _engine, owner, _) = setup().await;
    let room = owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("invited").with_members(["ghost"]))
        .await
        .unwrap();
    assert_eq!(room.member_count, 2);
    let owner_rec = record(&owner, "o");
    clock.advance(GRACE);
    owner_rec
        .wait_until("ghost's exit", |e| e.contains(&exited(&room, "ghost")))
        .await;
}

#[tokio::test]
async fn in_big_rooms_only_staff_hear_joins_and_exits() {
    let mut limits = unthrottled();
    limits.join_event_threshold = 3;
    let (engine, owner) = engine_with(limits, None, "owner").await;
    let room = create_room(&owner, "big").await;
    let owner_rec = record(&owner, "o");
    let a = join(&engine, "a", room.room_id).await;
    let a_rec = record(&a, "a");
    for who in ["b", "c", "d", "e"] {
        join(&engine, who, room.room_id).await;
    }
    engine
        .login("e")
        .await
        .unwrap()
        .chat_room_manager()
        .leave_chat_room(&room.room_id)
        .await
        .unwrap();
    owner_rec.wait_for_count(6).await;
    let id = room.room_id;
    assert_eq!(
        owner_rec.events(),
        vec![
            joined(id, "a"),
            joined(id, "b"),
            joined(id, "c"),
            joined(id, "d"),
            joined(id, "e"),
            exited(&room, "e"),
        ]
    );
    // `a` heard only the joins while the room was at most 3 members (b; c made it 4).
    say(&owner, id, "sentinel").await;
    let a_in = inbox(&a, "a_in");
    say(&owner, id, "sentinel 2").await;
    a_in.wait_for_count(1).await;
    assert_eq!(a_rec.events(), vec![joined(id, "b")]);
}

#[tokio::test]
async fn idle_sessions_are_dropped_and_active_ones_kept() {
    let (clock, engine, _owner, room) = setup().await;
    let stays = join(&engine, "stays", room.room_id).await;
    let away_in_room = join(&engine, "away", room.room_id).await;
    drop(away_in_room); // offline, but still a member for the grace period
    for n in 0..5 {
        drop(engine.login(format!("drifter{n}")).await.unwrap()); // logged in, then gone
    }
    assert_eq!(engine.session_count(), 1 + 2 + 5);
    // A minute of engine time later the sweep has run: the drifters are gone; the owner, the
    // member with a client and the offline member still in the room (its grace period is five
    // minutes) stay.
    join(&engine, "sentinel", room.room_id).await;
    // A drifter's last references (its offline notice on its way through a shard) may still be
    // in flight at one sweep; it is gone by a later one. Each minute of engine time is one sweep;
    // three stay well inside the five-minute grace period of the member who is away.
    for _minute in 0..3 {
        clock.advance(Duration::from_secs(61));
        let round = std::time::Instant::now() + Duration::from_secs(2);
        while engine.session_count() > 4 && std::time::Instant::now() < round {
            tokio::task::yield_now().await;
        }
        if engine.session_count() <= 4 {
            break;
        }
    }
    assert_eq!(engine.session_count(), 4, "owner, stays, away, sentinel");
    // A drifter who comes back gets a fresh session.
    let back = engine.login("drifter0").await.unwrap();
    back.chat_room_manager()
        .join_chat_room(&room.room_id)
        .await
        .unwrap();
    drop(stays);
}

/// `ChatClient::logout`: that client's calls get 201; the user stays online while another of
/// its clients lives, and goes offline with the last.
#[tokio::test]
async fn logout_ends_a_client_and_the_last_one_takes_the_user_offline() {
    let (engine, owner) = engine_with_admin("owner").await;
    let room = create_room(&owner, "r").await.room_id;
    let first = join(&engine, "bob", room).await;
    let second = engine.login("bob").await.unwrap();
    let clone = first.clone();
    first.logout();
    first.logout(); // idempotent
    assert!(clone.is_logged_out());
    for err in [
        clone
            .chat_room_manager()
            .leave_chat_room(&room)
            .await
            .unwrap_err(),
        clone
            .chat_manager()
            .send_message(roomcast::OutgoingMessage::text(room, "hi"))
            .await
            .unwrap_err(),
        clone.disconnect().unwrap_err(),
    ] {
        assert_eq!(err.code(), 201, "{err}");
    }
    assert!(
        second.is_online(),
        "another client of the user keeps it online"
    );
    second
        .chat_manager()
        .send_message(roomcast::OutgoingMessage::text(room, "still here"))
        .await
        .unwrap();
    second.logout();
    assert!(
        !second.is_online(),
        "the last client's logout takes the user offline"
    );
    engine.shutdown().await;
}

/// A room destroyed while a member is offline: on reconnect the member gets the removal notice
/// (reason `Destroyed`), which is kept for it, and not `on_chat_room_destroyed`, which is not.
#[tokio::test]
async fn a_room_destroyed_while_away_is_told_on_reconnect_as_a_removal() {
    let (engine, owner) = engine_with_admin("owner").await;
    let room = create_room(&owner, "r").await;
    let away = join(&engine, "away", room.room_id).await;
    let rec = record(&away, "rec");
    away.disconnect().unwrap();
    owner
        .chat_room_manager()
        .destroy_chat_room(&room.room_id)
        .await
        .unwrap();
    away.reconnect().unwrap();
    rec.wait_until("the removal notice", |events| {
        events.iter().any(|e| {
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
    assert!(
        !rec.events()
            .iter()
            .any(|e| matches!(e, ChatRoomEvent::ChatRoomDestroyed { .. })),
        "events of the absence are not queued: {:?}",
        rec.events()
    );
    engine.shutdown().await;
}

/// A client that logs out stops receiving: its event streams end and the handlers it registered
/// are removed, while another client of the same user keeps its own (found by a new-user
/// review: a logged-out WebSocket connection kept getting events).
#[tokio::test]
async fn a_logged_out_client_gets_no_more_events_its_sibling_does() {
    let (engine, owner) = engine_with_admin("owner").await;
    let room = create_room(&owner, "r").await.room_id;
    let gone = join(&engine, "bob", room).await;
    let stays = engine.login("bob").await.unwrap();
    let gone_rec = record(&gone, "gone");
    let stays_rec = record(&stays, "stays");
    let gone_inbox = inbox(&gone, "gone-inbox");
    let mut gone_stream = gone.events();
    let mut stays_stream = stays.events();
    gone.logout();
    // Opened and registered after logout: nothing.
    let mut late_stream = gone.events();
    let late_rec = record(&gone, "late");
    assert!(
        next_event(&mut gone_stream).await.is_none(),
        "the stream ends"
    );
    assert!(next_event(&mut late_stream).await.is_none());
    join(&engine, "carol", room).await;
    say(&owner, room, "after").await;
    stays_rec.wait_for_count(1).await;
    match next_event(&mut stays_stream).await {
        Some(roomcast::ClientEvent::Room(e)) => assert_eq!(*e, joined(room, "carol")),
        other => panic!("unexpected {other:?}"),
    }
    // Everything the sibling got has been dispatched to both: the logged-out client's
    // handlers got none of it.
    let sibling = inbox(&stays, "sibling-inbox");
    say(&owner, room, "fence").await;
    sibling.wait_for_count(1).await;
    assert!(gone_rec.events().is_empty(), "{:?}", gone_rec.events());
    assert!(late_rec.events().is_empty());
    assert!(gone_inbox.texts().is_empty(), "{:?}", gone_inbox.texts());
    assert!(
        !gone.chat_room_manager().remove_event_handler("gone"),
        "already removed"
    );
    assert!(stays.chat_room_manager().remove_event_handler("stays"));
    engine.shutdown().await;
}

/// Dropping a client (its last clone) ends the streams it opened; the handlers it registered
/// stay with the user's session and go on with the user's next client (found by a doc review:
/// a stream whose client was gone could hang for ever).
#[tokio::test]
async fn a_dropped_client_s_streams_end_its_handlers_stay() {
    let (engine, owner) = engine_with_admin("owner").await;
    let room = create_room(&owner, "r").await.room_id;
    let first = join(&engine, "bob", room).await;
    let rec = record(&first, "rec");
    let mut stream = first.events();
    let second = engine.login("bob").await.unwrap();
    drop(first);
    assert!(next_event(&mut stream).await.is_none(), "the stream ended");
    join(&engine, "carol", room).await;
    rec.wait_until("the join, through the handler that stayed", |e| {
        e.contains(&joined(room, "carol"))
    })
    .await;
    drop(second);
    engine.shutdown().await;
}
