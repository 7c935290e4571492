//! A second adversarial review of cluster mode, written from the README, `docs/cluster.md`,
//! `docs/semantics.md` and the public API of the `roomcast` facade only. It aims at what changed
//! last: deliveries to other nodes published only once the room's log acknowledged the writes
//! before them; a joiner on another node fed from its join on; a node that lost NATS catching up
//! (its members told the room recovered); and the other guarantees of `docs/cluster.md`
//! (moderation, presence, destroy) under races between nodes.
//!
//! Every node runs against a throwaway nats-server (`roomcast_cluster::testing::NatsServer`);
//! without one the tests print a skip message and pass, unless `ROOMCAST_REQUIRE_NATS=1`. One
//! node's loss of NATS goes through a TCP proxy that can cut it off.
//!
//! Tests marked `#[ignore = "FAILS: .."]` show a broken promise; each says, next to it, what it
//! does, what the docs promise and what happens instead. Run them with `--ignored`.
//!
//! Two scenarios run on one engine (no cluster) as well, as controls: they hold there. The
//! SIGKILL test runs the owner as a process of its own (`examples/cluster_node.rs`, built once,
//! as `tests/cluster_processes.rs` does).
//!
//! No sleeps for waiting: waits poll with a deadline. Real time is needed for leases (every node
//! has a 1 s lease) and for cuts of a given length: those pauses let real time pass, they do not
//! wait for a state. A few checks watch an invariant for a fixed window ("stays out for two
//! leases").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use roomcast::{
    ChatClient, ChatError, ChatEventHandler, ChatMessage, ChatRoomEvent, ClientEvent,
    CreateChatRoomOptions, Engine, LeaveReason, ManualClock, MessageId, MuteDuration,
    OutgoingMessage, RoomId,
};
use roomcast_cluster::testing::NatsServer;
use roomcast_workspace::harness_limits;

#[path = "shared/cluster_harness.rs"]
#[macro_use]
mod cluster_harness;
#[path = "shared/proxy.rs"]
mod proxy;
use cluster_harness::*;
use proxy::Proxy;

/// What a failing call may take beyond the request timeout ("fail with 903 within the request
/// timeout"): scheduling on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(700);

// ------------------------------------------------------------------------------------------
// Nodes
// ------------------------------------------------------------------------------------------

async fn node_with_clock(
    server: &NatsServer,
    cluster: &str,
    id: &str,
    clock: &ManualClock,
) -> Engine {
    let clock = clock.clone();
    node_at(server.url(), cluster, id, move |b| b.clock(clock)).await
}

// ------------------------------------------------------------------------------------------
// Waiting, retrying, sending
// ------------------------------------------------------------------------------------------

/// Spawns a sender that sends "tag n" for n = 0.. until `stop`, pausing `pace` after each
/// acknowledged message, retrying delivery failures, and records what was acknowledged. It
/// ends on 900 (its engine is gone). Returns the codes of its failures.
fn sender(
    client: ChatClient,
    room: RoomId,
    tag: String,
    acked: Acked,
    stop: Arc<AtomicBool>,
    pace: Duration,
) -> tokio::task::JoinHandle<BTreeMap<u32, usize>> {
    tokio::spawn(async move {
        let mut errors = BTreeMap::new();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let text = format!("{tag} {n}");
            match send(&client, room, &text).await {
                Ok(m) => {
                    acked.lock().push((m.seq(), m.msg_id(), text));
                    n += 1;
                    if !pace.is_zero() {
                        tokio::time::sleep(pace).await;
                    }
                }
                Err(e) if e.code() == 900 => break,
                Err(e) => {
                    assert!(e.is_delivery_failure(), "{tag}: {e}");
                    *errors.entry(e.code()).or_insert(0) += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        errors
    })
}

/// Checks a history against what was acknowledged: sequence numbers 1, 2, 3, ... without
/// gaps, ids unique, every acknowledged message there with its seq, id and text.
fn check_history(h: &[ChatMessage], acked: &[(u64, MessageId, String)], who: &str) {
    let seqs: Vec<u64> = h.iter().map(ChatMessage::seq).collect();
    // A room retains its newest 1,000 messages (the default `history_retention`).
    let oldest = match seqs.first() {
        Some(&first) if seqs.len() == RETAINED => first,
        _ => 1,
    };
    let want: Vec<u64> = (oldest..oldest + seqs.len() as u64).collect();
    assert_eq!(seqs, want, "{who}: sequence numbers with gaps or repeats");
    let ids: BTreeSet<_> = h.iter().map(ChatMessage::msg_id).collect();
    assert_eq!(ids.len(), h.len(), "{who}: two messages share an id");
    let by_seq: BTreeMap<u64, &ChatMessage> = h.iter().map(|m| (m.seq(), m)).collect();
    let mut lost = Vec::new();
    for (seq, id, text) in acked.iter().filter(|a| a.0 >= oldest) {
        match by_seq.get(seq) {
            Some(m) if m.msg_id() == *id && m.text() == Some(text) => {}
            other => lost.push(format!(
                "{seq} {text:?}: {:?}",
                other.map(|m| (m.msg_id(), m.text()))
            )),
        }
    }
    assert!(
        lost.is_empty(),
        "{who}: {} acknowledged messages lost or changed: {lost:?}",
        lost.len()
    );
}

// ------------------------------------------------------------------------------------------
// What a client got
// ------------------------------------------------------------------------------------------

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

    /// What breaks "the newest `replay` messages before anything newer, in one batch": the
    /// first batch does not start with `replay` consecutive messages.
    fn replay_fault(&self, replay: usize) -> Option<String> {
        let batches = self.0.lock();
        let first = batches.first()?;
        let ok =
            first.len() >= replay && first.windows(2).take(replay - 1).all(|w| w[1] == w[0] + 1);
        (!ok).then(|| {
            format!(
                "first batches {:?}",
                batches.iter().take(3).collect::<Vec<_>>()
            )
        })
    }
}

/// The seqs of the messages `who` sent, in a history.
fn own_seqs(h: &[ChatMessage], who: &str) -> BTreeSet<u64> {
    h.iter()
        .filter(|m| m.from().as_str() == who)
        .map(ChatMessage::seq)
        .collect()
}

/// Messages each room retains (the default `history_retention`).
const RETAINED: usize = 1_000;

// ------------------------------------------------------------------------------------------
// 1. Deliveries wait for the log
// ------------------------------------------------------------------------------------------

/// The owner's node (a) is dropped without a shutdown while its own eight users each have four
/// sends in flight at once (32 pipelined sends) and a member on each of b and c sends too.
/// Three rounds, a fresh cluster each. Promise (`docs/cluster.md`, "Acked means durable",
/// "Live delivery is at most once, history is complete", and the new publishing after the log's
/// acknowledgement): a member on b or c never gets live a message that history does not hold
/// under the same seq; it gets the room in order, each seq once; gaps only with
/// `on_chat_room_recovered` after them; the recovery's `last_seq` is never behind what it got
/// live; nothing acknowledged is lost and history has no gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_dropped_with_pipelined_sends_members_see_only_what_history_holds() {
    let server = server!();
    let mut bad = Vec::new();
    for round in 0..3 {
        let cluster = format!("pipe{round}");
        let a = node(&server, &cluster, "a").await;
        let b = node(&server, &cluster, "b").await;
        let c = node(&server, &cluster, "c").await;
        let (host, room) = room_on(&a, "pipe").await;
        let mut observers = Vec::new();
        for (n, id) in [(&b, "b"), (&c, "c")] {
            for k in 0..2 {
                let o = n.login(format!("o{id}{k}")).await.unwrap();
                join(&o, room).await;
                observers.push((Seen::of(&o), o));
            }
        }
        let acked: Acked = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for k in 0..8 {
            let u = a.login(format!("ua{k}")).await.unwrap();
            join(&u, room).await;
            for lane in 0..4 {
                senders.push(sender(
                    u.clone(),
                    room,
                    format!("a{k}.{lane}"),
                    acked.clone(),
                    stop.clone(),
                    Duration::ZERO,
                ));
            }
        }
        let mut remote = Vec::new();
        for (n, id) in [(&b, "b"), (&c, "c")] {
            let s = n.login(format!("s{id}")).await.unwrap();
            join(&s, room).await;
            senders.push(sender(
                s.clone(),
                room,
                format!("s{id}"),
                acked.clone(),
                stop.clone(),
                Duration::ZERO,
            ));
            remote.push(s);
        }
        wait_acked("150 messages before the owner dies", &acked, 150).await;
        drop(host);
        drop(a);
        let before = acked.lock().len();
        wait_acked("40 messages after the owner died", &acked, before + 40).await;
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            s.await.unwrap();
        }
        let end = send_ok(&remote[0], room, "the end").await;
        let acked = acked.lock().clone();
        let h = history(&remote[1], room).await;
        check_history(&h, &acked, &format!("round {round}: history"));
        for (seen, o) in &observers {
            let who = format!("round {round}: {}", o.current_user_id());
            seen.wait_seq(&format!("{who} gets the end"), end.seq())
                .await;
            seen.wait_event(&format!("{who} told the room recovered"), |e| {
                e.is_recovery()
            })
            .await;
            for f in seen.order_faults(&BTreeSet::new()) {
                bad.push(format!("{who}: {f}"));
            }
            for p in seen.phantoms(&h).into_iter().take(3) {
                bad.push(format!("{who}: {p}"));
            }
            for r in seen.recoveries_behind_live() {
                bad.push(format!("{who}: {r}"));
            }
        }
        b.shutdown().await;
        c.shutdown().await;
    }
    assert!(
        bad.is_empty(),
        "what members got live across the failover:\n{}",
        bad.join("\n")
    );
}

/// The owner's node shuts down cleanly (`Engine::shutdown`) while members on b and c send and
/// its own users have sends in flight. Promise: "A node that stops cleanly releases its leases:
/// another node takes its rooms at once" (a dead owner's room takes 2/3 to 1 lease); every
/// answer `Ok` (those the shutting-down node gave too) is in history; members on b and c are
/// told the room recovered and got nothing history does not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_shutdown_of_the_owner_hands_the_room_over_at_once() {
    let server = server!();
    let a = node(&server, "clean", "a").await;
    let b = node(&server, "clean", "b").await;
    let c = node(&server, "clean", "c").await;
    let (host, room) = room_on(&a, "clean").await;
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut observers = Vec::new();
    for (n, id) in [(&b, "b"), (&c, "c")] {
        let o = n.login(format!("o{id}")).await.unwrap();
        join(&o, room).await;
        observers.push((Seen::of(&o), o.clone()));
        let s = n.login(format!("s{id}")).await.unwrap();
        join(&s, room).await;
        senders.push(sender(
            s,
            room,
            format!("s{id}"),
            acked.clone(),
            stop.clone(),
            Duration::from_millis(2),
        ));
    }
    for k in 0..4 {
        let u = a.login(format!("ua{k}")).await.unwrap();
        join(&u, room).await;
        senders.push(sender(
            u,
            room,
            format!("a{k}"),
            acked.clone(),
            stop.clone(),
            Duration::ZERO,
        ));
    }
    wait_acked("60 messages", &acked, 60).await;
    let started = Instant::now();
    a.shutdown().await;
    let shut = Instant::now();
    let before = acked.lock().len();
    wait_acked("a message accepted after the shutdown", &acked, before + 1).await;
    let first = shut.elapsed();
    wait_acked("30 messages after the shutdown", &acked, before + 30).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    eprintln!(
        "shutdown took {:?}; the first send accepted {first:?} after it returned",
        shut - started
    );
    let acked = acked.lock().clone();
    let h = history(&observers[0].1, room).await;
    check_history(&h, &acked, "history");
    for (seen, o) in &observers {
        let who = o.current_user_id().to_string();
        seen.wait_event(&format!("{who} told the room recovered"), |e| {
            e.is_recovery()
        })
        .await;
        let p = seen.phantoms(&h);
        assert!(p.is_empty(), "{who}: {p:?}");
    }
    assert!(
        first < LEASE_TTL * 2 / 3,
        "after a clean shutdown the room took {first:?} to accept a send, no faster than a \
         dead owner's (2/3 of the {LEASE_TTL:?} lease at least)"
    );
    drop(host);
    b.shutdown().await;
    c.shutdown().await;
}

