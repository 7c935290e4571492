use roomcast::CreateChatRoomOptions;

use crate::support::*;

#[tokio::test]
async fn pages_are_newest_first_and_cover_every_room_once() {
    let (engine, alice) = engine_with_admin("alice").await;
    let mut created = Vec::new();
    for n in 0..23 {
        created.push(create_room(&alice, &format!("room {n:02}")).await.room_id);
    }
    let newest_first: Vec<_> = created.iter().rev().copied().collect();
    let bob = engine.login("bob").await.unwrap();
    let rooms = bob.chat_room_manager();

    let mut listed = Vec::new();
    for page_num in 1..=3 {
        let page = rooms
            .fetch_public_chat_rooms(page_num, 10, None)
            .await
            .unwrap();
        assert_eq!(page.total, 23);
        assert_eq!(page.page_num, page_num);
        assert_eq!(page.page_size, 10);
        assert_eq!(page.page_count(), if page_num < 3 { 10 } else { 3 });
        assert_eq!(page.has_more(), page_num < 3);
        listed.extend(page.data.iter().map(|r| r.room_id));
    }
    assert_eq!(listed, newest_first);

    let beyond = rooms.fetch_public_chat_rooms(4, 10, None).await.unwrap();
    assert!(beyond.data.is_empty());
    assert_eq!(beyond.total, 23);
    let one = rooms.fetch_public_chat_rooms(23, 1, None).await.unwrap();
    assert_eq!(one.data[0].room_id, created[0]);
    let all = rooms.fetch_public_chat_rooms(1, 100, None).await.unwrap();
    assert_eq!(all.page_count(), 23);
    assert!(!all.has_more());
}

#[tokio::test]
async fn bad_page_numbers_and_sizes_are_invalid_params() {
    let (_engine, alice) = engine_with_admin("alice").await;
    let rooms = alice.chat_room_manager();
    for (num, size) in [(0, 10), (1, 0), (1, 101), (0, 0), (u32::MAX, 0)] {
        let err = rooms.fetch_public_chat_rooms(num, size, None).await;
        assert_eq!(err.unwrap_err().code(), 110, "page {num} size {size}");
    }
    let huge = rooms.fetch_public_chat_rooms(u32::MAX, 100, None).await;
    assert!(huge.unwrap().data.is_empty());
}

#[tokio::test]
async fn the_list_shows_current_member_counts_and_drops_destroyed_rooms() {
    let (engine, alice) = engine_with_admin("alice").await;
    let a = create_room(&alice, "a").await;
    let b = create_room(&alice, "b").await;
    join(&engine, "x", a.room_id).await;
    join(&engine, "y", a.room_id).await;
    let rooms = alice.chat_room_manager();
    let page = rooms.fetch_public_chat_rooms(1, 10, None).await.unwrap();
    let counts: Vec<_> = page
        .data
        .iter()
        .map(|r| (r.name.clone(), r.member_count))
        .collect();
    assert_eq!(counts, vec![("b".into(), 1), ("a".into(), 3)]);
    assert!(page
        .data
        .iter()
        .all(|r| r.permission_type == roomcast::ChatRoomPermissionType::None));
    rooms.destroy_chat_room(&b.room_id).await.unwrap();
    let page = rooms.fetch_public_chat_rooms(1, 10, None).await.unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.data[0].room_id, a.room_id);
}

#[tokio::test]
async fn the_name_filter_ignores_case() {
    let (_engine, alice) = engine_with_admin("alice").await;
    let rooms = alice.chat_room_manager();
    for name in ["Speedrun Weekly", "cooking", "SPEEDRUN finals", "chess"] {
        rooms
            .create_chat_room(CreateChatRoomOptions::new(name))
            .await
            .unwrap();
    }
    let page = rooms
        .fetch_public_chat_rooms(1, 10, Some("speedrun"))
        .await
        .unwrap();
    let names: Vec<_> = page.data.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["SPEEDRUN finals", "Speedrun Weekly"]);
    assert_eq!(page.total, 2);
    let page = rooms
        .fetch_public_chat_rooms(2, 1, Some("SPEEDRUN"))
        .await
        .unwrap();
    assert_eq!(page.data[0].name, "Speedrun Weekly");
    let none = rooms
        .fetch_public_chat_rooms(1, 10, Some("golf"))
        .await
        .unwrap();
    assert_eq!(none.total, 0);
}
