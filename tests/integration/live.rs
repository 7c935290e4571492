//! Live-stream moderation beyond Agora, through the public API: slow mode (Twitch), a timed
//! freeze (Sendbird), a kick with a rejoin ban (Twitch timeouts, Tencent, RongCloud). Every
//! window runs on a `ManualClock`; state survives a restart on a data directory.

use std::time::Duration;

use roomcast::{
    AuditAction, ChatError, ChatRoomEvent, ClientEvent, Engine, EventStream, ManualClock,
    MuteDuration, OutgoingMessage, RoomId,
};

use crate::support::*;

const T0: i64 = 1_700_000_000_000;

async fn room_event(stream: &mut EventStream) -> ChatRoomEvent {
    loop {
        match next_event(stream).await {
            Some(ClientEvent::Room(e)) => return (*e).clone(),
            Some(_) => continue,
            None => panic!("the stream ended"),
        }
    }
}

async fn send(client: &roomcast::ChatClient, room: RoomId, text: &str) -> Result<u64, ChatError> {
    client
        .chat_manager()
        .send_message(OutgoingMessage::text(room, text))
        .await
        .map(|m| m.seq())
}

async fn open(dir: &std::path::Path, clock: &ManualClock) -> Engine {
    Engine::builder()
        .data_dir(dir)
        .clock(clock.clone())
        .limits(unthrottled())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn slow_mode_paces_members_and_spares_staff_and_the_allow_list() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let bob = join(&engine, "bob", room).await;
    let vip = join(&engine, "vip", room).await;
    let rooms = owner.chat_room_manager();
    rooms
        .add_members_to_chat_room_allow_list(&room, ["vip"])
        .await
        .unwrap();
    let mut bob_events = bob.events();
    // Bounds and roles.
    for bad in [
        Duration::ZERO,
        Duration::from_millis(999),
        Duration::from_secs(121),
    ] {
        let err = rooms
            .set_chat_room_slow_mode(&room, Some(bad))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 110, "{bad:?}");
    }
    let err = bob
        .chat_room_manager()
        .set_chat_room_slow_mode(&room, Some(Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 703);
    rooms
        .with_reason("hype train")
        .set_chat_room_slow_mode(&room, Some(Duration::from_secs(10)))
        .await
        .unwrap();
    // (Earlier events, such as vip's join, may still be on their way.)
    let event = loop {
        let e = room_event(&mut bob_events).await;
        if matches!(e, ChatRoomEvent::SlowModeChanged { .. }) {
            break e;
        }
    };
    assert!(
        matches!(event, ChatRoomEvent::SlowModeChanged { cooldown: Some(c), .. } if c == Duration::from_secs(10))
    );
    assert_eq!(event.operator_reason(), Some("hype train"));
    send(&bob, room, "one").await.unwrap();
    clock.advance(Duration::from_secs(4));
    match send(&bob, room, "two").await {
        Err(ChatError::SlowMode(wait)) => assert_eq!(wait, Duration::from_secs(6)),
        other => panic!("{other:?}"),
    }
    // Leaving and coming back does not reset the cooldown.
    bob.chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    assert_eq!(send(&bob, room, "two").await.unwrap_err().code(), 509);
    // The allow list and the owner are exempt.
    for _ in 0..3 {
        send(&vip, room, "vip").await.unwrap();
        send(&owner, room, "host").await.unwrap();
    }
    clock.advance(Duration::from_secs(6));
    send(&bob, room, "two").await.unwrap();
    // Off: no pacing.
    rooms.set_chat_room_slow_mode(&room, None).await.unwrap();
    assert_eq!(
        rooms.fetch_chat_room_info(&room).await.unwrap().slow_mode,
        None
    );
    send(&bob, room, "three").await.unwrap();
    send(&bob, room, "four").await.unwrap();
    let log = rooms
        .fetch_chat_room_audit_log(&room, None, 10)
        .await
        .unwrap();
    assert_eq!(
        log.data[0].action,
        AuditAction::SlowMode { cooldown_ms: None }
    );
    assert_eq!(
        log.data[1].action,
        AuditAction::SlowMode {
            cooldown_ms: Some(10_000)
        }
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_timed_freeze_lets_only_staff_speak_and_ends_by_itself() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let admin = join(&engine, "admin", room).await;
    let bob = join(&engine, "bob", room).await;
    let vip = join(&engine, "vip", room).await;
    let rooms = owner.chat_room_manager();
    rooms.add_chat_room_admin(&room, "admin").await.unwrap();
    rooms
        .add_members_to_chat_room_allow_list(&room, ["vip"])
        .await
        .unwrap();
    let mut bob_events = bob.events();
    let mut owner_events = owner.events();
    admin
        .chat_room_manager()
        .with_reason("raid")
        .freeze_chat_room(&room, MuteDuration::For(Duration::from_secs(90)))
        .await
        .unwrap();
    let event = loop {
        let e = room_event(&mut bob_events).await;
        if matches!(e, ChatRoomEvent::FreezeChanged { .. }) {
            break e;
        }
    };
    assert_eq!(
        event,
        ChatRoomEvent::FreezeChanged {
            room_id: room,
            frozen: true,
            until: Some(T0 + 90_000),
            operator: Some(uid("admin")),
            operator_reason: Some("raid".into()),
        }
    );
    assert_eq!(
        send(&bob, room, "hi").await.unwrap_err(),
        ChatError::RoomFrozen(Some(T0 + 90_000))
    );
    assert_eq!(send(&vip, room, "hi").await.unwrap_err().code(), 219);
    send(&admin, room, "staff").await.unwrap();
    send(&owner, room, "staff").await.unwrap();
    // It ends by itself: every member hears it, the engine as operator.
    clock.advance(Duration::from_secs(90));
    let ended = ChatRoomEvent::FreezeChanged {
        room_id: room,
        frozen: false,
        until: None,
        operator: None,
        operator_reason: None,
    };
    loop {
        if room_event(&mut owner_events).await == ended {
            break;
        }
    }
    loop {
        if room_event(&mut bob_events).await == ended {
            break;
        }
    }
    send(&bob, room, "free").await.unwrap();
    let info = rooms.fetch_chat_room_info(&room).await.unwrap();
    assert!(!info.frozen && info.frozen_until.is_none());
    let log = rooms
        .fetch_chat_room_audit_log(&room, None, 10)
        .await
        .unwrap();
    assert_eq!(log.data[0].action, AuditAction::FreezeEnded);
    assert_eq!(
        (log.data[0].operator.clone(), log.data[0].time),
        (None, T0 + 90_000)
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn live_moderation_survives_a_restart_and_its_clocks_keep_running() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let room = {
        let engine = open(dir.path(), &clock).await;
        engine.add_super_admin("owner").await.unwrap();
        let owner = engine.login("owner").await.unwrap();
        let room = create_room(&owner, "stream").await.room_id;
        let _bob = join(&engine, "bob", room).await;
        let _carol = join(&engine, "carol", room).await;
        let rooms = owner.chat_room_manager();
        rooms
            .set_chat_room_slow_mode(&room, Some(Duration::from_secs(30)))
            .await
            .unwrap();
        rooms
            .freeze_chat_room(&room, MuteDuration::For(Duration::from_secs(120)))
            .await
            .unwrap();
        rooms
            .remove_chat_room_members_with_rejoin_ban(&room, ["carol"], Duration::from_secs(300))
            .await
            .unwrap();
        engine.shutdown().await;
        room
    };
    clock.advance(Duration::from_secs(60));
    let engine = open(dir.path(), &clock).await;
    let owner = engine.login("owner").await.unwrap();
    let rooms = owner.chat_room_manager();
    let info = rooms.fetch_chat_room_info(&room).await.unwrap();
    assert_eq!(info.slow_mode, Some(Duration::from_secs(30)));
    assert_eq!((info.frozen, info.frozen_until), (true, Some(T0 + 120_000)));
    let carol = engine.login("carol").await.unwrap();
    assert_eq!(
        carol
            .chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap_err(),
        ChatError::RejoinBanned(T0 + 300_000)
    );
    let bob = join(&engine, "bob", room).await;
    assert_eq!(send(&bob, room, "frozen").await.unwrap_err().code(), 219);
    // The freeze ends on time after the restart, by itself.
    clock.advance(Duration::from_secs(60));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rooms.fetch_chat_room_info(&room).await.unwrap().frozen {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freeze never ended"
        );
        tokio::task::yield_now().await;
    }
    send(&bob, room, "paced").await.unwrap();
    assert_eq!(send(&bob, room, "again").await.unwrap_err().code(), 509);
    clock.advance(Duration::from_secs(180));
    carol
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    engine.shutdown().await;
}

/// Polls the room's audit log until its newest entry is `action` on `target`, and returns the
/// log.
async fn logged(
    rooms: &roomcast::ChatRoomManager,
    room: RoomId,
    action: AuditAction,
    target: &str,
) -> Vec<roomcast::AuditEntry> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let log = rooms
            .fetch_chat_room_audit_log(&room, None, 20)
            .await
            .unwrap();
        if log
            .data
            .first()
            .is_some_and(|e| e.action == action && e.targets == [uid(target)])
        {
            return log.data;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{action:?} never logged: {:?}",
            log.data
        );
        tokio::task::yield_now().await;
    }
}