// ------------------------------------------------------------------------------------------
// 2. Joining a busy room
// ------------------------------------------------------------------------------------------

/// Three senders (one per node) keep a room busy; 90 users join at once (40 on b, 40 on c, 10
/// on the owner's node a). Promise (`docs/semantics.md`, "Replay on join"; the last commit's
/// fix): each joiner gets the newest 10 messages first, in one `on_messages_received` batch,
/// then the room live: each message once, in order, none missing (no node lost NATS and no
/// owner changed, so there is nothing "at most once" may drop without a recovery notice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_storm_from_three_nodes_into_a_busy_room() {
    let server = server!();
    let a = node(&server, "storm", "a").await;
    let b = node(&server, "storm", "b").await;
    let c = node(&server, "storm", "c").await;
    let (host, room) = room_on(&a, "storm").await;
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = vec![sender(
        host.clone(),
        room,
        "host".into(),
        acked.clone(),
        stop.clone(),
        Duration::from_millis(3),
    )];
    for (n, id) in [(&b, "b"), (&c, "c")] {
        let s = n.login(format!("s{id}")).await.unwrap();
        join(&s, room).await;
        senders.push(sender(
            s,
            room,
            format!("s{id}"),
            acked.clone(),
            stop.clone(),
            Duration::from_millis(3),
        ));
    }
    wait_acked("30 messages before the storm", &acked, 30).await;
    // Three waves of 30 joins at once, 40 messages apart.
    let mut joiners = Vec::new();
    for wave in 0..3 {
        let mut joins = Vec::new();
        for (n, id, count) in [(&b, "b", 13), (&c, "c", 13), (&a, "a", 4)] {
            for k in 0..count {
                let n = n.clone();
                let name = format!("j{wave}{id}{k}");
                joins.push(tokio::spawn(async move {
                    let u = n.login(&name).await.unwrap();
                    let seen = Seen::of(&u);
                    let batches = Batches::of(&u);
                    join(&u, room).await;
                    (u, seen, batches)
                }));
            }
        }
        for j in joins {
            joiners.push(j.await.unwrap());
        }
        let before = acked.lock().len();
        wait_acked("40 messages after a wave", &acked, before + 40).await;
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let end = send_ok(&host, room, "the end").await;
    let mut bad = Vec::new();
    for (u, seen, batches) in &joiners {
        let who = u.current_user_id().to_string();
        seen.wait_seq(&format!("{who} gets the end"), end.seq())
            .await;
        for f in seen.order_faults(&BTreeSet::new()) {
            bad.push(format!("{who}: {f}"));
        }
        if let Some(f) = batches.replay_fault(REPLAY) {
            bad.push(format!(
                "{who}: replay not one batch of {REPLAY} first: {f}"
            ));
        }
        if seen.missed() > 0 {
            bad.push(format!("{who}: missed {}", seen.missed()));
        }
    }
    let counts = [
        a.room_stats(&room).await.unwrap().member_count,
        b.room_stats(&room).await.unwrap().member_count,
        c.room_stats(&room).await.unwrap().member_count,
    ];
    assert!(
        bad.is_empty(),
        "{} faults among 90 joiners:\n{}",
        bad.len(),
        bad.join("\n")
    );
    assert_eq!(counts, [93; 3], "members counted by a, b, c");
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// 30 users on b and c each join and leave a busy room five times in quick succession (three
/// senders, one per node, keep it busy); half of them join once more. An observer on the
/// owner's node sees the room's order: the last message before each join (J) and each leave
/// (L). Promise (`docs/semantics.md`, "Replay on join": the newest 10 "before anything newer";
/// the last commit: a joiner on another node is fed "from the owner's Joined delivery on"): in
/// what a user gets from the moment its previous leave returned, everything before the join's
/// replay (J-9..=J) was sent before that leave (<= the previous L: a late delivery of the
/// previous membership), and after the replay come J+1, J+2, ... with none missing; a user
/// whose last call was a leave gets nothing sent after it; every node lists those in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_leave_join_quickly_in_a_busy_room() {
    let server = server!();
    let a = node(&server, "flip", "a").await;
    let b = node(&server, "flip", "b").await;
    let c = node(&server, "flip", "c").await;
    let bad = flip_scenario(&a, &b, &c).await;
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// The control: the same scenario on one engine (no cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_leave_join_quickly_on_one_node() {
    let one = Engine::builder()
        .limits(harness_limits())
        .build()
        .await
        .unwrap();
    let bad = flip_scenario(&one, &one, &one).await;
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    one.shutdown().await;
}

/// One membership of a user, as its client saw it: an event stream made before the join (once
/// the previous leave returned), and what it had got when the next leave was called (or, for
/// the last join, at the end).
struct Membership {
    seen: Seen,
    got: Vec<u64>,
}

/// Where a membership's messages break the promise, given the room's order: `prev_leave` (the
/// last seq before the previous leave, if any) and `joined` (the last seq before the join).
/// `got` may stop anywhere (a membership cut short by the next leave): it must be messages of
/// the previous membership, then the replay from its first, then one seq at a time.
fn membership_fault(got: &[u64], prev_leave: Option<u64>, joined: u64) -> Option<String> {
    let first = joined.saturating_sub(REPLAY as u64 - 1).max(1);
    let old = |s: &u64| prev_leave.is_some_and(|l| *s <= l);
    // The replay starts at the first `first` after which every seq is the one before plus one.
    let r = (0..got.len())
        .find(|&i| got[i] == first && got[i..].windows(2).all(|w| w[1] == w[0] + 1))
        .unwrap_or(got.len());
    let shown = &got[..got.len().min(r + 12)];
    if let Some(s) = got[..r].iter().find(|s| !old(s)) {
        return Some(format!(
            "{s} came before the replay {first}..={joined} (the previous leave came after \
             {prev_leave:?}): {shown:?}"
        ));
    }
    None
}

/// Joins and leaves (see `join_leave_join_quickly_in_a_busy_room`) with the room on `a`, users
/// on `b` and `c`: what broke the promise.
async fn flip_scenario(a: &Engine, b: &Engine, c: &Engine) -> Vec<String> {
    let (host, room) = room_on(a, "flip").await;
    // On the owner's node, an observer sees the room's order.
    let oa = a.login("oa").await.unwrap();
    join(&oa, room).await;
    let seen_oa = Seen::of(&oa);
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = vec![sender(
        host.clone(),
        room,
        "host".into(),
        acked.clone(),
        stop.clone(),
        Duration::from_millis(2),
    )];
    for (n, id) in [(b, "b"), (c, "c")] {
        let s = n.login(format!("s{id}")).await.unwrap();
        join(&s, room).await;
        senders.push(sender(
            s,
            room,
            format!("s{id}"),
            acked.clone(),
            stop.clone(),
            Duration::from_millis(2),
        ));
    }
    wait_acked("30 messages", &acked, 30).await;
    let mut tasks = Vec::new();
    for k in 0..30u64 {
        let n = if k % 2 == 0 { b.clone() } else { c.clone() };
        tasks.push(tokio::spawn(async move {
            let u = n.login(format!("f{k}")).await.unwrap();
            let mut done: Vec<Membership> = Vec::new();
            for cycle in 0..5u64 {
                let seen = Seen::of(&u);
                join(&u, room).await;
                let_pass(Duration::from_millis(2 + (k * 7 + cycle * 3) % 15)).await;
                let got = seen.seqs();
                done.push(Membership { seen, got });
                leave(&u, room).await;
            }
            let stays = k % 2 == 0;
            let last = Seen::of(&u);
            if stays {
                join(&u, room).await;
            }
            (u, stays, last, done)
        }));
    }
    let mut users = Vec::new();
    for t in tasks {
        users.push(t.await.unwrap());
    }
    let before = acked.lock().len();
    wait_acked("30 messages after the last joins", &acked, before + 30).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let end = send_ok(&host, room, "the end").await;
    seen_oa
        .wait_seq("the observer gets the end", end.seq())
        .await;
    // The room's order: per user, the last seq before each of its joins and leaves.
    let mut order: BTreeMap<String, Vec<(bool, u64)>> = BTreeMap::new();
    let mut last = 0;
    for e in seen_oa.events() {
        match e {
            ClientEvent::Message(m) => last = m.seq(),
            ClientEvent::Room(r) => match &*r {
                ChatRoomEvent::MemberJoined { participant, .. } => order
                    .entry(participant.to_string())
                    .or_default()
                    .push((true, last)),
                ChatRoomEvent::MemberExited { participant, .. } => order
                    .entry(participant.to_string())
                    .or_default()
                    .push((false, last)),
                _ => {}
            },
            _ => {}
        }
    }
    let mut bad = Vec::new();
    let mut checked = 0;
    for (u, stays, last_seen, done) in &users {
        let who = u.current_user_id().to_string();
        let ops = order.get(&who).cloned().unwrap_or_default();
        let joins: Vec<u64> = ops.iter().filter(|o| o.0).map(|o| o.1).collect();
        let leaves: Vec<u64> = ops.iter().filter(|o| !o.0).map(|o| o.1).collect();
        let want_joins = 5 + usize::from(*stays);
        if joins.len() != want_joins || leaves.len() != 5 {
            bad.push(format!(
                "{who}: the observer saw {} joins and {} leaves, not {want_joins} and 5",
                joins.len(),
                leaves.len()
            ));
            continue;
        }
        let mut memberships: Vec<(&[u64], usize)> = done
            .iter()
            .map(|m| (m.got.as_slice(), m.seen.missed() as usize))
            .collect();
        let final_got;
        if *stays {
            last_seen
                .wait_seq(&format!("{who} gets the end"), end.seq())
                .await;
            final_got = last_seen.seqs();
            memberships.push((final_got.as_slice(), last_seen.missed() as usize));
        } else {
            let late: Vec<u64> = last_seen
                .seqs()
                .into_iter()
                .filter(|s| *s >= end.seq())
                .collect();
            if !late.is_empty() {
                bad.push(format!("{who} left, and got {late:?} afterwards"));
            }
        }
        for (i, (got, _)) in memberships.iter().enumerate() {
            checked += 1;
            let prev_leave = i.checked_sub(1).map(|p| leaves[p]);
            if let Some(f) = membership_fault(got, prev_leave, joins[i]) {
                bad.push(format!("{who}, join {}: {f}", i + 1));
            }
        }
    }
    let want: Vec<String> = {
        let mut w: Vec<String> = users
            .iter()
            .filter(|u| u.1)
            .map(|u| u.0.current_user_id().to_string())
            .chain(["host".into(), "oa".into(), "sb".into(), "sc".into()])
            .collect();
        w.sort();
        w
    };
    for (n, id) in [(a, "a"), (b, "b"), (c, "c")] {
        let viewer = n.login("host").await.unwrap();
        let got = members(&viewer, room).await;
        if got != want {
            bad.push(format!("node {id} lists {got:?}"));
        }
    }
    if !bad.is_empty() {
        bad.insert(0, format!("{} faults in {checked} memberships:", bad.len()));
    }
    bad
}

