use std::collections::BTreeMap;
use std::time::Duration;

use roomcast::{
    ChatRoomEvent, ChatRoomPermissionType, LeaveReason, ManualClock, MuteDuration, OutgoingMessage,
    SetAttributes,
};

use crate::support::*;

/// A room owned by `owner`, with `admin` an admin and `m1`, `m2` members, each recording.
struct Cast {
    engine: roomcast::Engine,
    clock: ManualClock,
    room: roomcast::ChatRoom,
    owner: roomcast::ChatClient,
    admin: roomcast::ChatClient,
    m1: roomcast::ChatClient,
    m2: roomcast::ChatClient,
    rec: BTreeMap<&'static str, Recorder>,
    sentinels: std::sync::atomic::AtomicUsize,
}

impl Cast {
    async fn new() -> Cast {
        let clock = ManualClock::new(1_700_000_000_000);
        let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
        let room = create_room(&owner, "stage").await;
        let admin = join(&engine, "admin", room.room_id).await;
        owner
            .chat_room_manager()
            .add_chat_room_admin(&room.room_id, "admin")
            .await
            .unwrap();
        let m1 = join(&engine, "m1", room.room_id).await;
        let m2 = join(&engine, "m2", room.room_id).await;
        let mut rec = BTreeMap::new();
        for (name, client) in [
            ("owner", &owner),
            ("admin", &admin),
            ("m1", &m1),
            ("m2", &m2),
        ] {
            rec.insert(name, record(client, "rec"));
        }
        Cast {
            engine,
            clock,
            room,
            owner,
            admin,
            m1,
            m2,
            rec,
            sentinels: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Sends a sentinel (a join by a new user) that every current member hears after what came
    /// before, then returns what each recorder got before the sentinel.
    async fn settle(&self) -> BTreeMap<&'static str, Vec<ChatRoomEvent>> {
        let n = self
            .sentinels
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let sentinel = format!("sentinel{n}");
        join(&self.engine, &sentinel, self.room.room_id).await;
        let marker = joined(self.room.room_id, &sentinel);
        let mut out = BTreeMap::new();
        for (name, rec) in &self.rec {
            let room_id = self.room.room_id;
            let is_member = self
                .engine
                .login(*name)
                .await
                .unwrap()
                .chat_room_manager()
                .fetch_chat_room_info(&room_id)
                .await
                .unwrap()
                .permission_type
                != ChatRoomPermissionType::None;
            if is_member {
                rec.wait_until("the sentinel", |e| e.contains(&marker))
                    .await;
            }
            let mut events = rec.events();
            events.retain(|e| !matches!(e, ChatRoomEvent::MemberJoined { participant, .. } if participant.as_str().starts_with("sentinel")));
            out.insert(*name, events);
            rec.clear();
        }
        out
    }
}

#[tokio::test]
async fn admin_changes_reach_the_target_and_the_admins() {
    let c = Cast::new().await;
    let id = c.room.room_id;
    c.settle().await;
    c.owner
        .chat_room_manager()
        .add_chat_room_admin(&id, "m1")
        .await
        .unwrap();
    let got = c.settle().await;
    let added = ChatRoomEvent::AdminAdded {
        operator_reason: None,
        room_id: id,
        admin: uid("m1"),
        operator: Some(uid("owner")),
    };
    assert_eq!(got["m1"], vec![added.clone()]);
    assert_eq!(got["admin"], vec![added]);
    assert!(got["owner"].is_empty(), "not the member who acted");
    assert!(got["m2"].is_empty());

    c.owner
        .chat_room_manager()
        .remove_chat_room_admin(&id, "m1")
        .await
        .unwrap();
    let got = c.settle().await;
    assert!(matches!(
        &got["m1"][..],
        [ChatRoomEvent::AdminRemoved { .. }]
    ));
    assert!(matches!(
        &got["admin"][..],
        [ChatRoomEvent::AdminRemoved { .. }]
    ));
    assert!(got["m2"].is_empty());
    let info =
        c.m2.chat_room_manager()
            .fetch_chat_room_info(&id)
            .await
            .unwrap();
    assert_eq!(info.admin_list, vec![uid("admin")]);
}

#[tokio::test]
async fn ownership_transfer_tells_everyone_and_moves_the_rights() {
    let c = Cast::new().await;
    let id = c.room.room_id;
    c.settle().await;
    c.owner
        .chat_room_manager()
        .change_owner(&id, "m1")
        .await
        .unwrap();
    let got = c.settle().await;
    let changed = ChatRoomEvent::OwnerChanged {
        operator_reason: None,
        room_id: id,
        new_owner: uid("m1"),
        old_owner: uid("owner"),
        operator: Some(uid("owner")),
    };
    for who in ["admin", "m1", "m2"] {
        assert_eq!(got[who], vec![changed.clone()], "{who}");
    }
    assert!(got["owner"].is_empty());
    let old = c.owner.chat_room_manager();
    assert_eq!(old.destroy_chat_room(&id).await.unwrap_err().code(), 703);
    assert_eq!(
        old.remove_chat_room_members(&id, ["m2"])
            .await
            .unwrap_err()
            .code(),
        703
    );
    let info = old.fetch_chat_room_info(&id).await.unwrap();
    assert_eq!(info.owner, uid("m1"));
    assert_eq!(info.permission_type, ChatRoomPermissionType::Member);
    c.m1.chat_room_manager()
        .remove_chat_room_members(&id, ["owner"])
        .await
        .unwrap();
}

#[tokio::test]
async fn kicked_members_are_told_and_may_rejoin() {
    let c = Cast::new().await;
    let id = c.room.room_id;
    c.settle().await;
    c.admin
        .chat_room_manager()
        .remove_chat_room_members(&id, ["m1"])
        .await
        .unwrap();
    c.rec["m1"]
        .wait_until("m1's removal", |e| !e.is_empty())
        .await;
    let got = c.settle().await;
    assert_eq!(
        got["m1"],
        vec![ChatRoomEvent::RemovedFromChatRoom {
            operator_reason: None,
            room_id: id,
            room_name: "stage".into(),
            participant: uid("m1"),
            reason: LeaveReason::Kicked,
            operator: Some(uid("admin")),
        }]
    );
    assert_eq!(got["m2"], vec![exited(&c.room, "m1")]);
    assert_eq!(got["owner"], vec![exited(&c.room, "m1")]);
    assert!(got["admin"].is_empty());
    c.m1.chat_room_manager()
        .join_chat_room(&id)
        .await
        .expect("a kicked member may rejoin");
    let admins_may_not = c
        .admin
        .chat_room_manager()
        .remove_chat_room_members(&id, ["owner"])
        .await;
    assert_eq!(admins_may_not.unwrap_err().code(), 703);
}

#[tokio::test]
async fn blocked_users_are_removed_and_barred_until_unblocked() {
    let c = Cast::new().await;
    let id = c.room.room_id;
    let rooms = c.admin.chat_room_manager();
    rooms
        .block_chat_room_members(&id, ["m2", "outsider"])
        .await
        .unwrap();
    let first = rooms.fetch_chat_room_block_list(&id, 1, 10).await.unwrap();
    let ids: Vec<roomcast::UserId> = first.data.iter().map(|b| b.user_id.clone()).collect();
    assert_eq!(ids, vec![uid("m2"), uid("outsider")]);
    assert!(first.data.iter().all(|b| b.expire_time.is_none()));
    assert_eq!((first.total, first.has_more()), (2, false));
    let second = rooms.fetch_chat_room_block_list(&id, 2, 1).await.unwrap();
    assert_eq!(second.data[0].user_id, uid("outsider"));
    assert_eq!(second.data.len(), 1);
    assert_eq!((second.page_num, second.page_size, second.total), (2, 1, 2));
    for (page_num, page_size) in [(0, 10), (1, 0), (1, roomcast::LIST_PAGE_MAX + 1)] {
        let err = rooms
            .fetch_chat_room_block_list(&id, page_num, page_size)
            .await
            .unwrap_err();
        assert_eq!(err.code(), 110, "page {page_num} of {page_size}");
    }
    let err =
        c.m2.chat_room_manager()
            .join_chat_room(&id)
            .await
            .unwrap_err();
    assert_eq!(err.code(), 707);
    let err =
        c.m2.chat_manager()
            .send_message(OutgoingMessage::text(id, "let me in"))
            .await
            .unwrap_err();
    assert_eq!(err.code(), 210);
    rooms.unblock_chat_room_members(&id, ["m2"]).await.unwrap();
    c.m2.chat_room_manager().join_chat_room(&id).await.unwrap();
    let members_may_not =
        c.m1.chat_room_manager()
            .fetch_chat_room_block_list(&id, 1, 10)
            .await;
    assert_eq!(members_may_not.unwrap_err().code(), 703);
}

#[tokio::test]
async fn mutes_reach_targets_and_staff_and_end_by_themselves() {
    let c = Cast::new().await;
    let id = c.room.room_id;
    c.settle().await;
    c.admin
        .chat_room_manager()
        .mute_chat_room_members(&id, ["m1"], Duration::from_millis(60_000))
        .await
        .unwrap();
    let got = c.settle().await;
    let expire = 1_700_000_000_000 + 60_000;
    let added = ChatRoomEvent::MuteListAdded {
        operator_reason: None,
        room_id: id,
        members: vec![uid("m1")],
        expire_time: Some(expire),
        operator: Some(uid("admin")),
    };
    assert_eq!(got["m1"], vec![added.clone()]);
    assert_eq!(got["owner"], vec![added]);
    assert!(got["admin"].is_empty() && got["m2"].is_empty());
    let err = say_err(&c.m1, id).await;
    assert_eq!(err, 215);
    let list = c
        .owner
        .chat_room_manager()
        .fetch_chat_room_mute_list(&id, 1, 10)
        .await
        .unwrap();
    assert_eq!(list.total, 1);
    assert_eq!(list.data[0].user_id, uid("m1"));
    assert_eq!(list.data[0].expire_time, Some(expire));

    c.clock.advance(Duration::from_secs(60));
    c.rec["m1"]
        .wait_until("the mute to end", |e| !e.is_empty())
        .await;
    let got = c.settle().await;
    let removed = ChatRoomEvent::MuteListRemoved {
        operator_reason: None,
        room_id: id,
        members: vec![uid("m1")],
        operator: None,
    };
    for who in ["m1", "owner", "admin"] {
        assert_eq!(got[who], vec![removed.clone()], "{who}");
    }
    assert!(got["m2"].is_empty());
    say(&c.m1, id, "free again").await;
    assert!(c
        .owner
        .chat_room_manager()
        .fetch_chat_room_mute_list(&id, 1, 10)
        .await
        .unwrap()
        .data
        .is_empty());
}

async fn say_err(client: &roomcast::ChatClient, room: roomcast::RoomId) -> u32 {
    client
        .chat_manager()
        .send_message(OutgoingMessage::text(room, "hi"))
        .await
        .unwrap_err()
        .code()
}

#[tokio::test]
async fn mute_all_spares_staff_and_the_allow_list_but_not_a_personal_mute() {
    let c = Cast::new().await;
    let id = c.room.room_id;
    let rooms = c.admin.chat_room_manager();
    rooms
        .add_members_to_chat_room_allow_list(&id, ["m1"])
        .await
        .unwrap();
    assert!(c
        .m1
        .chat_room_manager()
        .is_member_in_chat_room_allow_list(&id)
        .await
        .unwrap());
    assert!(!c
        .m2
        .chat_room_manager()
        .is_member_in_chat_room_allow_list(&id)
        .await
        .unwrap());
    assert!(c
        .owner
        .chat_room_manager()
        .is_member_in_chat_room_allow_list(&id)
        .await
        .unwrap());
    c.settle().await;
    rooms.mute_all_chat_room_members(&id).await.unwrap();
    let got = c.settle().await;
    let muted = ChatRoomEvent::AllMemberMuteStateChanged {
        operator_reason: None,
        room_id: id,
        is_all_muted: true,
        operator: Some(uid("admin")),
    };
    for who in ["owner", "m1", "m2"] {
        assert_eq!(got[who], vec![muted.clone()], "{who}");
    }
    assert_eq!(say_err(&c.m2, id).await, 219);
    say(&c.m1, id, "allowed").await;
    say(&c.admin, id, "staff").await;
    say(&c.owner, id, "owner").await;
    rooms
        .mute_chat_room_members(&id, ["m1"], MuteDuration::Forever)
        .await
        .unwrap();
    assert_eq!(
        say_err(&c.m1, id).await,
        215,
        "a personal mute beats the allow list"
    );
    rooms.unmute_all_chat_room_members(&id).await.unwrap();
    assert_eq!(
        say_err(&c.m1, id).await,
        215,
        "mute-all and the mute list are independent"
    );
    say(&c.m2, id, "unmuted").await;
    rooms
        .remove_members_from_chat_room_allow_list(&id, ["m1"])
        .await
        .unwrap();
    assert!(rooms
        .fetch_chat_room_allow_list(&id, 1, 100)
        .await
        .unwrap()
        .data
        .is_empty());
}

#[tokio::test]
async fn specification_and_announcement_changes_reach_all_members() {
    let c = Cast::new().await;
    let id = c.room.room_id;
    c.settle().await;
    let rooms = c.admin.chat_room_manager();
    rooms
        .change_chat_room_name(&id, "main stage")
        .await
        .unwrap();
    rooms
        .change_chat_room_description(&id, "tonight's show")
        .await
        .unwrap();
    rooms.change_chat_room_max_users(&id, 50).await.unwrap();
    rooms
        .update_chat_room_announcement(&id, "starting soon")
        .await
        .unwrap();
    let got = c.settle().await;
    for who in ["owner", "m1", "m2"] {
        let events = &got[who];
        assert_eq!(events.len(), 4, "{who}: {events:?}");
        match &events[2] {
            ChatRoomEvent::SpecificationChanged { room, operator, .. } => {
                assert_eq!(
                    (
                        room.name.as_str(),
                        room.description.as_str(),
                        room.max_users
                    ),
                    ("main stage", "tonight's show", 50)
                );
                assert_eq!(operator.as_ref(), Some(&uid("admin")));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            events[3],
            ChatRoomEvent::AnnouncementChanged {
                operator_reason: None,
                room_id: id,
                announcement: "starting soon".into(),
                operator: Some(uid("admin")),
            }
        );
    }
    assert!(got["admin"].is_empty());
    let m1 = c.m1.chat_room_manager();
    assert_eq!(
        m1.fetch_chat_room_announcement(&id).await.unwrap(),
        "starting soon"
    );
    assert_eq!(
        m1.change_chat_room_name(&id, "mine")
            .await
            .unwrap_err()
            .code(),
        703
    );
    assert_eq!(
        rooms
            .change_chat_room_max_users(&id, 3)
            .await
            .unwrap_err()
            .code(),
        110
    );
    let page = m1.fetch_public_chat_rooms(1, 10, None).await.unwrap();
    assert_eq!(
        page.data[0].name, "main stage",
        "the public list follows the change"
    );
    let stranger = c.engine.login("stranger").await.unwrap();
    let err = stranger
        .chat_room_manager()
        .fetch_chat_room_announcement(&id)
        .await;
    assert_eq!(err.unwrap_err().code(), 702);
}

#[tokio::test]
async fn the_member_list_pages_newest_first() {
    let c = Cast::new().await;
    let id = c.room.room_id;
    for n in 0..7 {
        join(&c.engine, &format!("v{n}"), id).await;
    }
    let rooms = c.m1.chat_room_manager();
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = rooms.fetch_chat_room_members(&id, cursor, 3).await.unwrap();
        all.extend(page.data);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected: Vec<_> = [
        "v6", "v5", "v4", "v3", "v2", "v1", "v0", "m2", "m1", "admin", "owner",
    ]
    .into_iter()
    .map(uid)
    .collect();
    assert_eq!(all, expected);
    for size in [0, 1_001] {
        assert_eq!(
            rooms
                .fetch_chat_room_members(&id, None, size)
                .await
                .unwrap_err()
                .code(),
            110
        );
    }
}

#[tokio::test]
async fn attributes_reach_the_other_members_and_follow_ownership() {
    let c = Cast::new().await;
    let id = c.room.room_id;
    c.settle().await;
    let m1 = c.m1.chat_room_manager();
    let failed = m1
        .set_chat_room_attributes(
            &id,
            SetAttributes::new([("poll", "a or b"), ("mood", "hype")]).with_delete_when_left(true),
        )
        .await
        .unwrap();
    assert!(failed.is_empty());
    let failed =
        c.m2.chat_room_manager()
            .set_chat_room_attributes(&id, SetAttributes::new([("poll", "mine")]))
            .await
            .unwrap();
    assert_eq!(failed.get("poll").unwrap().code(), 703);
    assert_eq!(failed.keys().collect::<Vec<_>>(), ["poll"]);
    let err = failed.into_result().unwrap_err();
    assert_eq!(err.code(), 703);
    assert!(err.to_string().contains("poll"), "the key is named: {err}");
    c.m2.chat_room_manager()
        .set_chat_room_attributes(
            &id,
            SetAttributes::new([("poll", "mine")]).with_overwrite(true),
        )
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let got = c.settle().await;
    let by_m1 = ChatRoomEvent::AttributesUpdated {
        room_id: id,
        attributes: BTreeMap::from([
            ("mood".to_string(), "hype".to_string()),
            ("poll".to_string(), "a or b".to_string()),
        ]),
        from: uid("m1"),
    };
    let by_m2 = ChatRoomEvent::AttributesUpdated {
        room_id: id,
        attributes: BTreeMap::from([("poll".to_string(), "mine".to_string())]),
        from: uid("m2"),
    };
    assert_eq!(got["owner"], vec![by_m1.clone(), by_m2.clone()]);
    assert_eq!(got["m1"], vec![by_m2]);
    assert_eq!(got["m2"], vec![by_m1]);
    let attrs = c
        .owner
        .chat_room_manager()
        .fetch_chat_room_attributes(&id, ["poll", "none"])
        .await
        .unwrap();
    assert_eq!(
        attrs,
        BTreeMap::from([("poll".to_string(), "mine".to_string())])
    );

    // m1 leaves: its remaining delete-when-left key ("mood") goes; "poll" now belongs to m2.
    m1.leave_chat_room(&id).await.unwrap();
    let got = c.settle().await;
    assert_eq!(
        got["owner"],
        vec![
            exited(&c.room, "m1"),
            ChatRoomEvent::AttributesRemoved {
                room_id: id,
                keys: vec!["mood".into()],
                from: uid("m1")
            },
        ]
    );
    let all = c
        .owner
        .chat_room_manager()
        .fetch_all_chat_room_attributes(&id)
        .await
        .unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), vec!["poll"]);

