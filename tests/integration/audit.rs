//! Moderation reasons (on events and in the audit log) and the audit log itself: who may read
//! it, paging, retention, the engine's own acts, restarts, hibernation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use roomcast::{
    AuditAction, ChatRoomEvent, Engine, Limits, ManualClock, MuteDuration, REASON_MAX_CHARS,
};

use crate::support::*;

/// Keeps the reason of every event it gets, and still counts the callbacks.
struct Reasons {
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl roomcast::ChatRoomEventHandler for Reasons {
    fn on_chat_room_event(&self, event: &ChatRoomEvent) {
        self.seen
            .lock()
            .unwrap()
            .push(event.operator_reason().map(str::to_string));
        roomcast::dispatch_callback(self, event);
    }
}

async fn room_event(stream: &mut roomcast::EventStream) -> ChatRoomEvent {
    match next_event(stream).await {
        Some(roomcast::ClientEvent::Room(e)) => (*e).clone(),
        other => panic!("expected a room event, got {other:?}"),
    }
}

#[tokio::test]
async fn reasons_ride_on_events_and_into_the_log() {
    let (engine, owner) = engine_with(unthrottled(), None, "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let admin = join(&engine, "admin", room).await;
    let bob = join(&engine, "bob", room).await;
    owner
        .chat_room_manager()
        .add_chat_room_admin(&room, "admin")
        .await
        .unwrap();
    // Through the event stream, and through a handler that takes whole events.
    let mut stream = bob.events();
    let reasons = Arc::new(Mutex::new(Vec::new()));
    bob.chat_room_manager().add_event_handler(
        "reasons",
        Reasons {
            seen: reasons.clone(),
        },
    );
    let mods = admin.chat_room_manager().with_reason("spoilers");
    mods.mute_chat_room_members(&room, ["bob"], Duration::from_secs(60))
        .await
        .unwrap();
    let event = room_event(&mut stream).await;
    assert!(matches!(event, ChatRoomEvent::MuteListAdded { .. }));
    assert_eq!(event.operator_reason(), Some("spoilers"));
    // Without a reason: none.
    admin
        .chat_room_manager()
        .unmute_chat_room_members(&room, ["bob"])
        .await
        .unwrap();
    let event = room_event(&mut stream).await;
    assert!(matches!(event, ChatRoomEvent::MuteListRemoved { .. }));
    assert_eq!(event.operator_reason(), None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reasons.lock().unwrap().len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handler heard both"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        *reasons.lock().unwrap(),
        [Some("spoilers".to_string()), None]
    );
    // Too long: refused, nothing happens, nothing logged.
    let long = "x".repeat(REASON_MAX_CHARS + 1);
    let err = owner
        .chat_room_manager()
        .with_reason(long)
        .remove_chat_room_members(&room, ["bob"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), 110);
    let log = owner
        .chat_room_manager()
        .fetch_chat_room_audit_log(&room, None, 100)
        .await
        .unwrap();
    let actions: Vec<(AuditAction, Option<&str>, Option<&str>)> = log
        .data
        .iter()
        .map(|e| {
            (
                e.action.clone(),
                e.operator.as_ref().map(|u| u.as_str()),
                e.reason.as_deref(),
            )
        })
        .collect();
    assert!(matches!(actions[1].0, AuditAction::Mute { until: Some(_) }));
    assert_eq!(
        (
            actions[0].clone(),
            actions[1].1,
            actions[1].2,
            actions[2].clone()
        ),
        (
            (AuditAction::Unmute, Some("admin"), None),
            Some("admin"),
            Some("spoilers"),
            (AuditAction::AddAdmin, Some("owner"), None)
        )
    );
    assert_eq!(log.data.len(), 3);
    assert_eq!(
        log.data.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    // Members may not read it; admins may.
    let err = bob
        .chat_room_manager()
        .fetch_chat_room_audit_log(&room, None, 10)
        .await
        .unwrap_err();
    assert_eq!(err.code(), 703);
    let page = admin
        .chat_room_manager()
        .fetch_chat_room_audit_log(&room, None, 2)
        .await
        .unwrap();
    assert_eq!(page.data.len(), 2);
    let rest = admin
        .chat_room_manager()
        .fetch_chat_room_audit_log(&room, page.cursor, 2)
        .await
        .unwrap();
    assert_eq!(rest.data.iter().map(|e| e.seq).collect::<Vec<_>>(), [1]);
    assert_eq!(rest.cursor, None);
    for size in [0, roomcast::LIST_PAGE_MAX + 1] {
        let err = owner
            .chat_room_manager()
            .fetch_chat_room_audit_log(&room, None, size)
            .await
            .unwrap_err();
        assert_eq!(err.code(), 110);
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn the_engine_logs_a_mute_that_ends_by_itself() {
    let clock = ManualClock::new(1_700_000_000_000);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let _bob = join(&engine, "bob", room).await;
    let rooms = owner.chat_room_manager();
    rooms
        .with_reason("cool down")
        .mute_chat_room_members(&room, ["bob"], MuteDuration::For(Duration::from_secs(30)))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(31));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = rooms
            .fetch_chat_room_audit_log(&room, None, 10)
            .await
            .unwrap();
        if log.data[0].action == AuditAction::MuteExpired {
            assert_eq!(log.data[0].operator, None);
            assert_eq!(log.data[0].targets, [uid("bob")]);
            assert_eq!(log.data[0].time, 1_700_000_030_000);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no expiry logged");
        tokio::task::yield_now().await;
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn the_log_survives_a_restart_keeps_its_newest_and_goes_with_its_room() {
    let dir = tempfile::tempdir().unwrap();
    let limits = unthrottled().with_audit_log_retention(5);
    let open = |limits: Limits| {
        let dir = dir.path().to_path_buf();
        async move {
            Engine::builder()
                .data_dir(dir)
                .limits(limits)
                .build()
                .await
                .unwrap()
        }
    };
    let room = {
        let engine = open(limits.clone()).await;
        engine.add_super_admin("owner").await.unwrap();
        let owner = engine.login("owner").await.unwrap();
        let room = create_room(&owner, "stream").await.room_id;
        let rooms = owner.chat_room_manager().with_reason("drill");
        for on in [true, false, true, false, true, false, true] {
            if on {
                rooms.mute_all_chat_room_members(&room).await.unwrap();
            } else {
                rooms.unmute_all_chat_room_members(&room).await.unwrap();
            }
        }
        engine.shutdown().await;
        room
    };
    let engine = open(limits).await;
    let owner = engine.login("owner").await.unwrap();
    let rooms = owner.chat_room_manager();
    let log = rooms
        .fetch_chat_room_audit_log(&room, None, 100)
        .await
        .unwrap();
    assert_eq!(
        log.data.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [7, 6, 5, 4, 3],
        "the newest 5"
    );
    assert!(log
        .data
        .iter()
        .all(|e| e.reason.as_deref() == Some("drill")));
    // Numbering goes on after the restart.
    rooms.unmute_all_chat_room_members(&room).await.unwrap();
    let log = rooms
        .fetch_chat_room_audit_log(&room, None, 1)
        .await
        .unwrap();
    assert_eq!(
        (log.data[0].seq, log.data[0].action.clone()),
        (8, AuditAction::UnmuteAll)
    );
    rooms.destroy_chat_room(&room).await.unwrap();
    engine.shutdown().await;
    drop(engine);
    let report = roomcast::store::check(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}
