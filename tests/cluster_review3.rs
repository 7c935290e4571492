//! A third adversarial review of cluster mode, written from the README, `docs/cluster.md`,
//! `docs/semantics.md` and the public API of the `roomcast` facade (plus
//! `roomcast_cluster::ClusterConfig`) only. It aims at what changed last:
//!
//! 1. every delivery, to the owner's own members too, waits for the room's log to acknowledge
//!    the writes before it (moderation events and messages racing, blips on the owner);
//! 2. a user's devices on several nodes (attachment with the join replay, kicks and leaves
//!    reaching every device, presence across devices);
//! 3. log compaction with a small threshold, then failovers;
//! 4. history pages that come in parts from another node;
//! 5. members restored after a takeover, and who must stay out;
//! 6. idle rooms with and without members on other nodes.
//!
//! Every node runs against a throwaway nats-server (`roomcast_cluster::testing::NatsServer`);
//! without one the tests print a skip message and pass, unless `ROOMCAST_REQUIRE_NATS=1`. One
//! node's loss of NATS goes through a TCP proxy that can cut it off.
//!
//! Tests marked `#[ignore = "FAILS: .."]` show a broken promise; each says, next to it, what it
//! does, what the docs promise and what happens instead. Run them with `--ignored`.
//!
//! No sleeps for waiting: waits poll with a deadline. Real time is needed for leases (every node
//! has a 1 s lease) and for cuts of a given length: those pauses let real time pass, they do not
//! wait for a state. A few checks watch an invariant for a fixed window ("stays out for two
//! leases").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "shared/proxy.rs"]
mod proxy;
use proxy::Proxy;

use parking_lot::Mutex;
use roomcast::{
    AuditAction, AuditEntry, ChatClient, ChatError, ChatEventHandler, ChatMessage, ChatOptions,
    ChatRoomEvent, ClusterConfig, CreateChatRoomOptions, Engine, HistoryQuery, LeaveReason,
    ManualClock, MessageId, MuteDuration, OutgoingMessage, RoomId, SetAttributes,
};
use roomcast_cluster::testing::NatsServer;
use roomcast_workspace::harness_limits;

#[path = "shared/cluster_harness.rs"]
#[macro_use]
mod cluster_harness;
use cluster_harness::*;

/// Each `on_messages_received` call's sequence numbers, in order: the join replay must come
/// as one batch.
#[derive(Clone, Default)]
struct Batches(Arc<Mutex<Vec<Vec<u64>>>>);

impl ChatEventHandler for Batches {
    fn on_messages_received(&self, messages: &[ChatMessage]) {
        self.0
            .lock()
            .push(messages.iter().map(ChatMessage::seq).collect());
    }
}

impl Batches {
    fn of(client: &ChatClient) -> Batches {
        let b = Batches::default();
        client
            .chat_manager()
            .add_event_handler("batches", b.clone());
        b
    }

    fn all(&self) -> Vec<Vec<u64>> {
        self.0.lock().clone()
    }
}

// ------------------------------------------------------------------------------------------
// 1. Deliveries wait for the log: moderation racing sends, on every node
// ------------------------------------------------------------------------------------------

/// What an audit entry says, in the words of [`event_key`], for the acts the racing scenario
/// makes.
fn audit_key(e: &AuditEntry) -> Option<String> {
    Some(match &e.action {
        AuditAction::PinMessage { seq } => format!("pin {seq}"),
        AuditAction::UnpinMessage { seq } => format!("unpin {seq}"),
        AuditAction::DeleteMessage { seq } => format!("delete {seq}"),
        AuditAction::UpdateAnnouncement => "announcement".into(),
        AuditAction::Mute { .. } => "mute".into(),
        AuditAction::Unmute => "unmute".into(),
        AuditAction::Kick => format!(
            "kick {}",
            e.targets
                .iter()
                .map(|u| u.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        _ => return None,
    })
}

/// What a room event a member got says, for the acts the racing scenario makes (`kicked`: the
/// user whose exits are kicks).
fn event_key(e: &ChatRoomEvent, kicked: &str) -> Option<String> {
    Some(match e {
        ChatRoomEvent::MessagePinned { seq, .. } => format!("pin {seq}"),
        ChatRoomEvent::MessageUnpinned { seq, .. } => format!("unpin {seq}"),
        ChatRoomEvent::MessageRecalled { seq, .. } => format!("delete {seq}"),
        ChatRoomEvent::AnnouncementChanged { .. } => "announcement".into(),
        ChatRoomEvent::MuteListAdded { .. } => "mute".into(),
        ChatRoomEvent::MuteListRemoved { .. } => "unmute".into(),
        ChatRoomEvent::MemberExited { participant, .. } if participant.as_str() == kicked => {
            format!("kick {kicked}")
        }
        _ => return None,
    })
}

/// Whether `sub` is `all` with some items left out, in the same order.
fn is_subsequence(sub: &[String], all: &[String]) -> bool {
    let mut it = all.iter();
    sub.iter().all(|s| it.any(|a| a == s))
}

/// The racing scenario (see the two tests below); returns what broke.
async fn racing_scenario(server: &NatsServer, cluster: &str, blips: bool) -> Vec<String> {
    let pa = Proxy::start(server.port()).await;
    let a = node_at(pa.url(), cluster, "a", |x| x).await;
    let b = node(server, cluster, "b").await;
    let c = node(server, cluster, "c").await;
    let (host, room) = room_on(&a, "race").await;
    let seen_host = Seen::of(&host);
    let adm = b.login("adm").await.unwrap();
    let adm2 = c.login("adm2").await.unwrap();
    for u in [&adm, &adm2] {
        join(u, room).await;
        host.chat_room_manager()
            .add_chat_room_admin(&room, u.current_user_id().as_str())
            .await
            .unwrap();
    }
    let mut observers = vec![("host (owner's node)".to_string(), seen_host.clone())];
    let mut observer_clients = Vec::new();
    for (n, id) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let o = n.login(format!("o{id}")).await.unwrap();
        join(&o, room).await;
        observers.push((format!("o{id}"), Seen::of(&o)));
        observer_clients.push(o);
    }
    let seen_ob = observers[2].1.clone();
    let kk = b.login("kk").await.unwrap();
    join(&kk, room).await;
    let seen_kk = Seen::of(&kk);
    let churn = c.login("churn").await.unwrap();
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for (n, id) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let s = n.login(format!("s{id}")).await.unwrap();
        join(&s, room).await;
        senders.push(sender(
            s,
            room,
            format!("s{id}"),
            acked.clone(),
            stop.clone(),
            Duration::from_millis(4),
            &[215],
        ));
    }
    wait_acked("30 messages", &acked, 30).await;
    let deleted: Arc<Mutex<BTreeSet<u64>>> = Default::default();
    // An admin on b pins, deletes, mutes, announces, unmutes and unpins, again and again.
    let moderation = {
        let (adm, acked, deleted) = (adm.clone(), acked.clone(), deleted.clone());
        tokio::spawn(async move {
            let rooms = adm.chat_room_manager();
            let mut bad = Vec::new();
            for i in 0..14 {
                let (newest, older) = {
                    let acked = acked.lock();
                    let mut seqs: Vec<u64> = acked.iter().map(|x| x.0).collect();
                    seqs.sort_unstable();
                    (seqs[seqs.len() - 1], seqs[seqs.len() - 4])
                };
                let steps: Vec<(&str, Result<(), ChatError>)> = vec![
                    (
                        "pin",
                        retry(|| rooms.pin_chat_room_message(&room, newest)).await,
                    ),
                    (
                        "announce",
                        retry(|| rooms.update_chat_room_announcement(&room, format!("ann {i}")))
                            .await,
                    ),
                    (
                        "mute",
                        retry(|| {
                            rooms.mute_chat_room_members(&room, ["sc"], Duration::from_secs(3600))
                        })
                        .await,
                    ),
                    ("delete", {
                        deleted.lock().insert(older);
                        retry(|| rooms.delete_chat_room_message(&room, older)).await
                    }),
                    (
                        "unmute",
                        retry(|| rooms.unmute_chat_room_members(&room, ["sc"])).await,
                    ),
                    (
                        "unpin",
                        retry(|| rooms.unpin_chat_room_message(&room, newest)).await,
                    ),
                ];
                for (what, r) in steps {
                    match r {
                        Ok(()) => {}
                        // A member that never left refused as not in the room: the membership
                        // fault `members_stay_members_through_owner_cuts` shows; reported here,
                        // not checked.
                        Err(e) if e.code() == 702 => {
                            eprintln!("round {i}: {what}: {e} (membership fault, see below)")
                        }
                        Err(e) => bad.push(format!("round {i}: {what}: {e}")),
                    }
                }
                let_pass(Duration::from_millis(30)).await;
            }
            bad
        })
    };
    // A second admin on c kicks kk (on b) again and again; kk joins again through b.
    let kicks = {
        let (adm2, kk, seen_kk, seen_ob) =
            (adm2.clone(), kk.clone(), seen_kk.clone(), seen_ob.clone());
        tokio::spawn(async move {
            let mut bad = Vec::new();
            for r in 0..8 {
                let rooms = adm2.chat_room_manager();
                if let Err(e) = retry(|| rooms.remove_chat_room_members(&room, ["kk"])).await {
                    bad.push(format!("kick {r}: {e}"));
                }
                // A message the room accepts after the kick: ob (on kk's node) gets it, kk not.
                let marker = send_ok(&adm2, room, &format!("after kick {r}")).await;
                seen_ob
                    .wait_seq(&format!("ob gets marker {r}"), marker.seq())
                    .await;
                if seen_kk.seqs().contains(&marker.seq()) {
                    bad.push(format!(
                        "kk got message {} live, sent after it was kicked ({r})",
                        marker.seq()
                    ));
                }
                let n = r + 1;
                seen_kk
                    .wait_event(&format!("kk told of kick {r}"), |_| {
                        seen_kk.count_events(removed_as(LeaveReason::Kicked)) >= n
                    })
                    .await;
                join(&kk, room).await;
                let_pass(Duration::from_millis(40)).await;
            }
            bad
        })
    };
    // churn joins and leaves through c all along.
    let churning = {
        let (churn, stop) = (churn.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                join(&churn, room).await;
                let_pass(Duration::from_millis(15)).await;
                leave(&churn, room).await;
            }
        })
    };
    let blipping = tokio::spawn(async move {
        if blips {
            for k in 0..4u64 {
                let_pass(Duration::from_millis(600)).await;
                pa.cut();
                let_pass(Duration::from_millis(150 + 60 * k)).await;
                pa.heal();
            }
        }
        pa
    });
    let mut bad = moderation.await.unwrap();
    bad.extend(kicks.await.unwrap());
    let _pa = blipping.await.unwrap();
    stop.store(true, Ordering::Relaxed);
    churning.await.unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let end = send_ok(&observer_clients[0], room, "the end").await;
    let acked = acked.lock().clone();
    let deleted = deleted.lock().clone();
    let h = history(&host, room).await;
    bad.extend(history_faults(&h, &acked, &deleted, "history"));
    let audit: Vec<String> = audit_log(&host, room)
        .await
        .iter()
        .filter_map(audit_key)
        .collect();
    for (who, seen) in &observers {
        if who != "oa" {
            seen.wait_seq(&format!("{who} gets the end"), end.seq())
                .await;
        }
        let own: BTreeSet<u64> = if who == "oa" {
            [end.seq()].into()
        } else {
            BTreeSet::new()
        };
        for f in seen.order_faults(&own) {
            bad.push(format!("{who}: {f}"));
        }
        for p in seen.phantoms(&h).into_iter().take(3) {
            bad.push(format!("{who}: {p}"));
        }
        for p in seen.events_before_their_message().into_iter().take(3) {
            bad.push(format!("{who}: {p}"));
        }
        let got: Vec<String> = seen
            .room_events()
            .iter()
            .filter_map(|e| event_key(e, "kk"))
            .collect();
        // Members who are not staff get no mute events.
        let staff = who.starts_with("host");
        let logged: Vec<String> = audit
            .iter()
            .filter(|k| staff || !k.contains("mute"))
            .cloned()
            .collect();
        let recovered = seen.recoveries() > 0;
        if !is_subsequence(&got, &logged) {
            bad.push(format!(
                "{who}: got events the audit log does not hold in that order:\n  got    {got:?}\n  logged {logged:?}"
            ));
        } else if !recovered && got != logged {
            bad.push(format!(
                "{who}: missed events without a recovery notice:\n  got    {got:?}\n  logged {logged:?}"
            ));
        }
    }
    eprintln!(
        "{cluster}: {} messages, {} audit entries of the race; recoveries {:?}",
        acked.len(),
        audit.len(),
        observers
            .iter()
            .map(|(w, s)| (w.clone(), s.recoveries()))
            .collect::<Vec<_>>()
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
    bad
}

