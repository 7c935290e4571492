use std::collections::BTreeMap;

use roomcast::{
    AttributeValue, ChatEventHandler, ChatMessage, CreateChatRoomOptions, HistoryQuery,
    ManualClock, MessageBody, MessagePriority, OutgoingMessage, RoomId,
};

use crate::support::*;

#[tokio::test]
async fn a_message_reaches_every_other_member_and_not_its_sender() {
    let (engine, alice) = engine_with(unthrottled(), None, "alice").await;
    let room = create_room(&alice, "r").await;
    let other = create_room(&alice, "other").await;
    let alice_in = inbox(&alice, "a");
    let bob = join(&engine, "bob", room.room_id).await;
    let bob_in = inbox(&bob, "b");
    let carol = join(&engine, "carol", room.room_id).await;
    let carol_in = inbox(&carol, "c");
    let outsider = join(&engine, "outsider", other.room_id).await;
    let outsider_in = inbox(&outsider, "o");

    let sent = say(&alice, room.room_id, "hello").await;
    assert_eq!(sent.seq(), 1);
    assert_eq!(sent.from(), &uid("alice"));
    assert_eq!(sent.room_id(), room.room_id);
    let second = say(&bob, room.room_id, "hi alice").await;
    assert_eq!(second.seq(), 2);
    assert!(second.msg_id() > sent.msg_id());

    bob_in.wait_for_count(1).await;
    carol_in.wait_for_count(2).await;
    alice_in.wait_for_count(1).await;
    assert_eq!(carol_in.texts(), ["hello", "hi alice"]);
    // A sentinel from the sender's own room: once it arrives, nothing earlier is in flight.
    say(&carol, room.room_id, "sentinel").await;
    bob_in.wait_for_count(2).await;
    alice_in.wait_for_count(2).await;
    assert_eq!(
        bob_in.texts(),
        ["hello", "sentinel"],
        "bob did not get his own message"
    );
    assert_eq!(alice_in.texts(), ["hi alice", "sentinel"]);
    assert_eq!(
        alice_in.messages()[0],
        second,
        "receivers get what the sender was returned"
    );

    say(&alice, other.room_id, "other room").await;
    outsider_in.wait_for_count(1).await;
    assert_eq!(outsider_in.texts(), ["other room"]);
}

#[tokio::test]
async fn sending_rules_and_codes() {
    let (engine, alice) = engine_with(unthrottled(), None, "alice").await;
    let room = create_room(&alice, "r").await;
    let chat = alice.chat_manager();
    let code = |r: Result<ChatMessage, roomcast::ChatError>| r.unwrap_err().code();
    let id = room.room_id;
    assert_eq!(
        code(chat.send_message(OutgoingMessage::text(id, "")).await),
        500
    );
    let empty_event = OutgoingMessage::custom(id, "", BTreeMap::new());
    assert_eq!(code(chat.send_message(empty_event).await), 500);
    let big = OutgoingMessage::text(id, "x".repeat(5 * 1024 + 1));
    assert_eq!(code(chat.send_message(big).await), 510);
    let big_attr = OutgoingMessage::text(id, "x".repeat(5 * 1024 - 2))
        .with_attribute("key", AttributeValue::Bool(true));
    assert_eq!(code(chat.send_message(big_attr).await), 510);
    chat.send_message(OutgoingMessage::text(id, "x".repeat(5 * 1024)))
        .await
        .expect("exactly at the limit");
    let stranger = engine.login("stranger").await.unwrap();
    let err = stranger
        .chat_manager()
        .send_message(OutgoingMessage::text(id, "hi"))
        .await;
    assert_eq!(code(err), 702);
    let err = chat
        .send_message(OutgoingMessage::text(RoomId::from_u64(42), "hi"))
        .await;
    assert_eq!(code(err), 705);
    let stats = engine.room_stats(&id).await.unwrap();
    assert_eq!(
        stats.last_seq, 1,
        "rejected messages take no sequence number"
    );
}