/// 30 users on b and c join while the owner's node (a) is dropped, two rounds. Whichever owner
/// answered a join `Ok`, the joiner is a member afterwards: listed by the new owner, able to
/// send; and what it got live is history's, in order, each once, gaps only with a recovery
/// notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_racing_the_owners_death() {
    let server = server!();
    let mut bad = Vec::new();
    for round in 0..2 {
        let cluster = format!("jdeath{round}");
        let a = node(&server, &cluster, "a").await;
        let b = node(&server, &cluster, "b").await;
        let c = node(&server, &cluster, "c").await;
        let (host, room) = room_on(&a, "jdeath").await;
        let acked: Acked = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        let mut remote = Vec::new();
        for (n, id) in [(&b, "b"), (&c, "c")] {
            let s = n.login(format!("s{id}")).await.unwrap();
            join(&s, room).await;
            senders.push(sender(
                s.clone(),
                room,
                format!("s{id}"),
                acked.clone(),
                stop.clone(),
                Duration::from_millis(2),
            ));
            remote.push(s);
        }
        wait_acked("30 messages", &acked, 30).await;
        let mut joins = Vec::new();
        let mut clients = Vec::new();
        for k in 0..30 {
            let n = if k % 2 == 0 { &b } else { &c };
            let u = n.login(format!("j{k}")).await.unwrap();
            let seen = Seen::of(&u);
            clients.push((u.clone(), seen));
            joins.push(tokio::spawn(async move { join(&u, room).await }));
        }
        // The owner goes while the joins are on their way.
        tokio::task::yield_now().await;
        drop(host);
        drop(a);
        for j in joins {
            j.await.unwrap();
        }
        let before = acked.lock().len();
        wait_acked("30 messages after the failover", &acked, before + 30).await;
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            s.await.unwrap();
        }
        let listed = members(&remote[1], room).await;
        for (u, _) in &clients {
            let who = format!("round {round}: {}", u.current_user_id());
            if !listed.contains(&u.current_user_id().to_string()) {
                bad.push(format!("{who} joined (Ok) but is not listed: {listed:?}"));
            }
            let text = format!("{} still in", u.current_user_id());
            match retry(|| send(u, room, &text)).await {
                Ok(m) => acked.lock().push((m.seq(), m.msg_id(), text)),
                Err(e) => bad.push(format!("{who} joined (Ok) but cannot send: {e}")),
            }
        }
        let end = send_ok(&remote[0], room, "the end").await;
        acked
            .lock()
            .push((end.seq(), end.msg_id(), "the end".to_string()));
        let h = history(&remote[1], room).await;
        check_history(&h, &acked.lock().clone(), &format!("round {round}"));
        for (u, seen) in &clients {
            let who = format!("round {round}: {}", u.current_user_id());
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && !seen.seqs().contains(&end.seq()) {
                tokio::time::sleep(POLL).await;
            }
            if !seen.seqs().contains(&end.seq()) {
                bad.push(format!(
                    "{who} joined (Ok) but does not get the room live (last {:?})",
                    seen.seqs().last()
                ));
            }
            let own = own_seqs(&h, u.current_user_id().as_str());
            for f in seen.order_faults(&own) {
                bad.push(format!("{who}: {f}"));
            }
            for p in seen.phantoms(&h).into_iter().take(3) {
                bad.push(format!("{who}: {p}"));
            }
        }
        b.shutdown().await;
        c.shutdown().await;
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ------------------------------------------------------------------------------------------
// 3. A node cut off from NATS, then back
// ------------------------------------------------------------------------------------------

/// One call made on a node during a cut: what it was, how it ended, how long it took.
type CallRecord = (String, Result<u64, u32>, Duration);

/// Spawns a send and a read by `client` right now (during a cut): their outcomes.
fn calls_during_cut(
    client: &ChatClient,
    room: RoomId,
    text: String,
) -> tokio::task::JoinHandle<Vec<CallRecord>> {
    let client = client.clone();
    tokio::spawn(async move {
        let (s, i) = tokio::join!(
            async {
                let t = Instant::now();
                let r = send(&client, room, &text).await;
                (
                    text.clone(),
                    r.map(|m| m.seq()).map_err(|e| e.code()),
                    t.elapsed(),
                )
            },
            async {
                let t = Instant::now();
                let r = client.chat_room_manager().fetch_chat_room_info(&room).await;
                (
                    "info".to_string(),
                    r.map(|_| 0).map_err(|e| e.code()),
                    t.elapsed(),
                )
            }
        );
        vec![s, i]
    })
}

/// What breaks "calls during the cut fail with 903 within the request timeout" (a call may
/// also succeed, once the connection is back).
fn slow_or_unclear(calls: &[CallRecord]) -> Vec<String> {
    calls
        .iter()
        .filter(|(_, r, took)| {
            *took > REQUEST_TIMEOUT + SLACK || matches!(r, Err(code) if *code < 900)
        })
        .map(|(what, r, took)| format!("{what}: {r:?} after {took:?}"))
        .collect()
}

/// Failed sends (their text) that history holds anyway: "A call that fails changes nothing,
/// except a 901 timeout" (`docs/semantics.md`).
fn failed_but_stored(calls: &[CallRecord], h: &[ChatMessage]) -> Vec<String> {
    calls
        .iter()
        .filter(|(what, r, _)| what != "info" && matches!(r, Err(code) if *code != 901))
        .filter_map(|(what, r, _)| {
            h.iter().find(|m| m.text() == Some(what.as_str())).map(|m| {
                format!(
                    "{what:?} failed with {r:?} and is in history as seq {}",
                    m.seq()
                )
            })
        })
        .collect()
}

/// Node b (members only) loses NATS three times for 400 ms (less than the 1 s lease) while the
/// owner's host sends every 10 ms. Promise (the last commit; `docs/cluster.md`, "NATS is
/// unreachable"): calls on b during a cut fail with a 9xx code within the request timeout (or
/// succeed once it is back) and a failed send is not in history; after each cut b's next call
/// works, its members get the room live again and, if they missed messages, are told
/// `on_chat_room_recovered`; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_members_node_blips_shorter_than_the_lease() {
    let server = server!();
    let proxy = Proxy::start(server.port()).await;
    let a = node(&server, "mblip", "a").await;
    let b = node_at(proxy.url(), "mblip", "b", |x| x).await;
    let (host, room) = room_on(&a, "mblip").await;
    let u1 = b.login("u1").await.unwrap();
    let u2 = b.login("u2").await.unwrap();
    join(&u1, room).await;
    join(&u2, room).await;
    let seen1 = Seen::of(&u1);
    let seen2 = Seen::of(&u2);
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let host_sender = sender(
        host.clone(),
        room,
        "host".into(),
        acked.clone(),
        stop.clone(),
        Duration::from_millis(10),
    );
    wait_until("u2 gets 20 messages", || {
        let n = seen2.seqs().len();
        async move { n >= 20 }
    })
    .await;
    let mut calls = Vec::new();
    let mut back_after = Vec::new();
    for blip in 0..3 {
        proxy.cut();
        let cut_at = Instant::now();
        let during = calls_during_cut(&u1, room, format!("during {blip}"));
        let_pass(Duration::from_millis(400)).await;
        proxy.heal();
        let healed = Instant::now();
        let text = format!("back {blip}");
        let m = retry(|| send(&u1, room, &text))
            .await
            .unwrap_or_else(|e| panic!("u1's send after blip {blip}: {e}"));
        back_after.push(healed.elapsed());
        acked
            .lock()
            .push((m.seq(), m.msg_id(), format!("back {blip}")));
        calls.extend(during.await.unwrap());
        let mark = send_ok(&host, room, &format!("mark {blip}")).await;
        acked
            .lock()
            .push((mark.seq(), mark.msg_id(), format!("mark {blip}")));
        seen2
            .wait_seq(&format!("u2 live again after blip {blip}"), mark.seq())
            .await;
        seen1
            .wait_seq(&format!("u1 live again after blip {blip}"), mark.seq())
            .await;
        eprintln!(
            "blip {blip}: cut for {:?}; u1's first send after it {:?} after the heal",
            healed - cut_at,
            back_after[blip]
        );
    }
    stop.store(true, Ordering::Relaxed);
    host_sender.await.unwrap();
    for (what, r, took) in &calls {
        eprintln!("during a cut: {what}: {r:?} in {took:?}");
    }
    let h = history(&u2, room).await;
    check_history(&h, &acked.lock().clone(), "history");
    let mut bad = slow_or_unclear(&calls);
    bad.extend(failed_but_stored(&calls, &h));
    for (who, seen) in [("u1", &seen1), ("u2", &seen2)] {
        for f in seen.order_faults(&own_seqs(&h, who)) {
            bad.push(format!("{who}: {f}"));
        }
        eprintln!(
            "{who}: {} messages live, {} recovery notices, missed {}",
            seen.seqs().len(),
            seen.recoveries(),
            seen.missed()
        );
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    a.shutdown().await;
    b.shutdown().await;
}

