//! The cluster report: cluster mode (the `cluster` feature) measured in one run, side by side,
//! against one nats-server:
//!
//! 1. **One node**: one room of N members, all on one engine in cluster mode; the room's owner
//!    sends M messages, each send awaited; every member counts what its handler gets.
//! 2. **Two nodes**: the same room with its members half on node a (the room's owner, where the
//!    sender is) and half on node b: cross-node deliveries/s, and latency on each node.
//! 3. **Failover**: three nodes; the room owned by a, its members on b and c. Node a stops
//!    abruptly (its last handle dropped, no shutdown) while its sender is sending; how long until
//!    a send from b succeeds again, and until c's members are told the room recovered. Then the
//!    checks: c's members have every sequence number up to the last they got once they filled
//!    from history, and every message acknowledged before node a went is in history.
//!
//! `cargo run --release --example cluster_report -- [--quick] [--members N] [--messages M]
//! [--rate R] [--failover-members F] [--rounds K] [--lease-ttl-ms MS] [--nats URL]
//! [--only one|two|failover] [--kill drop|shutdown|shutdown-keep] [--deadline-s S]`
//!
//! - `--quick`: 1,000 members, 200 messages, 200 failover members (a smoke run).
//! - `--rate R`: the sender paces itself at R messages/s (default: as fast as awaited sends
//!   go, which measures throughput; latency then includes the backlog the sender builds).
//! - `--rounds K`: the failover run K times (default 3), each in a cluster of its own: its
//!   time depends on where in the lease's renewal period the owner goes.
//! - `--kill`: how node a goes: its last handles dropped without shutdown (default: the
//!   abrupt stop), `Engine::shutdown` then dropped, `Engine::shutdown` with its handles kept,
//!   or its `Engine` dropped with a `ChatClient` of it kept (`drop-keep-client`).
//!
//! Without `--nats` it starts a throwaway nats-server (`roomcast_cluster::testing`); without
//! one installed it says so and exits with code 2. It exits with 1 if a check fails. Each run
//! uses cluster names of its own, so that runs against one `--nats` server do not mix.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use roomcast::{
    AttributeValue, ChatClient, ChatError, ChatEventHandler, ChatMessage, ChatRoomEventHandler,
    ClusterConfig, CreateChatRoomOptions, Engine, HistoryQuery, MessageId, OutgoingMessage, RoomId,
};
use roomcast_cluster::testing::NatsServer;
use roomcast_workspace::scale::report_limits;
use roomcast_workspace::{Latencies, Percentiles};

/// The attribute that carries a message's send time (µs since [`START`]).
const SENT_AT: &str = "t";

/// How many joins are in flight at once while a room fills.
const JOIN_CONCURRENCY: usize = 128;

/// A wait for deliveries gives up after this long without any progress.
const STALL: Duration = Duration::from_secs(15);

/// The time base of every latency sample.
static START: OnceLock<Instant> = OnceLock::new();

fn now_us() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

struct Args {
    members: usize,
    messages: usize,
    /// Messages per second for the sender (`None`: as fast as awaited sends allow).
    rate: Option<f64>,
    failover_members: usize,
    lease_ttl: Duration,
    nats: Option<String>,
    /// Only this section: `one`, `two` or `failover`.
    only: Option<String>,
    /// How many times the failover run is repeated.
    rounds: usize,
    /// How long the failover run's sends from b may go on failing (plus 4 lease TTLs).
    deadline: Duration,
    /// How node a goes in the failover run: dropped (`drop`, the default) or shut down first.
    kill: Kill,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kill {
    /// Its last handles dropped without `shutdown`.
    Drop,
    /// `Engine::shutdown`, then its handles dropped.
    Shutdown,
    /// `Engine::shutdown`, its handles kept until the end of the run (as an application that
    /// keeps its `Engine` value after shutting it down).
    ShutdownKeep,
    /// Its last `Engine` handle dropped without shutdown, its sender's `ChatClient` kept.
    DropKeepClient,
}

fn args() -> Args {
    let mut a = Args {
        members: 10_000,
        messages: 2_000,
        rate: None,
        failover_members: 1_000,
        lease_ttl: Duration::from_secs(1),
        nats: None,
        only: None,
        deadline: Duration::from_secs(30),
        rounds: 3,
        kill: Kill::Drop,
    };
    let (mut members, mut messages, mut failover) = (None, None, None);
    let mut quick = false;
    let mut it = std::env::args().skip(1);
    let num = |v: Option<String>, flag: &str| -> f64 {
        v.and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number"))
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--quick" => quick = true,
            "--members" => members = Some(num(it.next(), "--members") as usize),
            "--messages" => messages = Some(num(it.next(), "--messages") as usize),
            "--failover-members" => failover = Some(num(it.next(), "--failover-members") as usize),
            "--rate" => a.rate = Some(num(it.next(), "--rate")),
            "--lease-ttl-ms" => {
                a.lease_ttl = Duration::from_millis(num(it.next(), "--lease-ttl-ms") as u64)
            }
            "--nats" => a.nats = Some(it.next().expect("--nats URL")),
            "--only" => a.only = it.next(),
            "--rounds" => a.rounds = (num(it.next(), "--rounds") as usize).max(1),
            "--deadline-s" => a.deadline = Duration::from_secs_f64(num(it.next(), "--deadline-s")),
            "--kill" => {
                a.kill = match it.next().as_deref() {
                    Some("drop") => Kill::Drop,
                    Some("shutdown") => Kill::Shutdown,
                    Some("shutdown-keep") => Kill::ShutdownKeep,
                    Some("drop-keep-client") => Kill::DropKeepClient,
                    _ => panic!("--kill drop|shutdown|shutdown-keep|drop-keep-client"),
                }
            }
            other => panic!("unknown flag {other}"),
        }
    }
    if quick {
        (a.members, a.messages, a.failover_members) = (1_000, 200, 200);
    }
    a.members = members.unwrap_or(a.members).max(2);
    a.messages = messages.unwrap_or(a.messages).max(1);
    a.failover_members = failover.unwrap_or(a.failover_members).max(2);
    a
}