/// The block list as (user, end) pairs.
async fn blocked(rooms: &roomcast::ChatRoomManager, room: RoomId) -> Vec<(String, Option<i64>)> {
    let page = rooms
        .fetch_chat_room_block_list(&room, 1, 100)
        .await
        .unwrap();
    assert_eq!(page.total, page.data.len());
    page.data
        .into_iter()
        .map(|b| (b.user_id.to_string(), b.expire_time))
        .collect()
}

#[tokio::test]
async fn timed_blocks_end_by_themselves_and_an_unblock_clears_them() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let rooms = owner.chat_room_manager();
    let admin = join(&engine, "admin", room).await;
    rooms.add_chat_room_admin(&room, "admin").await.unwrap();
    let bob = join(&engine, "bob", room).await;
    let carol = join(&engine, "carol", room).await;
    let mut bob_events = bob.events();
    // Bounds and roles: zero time, a member, an admin on the owner.
    let zero = rooms
        .block_chat_room_members_for(&room, ["bob"], Duration::ZERO)
        .await;
    assert_eq!(zero.unwrap_err().code(), 110);
    let member = carol
        .chat_room_manager()
        .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(60))
        .await;
    assert_eq!(member.unwrap_err().code(), 703);
    let on_owner = admin
        .chat_room_manager()
        .block_chat_room_members_for(&room, ["owner"], Duration::from_secs(60))
        .await;
    assert_eq!(on_owner.unwrap_err().code(), 703);
    // An admin times bob out for a minute and a stranger for two, with a reason.
    admin
        .chat_room_manager()
        .with_reason("spam")
        .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(60))
        .await
        .unwrap();
    rooms
        .block_chat_room_members_for(&room, ["troll"], Duration::from_secs(120))
        .await
        .unwrap();
    rooms
        .block_chat_room_members(&room, ["forever"])
        .await
        .unwrap();
    loop {
        if let ChatRoomEvent::RemovedFromChatRoom {
            operator,
            operator_reason,
            ..
        } = room_event(&mut bob_events).await
        {
            assert_eq!(operator, Some(uid("admin")));
            assert_eq!(operator_reason.as_deref(), Some("spam"));
            break;
        }
    }
    assert_eq!(
        blocked(&rooms, room).await,
        vec![
            ("bob".into(), Some(T0 + 60_000)),
            ("forever".into(), None),
            ("troll".into(), Some(T0 + 120_000)),
        ]
    );
    let err = bob.chat_room_manager().join_chat_room(&room).await;
    assert_eq!(err.unwrap_err(), ChatError::UserInBlocklist);
    assert_eq!(send(&bob, room, "let me in").await.unwrap_err().code(), 210);
    // An unblock clears the end: troll may join at once, and stays unblocked past it.
    rooms
        .unblock_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    let troll = join(&engine, "troll", room).await;
    // Bob's block ends by itself on the engine clock.
    clock.advance(Duration::from_secs(60));
    let log = logged(&rooms, room, AuditAction::BlockExpired, "bob").await;
    assert_eq!(
        (log[0].operator.clone(), log[0].time, log[0].targets.clone()),
        (None, T0 + 60_000, vec![uid("bob")])
    );
    let timed_out = log
        .iter()
        .find(|e| e.action == AuditAction::BlockFor { until: T0 + 60_000 })
        .expect("the timed block is logged");
    assert_eq!(
        (timed_out.operator.clone(), timed_out.reason.as_deref()),
        (Some(uid("admin")), Some("spam"))
    );
    assert_eq!(blocked(&rooms, room).await, vec![("forever".into(), None)]);
    bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    send(&bob, room, "back").await.unwrap();
    // Troll's cancelled end passes: nothing happens (no second expiry logged).
    clock.advance(Duration::from_secs(60));
    let info = rooms.fetch_chat_room_info(&room).await.unwrap();
    assert_eq!(info.member_count, 5);
    let log = rooms
        .fetch_chat_room_audit_log(&room, None, 50)
        .await
        .unwrap();
    let expiries = log
        .data
        .iter()
        .filter(|e| e.action == AuditAction::BlockExpired)
        .count();
    assert_eq!(expiries, 1);
    drop(troll);
    engine.shutdown().await;
}

