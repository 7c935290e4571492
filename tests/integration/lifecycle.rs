use roomcast::{ChatOptions, ChatRoomPermissionType, CreateChatRoomOptions, Limits, RoomId};

use crate::support::*;

#[tokio::test]
async fn only_a_super_admin_creates_and_becomes_owner_and_member() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "lobby").await;
    assert_eq!(room.owner, uid("alice"));
    assert_eq!(room.member_count, 1);
    assert_eq!(room.max_users, 300, "the SDK's default max members");
    assert_eq!(room.permission_type, ChatRoomPermissionType::Owner);

    let bob = engine.login("bob").await.unwrap();
    let err = bob
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 703);

    engine.add_super_admin("bob").await.unwrap();
    assert!(bob
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("yes"))
        .await
        .is_ok());
    assert!(engine.remove_super_admin("bob").await.unwrap());
    assert!(!engine.remove_super_admin("bob").await.unwrap());
    assert_eq!(engine.super_admins(), vec![uid("alice")]);
    let err = bob
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("no more"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 703);
}

#[tokio::test]
async fn create_validates_every_parameter() {
    let (_engine, alice) = engine_with_admin("alice").await;
    let rooms = alice.chat_room_manager();
    let cases: Vec<(CreateChatRoomOptions, u32)> = vec![
        (CreateChatRoomOptions::new(""), 110),
        (CreateChatRoomOptions::new("n".repeat(129)), 110),
        (
            CreateChatRoomOptions::new("ok").with_description("d".repeat(513)),
            110,
        ),
        (
            CreateChatRoomOptions::new("ok").with_welcome_message("w".repeat(513)),
            110,
        ),
        (CreateChatRoomOptions::new("ok").with_max_users(0), 110),
        (
            CreateChatRoomOptions::new("ok").with_max_users(100_001),
            110,
        ),
        (
            CreateChatRoomOptions::new("ok").with_members(["Bad Id"]),
            110,
        ),
        (
            CreateChatRoomOptions::new("ok")
                .with_members(["b", "c"])
                .with_max_users(2),
            704,
        ),
    ];
    for (options, code) in cases {
        let err = rooms.create_chat_room(options.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{options:?}");
    }
    let page = rooms.fetch_public_chat_rooms(1, 100, None).await.unwrap();
    assert_eq!(page.total, 0, "no failed create left a room behind");

    let room = rooms
        .create_chat_room(
            CreateChatRoomOptions::new("n".repeat(128))
                .with_description("d".repeat(512))
                .with_members(["B", "c", "b"])
                .with_max_users(3),
        )
        .await
        .unwrap();
    assert_eq!(
        room.member_count, 3,
        "creator + b + c; ids fold case, duplicates count once"
    );
}

#[tokio::test]
async fn members_added_at_creation_are_in_the_room() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = alice
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("r").with_members(["bob"]))
        .await
        .unwrap();
    let bob = engine.login("bob").await.unwrap();
    let err = bob
        .chat_room_manager()
        .join_chat_room(&room.room_id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), 701, "bob is already in");
    let bob_rec = record(&bob, "bob");
    join(&engine, "carol", room.room_id).await;
    bob_rec.wait_for_count(1).await;
    assert_eq!(bob_rec.events(), vec![joined(room.room_id, "carol")]);
}

#[tokio::test]
async fn max_users_is_capped_by_the_engine_limit() {
    let mut limits = Limits::default();
    limits.max_users_cap = 50;
    limits.default_max_users = 10;
    let engine = roomcast::Engine::builder()
        .limits(limits)
        .build()
        .await
        .unwrap();
    engine.add_super_admin("a").await.unwrap();
    let a = engine.login("a").await.unwrap();
    let rooms = a.chat_room_manager();
    let room = rooms
        .create_chat_room(CreateChatRoomOptions::new("r"))
        .await
        .unwrap();
    assert_eq!(room.max_users, 10);
    let err = rooms
        .create_chat_room(CreateChatRoomOptions::new("r").with_max_users(51))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 110);
}

#[tokio::test]
async fn the_engine_room_limit_is_a_service_limit() {
    let mut limits = Limits::default();
    limits.max_rooms = 2;
    let engine = roomcast::Engine::builder()
        .limits(limits)
        .build()
        .await
        .unwrap();
    engine.add_super_admin("a").await.unwrap();
    let a = engine.login("a").await.unwrap();
    let r1 = create_room(&a, "1").await;
    create_room(&a, "2").await;
    let err = a
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("3"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 4);
    a.chat_room_manager()
        .destroy_chat_room(&r1.room_id)
        .await
        .unwrap();
    create_room(&a, "3").await;
}

