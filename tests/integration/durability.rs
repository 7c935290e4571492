use std::time::Duration;

use roomcast::{
    ChatOptions, ChatRoomEvent, CreateChatRoomOptions, Engine, HistoryQuery, ManualClock,
    MuteDuration, SetAttributes,
};

use crate::support::*;

async fn open(dir: &std::path::Path, clock: &ManualClock) -> Engine {
    Engine::builder()
        .data_dir(dir)
        .limits(unthrottled())
        .clock(clock.clone())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn everything_but_membership_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let room_id;
    {
        let engine = open(dir.path(), &clock).await;
        engine.add_super_admin("owner").await.unwrap();
        let owner = engine.login("owner").await.unwrap();
        let room = create_room(&owner, "kept").await;
        room_id = room.room_id;
        let rooms = owner.chat_room_manager();
        for who in ["adm", "short", "long", "allowed", "bad"] {
            join(&engine, who, room_id).await;
        }
        rooms.add_chat_room_admin(&room_id, "adm").await.unwrap();
        rooms
            .mute_chat_room_members(&room_id, ["short"], Duration::from_millis(60_000))
            .await
            .unwrap();
        rooms
            .mute_chat_room_members(&room_id, ["long"], MuteDuration::Forever)
            .await
            .unwrap();
        rooms
            .add_members_to_chat_room_allow_list(&room_id, ["allowed"])
            .await
            .unwrap();
        rooms
            .block_chat_room_members(&room_id, ["bad"])
            .await
            .unwrap();
        rooms
            .change_chat_room_limits(
                &room_id,
                roomcast::RoomLimits::default()
                    .with_offline_grace(Duration::from_secs(42))
                    .with_room_delivery_rate(None),
            )
            .await
            .unwrap();
        rooms.mute_all_chat_room_members(&room_id).await.unwrap();
        rooms
            .update_chat_room_announcement(&room_id, "welcome back")
            .await
            .unwrap();
        rooms
            .set_chat_room_attributes(&room_id, SetAttributes::new([("poll", "yes")]))
            .await
            .unwrap()
            .into_result()
            .unwrap();
        for n in 1..=12 {
            say(&owner, room_id, &format!("m{n}")).await;
        }
        engine.shutdown().await;
    }
    // The short mute ends while the engine is down.
    clock.advance(Duration::from_secs(120));
    let engine = open(dir.path(), &clock).await;
    let owner = engine.login("owner").await.unwrap();
    let rooms = owner.chat_room_manager();
    let info = rooms.fetch_chat_room_info(&room_id).await.unwrap();
    assert_eq!(info.member_count, 0, "membership is not persisted");
    assert_eq!(info.admin_list, vec![uid("adm")]);
    assert!(info.is_all_member_muted);
    assert_eq!(info.announcement, "welcome back");
    assert_eq!(
        info.limits,
        roomcast::RoomLimits::default()
            .with_offline_grace(Duration::from_secs(42))
            .with_room_delivery_rate(None),
        "the room's own limits persist"
    );
    rooms.join_chat_room(&room_id).await.unwrap();
    let mutes = rooms
        .fetch_chat_room_mute_list(&room_id, 1, 10)
        .await
        .unwrap();
    let mutes: Vec<_> = mutes
        .data
        .iter()
        .map(|m| (m.user_id.clone(), m.expire_time))
        .collect();
    assert_eq!(mutes, vec![(uid("long"), None)], "the expired mute is gone");
    assert_eq!(
        rooms
            .fetch_chat_room_allow_list(&room_id, 1, 10)
            .await
            .unwrap()
            .data,
        vec![uid("allowed")]
    );
    assert_eq!(
        rooms
            .fetch_chat_room_block_list(&room_id, 1, 10)
            .await
            .unwrap()
            .data
            .iter()
            .map(|b| (b.user_id.clone(), b.expire_time))
            .collect::<Vec<_>>(),
        vec![(uid("bad"), None)]
    );
    let attrs = rooms
        .fetch_all_chat_room_attributes(&room_id)
        .await
        .unwrap();
    assert_eq!(attrs["poll"], "yes");
    let history = owner
        .chat_manager()
        .fetch_history_messages(&room_id, HistoryQuery::newest(5))
        .await
        .unwrap();
    let seqs: Vec<u64> = history.data.iter().map(|m| m.seq()).collect();
    assert_eq!(seqs, [12, 11, 10, 9, 8]);
    let next = say(&owner, room_id, "after restart").await;
    assert_eq!(next.seq(), 13, "sequence numbers continue");
    // A joiner gets the newest messages replayed from the store.
    let viewer = engine.login("viewer").await.unwrap();
    let inbox = inbox(&viewer, "v");
    viewer
        .chat_room_manager()
        .join_chat_room(&room_id)
        .await
        .unwrap();
    inbox.wait_for_count(10).await;
    assert_eq!(inbox.seqs(), (4..=13).collect::<Vec<_>>());
    assert_eq!(
        engine
            .login("bad")
            .await
            .unwrap()
            .chat_room_manager()
            .join_chat_room(&room_id)
            .await
            .unwrap_err()
            .code(),
        707
    );
    engine.shutdown().await;
}