#[tokio::test]
async fn the_size_limit_is_configurable() {
    let mut limits = unthrottled();
    limits.message_max_bytes = 10;
    let (_engine, alice) = engine_with(limits, None, "alice").await;
    let room = create_room(&alice, "r").await;
    let chat = alice.chat_manager();
    chat.send_message(OutgoingMessage::text(room.room_id, "0123456789"))
        .await
        .unwrap();
    let err = chat
        .send_message(OutgoingMessage::text(room.room_id, "01234567890"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 510);
}

#[tokio::test]
async fn custom_messages_and_attributes_arrive_intact() {
    let (engine, alice) = engine_with(unthrottled(), None, "alice").await;
    let room = create_room(&alice, "r").await;
    let bob = join(&engine, "bob", room.room_id).await;
    let bob_in = inbox(&bob, "b");
    let params = BTreeMap::from([("gift".to_string(), "rocket".to_string())]);
    let sent = alice
        .chat_manager()
        .send_message(
            OutgoingMessage::custom(room.room_id, "gift_sent", params.clone())
                .with_attribute("combo", AttributeValue::Int(3))
                .with_attribute("meta", AttributeValue::Json("{\"a\":1}".into()))
                .with_priority(MessagePriority::Low),
        )
        .await
        .unwrap();
    bob_in.wait_for_count(1).await;
    let got = &bob_in.messages()[0];
    assert_eq!(got, &sent);
    assert_eq!(
        got.body(),
        &MessageBody::Custom {
            event: "gift_sent".into(),
            params
        }
    );
    assert_eq!(got.attributes()["combo"], AttributeValue::Int(3));
    assert_eq!(got.priority(), MessagePriority::Low);
}

#[tokio::test]
async fn over_the_delivery_threshold_low_goes_first_then_normal_then_high() {
    let clock = ManualClock::new(1_000_000);
    let mut limits = unthrottled();
    limits.room_delivery_rate = Some(10); // bucket of 20: low needs 10 left, normal 5, high 0
    let (engine, owner) = engine_with(limits, Some(clock.clone()), "owner").await;
    let room = create_room(&owner, "r").await;
    let viewer = join(&engine, "viewer", room.room_id).await;
    let watcher = join(&engine, "watcher", room.room_id).await;
    let watcher_in = inbox(&watcher, "w");
    let chat = viewer.chat_manager();
    let send = |p: MessagePriority| {
        let chat = chat.clone();
        async move {
            chat.send_message(
                OutgoingMessage::text(room.room_id, format!("{p:?}")).with_priority(p),
            )
            .await
        }
    };
    let mut outcome = Vec::new();
    for p in [
        MessagePriority::Low,
        MessagePriority::Normal,
        MessagePriority::High,
    ] {
        let mut ok = 0;
        for _ in 0..20 {
            match send(p).await {
                Ok(_) => ok += 1,
                Err(e) => assert_eq!(e.code(), 4, "{e}"),
            }
        }
        outcome.push(ok);
    }
    // The clock stands still: 10 low pass (20 -> 10 tokens), then 5 normal (-> 5), then 5 high.
    assert_eq!(outcome, [10, 5, 5]);
    let stats = engine.room_stats(&room.room_id).await.unwrap();
    assert_eq!(stats.messages.accepted, 20);
    assert_eq!(
        (
            stats.messages.dropped_low,
            stats.messages.dropped_normal,
            stats.messages.dropped_high
        ),
        (10, 15, 15)
    );
    // The owner's messages count as high, whatever they say.
    let owner_low = owner
        .chat_manager()
        .send_message(OutgoingMessage::text(room.room_id, "x").with_priority(MessagePriority::Low))
        .await;
    assert_eq!(
        owner_low.unwrap_err().code(),
        4,
        "the bucket is empty even for high"
    );
    clock.advance(std::time::Duration::from_millis(200)); // 2 tokens
    owner
        .chat_manager()
        .send_message(OutgoingMessage::text(room.room_id, "x").with_priority(MessagePriority::Low))
        .await
        .expect("a low message from the owner counts as high");
    assert_eq!(send(MessagePriority::Low).await.unwrap_err().code(), 4);
    watcher_in.wait_for_count(21).await;
    assert_eq!(
        watcher_in.seqs(),
        (1..=21).collect::<Vec<_>>(),
        "no gaps in what was admitted"
    );
}

#[tokio::test]
async fn a_joiner_gets_the_newest_messages_replayed() {
    let (engine, alice) = engine_with(unthrottled(), None, "alice").await;
    let room = create_room(&alice, "r").await;
    for n in 1..=15 {
        say(&alice, room.room_id, &format!("m{n}")).await;
    }
    let bob = engine.login("bob").await.unwrap();
    let bob_in = inbox(&bob, "b");
    bob.chat_room_manager()
        .join_chat_room(&room.room_id)
        .await
        .unwrap();
    bob_in.wait_for_count(10).await;
    assert_eq!(bob_in.seqs(), (6..=15).collect::<Vec<_>>());
    say(&alice, room.room_id, "live").await;
    bob_in.wait_for_count(11).await;
    assert_eq!(bob_in.texts().last().unwrap(), "live");
}

#[tokio::test]
async fn the_replay_count_is_configurable() {
    let mut limits = unthrottled();
    limits.join_replay_count = 3;
    let (engine, alice) = engine_with(limits.clone(), None, "alice").await;
    let room = create_room(&alice, "r").await;
    for n in 1..=5 {
        say(&alice, room.room_id, &format!("m{n}")).await;
    }
    let bob = engine.login("bob").await.unwrap();
    let bob_in = inbox(&bob, "b");
    bob.chat_room_manager()
        .join_chat_room(&room.room_id)
        .await
        .unwrap();
    bob_in.wait_for_count(3).await;
    assert_eq!(bob_in.seqs(), [3, 4, 5]);
    assert_eq!(bob_in.calls(), 1, "the replay arrives as one batch");

    limits.join_replay_count = 201;
    let err = roomcast::Engine::builder()
        .limits(limits)
        .build()
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), 110);
}

