//! Cluster mode against a real nats-server (Debian's 2.9 in CI): several engines, each one node,
//! in this process. Without nats-server the tests print a skip message and pass, unless
//! `ROOMCAST_REQUIRE_NATS=1` (CI sets it). No sleeps: waits poll with a deadline.

use std::time::Duration;

use futures_util::StreamExt;
use roomcast::{
    ChatRoomEvent, ClientEvent, ClusterConfig, CreateChatRoomOptions, Engine, EventStream,
    HistoryQuery, OutgoingMessage,
};
use roomcast_cluster::testing::NatsServer;

const DEADLINE: Duration = Duration::from_secs(10);

macro_rules! server {
    () => {
        match NatsServer::start() {
            Some(server) => server,
            None => return,
        }
    };
}

async fn node(server: &NatsServer, cluster: &str, id: &str) -> Engine {
    let config = ClusterConfig::new([server.url()], cluster, id)
        .with_lease_ttl(Duration::from_secs(1))
        .with_request_timeout(Duration::from_secs(2));
    Engine::builder()
        .cluster(config)
        .build()
        .await
        .unwrap_or_else(|e| panic!("node {id}: {e}\n{}", server.log()))
}

/// The next message `stream` gets (skipping room events), within the deadline.
async fn next_message(stream: &mut EventStream) -> roomcast::ChatMessage {
    loop {
        match tokio::time::timeout(DEADLINE, stream.next()).await {
            Ok(Some(ClientEvent::Message(m))) => return m,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended"),
            Err(_) => panic!("no message within {DEADLINE:?}"),
        }
    }
}

/// The next room event `stream` gets that `pick` takes, within the deadline.
async fn next_event(
    stream: &mut EventStream,
    pick: impl Fn(&ChatRoomEvent) -> bool,
) -> ChatRoomEvent {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(DEADLINE, stream.next()).await {
            Ok(Some(ClientEvent::Room(e))) if pick(&e) => return (*e).clone(),
            Ok(Some(other)) => seen.push(other),
            Ok(None) => panic!("the stream ended"),
            Err(_) => panic!("no such event within {DEADLINE:?}; got {seen:#?}"),
        }
    }
}

/// A user on node B joins a room created on node A and chats with a user on A, both ways;
/// history, info and the member list agree on both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_on_two_nodes_chat_in_one_room() {
    let server = server!();
    let a = node(&server, "chat", "a").await;
    let b = node(&server, "chat", "b").await;
    a.add_super_admin("host").await.unwrap();
    let host = a.login("host").await.unwrap();
    let room = host
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("stream"))
        .await
        .unwrap()
        .room_id;
    let mut host_events = host.events();
    let bob = b.login("bob").await.unwrap();
    let mut bob_events = bob.events();
    let info = bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    assert_eq!(info.member_count, 2);
    let joined = next_event(&mut host_events, |e| {
        matches!(e, ChatRoomEvent::MemberJoined { .. })
    })
    .await;
    assert!(
        matches!(joined, ChatRoomEvent::MemberJoined { participant, .. } if participant.as_str() == "bob")
    );

    let m1 = host
        .chat_manager()
        .send_message(OutgoingMessage::text(room, "hello from a"))
        .await
        .unwrap();
    let got = next_message(&mut bob_events).await;
    assert_eq!((got.seq(), got.text()), (m1.seq(), Some("hello from a")));
    let m2 = bob
        .chat_manager()
        .send_message(OutgoingMessage::text(room, "hi from b"))
        .await
        .unwrap();
    assert_eq!(m2.seq(), m1.seq() + 1);
    let got = next_message(&mut host_events).await;
    assert_eq!(got.text(), Some("hi from b"));

    // A super admin on node B broadcasts to every room of the cluster.
    b.add_super_admin("herald").await.unwrap();
    let herald = b.login("herald").await.unwrap();
    let reached = herald
        .chat_manager()
        .broadcast_to_chat_rooms(OutgoingMessage::text(room, "to all rooms"))
        .await
        .unwrap();
    assert_eq!(reached, 1);
    let got = next_message(&mut bob_events).await;
    assert_eq!(got.text(), Some("to all rooms"));
    let got = next_message(&mut host_events).await;
    assert_eq!(got.text(), Some("to all rooms"));
    for client in [&host, &bob] {
        let page = client
            .chat_manager()
            .fetch_history_messages(&room, HistoryQuery::newest(10))
            .await
            .unwrap();
        let texts: Vec<_> = page.data.iter().filter_map(|m| m.text()).collect();
        assert_eq!(texts, ["to all rooms", "hi from b", "hello from a"]);
        let info = client
            .chat_room_manager()
            .fetch_chat_room_info(&room)
            .await
            .unwrap();
        assert_eq!(info.member_count, 2);
    }
    // Moderation from the other node: the owner's admin is on node B.
    host.chat_room_manager()
        .add_chat_room_admin(&room, "bob")
        .await
        .unwrap();
    let carol = a.login("carol").await.unwrap();
    let mut carol_events = carol.events();
    carol
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    bob.chat_room_manager()
        .mute_chat_room_members(&room, ["carol"], Duration::from_secs(60))
        .await
        .unwrap();
    next_event(&mut carol_events, |e| {
        matches!(e, ChatRoomEvent::MuteListAdded { .. })
    })
    .await;
    let err = carol
        .chat_manager()
        .send_message(OutgoingMessage::text(room, "let me talk"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 215);

    // Leaving from node B: the host hears it.
    bob.chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    next_event(&mut host_events, |e| matches!(e, ChatRoomEvent::MemberExited { participant, .. } if participant.as_str() == "bob")).await;
    // Node B lists the room (the cluster's directory).
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let page = bob
            .chat_room_manager()
            .fetch_public_chat_rooms(1, 20, None)
            .await
            .unwrap();
        if page.data.iter().any(|r| r.room_id == room) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node b never listed the room"
        );
        tokio::task::yield_now().await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Sends `text` to `room` until it is accepted (the room may be moving between nodes), within