/// Members on the owner's node (a), on b and on c watch a room where senders on each node send
/// every few ms, an admin on b pins, announces, mutes, deletes, unmutes and unpins in a loop, a
/// second admin on c kicks a member of b who joins again each time, and a member of c joins and
/// leaves in a loop. Promise (`docs/cluster.md`, "Order per room", "Members see only what the
/// log holds"; `docs/semantics.md`, "Ordering": members receive a room's messages *and events*
/// in the room's order): every observer gets the messages once, in order, each as history holds
/// it; an event about a message (pin, recall) after the message; the moderation events in the
/// audit log's order, none missing (no node lost NATS), none that the log does not hold; the
/// kicked member gets nothing accepted after its kick.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moderation_racing_sends_reaches_every_node_in_the_logs_order() {
    let server = server!();
    let bad = racing_scenario(&server, "race", false).await;
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The same race with four short blips (150 to 330 ms, well under the 1 s lease) on the owner's
/// connection to NATS. Promise (`docs/cluster.md`, "Members see only what the log holds": "If
/// an append fails (... its connection blips), nobody saw what it carried"): whatever the
/// observers (the owner's own members included) got live, history and the audit log hold, in
/// that order; gaps only with a recovery notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moderation_racing_sends_with_blips_on_the_owner_shows_only_what_the_log_holds() {
    let server = server!();
    let bad = racing_scenario(&server, "raceblip", true).await;
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ------------------------------------------------------------------------------------------
// 2. A user's devices on several nodes
// ------------------------------------------------------------------------------------------

/// Sends from `from` until `seen` gets one of them live (the session it watches is attached to
/// the room in the background); returns the seq of the one it got.
async fn send_until_seen(from: &ChatClient, room: RoomId, seen: &Seen, what: &str) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let m = send_ok(from, room, "probe").await;
        if seen.gets_within(m.seq(), Duration::from_millis(100)).await {
            return m.seq();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
    }
}