    let owner = c.owner.chat_room_manager();
    assert_eq!(
        owner
            .remove_chat_room_attributes(&id, ["poll"], false)
            .await
            .unwrap()
            .get("poll")
            .unwrap()
            .code(),
        703
    );
    assert!(owner
        .remove_chat_room_attributes(&id, ["poll"], true)
        .await
        .unwrap()
        .is_empty());
    let got = c.settle().await;
    assert_eq!(
        got["m2"],
        vec![ChatRoomEvent::AttributesRemoved {
            room_id: id,
            keys: vec!["poll".into()],
            from: uid("owner")
        }]
    );
    // Any iterator of string-like keys: owned strings here.
    let eleven: Vec<String> = vec!["k".to_string(); 11];
    assert_eq!(
        owner
            .remove_chat_room_attributes(&id, eleven, true)
            .await
            .unwrap_err()
            .code(),
        110
    );
}

/// Removals are idempotent: unblocking someone never blocked, taking a non-member off the allow
/// list or unmuting someone not muted succeeds and changes nothing; additions check their
/// targets (the allow list takes members only).
#[tokio::test]
async fn removals_are_idempotent_and_additions_validate() {
    let (engine, owner) = engine_with_admin("owner").await;
    let room = create_room(&owner, "r").await.room_id;
    let _member = join(&engine, "member", room).await;
    let rooms = owner.chat_room_manager();
    rooms
        .unblock_chat_room_members(&room, ["never"])
        .await
        .unwrap();
    rooms
        .remove_members_from_chat_room_allow_list(&room, ["stranger"])
        .await
        .unwrap();
    rooms
        .unmute_chat_room_members(&room, ["member"])
        .await
        .unwrap();
    assert!(rooms
        .fetch_chat_room_allow_list(&room, 1, 100)
        .await
        .unwrap()
        .data
        .is_empty());
    let err = rooms
        .add_members_to_chat_room_allow_list(&room, ["stranger"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), 702, "{err}");
    engine.shutdown().await;
}

