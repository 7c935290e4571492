//! The cluster review suites' harness (`tests/cluster_review*.rs`):
//! nodes against a nats-server, waits with a deadline, calls that retry delivery failures, and
//! `Seen`, what a client got (its events in order, with the checks on them); `Process`, a node
//! as a process of its own (`examples/cluster_node`), to SIGKILL.
//!
//! Included with `#[path = "shared/cluster_harness.rs"] mod cluster_harness;`. Not every suite
//! uses every helper.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use roomcast::{
    AuditEntry, ChatClient, ChatError, ChatMessage, ChatRoomEvent, ClientEvent, ClusterConfig,
    CreateChatRoomOptions, Engine, EngineBuilder, HistoryQuery, LeaveReason, MessageId,
    OutgoingMessage, RoomId, RoomLimits,
};
use roomcast_cluster::testing::NatsServer;
use roomcast_workspace::harness_limits;

#[path = "cluster_node.rs"]
pub(crate) mod cluster_node;
pub(crate) use cluster_node::node_binary;
/// Every node's lease: a dead owner's rooms move after about this long.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(1);
/// Every node's NATS call timeout.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an eventual state (an event, a list, a failover) may take to show up.
pub(crate) const DEADLINE: Duration = Duration::from_secs(15);
/// How often a wait looks again.
pub(crate) const POLL: Duration = Duration::from_millis(10);
/// The room's join replay (the default `join_replay_count`).
pub(crate) const REPLAY: usize = 10;

macro_rules! server {
    () => {
        match NatsServer::start() {
            Some(server) => server,
            None => return,
        }
    };
}

/// `retry` of a call on a manager (the manager is made anew for each try).
macro_rules! rt {
    ($mgr:expr, $m:ident => $call:expr) => {
        $crate::cluster_harness::retry(|| {
            let $m = $mgr;
            async move { $call.await }
        })
    };
}

// ------------------------------------------------------------------------------------------
// Nodes
// ------------------------------------------------------------------------------------------

pub(crate) fn config(url: String, cluster: &str, id: &str) -> ClusterConfig {
    ClusterConfig::new([url], cluster, id)
        .with_lease_ttl(LEASE_TTL)
        .with_request_timeout(REQUEST_TIMEOUT)
}

/// Node `id` of `cluster` on `url`, with the harness limits (no rate limits, no delivery
/// threshold) and whatever `more` adds to its builder (it may replace the limits).
pub(crate) async fn node_at(
    url: String,
    cluster: &str,
    id: &str,
    more: impl FnOnce(EngineBuilder) -> EngineBuilder,
) -> Engine {
    let builder = Engine::builder().limits(harness_limits());
    more(builder)
        .cluster(config(url, cluster, id))
        .build()
        .await
        .unwrap_or_else(|e| panic!("node {id}: {e}"))
}

/// As [`node_at`], with the cluster configuration changed by `conf`.
pub(crate) async fn node_conf(
    url: String,
    cluster: &str,
    id: &str,
    conf: impl FnOnce(ClusterConfig) -> ClusterConfig,
    more: impl FnOnce(EngineBuilder) -> EngineBuilder,
) -> Engine {
    let builder = Engine::builder().limits(harness_limits());
    more(builder)
        .cluster(conf(config(url, cluster, id)))
        .build()
        .await
        .unwrap_or_else(|e| panic!("node {id}: {e}"))
}

pub(crate) async fn node(server: &NatsServer, cluster: &str, id: &str) -> Engine {
    node_at(server.url(), cluster, id, |b| b).await
}

// ------------------------------------------------------------------------------------------
// Waiting, retrying, sending
// ------------------------------------------------------------------------------------------

/// Polls `check` until it returns true, or panics with `what` after the deadline.
pub(crate) async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Lets `span` of real time pass (a cut of a given length, a lease to lapse, a sender's pace):
/// not a wait for a state.
pub(crate) async fn let_pass(span: Duration) {
    tokio::time::sleep(span).await;
}

/// Runs `call` until it does not fail with a delivery failure (9xx: the room may be moving),
/// within the deadline; returns its last result.
pub(crate) async fn retry<T, F, Fut>(mut call: F) -> Result<T, ChatError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ChatError>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        match call().await {
            Err(e) if e.is_delivery_failure() && e.code() != 900 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            other => return other,
        }
    }
}