/// Dave joined through node a and has devices on b (behind a proxy) and on the owner's node c.
/// An admin on c kicks him; he joins again through b; he leaves through c. Then b's connection
/// blips. Promise (`docs/cluster.md`, "A user on several nodes": "as on one node where every
/// client of a user shares its session"; `docs/semantics.md`, a kick gives the target
/// `on_removed_from_chat_room(Kicked)`): after the kick every device is out (702), gets nothing
/// sent after it, and is told `Kicked`; after the rejoin through b every device gets the room
/// again; after the leave through c none does; and b's blip (its node then tells the owner who
/// of its sessions is in the room) does not bring him back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kick_and_a_leave_reach_every_device_and_a_blip_does_not_undo_them() {
    let server = server!();
    let pb = Proxy::start(server.port()).await;
    let a = node(&server, "kickdev", "a").await;
    let b = node_at(pb.url(), "kickdev", "b", |x| x).await;
    let c = node(&server, "kickdev", "c").await;
    let (host, room) = room_on(&c, "kickdev").await;
    let adm = c.login("adm").await.unwrap();
    join(&adm, room).await;
    host.chat_room_manager()
        .add_chat_room_admin(&room, "adm")
        .await
        .unwrap();
    let watch_b = b.login("watch").await.unwrap();
    join(&watch_b, room).await;
    let seen_watch = Seen::of(&watch_b);
    let dave_a = a.login("dave").await.unwrap();
    let seen_a = Seen::of(&dave_a);
    join(&dave_a, room).await;
    let dave_b = b.login("dave").await.unwrap();
    let seen_b = Seen::of(&dave_b);
    let dave_c = c.login("dave").await.unwrap();
    let seen_c = Seen::of(&dave_c);
    let devices = [
        ("a", &dave_a, &seen_a),
        ("b", &dave_b, &seen_b),
        ("c", &dave_c, &seen_c),
    ];
    send_until_seen(&host, room, &seen_b, "device b attached").await;
    send_until_seen(&host, room, &seen_c, "device c attached").await;
    let mut bad = Vec::new();

    // The kick.
    adm.chat_room_manager()
        .remove_chat_room_members(&room, ["dave"])
        .await
        .unwrap();
    let after_kick = send_ok(&host, room, "after the kick").await;
    seen_watch
        .wait_seq("b's other member gets it", after_kick.seq())
        .await;
    for (who, d, seen) in devices {
        match send(d, room, "still in?").await {
            Err(e) if e.code() == 702 => {}
            other => bad.push(format!(
                "device {who} after the kick: send {:?}",
                other.map(|m| m.seq()).map_err(|e| e.code())
            )),
        }
        let told = seen
            .event_within(removed_as(LeaveReason::Kicked), Duration::from_secs(3))
            .await;
        if !told {
            bad.push(format!("device {who} was not told it was kicked"));
        }
        if seen.seqs().contains(&after_kick.seq()) {
            bad.push(format!("device {who} got a message sent after the kick"));
        }
    }

    // Back through b: every device gets the room again.
    join(&dave_b, room).await;
    for (who, _, seen) in devices {
        let end = Instant::now() + Duration::from_secs(5);
        let mut got = false;
        while !got && Instant::now() < end {
            let m = send_ok(&host, room, "back?").await;
            got = seen.gets_within(m.seq(), Duration::from_millis(200)).await;
        }
        if !got {
            bad.push(format!(
                "device {who} gets nothing after dave joined again through b"
            ));
        }
    }

    // Out through c.
    dave_c
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    let after_leave = send_ok(&host, room, "after the leave").await;
    seen_watch
        .wait_seq("b's other member gets it", after_leave.seq())
        .await;
    for (who, d, seen) in devices {
        if seen.seqs().contains(&after_leave.seq()) {
            bad.push(format!("device {who} got a message sent after the leave"));
        }
        if let Ok(m) = send(d, room, "still in?").await {
            bad.push(format!(
                "device {who} sends after the leave (seq {})",
                m.seq()
            ));
        }
    }

    // b blips: its rejoin must not bring dave back.
    pb.cut();
    let_pass(Duration::from_millis(300)).await;
    pb.heal();
    let since = Instant::now();
    let mut back = BTreeSet::new();
    while since.elapsed() < 2 * LEASE_TTL {
        if members(&host, room).await.iter().any(|m| m == "dave") {
            back.insert("listed".to_string());
        }
        if let Ok(m) = send(&dave_b, room, "back?").await {
            back.insert(format!("device b's send accepted as {}", m.seq()));
        }
        let_pass(Duration::from_millis(100)).await;
    }
    if !back.is_empty() {
        bad.push(format!("dave is back after b's blip: {back:?}"));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// Dave joined through node a; a room busy with senders on a and c (without pause). His
/// devices log in on b, then on the owner's node c, then the one on b logs out and logs in
/// again. Promise (`docs/cluster.md`, "A user on several nodes" and "Limits": a device on
/// another node "gets the join's replay and then the room's pushes"; "what the room sent in
/// between reaches it in the join replay the attachment brings"): each device gets a first
/// batch of `REPLAY` consecutive messages (but the last: dave's session on b, offline after the
/// logout, is still in the room and resumes live), then every later message once, in order,
/// without a gap, and nothing the room accepted after its login returned is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_logging_in_mid_traffic_get_the_replay_then_every_message_once() {
    let server = server!();
    let a = node(&server, "attach", "a").await;
    let b = node(&server, "attach", "b").await;
    let c = node(&server, "attach", "c").await;
    let (_host, room) = room_on(&c, "attach").await;
    let dave_a = a.login("dave").await.unwrap();
    join(&dave_a, room).await;
    let seen_a = Seen::of(&dave_a);
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for (n, id) in [(&a, "a"), (&c, "c")] {
        let s = n.login(format!("s{id}")).await.unwrap();
        join(&s, room).await;
        senders.push(sender(
            s,
            room,
            format!("s{id}"),
            acked.clone(),
            stop.clone(),
            Duration::ZERO,
            &[],
        ));
    }
    wait_acked("20 messages", &acked, 20).await;
    let newest = |acked: &Acked| acked.lock().iter().map(|x| x.0).max().unwrap_or(0);
    let mut devices = Vec::new();
    for (k, n) in [(0, &b), (1, &c), (2, &b)].into_iter() {
        if k == 2 {
            // The first device on b logs out; a new one logs in there.
            let (_, old, _, _, _): &(String, ChatClient, Seen, Batches, u64) = &devices[0];
            old.logout();
        }
        let d = n.login("dave").await.unwrap();
        let at_login = newest(&acked);
        let seen = Seen::of(&d);
        let batches = Batches::of(&d);
        devices.push((format!("device {k}"), d, seen, batches, at_login));
        let before = acked.lock().len();
        wait_acked("40 more messages", &acked, before + 40).await;
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let last = newest(&acked);
    let mut bad = Vec::new();
    seen_a.wait_seq("device on a gets the last", last).await;
    for f in seen_a.order_faults(&BTreeSet::new()) {
        bad.push(format!("device on a: {f}"));
    }
    for (who, d, seen, batches, at_login) in &devices {
        if d.is_logged_out() {
            continue;
        }
        seen.wait_seq(&format!("{who} gets the last"), last).await;
        let seqs = seen.seqs();
        let first = batches.all().first().cloned().unwrap_or_default();
        let consecutive = first.windows(2).all(|w| w[1] == w[0] + 1);
        // The third device finds dave's session on b still in the room (a logout leaves the
        // user a member, offline): it resumes live, as on one node, with no replay.
        // (Live messages may share the replay's batch: the dispatcher hands over what queued.)
        if who != "device 2" && (first.len() < REPLAY || !consecutive) {
            bad.push(format!(
                "{who}: first batch {first:?}, not the {REPLAY} newest messages first"
            ));
        }
        let from = seqs.first().copied().unwrap_or(0);
        let want: Vec<u64> = (from..=last).collect();
        if seqs != want {
            let dups = seqs.len() - seqs.iter().collect::<BTreeSet<_>>().len();
            let missing: Vec<u64> = want.iter().filter(|s| !seqs.contains(s)).copied().collect();
            bad.push(format!(
                "{who}: got {} messages from {from} to {last}: {dups} repeated, missing {:?}; \
                 order faults {:?}",
                seqs.len(),
                &missing[..missing.len().min(10)],
                seen.order_faults(&BTreeSet::new())
            ));
        }
        if from > at_login + 1 {
            bad.push(format!(
                "{who}: its first message is {from}, but the room had accepted only up to \
                 {at_login} when its login returned: {} messages in between never reached it",
                from - at_login - 1
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// Watches for `span` that the host never sees `who` leave; true if it did not.
async fn stays_for(host_seen: &Seen, who: &str, span: Duration) -> bool {
    !host_seen
        .event_within(|e| is_member_exited(e, who), span)
        .await
}

/// Dave joined through b and has a second device on c; the room's owner is a; the three nodes
/// share a ManualClock (grace 5 minutes). Promise (`docs/cluster.md`, "Presence": "The owner
/// counts a member online if any of its sessions is, and offline since the last one went";
/// `docs/semantics.md`, "Presence"): with b's device logged out and c's online, ten minutes
/// pass and dave stays; with both away he is offline; back within the grace he stays; away
/// past it he is removed, and each device is told `Offline` when it is back online, and
/// neither can send.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_of_a_user_with_devices_on_two_nodes() {
    let server = server!();
    let clock = ManualClock::new(1_700_000_000_000);
    let mk = |id: &'static str| {
        let clock = clock.clone();
        let url = server.url();
        async move { node_at(url, "devpres", id, move |x| x.clock(clock)).await }
    };
    let a = mk("a").await;
    let b = mk("b").await;
    let c = mk("c").await;
    let (host, room) = room_on(&a, "devpres").await;
    let host_seen = Seen::of(&host);
    let dave_b = b.login("dave").await.unwrap();
    join(&dave_b, room).await;
    let dave_c = c.login("dave").await.unwrap();
    let seen_c = Seen::of(&dave_c);
    send_until_seen(&host, room, &seen_c, "device c attached").await;
    wait_for_presence(&a, room, (2, 2)).await;
    let mut bad = Vec::new();

    // b's device logs out; c's is online: dave is online.
    dave_b.logout();
    let_pass(Duration::from_millis(300)).await;
    let p = presence(&a, room).await;
    if p != (2, 2) {
        bad.push(format!("b logged out, c online: (members, online) {p:?}"));
    }
    clock.advance(Duration::from_secs(10 * 60));
    if !stays_for(&host_seen, "dave", LEASE_TTL).await {
        bad.push("online on c, removed as offline after b's logout".into());
    }
    if let Err(e) = retry(|| send(&dave_c, room, "still here")).await {
        bad.push(format!("device c's send with dave online there: {e}"));
    }

    // Both away, then back within the grace period.
    dave_c.disconnect().unwrap();
    wait_for_presence(&a, room, (2, 1)).await;
    clock.advance(Duration::from_secs(2 * 60));
    dave_c.reconnect().unwrap();
    wait_for_presence(&a, room, (2, 2)).await;
    clock.advance(Duration::from_secs(10 * 60));
    if !stays_for(&host_seen, "dave", LEASE_TTL).await {
        bad.push("back within the grace period on c, removed later".into());
    }

    // Both away past the grace period.
    dave_c.disconnect().unwrap();
    wait_for_presence(&a, room, (2, 1)).await;
    clock.advance(Duration::from_secs(10 * 60));
    host_seen
        .wait_event("dave removed after the grace period", |e| {
            is_member_exited(e, "dave")
        })
        .await;
    wait_for_presence(&a, room, (1, 1)).await;
    let dave_b2 = b.login("dave").await.unwrap();
    let seen_b2 = Seen::of(&dave_b2);
    dave_c.reconnect().unwrap();
    for (who, d, seen) in [("b", &dave_b2, &seen_b2), ("c", &dave_c, &seen_c)] {
        if !seen
            .event_within(removed_as(LeaveReason::Offline), Duration::from_secs(3))
            .await
        {
            bad.push(format!(
                "device {who}, back online, not told it was removed as offline (told {:?})",
                seen.room_events()
                    .iter()
                    .filter_map(is_removed)
                    .collect::<Vec<_>>()
            ));
        }
        match retry(|| send(d, room, "in?")).await {
            Err(e) if e.code() == 702 => {}
            other => bad.push(format!(
                "device {who} after the removal: {:?}",
                other.map(|m| m.seq()).map_err(|e| e.code())
            )),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

// ------------------------------------------------------------------------------------------
// 3. Log compaction, then failovers
// ------------------------------------------------------------------------------------------

/// A room's persistent state as its staff sees it.
#[derive(Debug, PartialEq, Clone)]
struct RoomState {
    owner: String,
    admins: Vec<String>,
    announcement: String,
    pins: Vec<u64>,
    attributes: BTreeMap<String, String>,
    mutes: Vec<(String, Option<i64>)>,
    blocks: Vec<(String, Option<i64>)>,
    shadow_banned: Vec<String>,
}

async fn room_state(staff: &ChatClient, room: RoomId) -> RoomState {
    let rooms = staff.chat_room_manager();
    let info = retry(|| rooms.fetch_chat_room_info(&room)).await.unwrap();
    let attributes = retry(|| rooms.fetch_all_chat_room_attributes(&room))
        .await
        .unwrap();
    let mutes = retry(|| rooms.fetch_chat_room_mute_list(&room, 1, 1000))
        .await
        .unwrap();
    let blocks = retry(|| rooms.fetch_chat_room_block_list(&room, 1, 1000))
        .await
        .unwrap();
    let shadow = retry(|| rooms.fetch_chat_room_shadow_ban_list(&room, 1, 1000))
        .await
        .unwrap();
    RoomState {
        owner: info.owner.to_string(),
        admins: info.admin_list.iter().map(|u| u.to_string()).collect(),
        announcement: info.announcement.clone(),
        pins: info.pinned_messages.iter().map(|p| p.seq).collect(),
        attributes,
        mutes: mutes
            .data
            .iter()
            .map(|m| (m.user_id.to_string(), m.expire_time))
            .collect(),
        blocks: blocks
            .data
            .iter()
            .map(|m| (m.user_id.to_string(), m.expire_time))
            .collect(),
        shadow_banned: shadow.data.iter().map(|u| u.to_string()).collect(),
    }
}

/// A message as compared across a failover: seq, id, text, shadowed, recalled.
type Shown = (u64, MessageId, Option<String>, bool, bool);

fn shown(h: &[ChatMessage]) -> Vec<Shown> {
    h.iter()
        .map(|m| {
            (
                m.seq(),
                m.msg_id(),
                m.text().map(str::to_string),
                m.is_shadowed(),
                m.is_recalled(),
            )
        })
        .collect()
}

/// Everything a failover must keep, read through `staff` (an admin) and `keeper` (a user
/// whose local copy was kept when it left).
#[derive(Debug, Clone)]
struct Kept {
    state: RoomState,
    audit: Vec<AuditEntry>,
    staff_history: Vec<Shown>,
    copy: Vec<Shown>,
}

async fn kept(staff: &ChatClient, keeper: &ChatClient, room: RoomId) -> Kept {
    let conversation = keeper.chat_manager().get_conversation(&room);
    let copy = retry(|| conversation.load_messages(None, 400))
        .await
        .unwrap_or_else(|e| panic!("{}'s local copy: {e}", keeper.current_user_id()));
    let mut copy = shown(&copy);
    copy.reverse();
    Kept {
        state: room_state(staff, room).await,
        audit: audit_log(staff, room).await,
        staff_history: shown(&history(staff, room).await),
        copy,
    }
}

/// What changed between `before` and `after` a failover (the audit log may have grown, history
/// moved on; what is still retained must be as it was).
fn kept_faults(before: &Kept, after: &Kept, what: &str) -> Vec<String> {
    let mut bad = Vec::new();
    if before.state != after.state {
        bad.push(format!(
            "{what}: the room's state changed:\n  before {:?}\n  after  {:?}",
            before.state, after.state
        ));
    }
    if after.audit.len() < before.audit.len() || after.audit[..before.audit.len()] != before.audit {
        bad.push(format!(
            "{what}: the audit log changed: {} entries before, {} after; first difference {:?}",
            before.audit.len(),
            after.audit.len(),
            before.audit.iter().zip(&after.audit).find(|(x, y)| x != y)
        ));
    }
    let oldest = after.staff_history.first().map_or(0, |m| m.0);
    let retained: Vec<&Shown> = before
        .staff_history
        .iter()
        .filter(|m| m.0 >= oldest)
        .collect();
    let now: Vec<&Shown> = after.staff_history.iter().take(retained.len()).collect();
    if retained != now {
        bad.push(format!(
            "{what}: retained messages changed: first difference {:?}",
            retained.iter().zip(&now).find(|(x, y)| x != y)
        ));
    }
    let copy_now: Vec<&Shown> = after.copy.iter().filter(|m| m.0 >= oldest).collect();
    let copy_was: Vec<&Shown> = before.copy.iter().filter(|m| m.0 >= oldest).collect();
    if copy_now != copy_was {
        bad.push(format!(
            "{what}: the kept local copy changed: before {:?}, after {:?}",
            copy_was.iter().map(|m| m.0).collect::<Vec<_>>(),
            copy_now.iter().map(|m| m.0).collect::<Vec<_>>()
        ));
    }
    bad
}

/// How many entries `room`'s log holds (a harness check through the cluster crate, so that
/// the test knows compaction happened).
async fn log_entries(server: &NatsServer, cluster: &str, room: RoomId) -> usize {
    let observer = roomcast_cluster::Cluster::connect(
        ClusterConfig::new([server.url()], cluster, "observer").with_lease_ttl(LEASE_TTL),
    )
    .await
    .unwrap();
    observer.replay(room.as_u64(), 0).await.unwrap().len()
}

/// Which of `nodes` runs `room` now (its actor in memory), if exactly one.
fn owner_of<'a>(nodes: &[(&'a str, &'a Engine)]) -> Option<&'a str> {
    let awake: Vec<&str> = nodes
        .iter()
        .filter(|(_, n)| n.rooms_in_memory() > 0)
        .map(|(id, _)| *id)
        .collect();
    (awake.len() == 1).then(|| awake[0])
}

/// Idempotent sends: the key, and the (seq, id) the first answer gave.
type Keys = Arc<Mutex<Vec<(String, u64, MessageId)>>>;

/// A sender with an idempotency key on each message; records what was acknowledged.
fn keyed_sender(
    client: ChatClient,
    room: RoomId,
    tag: String,
    acked: Acked,
    keys: Keys,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let text = format!("{tag} {n} {}", "k".repeat(180));
            let key = format!("{tag}-{n}");
            let m = OutgoingMessage::text(room, text.clone()).with_idempotency_key(key.clone());
            match client.chat_manager().send_message(m).await {
                Ok(m) => {
                    acked.lock().push((m.seq(), m.msg_id(), text));
                    keys.lock().push((key, m.seq(), m.msg_id()));
                    n += 1;
                }
                Err(e) if e.code() == 900 => break,
                Err(e) => {
                    assert!(e.is_delivery_failure(), "{tag}: {e}");
                    // The same key again: its first answer if it was stored.
                    let_pass(Duration::from_millis(20)).await;
                }
            }
        }
    })
}

/// A room's log compacted every few KiB (`compaction_bytes` 8 KiB, retention 60), busy with
/// senders on three nodes (one with idempotency keys), with moderation state (an admin on b and
/// one on c, a timed mute, a timed block, a shadow ban, pins, an announcement, mutes toggled
/// all along), attributes (versions, an overwrite, a key deleted when its owner left) and a
/// local copy kept on exit (`delete_messages_on_exit(false)`, two spans). Then the owner (a)
/// is dropped under traffic, then the next owner. Promise (`docs/cluster.md`, "Compaction",
/// "Acked means durable"): after each failover nothing acknowledged is lost, history has no
/// gaps, the state, the audit log, the retained messages and the kept copy are as they were,
/// idempotent retries return their first answers, and attribute versions and owners hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_keeps_the_whole_room_across_two_failovers() {
    let server = server!();
    let limits = harness_limits().with_history_retention(60);
    let mk = |id: &'static str| {
        let (url, limits) = (server.url(), limits.clone());
        async move {
            node_conf(
                url,
                "compact3",
                id,
                |c| c.with_compaction_bytes(8 << 10),
                move |x| x.limits(limits),
            )
            .await
        }
    };
    let a = mk("a").await;
    let b = mk("b").await;
    let c = mk("c").await;
    let (host, room) = room_on(&a, "compact3").await;
    let hr = host.chat_room_manager().with_reason("review");
    let adm_b = b.login("admb").await.unwrap();
    let adm_c = c.login("admc").await.unwrap();
    for u in [&adm_b, &adm_c] {
        join(u, room).await;
        hr.add_chat_room_admin(&room, u.current_user_id().as_str())
            .await
            .unwrap();
    }
    let keep = ChatOptions::default().with_delete_messages_on_exit(false);
    let keeper = a.login_with_options("keeper", keep).await.unwrap();
    join(&keeper, room).await;
    let mut users = BTreeMap::new();
    for (n, id) in [
        (&c, "m1"),
        (&c, "m2"),
        (&b, "bl"),
        (&c, "troll"),
        (&b, "attrb"),
        (&c, "attrc"),
    ] {
        let u = n.login(id).await.unwrap();
        join(&u, room).await;
        users.insert(id, u);
    }
    // Attributes: k1 at version 3, k2 overwritten by admb, c1 deleted when attrc leaves.
    let ab = users["attrb"].chat_room_manager();
    for v in ["v1", "v2", "v3"] {
        let f = ab
            .set_chat_room_attributes(&room, SetAttributes::new([("k1", v)]))
            .await
            .unwrap();
        assert!(f.is_empty(), "{f:?}");
    }
    let f = ab
        .set_chat_room_attributes(&room, SetAttributes::new([("k2", "b2")]))
        .await
        .unwrap();
    assert!(f.is_empty(), "{f:?}");
    let ac = users["attrc"].chat_room_manager();
    for (who, set) in [
        (
            &ac,
            SetAttributes::new([("c1", "gone")]).with_delete_when_left(true),
        ),
        (&ac, SetAttributes::new([("c2", "stays")])),
        (
            &adm_b.chat_room_manager(),
            SetAttributes::new([("k2", "forced")]).with_overwrite(true),
        ),
    ] {
        let f = who.set_chat_room_attributes(&room, set).await.unwrap();
        assert!(f.is_empty(), "{f:?}");
    }
    // Moderation.
    hr.mute_chat_room_members(&room, ["m1"], Duration::from_secs(3600))
        .await
        .unwrap();
    hr.block_chat_room_members_for(&room, ["bl"], Duration::from_secs(3600))
        .await
        .unwrap();
    hr.shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    hr.update_chat_room_announcement(&room, "compacted")
        .await
        .unwrap();
    // Traffic: a sender per node, one with idempotency keys, a troll, mutes toggled.
    let acked: Acked = Default::default();
    let keys: Keys = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (n, id) in [(&a, "sa"), (&c, "sc")] {
        let s = n.login(id).await.unwrap();
        join(&s, room).await;
        tasks.push(sender(
            s,
            room,
            format!("{id} {}", "x".repeat(180)),
            acked.clone(),
            stop.clone(),
            Duration::ZERO,
            &[],
        ));
    }
    let sk = b.login("sk").await.unwrap();
    join(&sk, room).await;
    let keyed = keyed_sender(
        sk.clone(),
        room,
        "sk".into(),
        acked.clone(),
        keys.clone(),
        stop.clone(),
    );
    for i in 0..10 {
        send_ok(&users["troll"], room, &format!("troll {i}")).await;
        let rc = adm_c.chat_room_manager().with_reason(format!("toggle {i}"));
        retry(|| rc.mute_chat_room_members(&room, ["m2"], MuteDuration::Forever))
            .await
            .unwrap();
        let_pass(Duration::from_millis(50)).await;
        retry(|| rc.unmute_chat_room_members(&room, ["m2"]))
            .await
            .unwrap();
    }
    wait_acked("600 messages", &acked, 600).await;
    // The keeper's copy: two spans near the end (within retention).
    leave(&users["attrc"], room).await;
    for step in ["leave", "join", "leave"] {
        let n = acked.lock().len();
        wait_acked("10 more", &acked, n + 10).await;
        if step == "leave" {
            leave(&keeper, room).await;
        } else {
            join(&keeper, room).await;
        }
    }
    let n = acked.lock().len();
    wait_acked("10 more", &acked, n + 10).await;
    let newest = acked.lock().iter().map(|x| x.0).max().unwrap();
    for seq in [newest - 5, newest - 2] {
        hr.pin_chat_room_message(&room, seq).await.unwrap();
    }
    let entries = log_entries(&server, "compact3", room).await;
    let before = kept(&adm_b, &keeper, room).await;
    assert_eq!(
        before.state.attributes.get("c1"),
        None,
        "c1 went with attrc"
    );
    assert_eq!(before.state.attributes.len(), 3, "{:?}", before.state);
    assert!(!before.copy.is_empty(), "the keeper's copy is empty");
    eprintln!(
        "before the failovers: {} messages, {} audit entries, {entries} log entries",
        acked.lock().len(),
        before.audit.len()
    );
    assert!(
        entries < 200,
        "the log holds {entries} entries for some 650 writes: it was not compacted"
    );

    let mut bad = Vec::new();
    // Failover 1: a dies under traffic.
    drop((host, hr, keeper));
    drop(a);
    let n = acked.lock().len();
    wait_acked("40 messages after a died", &acked, n + 40).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    keyed.await.unwrap();
    let keeper_b = b
        .login_with_options(
            "keeper",
            ChatOptions::default().with_delete_messages_on_exit(false),
        )
        .await
        .unwrap();
    let mid = kept(&adm_b, &keeper_b, room).await;
    bad.extend(kept_faults(&before, &mid, "after the first failover"));
    let h = history(&adm_b, room).await;
    let snapshot = acked.lock().clone();
    bad.extend(history_faults(
        &h.iter()
            .filter(|m| !m.is_shadowed())
            .cloned()
            .collect::<Vec<_>>(),
        &snapshot,
        &BTreeSet::new(),
        "after the first failover",
    ));

    // More traffic on the new owner, then it dies too.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (n, id) in [(&b, "sb2"), (&c, "sc2")] {
        let s = n.login(id).await.unwrap();
        join(&s, room).await;
        tasks.push(sender(
            s,
            room,
            format!("{id} {}", "y".repeat(180)),
            acked.clone(),
            stop.clone(),
            Duration::ZERO,
            &[],
        ));
    }
    let n = acked.lock().len();
    wait_acked("200 messages on the new owner", &acked, n + 200).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let owner = owner_of(&[("b", &b), ("c", &c)]);
    eprintln!("the room's owner after the first failover: {owner:?}");
    let (survivor, staff, gone) = match owner {
        Some("c") => (b, adm_b, c),
        _ => (c, adm_c, b),
    };
    let keeper_s = survivor
        .login_with_options(
            "keeper",
            ChatOptions::default().with_delete_messages_on_exit(false),
        )
        .await
        .unwrap();
    let before2 = kept(&staff, &keeper_s, room).await;
    drop(gone);
    let m = send_ok(&staff, room, "after the second failover").await;
    let after2 = kept(&staff, &keeper_s, room).await;
    bad.extend(kept_faults(&before2, &after2, "after the second failover"));
    let h = history(&staff, room).await;
    let snapshot = acked.lock().clone();
    bad.extend(history_faults(
        &h.iter()
            .filter(|m| !m.is_shadowed())
            .cloned()
            .collect::<Vec<_>>(),
        &snapshot,
        &BTreeSet::new(),
        "after the second failover",
    ));
    let last_acked = snapshot.iter().map(|x| x.0).max().unwrap();
    if m.seq() != last_acked + 1 {
        bad.push(format!(
            "the first message after the second failover is {}, the last acknowledged {last_acked}",
            m.seq()
        ));
    }
    // Idempotent retries (from the survivor) return their first answers.
    let retry_client = survivor.login("sk").await.unwrap();
    let recent: Vec<_> = keys.lock().iter().rev().take(5).cloned().collect();
    for (key, seq, id) in recent {
        let msg = OutgoingMessage::text(room, "retry").with_idempotency_key(key.clone());
        let chat = retry_client.chat_manager();
        match retry(|| chat.send_message(msg.clone())).await {
            Ok(m) if (m.seq(), m.msg_id()) == (seq, id) => {}
            other => bad.push(format!(
                "retry of {key} (first {seq}): {:?}",
                other.map(|m| (m.seq(), m.msg_id())).map_err(|e| e.code())
            )),
        }
    }
    // Attribute versions and owners.
    let attr_b = survivor.login("attrb").await.unwrap();
    join(&attr_b, room).await;
    let ab = attr_b.chat_room_manager();
    let stale = ab
        .set_chat_room_attributes(
            &room,
            SetAttributes::new([("k1", "v?")]).if_version("k1", 2),
        )
        .await
        .unwrap();
    let fresh = ab
        .set_chat_room_attributes(
            &room,
            SetAttributes::new([("k1", "v4")]).if_version("k1", 3),
        )
        .await
        .unwrap();
    let owned = ab
        .set_chat_room_attributes(&room, SetAttributes::new([("k2", "mine")]))
        .await
        .unwrap();
    if stale.is_empty() || !fresh.is_empty() || owned.is_empty() {
        bad.push(format!(
            "attributes after two failovers: version 2 set {:?}, version 3 set {:?}, admb's k2 \
             without overwrite {:?}",
            stale.into_map(),
            fresh.into_map(),
            owned.into_map()
        ));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    survivor.shutdown().await;
}

/// Big messages (4,000 bytes) in a room that retains 300 of them (a snapshot of over 1 MiB:
/// more than one NATS message, so it goes in parts) with a small `compaction_bytes` (64 KiB);
/// senders on three nodes, each node behind its own proxy, an observer on each. Four times, the
/// node that runs the room is cut off from NATS for 2.5 s (past its lease) and comes back.
/// Promise (`docs/cluster.md`, "Compaction": "A snapshot whose parts did not all make it (its
/// writer died midway) is ignored by readers, and nothing before it was purged"; "Acked means
/// durable"; "Members see only what the log holds"): nothing acknowledged (and still retained)
/// is lost, history has no gaps, the mute and the attribute set before are intact, and no
/// observer got live a message history does not hold under that seq. (The order of what the
/// observers got is printed, not checked: the next test shows what goes wrong with it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn multi_part_snapshots_and_owner_cuts() {
    let server = server!();
    let limits = harness_limits().with_history_retention(300);
    let proxies = [
        Proxy::start(server.port()).await,
        Proxy::start(server.port()).await,
        Proxy::start(server.port()).await,
    ];
    let mut nodes = Vec::new();
    for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
        let limits = limits.clone();
        nodes.push(
            node_conf(
                proxies[i].url(),
                "parts",
                id,
                |c| c.with_compaction_bytes(64 << 10),
                move |x| x.limits(limits),
            )
            .await,
        );
    }
    let (host, room) = room_on(&nodes[0], "parts").await;
    let hr = host.chat_room_manager();
    let muted = nodes[1].login("muted").await.unwrap();
    join(&muted, room).await;
    hr.mute_chat_room_members(&room, ["muted"], MuteDuration::Forever)
        .await
        .unwrap();
    let f = hr
        .set_chat_room_attributes(&room, SetAttributes::new([("topic", "parts")]))
        .await
        .unwrap();
    assert!(f.is_empty(), "{f:?}");
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut observers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let o = n.login(format!("o{i}")).await.unwrap();
        join(&o, room).await;
        observers.push((format!("o{i}"), Seen::of(&o), o));
        let s = n.login(format!("s{i}")).await.unwrap();
        join(&s, room).await;
        tasks.push(sender(
            s,
            room,
            format!("s{i} {}", "z".repeat(4000)),
            acked.clone(),
            stop.clone(),
            Duration::ZERO,
            &[],
        ));
    }
    let ids = ["a", "b", "c"];
    let mut cuts = Vec::new();
    let start = ms();
    for round in 0..4 {
        let n = acked.lock().len();
        wait_acked("350 messages", &acked, n + 350 + 60 * round).await;
        let pairs: Vec<(&str, &Engine)> = ids.iter().copied().zip(nodes.iter()).collect();
        let Some(owner) = owner_of(&pairs) else {
            cuts.push(format!("round {round}: owner unclear"));
            continue;
        };
        let k = ids.iter().position(|x| *x == owner).unwrap();
        let cut_at = ms();
        proxies[k].cut();
        let_pass(Duration::from_millis(2500)).await;
        proxies[k].heal();
        cuts.push(format!(
            "round {round}: {owner} cut from {cut_at} ms to {} ms (test start {start} ms)",
            ms()
        ));
    }
    let n = acked.lock().len();
    wait_acked("100 messages after the last cut", &acked, n + 100).await;
    stop.store(true, Ordering::Relaxed);
    let mut stalls = Vec::new();
    for t in tasks {
        // A call as long as the call timeout (30 s) stalled: a fault, not a cut (a cut's
        // calls end within a few request timeouts).
        let log = t.await.unwrap();
        let (took, began) = log.slowest;
        if took >= 20_000 {
            stalls.push(format!("a send took {took} ms, from {began} ms"));
        }
    }
    let end = send_ok(&observers[0].2, room, "the end").await;
    let acked = acked.lock().clone();
    // Each gets the end, or is told where the room stands if its node was still away from
    // NATS when the end was published (live delivery is at most once); then a message sent
    // once every node is back comes live to each.
    let mut bad = stalls;
    for (who, seen, _) in &observers[1..] {
        if !seen.gets_or_is_told_within(end.seq(), DEADLINE).await {
            bad.push(format!(
                "{who} neither gets the end nor is told where the room stands"
            ));
        }
    }
    let again = send_ok(&observers[0].2, room, "once more").await;
    for (who, seen, _) in &observers[1..] {
        seen.wait_seq(&format!("{who} gets a message after the end"), again.seq())
            .await;
    }
    let h = history(&observers[1].2, room).await;
    bad.extend(history_faults(&h, &acked, &BTreeSet::new(), "history"));
    if h.last().map(ChatMessage::seq) != Some(again.seq()) {
        bad.push(format!(
            "history ends at {:?}, the last message is {}",
            h.last().map(ChatMessage::seq),
            again.seq()
        ));
    }
    for (who, seen, _) in &observers {
        for p in seen.phantoms(&h).into_iter().take(3) {
            bad.push(format!("{who}: {p}"));
        }
        // Order across the cuts is the next test's: here it is only reported.
        let faults = seen.order_faults(&[end.seq()].into());
        if !faults.is_empty() {
            eprintln!(
                "{who}: order faults {:?}; around the first reversal: {:?}",
                &faults[..faults.len().min(3)],
                seen.around_first_reversal()
            );
        }
    }
    match send(&muted, room, "free?").await {
        Err(e) if e.code() == 215 => {}
        other => bad.push(format!(
            "the muted member's send: {:?}",
            other.map(|m| m.seq()).map_err(|e| e.code())
        )),
    }
    let o2 = observers[2].2.chat_room_manager();
    let attrs = retry(|| o2.fetch_all_chat_room_attributes(&room)).await;
    if !bad.is_empty() {
        bad.push(format!("cuts: {cuts:?}"));
        let mut max_by_sender = BTreeMap::new();
        for (seq, _, text) in &acked {
            let tag = text.split(' ').next().unwrap_or_default().to_string();
            let e = max_by_sender.entry(tag).or_insert((0, 0));
            e.0 += 1;
            e.1 = e.1.max(*seq);
        }
        bad.push(format!(
            "acknowledged per sender (count, newest seq): {max_by_sender:?}"
        ));
    }
    eprintln!(
        "{} messages; {cuts:?}; attributes {attrs:?}; recoveries {:?}",
        acked.len(),
        observers
            .iter()
            .map(|(w, s, _)| (w.clone(), s.recoveries()))
            .collect::<Vec<_>>()
    );
    if attrs
        .as_ref()
        .ok()
        .and_then(|m| m.get("topic"))
        .map(String::as_str)
        != Some("parts")
    {
        bad.push(format!("attributes: {attrs:?}"));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    for n in nodes {
        n.shutdown().await;
    }
}