#[tokio::test]
async fn history_pages_walk_back_and_forth() {
    let mut limits = unthrottled();
    limits.history_retention = 50;
    let (engine, alice) = engine_with(limits, None, "alice").await;
    let room = create_room(&alice, "r").await;
    for n in 1..=60 {
        say(&alice, room.room_id, &format!("m{n}")).await;
    }
    let chat = alice.chat_manager();
    let seqs = |page: &roomcast::ChatCursorResult<ChatMessage>| {
        page.data.iter().map(ChatMessage::seq).collect::<Vec<_>>()
    };
    let newest = chat
        .fetch_history_messages(&room.room_id, HistoryQuery::newest(5))
        .await
        .unwrap();
    assert_eq!(seqs(&newest), [60, 59, 58, 57, 56]);
    assert_eq!(newest.cursor, Some(56));
    let mut walked = seqs(&newest);
    let mut cursor = newest.cursor;
    while let Some(before) = cursor {
        let page = chat
            .fetch_history_messages(&room.room_id, HistoryQuery::before(before, 7))
            .await
            .unwrap();
        walked.extend(seqs(&page));
        cursor = page.cursor;
    }
    assert_eq!(
        walked,
        (11..=60).rev().collect::<Vec<_>>(),
        "the 50 retained, once each"
    );
    let after = chat
        .fetch_history_messages(&room.room_id, HistoryQuery::after(55, 10))
        .await
        .unwrap();
    assert_eq!(seqs(&after), [56, 57, 58, 59, 60]);
    assert_eq!(after.cursor, None);
    for size in [0, 201] {
        let err = chat
            .fetch_history_messages(&room.room_id, HistoryQuery::newest(size))
            .await
            .unwrap_err();
        assert_eq!(err.code(), 110);
    }
    let stranger = engine.login("stranger").await.unwrap();
    let err = stranger
        .chat_manager()
        .fetch_history_messages(&room.room_id, HistoryQuery::newest(5))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 702);
}