pub(crate) async fn send(
    client: &ChatClient,
    room: RoomId,
    text: &str,
) -> Result<ChatMessage, ChatError> {
    client
        .chat_manager()
        .send_message(OutgoingMessage::text(room, text))
        .await
}

/// Sends until accepted (retrying delivery failures), panicking on a rule failure.
pub(crate) async fn send_ok(client: &ChatClient, room: RoomId, text: &str) -> ChatMessage {
    retry(|| send(client, room, text))
        .await
        .unwrap_or_else(|e| panic!("{} sending {text:?}: {e}", client.current_user_id()))
}

/// Joins (retrying delivery failures); 701 (already in) counts as joined: a join whose answer
/// was lost and is retried.
pub(crate) async fn join(client: &ChatClient, room: RoomId) {
    let r = retry(|| {
        let rooms = client.chat_room_manager();
        async move { rooms.join_chat_room(&room).await.map(|_| ()) }
    })
    .await;
    match r {
        Ok(()) => {}
        Err(e) if e.code() == 701 => {}
        Err(e) => panic!("{} joining: {e}", client.current_user_id()),
    }
}

pub(crate) async fn leave(client: &ChatClient, room: RoomId) {
    let r = retry(|| {
        let rooms = client.chat_room_manager();
        async move { rooms.leave_chat_room(&room).await }
    })
    .await;
    match r {
        Ok(()) => {}
        Err(e) if e.code() == 702 => {}
        Err(e) => panic!("{} leaving: {e}", client.current_user_id()),
    }
}

/// Every retained message of `room` as `client` sees it, oldest first (every page).
pub(crate) async fn history(client: &ChatClient, room: RoomId) -> Vec<ChatMessage> {
    let mut all: Vec<ChatMessage> = Vec::new();
    loop {
        let after = all.last().map_or(0, |m| m.seq());
        let page = retry(|| {
            let chat = client.chat_manager();
            async move {
                chat.fetch_history_messages(&room, HistoryQuery::after(after, 200))
                    .await
            }
        })
        .await
        .unwrap_or_else(|e| panic!("history for {}: {e}", client.current_user_id()));
        if page.data.is_empty() {
            return all;
        }
        all.extend(page.data);
    }
}

/// The member list of `room` as `client` sees it, sorted.
pub(crate) async fn members(client: &ChatClient, room: RoomId) -> Vec<String> {
    let page = retry(|| {
        let rooms = client.chat_room_manager();
        async move { rooms.fetch_chat_room_members(&room, None, 1000).await }
    })
    .await
    .unwrap_or_else(|e| panic!("members for {}: {e}", client.current_user_id()));
    let mut ids: Vec<String> = page.data.iter().map(|u| u.to_string()).collect();
    ids.sort();
    ids
}

/// The whole audit log of `room`, oldest first, as `staff` reads it.
pub(crate) async fn audit_log(staff: &ChatClient, room: RoomId) -> Vec<AuditEntry> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = retry(|| {
            let rooms = staff.chat_room_manager();
            async move { rooms.fetch_chat_room_audit_log(&room, before, 1000).await }
        })
        .await
        .unwrap_or_else(|e| panic!("audit log: {e}"));
        all.extend(page.data);
        match page.cursor {
            Some(c) => before = Some(c),
            None => break,
        }
    }
    all.sort_by_key(|e| e.seq);
    all
}

/// (members, online) of `room` as `engine` counts them, (0, 0) if it cannot say.
pub(crate) async fn presence(engine: &Engine, room: RoomId) -> (usize, usize) {
    engine
        .room_stats(&room)
        .await
        .map(|s| (s.member_count, s.online_count))
        .unwrap_or((0, 0))
}