/// What the members of one node received.
#[derive(Default)]
struct Side {
    delivered: AtomicU64,
    missed: AtomicU64,
    /// When the last timed message arrived (µs since [`START`]).
    last_us: AtomicU64,
    /// Publish-to-handler latency, µs.
    latency: Latencies,
    /// Messages without a send time (the warm-up).
    untimed: AtomicU64,
}

/// One member's sequence numbers and message ids, as received (failover run, node c).
#[derive(Default)]
struct Track {
    seqs: Mutex<BTreeMap<u64, MessageId>>,
    /// The same sequence number received twice.
    duplicates: AtomicU64,
    /// The same sequence number with two different message ids.
    conflicts: AtomicU64,
}

/// A member's message handler: counts into its node's [`Side`], and tracks sequence numbers.
struct Member {
    side: Arc<Side>,
    track: Option<Arc<Track>>,
}

impl ChatEventHandler for Member {
    fn on_messages_received(&self, messages: &[ChatMessage]) {
        let now = now_us();
        let mut timed = 0;
        for m in messages {
            if let Some(AttributeValue::Int(sent)) = m.attributes().get(SENT_AT) {
                self.side.latency.record(now.saturating_sub(*sent as u64));
                timed += 1;
            }
        }
        self.side.delivered.fetch_add(timed, Ordering::Relaxed);
        self.side
            .untimed
            .fetch_add(messages.len() as u64 - timed, Ordering::Relaxed);
        if timed > 0 {
            self.side.last_us.fetch_max(now, Ordering::Relaxed);
        }
        if let Some(track) = &self.track {
            let mut seqs = track.seqs.lock();
            for m in messages {
                if let Some(id) = seqs.insert(m.seq(), m.msg_id()) {
                    track.duplicates.fetch_add(1, Ordering::Relaxed);
                    if id != m.msg_id() {
                        track.conflicts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn on_events_missed(&self, count: u64) {
        self.side.missed.fetch_add(count, Ordering::Relaxed);
    }
}

/// Members told that the room recovered (a room event handler of their own).
#[derive(Default)]
struct Recovery {
    count: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    /// The `last_seq` the notices carried (the largest).
    last_seq: AtomicU64,
}

struct RecoveryWatch(Arc<Recovery>);

impl ChatRoomEventHandler for RecoveryWatch {
    fn on_chat_room_recovered(&self, _room: &RoomId, last_seq: u64) {
        let now = now_us();
        let r = &self.0;
        if r.count.fetch_add(1, Ordering::Relaxed) == 0 {
            r.first_us.store(now, Ordering::Relaxed);
        }
        r.last_us.fetch_max(now, Ordering::Relaxed);
        r.last_seq.fetch_max(last_seq, Ordering::Relaxed);
    }
}

/// The checks that failed, to print at the end (and exit 1).
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            let what = what.into();
            eprintln!("CHECK FAILED: {what}");
            self.0.push(what);
        }
    }
}

fn limits() -> roomcast::Limits {
    // No rate limits or delivery threshold (this measures the engine, not its limiters), and
    // history long enough to hold every message of a run.
    report_limits().with_history_retention(100_000)
}

async fn node(
    url: &str,
    cluster: &str,
    id: &str,
    lease_ttl: Duration,
    queue: usize,
) -> Result<Engine, ChatError> {
    let config = ClusterConfig::new([url], cluster, id).with_lease_ttl(lease_ttl);
    Engine::builder()
        .limits(limits())
        .event_queue_capacity(queue)
        .cluster(config)
        .build()
        .await
}

/// `host` on `engines[0]` creates a room for `members` members and the host.
async fn create_room(host: &ChatClient, name: &str, members: usize) -> RoomId {
    host.chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new(name).with_max_users(members as u32 + 1))
        .await
        .expect("the host creates the room")
        .room_id
}

/// Logs `count` members in, member `i` on `engines[node_of(i)]`, registers `handler(i)` and
/// joins them to `room`, `JOIN_CONCURRENCY` at a time. Returns the clients and how long the
/// joins took.
async fn fill_room(
    engines: &[Engine],
    room: RoomId,
    count: usize,
    prefix: &str,
    node_of: impl Fn(usize) -> usize,
    handler: impl Fn(usize, &ChatClient),
) -> (Vec<ChatClient>, Duration, usize) {
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let client = engines[node_of(i)]
            .login(format!("{prefix}{i}"))
            .await
            .expect("a member logs in");
        handler(i, &client);
        clients.push(client);
    }
    let started = Instant::now();
    let failures: Vec<String> = futures_util::stream::iter(clients.iter().cloned())
        .map(|c| async move {
            let rooms = c.chat_room_manager();
            // Retried: a join that meets the cluster busy (a request timeout) is not the
            // measurement's point; each failure is reported.
            let mut errors = Vec::new();
            for _ in 0..5 {
                match rooms.join_chat_room(&room).await {
                    Ok(_) => return errors,
                    Err(e) if e.code() == 701 => return errors, // joined by a try that timed out
                    Err(e) => errors.push(format!("{}: {e}", c.current_user_id())),
                }
            }
            errors
        })
        .buffer_unordered(JOIN_CONCURRENCY)
        .flat_map(futures_util::stream::iter)
        .collect()
        .await;
    let took = started.elapsed();
    if !failures.is_empty() {
        eprintln!(
            "{} join attempts failed (retried), e.g. {}",
            failures.len(),
            failures[0]
        );
    }
    (clients, took, failures.len())
}