#[tokio::test]
async fn join_rules_and_codes() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = alice
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("small").with_max_users(2))
        .await
        .unwrap();
    let bob = engine.login("bob").await.unwrap();
    let joined_room = bob
        .chat_room_manager()
        .join_chat_room(&room.room_id)
        .await
        .unwrap();
    assert_eq!(joined_room.member_count, 2);
    assert_eq!(joined_room.permission_type, ChatRoomPermissionType::Member);

    let again = bob.chat_room_manager().join_chat_room(&room.room_id).await;
    assert_eq!(again.unwrap_err().code(), 701);

    let carol = engine.login("carol").await.unwrap();
    let full = carol
        .chat_room_manager()
        .join_chat_room(&room.room_id)
        .await;
    assert_eq!(full.unwrap_err().code(), 704);

    let unknown = carol
        .chat_room_manager()
        .join_chat_room(&RoomId::from_u64(12345))
        .await;
    assert_eq!(unknown.unwrap_err().code(), 705);

    for bad in ["", "abc", "12x", "-5"] {
        assert_eq!(bad.parse::<RoomId>().unwrap_err().code(), 700, "{bad:?}");
    }
}

#[tokio::test]
async fn leave_rules_and_the_owner_stays_owner() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "r").await;
    let bob = engine.login("bob").await.unwrap();
    let err = bob.chat_room_manager().leave_chat_room(&room.room_id).await;
    assert_eq!(err.unwrap_err().code(), 702);

    let rooms = alice.chat_room_manager();
    rooms.leave_chat_room(&room.room_id).await.unwrap();
    let info = rooms.fetch_chat_room_info(&room.room_id).await.unwrap();
    assert_eq!(info.member_count, 0);
    assert_eq!(info.owner, uid("alice"));
    assert_eq!(info.permission_type, ChatRoomPermissionType::Owner);
    rooms.join_chat_room(&room.room_id).await.unwrap();
    rooms.destroy_chat_room(&room.room_id).await.unwrap();
}

#[tokio::test]
async fn an_owner_may_be_forbidden_to_leave() {
    let (engine, _alice) = engine_with_admin("alice").await;
    let strict = engine
        .login_with_options(
            "alice",
            ChatOptions::default().with_chat_room_owner_leave_allowed(false),
        )
        .await
        .unwrap();
    let room = create_room(&strict, "r").await;
    let err = strict
        .chat_room_manager()
        .leave_chat_room(&room.room_id)
        .await;
    assert_eq!(err.unwrap_err().code(), 706);
    let bob = join(&engine, "bob", room.room_id).await;
    let bob_strict = engine
        .login_with_options(
            "bob",
            ChatOptions::default().with_chat_room_owner_leave_allowed(false),
        )
        .await
        .unwrap();
    bob_strict
        .chat_room_manager()
        .leave_chat_room(&room.room_id)
        .await
        .expect("the option only binds owners");
    drop(bob);
}

#[tokio::test]
async fn info_is_readable_by_anyone() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = alice
        .chat_room_manager()
        .create_chat_room(
            CreateChatRoomOptions::new("Show")
                .with_description("about")
                .with_max_users(42),
        )
        .await
        .unwrap();
    let stranger = engine.login("stranger").await.unwrap();
    let info = stranger
        .chat_room_manager()
        .fetch_chat_room_info(&room.room_id)
        .await
        .unwrap();
    assert_eq!(info.room_id, room.room_id);
    assert_eq!(info.name, "Show");
    assert_eq!(info.description, "about");
    assert_eq!(info.announcement, "");
    assert_eq!(info.owner, uid("alice"));
    assert!(info.admin_list.is_empty());
    assert_eq!(info.max_users, 42);
    assert_eq!(info.member_count, 1);
    assert!(!info.is_all_member_muted);
    assert_eq!(info.permission_type, ChatRoomPermissionType::None);
    let err = stranger
        .chat_room_manager()
        .fetch_chat_room_info(&RoomId::from_u64(1))
        .await;
    assert_eq!(err.unwrap_err().code(), 705);
}

#[tokio::test]
async fn destroy_is_owner_only_then_everything_is_705() {
    let (engine, alice) = engine_with_admin("alice").await;
    let room = create_room(&alice, "doomed").await;
    let bob = join(&engine, "bob", room.room_id).await;
    let err = bob
        .chat_room_manager()
        .destroy_chat_room(&room.room_id)
        .await;
    assert_eq!(err.unwrap_err().code(), 703);
    engine.add_super_admin("bob").await.unwrap();
    let err = bob
        .chat_room_manager()
        .destroy_chat_room(&room.room_id)
        .await;
    assert_eq!(
        err.unwrap_err().code(),
        703,
        "a super admin is not the owner"
    );

    alice
        .chat_room_manager()
        .destroy_chat_room(&room.room_id)
        .await
        .unwrap();
    let id = room.room_id;
    let bm = bob.chat_room_manager();
    assert_eq!(bm.join_chat_room(&id).await.unwrap_err().code(), 705);
    assert_eq!(bm.leave_chat_room(&id).await.unwrap_err().code(), 705);
    assert_eq!(bm.fetch_chat_room_info(&id).await.unwrap_err().code(), 705);
    let am = alice.chat_room_manager();
    assert_eq!(am.destroy_chat_room(&id).await.unwrap_err().code(), 705);
    let page = am.fetch_public_chat_rooms(1, 10, None).await.unwrap();
    assert!(page.data.is_empty());
}