pub(crate) async fn wait_for_presence(engine: &Engine, room: RoomId, want: (usize, usize)) {
    wait_until(&format!("(members, online) {want:?}"), || async move {
        presence(engine, room).await == want
    })
    .await;
}

/// A room created by the super admin `host` logged in on `engine`.
/// A room made on `engine` by its super admin "host", with `limits`: the host's client and the
/// room.
pub(crate) async fn room_with(
    engine: &Engine,
    name: &str,
    limits: RoomLimits,
) -> (ChatClient, RoomId) {
    engine.add_super_admin("host").await.unwrap();
    let host = engine.login("host").await.unwrap();
    let room = host
        .chat_room_manager()
        .create_chat_room(
            CreateChatRoomOptions::new(name)
                .with_max_users(10_000)
                .with_limits(limits),
        )
        .await
        .unwrap()
        .room_id;
    (host, room)
}

/// The seqs of `client`'s local copy of `room` (up to 400, the most one load gives), sorted.
pub(crate) async fn copy_seqs(client: &ChatClient, room: RoomId) -> Vec<u64> {
    let mut seqs: Vec<u64> =
        rt!(client.chat_manager(), m => m.get_conversation(&room).load_messages(None, 400))
            .await
            .unwrap()
            .iter()
            .map(ChatMessage::seq)
            .collect();
    seqs.sort();
    seqs
}

pub(crate) async fn room_on(engine: &Engine, name: &str) -> (ChatClient, RoomId) {
    engine.add_super_admin("host").await.unwrap();
    let host = engine.login("host").await.unwrap();
    let room = host
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new(name).with_max_users(10_000))
        .await
        .unwrap()
        .room_id;
    (host, room)
}

/// A sender's failures: per code (count, first ms, last ms), its last accepted send's ms, and
/// its slowest call (ms taken, ms it began).
#[derive(Debug, Default)]
pub(crate) struct SendLog {
    pub(crate) codes: BTreeMap<u32, (usize, u64, u64)>,
    pub(crate) last_ok: u64,
    pub(crate) slowest: (u64, u64),
}

/// What senders got acknowledged: (seq, id, text).
pub(crate) type Acked = Arc<Mutex<Vec<(u64, MessageId, String)>>>;

/// Spawns a sender that sends "tag n" for n = 0.. until `stop`, pausing `pace` after each
/// send, retrying delivery failures and the rule failures `tolerated` (a muted sender), and
/// records what was acknowledged. It ends on 900 (its engine is gone). Returns its failures:
/// per code, how many, the first and the last time ([`ms`]), and when its last send was
/// accepted.
pub(crate) fn sender(
    client: ChatClient,
    room: RoomId,
    tag: String,
    acked: Acked,
    stop: Arc<AtomicBool>,
    pace: Duration,
    tolerated: &'static [u32],
) -> tokio::task::JoinHandle<SendLog> {
    tokio::spawn(async move {
        let mut errors = SendLog::default();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let text = format!("{tag} {n}");
            let began = ms();
            let sent = send(&client, room, &text).await;
            errors.slowest = errors.slowest.max((ms() - began, began));
            match sent {
                Ok(m) => {
                    acked.lock().push((m.seq(), m.msg_id(), text));
                    errors.last_ok = ms();
                    n += 1;
                    if !pace.is_zero() {
                        let_pass(pace).await;
                    }
                }
                Err(e) if e.code() == 900 => break,
                Err(e) => {
                    assert!(
                        e.is_delivery_failure() || tolerated.contains(&e.code()),
                        "{tag}: {e} (at {} ms)",
                        ms()
                    );
                    let now = ms();
                    let entry = errors.codes.entry(e.code()).or_insert((0, now, now));
                    entry.0 += 1;
                    entry.2 = now;
                    let_pass(Duration::from_millis(20)).await;
                }
            }
        }
        errors
    })
}

pub(crate) async fn wait_acked(what: &str, acked: &Acked, n: usize) {
    wait_until(what, || {
        let got = acked.lock().len();
        async move { got >= n }
    })
    .await;
}