/// Polls until `done` or until nothing changed for [`STALL`]; true if `done`.
async fn wait_until(mut progress: impl FnMut() -> u64, mut done: impl FnMut() -> bool) -> bool {
    let mut last = progress();
    let mut since = Instant::now();
    loop {
        if done() {
            return true;
        }
        let now = progress();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() > STALL {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn timed(room: RoomId, text: String) -> OutgoingMessage {
    OutgoingMessage::text(room, text).with_attribute(SENT_AT, AttributeValue::Int(now_us() as i64))
}

/// One row of the throughput table.
struct Row {
    label: String,
    members: usize,
    messages: usize,
    delivered: u64,
    expected: u64,
    missed: u64,
    /// Deliveries per second over all members, and over node b's (two nodes).
    per_s: f64,
    cross_per_s: Option<f64>,
    /// Per node: (node, members, deliveries, latency).
    sides: Vec<(String, usize, u64, Percentiles)>,
    send: Percentiles,
    joins: Duration,
    /// Join attempts that failed (and were tried again).
    join_failures: usize,
    elapsed: Duration,
    send_errors: u64,
}

/// Sections 1 and 2: a room of `members` members spread over `nodes` (the first owns the room
/// and sends), `messages` messages.
async fn throughput(
    url: &str,
    cluster: &str,
    nodes: &[&str],
    args: &Args,
    checks: &mut Checks,
) -> Row {
    let members = args.members;
    let messages = args.messages;
    // Queues for every message of the run plus the join events (a room of more than 1,000
    // sends them to the owner and admins only): nothing is lost to a queue that overflowed.
    let queue = (messages + 2_000).max(4_096);
    let mut engines = Vec::new();
    for id in nodes {
        engines.push(
            node(url, cluster, id, args.lease_ttl, queue)
                .await
                .unwrap_or_else(|e| panic!("node {id} of {cluster}: {e}")),
        );
    }
    engines[0].add_super_admin("host").await.unwrap();
    let host = engines[0].login("host").await.unwrap();
    let room = create_room(&host, "stage", members).await;
    let sides: Vec<Arc<Side>> = nodes.iter().map(|_| Arc::new(Side::default())).collect();
    let n = nodes.len();
    let (clients, joins, join_failures) = fill_room(
        &engines,
        room,
        members,
        "m",
        |i| i % n,
        |i, c| {
            c.chat_manager().add_event_handler(
                "count",
                Member {
                    side: sides[i % n].clone(),
                    track: None,
                },
            )
        },
    )
    .await;
    eprintln!(
        "{cluster}: {members} members joined over {n} node(s) in {:.1} s",
        joins.as_secs_f64()
    );
    // Every node sees every member (and the host).
    for (k, probe) in clients.iter().take(n).enumerate() {
        let info = probe
            .chat_room_manager()
            .fetch_chat_room_info(&room)
            .await
            .unwrap();
        checks.check(
            info.member_count as usize == members + 1,
            format!(
                "{cluster}: node {}'s member count is {}, expected {}",
                nodes[k],
                info.member_count,
                members + 1
            ),
        );
    }
    // Warm-up: one untimed message that every member gets (also lets the join events drain).
    host.chat_manager()
        .send_message(OutgoingMessage::text(room, "warm-up"))
        .await
        .unwrap();
    let untimed = || {
        sides
            .iter()
            .map(|s| s.untimed.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let warm = wait_until(untimed, || untimed() >= members as u64).await;
    checks.check(
        warm,
        format!(
            "{cluster}: the warm-up message reached {} of {members} members",
            untimed()
        ),
    );

    // The run.
    let chat = host.chat_manager();
    let send_latency = Latencies::new();
    let mut send_errors = 0u64;
    let mut sent = 0u64;
    let first_us = now_us();
    let first = Instant::now();
    for i in 0..messages {
        if let Some(rate) = args.rate {
            let at = first + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let t = Instant::now();
        match chat.send_message(timed(room, format!("message {i}"))).await {
            Ok(_) => {
                sent += 1;
                send_latency.record(t.elapsed().as_micros() as u64);
            }
            Err(e) => {
                if send_errors == 0 {
                    eprintln!("{cluster}: a send failed: {e}");
                }
                send_errors += 1;
            }
        }
    }
    let expected = sent * members as u64;
    let delivered = || {
        sides
            .iter()
            .map(|s| s.delivered.load(Ordering::Relaxed) + s.missed.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let complete = wait_until(delivered, || delivered() >= expected).await;
    let last_us = sides
        .iter()
        .map(|s| s.last_us.load(Ordering::Relaxed))
        .max()
        .unwrap_or(first_us);
    let elapsed = Duration::from_micros(last_us.saturating_sub(first_us).max(1));
    let total: u64 = sides
        .iter()
        .map(|s| s.delivered.load(Ordering::Relaxed))
        .sum();
    let missed: u64 = sides.iter().map(|s| s.missed.load(Ordering::Relaxed)).sum();
    checks.check(
        complete && total == expected,
        format!("{cluster}: {total} deliveries of {expected} ({missed} missed)"),
    );
    checks.check(
        send_errors == 0,
        format!("{cluster}: {send_errors} sends failed"),
    );
    let secs = elapsed.as_secs_f64();
    let row = Row {
        label: if n == 1 {
            "one node".into()
        } else {
            format!("{n} nodes")
        },
        members,
        messages,
        delivered: total,
        expected,
        missed,
        per_s: total as f64 / secs,
        cross_per_s: (n > 1).then(|| {
            sides[1..]
                .iter()
                .map(|s| s.delivered.load(Ordering::Relaxed))
                .sum::<u64>() as f64
                / secs
        }),
        sides: nodes
            .iter()
            .zip(&sides)
            .enumerate()
            .map(|(k, (id, s))| {
                (
                    id.to_string(),
                    (0..members).filter(|i| i % n == k).count(),
                    s.delivered.load(Ordering::Relaxed),
                    s.latency.percentiles(),
                )
            })
            .collect(),
        send: send_latency.percentiles(),
        joins,
        join_failures,
        elapsed,
        send_errors,
    };
    for e in &engines {
        e.shutdown().await;
    }
    drop(clients);
    drop(host);
    row
}

/// What the members of one node received in the failover run, and what history filled in.
#[derive(Default)]
struct Received {
    node: &'static str,
    members: usize,
    /// Members whose sequence numbers had a gap (before filling from history), and how many
    /// numbers were missing in all.
    with_gaps: usize,
    missing_before_fill: u64,
    /// The missing sequence numbers (each counted once).
    missing_seqs: std::collections::BTreeSet<u64>,
    missing_after_fill: u64,
    duplicates: u64,
    /// The same sequence number under two message ids: among deliveries, and between a
    /// delivery and history.
    conflicts: u64,
    history_conflicts: u64,
    recovered: u64,
    recovered_first: Option<Duration>,
    recovered_last: Option<Duration>,
    recovered_last_seq: u64,
    /// The first error a history fetch met.
    history_error: Option<String>,
}

/// One send from b after the kill.
struct Attempt {
    at: Duration,
    took: Duration,
    outcome: Result<u64, String>,
}

/// What the failover run found.
struct Failover {
    members: usize,
    kill: Kill,
    /// How long `Engine::shutdown` took (`--kill shutdown`).
    shutdown_took: Option<Duration>,
    acked_before: Vec<(u64, MessageId)>,
    /// From the moment node a went (its handles dropped, or its shutdown called).
    first_send_ok: Option<Duration>,
    attempts: Vec<Attempt>,
    lease_gone: Option<Duration>,
    new_owner: Option<String>,
    nodes: Vec<Received>,
    acked_missing: usize,
    acked_conflicting: usize,
    /// Why the history could not be read at the end, if it could not.
    history_error: Option<String>,
    history_last: u64,
    member_count: Option<u32>,
    /// The room's owner after the failover.
    owner_after: Option<String>,
    after_sent: usize,
    after_delivered: bool,
}

/// The history of `room` from sequence number `after` on, up to `until` at least if retained,
/// as `client` fetches it (pages of 200).
async fn history_after(
    client: &ChatClient,
    room: RoomId,
    mut after: u64,
    until: u64,
) -> Result<Vec<ChatMessage>, ChatError> {
    let chat = client.chat_manager();
    let mut all = Vec::new();
    loop {
        let page = chat
            .fetch_history_messages(&room, HistoryQuery::after(after, 200))
            .await?;
        let Some(last) = page.data.last().map(ChatMessage::seq) else {
            break;
        };
        all.extend(page.data);
        after = last;
        if page.cursor.is_none() || after >= until {
            break;
        }
    }
    Ok(all)
}

/// Checks what the members of one node received: gaps from `first_seq` to the last sequence
/// number each got, then the same after filling each gap from history, as a client would
/// (`HistoryQuery::after(last_seen, 200)`).
async fn received(
    node: &'static str,
    members: &[(&ChatClient, &Arc<Track>)],
    recovery: &Recovery,
    room: RoomId,
    first_seq: u64,
    killed_us: u64,
) -> Received {
    let mut r = Received {
        node,
        members: members.len(),
        recovered: recovery.count.load(Ordering::Relaxed),
        recovered_last_seq: recovery.last_seq.load(Ordering::Relaxed),
        ..Received::default()
    };
    let since_kill =
        |us: u64| (us > 0).then(|| Duration::from_micros(us.saturating_sub(killed_us)));
    r.recovered_first = since_kill(recovery.first_us.load(Ordering::Relaxed));
    r.recovered_last = since_kill(recovery.last_us.load(Ordering::Relaxed));
    for (client, track) in members {
        r.duplicates += track.duplicates.load(Ordering::Relaxed);
        r.conflicts += track.conflicts.load(Ordering::Relaxed);
        let mut seqs = track.seqs.lock().clone();
        let Some(&last) = seqs.keys().next_back() else {
            r.with_gaps += 1;
            continue;
        };
        let missing: Vec<u64> = (first_seq..=last)
            .filter(|s| !seqs.contains_key(s))
            .collect();
        if missing.is_empty() {
            continue;
        }
        r.with_gaps += 1;
        r.missing_before_fill += missing.len() as u64;
        r.missing_seqs.extend(&missing);
        // The last sequence number seen without a gap before it.
        let seen = missing[0] - 1;
        let filled = match history_after(client, room, seen, last).await {
            Ok(page) => page,
            Err(e) => {
                r.history_error.get_or_insert_with(|| e.to_string());
                Vec::new()
            }
        };
        for m in filled {
            match seqs.get(&m.seq()) {
                Some(id) if *id != m.msg_id() => r.history_conflicts += 1,
                Some(_) => {}
                None => {
                    seqs.insert(m.seq(), m.msg_id());
                }
            }
        }
        r.missing_after_fill += (first_seq..=last).filter(|s| !seqs.contains_key(s)).count() as u64;
    }
    r
}

/// Section 3: three nodes; the room owned by a, its members on b and c; node a goes while it
/// sends.
async fn failover(url: &str, cluster: &str, args: &Args, checks: &mut Checks) -> Failover {
    let ttl = args.lease_ttl;
    let f = args.failover_members;
    let queue = 16_384;
    let mut a = Some(node(url, cluster, "a", ttl, queue).await.expect("node a"));
    let b = node(url, cluster, "b", ttl, queue).await.expect("node b");
    let c = node(url, cluster, "c", ttl, queue).await.expect("node c");
    // An observer of the room's lease (a cluster connection, not an engine).
    let observer = roomcast_cluster::Cluster::connect(
        ClusterConfig::new([url], cluster, "observer").with_lease_ttl(ttl),
    )
    .await
    .expect("the observer connects");
    let a_engine = a.as_ref().unwrap();
    a_engine.add_super_admin("host").await.unwrap();
    let mut host = Some(a_engine.login("host").await.unwrap());
    let room = create_room(host.as_ref().unwrap(), "failover", f).await;
    let sides = [Arc::new(Side::default()), Arc::new(Side::default())];
    let recoveries = [Arc::new(Recovery::default()), Arc::new(Recovery::default())];
    let tracks: Vec<Arc<Track>> = (0..f).map(|_| Arc::new(Track::default())).collect();
    let engines = [b.clone(), c.clone()];
    // Member i is on b if i is even, on c if odd.
    let (clients, joins, _) = fill_room(
        &engines,
        room,
        f,
        "f",
        |i| i % 2,
        |i, client| {
            client.chat_manager().add_event_handler(
                "count",
                Member {
                    side: sides[i % 2].clone(),
                    track: Some(tracks[i].clone()),
                },
            );
            client
                .chat_room_manager()
                .add_event_handler("recovery", RecoveryWatch(recoveries[i % 2].clone()));
        },
    )
    .await;
    eprintln!(
        "{cluster}: {f} members joined on b and c in {:.1} s",
        joins.as_secs_f64()
    );
    let owner = observer.owner_of(room.as_u64()).await.ok().flatten();
    checks.check(
        owner.as_deref() == Some("a"),
        format!("{cluster}: the room's owner before the kill is {owner:?}, expected a"),
    );
    let info = clients[1]
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    checks.check(
        info.member_count as usize == f + 1,
        format!(
            "{cluster}: member count {} before the kill, expected {}",
            info.member_count,
            f + 1
        ),
    );

    // Node a's sender sends, each send awaited, until it has had a good number acknowledged;
    // node a then goes while it sends.
    let acked: Arc<Mutex<Vec<(u64, MessageId)>>> = Arc::default();
    let sender = {
        let chat = host.as_ref().unwrap().chat_manager();
        let acked = acked.clone();
        tokio::spawn(async move {
            for i in 0.. {
                if let Ok(m) = chat.send_message(timed(room, format!("before {i}"))).await {
                    acked.lock().push((m.seq(), m.msg_id()));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let enough = (args.messages / 10).clamp(20, 200);
    while acked.lock().len() < enough {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed = Instant::now();
    let killed_us = now_us();
    let mut shutdown_took = None;
    if matches!(args.kill, Kill::Shutdown | Kill::ShutdownKeep) {
        a.as_ref().unwrap().shutdown().await;
        shutdown_took = Some(killed.elapsed());
    }
    // The sender's task (and its client) and node a's handles dropped at once: dropping the
    // last `Engine` handle stops the engine without waiting (clients hold the engine too).
    sender.abort();
    let _ = sender.await;
    let kept = match args.kill {
        Kill::Drop | Kill::Shutdown => {
            drop((host.take(), a.take()));
            None
        }
        Kill::ShutdownKeep => Some((host.take(), a.take())),
        Kill::DropKeepClient => {
            drop(a.take());
            Some((host.take(), None))
        }
    };
    let acked: Vec<(u64, MessageId)> = acked.lock().clone();

    let limit = args.deadline + ttl * 4;
    let lease_watch = {
        let observer = observer.clone();
        tokio::spawn(async move {
            // When the observer sees the lease gone (or another owner), and who takes it.
            let mut gone = None;
            loop {
                match observer.owner_of(room.as_u64()).await {
                    Ok(Some(o)) if o != "a" => {
                        return (gone.or(Some(killed.elapsed())), Some(o));
                    }
                    Ok(None) if gone.is_none() => gone = Some(killed.elapsed()),
                    _ => {}
                }
                if killed.elapsed() > limit {
                    return (gone, None);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // A member on b sends until it is accepted again.
    let b_member = clients[0].clone();
    let mut attempts = Vec::new();
    let mut first_ok = None;
    let deadline = killed + limit;
    while Instant::now() < deadline {
        let at = killed.elapsed();
        let sent = b_member
            .chat_manager()
            .send_message(timed(room, "after the kill".into()))
            .await;
        let took = killed.elapsed() - at;
        match sent {
            Ok(m) => {
                first_ok = Some(killed.elapsed());
                attempts.push(Attempt {
                    at,
                    took,
                    outcome: Ok(m.seq()),
                });
                break;
            }
            Err(e) => {
                attempts.push(Attempt {
                    at,
                    took,
                    outcome: Err(format!("{} {}", e.code(), short(&e.to_string()))),
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let (lease_gone, new_owner) =
        match tokio::time::timeout(limit + Duration::from_secs(5), lease_watch).await {
            Ok(Ok(seen)) => seen,
            _ => (None, None),
        };
    // The recovery notices: wait (up to the stall limit) for every member on c.
    let per_node = f / 2;
    let _ = wait_until(
        || recoveries[1].count.load(Ordering::Relaxed),
        || recoveries[1].count.load(Ordering::Relaxed) >= per_node as u64,
    )
    .await;

    // A few messages after the failover, from b: every member on b and c gets them.
    let after_messages = 20;
    let before: Vec<u64> = sides
        .iter()
        .map(|s| s.delivered.load(Ordering::Relaxed))
        .collect();
    let mut after_sent = 0;
    if first_ok.is_some() {
        for i in 0..after_messages {
            let sent = b_member
                .chat_manager()
                .send_message(timed(room, format!("after {i}")))
                .await;
            if sent.is_ok() {
                after_sent += 1;
            }
        }
    }
    let delivered = || -> u64 {
        sides
            .iter()
            .map(|s| s.delivered.load(Ordering::Relaxed))
            .sum()
    };
    // b's sending member does not get its own messages back.
    let target = before.iter().sum::<u64>() + after_sent as u64 * (f as u64 - 1);
    let after_delivered =
        after_sent == after_messages && wait_until(delivered, || delivered() >= target).await;

    // What each node's members received, and history's fill.
    let first_seq = acked.first().map_or(1, |(s, _)| *s);
    let mut nodes = Vec::new();
    for (k, name) in ["b", "c"].into_iter().enumerate() {
        let members: Vec<(&ChatClient, &Arc<Track>)> = clients
            .iter()
            .zip(&tracks)
            .enumerate()
            .filter(|(i, _)| i % 2 == k)
            .map(|(_, m)| m)
            .collect();
        nodes.push(received(name, &members, &recoveries[k], room, first_seq, killed_us).await);
    }

    // Every message acknowledged before the kill is in history, under the same id.
    let (history, history_error): (HashMap<u64, MessageId>, _) =
        match history_after(&b_member, room, 0, u64::MAX).await {
            Ok(all) => (
                all.into_iter().map(|m| (m.seq(), m.msg_id())).collect(),
                None,
            ),
            Err(e) => (HashMap::new(), Some(e.to_string())),
        };
    let acked_missing = acked
        .iter()
        .filter(|(s, _)| !history.contains_key(s))
        .count();
    let acked_conflicting = acked
        .iter()
        .filter(|(s, id)| history.get(s).is_some_and(|h| h != id))
        .count();
    let info_after = b_member
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .ok();
    let member_count = info_after.as_ref().map(|r| r.member_count);
    let owner_after = info_after.map(|r| r.owner.to_string());

    let result = Failover {
        members: f,
        kill: args.kill,
        shutdown_took,
        first_send_ok: first_ok,
        attempts,
        lease_gone,
        new_owner,
        nodes,
        acked_missing,
        acked_conflicting,
        history_error,
        history_last: history.keys().copied().max().unwrap_or(0),
        member_count,
        owner_after,
        after_sent,
        after_delivered,
        acked_before: acked,
    };
    checks.check(
        result.first_send_ok.is_some(),
        format!("{cluster}: no send from b succeeded within the deadline"),
    );
    for r in &result.nodes {
        checks.check(
            r.missing_after_fill == 0,
            format!(
                "{cluster}: {}'s members miss {} sequence numbers after filling from history",
                r.node, r.missing_after_fill
            ),
        );
        checks.check(
            r.conflicts == 0 && r.history_conflicts == 0,
            format!(
                "{cluster}: on {}, sequence numbers given to two messages: {} among deliveries, \
                 {} between deliveries and history",
                r.node, r.conflicts, r.history_conflicts
            ),
        );
    }
    checks.check(
        acked_missing == 0 && acked_conflicting == 0,
        format!(
            "{cluster}: of {} messages acknowledged before the kill, {acked_missing} are not in \
             history and {acked_conflicting} are there under another id",
            result.acked_before.len()
        ),
    );
    checks.check(
        after_delivered,
        format!(
            "{cluster}: the members on b and c did not all get the {after_messages} messages \
             sent after the failover ({after_sent} accepted)"
        ),
    );
    // The members on b and c, and the host (on node a) or not: its session went with its
    // node (see the report).
    checks.check(
        member_count.is_some_and(|n| n as usize == f || n as usize == f + 1),
        format!(
            "{cluster}: member count after the failover {member_count:?}, expected {f} (or {} \
             with the host)",
            f + 1
        ),
    );
    b.shutdown().await;
    c.shutdown().await;
    drop(clients);
    drop(kept);
    result
}

fn short(s: &str) -> String {
    let s: String = s.chars().take(90).collect();
    s.replace('|', "/")
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn per_s(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M/s", x / 1e6)
    } else {
        format!("{:.0} k/s", x / 1e3)
    }
}

fn lat(p: &Percentiles) -> (String, String) {
    let f = |us: u64| {
        if us >= 10_000 {
            format!("{:.0} ms", us as f64 / 1e3)
        } else {
            format!("{:.2} ms", us as f64 / 1e3)
        }
    };
    (f(p.p50), f(p.p99))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn print_rows(rows: &[Row]) {
    println!("| run | members | messages | deliveries/s | cross-node deliveries/s | p50 | p99 |");
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        let (p50, p99) = if r.sides.len() == 1 {
            lat(&r.sides[0].3)
        } else {
            let parts: Vec<(String, String)> = r.sides.iter().map(|s| lat(&s.3)).collect();
            (
                r.sides
                    .iter()
                    .zip(&parts)
                    .map(|(s, p)| format!("{}: {}", s.0, p.0))
                    .collect::<Vec<_>>()
                    .join(", "),
                r.sides
                    .iter()
                    .zip(&parts)
                    .map(|(s, p)| format!("{}: {}", s.0, p.1))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        };
        let members = if r.sides.len() == 1 {
            r.members.to_string()
        } else {
            format!(
                "{} ({})",
                r.members,
                r.sides
                    .iter()
                    .map(|s| format!("{} on {}", s.1, s.0))
                    .collect::<Vec<_>>()
                    .join(" + ")
            )
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            members,
            r.messages,
            per_s(r.per_s),
            r.cross_per_s.map_or("-".into(), per_s),
            p50,
            p99
        );
    }
    println!();
    for r in rows {
        println!(
            "- {}: {} of {} deliveries ({} missed) in {:.2} s from the first send to the last \
             delivery ({} latency samples); the sender's awaited send: p50 {} / p99 {}{}; \
             joins took {:.1} s{}",
            r.label,
            r.delivered,
            r.expected,
            r.missed,
            r.elapsed.as_secs_f64(),
            r.sides.iter().map(|s| s.3.count).sum::<usize>(),
            lat(&r.send).0,
            lat(&r.send).1,
            if r.send_errors > 0 {
                format!(", {} sends failed", r.send_errors)
            } else {
                String::new()
            },
            r.joins.as_secs_f64(),
            if r.join_failures > 0 {
                format!(
                    " ({} join attempts failed and were tried again)",
                    r.join_failures
                )
            } else {
                String::new()
            },
        );
    }
}

/// Replaces the digits of an error message's room ids, so that rounds' messages compare.
fn generic(e: &str) -> String {
    let mut out = String::new();
    let mut digits = 0;
    for ch in e.chars() {
        if ch.is_ascii_digit() {
            digits += 1;
            continue;
        }
        if digits > 0 {
            out.push_str(if digits > 6 { "<room>" } else { "<n>" });
            digits = 0;
        }
        out.push(ch);
    }
    if digits > 0 {
        out.push_str(if digits > 6 { "<room>" } else { "<n>" });
    }
    out
}

fn print_failover(rounds: &[Failover], ttl: Duration) {
    let Some(f) = rounds.first() else { return };
    let opt = |d: Option<Duration>| d.map_or("not received".into(), ms);
    let how = match f.kill {
        Kill::Drop => "its handles dropped without shutdown".to_string(),
        Kill::Shutdown => "`Engine::shutdown`, then its handles dropped".to_string(),
        Kill::ShutdownKeep => "`Engine::shutdown`, its handles kept".to_string(),
        Kill::DropKeepClient => {
            "its last `Engine` handle dropped without shutdown, a `ChatClient` of it kept"
                .to_string()
        }
    };
    println!(
        "\n## Failover (3 nodes, lease TTL {}, {} members: {} on b, {} on c; node a, the \
         owner, stopped while sending: {how}; {} round(s), each a cluster of its own)\n",
        ms(ttl),
        f.members,
        f.nodes[0].members,
        f.nodes[1].members,
        rounds.len()
    );
    let head: Vec<String> = (1..=rounds.len()).map(|r| format!("round {r}")).collect();
    println!("| measure | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(rounds.len()));
    let row = |what: &str, cell: &dyn Fn(&Failover) -> String| {
        let cells: Vec<String> = rounds.iter().map(cell).collect();
        println!("| {what} | {} |", cells.join(" | "));
    };
    if f.kill != Kill::Drop {
        row("`Engine::shutdown` took", &|f| {
            f.shutdown_took.map_or("-".into(), ms)
        });
    }
    row(
        "**failover time** (node a gone → first send from b accepted)",
        &|f| {
            f.first_send_ok
                .map_or("**none within the deadline**".into(), |d| {
                    format!("**{}**", ms(d))
                })
        },
    );
    row("sends from b until then (20 ms apart)", &|f| {
        f.attempts.len().to_string()
    });
    row("... the first one: took / outcome", &|f| {
        f.attempts.first().map_or("-".into(), |a| {
            format!(
                "{} / {}",
                ms(a.took),
                match &a.outcome {
                    Ok(seq) => format!("accepted (seq {seq})"),
                    Err(e) => format!("failed: {}", e.split(' ').next().unwrap_or("")),
                }
            )
        })
    });
    row("... failed ones, by error code", &|f| {
        let mut by: BTreeMap<&str, usize> = BTreeMap::new();
        for a in &f.attempts {
            if let Err(e) = &a.outcome {
                *by.entry(e.split(' ').next().unwrap_or("")).or_default() += 1;
            }
        }
        if by.is_empty() {
            "-".into()
        } else {
            by.iter()
                .map(|(c, n)| format!("{n}x {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    });
    row("... the accepted one: sent at / took", &|f| {
        f.attempts
            .last()
            .filter(|a| a.outcome.is_ok())
            .map_or("-".into(), |a| format!("{} / {}", ms(a.at), ms(a.took)))
    });
    row(
        "lease seen gone (an observer polling it) / new owner",
        &|f| {
            format!(
                "{} / {}",
                f.lease_gone.map_or("not seen".into(), ms),
                f.new_owner.as_deref().unwrap_or("none seen")
            )
        },
    );
    for k in 0..f.nodes.len() {
        let node = f.nodes[k].node;
        row(
            &format!(
                "`ChatRoomRecovered` on {node}: members told (its last_seq) / first / last \
                 after a went"
            ),
            &|f| {
                let r = &f.nodes[k];
                format!(
                    "{} of {} ({}) / {} / {}",
                    r.recovered,
                    r.members,
                    r.recovered_last_seq,
                    opt(r.recovered_first),
                    opt(r.recovered_last)
                )
            },
        );
    }
    row(
        "messages acknowledged before the kill (seqs) / **missing from history** / under another id",
        &|f| {
            format!(
                "{} ({}..={}) / **{}** / {}",
                f.acked_before.len(),
                f.acked_before.first().map_or(0, |m| m.0),
                f.acked_before.last().map_or(0, |m| m.0),
                f.acked_missing,
                f.acked_conflicting
            )
        },
    );
    row(
        "history's last seq at the end",
        &|f| match &f.history_error {
            None => f.history_last.to_string(),
            Some(e) => format!("unreadable: `{}`", short(e)),
        },
    );
    for k in 0..f.nodes.len() {
        let node = f.nodes[k].node;
        row(
            &format!("{node}'s members with a gap in what they received / seqs missing (which)"),
            &|f| {
                let r = &f.nodes[k];
                let seqs: Vec<String> = r.missing_seqs.iter().take(6).map(u64::to_string).collect();
                format!(
                    "{} of {} / {} ({})",
                    r.with_gaps,
                    r.members,
                    r.missing_before_fill,
                    if seqs.is_empty() {
                        "-".into()
                    } else {
                        seqs.join(", ")
                    }
                )
            },
        );
        row(
            "... **missing after filling from history** (`after(last_seen, 200)`) / \
             duplicates / one seq with two ids",
            &|f| {
                let r = &f.nodes[k];
                let mut s = format!(
                    "**{}** / {} / {}",
                    r.missing_after_fill,
                    r.duplicates,
                    r.conflicts + r.history_conflicts
                );
                if let Some(e) = &r.history_error {
                    s.push_str(&format!(" (history failed: `{}`)", short(e)));
                }
                s
            },
        );
    }
    row(
        "messages sent from b after the failover / all reached every member on b and c",
        &|f| {
            format!(
                "{} / {}",
                f.after_sent,
                if f.after_delivered { "yes" } else { "no" }
            )
        },
    );
    row(
        &format!(
            "member count after the failover, seen from b (before: {} + the host) / owner",
            f.members
        ),
        &|f| {
            format!(
                "{} / {}",
                f.member_count.map_or("-".into(), |n| n.to_string()),
                f.owner_after.as_deref().unwrap_or("-")
            )
        },
    );
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for f in rounds {
        for a in &f.attempts {
            if let Err(e) = &a.outcome {
                *errors.entry(generic(e)).or_default() += 1;
            }
        }
    }
    if !errors.is_empty() {
        println!("\nerrors of the sends from b that failed (all rounds):\n");
        for (e, n) in errors {
            println!("- {n}x `{e}`");
        }
    }
}

#[tokio::main]
async fn main() {
    // `exit` runs no destructors: `run` returns first, so that the nats-server it started is
    // stopped.
    let code = run().await;
    std::process::exit(code);
}

/// The report; returns the exit code.
async fn run() -> i32 {
    let args = args();
    START.get_or_init(Instant::now);
    let server;
    let url = match &args.nats {
        Some(url) => url.clone(),
        None => match NatsServer::start() {
            Some(s) => {
                server = s;
                server.url()
            }
            None => {
                eprintln!(
                    "cluster_report needs a nats-server with JetStream: install one \
                     (apt-get install nats-server) or pass --nats URL"
                );
                return 2;
            }
        },
    };
    let tag = format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() % 100_000)
    );
    // Can a node reach NATS at all? (Said once, clearly, rather than as a failed section.)
    let probe = ClusterConfig::new([url.as_str()], format!("probe{tag}"), "probe")
        .with_lease_ttl(args.lease_ttl);
    if let Err(e) = roomcast_cluster::Cluster::connect(probe).await {
        eprintln!("cluster_report: cannot use NATS at {url}: {e}");
        return 2;
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# roomcast cluster report\n");
    println!(
        "machine: {cores} cores; nats: {}; load average before: {}",
        if args.nats.is_some() {
            url.clone()
        } else {
            "a local nats-server started for this run".into()
        },
        loadavg()
    );
    println!(
        "every node is an engine in this process, in cluster mode; limits off: calls per user \
         per second, the per-room delivery threshold, the per-member message window; sends \
         awaited one after the other{}\n",
        args.rate
            .map_or(String::new(), |r| format!(", paced at {r} messages/s"))
    );
    let started = Instant::now();
    let mut checks = Checks::default();
    let wants = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    let mut rows = Vec::new();
    if wants("one") {
        rows.push(throughput(&url, &format!("solo{tag}"), &["solo"], &args, &mut checks).await);
    }
    if wants("two") {
        rows.push(throughput(&url, &format!("duo{tag}"), &["a", "b"], &args, &mut checks).await);
    }
    if !rows.is_empty() {
        print_rows(&rows);
    }
    if wants("failover") {
        let mut rounds = Vec::new();
        for r in 1..=args.rounds {
            rounds.push(failover(&url, &format!("trio{tag}r{r}"), &args, &mut checks).await);
        }
        print_failover(&rounds, args.lease_ttl);
    }
    println!(
        "\nload average after: {}; report took {:.0} s",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    if !checks.0.is_empty() {
        println!("\n**{} check(s) failed:**\n", checks.0.len());
        for c in &checks.0 {
            println!("- {c}");
        }
        return 1;
    }
    println!("\nall checks passed");
    0
}
