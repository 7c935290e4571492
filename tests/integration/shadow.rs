//! Shadow bans (Stream's), through the public API: a shadow-banned member's messages are
//! accepted and reach only itself and, marked, the owner and admins; history, replay and local
//! copies hide them from everyone else; the member is never told. The state survives a restart.

use std::sync::Arc;

use roomcast::{
    AuditAction, ChatRoomEvent, ChatRoomPermissionType, ClientEvent, Engine, EventStream,
    HistoryQuery, RoomId,
};

use crate::support::*;

async fn room_event(stream: &mut EventStream) -> ChatRoomEvent {
    loop {
        match next_event(stream).await {
            Some(ClientEvent::Room(e)) => return (*e).clone(),
            Some(_) => continue,
            None => panic!("the stream ended"),
        }
    }
}

/// Every retained message `client` sees in `room`, walking history pages of `size` oldest first.
async fn history(
    client: &roomcast::ChatClient,
    room: RoomId,
    size: u32,
) -> Vec<roomcast::ChatMessage> {
    let chat = client.chat_manager();
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let page = chat
            .fetch_history_messages(&room, HistoryQuery::after(cursor, size))
            .await
            .unwrap();
        out.extend(page.data.iter().cloned());
        match page.cursor {
            Some(c) => cursor = c,
            None => return out,
        }
    }
}

fn texts(messages: &[roomcast::ChatMessage]) -> Vec<&str> {
    messages.iter().filter_map(|m| m.text()).collect()
}

