use std::time::Duration;

use roomcast::{CreateChatRoomOptions, ManualClock, OutgoingMessage};

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
    let cases: [fn(&mut roomcast::Limits); 4] = [
        |l| l.api_calls_per_user_per_second = Some(0),
        |l| l.room_delivery_rate = Some(0),
        |l| l.user_messages_per_window = Some((0, Duration::from_secs(1))),
        |l| l.user_messages_per_window = Some((5, Duration::ZERO)),
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