/// the deadline.
async fn send_until_ok(
    client: &roomcast::ChatClient,
    room: roomcast::RoomId,
    text: &str,
) -> roomcast::ChatMessage {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        match client
            .chat_manager()
            .send_message(OutgoingMessage::text(room, text))
            .await
        {
            Ok(m) => return m,
            Err(e) if e.code() >= 900 && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

/// The owner's node goes: another node with members takes the room within the lease time;
/// nothing acknowledged is lost, sequence numbers have no gaps, and the members on the other
/// nodes are told the room recovered and go on chatting.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_outlives_its_owning_node() {
    failover(true).await;
}

/// As above, the owner's node dropped without a shutdown: its leases lapse (the lease time)
/// instead of being handed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_outlives_an_owning_node_that_vanished() {
    failover(false).await;
}

async fn failover(clean: bool) {
    let server = server!();
    let a = node(&server, "failover", "a").await;
    let b = node(&server, "failover", "b").await;
    let c = node(&server, "failover", "c").await;
    a.add_super_admin("host").await.unwrap();
    let host = a.login("host").await.unwrap();
    let room = host
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("stream"))
        .await
        .unwrap()
        .room_id;
    let bob = b.login("bob").await.unwrap();
    let carol = c.login("carol").await.unwrap();
    let mut carol_events = carol.events();
    bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    carol
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    let mut acked = Vec::new();
    for n in 0..20 {
        acked.push(
            send_until_ok(&bob, room, &format!("before {n}"))
                .await
                .seq(),
        );
    }
    // The owner's node goes away.
    if clean {
        a.shutdown().await;
    }
    drop(host);
    drop(a);
    let started = std::time::Instant::now();
    let after = send_until_ok(&bob, room, "after").await;
    let failover = started.elapsed();
    eprintln!("failover: the first send after the owner went took {failover:?}");
    assert_eq!(
        after.seq(),
        acked.last().unwrap() + 1,
        "no gap, nothing lost"
    );
    acked.push(after.seq());
    for n in 0..5 {
        acked.push(send_until_ok(&bob, room, &format!("later {n}")).await.seq());
    }
    // Carol (on c) is told the room recovered, and gets what bob sends after.
    next_event(&mut carol_events, |e| {
        matches!(e, ChatRoomEvent::ChatRoomRecovered { .. })
    })
    .await;
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    while !seen.contains(acked.last().unwrap()) {
        assert!(std::time::Instant::now() < deadline, "carol got {seen:?}");
        let m = next_message(&mut carol_events).await;
        seen.push(m.seq());
    }
    // History from both surviving nodes: every acknowledged message, no gaps.
    for client in [&bob, &carol] {
        let page = client
            .chat_manager()
            .fetch_history_messages(&room, HistoryQuery::after(0, 200))
            .await
            .unwrap();
        let seqs: Vec<u64> = page.data.iter().map(|m| m.seq()).collect();
        assert_eq!(seqs, (1..=*acked.last().unwrap()).collect::<Vec<_>>());
        let info = client
            .chat_room_manager()
            .fetch_chat_room_info(&room)
            .await
            .unwrap();
        assert_eq!(
            info.member_count, 2,
            "bob and carol (the host's node is gone)"
        );
    }
    b.shutdown().await;
    c.shutdown().await;
}