#[tokio::test]
async fn a_shadow_banned_member_speaks_only_to_itself_and_the_staff() {
    let (engine, owner) = engine_with_admin("owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let admin = join(&engine, "admin", room).await;
    owner
        .chat_room_manager()
        .add_chat_room_admin(&room, "admin")
        .await
        .unwrap();
    let bob = join(&engine, "bob", room).await;
    let carol = join(&engine, "carol", room).await;
    let (owner_in, admin_in, bob_in, carol_in) = (
        inbox(&owner, "i"),
        inbox(&admin, "i"),
        inbox(&bob, "i"),
        inbox(&carol, "i"),
    );
    let mut admin_events = admin.events();
    let mut bob_events = bob.events();
    let mut carol_events = carol.events();

    let rooms = owner.chat_room_manager();
    rooms
        .with_reason("spam links")
        .shadow_ban_chat_room_members(&room, ["bob"])
        .await
        .unwrap();
    // Events of the set-up (joins, the admin's promotion) may reach the stream after it was
    // opened: skip them.
    let event = loop {
        let event = room_event(&mut admin_events).await;
        if matches!(event, ChatRoomEvent::ShadowBanChanged { .. }) {
            break event;
        }
    };
    assert!(
        matches!(&event, ChatRoomEvent::ShadowBanChanged { members, banned: true, operator: Some(o), .. }
            if *members == vec![uid("bob")] && *o == uid("owner")),
        "{event:?}"
    );
    assert_eq!(event.operator_reason(), Some("spam links"));
    // The ban is invisible to bob: same role, same room.
    let info = bob
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    assert_eq!(info.permission_type, ChatRoomPermissionType::Member);
    assert_eq!(
        bob.chat_room_manager()
            .fetch_chat_room_shadow_ban_list(&room, 1, 10)
            .await
            .unwrap_err()
            .code(),
        703
    );

    let hidden = say(&bob, room, "hidden").await;
    assert_eq!(hidden.seq(), 1, "accepted with a seq as usual");
    assert!(!hidden.is_shadowed(), "its sender sees it unmarked");
    let visible = say(&carol, room, "visible").await;
    assert_eq!(visible.seq(), 2);

    for staff in [&owner_in, &admin_in] {
        staff.wait_for_count(2).await;
        let got = staff.messages();
        assert_eq!(texts(&got), ["hidden", "visible"]);
        assert!(got[0].is_shadowed() && !got[1].is_shadowed());
    }
    bob_in.wait_for_count(1).await;
    assert_eq!(bob_in.texts(), ["visible"]);
    carol_in.wait_for_count(0).await;
    // Carol got nothing from bob: the next thing she gets after joining is the owner's message.
    say(&owner, room, "from the host").await;
    carol_in.wait_for_count(1).await;
    assert_eq!(carol_in.texts(), ["from the host"]);

    // History: a gap at seq 1 for carol; bob sees his own unmarked; the staff see it marked.
    let seen = history(&carol, room, 1).await;
    assert_eq!(texts(&seen), ["visible", "from the host"]);
    assert_eq!(seen.iter().map(|m| m.seq()).collect::<Vec<_>>(), [2, 3]);
    let own = history(&bob, room, 1).await;
    assert_eq!(texts(&own), ["hidden", "visible", "from the host"]);
    assert!(own.iter().all(|m| !m.is_shadowed()));
    let all = history(&admin, room, 2).await;
    assert_eq!(texts(&all), ["hidden", "visible", "from the host"]);
    assert!(all[0].is_shadowed());
    // Newest first too.
    let newest = carol
        .chat_manager()
        .fetch_history_messages(&room, HistoryQuery::before(3, 1))
        .await
        .unwrap();
    assert_eq!(texts(&newest.data), ["visible"]);
    assert_eq!(newest.cursor, None, "nothing older that carol sees");

    // Replay on join and local copies hide it too.
    let dave = engine.login("dave").await.unwrap();
    let dave_in = inbox(&dave, "i");
    dave.chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    dave_in.wait_for_count(2).await;
    assert_eq!(dave_in.texts(), ["visible", "from the host"]);
    let copy = carol
        .chat_manager()
        .get_conversation(&room)
        .load_messages(None, 10)
        .await
        .unwrap();
    assert_eq!(texts(&copy), ["from the host", "visible"]);
    let bobs = bob
        .chat_manager()
        .get_conversation(&room)
        .load_messages(None, 10)
        .await
        .unwrap();
    assert_eq!(texts(&bobs), ["from the host", "visible", "hidden"]);
    assert!(bobs.iter().all(|m| !m.is_shadowed()));

    // The staff list it and the audit log has it with its reason.
    let list = rooms
        .fetch_chat_room_shadow_ban_list(&room, 1, 10)
        .await
        .unwrap();
    assert_eq!((list.data, list.total), (vec![uid("bob")], 1));
    let log = rooms
        .fetch_chat_room_audit_log(&room, None, 10)
        .await
        .unwrap();
    let entry = log
        .data
        .iter()
        .find(|e| e.action == AuditAction::ShadowBan)
        .expect("logged");
    assert_eq!(entry.targets, vec![uid("bob")]);
    assert_eq!(entry.reason.as_deref(), Some("spam links"));

    // Lifted: bob reaches everyone again; the staff hear of it, bob does not.
    admin
        .chat_room_manager()
        .unshadow_ban_chat_room_members(&room, ["bob"])
        .await
        .unwrap();
    say(&bob, room, "back").await;
    carol_in
        .wait_until("bob's message", |i| i.texts().contains(&"back".to_string()))
        .await;
    rooms
        .update_chat_room_announcement(&room, "hello")
        .await
        .unwrap();
    // Bob and carol heard of dave's join and the announcement, never of a shadow ban.
    for events in [&mut bob_events, &mut carol_events] {
        loop {
            match room_event(events).await {
                ChatRoomEvent::MemberJoined { .. } => continue,
                ChatRoomEvent::AnnouncementChanged { .. } => break,
                other => panic!("{other:?}"),
            }
        }
    }
    let _ = (admin_events, dave);
    engine.shutdown().await;
}

#[tokio::test]
async fn shadow_bans_follow_the_permission_rules() {
    let (engine, owner) = engine_with_admin("owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let admin = join(&engine, "admin", room).await;
    let rooms = owner.chat_room_manager();
    rooms.add_chat_room_admin(&room, "admin").await.unwrap();
    let bob = join(&engine, "bob", room).await;
    let admins = admin.chat_room_manager();
    // Not on the owner or an admin; a member may not; a stranger may be banned before joining.
    assert_eq!(
        admins
            .shadow_ban_chat_room_members(&room, ["owner"])
            .await
            .unwrap_err()
            .code(),
        703
    );
    assert_eq!(
        rooms
            .shadow_ban_chat_room_members(&room, ["admin"])
            .await
            .unwrap_err()
            .code(),
        703
    );
    let members = bob.chat_room_manager();
    assert_eq!(
        members
            .shadow_ban_chat_room_members(&room, ["owner"])
            .await
            .unwrap_err()
            .code(),
        703
    );
    assert_eq!(
        members
            .unshadow_ban_chat_room_members(&room, ["bob"])
            .await
            .unwrap_err()
            .code(),
        703
    );
    admins
        .shadow_ban_chat_room_members(&room, ["zed", "bob"])
        .await
        .unwrap();
    assert_eq!(
        rooms
            .shadow_ban_chat_room_members(&room, Vec::<&str>::new())
            .await
            .unwrap_err()
            .code(),
        110
    );
    assert_eq!(
        rooms
            .fetch_chat_room_shadow_ban_list(&room, 0, 10)
            .await
            .unwrap_err()
            .code(),
        110
    );
    // zed joins later, already shadow-banned.
    let zed = join(&engine, "zed", room).await;
    let owner_in = inbox(&owner, "i");
    let bob_in = inbox(&bob, "i");
    say(&zed, room, "zed here").await;
    owner_in.wait_for_count(1).await;
    assert!(owner_in.messages()[0].is_shadowed());
    // A shadowed message cannot be pinned; deleting it is fine.
    assert_eq!(
        rooms
            .pin_chat_room_message(&room, 1)
            .await
            .unwrap_err()
            .code(),
        500
    );
    rooms.delete_chat_room_message(&room, 1).await.unwrap();
    say(&owner, room, "after").await;
    bob_in.wait_for_count(1).await;
    assert_eq!(bob_in.texts(), ["after"]);
    engine.shutdown().await;
}

/// Many members send at once on a multi-thread runtime, some shadow-banned: each plain member
/// gets exactly the others' visible messages, in the room's order; the staff get everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_never_leak_shadowed_messages() {
    let (engine, owner) = engine_with(unthrottled(), None, "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let mut senders = Vec::new();
    for n in 0..6 {
        senders.push(join(&engine, &format!("s{n}"), room).await);
    }
    let watcher = join(&engine, "watcher", room).await;
    owner
        .chat_room_manager()
        .shadow_ban_chat_room_members(&room, ["s0", "s1", "s2"])
        .await
        .unwrap();
    let owner_in = inbox(&owner, "i");
    let watcher_in = inbox(&watcher, "i");
    let per_sender = 20;
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(n, client)| {
            let client = Arc::new(client);
            tokio::spawn(async move {
                for i in 0..per_sender {
                    say(&client, room, &format!("s{n}-{i}")).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    owner_in.wait_for_count(6 * per_sender).await;
    let all = owner_in.messages();
    assert_eq!(
        all.iter().filter(|m| m.is_shadowed()).count(),
        3 * per_sender
    );
    assert!(
        all.windows(2).all(|w| w[0].seq() < w[1].seq()),
        "the room's order"
    );
    watcher_in.wait_for_count(3 * per_sender).await;
    let seen = watcher_in.messages();
    assert_eq!(seen.len(), 3 * per_sender);
    assert!(seen
        .iter()
        .all(|m| !m.is_shadowed() && !["s0", "s1", "s2"].contains(&m.from().as_str())));
    let want: Vec<u64> = all
        .iter()
        .filter(|m| !m.is_shadowed())
        .map(|m| m.seq())
        .collect();
    assert_eq!(watcher_in.seqs(), want);
    // History pages of 7 walk exactly the visible ones, once each.
    let walked = history(&watcher, room, 7).await;
    assert_eq!(walked.iter().map(|m| m.seq()).collect::<Vec<_>>(), want);
    engine.shutdown().await;
}

#[tokio::test]
async fn shadow_bans_and_shadowed_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        Engine::builder()
            .data_dir(dir.path())
            .limits(unthrottled())
            .build()
            .await
            .unwrap()
    };
    let room = {
        let engine = open().await;
        engine.add_super_admin("owner").await.unwrap();
        let owner = engine.login("owner").await.unwrap();
        let room = create_room(&owner, "stream").await.room_id;
        let bob = join(&engine, "bob", room).await;
        owner
            .chat_room_manager()
            .shadow_ban_chat_room_members(&room, ["bob"])
            .await
            .unwrap();
        say(&bob, room, "hidden").await;
        engine.shutdown().await;
        room
    };
    let engine = open().await;
    let owner = engine.login("owner").await.unwrap();
    let rooms = owner.chat_room_manager();
    rooms.join_chat_room(&room).await.ok();
    let list = rooms
        .fetch_chat_room_shadow_ban_list(&room, 1, 10)
        .await
        .unwrap();
    assert_eq!(list.data, vec![uid("bob")]);
    let carol = join(&engine, "carol", room).await;
    assert!(history(&carol, room, 10).await.is_empty());
    let staff = history(&owner, room, 10).await;
    assert_eq!(texts(&staff), ["hidden"]);
    assert!(staff[0].is_shadowed());
    let bob = join(&engine, "bob", room).await;
    let carol_in = inbox(&carol, "i");
    say(&bob, room, "still hidden").await;
    say(&owner, room, "host").await;
    carol_in.wait_for_count(1).await;
    assert_eq!(carol_in.texts(), ["host"]);
    engine.shutdown().await;
}