// ------------------------------------------------------------------------------------------
// 4. History pages in parts
// ------------------------------------------------------------------------------------------

/// A walk through a room's history: each page's messages and cursor.
type Walk = Vec<(Vec<Shown>, Option<u64>)>;

/// Walks `room`'s history as `client` sees it, pages of `size`: newest first (`newest`, then
/// `before` the cursor) or oldest first (`after(0)`, then `after` the cursor), until there is
/// no cursor (at most 100 pages).
async fn walk(client: &ChatClient, room: RoomId, size: u32, newest_first: bool) -> Walk {
    let chat = client.chat_manager();
    let mut pages = Vec::new();
    let mut query = if newest_first {
        HistoryQuery::newest(size)
    } else {
        HistoryQuery::after(0, size)
    };
    for _ in 0..100 {
        let page = retry(|| chat.fetch_history_messages(&room, query))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{}: a page of {size} ({}): {e}",
                    client.current_user_id(),
                    if newest_first { "before" } else { "after" }
                )
            });
        let cursor = page.cursor;
        pages.push((shown(&page.data), cursor));
        match cursor {
            Some(c) if newest_first => query = HistoryQuery::before(c, size),
            Some(c) => query = HistoryQuery::after(c, size),
            None => break,
        }
    }
    pages
}