async fn node_with_clock(
    server: &NatsServer,
    cluster: &str,
    id: &str,
    clock: &roomcast::ManualClock,
) -> Engine {
    let config = ClusterConfig::new([server.url()], cluster, id)
        .with_lease_ttl(Duration::from_secs(1))
        .with_request_timeout(Duration::from_secs(2));
    Engine::builder()
        .cluster(config)
        .clock(clock.clone())
        .build()
        .await
        .unwrap_or_else(|e| panic!("node {id}: {e}\n{}", server.log()))
}

/// Presence across nodes: a user is offline only when its sessions on every node are; then it
/// leaves the room after the grace period, not before, and coming back within it keeps it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_means_offline_on_every_node() {
    let server = server!();
    let clock = roomcast::ManualClock::new(1_700_000_000_000);
    let a = node_with_clock(&server, "presence", "a", &clock).await;
    let b = node_with_clock(&server, "presence", "b", &clock).await;
    a.add_super_admin("host").await.unwrap();
    let host = a.login("host").await.unwrap();
    let mut host_events = host.events();
    let room = host
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("stream"))
        .await
        .unwrap()
        .room_id;
    let dave_a = a.login("dave").await.unwrap();
    let dave_b = b.login("dave").await.unwrap();
    dave_a
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    // His second device, on node b: in the room already (701), and it gets the room's pushes.
    let again = dave_b.chat_room_manager().join_chat_room(&room).await;
    assert_eq!(again.unwrap_err().code(), 701);
    let eve = b.login("eve").await.unwrap();
    eve.chat_room_manager().join_chat_room(&room).await.unwrap();
    let stats = |engine: Engine| async move {
        let s = engine.room_stats(&room).await.unwrap();
        (s.member_count, s.online_count)
    };
    let wait_for = |engine: Engine, want: (usize, usize)| async move {
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let got = stats(engine.clone()).await;
            if got == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "members/online {got:?}, not {want:?}"
            );
            tokio::task::yield_now().await;
        }
    };
    wait_for(a.clone(), (3, 3)).await;
    // Dave's session on b goes: he is still online on a.
    dave_b.disconnect().unwrap();
    eve.disconnect().unwrap();
    wait_for(a.clone(), (3, 2)).await;
    // Eve comes back within the grace period; dave's session on a goes too.
    clock.advance(Duration::from_secs(60));
    eve.reconnect().unwrap();
    dave_a.disconnect().unwrap();
    wait_for(a.clone(), (3, 2)).await;
    // Past the grace period (5 minutes) dave leaves; eve stays.
    clock.advance(Duration::from_secs(5 * 60 + 1));
    next_event(&mut host_events, |e| {
        matches!(e, ChatRoomEvent::MemberExited { participant, .. } if participant.as_str() == "dave")
    })
    .await;
    wait_for(a.clone(), (2, 2)).await;
    // Node b agrees.
    wait_for(b.clone(), (2, 2)).await;
    a.shutdown().await;
    b.shutdown().await;
}

