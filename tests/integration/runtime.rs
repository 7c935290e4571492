use std::time::Duration;

use roomcast::{CreateChatRoomOptions, Engine, ManualClock, RoomId};

use crate::support::*;

/// The whole lifecycle, driven from a runtime the test builds itself (as `#[tokio::main]` does),
/// with no actix System anywhere in the caller.
async fn lifecycle() {
    let engine = Engine::builder().build().await.unwrap();
    engine.add_super_admin("alice").await.unwrap();
    let alice = engine.login("alice").await.unwrap();
    let room = create_room(&alice, "r").await;
    let rec = record(&alice, "a");
    let bob = join(&engine, "bob", room.room_id).await;
    rec.wait_for_count(1).await;
    bob.chat_room_manager()
        .leave_chat_room(&room.room_id)
        .await
        .unwrap();
    rec.wait_for_count(2).await;
    alice
        .chat_room_manager()
        .destroy_chat_room(&room.room_id)
        .await
        .unwrap();
    engine.shutdown().await;
}

#[test]
fn works_from_a_plain_multi_thread_tokio_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(lifecycle());
}

#[test]
fn works_from_a_current_thread_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(lifecycle());
}

#[test]
fn works_from_a_runtime_without_timers() {
    // The engine's call timeouts run on its own runtime; the caller's needs no time driver.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine = Engine::builder().build().await.unwrap();
        engine.add_super_admin("alice").await.unwrap();
        let alice = engine.login("alice").await.unwrap();
        let room = create_room(&alice, "r").await;
        engine
            .login("bob")
            .await
            .unwrap()
            .chat_room_manager()
            .join_chat_room(&room.room_id)
            .await
            .unwrap();
        engine.shutdown().await;
    });
}

#[tokio::test(start_paused = true)]
async fn paused_tokio_time_in_the_caller_does_not_fire_call_timeouts() {
    let engine = Engine::builder()
        .call_timeout(Some(Duration::from_millis(50)))
        .build()
        .await
        .unwrap();
    engine.add_super_admin("alice").await.unwrap();
    let alice = engine.login("alice").await.unwrap();
    for n in 0..20 {
        create_room(&alice, &format!("r{n}")).await;
    }
    engine.shutdown().await;
}

#[tokio::test]
async fn handles_and_futures_move_across_tasks() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "r").await;
    let manager = engine.login("bob").await.unwrap().chat_room_manager();
    let joined = tokio::spawn(async move { manager.join_chat_room(&room.room_id).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(joined.member_count, 2);
    let e2 = engine.clone();
    std::thread::spawn(move || drop(e2)).join().unwrap();
}

#[tokio::test]
async fn calls_after_shutdown_fail_with_900_and_shutdown_is_idempotent() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "r").await;
    let bob = engine.login("bob").await.unwrap();
    engine.shutdown().await;
    engine.shutdown().await;
    assert!(engine.is_shut_down());
    let rooms = bob.chat_room_manager();
    let id = room.room_id;
    let codes = [
        rooms.join_chat_room(&id).await.unwrap_err().code(),
        rooms.leave_chat_room(&id).await.unwrap_err().code(),
        rooms.fetch_chat_room_info(&id).await.unwrap_err().code(),
        rooms
            .fetch_public_chat_rooms(1, 10, None)
            .await
            .unwrap_err()
            .code(),
        rooms.destroy_chat_room(&id).await.unwrap_err().code(),
        alice
            .chat_room_manager()
            .create_chat_room(CreateChatRoomOptions::new("x"))
            .await
            .unwrap_err()
            .code(),
        engine.add_super_admin("zed").await.unwrap_err().code(),
        engine.remove_super_admin("alice").await.unwrap_err().code(),
        engine.login("carol").await.err().unwrap().code(),
    ];
    assert!(codes.iter().all(|c| *c == 900), "{codes:?}");
    let mut stream = bob.events();
    assert!(next_event(&mut stream).await.is_none());
}

#[tokio::test]
async fn dropping_every_handle_without_shutdown_stops_cleanly() {
    let (engine, alice) = engine_with_admin("alice").await;
    create_room(&alice, "r").await;
    drop(alice);
    drop(engine);
    // A new engine starts fine afterwards (threads and the temporary store were released).
    let (engine, alice) = engine_with_admin("alice").await;
    create_room(&alice, "r").await;
    engine.shutdown().await;
}

#[tokio::test]
async fn bad_user_ids_are_invalid_params_everywhere() {
    let (engine, alice) = engine_with_admin("alice").await;
    let long = "x".repeat(65);
    for bad in ["", "has space", "slash/", "ünïcode", long.as_str(), "\0"] {
        assert_eq!(
            engine.login(bad).await.err().unwrap().code(),
            110,
            "{bad:?}"
        );
        assert_eq!(engine.add_super_admin(bad).await.unwrap_err().code(), 110);
        assert_eq!(
            engine.remove_super_admin(bad).await.unwrap_err().code(),
            110
        );
        let err = alice
            .chat_room_manager()
            .create_chat_room(CreateChatRoomOptions::new("r").with_members([bad]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 110);
    }
    assert_eq!(engine.super_admins(), vec![uid("alice")]);
}

#[tokio::test]
async fn huge_and_odd_inputs_get_errors_not_panics() {
    let (_engine, alice) = engine_with_admin("alice").await;
    let rooms = alice.chat_room_manager();
    let huge = "界".repeat(1 << 20);
    let err = rooms
        .create_chat_room(CreateChatRoomOptions::new(huge.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 110);
    // 128 multi-byte characters are within the limit (it counts characters, not bytes).
    rooms
        .create_chat_room(CreateChatRoomOptions::new("界".repeat(128)))
        .await
        .unwrap();
    let err = rooms
        .create_chat_room(CreateChatRoomOptions::new("r").with_members(vec!["m"; 1_001]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 110);
    for id in [0, u64::MAX] {
        let err = rooms
            .join_chat_room(&RoomId::from_u64(id))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 705);
    }
    assert_eq!(huge.parse::<RoomId>().unwrap_err().code(), 700);
    let page = rooms
        .fetch_public_chat_rooms(1, 10, Some(&huge))
        .await
        .unwrap();
    assert_eq!(page.total, 0);
}

#[tokio::test]
async fn creation_time_comes_from_the_injected_clock() {
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = Engine::builder()
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    engine.add_super_admin("alice").await.unwrap();
    let alice = engine.login("alice").await.unwrap();
    let first = create_room(&alice, "a").await;
    clock.advance(Duration::from_secs(60));
    let second = create_room(&alice, "b").await;
    assert_eq!(first.created_at, 1_700_000_000_000);
    assert_eq!(second.created_at, 1_700_000_060_000);
    assert!(second.room_id > first.room_id);
    engine.shutdown().await;
}