/// Messages of 600 KiB (with `message_max_bytes` 900 KiB: each fits one NATS message, two do
/// not; a whole walk's page under 4 MiB, see the next test) mixed with small ones, a shadow-banned member's big and small messages, and a big one
/// deleted by an admin. A member on b and one on the owner's node a, an admin on c and the
/// owner on a walk the history in pages of 1, 2, 3 and 200, newest first and oldest first.
/// Promise (`docs/cluster.md`, "Limits": "A history page that does not fit comes in parts";
/// `docs/semantics.md`, "History": "walking pages returns every retained message once"; shadow
/// bans: "History pages skip them and still hold `page_size` messages when there are that
/// many"): each walk from another node is the same, page for page and cursor for cursor, as the
/// same kind of viewer's on the owner's node; it returns each message the viewer may see once,
/// in order; every page but the last is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_pages_of_big_messages_from_other_nodes_match_the_owners() {
    let server = server!();
    let limits = harness_limits().with_message_max_bytes(900 << 10);
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        let limits = limits.clone();
        nodes.push(node_at(server.url(), "pages", id, move |x| x.limits(limits)).await);
    }
    let (host, room) = room_on(&nodes[0], "pages").await;
    let ma = nodes[0].login("ma").await.unwrap();
    let mb = nodes[1].login("mb").await.unwrap();
    let adm = nodes[2].login("adm").await.unwrap();
    let troll = nodes[2].login("troll").await.unwrap();
    for u in [&ma, &mb, &adm, &troll] {
        join(u, room).await;
    }
    let hr = host.chat_room_manager();
    hr.add_chat_room_admin(&room, "adm").await.unwrap();
    hr.shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    let big = |c: char| c.to_string().repeat(600 << 10);
    // (who, text): B = big, s = small.
    let plan: Vec<(&ChatClient, String)> = vec![
        (&ma, "small 1".into()),
        (&mb, big('A')),
        (&troll, big('T')),
        (&ma, "small 2".into()),
        (&mb, big('B')),
        (&host, big('D')),
        (&troll, "troll small".into()),
        (&ma, big('C')),
        (&troll, big('U')),
        (&mb, "small 3".into()),
        (&ma, big('E')),
        (&host, "small 4".into()),
    ];
    let mut sent = Vec::new();
    for (who, text) in &plan {
        sent.push(send_ok(who, room, text).await);
    }
    let deleted = sent[5].seq();
    adm.chat_room_manager()
        .delete_chat_room_message(&room, deleted)
        .await
        .unwrap();
    let mut bad = Vec::new();
    let shadowed: BTreeSet<u64> = sent
        .iter()
        .filter(|m| m.from().as_str() == "troll")
        .map(ChatMessage::seq)
        .collect();
    for (kind, remote, local, sees_shadowed) in
        [("member", &mb, &ma, false), ("staff", &adm, &host, true)]
    {
        let visible: Vec<u64> = sent
            .iter()
            .map(ChatMessage::seq)
            .filter(|s| sees_shadowed || !shadowed.contains(s))
            .collect();
        for size in [1u32, 2, 3, 200] {
            for newest_first in [true, false] {
                let what = format!(
                    "{kind}, pages of {size}, {}",
                    if newest_first {
                        "newest first"
                    } else {
                        "oldest first"
                    }
                );
                let there = walk(remote, room, size, newest_first).await;
                let here = walk(local, room, size, newest_first).await;
                if there != here {
                    let d = there.iter().zip(&here).position(|(x, y)| x != y);
                    bad.push(format!(
                        "{what}: from another node {} pages, on the owner's {}; first different \
                         page {d:?}: {:?} vs {:?}",
                        there.len(),
                        here.len(),
                        d.and_then(|d| there.get(d))
                            .map(|p| (p.0.iter().map(|m| m.0).collect::<Vec<_>>(), p.1)),
                        d.and_then(|d| here.get(d))
                            .map(|p| (p.0.iter().map(|m| m.0).collect::<Vec<_>>(), p.1)),
                    ));
                }
                let mut seqs: Vec<u64> =
                    there.iter().flat_map(|p| p.0.iter().map(|m| m.0)).collect();
                if newest_first {
                    seqs.reverse();
                }
                if seqs != visible {
                    bad.push(format!(
                        "{what}: the walk from another node returned {seqs:?}, not {visible:?}"
                    ));
                }
                let short = there
                    .iter()
                    .rev()
                    .skip(1)
                    .filter(|p| p.0.len() != size as usize)
                    .count();
                if short > 0 {
                    bad.push(format!(
                        "{what}: {short} pages before the last not full: {:?}",
                        there.iter().map(|p| p.0.len()).collect::<Vec<_>>()
                    ));
                }
                for (seq, _, text, is_shadowed, recalled) in there.iter().flat_map(|p| &p.0) {
                    let original = sent.iter().find(|m| m.seq() == *seq).unwrap();
                    let want_text = if *seq == deleted {
                        Some("")
                    } else {
                        original.text()
                    };
                    if text.as_deref() != want_text
                        || *is_shadowed != (sees_shadowed && shadowed.contains(seq))
                        || *recalled != (*seq == deleted)
                    {
                        bad.push(format!(
                            "{what}: seq {seq} came with {} bytes, shadowed {is_shadowed}, \
                             recalled {recalled}",
                            text.as_ref().map_or(0, String::len)
                        ));
                    }
                }
            }
        }
    }
    bad.dedup();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    for n in nodes {
        n.shutdown().await;
    }
}

/// Messages of 99,000 bytes (`message_max_bytes` 100,000, each well inside one NATS message):
/// 45 of them, some 4.4 MB. A member joining on the owner's node a, with a join replay count of
/// 45, gets all 45; a member joining on node b; then each fetches a history page of 45 (within
/// `history_page_max`). Promise (`docs/semantics.md`, "Replay on join": "A member who joins
/// receives the room's newest `join_replay_count` messages before anything newer, in one
/// batch"; `docs/cluster.md`, "Limits": "A history page that does not fit comes in parts (each
/// asked for from the cursor of the one before)"): node b's member gets the same replay and the
/// same page as node a's.
///
/// This failed (3 of 3) while a delivery or an answer over the record limit (4 MiB) was not
/// split: the replay never came to b, and the page failed with 903 after 8 s. Now both come in
/// parts, and b's member gets its replay at once, with its last part.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_and_a_page_over_four_mib_reach_another_node() {
    let server = server!();
    let limits = harness_limits()
        .with_message_max_bytes(100_000)
        .with_join_replay_count(45);
    let mut nodes = Vec::new();
    for id in ["a", "b"] {
        let limits = limits.clone();
        nodes.push(node_at(server.url(), "fourmib", id, move |x| x.limits(limits)).await);
    }
    let (host, room) = room_on(&nodes[0], "fourmib").await;
    for i in 0..45 {
        send_ok(&host, room, &format!("{i:03}{}", "x".repeat(99_000))).await;
    }
    let mut report = Vec::new();
    for (id, n) in [("a", &nodes[0]), ("b", &nodes[1])] {
        let m = n.login(format!("m{id}")).await.unwrap();
        let seen = Seen::of(&m);
        let batches = Batches::of(&m);
        let joined = m.chat_room_manager().join_chat_room(&room).await.is_ok();
        let replayed = seen.gets_within(45, Duration::from_secs(3)).await;
        let started = Instant::now();
        let page = m
            .chat_manager()
            .fetch_history_messages(&room, HistoryQuery::newest(45))
            .await
            .map(|p| p.data.len())
            .map_err(|e| e.to_string());
        report.push((
            id,
            joined,
            replayed,
            batches.all().iter().map(Vec::len).collect::<Vec<_>>(),
            page,
            started.elapsed(),
        ));
    }
    eprintln!("(node, joined, replayed, batches, page, page took): {report:?}");
    for (id, joined, replayed, batches, page, _) in &report {
        assert!(
            *joined && *replayed && batches.first() == Some(&45) && page == &Ok(45),
            "node {id}: {report:?}"
        );
    }
    for n in nodes {
        n.shutdown().await;
    }
}

