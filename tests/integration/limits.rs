use std::time::Duration;

use roomcast::{CreateChatRoomOptions, ManualClock, OutgoingMessage, RoomLimits};

use crate::support::*;

#[tokio::test]
async fn a_user_is_in_at_most_so_many_rooms() {
    let mut limits = unthrottled();
    limits.max_rooms_per_user = 2;
    let (engine, owner) = engine_with(limits, None, "owner").await;
    // The creator is in each room it creates: a third creation is over its limit.
    let mut rooms = Vec::new();
    for n in 0..2 {
        rooms.push(create_room(&owner, &format!("r{n}")).await.room_id);
    }
    let over = owner
        .chat_room_manager()
        .create_chat_room(roomcast::CreateChatRoomOptions::new("r2"))
        .await
        .unwrap_err();
    assert_eq!(over.code(), 4);
    for room in &rooms {
        owner
            .chat_room_manager()
            .leave_chat_room(room)
            .await
            .unwrap();
    }
    rooms.push(create_room(&owner, "r2").await.room_id);
    owner
        .chat_room_manager()
        .leave_chat_room(&rooms[2])
        .await
        .unwrap();
    let bob = engine.login("bob").await.unwrap();
    let m = bob.chat_room_manager();
    m.join_chat_room(&rooms[0]).await.unwrap();
    m.join_chat_room(&rooms[1]).await.unwrap();
    assert_eq!(m.join_chat_room(&rooms[2]).await.unwrap_err().code(), 4);
    m.leave_chat_room(&rooms[0]).await.unwrap();
    m.join_chat_room(&rooms[2]).await.unwrap();
}

#[tokio::test]
async fn calls_per_user_per_second_are_limited() {
    let mut limits = unthrottled();
    limits.api_calls_per_user_per_second = Some(1);
    let (engine, owner) = engine_with(limits, None, "owner").await;
    let room = create_room(&owner, "r").await;
    let bob = engine.login("bob").await.unwrap();
    let m = bob.chat_room_manager();
    m.join_chat_room(&room.room_id).await.unwrap();
    // Ten calls in a row, well within a second: the quota of one per second (already used by
    // the join) admits at most one more, should a second pass on a slow machine.
    let mut codes = Vec::new();
    for _ in 0..10 {
        codes.push(
            m.fetch_chat_room_info(&room.room_id)
                .await
                .map(drop)
                .map_err(|e| e.code()),
        );
    }
    let refused = codes.iter().filter(|c| **c == Err(4)).count();
    assert!(refused >= 9, "{codes:?}");
    // Another user has its own quota.
    let carol = engine.login("carol").await.unwrap();
    carol
        .chat_room_manager()
        .fetch_chat_room_info(&room.room_id)
        .await
        .unwrap();
}

#[tokio::test]
async fn members_send_at_most_so_many_messages_per_window_staff_are_exempt() {
    let clock = ManualClock::new(1_700_000_000_000);
    let mut limits = unthrottled();
    limits.user_messages_per_window = Some((20, Duration::from_secs(30)));
    let (engine, owner) = engine_with(limits, Some(clock.clone()), "owner").await;
    let room = owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("twitch"))
        .await
        .unwrap();
    let viewer = join(&engine, "viewer", room.room_id).await;
    let send = |c: &roomcast::ChatClient| {
        let chat = c.chat_manager();
        async move {
            chat.send_message(OutgoingMessage::text(room.room_id, "hi"))
                .await
                .map(drop)
                .map_err(|e| e.code())
        }
    };
    for _ in 0..20 {
        send(&viewer).await.unwrap();
    }
    assert_eq!(send(&viewer).await, Err(509));
    for _ in 0..30 {
        send(&owner).await.expect("the owner is exempt");
    }
    clock.advance(Duration::from_secs(30));
    send(&viewer).await.expect("a new window");
}

#[tokio::test]
async fn the_default_limits_are_agoras_and_twitchs() {
    let limits = roomcast::Limits::default();
    assert_eq!(limits.room_delivery_rate, Some(20));
    assert_eq!(
        limits.user_messages_per_window,
        Some((20, Duration::from_secs(30)))
    );
    assert_eq!(limits.api_calls_per_user_per_second, Some(100));
    assert_eq!(limits.max_rooms_per_user, 1_000);
    assert_eq!(limits.default_max_users, 300);
    assert_eq!(limits.offline_grace, Duration::from_secs(300));
}

/// A rate of zero would refuse everything: it is refused at build time (None turns a limit off).
#[tokio::test]
async fn zero_rates_are_refused_with_110() {
    let cases: [fn(&mut roomcast::Limits); 6] = [
        |l| l.api_calls_per_user_per_second = Some(0),
        |l| l.room_delivery_rate = Some(0),
        |l| l.user_messages_per_window = Some((0, Duration::from_secs(1))),
        |l| l.user_messages_per_window = Some((5, Duration::ZERO)),
        // Limits that disagree with each other (found by a new-user review).
        |l| l.default_max_users = l.max_users_cap + 1,
        |l| l.default_max_users = 0,
    ];
    for set in cases {
        let mut limits = roomcast::Limits::default();
        set(&mut limits);
        let err = roomcast::Engine::builder()
            .limits(limits)
            .build()
            .await
            .expect_err("refused");
        assert_eq!(err.code(), 110, "{err}");
    }
}