/// Node b is cut off from NATS for three leases while the owner (a) acts on b's members: the
/// host kicks one and blocks another, and dave (joined through b) leaves through his device on
/// node c. When b is back it re-registers its members with the owner (the last commit). Promise:
/// what was acknowledged stands: the kicked, the blocked and dave stay out (not listed, their
/// sends refused) for two leases after b's member that stayed gets the room live again; that
/// member is told the room recovered and is online on the owner; calls on b during the cut fail
/// with 9xx within the request timeout. (The kicked and blocked are never told they were
/// removed: the notice went out while their node was cut off. The docs promise nothing here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_members_node_cut_off_while_the_owner_removes_its_members() {
    let server = server!();
    let proxy = Proxy::start(server.port()).await;
    let a = node(&server, "mcut", "a").await;
    let b = node_at(proxy.url(), "mcut", "b", |x| x).await;
    let c = node(&server, "mcut", "c").await;
    let (host, room) = room_on(&a, "mcut").await;
    let stay = b.login("stay").await.unwrap();
    let kicked = b.login("kicked").await.unwrap();
    let blocked = b.login("blocked").await.unwrap();
    let dave_b = b.login("dave").await.unwrap();
    for u in [&stay, &kicked, &blocked, &dave_b] {
        join(u, room).await;
    }
    let dave_c = c.login("dave").await.unwrap();
    let seen_stay = Seen::of(&stay);
    let seen_kicked = Seen::of(&kicked);
    let seen_blocked = Seen::of(&blocked);
    let seen_dave = Seen::of(&dave_b);
    let first = send_ok(&host, room, "before").await;
    seen_stay.wait_seq("stay gets the first", first.seq()).await;
    proxy.cut();
    let cut_at = Instant::now();
    // A send and a read on b during the cut: 903 within the request timeout.
    let during = calls_during_cut(&stay, room, "stay during the cut".into());
    let rooms = host.chat_room_manager();
    rooms
        .remove_chat_room_members(&room, ["kicked"])
        .await
        .unwrap();
    rooms
        .block_chat_room_members(&room, ["blocked"])
        .await
        .unwrap();
    dave_c
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    while cut_at.elapsed() < 3 * LEASE_TTL {
        send_ok(&host, room, "meanwhile").await;
        let_pass(Duration::from_millis(100)).await;
    }
    proxy.heal();
    // b's member that stayed gets the room live again.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let m = send_ok(&host, room, "after").await;
        let_pass(Duration::from_millis(100)).await;
        if seen_stay.seqs().contains(&m.seq()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stay never gets the room live again"
        );
    }
    let mut back = BTreeSet::new();
    let since = Instant::now();
    while since.elapsed() < 2 * LEASE_TTL {
        let listed = members(&host, room).await;
        for who in ["kicked", "blocked", "dave"] {
            if listed.iter().any(|m| m == who) {
                back.insert(format!("{who} listed again: {listed:?}"));
            }
        }
        for (who, u) in [
            ("kicked", &kicked),
            ("blocked", &blocked),
            ("dave", &dave_b),
        ] {
            if let Ok(m) = send(u, room, "I'm back").await {
                back.insert(format!("{who}'s send accepted (seq {})", m.seq()));
            }
        }
        let_pass(Duration::from_millis(100)).await;
    }
    for (who, seen) in [
        ("kicked", &seen_kicked),
        ("blocked", &seen_blocked),
        ("dave on b", &seen_dave),
    ] {
        eprintln!(
            "{who} was told: {:?}; recoveries {}; {} messages live",
            seen.room_events()
                .iter()
                .filter_map(is_removed)
                .collect::<Vec<_>>(),
            seen.recoveries(),
            seen.seqs().len()
        );
    }
    let calls = during.await.unwrap();
    eprintln!("calls on b during the cut: {calls:?}");
    let unclear = slow_or_unclear(&calls);
    let stats = a.room_stats(&room).await.unwrap();
    let told = seen_stay.has_event(|e| e.is_recovery());
    assert!(
        back.is_empty(),
        "removed while their node was cut off, and back once it healed: {back:?}"
    );
    assert!(
        told,
        "stay missed messages and was not told the room recovered"
    );
    assert!(unclear.is_empty(), "calls on b during the cut: {unclear:?}");
    assert_eq!(
        (stats.member_count, stats.online_count),
        (2, 2),
        "host and stay, both online"
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// A cluster of two nodes sharing a ManualClock, a room on a, a member of it on b behind a
/// proxy; returns (a, b, host, room, the host's events, ub, ub's events).
async fn presence_setup(
    server: &NatsServer,
    proxy: &Proxy,
    cluster: &str,
    clock: &ManualClock,
) -> (Engine, Engine, ChatClient, RoomId, Seen, ChatClient, Seen) {
    let a = node_with_clock(server, cluster, "a", clock).await;
    let clock_b = clock.clone();
    let b = node_at(proxy.url(), cluster, "b", move |x| x.clock(clock_b)).await;
    let (host, room) = room_on(&a, cluster).await;
    let host_seen = Seen::of(&host);
    let ub = b.login("ub").await.unwrap();
    join(&ub, room).await;
    let seen_b = Seen::of(&ub);
    wait_for_presence(&a, room, (2, 2)).await;
    (a, b, host, room, host_seen, ub, seen_b)
}

/// A user with a session on b and one on c (behind a proxy) goes offline on b, then a minute
/// later on c; then c is cut off, and the owner counts c gone. Promise (`docs/cluster.md`,
/// "offline means offline on every node", the grace period from when the last session went):
/// the user stays a member until the grace period has passed since its session on c went, not
/// since the one on b went. (The owner used to forget c's report with c, and count the user
/// offline from b's time: it removed the user a minute early.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gone_nodes_session_still_counts_for_when_its_user_went_offline() {
    let server = server!();
    let proxy = Proxy::start(server.port()).await;
    let clock = ManualClock::new(1_700_000_000_000);
    let a = node_with_clock(&server, "plast", "a", &clock).await;
    let b = node_with_clock(&server, "plast", "b", &clock).await;
    let clock_c = clock.clone();
    let c = node_at(proxy.url(), "plast", "c", move |x| x.clock(clock_c)).await;
    let (host, room) = room_on(&a, "plast").await;
    let host_seen = Seen::of(&host);
    let u_b = b.login("u").await.unwrap();
    join(&u_b, room).await;
    let u_c = c.login("u").await.unwrap();
    // c's device is attached to the user's rooms shortly after its login: a message it gets
    // live says the owner knows of it.
    let u_c_seen = Seen::of(&u_c);
    let m = send_ok(&host, room, "to both devices").await;
    u_c_seen
        .wait_seq("u's device on c gets the room", m.seq())
        .await;
    wait_for_presence(&a, room, (2, 2)).await;
    u_b.disconnect().unwrap();
    // Online on c still.
    let_pass(LEASE_TTL / 2).await;
    assert_eq!(presence(&a, room).await, (2, 2), "u online on c");
    clock.advance(Duration::from_secs(60));
    u_c.disconnect().unwrap();
    wait_for_presence(&a, room, (2, 1)).await;
    proxy.cut();
    // The owner counts c gone ("failed to answer two pings", checked every lease/4).
    let_pass(3 * LEASE_TTL).await;
    // Past the grace period since u went offline on b, a minute short of it since c.
    clock.advance(Duration::from_secs(5 * 60 - 30));
    let since = Instant::now();
    while since.elapsed() < LEASE_TTL {
        assert!(
            !host_seen.has_event(|e| is_member_exited(e, "u")),
            "u removed as offline before the grace period passed since its last session went"
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(presence(&a, room).await, (2, 1), "u a member, offline");
    // And once the grace period has passed since then, it goes.
    clock.advance(Duration::from_secs(60));
    host_seen
        .wait_event("u removed after the grace period", |e| {
            is_member_exited(e, "u")
        })
        .await;
    proxy.heal();
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// Node b (with a member) is cut off for three leases; the owner counts its member offline
/// ("failed to answer two pings"); b comes back. Promise (`docs/cluster.md`, "that node's
/// members are offline from then, and leave after the grace period unless they come back";
/// `docs/semantics.md`: "a member whose session is online is never removed as offline"): the
/// member is online again on the owner, gets the room live, and ten minutes of engine time later
/// (the engines share a ManualClock) it is still a member and can send.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_nodes_member_is_online_again_when_it_comes_back() {
    let server = server!();
    let proxy = Proxy::start(server.port()).await;
    let clock = ManualClock::new(1_700_000_000_000);
    let (a, b, host, room, host_seen, ub, seen_b) =
        presence_setup(&server, &proxy, "pback", &clock).await;
    proxy.cut();
    wait_for_presence(&a, room, (2, 1)).await;
    let_pass(3 * LEASE_TTL).await;
    proxy.heal();
    wait_for_presence(&a, room, (2, 2)).await;
    let m = send_ok(&host, room, "after the cut").await;
    seen_b
        .wait_seq("ub gets the room live again", m.seq())
        .await;
    clock.advance(Duration::from_secs(10 * 60));
    // Watch for a lease: no removal.
    let since = Instant::now();
    while since.elapsed() < LEASE_TTL {
        assert!(
            !host_seen.has_event(|e| is_member_exited(e, "ub")),
            "ub, online again, removed as offline"
        );
        tokio::time::sleep(POLL).await;
    }
    send(&ub, room, "still here").await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

/// Node b (with a member) is cut off; the owner counts its member offline, and the grace period
/// passes meanwhile (the engines share a ManualClock): the owner removes it (the host gets
/// `on_member_exited_from_chat_room`). Then b comes back. Promise (`docs/cluster.md`: "that
/// node's members are offline from then, and leave after the grace period unless they come
/// back"; `docs/semantics.md`: removed "after its grace period", told `Offline` "when it is back
/// online"): the member stays out: not listed, its sends refused with 702, until it joins
/// again.
///
/// This failed in every run (7 of 7) while a rejoin restored members removed as offline while
/// their node was away: ub was back without having joined, untold. Now its node lets it go and
/// it is told `Offline`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_removed_as_offline_while_its_node_was_cut_off_stays_out() {
    let server = server!();
    let proxy = Proxy::start(server.port()).await;
    let clock = ManualClock::new(1_700_000_000_000);
    let (a, b, host, room, host_seen, ub, seen_b) =
        presence_setup(&server, &proxy, "pgone", &clock).await;
    proxy.cut();
    wait_for_presence(&a, room, (2, 1)).await;
    clock.advance(Duration::from_secs(10 * 60));
    host_seen
        .wait_event("ub removed after the grace period", |e| {
            is_member_exited(e, "ub")
        })
        .await;
    wait_for_presence(&a, room, (1, 1)).await;
    let_pass(LEASE_TTL).await;
    proxy.heal();
    let since = Instant::now();
    let (mut listed, mut accepted) = (0, Vec::new());
    while since.elapsed() < 3 * LEASE_TTL {
        if members(&host, room).await.iter().any(|m| m == "ub") {
            listed += 1;
        }
        match send(&ub, room, "am I in?").await {
            Ok(m) => accepted.push(m.seq()),
            Err(e) if e.is_delivery_failure() => {}
            Err(e) => assert_eq!(e.code(), 702, "ub's send after its removal: {e}"),
        }
        let_pass(Duration::from_millis(100)).await;
    }
    eprintln!(
        "ub was told: {:?}; the host saw it join again: {}",
        seen_b
            .room_events()
            .iter()
            .filter_map(is_removed)
            .collect::<Vec<_>>(),
        host_seen.has_event(|e| matches!(
            e,
            ChatRoomEvent::MemberJoined { participant, .. } if participant.as_str() == "ub"
        ))
    );
    assert!(
        listed == 0 && accepted.is_empty(),
        "ub, removed as offline while its node was away, is back: listed in {listed} looks, \
         its sends accepted as {accepted:?}"
    );
    seen_b
        .wait_event("ub is told it was removed as offline", |e| {
            matches!(
                e,
                ChatRoomEvent::RemovedFromChatRoom {
                    reason: LeaveReason::Offline,
                    ..
                }
            )
        })
        .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// The owner's node (a) and then node b are each cut off from NATS for three leases, in turn,
/// while a member on each of a, b and c sends every 20 ms. After each cut the cut-off node's
/// member gets the room live again and is told it recovered; at the end nothing acknowledged
/// is lost, history has no gaps, and every member got the room live in order, each message
/// once (gaps only with a recovery notice after them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_owners_node_then_a_members_node_cut_off_in_turn() {
    let server = server!();
    let pa = Proxy::start(server.port()).await;
    let pb = Proxy::start(server.port()).await;
    let a = node_at(pa.url(), "turns", "a", |x| x).await;
    let b = node_at(pb.url(), "turns", "b", |x| x).await;
    let c = node(&server, "turns", "c").await;
    let (host, room) = room_on(&a, "turns").await;
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut users = Vec::new();
    let mut senders = Vec::new();
    for (n, id) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let u = n.login(format!("u{id}")).await.unwrap();
        join(&u, room).await;
        users.push((Seen::of(&u), u.clone()));
        senders.push(sender(
            u,
            room,
            format!("u{id}"),
            acked.clone(),
            stop.clone(),
            Duration::from_millis(20),
        ));
    }
    wait_acked("30 messages", &acked, 30).await;
    let mut faults = Vec::new();
    for (proxy, cut_node, who) in [(&pa, "a", 0), (&pb, "b", 1)] {
        let told_before = users[who].0.recoveries();
        proxy.cut();
        let_pass(3 * LEASE_TTL).await;
        proxy.heal();
        let healed = Instant::now();
        eprintln!(
            "{cut_node}'s cut healed; {} acknowledged so far",
            acked.lock().len()
        );
        let text = format!("uc after {cut_node}'s cut");
        let mark = send_ok(&users[2].1, room, &text).await;
        acked.lock().push((mark.seq(), mark.msg_id(), text));
        for (i, (seen, u)) in users.iter().enumerate().take(2) {
            // Live again: it gets this message or a later one.
            let live_again = || seen.seqs().last().is_some_and(|s| *s >= mark.seq());
            let deadline = Instant::now() + DEADLINE;
            while !live_again() && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
            if !live_again() {
                faults.push(format!(
                    "{} (node {}) does not get the room live {:?} after {cut_node}'s cut \
                     healed (last live {:?})",
                    u.current_user_id(),
                    ["a", "b"][i],
                    healed.elapsed(),
                    seen.seqs().last()
                ));
            }
        }
        eprintln!(
            "after {cut_node}'s cut: members live again (or not) {:?} after the heal",
            healed.elapsed()
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while users[who].0.recoveries() == told_before && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        if users[who].0.recoveries() == told_before {
            faults.push(format!(
                "the member on {cut_node} was not told the room recovered after its node's cut"
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        eprintln!("sender errors: {:?}", s.await.unwrap());
    }
    let h = history(&users[2].1, room).await;
    check_history(&h, &acked.lock().clone(), "history");
    for (seen, u) in &users {
        let who = u.current_user_id().to_string();
        let own: BTreeSet<u64> = acked
            .lock()
            .iter()
            .filter(|m| m.2.starts_with(&format!("{who} ")))
            .map(|m| m.0)
            .collect();
        let by_seq: BTreeMap<u64, &ChatMessage> = h.iter().map(|m| (m.seq(), m)).collect();
        let got: BTreeSet<u64> = seen.seqs().into_iter().collect();
        // (What the cut-off owner's own members got live: see
        // `a_cut_off_owners_own_members_see_only_what_history_holds`.)
        for f in seen.order_faults(&own) {
            // Which messages it missed, and who sent them.
            let missed: Vec<String> = f
                .strip_prefix("gap ")
                .and_then(|r| r.split(' ').next())
                .and_then(|r| r.split_once("..="))
                .and_then(|(x, y)| Some(x.parse::<u64>().ok()?..=y.parse::<u64>().ok()?))
                .map(|r| {
                    r.filter(|s| !got.contains(s))
                        .filter_map(|s| by_seq.get(&s))
                        .map(|m| format!("{} {:?}", m.seq(), m.text().unwrap_or("")))
                        .collect()
                })
                .unwrap_or_default();
            faults.push(format!("{who}: {f}: {missed:?}"));
        }
    }
    assert!(faults.is_empty(), "{}", faults.join("\n"));
    drop(host);
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// The owner's node (a) is cut off from NATS for three leases while members on a, b and c
/// send (every 20 ms) and a member on a (and one on b) watches; two rounds. Promise (brief,
/// item 1; `docs/cluster.md`, "One owner", "Acked means durable", "Live delivery is at most
/// once, history is complete"): "a member never sees live a message that history does not hold
/// under the same seq"; members resume from history after their last seq without gaps.
///
/// This failed (11 of 12 rounds over 5 runs) while the owner delivered to its own members
/// before the log acknowledged the write: `round 0: oa: seq 32 live Some("ua 11"), in history
/// Some("sc 9")`. In cluster mode a node's members now get a room's deliveries once the log
/// holds the writes before them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_owners_own_members_see_only_what_history_holds() {
    let server = server!();
    let mut bad = Vec::new();
    for round in 0..2 {
        let cluster = format!("ownlocal{round}");
        let proxy = Proxy::start(server.port()).await;
        let a = node_at(proxy.url(), &cluster, "a", |x| x).await;
        let b = node(&server, &cluster, "b").await;
        let c = node(&server, &cluster, "c").await;
        let (host, room) = room_on(&a, "ownlocal").await;
        let oa = a.login("oa").await.unwrap();
        let ob = b.login("ob").await.unwrap();
        join(&oa, room).await;
        join(&ob, room).await;
        let seen = [(Seen::of(&oa), "oa"), (Seen::of(&ob), "ob")];
        let acked: Acked = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        let mut remote = Vec::new();
        for (n, id) in [(&b, "b"), (&c, "c")] {
            let s = n.login(format!("s{id}")).await.unwrap();
            join(&s, room).await;
            remote.push(s.clone());
            senders.push(sender(
                s,
                room,
                format!("s{id}"),
                acked.clone(),
                stop.clone(),
                Duration::from_millis(20),
            ));
        }
        // A user of a's sends too: a's room accepts its sends locally until its appends fail.
        let ua = a.login("ua").await.unwrap();
        join(&ua, room).await;
        senders.push(sender(
            ua,
            room,
            "ua".into(),
            acked.clone(),
            stop.clone(),
            Duration::from_millis(20),
        ));
        wait_acked("30 messages", &acked, 30).await;
        proxy.cut();
        let_pass(3 * LEASE_TTL).await;
        proxy.heal();
        let before = acked.lock().len();
        wait_acked("30 messages after the heal", &acked, before + 30).await;
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            s.await.unwrap();
        }
        let end = send_ok(&remote[1], room, "the end").await;
        let h = history(&remote[1], room).await;
        check_history(&h, &acked.lock().clone(), "history");
        eprintln!(
            "round {round}: listed {:?}",
            members(&remote[1], room).await
        );
        for (s, who) in &seen {
            let who = format!("round {round}: {who}");
            let deadline = Instant::now() + Duration::from_secs(2);
            while !s.seqs().contains(&end.seq()) && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
            eprintln!(
                "{who}: got the end {}, last live {:?}, recoveries {}, removed {:?}",
                s.seqs().contains(&end.seq()),
                s.seqs().last(),
                s.recoveries(),
                s.room_events()
                    .iter()
                    .filter_map(is_removed)
                    .collect::<Vec<_>>()
            );
            for p in s.phantoms(&h).into_iter().take(3) {
                bad.push(format!("{who}: {p}"));
            }
            for f in s.order_faults(&BTreeSet::new()) {
                bad.push(format!("{who}: {f}"));
            }
            if s.recoveries() == 0 {
                bad.push(format!("{who} was not told the room recovered"));
            }
        }
        drop(host);
        for n in [a, b, c] {
            n.shutdown().await;
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The owner's node (a) loses NATS for 300 ms (less than the lease: it keeps the room) three
/// times while members on a, b and c send every 5 ms and a member on a and one on b watch.
/// Promise (brief, item 1; `docs/cluster.md`, "Acked means durable", "Live delivery is at most
/// once, history is complete"; `docs/semantics.md`, "Ordering": each message once, in the
/// room's order): whatever a member gets live, history holds under the same seq; gaps only with
/// `on_chat_room_recovered` after them.
///
/// This failed in every run (7 of 7) while the owner delivered to its own members before the
/// log acknowledged the write: at each blip the append failed, the room restarted from the log
/// and gave the seqs its members already got to other messages (`oa: 32 after 32`, `oa: seq 63
/// live Some("sb 18"), in history Some("sc 17")`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_blips_on_the_owners_connection_members_see_only_what_history_holds() {
    let server = server!();
    let proxy = Proxy::start(server.port()).await;
    let a = node_at(proxy.url(), "oblip", "a", |x| x).await;
    let b = node(&server, "oblip", "b").await;
    let c = node(&server, "oblip", "c").await;
    let (host, room) = room_on(&a, "oblip").await;
    let oa = a.login("oa").await.unwrap();
    let ob = b.login("ob").await.unwrap();
    join(&oa, room).await;
    join(&ob, room).await;
    let seen = [(Seen::of(&oa), "oa"), (Seen::of(&ob), "ob")];
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
            Duration::from_millis(5),
        ));
    }
    wait_acked("30 messages", &acked, 30).await;
    for _ in 0..3 {
        proxy.cut();
        let_pass(Duration::from_millis(300)).await;
        proxy.heal();
        let before = acked.lock().len();
        wait_acked("30 messages after a blip", &acked, before + 30).await;
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        eprintln!("sender errors: {:?}", s.await.unwrap());
    }
    let end = send_ok(&host, room, "the end").await;
    let h = history(&ob, room).await;
    check_history(&h, &acked.lock().clone(), "history");
    let mut bad = Vec::new();
    for (s, who) in &seen {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !s.seqs().contains(&end.seq()) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        if !s.seqs().contains(&end.seq()) {
            bad.push(format!("{who} does not get the room live after the blips"));
        }
        for p in s.phantoms(&h).into_iter().take(3) {
            bad.push(format!("{who}: {p}"));
        }
        for f in s.order_faults(&BTreeSet::new()) {
            bad.push(format!("{who}: {f}"));
        }
        eprintln!("{who}: {} recoveries", s.recoveries());
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// Node b (with members) is cut off from NATS while the owner destroys the room; b comes back
/// and, for three leases, its members try the room. Promise (`docs/cluster.md`: a node with
/// members "takes over" a room whose owner went; the last commit: its mirrors re-register with
/// "each room's owner"; `docs/semantics.md`: a destroyed room is gone): nothing brings the room
/// back: every call from b answers 705, no node lists it, and a fresh node that replays the
/// cluster finds it gone too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_destroyed_while_a_members_node_was_cut_off_stays_destroyed() {
    let server = server!();
    let proxy = Proxy::start(server.port()).await;
    let a = node(&server, "dcut", "a").await;
    let b = node_at(proxy.url(), "dcut", "b", |x| x).await;
    let (host, room) = room_on(&a, "dcut").await;
    let ub = b.login("ub").await.unwrap();
    let ub2 = b.login("ub2").await.unwrap();
    join(&ub, room).await;
    join(&ub2, room).await;
    let seen_b = Seen::of(&ub);
    send_ok(&host, room, "before").await;
    proxy.cut();
    host.chat_room_manager()
        .destroy_chat_room(&room)
        .await
        .unwrap();
    let_pass(2 * LEASE_TTL).await;
    proxy.heal();
    let mut bad = BTreeSet::new();
    let since = Instant::now();
    while since.elapsed() < 3 * LEASE_TTL {
        match send(&ub, room, "is it there?").await {
            Ok(m) => {
                bad.insert(format!("ub's send accepted (seq {})", m.seq()));
            }
            Err(e) if e.is_delivery_failure() => {}
            Err(e) if e.code() == 705 => {}
            Err(e) => {
                bad.insert(format!("ub's send: {} {e}", e.code()));
            }
        }
        match ub2.chat_room_manager().fetch_chat_room_info(&room).await {
            Ok(info) => {
                bad.insert(format!("info from b: {:?}", info.name));
            }
            Err(e) if e.is_delivery_failure() || e.code() == 705 => {}
            Err(e) => {
                bad.insert(format!("info from b: {} {e}", e.code()));
            }
        }
        let_pass(Duration::from_millis(100)).await;
    }
    let c = node(&server, "dcut", "c").await;
    let viewer = c.login("viewer").await.unwrap();
    let info = retry(|| {
        let rooms = viewer.chat_room_manager();
        async move { rooms.fetch_chat_room_info(&room).await }
    })
    .await;
    if info.as_ref().map_err(ChatError::code).err() != Some(705) {
        bad.insert(format!(
            "a fresh node: {:?}",
            info.map(|i| i.name).map_err(|e| e.to_string())
        ));
    }
    for (n, id) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        let v = n.login("lister").await.unwrap();
        let page = v
            .chat_room_manager()
            .fetch_public_chat_rooms(1, 100, None)
            .await
            .unwrap();
        if page.data.iter().any(|r| r.room_id == room) {
            bad.insert(format!("node {id} lists it"));
        }
    }
    eprintln!(
        "ub was told: removed {:?}, destroyed {}, recoveries {}",
        seen_b
            .room_events()
            .iter()
            .filter_map(is_removed)
            .collect::<Vec<_>>(),
        seen_b.has_event(|e| matches!(e, ChatRoomEvent::ChatRoomDestroyed { .. })),
        seen_b.recoveries()
    );
    assert!(
        bad.is_empty(),
        "the destroyed room after b came back: {bad:?}"
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// The owner's node (a) is cut off from NATS for three leases while the room is idle (node b,
/// with a member, takes it over); when a is back, each of a's six users sends, retrying
/// delivery failures (9xx) as a client does. Promise (`docs/cluster.md`, "NATS is
/// unreachable": "When the connection comes back, the node routes its calls to the rooms' new
/// owners"; the last commit: the node's mirrors "re-register with each room's owner";
/// `tests/cluster_review.rs`: "its users are still in the room (they never left)"): a's users
/// are members, their sends are accepted, and the member list has them.
///
/// This failed in every run (7 of 7) while a new owner restored the members another node told
/// it of only within two lease times of its takeover: a's users, telling it later, got 702 for
/// good. The first actor after a takeover now restores them, however late they tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_owners_users_are_still_members_after_the_heal() {
    let server = server!();
    let proxy = Proxy::start(server.port()).await;
    let a = node_at(proxy.url(), "back702", "a", |x| x).await;
    let b = node(&server, "back702", "b").await;
    let (host, room) = room_on(&a, "back702").await;
    let ub = b.login("ub").await.unwrap();
    join(&ub, room).await;
    let mut users = vec![host.clone()];
    for k in 0..5 {
        let u = a.login(format!("ua{k}")).await.unwrap();
        join(&u, room).await;
        users.push(u);
    }
    let seen: Vec<Seen> = users.iter().map(Seen::of).collect();
    send_ok(&ub, room, "before").await;
    proxy.cut();
    let_pass(3 * LEASE_TTL).await;
    proxy.heal();
    let healed = Instant::now();
    let mut tasks = Vec::new();
    for u in &users {
        let u = u.clone();
        tasks.push(tokio::spawn(async move {
            let first = retry(|| send(&u, room, "back"))
                .await
                .map(|m| m.seq())
                .map_err(|e| e.code());
            // Then five more seconds, 702 included: does it come back at all?
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut later = first;
            while later.is_err() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                later = send(&u, room, "back")
                    .await
                    .map(|m| m.seq())
                    .map_err(|e| e.code());
            }
            (u.current_user_id().to_string(), first, later)
        }));
    }
    let mut refused = Vec::new();
    for t in tasks {
        let (who, first, later) = t.await.unwrap();
        if first.is_err() {
            refused.push(format!("{who}: {first:?}, five seconds later {later:?}"));
        }
    }
    let took = healed.elapsed();
    let listed = members(&ub, room).await;
    let told: Vec<String> = seen
        .iter()
        .zip(&users)
        .map(|(s, u)| {
            format!(
                "{}: removed {:?}, recoveries {}",
                u.current_user_id(),
                s.room_events()
                    .iter()
                    .filter_map(is_removed)
                    .collect::<Vec<_>>(),
                s.recoveries()
            )
        })
        .collect();
    assert!(
        refused.is_empty(),
        "a's users after the heal ({took:?}): {refused:#?}\nlisted now: {listed:?}\ntold: \
         {told:#?}"
    );
    assert_eq!(listed.len(), 7, "listed: {listed:?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// The owner's node (a) is cut off from NATS for three seconds (longer than the lease and the
/// request timeout) and nobody else writes to the room meanwhile; five of a's users send one
/// message each during the cut, and a sixth sends one with an idempotency key. Promise
/// (`docs/semantics.md`): "A call that fails changes nothing, except a 901 timeout"; an
/// idempotent retry after the failure sends the message once. So after a is back and the room
/// takes new writes, history holds none of the five (unless their code was 901) and the keyed
/// message exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sends_that_failed_during_an_owner_cut_stay_out_of_history() {
    let server = server!();
    let proxy = Proxy::start(server.port()).await;
    let a = node_at(proxy.url(), "failed", "a", |x| x).await;
    let b = node(&server, "failed", "b").await;
    let (host, room) = room_on(&a, "failed").await;
    let ub = b.login("ub").await.unwrap();
    join(&ub, room).await;
    let mut writers = Vec::new();
    for k in 0..6 {
        let u = a.login(format!("ua{k}")).await.unwrap();
        join(&u, room).await;
        writers.push(u);
    }
    for i in 0..5 {
        send_ok(&host, room, &format!("before {i}")).await;
    }
    proxy.cut();
    let cut_at = Instant::now();
    let mut during = Vec::new();
    for (k, u) in writers.iter().enumerate().take(5) {
        let u = u.clone();
        during.push(tokio::spawn(async move {
            let text = format!("lost {k}");
            let t = Instant::now();
            let r = send(&u, room, &text).await;
            (text, r.map(|m| m.seq()).map_err(|e| e.code()), t.elapsed())
        }));
    }
    let keyed = || OutgoingMessage::text(room, "keyed").with_idempotency_key("the-one-key");
    let first_keyed = writers[5].chat_manager().send_message(keyed()).await;
    let mut calls = Vec::new();
    for d in during {
        calls.push(d.await.unwrap());
    }
    let_pass(Duration::from_secs(3).saturating_sub(cut_at.elapsed())).await;
    proxy.heal();
    // The retry goes on through delivery failures, and joins again on 702: after the heal a's
    // users may be out of the room (`a_cut_off_owners_users_are_still_members_after_the_heal`).
    let chat5 = writers[5].chat_manager();
    let deadline = Instant::now() + DEADLINE;
    let mut rejoined = false;
    let keyed_again = loop {
        match chat5.send_message(keyed()).await {
            Ok(m) => break m,
            Err(e) if e.code() == 702 && !rejoined => {
                join(&writers[5], room).await;
                rejoined = true;
            }
            Err(e) if e.is_delivery_failure() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => panic!("the keyed retry: {e}"),
        }
    };
    let after = send_ok(&ub, room, "after the cut").await;
    send_ok(&ub, room, "after the cut, again").await;
    let h = history(&ub, room).await;
    for (what, r, took) in &calls {
        eprintln!("during the cut: {what}: {r:?} in {took:?}");
    }
    eprintln!(
        "keyed: first {:?}, retried {} (rejoined first: {rejoined}); ub's write after the \
         cut: seq {}",
        first_keyed
            .as_ref()
            .map(ChatMessage::seq)
            .map_err(ChatError::code),
        keyed_again.seq(),
        after.seq()
    );
    let mut bad = failed_but_stored(&calls, &h);
    bad.extend(slow_or_unclear(&calls));
    let keyed_in_history: Vec<u64> = h
        .iter()
        .filter(|m| m.text() == Some("keyed"))
        .map(ChatMessage::seq)
        .collect();
    if keyed_in_history != [keyed_again.seq()] {
        bad.push(format!(
            "the keyed message is in history as {keyed_in_history:?}, its retry answered {}",
            keyed_again.seq()
        ));
    }
    let seqs: Vec<u64> = h.iter().map(ChatMessage::seq).collect();
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    if seqs != want {
        bad.push(format!("history has gaps or repeats: {seqs:?}"));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    a.shutdown().await;
    b.shutdown().await;
}

// ------------------------------------------------------------------------------------------
// 4. Moderation, presence and destroy across nodes
// ------------------------------------------------------------------------------------------

/// A troll on node c is shadow-banned; he, a talker on b and the host on a send at once.
/// Promise (README, "shadow bans"; `docs/cluster.md`, "Order per room"; "the audience rules are
/// the owner's"): the admin on b gets every message, the troll's marked, in the room's order
/// with no gaps; viewers on b and c get every message but the troll's, in order (their gaps
/// are exactly the troll's seqs). After the owner's node dies the ban holds on the new owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shadow_ban_order_and_audience_across_nodes_and_a_failover() {
    let server = server!();
    let a = node(&server, "shadow", "a").await;
    let b = node(&server, "shadow", "b").await;
    let c = node(&server, "shadow", "c").await;
    let (host, room) = room_on(&a, "shadow").await;
    let admin = b.login("admin").await.unwrap();
    let talker = b.login("talker").await.unwrap();
    let viewer_b = b.login("viewer-b").await.unwrap();
    let viewer_c = c.login("viewer-c").await.unwrap();
    let troll = c.login("troll").await.unwrap();
    for u in [&admin, &talker, &viewer_b, &viewer_c, &troll] {
        join(u, room).await;
    }
    host.chat_room_manager()
        .add_chat_room_admin(&room, "admin")
        .await
        .unwrap();
    admin
        .chat_room_manager()
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    let seen_admin = Seen::of(&admin);
    let seen_vb = Seen::of(&viewer_b);
    let seen_vc = Seen::of(&viewer_c);
    let trolls: Acked = Default::default();
    let others: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = vec![
        sender(
            troll.clone(),
            room,
            "troll".into(),
            trolls.clone(),
            stop.clone(),
            Duration::from_millis(3),
        ),
        sender(
            talker.clone(),
            room,
            "talker".into(),
            others.clone(),
            stop.clone(),
            Duration::from_millis(3),
        ),
        sender(
            host.clone(),
            room,
            "host".into(),
            others.clone(),
            stop.clone(),
            Duration::from_millis(3),
        ),
    ];
    wait_acked("60 messages of the troll", &trolls, 60).await;
    wait_acked("60 messages of the others", &others, 60).await;
    // The owner dies mid-traffic; the troll and the talker go on through the failover.
    drop(senders.pop());
    drop(host);
    drop(a);
    let (t0, o0) = (trolls.lock().len(), others.lock().len());
    wait_acked("30 more of the troll after the failover", &trolls, t0 + 30).await;
    wait_acked("30 more of the talker after the failover", &others, o0 + 30).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let end = send_ok(&talker, room, "the end").await;
    let troll_seqs: BTreeSet<u64> = trolls.lock().iter().map(|m| m.0).collect();
    let mut bad = Vec::new();
    for (who, seen, staff) in [
        ("admin", &seen_admin, true),
        ("viewer-b", &seen_vb, false),
        ("viewer-c", &seen_vc, false),
    ] {
        seen.wait_seq(&format!("{who} gets the end"), end.seq())
            .await;
        let got = seen.messages();
        let leaked: Vec<u64> = got
            .iter()
            .filter(|m| m.from().as_str() == "troll")
            .map(ChatMessage::seq)
            .collect();
        if staff {
            let unmarked: Vec<u64> = got
                .iter()
                .filter(|m| m.from().as_str() == "troll" && !m.is_shadowed())
                .map(ChatMessage::seq)
                .collect();
            if !unmarked.is_empty() {
                bad.push(format!("{who} got the troll's {unmarked:?} unmarked"));
            }
            for f in seen.order_faults(&BTreeSet::new()) {
                bad.push(format!("{who}: {f}"));
            }
        } else {
            if !leaked.is_empty() {
                bad.push(format!(
                    "{who} got {} of the troll's messages: {:?}",
                    leaked.len(),
                    &leaked[..leaked.len().min(10)]
                ));
            }
            let seqs = seen.seqs();
            if let Some(w) = seqs.windows(2).find(|w| w[1] <= w[0]) {
                bad.push(format!("{who}: {} after {}", w[1], w[0]));
            }
            // Its gaps are the troll's (or told with a recovery notice).
            let gaps_not_trolls: Vec<u64> = seqs
                .windows(2)
                .flat_map(|w| (w[0] + 1)..w[1])
                .filter(|s| !troll_seqs.contains(s))
                .collect();
            if !gaps_not_trolls.is_empty() && seen.recoveries() == 0 {
                bad.push(format!("{who} missed {gaps_not_trolls:?} untold"));
            }
        }
    }
    let list = admin
        .chat_room_manager()
        .fetch_chat_room_shadow_ban_list(&room, 1, 20)
        .await
        .unwrap();
    assert_eq!(list.total, 1, "the shadow ban list after the failover");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    b.shutdown().await;
    c.shutdown().await;
}

/// Hold for review (1 s) with the staff and viewers on other nodes than the owner: a member on b
/// sends three questions, the host sends between them, an admin on c deletes the second while
/// it is held. Promise (README): the admin gets the members' messages at once, marked; the
/// viewers on b and c (and on the owner's node) get them in the room's order once their hold
/// passed, never the deleted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hold_for_review_with_staff_and_viewers_on_other_nodes() {
    let server = server!();
    let a = node(&server, "hold", "a").await;
    let b = node(&server, "hold", "b").await;
    let c = node(&server, "hold", "c").await;
    let (host, room) = room_on(&a, "hold").await;
    let asker = b.login("asker").await.unwrap();
    let admin = c.login("admin").await.unwrap();
    let viewers = [
        a.login("viewer-a").await.unwrap(),
        b.login("viewer-b").await.unwrap(),
        c.login("viewer-c").await.unwrap(),
    ];
    for u in [&asker, &admin].into_iter().chain(viewers.iter()) {
        join(u, room).await;
    }
    host.chat_room_manager()
        .add_chat_room_admin(&room, "admin")
        .await
        .unwrap();
    host.chat_room_manager()
        .set_chat_room_hold(&room, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    let seen_admin = Seen::of(&admin);
    let seen_viewers: Vec<Seen> = viewers.iter().map(Seen::of).collect();
    let q1 = send_ok(&asker, room, "question 1").await;
    let h1 = send_ok(&host, room, "host 1").await;
    let q2 = send_ok(&asker, room, "question 2 (deleted)").await;
    let h2 = send_ok(&host, room, "host 2").await;
    let q3 = send_ok(&asker, room, "question 3").await;
    let sent_at = Instant::now();
    assert!(q1.is_held() && q2.is_held() && q3.is_held());
    seen_admin
        .wait_seq("the admin gets q2 at once", q2.seq())
        .await;
    admin
        .chat_room_manager()
        .delete_chat_room_message(&room, q2.seq())
        .await
        .unwrap();
    let deleted_after = sent_at.elapsed();
    let h3 = send_ok(&host, room, "host 3").await;
    let mut bad = Vec::new();
    for (seen, v) in seen_viewers.iter().zip(&viewers) {
        let who = v.current_user_id().to_string();
        seen.wait_seq(&format!("{who} gets q3 after its hold"), q3.seq())
            .await;
        seen.wait_seq(&format!("{who} gets host 3"), h3.seq()).await;
        let seqs = seen.seqs();
        let want = vec![q1.seq(), h1.seq(), h2.seq(), q3.seq(), h3.seq()];
        if seqs != want {
            bad.push(format!(
                "{who} got {seqs:?}, not {want:?} (q2 {} deleted)",
                q2.seq()
            ));
        }
        if seen.messages().iter().any(ChatMessage::is_held) {
            bad.push(format!("{who} got a message marked held"));
        }
    }
    let admin_got: Vec<(u64, bool)> = seen_admin
        .messages()
        .iter()
        .map(|m| (m.seq(), m.is_held()))
        .collect();
    for q in [&q1, &q2, &q3] {
        if !admin_got.contains(&(q.seq(), true)) {
            bad.push(format!(
                "the admin did not get {} marked held: {admin_got:?}",
                q.seq()
            ));
        }
    }
    let h = history(&viewers[2], room).await;
    let stored = h.iter().find(|m| m.seq() == q2.seq());
    if !stored.is_some_and(ChatMessage::is_recalled) {
        bad.push(format!("q2 in a viewer's history: {stored:?}"));
    }
    eprintln!("q2 deleted {deleted_after:?} after it was sent (hold 1 s)");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// Members on b and c send without pause while the owner, logged in on c, destroys the room;
/// right after, the owner's node (a) is dropped. Promise (`docs/semantics.md`, "Room events";
/// `docs/cluster.md`): every member on every node is told (`on_chat_room_destroyed`, then
/// `on_removed_from_chat_room(Destroyed)`); no send called after the destroy returned is
/// accepted; the room stays gone on every node (705) after the failover a node with members
/// would make; no node lists it; and new rooms never get its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn destroy_while_members_on_three_nodes_send_then_the_owner_dies() {
    let server = server!();
    let a = node(&server, "destroy", "a").await;
    let b = node(&server, "destroy", "b").await;
    let c = node(&server, "destroy", "c").await;
    let (host_a, room) = room_on(&a, "destroy").await;
    let host_c = c.login("host").await.unwrap();
    let mut members_seen = Vec::new();
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let late: Arc<Mutex<Vec<String>>> = Default::default();
    let mut senders = Vec::new();
    for (n, id) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        for k in 0..2 {
            let u = n.login(format!("m{id}{k}")).await.unwrap();
            join(&u, room).await;
            members_seen.push((Seen::of(&u), u.clone()));
            let (acked, stop, done, late) =
                (acked.clone(), stop.clone(), done.clone(), late.clone());
            senders.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let after_destroy = done.load(Ordering::SeqCst);
                    let text = format!("{} {n}", u.current_user_id());
                    match send(&u, room, &text).await {
                        Ok(m) => {
                            if after_destroy {
                                late.lock().push(format!("{text} accepted as {}", m.seq()));
                            }
                            acked.lock().push((m.seq(), m.msg_id(), text));
                            n += 1;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }));
        }
    }
    wait_acked("60 messages", &acked, 60).await;
    host_c
        .chat_room_manager()
        .destroy_chat_room(&room)
        .await
        .unwrap();
    done.store(true, Ordering::SeqCst);
    drop(host_a);
    drop(a);
    // Two leases: a node with members would take the room over by now.
    let_pass(2 * LEASE_TTL).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let mut bad: Vec<String> = late.lock().clone();
    for (seen, u) in members_seen
        .iter()
        .filter(|(_, u)| !u.current_user_id().as_str().starts_with("ma"))
    {
        let who = u.current_user_id().to_string();
        seen.wait_event(&format!("{who} told the room was destroyed"), |e| {
            matches!(e, ChatRoomEvent::ChatRoomDestroyed { .. })
        })
        .await;
        seen.wait_event(&format!("{who} told it was removed"), |e| {
            is_removed(e) == Some(LeaveReason::Destroyed)
        })
        .await;
    }
    for (n, id) in [(&b, "b"), (&c, "c")] {
        let viewer = n.login("viewer").await.unwrap();
        let info = retry(|| {
            let rooms = viewer.chat_room_manager();
            async move { rooms.fetch_chat_room_info(&room).await }
        })
        .await;
        if info.as_ref().map_err(ChatError::code).err() != Some(705) {
            bad.push(format!(
                "node {id}: the destroyed room's info {:?}",
                info.map(|i| i.name).map_err(|e| e.to_string())
            ));
        }
        let joined = retry(|| {
            let rooms = viewer.chat_room_manager();
            async move { rooms.join_chat_room(&room).await }
        })
        .await;
        if joined.as_ref().map_err(ChatError::code).err() != Some(705) {
            bad.push(format!(
                "node {id}: joining the destroyed room: {:?}",
                joined.map(|i| i.member_count).map_err(|e| e.to_string())
            ));
        }
        let page = viewer
            .chat_room_manager()
            .fetch_public_chat_rooms(1, 100, None)
            .await
            .unwrap();
        if page.data.iter().any(|r| r.room_id == room) {
            bad.push(format!("node {id} lists the destroyed room"));
        }
    }
    // New rooms, from both nodes: none gets the destroyed room's id.
    let mut ids = BTreeSet::from([room]);
    for k in 0..6 {
        let n = if k % 2 == 0 { &b } else { &c };
        let h = n.login("host").await.unwrap();
        let r = retry(|| {
            let rooms = h.chat_room_manager();
            async move {
                rooms
                    .create_chat_room(CreateChatRoomOptions::new(format!("new {k}")))
                    .await
            }
        })
        .await
        .unwrap();
        if !ids.insert(r.room_id) {
            bad.push(format!("a new room got a used id: {}", r.room_id));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    b.shutdown().await;
    c.shutdown().await;
}

/// Twenty users on node b go offline and online again, ten times each, all at once; a third end
/// offline, the others online (the engines share a ManualClock). Promise (`docs/semantics.md`,
/// "Concurrency": "a user who ends online is online everywhere and receives everything sent
/// after it came online"; `docs/cluster.md`: presence calls go to the owner "in order, one
/// stream of calls per node"): the owner's count settles on exactly the online ones (it passes
/// through others while the notices come in); past the grace period
/// exactly the offline ones are removed; the online ones get the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_flapping_on_another_node() {
    let server = server!();
    let clock = ManualClock::new(1_700_000_000_000);
    let a = node_with_clock(&server, "flap2", "a", &clock).await;
    let b = node_with_clock(&server, "flap2", "b", &clock).await;
    let (host, room) = room_on(&a, "flap2").await;
    let host_seen = Seen::of(&host);
    let mut users = Vec::new();
    for k in 0..20 {
        let u = b.login(format!("p{k}")).await.unwrap();
        join(&u, room).await;
        users.push(u);
    }
    let mut tasks = Vec::new();
    for (k, u) in users.iter().enumerate() {
        let u = u.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                u.disconnect().unwrap();
                tokio::task::yield_now().await;
                u.reconnect().unwrap();
                tokio::task::yield_now().await;
            }
            if k % 3 == 0 {
                u.disconnect().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let offline: BTreeSet<String> = (0..20)
        .filter(|k| k % 3 == 0)
        .map(|k| format!("p{k}"))
        .collect();
    let want_online = 1 + 20 - offline.len();
    // The owner's count must settle there: the same for half a second (the flapping's
    // notices are all in).
    let mut stats = (0, 0);
    let mut since = Instant::now();
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        let s = a.room_stats(&room).await.unwrap();
        let now = (s.member_count, s.online_count);
        if now != stats || now != (21, want_online) {
            since = Instant::now();
        }
        stats = now;
        if since.elapsed() >= Duration::from_millis(500) {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(
        stats,
        (21, want_online),
        "members and online on the owner, once settled"
    );
    clock.advance(Duration::from_secs(6 * 60));
    for who in &offline {
        host_seen
            .wait_event(&format!("{who} removed after the grace period"), |e| {
                is_member_exited(e, who)
            })
            .await;
    }
    let mut bad = Vec::new();
    for u in &users {
        let who = u.current_user_id().to_string();
        if offline.contains(&who) {
            continue;
        }
        if host_seen.has_event(|e| is_member_exited(e, &who)) {
            bad.push(format!("{who}, online, removed as offline"));
        }
    }
    let seen: Vec<(String, Seen)> = users
        .iter()
        .filter(|u| !offline.contains(u.current_user_id().as_str()))
        .map(|u| (u.current_user_id().to_string(), Seen::of(u)))
        .collect();
    let m = send_ok(&host, room, "to those online").await;
    for (who, s) in &seen {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !s.seqs().contains(&m.seq()) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        if !s.seqs().contains(&m.seq()) {
            bad.push(format!("{who}, online, does not get the room's messages"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    a.shutdown().await;
    b.shutdown().await;
}

/// Dave is in a room through node b and has a second device on node c (attached: 701); node b
/// is cut off from NATS and the grace period passes meanwhile (the engines share a
/// ManualClock). Promise (`docs/cluster.md`, "Presence": "The owner counts a member online if any
/// of its sessions is"; `tests/cluster.rs`: "Presence across nodes: a user is offline only when
/// its sessions on every node are"): dave's device on c is online, so he is never removed; once
/// b is back he can send from both devices.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_online_on_one_node_stays_while_his_other_node_is_cut_off() {
    let server = server!();
    let proxy = Proxy::start(server.port()).await;
    let clock = ManualClock::new(1_700_000_000_000);
    let a = node_with_clock(&server, "twodev", "a", &clock).await;
    let clock_b = clock.clone();
    let b = node_at(proxy.url(), "twodev", "b", move |x| x.clock(clock_b)).await;
    let c = node_with_clock(&server, "twodev", "c", &clock).await;
    let (host, room) = room_on(&a, "twodev").await;
    let host_seen = Seen::of(&host);
    let dave_b = b.login("dave").await.unwrap();
    let dave_c = c.login("dave").await.unwrap();
    join(&dave_b, room).await;
    let again = dave_c.chat_room_manager().join_chat_room(&room).await;
    assert_eq!(again.map(|_| ()).unwrap_err().code(), 701);
    let eve = b.login("eve").await.unwrap();
    join(&eve, room).await;
    wait_for_presence(&a, room, (3, 3)).await;
    proxy.cut();
    // Eve (only on b) goes offline on the owner; dave stays online through c.
    wait_for_presence(&a, room, (3, 2)).await;
    clock.advance(Duration::from_secs(10 * 60));
    host_seen
        .wait_event("eve removed after the grace period", |e| {
            is_member_exited(e, "eve")
        })
        .await;
    let dave_removed = host_seen.has_event(|e| is_member_exited(e, "dave"));
    let from_c = send(&dave_c, room, "from c").await.map(|m| m.seq());
    proxy.heal();
    let from_b = retry(|| send(&dave_b, room, "from b"))
        .await
        .map(|m| m.seq());
    assert!(
        !dave_removed && from_c.is_ok() && from_b.is_ok(),
        "dave, online on c: removed {dave_removed}, send from c {from_c:?}, from b {from_b:?}"
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

/// Hibernation with members on another node (the engines share a ManualClock; rooms hibernate
/// as soon as they are idle). The room's owner (on a) and an admin (on b) go offline, both
/// exempt from the grace period. Promise (`docs/semantics.md`, "Idle rooms hibernate": "Nothing
/// a user can see changes: ... its offline exempt members ... are as they were, and no recovery
/// notice is sent"): when they come back and the host sends, the admin on b is still an admin
/// and a member, and gets the message live.
///
/// This failed when the room hibernated (it woke without its members on other nodes: the admin
/// got 702, untold). A room with members on other nodes now stays in memory (`docs/cluster.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_with_an_offline_admin_on_another_node_does_not_hibernate() {
    let server = server!();
    let clock = ManualClock::new(1_700_000_000_000);
    let limits = harness_limits().with_room_hibernate_after(Some(Duration::ZERO));
    let mk = |id: &'static str| {
        let (clock, limits) = (clock.clone(), limits.clone());
        node_at(server.url(), "sleep", id, move |x| {
            x.clock(clock).limits(limits)
        })
    };
    let a = mk("a").await;
    let b = mk("b").await;
    let fault = hibernation_scenario(&a, &b, &clock, false).await;
    assert!(fault.is_none(), "{}", fault.unwrap_or_default());
    a.shutdown().await;
    b.shutdown().await;
}

/// The control: the same on one engine (no cluster) holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_hibernates_with_an_offline_admin_on_one_node() {
    let clock = ManualClock::new(1_700_000_000_000);
    let one = Engine::builder()
        .limits(harness_limits().with_room_hibernate_after(Some(Duration::ZERO)))
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    let fault = hibernation_scenario(&one, &one, &clock, true).await;
    assert!(fault.is_none(), "{}", fault.unwrap_or_default());
    one.shutdown().await;
}

/// The room on `a`, its admin on `b`: what breaks the promise, if anything. The room sleeps
/// (`sleeps`, one engine), or stays awake through several sweeps (its admin on another node).
async fn hibernation_scenario(
    a: &Engine,
    b: &Engine,
    clock: &ManualClock,
    sleeps: bool,
) -> Option<String> {
    let (host, room) = room_on(a, "sleep").await;
    let admin = b.login("admin").await.unwrap();
    join(&admin, room).await;
    host.chat_room_manager()
        .add_chat_room_admin(&room, "admin")
        .await
        .unwrap();
    let seen = Seen::of(&admin);
    send_ok(&host, room, "before").await;
    host.disconnect().unwrap();
    admin.disconnect().unwrap();
    wait_for_presence(a, room, (2, 0)).await;
    // The sweep runs about once a minute of engine time.
    let deadline = Instant::now() + DEADLINE;
    if sleeps {
        while a.rooms_in_memory() > 0 {
            assert!(Instant::now() < deadline, "the room never hibernates");
            clock.advance(Duration::from_secs(61));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    } else {
        for _ in 0..5 {
            clock.advance(Duration::from_secs(61));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(a.rooms_in_memory(), 1, "the room stays in memory");
    }
    admin.reconnect().unwrap();
    host.reconnect().unwrap();
    let m = send_ok(&host, room, "after the sleep").await;
    let info = host
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    let listed = members(&host, room).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while !seen.seqs().contains(&m.seq()) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let got = seen.seqs().contains(&m.seq());
    let sent = send(&admin, room, "the admin").await.map(|m| m.seq());
    (!(got && listed.contains(&"admin".to_string()) && sent.is_ok())).then(|| {
        format!(
            "after the room slept: the admin (other node) got the message {got}, listed \
             {listed:?}, admins {:?}, its send {:?}, told: removed {:?}, recoveries {}",
            info.admin_list,
            sent.map_err(|e| e.code()),
            seen.room_events()
                .iter()
                .filter_map(is_removed)
                .collect::<Vec<_>>(),
            seen.recoveries()
        )
    })
}

/// Moderation racing sends from other nodes: a pest on c sends without pause while an admin on
/// b blocks him; a second pest on c while the admin mutes her; a member on b while the host
/// mutes everyone. Promise (`docs/semantics.md`: a call is `Ok` once applied; one node orders a
/// room's commands): once each call returned, a message the host sends is ordered after it, so
/// no message of its target has a later seq, and every send its target starts afterwards fails
/// (210 or 702 for the blocked, 215 for the muted, 219 for mute-all).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn moderation_racing_sends_from_other_nodes() {
    let server = server!();
    let a = node(&server, "modrace", "a").await;
    let b = node(&server, "modrace", "b").await;
    let c = node(&server, "modrace", "c").await;
    let (host, room) = room_on(&a, "modrace").await;
    let admin = b.login("admin").await.unwrap();
    let blocked = c.login("blocked").await.unwrap();
    let muted = c.login("muted").await.unwrap();
    let member = b.login("member").await.unwrap();
    for u in [&admin, &blocked, &muted, &member] {
        join(u, room).await;
    }
    host.chat_room_manager()
        .add_chat_room_admin(&room, "admin")
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Each target's sends: (started after its sanction returned, outcome).
    type Outcomes = Arc<Mutex<Vec<(bool, Result<u64, u32>)>>>;
    let mut loops = Vec::new();
    let mut flags = Vec::new();
    let mut outcomes: Vec<Outcomes> = Vec::new();
    for u in [&blocked, &muted, &member] {
        let flag = Arc::new(AtomicBool::new(false));
        let out: Outcomes = Default::default();
        let (u, stop, f, o) = (u.clone(), stop.clone(), flag.clone(), out.clone());
        loops.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let after = f.load(Ordering::SeqCst);
                let r = send(&u, room, &format!("{} {n}", u.current_user_id())).await;
                o.lock()
                    .push((after, r.map(|m| m.seq()).map_err(|e| e.code())));
                n += 1;
            }
        }));
        flags.push(flag);
        outcomes.push(out);
    }
    let mut marks = Vec::new();
    let rooms = admin.chat_room_manager();
    let_pass(Duration::from_millis(200)).await;
    rooms
        .block_chat_room_members(&room, ["blocked"])
        .await
        .unwrap();
    flags[0].store(true, Ordering::SeqCst);
    marks.push(send_ok(&host, room, "after the block").await.seq());
    let_pass(Duration::from_millis(200)).await;
    rooms
        .mute_chat_room_members(&room, ["muted"], MuteDuration::Forever)
        .await
        .unwrap();
    flags[1].store(true, Ordering::SeqCst);
    marks.push(send_ok(&host, room, "after the mute").await.seq());
    let_pass(Duration::from_millis(200)).await;
    host.chat_room_manager()
        .mute_all_chat_room_members(&room)
        .await
        .unwrap();
    flags[2].store(true, Ordering::SeqCst);
    marks.push(send_ok(&host, room, "after mute-all").await.seq());
    let_pass(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let h = history(&host, room).await;
    let mut bad = Vec::new();
    for (i, (who, codes)) in [
        ("blocked", &[210, 702][..]),
        ("muted", &[215][..]),
        ("member", &[219][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let accepted_before = outcomes[i]
            .lock()
            .iter()
            .filter(|(a, r)| !a && r.is_ok())
            .count();
        assert!(
            accepted_before > 0,
            "{who} sent nothing before its sanction"
        );
        for (after, r) in outcomes[i].lock().iter() {
            match r {
                Ok(seq) if *after => {
                    bad.push(format!("{who}'s send after the sanction: seq {seq}"))
                }
                Err(code) if *after && !codes.contains(code) => {
                    bad.push(format!("{who}'s send after the sanction: code {code}"))
                }
                _ => {}
            }
        }
        let later: Vec<u64> = h
            .iter()
            .filter(|m| m.from().as_str() == who && m.seq() > marks[i])
            .map(ChatMessage::seq)
            .collect();
        if !later.is_empty() {
            bad.push(format!(
                "{who} has messages ordered after its sanction (mark {}): {later:?}",
                marks[i]
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

// ------------------------------------------------------------------------------------------
// SIGKILL of the owner's process (helpers from `tests/cluster_review.rs`)
// ------------------------------------------------------------------------------------------

/// The owner runs as a process of its own (`examples/cluster_node`) and is killed with SIGKILL
/// while its own user has 200 sends in flight, members on b and c send, and 20 users on b and c
/// are joining. Promise (brief, items 1 and 2; `docs/cluster.md`): nothing acknowledged (by the
/// killed process too) is lost, history has no gaps; every joiner whose join was answered `Ok`
/// is a member after the failover; what every member on b and c got live is history's, in
/// order, each once, gaps only with `on_chat_room_recovered` after them; the observers are told
/// the room recovered.
///
/// Fixed: a joiner whose join reached the owner (its `Joined` and replay came) but was not
/// answered before the SIGKILL, on a node that then took the room, joined again there and got
/// the join replay a second time (`j10: 226 after 235`, about 1 run in 20); its join there now
/// replays only what it had not got, and tells it `on_chat_room_recovered` if it missed some.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_owner_while_users_join_from_two_nodes() {
    let server = server!();
    let mut owner = Process::spawn(&server, "kjoin", "a");
    owner
        .wait("ready", |lines| {
            lines.iter().find(|v| v.get("ready").is_some()).cloned()
        })
        .await;
    for (op, fields) in [
        ("super_admin", serde_json::json!({ "user": "host" })),
        ("login", serde_json::json!({ "user": "host" })),
        ("login", serde_json::json!({ "user": "ua" })),
    ] {
        owner.call(op, fields).await;
    }
    let created = owner
        .call(
            "create",
            serde_json::json!({ "user": "host", "name": "killed" }),
        )
        .await;
    let room_text = created["room"].as_str().unwrap().to_string();
    let room: RoomId = room_text.parse().unwrap();
    owner
        .call(
            "join",
            serde_json::json!({ "user": "ua", "room": room_text }),
        )
        .await;
    let b = node(&server, "kjoin", "b").await;
    let c = node(&server, "kjoin", "c").await;
    let acked: Acked = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut observers = Vec::new();
    for (n, id) in [(&b, "b"), (&c, "c")] {
        let o = n.login(format!("o{id}")).await.unwrap();
        join(&o, room).await;
        observers.push((Seen::of(&o), o));
        let s = n.login(format!("s{id}")).await.unwrap();
        join(&s, room).await;
        senders.push(sender(
            s,
            room,
            format!("s{id}"),
            acked.clone(),
            stop.clone(),
            Duration::from_millis(2),
        ));
    }
    wait_acked("30 messages before the kill", &acked, 30).await;
    let first = owner.next_id;
    for i in 0..200 {
        owner.send(
            "send",
            serde_json::json!({ "user": "ua", "room": room_text, "text": format!("ua {i}") }),
        );
    }
    let mut joiners = Vec::new();
    let mut joins = Vec::new();
    for k in 0..20 {
        let n = if k % 2 == 0 { &b } else { &c };
        let u = n.login(format!("j{k}")).await.unwrap();
        joiners.push((Seen::of(&u), u.clone()));
        joins.push(tokio::spawn(async move { join(&u, room).await }));
    }
    owner
        .wait("10 of ua's sends answered", move |lines| {
            let n = lines
                .iter()
                .filter(|v| {
                    v.get("id")
                        .and_then(serde_json::Value::as_u64)
                        .is_some_and(|id| id >= first)
                })
                .count();
            (n >= 10).then_some(())
        })
        .await;
    owner.child.kill().unwrap(); // SIGKILL
    owner.child.wait().unwrap();
    let mut a_acked = Vec::new();
    for (i, id) in (first..first + 200).enumerate() {
        if let Some(seq) = owner
            .answer(id)
            .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64))
        {
            let answer = owner.answer(id).unwrap();
            a_acked.push((
                seq,
                answer["msg_id"].as_str().unwrap().to_string(),
                format!("ua {i}"),
            ));
        }
    }
    for j in joins {
        j.await.unwrap();
    }
    let before = acked.lock().len();
    wait_acked("30 messages after the kill", &acked, before + 30).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let mut bad = Vec::new();
    let listed = members(&observers[0].1, room).await;
    for (_, u) in &joiners {
        let who = u.current_user_id().to_string();
        if !listed.contains(&who) {
            bad.push(format!("{who} joined (Ok) but is not listed"));
        }
        let text = format!("{who} still in");
        match retry(|| send(u, room, &text)).await {
            Ok(m) => acked.lock().push((m.seq(), m.msg_id(), text)),
            Err(e) => bad.push(format!("{who} joined (Ok) but cannot send: {e}")),
        }
    }
    let end = send_ok(&observers[0].1, room, "the end").await;
    acked
        .lock()
        .push((end.seq(), end.msg_id(), "the end".to_string()));
    let h = history(&observers[1].1, room).await;
    check_history(&h, &acked.lock().clone(), "history");
    let by_seq: BTreeMap<u64, &ChatMessage> = h.iter().map(|m| (m.seq(), m)).collect();
    for (seq, id, text) in &a_acked {
        if !by_seq
            .get(seq)
            .is_some_and(|m| m.msg_id().to_string() == *id && m.text() == Some(text))
        {
            bad.push(format!(
                "acknowledged by the killed owner, then lost: {seq} {text}"
            ));
        }
    }
    for (seen, u) in observers.iter().chain(joiners.iter()) {
        let who = u.current_user_id().to_string();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !seen.seqs().contains(&end.seq()) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        // (ob sent the end: a sender does not get its own.)
        if !seen.seqs().contains(&end.seq()) && who != "ob" {
            bad.push(format!(
                "{who} does not get the room live (last {:?})",
                seen.seqs().last()
            ));
        }
        for f in seen.order_faults(&own_seqs(&h, &who)) {
            bad.push(format!("{who}: {f}"));
        }
        for p in seen.phantoms(&h).into_iter().take(3) {
            bad.push(format!("{who}: {p}"));
        }
        if who.starts_with('o') && seen.recoveries() == 0 {
            bad.push(format!("{who} was not told the room recovered"));
        }
    }
    eprintln!(
        "{} of ua's sends acknowledged before the kill; history {} messages",
        a_acked.len(),
        h.len()
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    b.shutdown().await;
    c.shutdown().await;
}