// ------------------------------------------------------------------------------------------
// 5. Rejoins after a takeover
// ------------------------------------------------------------------------------------------

/// Watches for two leases whether any of `users` is listed in `room` (through `viewer`) or has
/// a send accepted; returns what it saw.
async fn back_in(viewer: &ChatClient, room: RoomId, users: &[(&str, &ChatClient)]) -> Vec<String> {
    let mut listed = BTreeMap::new();
    let mut accepted: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let since = Instant::now();
    while since.elapsed() < 2 * LEASE_TTL {
        let now = members(viewer, room).await;
        for (who, u) in users {
            if now.iter().any(|m| m == who) {
                *listed.entry(*who).or_insert(0) += 1;
            }
            if let Ok(m) = send(u, room, "am I in?").await {
                accepted.entry(who).or_default().push(m.seq());
            }
        }
        let_pass(Duration::from_millis(100)).await;
    }
    let mut out = Vec::new();
    for (who, n) in listed {
        out.push(format!("{who} listed in {n} looks"));
    }
    for (who, seqs) in accepted {
        out.push(format!(
            "{who}'s sends accepted {} times (first as seq {})",
            seqs.len(),
            seqs[0]
        ));
    }
    out
}

/// Members on b and c (c behind a proxy); one of c's left and one of b's was kicked before
/// anything happened. c is cut off from NATS; the owner (a) is dropped; b takes the room; c
/// comes back three seconds later. Promise (`docs/cluster.md`, "Outages": "The first actor
/// after a takeover takes back every member a node tells it of, however late"; "Taking a
/// room": "those members get `on_chat_room_recovered`"): c's two members are members again
/// (listed, can send, get the room live, told it recovered); the member that left and the one
/// kicked before stay out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_tells_the_new_owner_late_gets_its_members_back() {
    let server = server!();
    let pc = Proxy::start(server.port()).await;
    let a = node(&server, "late", "a").await;
    let b = node(&server, "late", "b").await;
    let c = node_at(pc.url(), "late", "c", |x| x).await;
    let (host, room) = room_on(&a, "late").await;
    let b1 = b.login("b1").await.unwrap();
    let kicked = b.login("kicked").await.unwrap();
    let c1 = c.login("c1").await.unwrap();
    let c2 = c.login("c2").await.unwrap();
    let left = c.login("left").await.unwrap();
    for u in [&b1, &kicked, &c1, &c2, &left] {
        join(u, room).await;
    }
    leave(&left, room).await;
    host.chat_room_manager()
        .remove_chat_room_members(&room, ["kicked"])
        .await
        .unwrap();
    let seen_c1 = Seen::of(&c1);
    let seen_c2 = Seen::of(&c2);
    let first = send_ok(&b1, room, "before").await;
    seen_c1.wait_seq("c1 gets the first", first.seq()).await;
    pc.cut();
    let cut_at = Instant::now();
    drop(host);
    drop(a);
    let took = send_ok(&b1, room, "b took the room").await;
    while cut_at.elapsed() < Duration::from_secs(3) {
        send_ok(&b1, room, "meanwhile").await;
        let_pass(Duration::from_millis(100)).await;
    }
    pc.heal();
    let mut bad = Vec::new();
    for (who, u, seen) in [("c1", &c1, &seen_c1), ("c2", &c2, &seen_c2)] {
        let end = Instant::now() + DEADLINE;
        let mut live = false;
        while !live && Instant::now() < end {
            let m = send_ok(&b1, room, "after the heal").await;
            live = seen.gets_within(m.seq(), Duration::from_millis(200)).await;
        }
        if !live {
            bad.push(format!("{who} never gets the room live again"));
        }
        if !seen
            .event_within(ChatRoomEvent::is_recovery, Duration::from_secs(3))
            .await
        {
            bad.push(format!("{who} not told the room recovered"));
        }
        if let Err(e) = retry(|| send(u, room, "back")).await {
            bad.push(format!("{who}'s send after the heal: {e}"));
        }
        if !members(&b1, room).await.iter().any(|m| m == who) {
            bad.push(format!("{who} not listed after the heal"));
        }
    }
    let back = back_in(&b1, room, &[("left", &left), ("kicked", &kicked)]).await;
    if !back.is_empty() {
        bad.push(format!(
            "left or kicked before, back after the takeover: {back:?}"
        ));
    }
    eprintln!("b took the room at seq {}", took.seq());
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    b.shutdown().await;
    c.shutdown().await;
}

/// The nodes share a ManualClock. Node c (behind a proxy) has three members of a room owned by
/// a: an admin (exempt from the offline rule), `gone` and `kicked`. c is cut off; the owner
/// counts c's members offline; the owner kicks `kicked` (c does not hear of it); the grace
/// period passes (the clock moves ten minutes) and the owner removes `gone` as offline (the
/// host sees it exit). Then the owner (a) is dropped, b takes the room (a member of b sends),
/// and c comes back. Promise (`docs/cluster.md`, "Outages": "one removed as offline, because
/// its node was away past the grace period, is told `on_removed_from_chat_room` with
/// `Offline`"; `docs/semantics.md`: removed members are out until they join again, a kicked
/// one is told `Kicked`): the admin is restored; `gone` and `kicked` stay out (not listed,
/// their sends refused with 702) and are told why.
///
/// The docs also say "The first actor after a takeover takes back every member a node tells it
/// of, however late (membership is not in the log)": that rule, read literally, brings both
/// back, since c never heard of their removal; the two sentences contradict each other here.
///
/// Fixed: a member's departures are in the room's log (`roomcast_store::Departure`), marked
/// with the owner's term and a count; each session remembers the mark at which the room last
/// confirmed it; a new owner keeps out (and tells why) a member whose departure came after the
/// mark its node reports. It was observed (7 runs of 7) that both were back, silently: "listed ["adm", "b1", "gone", "kicked"];
/// gone's sends accepted 19 times (first as seq 3), kicked's 19 times (first as seq 4); gone
/// told [], kicked told []". Neither ever learns it was removed, and the other members saw
/// them exit and never saw them join again. (Without the takeover, the same removals hold:
/// `tests/cluster_review2.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_removed_while_their_node_was_away_stay_out_after_a_takeover() {
    let server = server!();
    let pc = Proxy::start(server.port()).await;
    let clock = ManualClock::new(1_700_000_000_000);
    let mk = |id: &'static str, url: String| {
        let clock = clock.clone();
        async move { node_at(url, "removed", id, move |x| x.clock(clock)).await }
    };
    let a = mk("a", server.url()).await;
    let b = mk("b", server.url()).await;
    let c = mk("c", pc.url()).await;
    let (host, room) = room_on(&a, "removed").await;
    let host_seen = Seen::of(&host);
    let b1 = b.login("b1").await.unwrap();
    let adm = c.login("adm").await.unwrap();
    let gone = c.login("gone").await.unwrap();
    let kicked = c.login("kicked").await.unwrap();
    for u in [&b1, &adm, &gone, &kicked] {
        join(u, room).await;
    }
    host.chat_room_manager()
        .add_chat_room_admin(&room, "adm")
        .await
        .unwrap();
    let seen_gone = Seen::of(&gone);
    let seen_kicked = Seen::of(&kicked);
    wait_for_presence(&a, room, (5, 5)).await;
    pc.cut();
    wait_for_presence(&a, room, (5, 2)).await;
    host.chat_room_manager()
        .remove_chat_room_members(&room, ["kicked"])
        .await
        .unwrap();
    clock.advance(Duration::from_secs(10 * 60));
    host_seen
        .wait_event("gone removed as offline", |e| is_member_exited(e, "gone"))
        .await;
    wait_for_presence(&a, room, (3, 2)).await;
    drop(host);
    drop(a);
    let took = send_ok(&b1, room, "b took the room").await;
    let_pass(Duration::from_millis(500)).await;
    pc.heal();
    // The admin comes back.
    let restored = retry(|| send(&adm, room, "the admin is back")).await;
    let back = back_in(&b1, room, &[("gone", &gone), ("kicked", &kicked)]).await;
    let told_gone = seen_gone
        .event_within(removed_as(LeaveReason::Offline), Duration::from_secs(2))
        .await;
    let told_kicked = seen_kicked
        .event_within(removed_as(LeaveReason::Kicked), Duration::from_secs(2))
        .await;
    let listed = members(&b1, room).await;
    eprintln!(
        "b took the room at seq {}; after c came back: listed {listed:?}; admin's send {:?}; \
         back: {back:?}; gone told {:?}, kicked told {:?}",
        took.seq(),
        restored.as_ref().map(|m| m.seq()).map_err(|e| e.code()),
        seen_gone
            .room_events()
            .iter()
            .filter_map(is_removed)
            .collect::<Vec<_>>(),
        seen_kicked
            .room_events()
            .iter()
            .filter_map(is_removed)
            .collect::<Vec<_>>(),
    );
    let mut bad = Vec::new();
    if restored.is_err() || !listed.iter().any(|m| m == "adm") {
        bad.push("the admin on c is not back".to_string());
    }
    if !back.is_empty() {
        bad.push(format!(
            "removed while c was away, back after the takeover: {back:?}"
        ));
    }
    if !told_gone {
        bad.push("gone was not told it was removed as offline".into());
    }
    if !told_kicked {
        bad.push("kicked was not told it was kicked".into());
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    b.shutdown().await;
    c.shutdown().await;
}

/// The same, but the cut-off node takes the room itself: c (behind a proxy) has an admin and
/// two members of a room owned by a; c is cut off; the owner kicks `kicked`, and `left`'s other
/// device on a leaves the room (c hears of neither); then a is dropped and c comes back, the
/// only node left: c takes the room over, and its first actor starts from c's own sessions.
/// The admin is back; `kicked` and `left` are out (not listed, sends refused), and `kicked` is
/// told it was kicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_node_that_takes_the_room_keeps_its_departed_members_out() {
    let server = server!();
    let pc = Proxy::start(server.port()).await;
    let a = node(&server, "takesit", "a").await;
    let c = node_at(pc.url(), "takesit", "c", |x| x).await;
    let (host, room) = room_on(&a, "takesit").await;
    let adm = c.login("adm").await.unwrap();
    let kicked = c.login("kicked").await.unwrap();
    let left = c.login("left").await.unwrap();
    for u in [&adm, &kicked, &left] {
        join(u, room).await;
    }
    host.chat_room_manager()
        .add_chat_room_admin(&room, "adm")
        .await
        .unwrap();
    let seen_kicked = Seen::of(&kicked);
    let seen_left = Seen::of(&left);
    wait_for_presence(&a, room, (4, 4)).await;
    pc.cut();
    host.chat_room_manager()
        .remove_chat_room_members(&room, ["kicked"])
        .await
        .unwrap();
    // `left`'s device on a leaves the room (the user leaves on every device).
    let left_on_a = a.login("left").await.unwrap();
    leave(&left_on_a, room).await;
    let listed = members(&host, room).await;
    assert!(
        !listed.iter().any(|m| m == "kicked" || m == "left"),
        "as the owner sees it before it goes: {listed:?}"
    );
    drop(host);
    drop(left_on_a);
    a.shutdown().await;
    pc.heal();
    // The admin is back: c took the room (nobody else can).
    let back_msg = retry(|| send(&adm, room, "the admin is back")).await;
    assert!(back_msg.is_ok(), "the admin on c is not back: {back_msg:?}");
    let back = back_in(&adm, room, &[("kicked", &kicked), ("left", &left)]).await;
    let told_kicked = seen_kicked
        .event_within(removed_as(LeaveReason::Kicked), Duration::from_secs(2))
        .await;
    let listed = members(&adm, room).await;
    let mut bad = Vec::new();
    if !back.is_empty() {
        bad.push(format!(
            "departed while c was away, back after c took the room: {back:?}"
        ));
    }
    if !told_kicked {
        bad.push("kicked was not told it was kicked".into());
    }
    if seen_left.has_event(|e| is_removed(e).is_some()) {
        bad.push("left was told it was removed; it left".into());
    }
    assert!(bad.is_empty(), "listed {listed:?}: {}", bad.join("\n"));
    c.shutdown().await;
}