/// A stream room keeps the engine's message window; its moderators' side room turns it off; a
/// third room sets a tighter one. Each room counts by its own limits.
#[tokio::test]
async fn each_room_may_set_its_own_message_window() {
    let clock = ManualClock::new(1_700_000_000_000);
    let mut limits = unthrottled();
    limits.user_messages_per_window = Some((3, Duration::from_secs(30)));
    let (engine, owner) = engine_with(limits, Some(clock.clone()), "owner").await;
    let rooms = owner.chat_room_manager();
    let stream = create_room(&owner, "stream").await.room_id;
    let side = rooms
        .create_chat_room(
            CreateChatRoomOptions::new("mods")
                .with_limits(RoomLimits::default().with_user_messages_per_window(None)),
        )
        .await
        .unwrap()
        .room_id;
    let tight = rooms
        .create_chat_room(CreateChatRoomOptions::new("tight").with_limits(
            RoomLimits::default().with_user_messages_per_window(Some((1, Duration::from_secs(60)))),
        ))
        .await
        .unwrap()
        .room_id;
    let viewer = engine.login("viewer").await.unwrap();
    for room in [stream, side, tight] {
        viewer
            .chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap();
    }
    let send = |room| {
        let chat = viewer.chat_manager();
        async move {
            chat.send_message(OutgoingMessage::text(room, "hi"))
                .await
                .map(drop)
                .map_err(|e| e.code())
        }
    };
    for _ in 0..3 {
        send(stream).await.unwrap();
    }
    assert_eq!(send(stream).await, Err(509), "the engine's window");
    for _ in 0..10 {
        send(side).await.expect("no window in the side room");
    }
    send(tight).await.unwrap();
    assert_eq!(send(tight).await, Err(509), "the room's own window");
    clock.advance(Duration::from_secs(30));
    send(stream).await.expect("the engine's window has passed");
    assert_eq!(send(tight).await, Err(509), "the room's 60 s have not");
    engine.shutdown().await;
}