#[tokio::test]
async fn a_local_copy_is_deleted_on_exit_unless_the_option_says_keep() {
    let (engine, owner) = engine_with(unthrottled(), None, "owner").await;
    let room = create_room(&owner, "r").await;
    let id = room.room_id;
    let keeper = engine
        .login_with_options(
            "keeper",
            ChatOptions::default().with_delete_messages_on_exit(false),
        )
        .await
        .unwrap();
    keeper
        .chat_room_manager()
        .join_chat_room(&id)
        .await
        .unwrap();
    let deleter = join(&engine, "deleter", id).await;
    for n in 1..=5 {
        say(&owner, id, &format!("m{n}")).await;
    }
    let texts = |v: Vec<roomcast::ChatMessage>| {
        v.iter()
            .map(|m| m.text().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let copy = keeper.chat_manager().get_conversation(&id);
    assert_eq!(
        texts(copy.load_messages(None, 10).await.unwrap()),
        ["m5", "m4", "m3", "m2", "m1"]
    );
    assert_eq!(
        texts(copy.load_messages(Some(3), 10).await.unwrap()),
        ["m2", "m1"]
    );

    keeper
        .chat_room_manager()
        .leave_chat_room(&id)
        .await
        .unwrap();
    deleter
        .chat_room_manager()
        .leave_chat_room(&id)
        .await
        .unwrap();
    say(&owner, id, "after they left").await;
    assert_eq!(
        texts(copy.load_messages(None, 10).await.unwrap()),
        ["m5", "m4", "m3", "m2", "m1"],
        "kept, and ends where it left"
    );
    let gone = deleter
        .chat_manager()
        .get_conversation(&id)
        .load_messages(None, 10)
        .await
        .unwrap();
    assert!(gone.is_empty());

    // Back again: the copy gets a second span, from the replayed messages on.
    keeper
        .chat_room_manager()
        .join_chat_room(&id)
        .await
        .unwrap();
    say(&owner, id, "welcome back").await;
    let all = texts(copy.load_messages(None, 20).await.unwrap());
    assert_eq!(all[0], "welcome back");
    assert!(
        all.contains(&"after they left".to_string()),
        "the replay on rejoin is in the copy"
    );
    assert_eq!(copy.load_messages(None, 0).await.unwrap_err().code(), 110);
}

/// A kept copy whose user was in the room when the engine stopped (a crash, or a shutdown: the
/// membership does not survive either) ends where the room ended; what is sent after the restart
/// is not in it.
#[tokio::test]
async fn a_kept_copy_left_open_by_a_restart_ends_at_the_room_s_last_message() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let engine = open(dir.path(), &clock).await;
    engine.add_super_admin("owner").await.unwrap();
    let owner = engine.login("owner").await.unwrap();
    let id = create_room(&owner, "r").await.room_id;
    let keeper = engine
        .login_with_options(
            "keeper",
            ChatOptions::default().with_delete_messages_on_exit(false),
        )
        .await
        .unwrap();
    keeper
        .chat_room_manager()
        .join_chat_room(&id)
        .await
        .unwrap();
    for n in 1..=3 {
        say(&owner, id, &format!("m{n}")).await;
    }
    engine.shutdown().await;
    drop((owner, keeper, engine));

    let engine = open(dir.path(), &clock).await;
    let owner = engine.login("owner").await.unwrap();
    owner.chat_room_manager().join_chat_room(&id).await.unwrap();
    say(&owner, id, "after the restart").await;
    let keeper = engine
        .login_with_options(
            "keeper",
            ChatOptions::default().with_delete_messages_on_exit(false),
        )
        .await
        .unwrap();
    let texts: Vec<String> = keeper
        .chat_manager()
        .get_conversation(&id)
        .load_messages(None, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.text().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["m3", "m2", "m1"]);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_kept_copy_loses_what_the_room_no_longer_retains() {
    let mut limits = unthrottled();
    limits.history_retention = 3;
    let (engine, owner) = engine_with(limits, None, "owner").await;
    let room = create_room(&owner, "r").await;
    let keeper = engine
        .login_with_options(
            "keeper",
            ChatOptions::default().with_delete_messages_on_exit(false),
        )
        .await
        .unwrap();
    keeper
        .chat_room_manager()
        .join_chat_room(&room.room_id)
        .await
        .unwrap();
    for n in 1..=5 {
        say(&owner, room.room_id, &format!("m{n}")).await;
    }
    keeper
        .chat_room_manager()
        .leave_chat_room(&room.room_id)
        .await
        .unwrap();
    let kept = keeper
        .chat_manager()
        .get_conversation(&room.room_id)
        .load_messages(None, 10)
        .await
        .unwrap();
    let seqs: Vec<u64> = kept.iter().map(|m| m.seq()).collect();
    assert_eq!(seqs, [5, 4, 3], "only what the room retains");
    let stats = engine.room_stats(&room.room_id).await.unwrap();
    assert_eq!(stats.retained, 3);
}

#[tokio::test]
async fn a_room_whose_actor_panics_is_restarted_with_its_members() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let engine = open(dir.path(), &clock).await;
    engine.add_super_admin("owner").await.unwrap();
    let owner = engine.login("owner").await.unwrap();
    let room = create_room(&owner, "fragile").await;
    let other = create_room(&owner, "other").await;
    let bob = join(&engine, "bob", room.room_id).await;
    let rec = record(&bob, "recovered");
    let bob_in = inbox(&bob, "in");
    say(&owner, room.room_id, "before").await;

    let err = engine.inject_room_panic(&room.room_id).await.unwrap_err();
    assert_eq!(
        err.code(),
        903,
        "the failing call gets an error, not a hang: {err}"
    );
    // Other rooms keep serving meanwhile.
    say(&owner, other.room_id, "unaffected").await;

    // The room comes back with its members and its history; bob is told.
    let recovered = ChatRoomEvent::ChatRoomRecovered {
        room_id: room.room_id,
        last_seq: 1,
    };
    rec.wait_until("the recovery notice", |e| e.contains(&recovered))
        .await;
    let info = owner
        .chat_room_manager()
        .fetch_chat_room_info(&room.room_id)
        .await
        .unwrap();
    assert_eq!(info.member_count, 2, "members are restored");
    let after = say(&owner, room.room_id, "after").await;
    assert_eq!(after.seq(), 2);
    bob_in.wait_for_count(2).await;
    assert_eq!(bob_in.texts(), ["before", "after"]);
    engine.shutdown().await;
}

#[tokio::test]
async fn destroyed_rooms_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let id;
    {
        let engine = open(dir.path(), &clock).await;
        engine.add_super_admin("owner").await.unwrap();
        let owner = engine.login("owner").await.unwrap();
        let room = owner
            .chat_room_manager()
            .create_chat_room(CreateChatRoomOptions::new("gone"))
            .await
            .unwrap();
        id = room.room_id;
        say(&owner, id, "x").await;
        owner
            .chat_room_manager()
            .destroy_chat_room(&id)
            .await
            .unwrap();
        engine.shutdown().await;
    }
    let engine = open(dir.path(), &clock).await;
    let owner = engine.login("owner").await.unwrap();
    let err = owner
        .chat_room_manager()
        .join_chat_room(&id)
        .await
        .unwrap_err();
    assert_eq!(err.code(), 705);
    engine.shutdown().await;
}