// ------------------------------------------------------------------------------------------
// 6. Idle rooms
// ------------------------------------------------------------------------------------------

/// Four rooms on node a, each with its owner offline (exempt) and an admin (exempt too): in
/// `remote` the admin is on b and offline; in `left` the admin was on b and left; in `kicked`
/// the admin was on b and was kicked; in `local` the admin is on a and offline. The nodes share
/// a ManualClock, which moves past several idle times. Promise (`docs/cluster.md`, "Idle
/// rooms": "A room with members on other nodes does not hibernate ...; others hibernate as on
/// one node"): only `remote` stays in memory. Then the admin of `left` joins it again through b
/// and the admin of `remote` comes back: both get their room live, and its history is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_rooms_with_members_on_other_nodes_stay_awake() {
    let server = server!();
    let clock = ManualClock::new(1_700_000_000_000);
    let mk = |id: &'static str| {
        let clock = clock.clone();
        let url = server.url();
        async move { node_at(url, "idle", id, move |x| x.clock(clock)).await }
    };
    let a = mk("a").await;
    let b = mk("b").await;
    a.add_super_admin("host").await.unwrap();
    let host = a.login("host").await.unwrap();
    let hr = host.chat_room_manager();
    let mut rooms = BTreeMap::new();
    for (name, admin_node) in [("remote", &b), ("left", &b), ("kicked", &b), ("local", &a)] {
        let room = hr
            .create_chat_room(CreateChatRoomOptions::new(name))
            .await
            .unwrap()
            .room_id;
        let admin = admin_node.login(format!("adm-{name}")).await.unwrap();
        join(&admin, room).await;
        hr.add_chat_room_admin(&room, admin.current_user_id().as_str())
            .await
            .unwrap();
        send_ok(&host, room, &format!("hello {name}")).await;
        rooms.insert(name, (room, admin));
    }
    leave(&rooms["left"].1, rooms["left"].0).await;
    hr.remove_chat_room_members(&rooms["kicked"].0, ["adm-kicked"])
        .await
        .unwrap();
    for name in ["remote", "local"] {
        rooms[name].1.disconnect().unwrap();
    }
    host.disconnect().unwrap();
    for name in ["remote", "local"] {
        wait_for_presence(&a, rooms[name].0, (2, 0)).await;
    }
    // The sweep runs about once a minute of engine time; the default idle time is 5 minutes.
    let deadline = Instant::now() + DEADLINE;
    let mut sweeps = 0;
    while a.rooms_in_memory() > 1 && Instant::now() < deadline {
        clock.advance(Duration::from_secs(61));
        sweeps += 1;
        let_pass(Duration::from_millis(50)).await;
    }
    for _ in 0..3 {
        clock.advance(Duration::from_secs(61));
        let_pass(Duration::from_millis(50)).await;
    }
    let in_memory = a.rooms_in_memory();
    // Which room stayed: the one that answers without waking anything is not telling; wake
    // none, and look at what comes back live.
    host.reconnect().unwrap();
    rooms["remote"].1.reconnect().unwrap();
    let seen_remote = Seen::of(&rooms["remote"].1);
    let back = &rooms["left"].1;
    let seen_back = Seen::of(back);
    join(back, rooms["left"].0).await;
    let mut bad = Vec::new();
    if in_memory != 1 {
        bad.push(format!(
            "after {sweeps} sweeps and 3 more, {in_memory} rooms in memory, not 1 (remote)"
        ));
    }
    for (name, seen) in [("remote", &seen_remote), ("left", &seen_back)] {
        let room = rooms[name].0;
        let m = send_ok(&host, room, "after the sleep").await;
        if !seen.gets_within(m.seq(), Duration::from_secs(3)).await {
            bad.push(format!("{name}: the admin on b does not get the room live"));
        }
        let h = history(&rooms[name].1, room).await;
        let texts: Vec<&str> = h.iter().filter_map(|m| m.text()).collect();
        if texts != [format!("hello {name}").as_str(), "after the sleep"] {
            bad.push(format!("{name}: history {texts:?}"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    a.shutdown().await;
    b.shutdown().await;
}

/// What the owner-cut scenario found: faults of order (live messages going back or repeated),
/// of membership (members that never left refused with 702, or no longer fed), others
/// (history, phantoms), and the cuts made.
#[derive(Debug, Default)]
struct CutReport {
    order: Vec<String>,
    membership: Vec<String>,
    other: Vec<String>,
    cuts: Vec<String>,
}

/// The owner-cut scenario: senders (four per node, without pause) on three nodes, each behind
/// its own proxy, an observer on each; `cuts` times the node that runs the room is cut off for
/// 1.6 s (past its 1 s lease: another node takes the room) and comes back.
async fn owner_cuts_scenario(server: &NatsServer, cluster: &str, cuts: usize) -> CutReport {
    let proxies = [
        Proxy::start(server.port()).await,
        Proxy::start(server.port()).await,
        Proxy::start(server.port()).await,
    ];
    let ids = ["a", "b", "c"];
    let mut nodes = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        nodes.push(node_at(proxies[i].url(), cluster, id, |x| x).await);
    }
    let (_host, room) = room_on(&nodes[0], "cuts").await;
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut observers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let o = n.login(format!("o{i}")).await.unwrap();
        join(&o, room).await;
        observers.push((format!("o{i} (node {})", ids[i]), Seen::of(&o), o));
        for lane in 0..4 {
            let s = n.login(format!("s{i}-{lane}")).await.unwrap();
            join(&s, room).await;
            tasks.push((
                format!("s{i}.{lane}"),
                sender(
                    s,
                    room,
                    format!("s{i}.{lane}"),
                    acked.clone(),
                    stop.clone(),
                    Duration::ZERO,
                    &[702],
                ),
            ));
        }
    }
    let mut log = Vec::new();
    for round in 0..cuts {
        let n = acked.lock().len();
        wait_acked("200 messages", &acked, n + 200).await;
        let pairs: Vec<(&str, &Engine)> = ids.iter().copied().zip(nodes.iter()).collect();
        let Some(owner) = owner_of(&pairs) else {
            log.push(format!("round {round}: owner unclear"));
            continue;
        };
        let k = ids.iter().position(|x| *x == owner).unwrap();
        let cut_at = ms();
        proxies[k].cut();
        let_pass(Duration::from_millis(1600)).await;
        proxies[k].heal();
        log.push(format!("{owner} cut {cut_at}..{} ms", ms()));
    }
    let n = acked.lock().len();
    wait_acked("200 messages after the last cut", &acked, n + 200).await;
    stop.store(true, Ordering::Relaxed);
    let mut out_of_room = Vec::new();
    for (tag, t) in tasks {
        let log = t.await.unwrap();
        if let Some((count, first, last)) = log.codes.get(&702) {
            out_of_room.push(format!(
                "{tag}: 702 {count} times from {first} to {last} ms (last accepted at {} ms)",
                log.last_ok
            ));
        }
    }
    let mut report = CutReport::default();
    if !out_of_room.is_empty() {
        report.membership.push(format!(
            "members that never left were refused as not in the room (702): {out_of_room:?}"
        ));
    }
    // Each observer gets the end live, or is told where the room stands if its node was still
    // away from NATS when the end was published (live delivery is at most once: it fetches
    // the end from history). Then every node is back: a message sent now comes live to each.
    let end = send_ok(&observers[0].2, room, "the end").await;
    let acked = acked.lock().clone();
    let mut fed = Vec::new();
    for (who, seen, _) in &observers[1..] {
        if !seen
            .gets_or_is_told_within(end.seq(), Duration::from_secs(5))
            .await
        {
            report.membership.push(format!(
                "{who} neither gets the last message live nor is told where the room stands"
            ));
        }
        fed.push(seen.seqs().contains(&end.seq()));
    }
    let again = send_ok(&observers[0].2, room, "once more").await;
    for ((who, seen, o), live) in observers[1..].iter().zip(fed) {
        if !seen.gets_within(again.seq(), Duration::from_secs(5)).await {
            report.membership.push(format!(
                "{who} does not get a message live after it is back (the end live: {live}): in the room {:?}, told removed {:?}",
                send(o, room, "in?")
                    .await
                    .map(|m| m.seq())
                    .map_err(|e| e.code()),
                seen.room_events()
                    .iter()
                    .filter_map(is_removed)
                    .collect::<Vec<_>>(),
            ));
        }
    }
    // History after the probes above (an "in?" that went through is in it).
    let h = history(&observers[1].2, room).await;
    report
        .other
        .extend(history_faults(&h, &acked, &BTreeSet::new(), "history"));
    for (who, seen, _) in &observers {
        for p in seen.phantoms(&h).into_iter().take(3) {
            report.other.push(format!("{who}: {p}"));
        }
        let seqs = seen.seqs();
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for s in &seqs {
            *counts.entry(*s).or_insert(0) += 1;
        }
        let repeated: Vec<(u64, usize)> = counts.into_iter().filter(|(_, n)| *n > 1).collect();
        let faults: Vec<String> = seen
            .order_faults(&[end.seq()].into())
            .into_iter()
            .filter(|f| !f.starts_with("gap"))
            .collect();
        if !repeated.is_empty() || !faults.is_empty() {
            report.order.push(format!(
                "{who}: {} seqs came more than once (first {:?}); {} times the seq went back \
                 (first {:?}); around the first: {:?}",
                repeated.len(),
                &repeated[..repeated.len().min(3)],
                faults.len(),
                &faults[..faults.len().min(3)],
                seen.around_first_reversal()
            ));
        }
    }
    eprintln!("{cluster}: {} messages; {log:?}", acked.len());
    report.cuts = log;
    for n in nodes {
        n.shutdown().await;
    }
    report
}

/// Senders on three nodes keep a room busy; six times, the node that runs the room is cut off
/// from NATS for 1.6 s (another node takes the room) and then comes back. Promise
/// (`docs/cluster.md`, "Order per room": "every member, on any node, receives a room's
/// deliveries in the room's order"; "Live delivery is at most once": "A delivery published
/// while a node is disconnected from NATS ... is not redelivered"; `docs/semantics.md`,
/// "Delivery is live and at most once"): each observer's live messages have increasing
/// sequence numbers, each once (gaps, with their recovery notices, are allowed).
///
/// Fixed: a mirror dropped while a resync still held it was subscribed again (every message
/// twice), and a lost lease's mirror could be made after the node took the room back; and the
/// rule that a node's late report of members is taken only once after a takeover (now:
/// departures in the log decide). It was observed in 7 of 23 runs, two ways (also 3 of 32 runs of the compaction test above, whose
/// four cuts it now only reports):
/// - old messages late: right after a cut-off owner comes back, an observer gets messages the
///   room accepted seconds before, in the middle of the new owner's stream: "o2 (node c): 361
///   after 1725 ... where it belonged: 360 at 157 ms, 369 at 1020 ms, Recovered(last_seq 369)
///   ...; where it came: 1725 at 1891 ms, 361 at 2723 ms, ..., 368 at 2723 ms" (a cut
///   122..1723 ms); "o2: 1097 after 1604" (b, whose sender sent 1097, cut 3558..6058 ms, 1097
///   at 6120 ms). Each is the message the log holds under that seq: deliveries the old owner
///   published as it lost NATS, sent when it reconnected, and fanned out as current;
/// - everything twice: after a recovery notice an observer gets every later message twice,
///   to the end: "o0 (node a): 862 seqs came more than once (first [(2408, 2), (2409, 2),
///   ...]): Recovered(last_seq 2407) at 3982 ms, 2408 at 3983 ms, 2408 at 3987 ms, 2409, 2409,
///   2410, ..." (908 seqs in another run; once "2459, 2459, 2460, 2461, 2460" on node b).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owner_cut_off_and_back_never_delivers_old_messages_late() {
    let server = server!();
    let r = owner_cuts_scenario(&server, "stale", 6).await;
    eprintln!("{r:#?}");
    assert!(
        r.order.is_empty() && r.other.is_empty(),
        "{}\ncuts: {:?}",
        r.order
            .iter()
            .chain(&r.other)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        r.cuts
    );
}