/// The owner changes a room's limits; an admin may not; bad values are 110 and change nothing;
/// the members hear of it and the room's info shows it.
#[tokio::test]
async fn the_owner_changes_a_room_s_limits() {
    let (engine, owner) = engine_with(unthrottled(), None, "owner").await;
    let room = create_room(&owner, "stream").await;
    let id = room.room_id;
    assert_eq!(room.limits, RoomLimits::default(), "none set: the engine's");
    let admin = join(&engine, "admin", id).await;
    let viewer = join(&engine, "viewer", id).await;
    owner
        .chat_room_manager()
        .add_chat_room_admin(&id, "admin")
        .await
        .unwrap();
    let heard = record(&viewer, "rec");
    let change = RoomLimits::default().with_join_replay_count(2);
    let err = admin
        .chat_room_manager()
        .change_chat_room_limits(&id, change.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), 703, "{err}");
    let err = owner
        .chat_room_manager()
        .change_chat_room_limits(&id, RoomLimits::default().with_join_replay_count(201))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 110, "{err}");
    let err = owner
        .chat_room_manager()
        .change_chat_room_limits(&id, RoomLimits::default().with_room_delivery_rate(Some(0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 110, "{err}");
    owner
        .chat_room_manager()
        .change_chat_room_limits(&id, change)
        .await
        .unwrap();
    // A change replaces the room's limits: start from the current ones to keep them.
    let info = owner
        .chat_room_manager()
        .fetch_chat_room_info(&id)
        .await
        .unwrap();
    owner
        .chat_room_manager()
        .change_chat_room_limits(&id, info.limits.with_history_retention(50))
        .await
        .unwrap();
    let expected = RoomLimits::default()
        .with_join_replay_count(2)
        .with_history_retention(50);
    let info = viewer
        .chat_room_manager()
        .fetch_chat_room_info(&id)
        .await
        .unwrap();
    assert_eq!(info.limits, expected);
    heard
        .wait_until("two specification changes", |e| e.len() >= 2)
        .await;
    match &heard.events()[1] {
        roomcast::ChatRoomEvent::SpecificationChanged { room, operator, .. } => {
            assert_eq!(room.limits, expected);
            assert_eq!(operator.as_ref(), Some(&uid("owner")));
        }
        other => panic!("unexpected {other:?}"),
    }
    // The replay count now in force: a new member gets the room's newest 2 messages.
    for n in 1..=5 {
        say(&owner, id, &format!("m{n}")).await;
    }
    let late = engine.login("late").await.unwrap();
    let got = inbox(&late, "inbox");
    late.chat_room_manager().join_chat_room(&id).await.unwrap();
    got.wait_for_count(2).await;
    assert_eq!(got.texts(), ["m4", "m5"]);
    engine.shutdown().await;
}

/// A room's own retention keeps its history shorter than the engine's.
#[tokio::test]
async fn a_room_s_own_retention_trims_its_history() {
    let (engine, owner) = engine_with(unthrottled(), None, "owner").await;
    let id = owner
        .chat_room_manager()
        .create_chat_room(
            CreateChatRoomOptions::new("short memory")
                .with_limits(RoomLimits::default().with_history_retention(3)),
        )
        .await
        .unwrap()
        .room_id;
    for n in 1..=10 {
        say(&owner, id, &format!("m{n}")).await;
    }
    let page = owner
        .chat_manager()
        .fetch_history_messages(&id, roomcast::HistoryQuery::newest(50))
        .await
        .unwrap();
    let texts: Vec<_> = page.data.iter().map(|m| m.text().unwrap()).collect();
    assert_eq!(texts, ["m10", "m9", "m8"]);
    engine.shutdown().await;
}

/// Bad per-room limits are refused at creation, and no room is made.
#[tokio::test]
async fn bad_room_limits_are_refused_at_creation() {
    let (engine, owner) = engine_with(unthrottled(), None, "owner").await;
    for limits in [
        RoomLimits::default().with_join_replay_count(201),
        RoomLimits::default().with_room_delivery_rate(Some(0)),
        RoomLimits::default().with_user_messages_per_window(Some((0, Duration::from_secs(1)))),
        RoomLimits::default().with_user_messages_per_window(Some((1, Duration::ZERO))),
    ] {
        let err = owner
            .chat_room_manager()
            .create_chat_room(CreateChatRoomOptions::new("bad").with_limits(limits.clone()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 110, "{limits:?}: {err}");
    }
    let list = owner
        .chat_room_manager()
        .fetch_public_chat_rooms(1, 10, None)
        .await
        .unwrap();
    assert_eq!(list.total, 0);
    engine.shutdown().await;
}

/// The engine's delivery threshold drops what is over it in one second; a room that turns its
/// own off accepts everything.
#[tokio::test]
async fn a_room_may_turn_the_delivery_threshold_off() {
    let clock = ManualClock::new(1_700_000_000_000);
    let mut limits = unthrottled();
    limits.room_delivery_rate = Some(5);
    let (engine, owner) = engine_with(limits, Some(clock), "owner").await;
    let throttled = create_room(&owner, "throttled").await.room_id;
    let open = owner
        .chat_room_manager()
        .create_chat_room(
            CreateChatRoomOptions::new("open")
                .with_limits(RoomLimits::default().with_room_delivery_rate(None)),
        )
        .await
        .unwrap()
        .room_id;
    let viewer = engine.login("viewer").await.unwrap();
    let mut accepted = [0, 0];
    for (n, room) in [throttled, open].into_iter().enumerate() {
        viewer
            .chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap();
        // The clock stands still: every send is in the same second.
        for _ in 0..20 {
            let sent = viewer
                .chat_manager()
                .send_message(OutgoingMessage::text(room, "x"))
                .await;
            accepted[n] += usize::from(sent.is_ok());
        }
    }
    assert!(
        accepted[0] < 20,
        "over the engine's threshold: {accepted:?}"
    );
    assert_eq!(accepted[1], 20, "no threshold in this room");
    engine.shutdown().await;
}

/// A change replaces the room's own limits: an empty one hands every limit back to the engine
/// (found by a new-user review: with merging, a room could never follow the engine again).
#[tokio::test]
async fn an_empty_change_hands_the_limits_back_to_the_engine() {
    let clock = ManualClock::new(1_700_000_000_000);
    let mut limits = unthrottled();
    limits.user_messages_per_window = Some((1, Duration::from_secs(60)));
    let (engine, owner) = engine_with(limits, Some(clock), "owner").await;
    let id = owner
        .chat_room_manager()
        .create_chat_room(
            CreateChatRoomOptions::new("side")
                .with_limits(RoomLimits::default().with_user_messages_per_window(None)),
        )
        .await
        .unwrap()
        .room_id;
    let viewer = join(&engine, "viewer", id).await;
    let chat = viewer.chat_manager();
    let send = || chat.send_message(OutgoingMessage::text(id, "x"));
    send().await.unwrap();
    send().await.expect("no window of its own");
    owner
        .chat_room_manager()
        .change_chat_room_limits(&id, RoomLimits::default())
        .await
        .unwrap();
    let info = owner
        .chat_room_manager()
        .fetch_chat_room_info(&id)
        .await
        .unwrap();
    assert_eq!(info.limits, RoomLimits::default());
    send().await.unwrap();
    assert_eq!(
        send().await.unwrap_err().code(),
        509,
        "the engine's window again"
    );
    engine.shutdown().await;
}