#[tokio::test]
async fn timed_blocks_survive_a_restart_and_end_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let room = {
        let engine = open(dir.path(), &clock).await;
        engine.add_super_admin("owner").await.unwrap();
        let owner = engine.login("owner").await.unwrap();
        let room = create_room(&owner, "stream").await.room_id;
        let _bob = join(&engine, "bob", room).await;
        let _carol = join(&engine, "carol", room).await;
        let rooms = owner.chat_room_manager();
        rooms
            .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(120))
            .await
            .unwrap();
        rooms
            .block_chat_room_members_for(&room, ["carol"], Duration::from_secs(30))
            .await
            .unwrap();
        engine.shutdown().await;
        room
    };
    // Down for a minute: carol's block ended meanwhile, bob's has a minute left.
    clock.advance(Duration::from_secs(60));
    let engine = open(dir.path(), &clock).await;
    let owner = engine.login("owner").await.unwrap();
    let rooms = owner.chat_room_manager();
    let log = logged(&rooms, room, AuditAction::BlockExpired, "carol").await;
    assert_eq!(
        (log[0].time, log[0].targets.clone()),
        (T0 + 30_000, vec![uid("carol")]),
        "logged at its end, when the room next ran"
    );
    assert_eq!(
        blocked(&rooms, room).await,
        vec![("bob".into(), Some(T0 + 120_000))]
    );
    let bob = engine.login("bob").await.unwrap();
    let err = bob.chat_room_manager().join_chat_room(&room).await;
    assert_eq!(err.unwrap_err().code(), 707);
    join(&engine, "carol", room).await;
    // Bob's ends by itself after the restart.
    clock.advance(Duration::from_secs(60));
    let log = logged(&rooms, room, AuditAction::BlockExpired, "bob").await;
    assert_eq!(
        (log[0].time, log[0].targets.clone()),
        (T0 + 120_000, vec![uid("bob")])
    );
    assert!(blocked(&rooms, room).await.is_empty());
    bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    engine.shutdown().await;
}