/// What breaks a history against what was acknowledged: sequence numbers with gaps or repeats
/// (from the oldest retained), two messages with one id, an acknowledged message (still
/// retained, not deleted since) missing or changed.
pub(crate) fn history_faults(
    h: &[ChatMessage],
    acked: &[(u64, MessageId, String)],
    deleted: &BTreeSet<u64>,
    who: &str,
) -> Vec<String> {
    let mut faults = Vec::new();
    let seqs: Vec<u64> = h.iter().map(ChatMessage::seq).collect();
    let oldest = seqs.first().copied().unwrap_or(1);
    let want: Vec<u64> = (oldest..oldest + seqs.len() as u64).collect();
    if seqs != want {
        faults.push(format!("{who}: sequence numbers with gaps or repeats"));
    }
    let ids: BTreeSet<_> = h.iter().map(ChatMessage::msg_id).collect();
    if ids.len() != h.len() {
        faults.push(format!("{who}: two messages share an id"));
    }
    let by_seq: BTreeMap<u64, &ChatMessage> = h.iter().map(|m| (m.seq(), m)).collect();
    let mut lost = Vec::new();
    for (seq, id, text) in acked.iter().filter(|a| a.0 >= oldest) {
        match by_seq.get(seq) {
            Some(m) if m.msg_id() == *id && (m.text() == Some(text) || deleted.contains(seq)) => {}
            other => lost.push(format!(
                "{seq} {text:?}: {:?}",
                other.map(|m| (m.msg_id(), m.text()))
            )),
        }
    }
    if !lost.is_empty() {
        faults.push(format!(
            "{who}: {} acknowledged messages lost or changed: {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    faults
}

// ------------------------------------------------------------------------------------------
// What a client got
// ------------------------------------------------------------------------------------------

/// What one client's event stream delivered, in order, collected by a task of its own.
/// With the time each event came (ms since the process's first look at the clock, as
/// [`ms`]), for reports.
#[derive(Clone, Default)]
pub(crate) struct Seen(
    pub(crate) Arc<Mutex<Vec<ClientEvent>>>,
    pub(crate) Arc<Mutex<Vec<u64>>>,
);

/// Milliseconds since the first call: a time line shared by the reports of a test.
/// Now on the system clock, in ms since the Unix epoch (the engine's clock in these tests).
pub(crate) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub(crate) fn ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Seen {
    /// Starts collecting: the stream is made before this returns, so it gets every event
    /// from now on.
    pub(crate) fn of(client: &ChatClient) -> Seen {
        let mut stream = client.events();
        let seen = Seen::default();
        let out = seen.clone();
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                out.1.lock().push(ms());
                out.0.lock().push(event);
            }
        });
        seen
    }

    pub(crate) fn events(&self) -> Vec<ClientEvent> {
        self.0.lock().clone()
    }

    pub(crate) fn messages(&self) -> Vec<ChatMessage> {
        self.0
            .lock()
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Message(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn seqs(&self) -> Vec<u64> {
        self.messages().iter().map(ChatMessage::seq).collect()
    }

    pub(crate) fn room_events(&self) -> Vec<ChatRoomEvent> {
        self.0
            .lock()
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Room(e) => Some((**e).clone()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn has_event(&self, pick: impl Fn(&ChatRoomEvent) -> bool) -> bool {
        self.room_events().iter().any(pick)
    }

    pub(crate) fn count_events(&self, pick: impl Fn(&ChatRoomEvent) -> bool) -> usize {
        self.room_events().iter().filter(|e| pick(e)).count()
    }

    pub(crate) fn recoveries(&self) -> usize {
        self.count_events(ChatRoomEvent::is_recovery)
    }

    /// The messages it was told it missed (`ClientEvent::Missed`), in all.
    pub(crate) fn missed(&self) -> u64 {
        self.0
            .lock()
            .iter()
            .map(|e| match e {
                ClientEvent::Missed { count } => *count,
                _ => 0,
            })
            .sum()
    }

    /// Recovery notices whose `last_seq` is below a seq the member had already got live before
    /// it (the room, after the failover, is behind what the member saw: a phantom).
    pub(crate) fn recoveries_behind_live(&self) -> Vec<String> {
        let mut max_live = 0;
        let mut out = Vec::new();
        for e in self.events() {
            match e {
                ClientEvent::Message(m) => max_live = max_live.max(m.seq()),
                ClientEvent::Room(r) => {
                    if let ChatRoomEvent::ChatRoomRecovered { last_seq, .. } = *r {
                        if last_seq < max_live {
                            out.push(format!(
                                "recovered at last_seq {last_seq} after seq {max_live} came live"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    pub(crate) async fn wait_event(&self, what: &str, pick: impl Fn(&ChatRoomEvent) -> bool) {
        wait_until(what, || {
            let found = self.has_event(&pick);
            async move { found }
        })
        .await;
    }

    /// Waits for a message `pick` chooses, and returns it.
    pub(crate) async fn wait_message(
        &self,
        what: &str,
        pick: impl Fn(&ChatMessage) -> bool,
    ) -> ChatMessage {
        let mut found = None;
        wait_until(what, || {
            found = self.messages().into_iter().find(&pick);
            let done = found.is_some();
            async move { done }
        })
        .await;
        found.expect("found")
    }

    pub(crate) async fn wait_seq(&self, what: &str, seq: u64) {
        wait_until(what, || {
            let found = self.seqs().contains(&seq);
            async move { found }
        })
        .await;
    }

    /// Whether `seq` arrives live within `span` (a bounded look, for reports).
    pub(crate) async fn gets_within(&self, seq: u64, span: Duration) -> bool {
        let end = Instant::now() + span;
        loop {
            if self.seqs().contains(&seq) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether, within `span`, message `seq` comes live or the client is told
    /// `on_chat_room_recovered` with a last sequence number of `seq` or later: what a member
    /// whose node was away from NATS when `seq` was published gets instead ("live delivery is
    /// at most once", `docs/cluster.md`; it fetches the message from history).
    pub(crate) async fn gets_or_is_told_within(&self, seq: u64, span: Duration) -> bool {
        let end = Instant::now() + span;
        loop {
            let told = self.room_events().iter().any(|e| {
                matches!(e, ChatRoomEvent::ChatRoomRecovered { last_seq, .. } if *last_seq >= seq)
            });
            if told || self.seqs().contains(&seq) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// When (as [`ms`]) message `seq` first came, if it did.
    pub(crate) fn time_of(&self, seq: u64) -> Option<u64> {
        let events = self.events();
        let times = self.1.lock().clone();
        events
            .iter()
            .zip(&times)
            .find(|(e, _)| matches!(e, ClientEvent::Message(m) if m.seq() == seq))
            .map(|(_, t)| *t)
    }

    /// Whether an event `pick` takes arrives within `span` (a bounded look, for reports).
    pub(crate) async fn event_within(
        &self,
        pick: impl Fn(&ChatRoomEvent) -> bool,
        span: Duration,
    ) -> bool {
        let end = Instant::now() + span;
        loop {
            if self.has_event(&pick) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What breaks "each message once, in order, and no gap the member was not told of": a
    /// sequence number that goes back or repeats, or a gap (a message missing between two it
    /// got, not among `skip`) with no `on_chat_room_recovered` (nor missed notice) after the
    /// gap's start.
    pub(crate) fn order_faults(&self, skip: &BTreeSet<u64>) -> Vec<String> {
        let events = self.events();
        let mut faults = Vec::new();
        let mut last: Option<(usize, u64)> = None;
        for (i, e) in events.iter().enumerate() {
            let ClientEvent::Message(m) = e else { continue };
            if let Some((at, prev)) = last {
                if m.seq() <= prev {
                    faults.push(format!("{} after {prev}", m.seq()));
                } else if ((prev + 1)..m.seq()).any(|s| !skip.contains(&s)) {
                    let told = events[at..].iter().any(|e| {
                        matches!(e, ClientEvent::Missed { .. })
                            || matches!(e, ClientEvent::Room(r) if r.is_recovery())
                    });
                    if !told {
                        faults.push(format!(
                            "gap {}..={} never told (no recovery notice after it)",
                            prev + 1,
                            m.seq() - 1
                        ));
                    }
                }
            }
            last = Some((i, m.seq()));
        }
        faults
    }

    /// The events around the first one where the live sequence numbers go back (for reports):
    /// messages as their seq, room events by name.
    pub(crate) fn around_first_reversal(&self) -> Vec<String> {
        let events = self.events();
        let mut prev = 0;
        let mut at = None;
        for (i, e) in events.iter().enumerate() {
            if let ClientEvent::Message(m) = e {
                if m.seq() <= prev {
                    at = Some((i, m.seq()));
                    break;
                }
                prev = m.seq();
            }
        }
        let Some((at, late)) = at else {
            return Vec::new();
        };
        // Where the late message belonged: the first message after it in seq order.
        let belongs = events
            .iter()
            .position(|e| matches!(e, ClientEvent::Message(m) if m.seq() > late))
            .unwrap_or(0);
        let times = self.1.lock().clone();
        let show = |from: usize, to: usize| -> Vec<String> {
            events[from..to.min(events.len())]
                .iter()
                .zip(&times[from..])
                .map(|(e, t)| match e {
                    ClientEvent::Message(m) => format!(
                        "{} {:?} at {t} ms",
                        m.seq(),
                        m.text()
                            .unwrap_or_default()
                            .chars()
                            .take(8)
                            .collect::<String>()
                    ),
                    ClientEvent::Room(r) => match &**r {
                        ChatRoomEvent::ChatRoomRecovered { last_seq, .. } => {
                            format!("Recovered(last_seq {last_seq}) at {t} ms")
                        }
                        other => format!("{other:?}").chars().take(30).collect(),
                    },
                    other => format!("{other:?} at {t} ms"),
                })
                .collect()
        };
        let mut out = vec!["where it belonged:".to_string()];
        out.extend(show(belongs.saturating_sub(3), belongs + 3));
        out.push("where it came:".into());
        out.extend(show(at.saturating_sub(4), at + 8));
        out
    }

    /// The live messages history holds otherwise (another message under that seq) or not at
    /// all. A message deleted since is in history with its id, its body gone.
    pub(crate) fn phantoms(&self, h: &[ChatMessage]) -> Vec<String> {
        let by_seq: BTreeMap<u64, &ChatMessage> = h.iter().map(|m| (m.seq(), m)).collect();
        let oldest = h.first().map_or(1, ChatMessage::seq);
        let mut out = Vec::new();
        for m in self.messages().into_iter().filter(|m| m.seq() >= oldest) {
            match by_seq.get(&m.seq()) {
                Some(s)
                    if s.msg_id() == m.msg_id() && (s.text() == m.text() || s.is_recalled()) => {}
                Some(s) => out.push(format!(
                    "seq {} live {:?}, in history {:?}",
                    m.seq(),
                    m.text(),
                    s.text()
                )),
                None => out.push(format!(
                    "seq {} live {:?}, not in history",
                    m.seq(),
                    m.text()
                )),
            }
        }
        out
    }

    /// Events about a message (pinned, recalled) that came before the message itself: the
    /// room's order says the message came first.
    pub(crate) fn events_before_their_message(&self) -> Vec<String> {
        let mut got = BTreeSet::new();
        let mut out = Vec::new();
        for e in self.events() {
            match e {
                ClientEvent::Message(m) => {
                    if got.contains(&(m.seq() + 1_000_000_000)) {
                        out.push(format!("message {} after an event about it", m.seq()));
                    }
                    got.insert(m.seq());
                }
                ClientEvent::Room(r) => {
                    let seq = match &*r {
                        ChatRoomEvent::MessagePinned { seq, .. }
                        | ChatRoomEvent::MessageRecalled { seq, .. } => *seq,
                        _ => continue,
                    };
                    if !got.contains(&seq) {
                        got.insert(seq + 1_000_000_000);
                    }
                }
                _ => {}
            }
        }
        out
    }
}

pub(crate) fn is_member_exited(e: &ChatRoomEvent, who: &str) -> bool {
    matches!(e, ChatRoomEvent::MemberExited { participant, .. } if participant.as_str() == who)
}

pub(crate) fn is_removed(e: &ChatRoomEvent) -> Option<LeaveReason> {
    match e {
        ChatRoomEvent::RemovedFromChatRoom { reason, .. } => Some(*reason),
        _ => None,
    }
}

pub(crate) fn removed_as(reason: LeaveReason) -> impl Fn(&ChatRoomEvent) -> bool {
    move |e| is_removed(e) == Some(reason)
}

// ------------------------------------------------------------------------------------------
// A node as a process of its own (`examples/cluster_node`), to SIGKILL
// ------------------------------------------------------------------------------------------

/// One `cluster_node` process, driven by JSON lines.
pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) stdin: ChildStdin,
    /// Every JSON line it printed, and whether its output ended.
    pub(crate) lines: Arc<Mutex<(Vec<serde_json::Value>, bool)>>,
    pub(crate) next_id: u64,
}

impl Process {
    pub(crate) fn spawn(server: &NatsServer, cluster: &str, id: &str) -> Process {
        use std::io::BufRead;
        let mut child = Command::new(node_binary())
            .args(["--nats", &server.url(), "--cluster", cluster, "--node", id])
            .args(["--lease-ttl-ms", &LEASE_TTL.as_millis().to_string()])
            .args([
                "--request-timeout-ms",
                &REQUEST_TIMEOUT.as_millis().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cluster_node");
        let stdout = child.stdout.take().expect("stdout");
        let lines: Arc<Mutex<(Vec<serde_json::Value>, bool)>> = Default::default();
        let out = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str(&line) {
                    out.lock().0.push(v);
                }
            }
            out.lock().1 = true;
        });
        let stdin = child.stdin.take().expect("stdin");
        Process {
            child,
            stdin,
            lines,
            next_id: 1,
        }
    }

    /// Sends a command without waiting; returns its id.
    pub(crate) fn send(&mut self, op: &str, mut fields: serde_json::Value) -> u64 {
        use std::io::Write;
        let id = self.next_id;
        self.next_id += 1;
        fields["op"] = op.into();
        fields["id"] = id.into();
        writeln!(self.stdin, "{fields}").expect("write a command");
        self.stdin.flush().expect("flush");
        id
    }

    pub(crate) fn answer(&self, id: u64) -> Option<serde_json::Value> {
        self.lines
            .lock()
            .0
            .iter()
            .find(|v| v.get("id").and_then(serde_json::Value::as_u64) == Some(id))
            .cloned()
    }

    /// Polls (on a blocking thread) until `pick` finds something in the output.
    pub(crate) async fn wait<T: Send + 'static>(
        &self,
        what: &str,
        pick: impl Fn(&[serde_json::Value]) -> Option<T> + Send + 'static,
    ) -> T {
        let lines = self.lines.clone();
        let what = what.to_string();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(found) = pick(&lines.lock().0) {
                    return found;
                }
                assert!(Instant::now() < deadline, "cluster_node: no {what}");
                assert!(
                    !lines.lock().1,
                    "cluster_node: its output ended before {what}"
                );
                std::thread::sleep(POLL);
            }
        })
        .await
        .unwrap()
    }

    pub(crate) async fn call(&mut self, op: &str, fields: serde_json::Value) -> serde_json::Value {
        let id = self.send(op, fields);
        let answer = self
            .wait(&format!("answer to {op}"), move |lines| {
                lines
                    .iter()
                    .find(|v| v.get("id").and_then(serde_json::Value::as_u64) == Some(id))
                    .cloned()
            })
            .await;
        assert!(answer.get("error").is_none(), "{op}: {answer}");
        answer
    }
}
