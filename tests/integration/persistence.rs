use roomcast::{CreateChatRoomOptions, Durability, Engine};

use crate::support::*;

async fn open(dir: &std::path::Path) -> Engine {
    Engine::builder().data_dir(dir).build().await.unwrap()
}

#[tokio::test]
async fn reopening_a_data_dir_lists_the_same_rooms() {
    let dir = tempfile::tempdir().unwrap();
    let (before, destroyed_id) = {
        let engine = open(dir.path()).await;
        engine.add_super_admin("alice").await.unwrap();
        let alice = engine.login("alice").await.unwrap();
        let rooms = alice.chat_room_manager();
        for n in 0..5 {
            rooms
                .create_chat_room(
                    CreateChatRoomOptions::new(format!("room {n}"))
                        .with_description(format!("desc {n}"))
                        .with_max_users(100 + n),
                )
                .await
                .unwrap();
        }
        let doomed = create_room(&alice, "doomed").await;
        rooms.destroy_chat_room(&doomed.room_id).await.unwrap();
        join(
            &engine,
            "bob",
            rooms
                .fetch_public_chat_rooms(1, 1, None)
                .await
                .unwrap()
                .data[0]
                .room_id,
        )
        .await;
        let page = rooms.fetch_public_chat_rooms(1, 100, None).await.unwrap();
        engine.shutdown().await;
        (page, doomed.room_id)
    };

    let engine = open(dir.path()).await;
    assert_eq!(engine.super_admins(), vec![uid("alice")]);
    let alice = engine.login("alice").await.unwrap();
    let rooms = alice.chat_room_manager();
    let after = rooms.fetch_public_chat_rooms(1, 100, None).await.unwrap();
    assert_eq!(after.total, 5);
    let strip = |p: &roomcast::ChatPageResult<roomcast::ChatRoom>| {
        p.data
            .iter()
            .map(|r| {
                (
                    r.room_id,
                    r.name.clone(),
                    r.description.clone(),
                    r.owner.clone(),
                    r.max_users,
                    r.created_at,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&after), strip(&before));
    assert!(
        after.data.iter().all(|r| r.member_count == 0),
        "membership is not persisted"
    );

    let first = after.data[0].room_id;
    let info = rooms.fetch_chat_room_info(&first).await.unwrap();
    assert_eq!(info.owner, uid("alice"));
    assert_eq!(info.member_count, 0);
    join(&engine, "bob", first).await;
    assert_eq!(
        rooms
            .fetch_chat_room_info(&destroyed_id)
            .await
            .unwrap_err()
            .code(),
        705
    );
    let newer = create_room(&alice, "after restart").await;
    assert!(newer.room_id > first, "ids keep growing across restarts");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_buffered_store_also_survives_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::builder()
            .data_dir(dir.path())
            .durability(Durability::Buffered {
                flush_every: std::time::Duration::from_secs(60),
            })
            .build()
            .await
            .unwrap();
        engine.add_super_admin("alice").await.unwrap();
        let alice = engine.login("alice").await.unwrap();
        create_room(&alice, "kept").await;
        engine.shutdown().await;
    }
    let engine = open(dir.path()).await;
    let alice = engine.login("alice").await.unwrap();
    let page = alice
        .chat_room_manager()
        .fetch_public_chat_rooms(1, 10, None)
        .await
        .unwrap();
    assert_eq!(page.data[0].name, "kept");
}

#[tokio::test]
async fn a_second_engine_on_a_locked_dir_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path()).await;
    let second = Engine::builder().data_dir(dir.path()).build().await;
    assert_eq!(second.err().map(|e| e.code()), Some(902));
    engine.shutdown().await;
    let again = open(dir.path()).await;
    again.shutdown().await;
}

/// Every way a store can fail to open is a 902 whose source chain names the cause, never a
/// panic and never a general error with the cause only on stderr.
#[tokio::test]
async fn a_store_that_cannot_be_opened_is_902_with_its_cause() {
    use std::error::Error;
    fn chain(e: &roomcast::ChatError) -> String {
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            text.push_str(" <- ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
    // The data directory is a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = Engine::builder()
        .data_dir(&file)
        .build()
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), 902, "{err}");
    assert!(err.source().is_some(), "the cause is kept: {}", chain(&err));

    // The log is garbage.
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).await.shutdown().await;
    let db = dir.path().join("db");
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    std::fs::write(&db, vec![0xA5u8; len.max(4096)]).unwrap();
    match Engine::builder().data_dir(dir.path()).build().await {
        Ok(engine) => engine.shutdown().await,
        Err(err) => {
            assert_eq!(err.code(), 902, "{}", chain(&err));
            assert!(err.source().is_some(), "{}", chain(&err));
        }
    }

    // The log is cut in half after real writes.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .data_dir(dir.path())
        .limits(unthrottled())
        .build()
        .await
        .unwrap();
    engine.add_super_admin("alice").await.unwrap();
    let alice = engine.login("alice").await.unwrap();
    let room = create_room(&alice, "r").await;
    for n in 0..200 {
        say(&alice, room.room_id, &format!("m{n}")).await;
    }
    engine.shutdown().await;
    drop(alice);
    let len = std::fs::metadata(db_of(dir.path())).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(db_of(dir.path()))
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    // Writes were acknowledged past the cut: the store refuses to open rather than open smaller.
    let err = Engine::builder()
        .data_dir(dir.path())
        .build()
        .await
        .expect_err("a log cut after acknowledged writes does not open");
    assert_eq!(err.code(), 902, "{}", chain(&err));
    assert!(err.source().is_some(), "{}", chain(&err));
    let report = roomcast::store::check(dir.path()).unwrap();
    assert!(!report.is_clean(), "the checker reports the cut");
}

fn db_of(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("db")
}