/// Kicking or blocking an admin demotes it first: the admin itself hears it lost the role, then
/// that it was removed; the owner hears both too (found by a new-user review: the target did
/// not hear the demotion).
#[tokio::test]
async fn a_kicked_or_blocked_admin_hears_its_demotion_then_its_removal() {
    for block in [false, true] {
        let c = Cast::new().await;
        let id = c.room.room_id;
        c.settle().await;
        let rooms = c.owner.chat_room_manager();
        if block {
            rooms.block_chat_room_members(&id, ["admin"]).await.unwrap();
        } else {
            rooms
                .remove_chat_room_members(&id, ["admin"])
                .await
                .unwrap();
        }
        let demoted = ChatRoomEvent::AdminRemoved {
            operator_reason: None,
            room_id: id,
            admin: uid("admin"),
            operator: Some(uid("owner")),
        };
        let removed = ChatRoomEvent::RemovedFromChatRoom {
            operator_reason: None,
            room_id: id,
            room_name: c.room.name.clone(),
            participant: uid("admin"),
            reason: LeaveReason::Kicked,
            operator: Some(uid("owner")),
        };
        c.rec["admin"]
            .wait_until("the admin's two events", |e| e.len() >= 2)
            .await;
        assert_eq!(
            c.rec["admin"].events(),
            vec![demoted, removed],
            "block: {block}"
        );
        let info = rooms.fetch_chat_room_info(&id).await.unwrap();
        assert!(info.admin_list.is_empty(), "block: {block}");
        c.engine.shutdown().await;
    }
}