/// The same scenario, looking at membership. Promise (`docs/cluster.md`, "Outages": a node back
/// from an outage "tells the room's owner who of its sessions is in the room ...; the owner
/// registers any it had counted gone. ... A call for the room from that node waits for this
/// first"; "The first actor after a takeover takes back every member a node tells it of,
/// however late"; "Live delivery is at most once"): no member that never left is ever refused
/// with 702 (not in the room); every observer gets the last message live, or, if its node was
/// still away from NATS when it was published, is told `on_chat_room_recovered` with a last
/// sequence number that covers it; and a message sent after that comes live to every observer.
///
/// Fixed: the senders of one node got 702 "not in the room", once, then were accepted again
/// ("s0.0: 702 1 times from 6930 to 6930 ms (last accepted at 18982 ms)"; observed in 4 of 29
/// runs). The test itself was wrong in one way, found with traces of the fan-out: it demanded
/// that "the end" reach every observer live, but when the last node cut is the one still
/// reconnecting to NATS (about 0.2 to 0.6 s after the heal) as "the end" is published, its
/// members miss it live, as promised, and are told where the room stands as their node
/// resyncs ("o1 (node b) does not get the last message live: in the room Ok(4026)", 1 CI run,
/// 2 of 40 local runs under load: b's mirror subscribed 300 ms after "the end" went out).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_stay_members_through_owner_cuts() {
    let server = server!();
    let r = owner_cuts_scenario(&server, "stay", 6).await;
    eprintln!("{r:#?}");
    assert!(
        r.membership.is_empty() && r.other.is_empty(),
        "{}\ncuts: {:?}",
        r.membership
            .iter()
            .chain(&r.other)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        r.cuts
    );
}

/// Held messages deleted: (seq, release time, deleted at (engine clock), deleted at as [`ms`]).
type Deletions = Arc<Mutex<Vec<(u64, i64, i64, u64)>>>;

/// A room on a (behind a proxy) holds members' messages for 1 s. An asker on b sends every
/// 30 ms, the owner every 100 ms; an admin on c deletes every third question as soon as it gets
/// it; a viewer joins through b halfway; the owner's connection blips three times (200 ms).
/// Promise (`docs/semantics.md`, "Hold for review": viewers get held messages "when its release
/// time has passed ..., unmarked, in the room's order"; a message deleted meanwhile "never
/// reaches them"; `docs/cluster.md`, "Members see only what the log holds"): the viewers on a,
/// b and c get messages in order, none marked held, none deleted before its release, each as
/// history holds it.
///
/// Fixed: a recall and the message it recalls, replayed from the room's log in one group
/// commit, lost the recall (the store read the message from the tree, not from the batch). It
/// was observed (9 runs of 9) that held questions the admin deleted about a second before their
/// release, and still held when a blip came, reach every viewer on every node at their release
/// time with their bodies, and afterwards history shows them unrecalled, although every
/// `delete_chat_room_message` returned `Ok` and the audit log holds every `DeleteMessage`:
/// "va got 24 "q17" at 1591 ms, deleted at 596 ms, 993 ms before its release; history has it
/// as "q17" from asker recalled false held_until None" with the owner's connection cut
/// 709..910, 1611..1812 and 2690..2891 ms (7 of 22 deletions undone in that run). Without the
/// blips the same scenario holds (the next test), and on one engine a held, deleted message
/// stays deleted when the room restarts after a panic (`Engine::inject_room_panic`). An
/// acknowledged deletion is lost when the room restarts from its log while the message is
/// still held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hold_with_deletes_a_late_joiner_and_blips_on_the_owner() {
    let server = server!();
    let bad = hold_scenario(&server, "holdblip", true, false).await;
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The same without the blips: the control (it holds).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hold_with_deletes_and_a_late_joiner_across_nodes() {
    let server = server!();
    let bad = hold_scenario(&server, "holdnoblip", false, false).await;
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The hold scenario (see the tests): with blips on the owner's connection or not, on three
/// nodes or on one engine (`single`, a control).
async fn hold_scenario(
    server: &NatsServer,
    cluster: &str,
    blips: bool,
    single: bool,
) -> Vec<String> {
    let pa = Proxy::start(server.port()).await;
    let (a, b, c) = if single {
        let one = Engine::builder()
            .limits(harness_limits())
            .build()
            .await
            .unwrap();
        (one.clone(), one.clone(), one)
    } else {
        (
            node_at(pa.url(), cluster, "a", |x| x).await,
            node(server, cluster, "b").await,
            node(server, cluster, "c").await,
        )
    };
    let (host, room) = room_on(&a, "holdblip").await;
    let adm = c.login("adm").await.unwrap();
    let asker = b.login("asker").await.unwrap();
    let mut viewers = Vec::new();
    for (n, id) in [(&a, "va"), (&b, "vb"), (&c, "vc")] {
        let v = n.login(id).await.unwrap();
        join(&v, room).await;
        viewers.push((id.to_string(), Seen::of(&v), v));
    }
    for u in [&adm, &asker] {
        join(u, room).await;
    }
    host.chat_room_manager()
        .add_chat_room_admin(&room, "adm")
        .await
        .unwrap();
    host.chat_room_manager()
        .set_chat_room_hold(&room, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    let seen_adm = Seen::of(&adm);
    let stop = Arc::new(AtomicBool::new(false));
    let questions: Arc<Mutex<Vec<ChatMessage>>> = Default::default();
    let asking = {
        let (asker, stop, questions) = (asker.clone(), stop.clone(), questions.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let text = format!("q{n}");
                if let Ok(m) = retry(|| send(&asker, room, &text)).await {
                    questions.lock().push(m);
                }
                n += 1;
                let_pass(Duration::from_millis(30)).await;
            }
        })
    };
    let hosting = {
        let (host, stop) = (host.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let text = format!("host {n}");
                let _ = retry(|| send(&host, room, &text)).await;
                n += 1;
                let_pass(Duration::from_millis(100)).await;
            }
        })
    };
    let deleted: Deletions = Default::default();
    let deleting = {
        let (adm, stop, questions, deleted, seen_adm) = (
            adm.clone(),
            stop.clone(),
            questions.clone(),
            deleted.clone(),
            seen_adm.clone(),
        );
        tokio::spawn(async move {
            let mut done = 0;
            while !stop.load(Ordering::Relaxed) {
                let next = questions
                    .lock()
                    .iter()
                    .filter(|q| q.seq() % 3 == 0 && q.seq() > done)
                    .map(|q| (q.seq(), q.held_until().unwrap_or(0)))
                    .next();
                let Some((seq, until)) = next else {
                    let_pass(Duration::from_millis(10)).await;
                    continue;
                };
                done = seq;
                if !seen_adm.seqs().contains(&seq) {
                    let_pass(Duration::from_millis(10)).await;
                }
                let rooms = adm.chat_room_manager();
                if retry(|| rooms.delete_chat_room_message(&room, seq))
                    .await
                    .is_ok()
                {
                    deleted.lock().push((seq, until, wall_ms(), ms()));
                }
            }
        })
    };
    let mut late = None;
    let mut cuts = Vec::new();
    for k in 0..3u64 {
        let_pass(Duration::from_millis(700)).await;
        let cut_at = ms();
        if blips {
            pa.cut();
        }
        let_pass(Duration::from_millis(200)).await;
        pa.heal();
        if blips {
            cuts.push(format!("{cut_at}..{} ms", ms()));
        }
        if k == 1 {
            let j = b.login("late").await.unwrap();
            let seen = Seen::of(&j);
            join(&j, room).await;
            late = Some((seen, j));
        }
    }
    let_pass(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in [asking, hosting, deleting] {
        t.await.unwrap();
    }
    let rooms = host.chat_room_manager();
    retry(|| rooms.set_chat_room_hold(&room, None))
        .await
        .unwrap();
    let end = send_ok(&host, room, "the end").await;
    let (seen_late, late) = late.unwrap();
    viewers.push(("late (joined through b)".into(), seen_late, late));
    for (who, seen, _) in &viewers {
        seen.wait_seq(&format!("{who} gets the end"), end.seq())
            .await;
    }
    let h = history(&viewers[1].2, room).await;
    let deleted = deleted.lock().clone();
    // Deleted messages: viewers need not get them (a held one deleted before its release
    // never reaches them; history hides it until its release time).
    let gone: BTreeSet<u64> = h
        .iter()
        .filter(|m| m.is_recalled())
        .map(ChatMessage::seq)
        .chain(deleted.iter().map(|d| d.0))
        .collect();
    let mut bad = Vec::new();
    let in_history = |seq: u64| {
        h.iter().find(|m| m.seq() == seq).map(|m| {
            format!(
                "{:?} from {} recalled {} held_until {:?} (now {})",
                m.text(),
                m.from(),
                m.is_recalled(),
                m.held_until(),
                wall_ms()
            )
        })
    };
    for (who, seen, _) in &viewers {
        for f in seen.order_faults(&gone).into_iter().take(3) {
            let first_missing: Option<u64> = f
                .strip_prefix("gap ")
                .and_then(|r| r.split("..").next())
                .and_then(|x| x.parse().ok());
            bad.push(format!(
                "{who}: {f}; history has it as {:?}; deleted before its release: {:?}",
                first_missing.map(in_history),
                first_missing.map(|s| deleted.iter().any(|d| d.0 == s))
            ));
        }
        for p in seen.phantoms(&h).into_iter().take(3) {
            bad.push(format!("{who}: {p}"));
        }
        if let Some(m) = seen.messages().iter().find(|m| m.is_held()) {
            bad.push(format!("{who} got {} marked held", m.seq()));
        }
        for (seq, until, at, at_ms) in &deleted {
            if at + 100 < *until {
                // A late joiner's replay shows a deleted message recalled: that is no leak.
                if let Some(m) = seen
                    .messages()
                    .iter()
                    .find(|m| m.seq() == *seq && !m.is_recalled())
                {
                    bad.push(format!(
                        "{who} got {seq} {:?} at {:?} ms, deleted at {at_ms} ms, {} ms before \
                         its release; history has it as {:?}",
                        m.text(),
                        seen.time_of(*seq),
                        until - at,
                        in_history(*seq)
                    ));
                }
            }
        }
    }
    if !bad.is_empty() && blips {
        let audit = audit_log(&host, room).await;
        let logged: BTreeSet<u64> = audit
            .iter()
            .filter_map(|e| match e.action {
                AuditAction::DeleteMessage { seq } => Some(seq),
                _ => None,
            })
            .collect();
        let unlogged: Vec<u64> = deleted
            .iter()
            .map(|d| d.0)
            .filter(|s| !logged.contains(s))
            .collect();
        bad.push(format!(
            "the owner's connection was cut {cuts:?}; of {} deletions acknowledged, the audit \
             log lacks {unlogged:?}",
            deleted.len()
        ));
    }
    let questions = questions.lock().len();
    eprintln!(
        "{questions} questions, {} deleted before their release; recoveries {:?}",
        deleted.len(),
        viewers
            .iter()
            .map(|(w, s, _)| (w.clone(), s.recoveries()))
            .collect::<Vec<_>>()
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
    bad
}