#[tokio::test]
async fn every_member_sees_one_order_under_concurrent_senders() {
    let (engine, alice) = engine_with(unthrottled(), None, "alice").await;
    let room = alice
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("busy").with_max_users(100))
        .await
        .unwrap();
    let mut watchers = Vec::new();
    for n in 0..5 {
        let c = join(&engine, &format!("w{n}"), room.room_id).await;
        let i = inbox(&c, "w");
        watchers.push((c, i));
    }
    let mut senders = Vec::new();
    for n in 0..4 {
        let c = join(&engine, &format!("s{n}"), room.room_id).await;
        senders.push(tokio::spawn(async move {
            for k in 0..100 {
                say(&c, room.room_id, &format!("s{n}-{k}")).await;
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    for (_, i) in &watchers {
        i.wait_for_count(400).await;
        assert_eq!(i.seqs(), (1..=400).collect::<Vec<_>>());
        // Each sender's own messages keep their order too.
        for n in 0..4 {
            let mine: Vec<String> = i
                .texts()
                .into_iter()
                .filter(|t| t.starts_with(&format!("s{n}-")))
                .collect();
            let expected: Vec<String> = (0..100).map(|k| format!("s{n}-{k}")).collect();
            assert_eq!(mine, expected);
        }
    }
}

#[tokio::test]
async fn a_stalled_consumer_is_told_what_it_missed_and_can_fetch_it() {
    /// Blocks on its first call until released, then records.
    struct Stalled {
        gate: parking_lot::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
        inner: Inbox,
    }
    impl ChatEventHandler for Stalled {
        fn on_messages_received(&self, messages: &[ChatMessage]) {
            if let Some(rx) = self.gate.lock().take() {
                let _ = rx.recv();
            }
            self.inner.on_messages_received(messages);
        }
        fn on_events_missed(&self, count: u64) {
            self.inner.on_events_missed(count);
        }
    }
    let mut limits = unthrottled();
    limits.history_retention = 1_000;
    let engine = roomcast::Engine::builder()
        .limits(limits)
        .event_queue_capacity(64)
        .build()
        .await
        .unwrap();
    engine.add_super_admin("alice").await.unwrap();
    let alice = engine.login("alice").await.unwrap();
    let room = create_room(&alice, "r").await;
    let healthy = join(&engine, "healthy", room.room_id).await;
    let healthy_in = inbox(&healthy, "h");
    let slow = join(&engine, "slow", room.room_id).await;
    let (release, gate) = std::sync::mpsc::channel();
    let slow_in = Inbox::default();
    slow.chat_manager().add_event_handler(
        "slow",
        Stalled {
            gate: parking_lot::Mutex::new(Some(gate)),
            inner: slow_in.clone(),
        },
    );
    say(&alice, room.room_id, "first").await;
    for n in 0..200 {
        say(&alice, room.room_id, &format!("m{n}")).await;
    }
    healthy_in
        .wait_until("the healthy member to see the last message", |i| {
            i.seqs().last() == Some(&201)
        })
        .await;
    drop(release);
    slow_in
        .wait_until("the slow member to catch up", |i| {
            i.missed() > 0 && i.seqs().last() == Some(&201)
        })
        .await;
    let got = slow_in.seqs();
    assert_eq!(
        got.len() as u64 + slow_in.missed(),
        201,
        "every message is seen or counted"
    );
    // Fill the gap from history: everything after the first message seen.
    let first = got[0];
    let filled = slow
        .chat_manager()
        .fetch_history_messages(&room.room_id, HistoryQuery::after(first, 200))
        .await
        .unwrap();
    let filled: Vec<u64> = filled.data.iter().map(ChatMessage::seq).collect();
    assert_eq!(filled, (first + 1..=201).collect::<Vec<_>>());
    assert!(engine.overflowed_deliveries() > 0);
}

#[tokio::test]
async fn handlers_can_be_removed_and_streams_carry_messages() {
    let (engine, alice) = engine_with(unthrottled(), None, "alice").await;
    let room = create_room(&alice, "r").await;
    let bob = join(&engine, "bob", room.room_id).await;
    let first = inbox(&bob, "first");
    let second = inbox(&bob, "second");
    let mut stream = bob.events();
    say(&alice, room.room_id, "one").await;
    first.wait_for_count(1).await;
    assert!(bob.chat_manager().remove_event_handler("first"));
    assert!(!bob.chat_manager().remove_event_handler("first"));
    say(&alice, room.room_id, "two").await;
    second.wait_for_count(2).await;
    assert_eq!(first.texts(), ["one"]);
    for expected in ["one", "two"] {
        match next_event(&mut stream).await {
            Some(roomcast::ClientEvent::Message(m)) => assert_eq!(m.text(), Some(expected)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// `Engine::overflowed_deliveries` counts this engine's drops only (it was a process-wide
/// count).
#[tokio::test]
async fn overflowed_deliveries_are_counted_per_engine() {
    let busy = roomcast::Engine::builder()
        .limits(unthrottled())
        .event_queue_capacity(2)
        .build()
        .await
        .unwrap();
    let quiet = roomcast::Engine::builder().build().await.unwrap();
    busy.add_super_admin("owner").await.unwrap();
    let owner = busy.login("owner").await.unwrap();
    let room = create_room(&owner, "r").await.room_id;
    let reader = join(&busy, "reader", room).await;
    let _never_polled = reader.events();
    for n in 0..20 {
        say(&owner, room, &format!("m{n}")).await;
    }
    let deadline = std::time::Instant::now() + DEADLINE;
    while busy.overflowed_deliveries() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the busy engine counts its drops"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(
        quiet.overflowed_deliveries(),
        0,
        "another engine counts nothing of it"
    );
    busy.shutdown().await;
    quiet.shutdown().await;
}