/// The room's calls made from a node that does not own it behave as on the owner: moderation,
/// lists, attributes, pins, recalls, the audit log, local copies, shadow bans (staff on another
/// node see the troll, viewers on every node do not), hold for review, destroy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_call_works_from_another_node() {
    use roomcast::{AuditAction, SetAttributes};
    let server = server!();
    let a = node(&server, "calls", "a").await;
    let b = node(&server, "calls", "b").await;
    let c = node(&server, "calls", "c").await;
    a.add_super_admin("host").await.unwrap();
    let host = a.login("host").await.unwrap();
    let room = host
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("stream"))
        .await
        .unwrap()
        .room_id;
    // The admin on b, viewers on b and c, a troll on c.
    let admin = b.login("admin").await.unwrap();
    let viewer_b = b.login("vb").await.unwrap();
    let viewer_c = c.login("vc").await.unwrap();
    let troll = c.login("troll").await.unwrap();
    for client in [&admin, &viewer_b, &viewer_c, &troll] {
        client
            .chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap();
    }
    let mut admin_events = admin.events();
    let mut vb_events = viewer_b.events();
    let mut vc_events = viewer_c.events();
    host.chat_room_manager()
        .add_chat_room_admin(&room, "admin")
        .await
        .unwrap();
    next_event(&mut admin_events, |e| {
        matches!(e, ChatRoomEvent::AdminAdded { .. })
    })
    .await;
    let rooms = admin.chat_room_manager();

    // Attributes, announcement, lists, from b.
    rooms
        .set_chat_room_attributes(&room, SetAttributes::new([("topic", "jazz")]))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let attrs = viewer_c
        .chat_room_manager()
        .fetch_all_chat_room_attributes(&room)
        .await
        .unwrap();
    assert_eq!(attrs["topic"], "jazz");
    rooms
        .with_reason("rules")
        .update_chat_room_announcement(&room, "be nice")
        .await
        .unwrap();
    let e = next_event(&mut vc_events, |e| {
        matches!(e, ChatRoomEvent::AnnouncementChanged { .. })
    })
    .await;
    assert_eq!(e.operator_reason(), Some("rules"));
    let members = rooms
        .fetch_chat_room_members(&room, None, 100)
        .await
        .unwrap();
    assert_eq!(members.data.len(), 5, "{:?}", members.data);

    // Shadow ban from b: the troll (c) is accepted, the admin (b) sees it marked, viewers not.
    rooms
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    let hidden = troll
        .chat_manager()
        .send_message(OutgoingMessage::text(room, "you all stink"))
        .await
        .unwrap();
    let m = next_message(&mut admin_events).await;
    assert!(m.seq() == hidden.seq() && m.is_shadowed());
    let fine = viewer_b
        .chat_manager()
        .send_message(OutgoingMessage::text(room, "hello"))
        .await
        .unwrap();
    let m = next_message(&mut vc_events).await;
    assert_eq!(
        m.seq(),
        fine.seq(),
        "c's viewer never got the troll's message"
    );

    // Pins, recalls and deletes, from b and c.
    rooms
        .pin_chat_room_message(&room, fine.seq())
        .await
        .unwrap();
    let info = viewer_c
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    assert_eq!(info.pinned_messages[0].seq, fine.seq());
    let oops = viewer_c
        .chat_manager()
        .send_message(OutgoingMessage::text(room, "oops"))
        .await
        .unwrap();
    viewer_c
        .chat_manager()
        .recall_message(&room, oops.seq())
        .await
        .unwrap();
    let e = next_event(&mut vb_events, |e| {
        matches!(e, ChatRoomEvent::MessageRecalled { .. })
    })
    .await;
    assert!(matches!(e, ChatRoomEvent::MessageRecalled { seq, .. } if seq == oops.seq()));

    // Hold for review, set from b: a viewer on c is held; the admin on b has it at once, the
    // viewer on b only once released.
    rooms
        .set_chat_room_hold(&room, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    let held = viewer_c
        .chat_manager()
        .send_message(OutgoingMessage::text(room, "held question"))
        .await
        .unwrap();
    assert!(held.is_held());
    let m = loop {
        let m = next_message(&mut admin_events).await;
        if m.seq() == held.seq() {
            break m;
        }
    };
    assert!(m.is_held());
    let m = loop {
        let m = next_message(&mut vb_events).await;
        if m.seq() == held.seq() {
            break m;
        }
    };
    assert!(!m.is_held(), "released to viewers, unmarked");
    rooms.set_chat_room_hold(&room, None).await.unwrap();

    // The audit log, from b, holds the acts of b's admin with reasons.
    let log = rooms
        .fetch_chat_room_audit_log(&room, None, 50)
        .await
        .unwrap();
    assert!(log.data.iter().any(|e| e.action == AuditAction::ShadowBan));
    // Local copy of the viewer on c: its conversation.
    let local = viewer_c
        .chat_manager()
        .get_conversation(&room)
        .load_messages(None, 50)
        .await
        .unwrap();
    assert!(local.iter().any(|m| m.seq() == fine.seq()), "{local:?}");
    // Kick from b: the viewer on c is out, and hears it.
    rooms.remove_chat_room_members(&room, ["vc"]).await.unwrap();
    next_event(&mut vc_events, |e| {
        matches!(e, ChatRoomEvent::RemovedFromChatRoom { .. })
    })
    .await;
    let err = viewer_c
        .chat_manager()
        .send_message(OutgoingMessage::text(room, "still here?"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 702);
    // Destroyed from node c by... only the owner may: the host is on a. A super admin on b
    // may not either (703).
    let err = admin
        .chat_room_manager()
        .destroy_chat_room(&room)
        .await
        .unwrap_err();
    assert_eq!(err.code(), 703);
    host.chat_room_manager()
        .destroy_chat_room(&room)
        .await
        .unwrap();
    next_event(&mut vb_events, |e| {
        matches!(e, ChatRoomEvent::ChatRoomDestroyed { .. })
    })
    .await;
    let err = viewer_b
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap_err();
    assert_eq!(err.code(), 705);
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
