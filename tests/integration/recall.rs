//! Recalling and deleting messages (Agora's recall) and pinned messages: windows on a manual
//! clock, who is told, history and local copies, pins in the room's info, restarts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use roomcast::{
    AuditAction, ChatOptions, ChatRoomEvent, Engine, HistoryQuery, ManualClock, MessageId, RoomId,
    UserId,
};

use crate::support::*;

/// One `on_messages_recalled` call: the room, the ids, the operator.
type Recalled = (RoomId, Vec<MessageId>, Option<UserId>);

/// Records `on_messages_recalled` calls.
#[derive(Clone, Default)]
struct Recalls(Arc<Mutex<Vec<Recalled>>>);

impl roomcast::ChatEventHandler for Recalls {
    fn on_messages_recalled(&self, room: &RoomId, ids: &[MessageId], operator: Option<&UserId>) {
        self.0
            .lock()
            .unwrap()
            .push((*room, ids.to_vec(), operator.cloned()));
    }
}

impl Recalls {
    async fn wait_for(&self, n: usize) -> Vec<Recalled> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.0.lock().unwrap().clone();
            if seen.len() >= n {
                return seen;
            }
            assert!(tokio::time::Instant::now() < deadline, "recalls: {seen:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test]
async fn a_sender_recalls_within_the_window_and_members_are_told() {
    let clock = ManualClock::new(1_700_000_000_000);
    let (engine, owner) = engine_with(unthrottled(), Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let bob = join(&engine, "bob", room).await;
    let carol = join(&engine, "carol", room).await;
    let carol_recalls = Recalls::default();
    carol
        .chat_manager()
        .add_event_handler("recalls", carol_recalls.clone());
    let bob_recalls = Recalls::default();
    bob.chat_manager()
        .add_event_handler("recalls", bob_recalls.clone());
    let chat = bob.chat_manager();
    let first = say(&bob, room, "first").await;
    let second = say(&bob, room, "second").await;
    clock.advance(Duration::from_secs(120));
    chat.recall_message(&room, first.seq()).await.unwrap();
    let seen = carol_recalls.wait_for(1).await;
    assert_eq!(seen, [(room, vec![first.msg_id()], Some(uid("bob")))]);
    // Past the window: 504; a member on someone else's message: 703; no such message: 500.
    clock.advance(Duration::from_millis(1));
    let err = chat.recall_message(&room, second.seq()).await.unwrap_err();
    assert_eq!(err.code(), 504);
    let theirs = say(&owner, room, "owner's").await;
    let code = |r: Result<(), roomcast::ChatError>| r.unwrap_err().code();
    assert_eq!(code(chat.recall_message(&room, theirs.seq()).await), 703);
    assert_eq!(code(chat.recall_message(&room, 99).await), 500);
    assert_eq!(
        code(
            bob.chat_room_manager()
                .delete_chat_room_message(&room, second.seq())
                .await
        ),
        703
    );
    // The owner deletes any message at any time; the sender is told, the owner is not.
    let rooms = owner.chat_room_manager().with_reason("spam");
    rooms
        .delete_chat_room_message(&room, second.seq())
        .await
        .unwrap();
    let seen = bob_recalls.wait_for(1).await;
    assert_eq!(seen, [(room, vec![second.msg_id()], Some(uid("owner")))]);
    assert_eq!(carol_recalls.wait_for(2).await.len(), 2);
    // History shows both recalled, bodies gone; the rest untouched.
    let page = carol
        .chat_manager()
        .fetch_history_messages(&room, HistoryQuery::newest(10))
        .await
        .unwrap();
    let shown: Vec<(u64, bool, Option<&str>)> = page
        .data
        .iter()
        .map(|m| (m.seq(), m.is_recalled(), m.text()))
        .collect();
    assert_eq!(
        shown,
        [
            (3, false, Some("owner's")),
            (2, true, Some("")),
            (1, true, Some(""))
        ]
    );
    assert_eq!(page.data[1].recalled().unwrap().by, uid("owner"));
    // Recalling again changes nothing; the log has the sender's recall and the deletion.
    rooms
        .delete_chat_room_message(&room, second.seq())
        .await
        .unwrap();
    let log = owner
        .chat_room_manager()
        .fetch_chat_room_audit_log(&room, None, 10)
        .await
        .unwrap();
    let actions: Vec<_> = log.data.iter().map(|e| e.action.clone()).collect();
    assert_eq!(
        actions,
        [
            AuditAction::DeleteMessage { seq: 2 },
            AuditAction::RecallMessage { seq: 1 }
        ]
    );
    assert_eq!(log.data[0].reason.as_deref(), Some("spam"));
    // A member joining now gets the replay with the recalled messages recalled.
    let dave = engine.login("dave").await.unwrap();
    let dave_inbox = inbox(&dave, "inbox");
    dave.chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    dave_inbox.wait_for_count(3).await;
    let replay = dave_inbox.messages();
    assert!(replay[0].is_recalled() && replay[1].is_recalled() && !replay[2].is_recalled());
    engine.shutdown().await;
}

#[tokio::test]
async fn the_recall_window_is_configurable() {
    let clock = ManualClock::new(1_700_000_000_000);
    let limits = unthrottled().with_message_recall_window(Duration::from_secs(5));
    let (engine, owner) = engine_with(limits, Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let bob = join(&engine, "bob", room).await;
    let a = say(&bob, room, "a").await;
    let b = say(&bob, room, "b").await;
    clock.advance(Duration::from_secs(5));
    bob.chat_manager()
        .recall_message(&room, a.seq())
        .await
        .unwrap();
    clock.advance(Duration::from_millis(1));
    let err = bob.chat_manager().recall_message(&room, b.seq()).await;
    assert_eq!(err.unwrap_err().code(), 504);
    engine.shutdown().await;
}

#[tokio::test]
async fn pins_are_listed_bounded_and_go_with_a_recall() {
    let limits = unthrottled().with_max_pinned_messages(2);
    let (engine, owner) = engine_with(limits, None, "owner").await;
    let room = create_room(&owner, "stream").await.room_id;
    let admin = join(&engine, "admin", room).await;
    let bob = join(&engine, "bob", room).await;
    let mut bob_events = bob.events();
    owner
        .chat_room_manager()
        .add_chat_room_admin(&room, "admin")
        .await
        .unwrap();
    let m1 = say(&bob, room, "one").await;
    let m2 = say(&bob, room, "two").await;
    let m3 = say(&bob, room, "three").await;
    let mods = admin.chat_room_manager().with_reason("important");
    mods.pin_chat_room_message(&room, m1.seq()).await.unwrap();
    // Bob gets the pin with its operator and reason.
    let pinned = loop {
        match next_event(&mut bob_events).await {
            Some(roomcast::ClientEvent::Room(e))
                if matches!(*e, ChatRoomEvent::MessagePinned { .. }) =>
            {
                break (*e).clone()
            }
            Some(_) => continue,
            None => panic!("the stream ended"),
        }
    };
    assert_eq!(
        pinned,
        ChatRoomEvent::MessagePinned {
            room_id: room,
            msg_id: m1.msg_id(),
            seq: 1,
            operator: Some(uid("admin")),
            operator_reason: Some("important".into()),
        }
    );
    mods.pin_chat_room_message(&room, m2.seq()).await.unwrap();
    let err = mods
        .pin_chat_room_message(&room, m3.seq())
        .await
        .unwrap_err();
    assert_eq!(err.code(), 4);
    let err = bob
        .chat_room_manager()
        .pin_chat_room_message(&room, m3.seq())
        .await
        .unwrap_err();
    assert_eq!(err.code(), 703);
    let info = bob
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    let seqs: Vec<u64> = info.pinned_messages.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(info.pinned_messages[0].by, uid("admin"));
    // The sender recalls a pinned message: it is unpinned, and bob's own recall is not echoed.
    bob.chat_manager()
        .recall_message(&room, m2.seq())
        .await
        .unwrap();
    let info = owner
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    assert_eq!(info.pinned_messages.len(), 1);
    let err = mods
        .pin_chat_room_message(&room, m2.seq())
        .await
        .unwrap_err();
    assert_eq!(err.code(), 500, "a recalled message cannot be pinned");
    mods.pin_chat_room_message(&room, m3.seq()).await.unwrap();
    mods.unpin_chat_room_message(&room, m1.seq()).await.unwrap();
    mods.unpin_chat_room_message(&room, m1.seq()).await.unwrap();
    let info = owner
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    let seqs: Vec<u64> = info.pinned_messages.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, [3]);
    engine.shutdown().await;
}

#[tokio::test]
async fn recalls_and_pins_survive_a_restart_and_local_copies_show_them() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let dir = dir.path().to_path_buf();
        async move {
            Engine::builder()
                .data_dir(dir)
                .limits(unthrottled())
                .build()
                .await
                .unwrap()
        }
    };
    let keep = ChatOptions::default().with_delete_messages_on_exit(false);
    let room = {
        let engine = open().await;
        engine.add_super_admin("owner").await.unwrap();
        let owner = engine.login("owner").await.unwrap();
        let room = create_room(&owner, "stream").await.room_id;
        let bob = engine
            .login_with_options("bob", keep.clone())
            .await
            .unwrap();
        bob.chat_room_manager().join_chat_room(&room).await.unwrap();
        let secret = say(&bob, room, "secret").await;
        let rules = say(&owner, room, "rules").await;
        bob.chat_manager()
            .recall_message(&room, secret.seq())
            .await
            .unwrap();
        let rooms = owner.chat_room_manager();
        rooms
            .pin_chat_room_message(&room, rules.seq())
            .await
            .unwrap();
        let copy = bob.chat_manager().get_conversation(&room);
        let local = copy.load_messages(None, 10).await.unwrap();
        assert_eq!(
            local.iter().map(|m| m.is_recalled()).collect::<Vec<_>>(),
            [false, true]
        );
        bob.chat_room_manager()
            .leave_chat_room(&room)
            .await
            .unwrap();
        engine.shutdown().await;
        room
    };
    let engine = open().await;
    let owner = engine.login("owner").await.unwrap();
    let info = owner
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    assert_eq!(
        info.pinned_messages
            .iter()
            .map(|p| p.seq)
            .collect::<Vec<_>>(),
        [2]
    );
    let bob = engine.login_with_options("bob", keep).await.unwrap();
    let local = bob
        .chat_manager()
        .get_conversation(&room)
        .load_messages(None, 10)
        .await
        .unwrap();
    let shown: Vec<(u64, bool, Option<&str>)> = local
        .iter()
        .map(|m| (m.seq(), m.is_recalled(), m.text()))
        .collect();
    assert_eq!(shown, [(2, false, Some("rules")), (1, true, Some(""))]);
    owner
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    let page = owner
        .chat_manager()
        .fetch_history_messages(&room, HistoryQuery::newest(10))
        .await
        .unwrap();
    assert!(page.data[1].is_recalled());
    engine.shutdown().await;
    drop(engine);
    let report = roomcast::store::check(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}
