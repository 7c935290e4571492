//! The main job: a simulated live stream on an embedded roomcast engine.
//!
//! One big stream room (10,000 viewers by default) and a few small side rooms; a streamer (the
//! owner), moderators (admins), viewers joining in waves; chat that ramps up past the room's
//! delivery threshold with all three priorities, so that priority dropping shows; spammers who
//! get rate-limited, muted, kicked and blocked; a pinned poll (attributes) and an announcement;
//! viewers who drop offline and come back within the grace period (and resume from history
//! without gaps), and some who stay away and are removed automatically. The moderators use
//! roomcast's live-stream tools, each with a reason for the audit log: slow mode, a timed
//! freeze, a kick with a rejoin ban, a timed block (a Twitch timeout) that ends by itself, a
//! staff delete, a pinned message; a viewer recalls its own message; a word filter (the
//! pre-send hook) masks one word and rejects links.
//!
//! At the end it prints a report and checks that every viewer saw its room's messages in order,
//! that no message reached a member after it was removed, that the counts add up, and that each
//! moderation tool did what it says (from history, room info and the audit log). It exits
//! with a non-zero status if a check fails.
//!
//! ```sh
//! cargo run --release --example live_stream
//! cargo run --release --example live_stream -- --members 100000 --duration 30
//! ```
//!
//! Flags: `--members N` (10000), `--rooms N` side rooms (3), `--duration SECONDS` (20),
//! `--grace-ms MS` offline grace period (3000; Agora's is 5 minutes, shortened here so that the
//! automatic removals happen during the run), `--data-dir PATH` (default: a temporary store),
//! `--seed N`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use roomcast::{
    AttributeValue, AuditAction, ChatClient, ChatError, ChatEventHandler, ChatMessage,
    ChatRoomEventHandler, CreateChatRoomOptions, Engine, HistoryQuery, LeaveReason, Limits,
    MessageBody, MessagePriority, MuteDuration, OutgoingMessage, PreSendDecision, PreSendFuture,
    PreSendHook, RoomId, SetAttributes, UserId,
};
use roomcast_workspace::{rss_bytes, Rng};

struct Args {
    members: usize,
    rooms: usize,
    duration: u64,
    grace_ms: u64,
    data_dir: Option<std::path::PathBuf>,
    seed: u64,
}

fn args() -> Args {
    let mut a = Args {
        members: 10_000,
        rooms: 3,
        duration: 20,
        grace_ms: 3_000,
        data_dir: None,
        seed: 42,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        let number = || value.parse::<u64>().unwrap_or_else(|_| usage(&argv[i]));
        match argv[i].as_str() {
            "--members" => a.members = number() as usize,
            "--rooms" => a.rooms = number() as usize,
            "--duration" => a.duration = number().max(5),
            "--grace-ms" => a.grace_ms = number(),
            "--seed" => a.seed = number(),
            "--data-dir" => a.data_dir = Some(value.clone().into()),
            other => usage(other),
        }
        i += 2;
    }
    a
}

fn usage(flag: &str) -> ! {
    eprintln!(
        "unknown or bad flag {flag}\nusage: live_stream [--members N] [--rooms N] [--duration SECONDS] \
         [--grace-ms MS] [--data-dir PATH] [--seed N]"
    );
    std::process::exit(2)
}

/// The word the filter masks, and what it masks it with.
const BANNED_WORD: &str = "darn";
const MASK: &str = "d***";
/// What the filter rejects: links.
const LINK: &str = "http://";

/// The pre-send hook: a word filter that masks [`BANNED_WORD`] and rejects links.
#[derive(Clone, Default)]
struct WordFilter {
    rewritten: Arc<AtomicU64>,
    rejected: Arc<AtomicU64>,
}

impl PreSendHook for WordFilter {
    fn pre_send<'a>(&'a self, _: &'a UserId, m: &'a OutgoingMessage) -> PreSendFuture<'a> {
        Box::pin(async move {
            let MessageBody::Text { content } = &m.body else {
                return PreSendDecision::Allow;
            };
            if content.contains(LINK) {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                PreSendDecision::Reject("no links in chat".into())
            } else if content.contains(BANNED_WORD) {
                self.rewritten.fetch_add(1, Ordering::Relaxed);
                let mut masked = m.clone();
                masked.body = MessageBody::Text {
                    content: content.replace(BANNED_WORD, MASK),
                };
                PreSendDecision::Rewrite(masked)
            } else {
                PreSendDecision::Allow
            }
        })
    }
}

/// Counters shared by every viewer.
struct Totals {
    start: Instant,
    delivered: AtomicU64,
    missed: AtomicU64,
    order_violations: AtomicU64,
    after_removal: AtomicU64,
    /// Messages received that hold a word the filter should have masked or rejected.
    filtered_seen: AtomicU64,
    /// The shadow-banned troll's messages received marked (by staff) and unmarked (a leak).
    shadow_marked: AtomicU64,
    shadow_leaked: AtomicU64,
    /// Messages received marked held for review (only the staff get them so).
    held_marked: AtomicU64,
    /// Until then (µs since `start`) messages may wait behind a held one: not timed.
    hold_until_us: AtomicU64,
    /// Publish-to-handler latency, µs (HDR histograms: true percentiles).
    latency: roomcast_workspace::Latencies,
}

/// One viewer's view: what it received, per room.
#[derive(Default)]
struct ViewerState {
    /// Room -> sequence numbers received, in arrival order.
    seen: HashMap<RoomId, Vec<u64>>,
    removed: HashSet<RoomId>,
    missed: u64,
    /// Sequence numbers of this viewer's own messages, which it does not receive back.
    own: HashSet<u64>,
}

#[derive(Clone)]
struct Viewer {
    state: Arc<Mutex<ViewerState>>,
    totals: Arc<Totals>,
}

impl ChatEventHandler for Viewer {
    fn on_messages_received(&self, messages: &[ChatMessage]) {
        let now = self.totals.start.elapsed().as_micros() as u64;
        let mut state = self.state.lock();
        for m in messages {
            if let Some(AttributeValue::Int(sent)) = m.attributes().get("t") {
                self.totals.latency.record(now.saturating_sub(*sent as u64));
            }
            if m.text()
                .is_some_and(|t| t.contains(BANNED_WORD) || t.contains(LINK))
            {
                self.totals.filtered_seen.fetch_add(1, Ordering::Relaxed);
            }
            if m.from().as_str() == TROLL {
                let counter = if m.is_shadowed() {
                    &self.totals.shadow_marked
                } else {
                    &self.totals.shadow_leaked
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            if m.is_held() {
                self.totals.held_marked.fetch_add(1, Ordering::Relaxed);
            }
            if state.removed.contains(&m.room_id()) {
                self.totals.after_removal.fetch_add(1, Ordering::Relaxed);
            }
            let seen = state.seen.entry(m.room_id()).or_default();
            if seen.last().is_some_and(|last| *last >= m.seq()) {
                self.totals.order_violations.fetch_add(1, Ordering::Relaxed);
            }
            seen.push(m.seq());
        }
        self.totals
            .delivered
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
    }

    fn on_events_missed(&self, count: u64) {
        self.state.lock().missed += count;
        self.totals.missed.fetch_add(count, Ordering::Relaxed);
    }
}

impl ChatRoomEventHandler for Viewer {
    fn on_removed_from_chat_room(
        &self,
        room_id: &RoomId,
        _: &str,
        _: &UserId,
        _: LeaveReason,
        _: Option<&UserId>,
    ) {
        self.state.lock().removed.insert(*room_id);
    }
}

/// What the streamer's handler counts: exits it hears of (the big room tells only staff).
#[derive(Clone, Default)]
struct Staff {
    exits: Arc<Mutex<Vec<UserId>>>,
}

impl ChatRoomEventHandler for Staff {
    fn on_member_exited_from_chat_room(&self, _: &RoomId, _: &str, who: &UserId) {
        self.exits.lock().push(who.clone());
    }
}

struct Member {
    client: ChatClient,
    viewer: Viewer,
}

async fn login(engine: &Engine, name: &str, totals: &Arc<Totals>) -> Member {
    let client = engine.login(name).await.expect("login");
    let viewer = Viewer {
        state: Arc::default(),
        totals: totals.clone(),
    };
    client
        .chat_manager()
        .add_event_handler("viewer", viewer.clone());
    client
        .chat_room_manager()
        .add_event_handler("viewer", viewer.clone());
    Member { client, viewer }
}

fn message(
    room: RoomId,
    text: String,
    priority: MessagePriority,
    totals: &Totals,
) -> OutgoingMessage {
    let t = totals.start.elapsed().as_micros() as i64;
    let m = OutgoingMessage::text(room, text).with_priority(priority);
    // Messages sent while some wait for review wait behind them, in the room's order: that wait
    // is the hold's, not delivery latency.
    if (t as u64) < totals.hold_until_us.load(Ordering::Relaxed) {
        return m;
    }
    m.with_attribute("t", AttributeValue::Int(t))
}

#[derive(Default)]
struct SendCounts {
    attempted: u64,
    accepted: u64,
    by_code: BTreeMap<u32, u64>,
    /// Refused by slow mode (509 too, among the rate-limited).
    slow_mode: u64,
}

impl SendCounts {
    fn count(&mut self, r: Result<ChatMessage, ChatError>) -> Option<ChatMessage> {
        self.attempted += 1;
        match r {
            Ok(m) => {
                self.accepted += 1;
                Some(m)
            }
            Err(e) => {
                if matches!(e, ChatError::SlowMode(_)) {
                    self.slow_mode += 1;
                }
                *self.by_code.entry(e.code()).or_default() += 1;
                None
            }
        }
    }

    fn code(&self, code: u32) -> u64 {
        self.by_code.get(&code).copied().unwrap_or(0)
    }
}

/// The moderation moments of the show, as they happened.
#[derive(Default)]
struct Moderated {
    /// Rejoins refused with 707: the kicked spammer (rejoin ban), the timed-out one (block).
    rejoin_refused: u64,
    /// The timed-out spammer's block end, as the block list showed it.
    block_listed_until: Option<i64>,
    /// The timed-out spammer rejoined after its block ended by itself.
    timed_out_rejoined: bool,
    /// The spam message staff deleted.
    deleted_seq: Option<u64>,
    /// The message its viewer recalled.
    recalled_seq: Option<u64>,
    /// The pinned message.
    pinned_seq: Option<u64>,
    /// The troll's accepted (shadowed) messages: hidden from viewers, so not gaps.
    shadowed_seqs: HashSet<u64>,
    /// A viewer's message held for review and deleted by a moderator during its hold.
    held_deleted_seq: Option<u64>,
    /// A viewer's message held for review and then released.
    held_released_seq: Option<u64>,
}

impl Moderated {
    /// What viewers never receive by design: the troll's shadowed messages and the held
    /// message a moderator deleted (not gaps).
    fn hidden(&self) -> impl Iterator<Item = &u64> {
        self.shadowed_seqs.iter().chain(&self.held_deleted_seq)
    }
}

/// The shadow-banned troll: its sends succeed, only the staff see them (marked).
const TROLL: &str = "troll";

/// Slow mode's cooldown during the show.
const SLOW_MODE: Duration = Duration::from_secs(2);
/// How long the timed-out spammer stays blocked.
const TIMEOUT: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() {
    let args = args();
    let mut rng = Rng::new(args.seed);
    let totals = Arc::new(Totals {
        start: Instant::now(),
        delivered: AtomicU64::new(0),
        missed: AtomicU64::new(0),
        order_violations: AtomicU64::new(0),
        after_removal: AtomicU64::new(0),
        filtered_seen: AtomicU64::new(0),
        shadow_marked: AtomicU64::new(0),
        shadow_leaked: AtomicU64::new(0),
        held_marked: AtomicU64::new(0),
        hold_until_us: AtomicU64::new(0),
        latency: roomcast_workspace::Latencies::new(),
    });
    println!(
        "roomcast live stream: {} viewers in the stream room, {} side rooms, {} s of chat, seed {}",
        args.members, args.rooms, args.duration, args.seed
    );
    println!(
        "offline grace period shortened to {} ms for this run (Agora's default is 5 minutes)",
        args.grace_ms
    );

    let mut limits = Limits::default();
    limits.offline_grace = Duration::from_millis(args.grace_ms);
    limits.max_users_cap = 1_000_000;
    let filter = WordFilter::default();
    let mut builder = Engine::builder()
        .limits(limits)
        .event_queue_capacity(1024)
        .pre_send_hook(filter.clone());
    match &args.data_dir {
        Some(dir) => {
            println!("store: {}", dir.display());
            builder = builder.data_dir(dir);
        }
        None => println!("store: temporary (pass --data-dir to keep it)"),
    }
    let rss_before = rss_bytes();
    let engine = builder.build().await.expect("engine");

    // The streamer, the moderators, the rooms.
    engine.add_super_admin("streamer").await.unwrap();
    let streamer = engine.login("streamer").await.unwrap();
    let staff = Staff::default();
    streamer
        .chat_room_manager()
        .add_event_handler("staff", staff.clone());
    let owner = streamer.chat_room_manager();
    let stream = owner
        .create_chat_room(
            CreateChatRoomOptions::new("Grand finals")
                .with_description("the main stream")
                .with_max_users(args.members as u32 + 100),
        )
        .await
        .unwrap()
        .room_id;
    let mut side_rooms = Vec::new();
    for r in 0..args.rooms {
        side_rooms.push(
            owner
                .create_chat_room(CreateChatRoomOptions::new(format!("side room {r}")))
                .await
                .unwrap()
                .room_id,
        );
    }
    let mut mods = Vec::new();
    for m in 0..3 {
        let name = format!("mod{m}");
        let member = login(&engine, &name, &totals).await;
        member
            .client
            .chat_room_manager()
            .join_chat_room(&stream)
            .await
            .unwrap();
        owner.add_chat_room_admin(&stream, &name).await.unwrap();
        mods.push(member);
    }

    // Viewers join in ten waves.
    let bar = ProgressBar::new(args.members as u64);
    bar.set_style(
        ProgressStyle::with_template("joining  {bar:40} {pos}/{len} viewers {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let joined_at = Instant::now();
    let waves = 10;
    let per_wave = args.members.div_ceil(waves);
    let mut viewers: Vec<Member> = Vec::with_capacity(args.members);
    for wave in 0..waves {
        let from = wave * per_wave;
        let to = ((wave + 1) * per_wave).min(args.members);
        let mut tasks = Vec::new();
        for chunk in (from..to)
            .collect::<Vec<_>>()
            .chunks(per_wave.div_ceil(8).max(1))
        {
            let engine = engine.clone();
            let totals = totals.clone();
            let chunk = chunk.to_vec();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::with_capacity(chunk.len());
                for i in chunk {
                    let m = login(&engine, &format!("viewer{i}"), &totals).await;
                    m.client
                        .chat_room_manager()
                        .join_chat_room(&stream)
                        .await
                        .unwrap();
                    out.push(m);
                }
                out
            }));
        }
        for t in tasks {
            let joined = t.await.unwrap();
            bar.inc(joined.len() as u64);
            viewers.extend(joined);
        }
        bar.set_message(format!("(wave {}/{waves})", wave + 1));
    }
    bar.finish_with_message(format!("in {:.1} s", joined_at.elapsed().as_secs_f64()));
    let mut side_members: Vec<(RoomId, Member)> = Vec::new();
    for (r, room) in side_rooms.iter().enumerate() {
        for i in 0..50 {
            let m = login(&engine, &format!("side{r}-{i}"), &totals).await;
            m.client
                .chat_room_manager()
                .join_chat_room(room)
                .await
                .unwrap();
            side_members.push((*room, m));
        }
    }
    let rss_joined = rss_bytes();
    let mut spammers: Vec<Member> = {
        let mut v = Vec::new();
        for s in 0..4 {
            let name = if s == 3 {
                TROLL.to_string()
            } else {
                format!("spammer{s}")
            };
            let m = login(&engine, &name, &totals).await;
            m.client
                .chat_room_manager()
                .join_chat_room(&stream)
                .await
                .unwrap();
            v.push(m);
        }
        v
    };

    // Who goes offline: 1% come back within the grace period, 1% stay away.
    let away = (args.members / 100).max(2);
    let returners: Vec<usize> = (0..away).map(|k| k * 2).collect();
    let leavers: Vec<usize> = (0..away).map(|k| k * 2 + 1).collect();
    let mut before_away: HashMap<usize, u64> = HashMap::new();

    // The show.
    owner
        .set_chat_room_attributes(&stream, SetAttributes::new([("poll", "who wins? A / B")]))
        .await
        .unwrap()
        .into_result()
        .unwrap();
    let mut sends = SendCounts::default();
    let duration = Duration::from_secs(args.duration);
    let bar = ProgressBar::new(args.duration);
    bar.set_style(
        ProgressStyle::with_template("streaming {bar:40} {pos}/{len} s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let show = Instant::now();
    let mut second = 0;
    let mut events_done = HashSet::new();
    let mut n = 0u64;
    let mut moderated = Moderated::default();
    // When the held message goes out: the run waits for it before its checks.
    let mut hold_release_at: Option<Instant> = None;
    while show.elapsed() < duration {
        let t = show.elapsed().as_secs_f64() / duration.as_secs_f64();
        // The chat rate ramps from 5 to 80 messages per second, past the threshold of 20.
        let rate = 5.0 + 75.0 * t;
        n += 1;
        let at = (n as f64 / rate).min(duration.as_secs_f64());
        let _ = at;
        let who = rng.below(viewers.len());
        let priority = match rng.below(20) {
            0 => MessagePriority::High,
            1..=5 => MessagePriority::Normal,
            _ => MessagePriority::Low,
        };
        if !leavers.contains(&who) {
            // Some viewers swear (the filter masks it), a few post links (it rejects them).
            let text = match n % 23 {
                0 => format!("gg {n} {LINK}scam.example"),
                _ if n % 9 == 0 => format!("gg {n} {BANNED_WORD} that was close"),
                _ => format!("gg {n}"),
            };
            let r = viewers[who]
                .client
                .chat_manager()
                .send_message(message(stream, text, priority, &totals))
                .await;
            if let Some(sent) = sends.count(r) {
                viewers[who].viewer.state.lock().own.insert(sent.seq());
            }
        }
        if n % 10 == 0 {
            let m = &mods[rng.below(mods.len())];
            let r = m
                .client
                .chat_manager()
                .send_message(message(
                    stream,
                    format!("mod note {n}"),
                    MessagePriority::Normal,
                    &totals,
                ))
                .await;
            sends.count(r);
        }
        if n % 4 == 0 && !side_members.is_empty() {
            let (room, m) = &side_members[rng.below(side_members.len())];
            let r = m
                .client
                .chat_manager()
                .send_message(message(
                    *room,
                    format!("side {n}"),
                    MessagePriority::Normal,
                    &totals,
                ))
                .await;
            sends.count(r);
        }
        // Scripted moments.
        let moment = |name: &'static str, at: f64, done: &mut HashSet<&'static str>| {
            t >= at && done.insert(name)
        };
        if moment("slow mode", 0.1, &mut events_done) {
            mods[2]
                .client
                .chat_room_manager()
                .with_reason("chat is too fast")
                .set_chat_room_slow_mode(&stream, Some(SLOW_MODE))
                .await
                .unwrap();
        }
        if moment("spam", 0.15, &mut events_done) {
            // The troll is shadow-banned: it keeps talking, and only the staff see it.
            mods[1]
                .client
                .chat_room_manager()
                .with_reason("trolling")
                .shadow_ban_chat_room_members(&stream, [TROLL])
                .await
                .unwrap();
            let troll = &spammers[3];
            for k in 0..3 {
                let r = troll
                    .client
                    .chat_manager()
                    .send_message(message(
                        stream,
                        format!("you all stink {k}"),
                        MessagePriority::High,
                        &totals,
                    ))
                    .await;
                if let Some(sent) = sends.count(r) {
                    moderated.shadowed_seqs.insert(sent.seq());
                }
            }
            let mut first_spam = None;
            for s in &spammers[..3] {
                for k in 0..30 {
                    let r = s
                        .client
                        .chat_manager()
                        .send_message(message(
                            stream,
                            format!("BUY FOLLOWERS {k}"),
                            MessagePriority::Low,
                            &totals,
                        ))
                        .await;
                    if let Some(sent) = sends.count(r) {
                        first_spam.get_or_insert(sent.seq());
                    }
                }
            }
            let admin = mods[0].client.chat_room_manager();
            let admin = admin.with_reason("spam");
            if let Some(seq) = first_spam {
                admin.delete_chat_room_message(&stream, seq).await.unwrap();
                moderated.deleted_seq = Some(seq);
            }
            admin
                .mute_chat_room_members(&stream, ["spammer0"], Duration::from_secs(5))
                .await
                .unwrap();
            admin
                .remove_chat_room_members_with_rejoin_ban(
                    &stream,
                    ["spammer1"],
                    Duration::from_secs(600),
                )
                .await
                .unwrap();
            admin
                .block_chat_room_members_for(&stream, ["spammer2"], TIMEOUT)
                .await
                .unwrap();
            moderated.block_listed_until = admin
                .fetch_chat_room_block_list(&stream, 1, 100)
                .await
                .unwrap()
                .data
                .iter()
                .find(|b| b.user_id.as_str() == "spammer2")
                .and_then(|b| b.expire_time);
            for s in &spammers[1..3] {
                let again = s.client.chat_room_manager().join_chat_room(&stream).await;
                if again.is_err_and(|e| e.code() == 707) {
                    moderated.rejoin_refused += 1;
                }
            }
        }
        if moment("slow mode off", 0.45, &mut events_done) {
            mods[2]
                .client
                .chat_room_manager()
                .with_reason("calmer now")
                .set_chat_room_slow_mode(&stream, None)
                .await
                .unwrap();
        }
        if moment("recall", 0.5, &mut events_done) {
            // A viewer posts in the wrong room and takes it back.
            // (High priority, and a few tries: past the threshold a normal message may drop.)
            let v = &viewers[viewers.len() - 1];
            let chat = v.client.chat_manager();
            for _ in 0..5 {
                let r = chat
                    .send_message(message(
                        stream,
                        "oops, wrong chat".into(),
                        MessagePriority::High,
                        &totals,
                    ))
                    .await;
                if let Some(sent) = sends.count(r) {
                    v.viewer.state.lock().own.insert(sent.seq());
                    chat.recall_message(&stream, sent.seq()).await.unwrap();
                    moderated.recalled_seq = Some(sent.seq());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if moment("freeze", 0.6, &mut events_done) {
            // A raid: only staff may talk for a while; it ends by itself.
            let freeze = Duration::from_millis((args.duration * 100).max(1_000));
            mods[0]
                .client
                .chat_room_manager()
                .with_reason("raid")
                .freeze_chat_room(&stream, MuteDuration::For(freeze))
                .await
                .unwrap();
            let r = mods[0]
                .client
                .chat_manager()
                .send_message(message(
                    stream,
                    "hold on, cleaning up a raid".into(),
                    MessagePriority::High,
                    &totals,
                ))
                .await;
            sends.count(r);
        }
        if moment("hold", 0.85, &mut events_done) {
            // Hold for review: a viewer's two questions wait a second; a moderator deletes the
            // first during its hold (no viewer ever gets it), the second goes out on time. The
            // hold is then turned off (what is held still waits until its time).
            let rooms = mods[1].client.chat_room_manager();
            let until = totals.start.elapsed() + Duration::from_millis(1_200);
            totals
                .hold_until_us
                .store(until.as_micros() as u64, Ordering::Relaxed);
            rooms
                .with_reason("review questions")
                .set_chat_room_hold(&stream, Some(Duration::from_secs(1)))
                .await
                .unwrap();
            let v = &viewers[viewers.len() - 2];
            let chat = v.client.chat_manager();
            let mut held = Vec::new();
            for text in ["is this a scam?", "what game is next?"] {
                for _ in 0..5 {
                    // (No send time: a held message's wait is not delivery latency.)
                    let r = chat
                        .send_message(
                            OutgoingMessage::text(stream, text)
                                .with_priority(MessagePriority::High),
                        )
                        .await;
                    if let Some(sent) = sends.count(r) {
                        assert!(sent.is_held(), "a viewer's message is held");
                        v.viewer.state.lock().own.insert(sent.seq());
                        held.push(sent.seq());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            if let Some(&first) = held.first() {
                mods[0]
                    .client
                    .chat_room_manager()
                    .with_reason("not a question")
                    .delete_chat_room_message(&stream, first)
                    .await
                    .unwrap();
                moderated.held_deleted_seq = Some(first);
            }
            moderated.held_released_seq = held.get(1).copied();
            hold_release_at = Some(Instant::now() + Duration::from_secs(1));
            rooms.set_chat_room_hold(&stream, None).await.unwrap();
        }
        if moment("parole", 0.75, &mut events_done) {
            // The timed-out spammer's block has ended by itself: it may come back.
            let s = &mut spammers[2];
            {
                let mut state = s.viewer.state.lock();
                state.removed.remove(&stream);
                state.seen.remove(&stream);
            }
            moderated.timed_out_rejoined = s
                .client
                .chat_room_manager()
                .join_chat_room(&stream)
                .await
                .is_ok();
        }
        if moment("offline", 0.3, &mut events_done) {
            for &i in returners.iter().chain(&leavers) {
                let last = viewers[i]
                    .viewer
                    .state
                    .lock()
                    .seen
                    .get(&stream)
                    .and_then(|s| s.last().copied())
                    .unwrap_or(0);
                before_away.insert(i, last);
                viewers[i].client.disconnect().unwrap();
            }
        }
        if moment(
            "back",
            0.3 + (args.grace_ms as f64 / 2.0) / 1000.0 / args.duration as f64,
            &mut events_done,
        ) {
            for &i in &returners {
                viewers[i].client.reconnect().unwrap();
            }
        }
        if moment("announce", 0.5, &mut events_done) {
            let rooms = mods[1].client.chat_room_manager();
            rooms
                .update_chat_room_announcement(&stream, "final map: Dust")
                .await
                .unwrap();
            let r = mods[1]
                .client
                .chat_manager()
                .send_message(message(
                    stream,
                    "bracket: A vs B, best of 3".into(),
                    MessagePriority::High,
                    &totals,
                ))
                .await;
            if let Some(sent) = sends.count(r) {
                rooms
                    .with_reason("the bracket")
                    .pin_chat_room_message(&stream, sent.seq())
                    .await
                    .unwrap();
                moderated.pinned_seq = Some(sent.seq());
            }
            owner
                .set_chat_room_attributes(&stream, SetAttributes::new([("poll", "closed: A wins")]))
                .await
                .unwrap()
                .into_result()
                .unwrap();
        }
        let s = show.elapsed().as_secs();
        if s > second {
            second = s;
            bar.set_position(s);
            bar.set_message(format!(
                "{} sent, {} dropped, {} M delivered",
                sends.accepted,
                sends.by_code.get(&4).copied().unwrap_or(0),
                totals.delivered.load(Ordering::Relaxed) / 1_000_000
            ));
        }
        // Pace the chat: the next message is due at n / rate seconds into the show.
        let due = Duration::from_secs_f64(n as f64 / rate);
        if let Some(wait) = due.checked_sub(show.elapsed()) {
            tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
        }
    }
    bar.finish_with_message("done");

    // Let deliveries drain (and the held message go out), then check.
    if let Some(at) = hold_release_at {
        tokio::time::sleep_until(at.into()).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let saw = |seq: Option<u64>| {
        seq.map_or(0, |seq| {
            viewers
                .iter()
                .filter(|v| {
                    v.viewer
                        .state
                        .lock()
                        .seen
                        .get(&stream)
                        .is_some_and(|s| s.contains(&seq))
                })
                .count()
        })
    };
    let held_deleted_seen = saw(moderated.held_deleted_seq);
    let held_released_seen = saw(moderated.held_released_seq);
    let stats = engine.room_stats(&stream).await.unwrap();
    let last_seq = stats.last_seq;
    let mut gaps_unexplained = 0u64;
    let mut resumed_ok = 0;
    let mut resume_failures = 0;
    for (i, v) in viewers.iter().enumerate() {
        if leavers.contains(&i) {
            continue;
        }
        let (seen, own, missed) = {
            let state = v.viewer.state.lock();
            (
                state.seen.get(&stream).cloned().unwrap_or_default(),
                state.own.clone(),
                state.missed,
            )
        };
        if returners.contains(&i) {
            // Resume: what it saw, plus history after what it saw before going away, must cover
            // everything from its first message to the last, without gaps.
            let mut all: std::collections::BTreeSet<u64> = seen.iter().copied().collect();
            all.extend(own.iter().copied());
            all.extend(moderated.hidden().copied());
            let mut cursor = before_away.get(&i).copied().unwrap_or(0);
            loop {
                let page = v
                    .client
                    .chat_manager()
                    .fetch_history_messages(&stream, HistoryQuery::after(cursor, 200))
                    .await;
                let Ok(page) = page else { break };
                all.extend(page.data.iter().map(ChatMessage::seq));
                match page.cursor {
                    Some(c) => cursor = c,
                    None => break,
                }
            }
            let first = all.iter().next().copied().unwrap_or(1);
            if (first..=last_seq).all(|s| all.contains(&s)) {
                resumed_ok += 1;
            } else {
                if std::env::var("LIVE_DEBUG").is_ok() {
                    let missing: Vec<u64> = (first..=last_seq)
                        .filter(|s| !all.contains(s))
                        .take(10)
                        .collect();
                    eprintln!("resume gap viewer{i}: before_away {:?} first {first} last {last_seq} missing {missing:?}", before_away.get(&i));
                }
                resume_failures += 1;
            }
            continue;
        }
        if let (Some(first), Some(last)) = (seen.first(), seen.last()) {
            let expected = last - first + 1;
            let own_within = own
                .iter()
                .chain(moderated.hidden())
                .filter(|s| (*first..=*last).contains(*s))
                .count() as u64;
            let missing = expected.saturating_sub(seen.len() as u64 + own_within);
            if missing > missed {
                if std::env::var("LIVE_DEBUG").is_ok() && gaps_unexplained < 5 {
                    let set: HashSet<u64> = seen.iter().chain(&own).copied().collect();
                    let holes: Vec<u64> = (*first..=*last)
                        .filter(|s| !set.contains(s))
                        .take(10)
                        .collect();
                    eprintln!(
                        "gap viewer{i}: first {first} last {last} seen {} holes {holes:?}",
                        seen.len()
                    );
                }
                gaps_unexplained += missing;
            }
        }
    }
    // The moderation tools, checked from what the room keeps: its history, info, audit log.
    let audit = owner
        .fetch_chat_room_audit_log(&stream, None, roomcast::LIST_PAGE_MAX)
        .await
        .unwrap()
        .data;
    /// A test of an audit action.
    type Is<'a> = &'a dyn Fn(&AuditAction) -> bool;
    let logged = |f: Is| audit.iter().filter(|e| f(&e.action)).count();
    let find = |f: Is| audit.iter().find(|e| f(&e.action)).cloned();
    let slow_on = find(&|a| {
        matches!(
            a,
            AuditAction::SlowMode {
                cooldown_ms: Some(_)
            }
        )
    });
    let slow_off = find(&|a| matches!(a, AuditAction::SlowMode { cooldown_ms: None }));
    let freeze = find(&|a| matches!(a, AuditAction::Freeze { .. }));
    let freeze_window = freeze.as_ref().and_then(|e| match e.action {
        AuditAction::Freeze { until: Some(until) } => Some((e.time, until)),
        _ => None,
    });
    let staff_ids: HashSet<String> = std::iter::once("streamer".to_string())
        .chain((0..mods.len()).map(|m| format!("mod{m}")))
        .collect();
    let mut history: Vec<ChatMessage> = Vec::new();
    let mut cursor = 0;
    loop {
        let page = streamer
            .chat_manager()
            .fetch_history_messages(&stream, HistoryQuery::after(cursor, 200))
            .await
            .unwrap();
        history.extend(page.data);
        match page.cursor {
            Some(c) => cursor = c,
            None => break,
        }
    }
    // Slow mode: no member who is not staff had two messages accepted within the cooldown.
    let mut slow_violations = 0u64;
    if let (Some(on), Some(off)) = (&slow_on, &slow_off) {
        let cooldown = SLOW_MODE.as_millis() as i64;
        let mut last: HashMap<&UserId, i64> = HashMap::new();
        for m in history
            .iter()
            .filter(|m| (on.time..off.time).contains(&m.server_time()))
            .filter(|m| !staff_ids.contains(m.from().as_str()))
        {
            if let Some(prev) = last.insert(m.from(), m.server_time()) {
                if m.server_time() - prev < cooldown {
                    slow_violations += 1;
                }
            }
        }
    }
    // The freeze: only staff sent while it lasted.
    let (in_freeze, by_others_in_freeze) = freeze_window.map_or((0, 0), |(from, until)| {
        let during: Vec<&ChatMessage> = history
            .iter()
            .filter(|m| (from..until).contains(&m.server_time()))
            .collect();
        let others = during
            .iter()
            .filter(|m| !staff_ids.contains(m.from().as_str()))
            .count();
        (during.len(), others)
    });
    let shows_recalled = |seq: Option<u64>| {
        seq.is_some_and(|seq| history.iter().any(|m| m.seq() == seq && m.is_recalled()))
    };
    let filtered_in_history = history
        .iter()
        .filter(|m| {
            m.text()
                .is_some_and(|t| t.contains(BANNED_WORD) || t.contains(LINK))
        })
        .count();
    let masked_in_history = history
        .iter()
        .filter(|m| m.text().is_some_and(|t| t.contains(MASK)))
        .count();
    let info = owner.fetch_chat_room_info(&stream).await.unwrap();
    let pinned = moderated
        .pinned_seq
        .is_some_and(|seq| info.pinned_messages.iter().any(|p| p.seq == seq));
    // Every act is logged; the operators' with their reasons, the engine's expiries without an
    // operator.
    let acts: Vec<(&str, Is, bool)> = vec![
        (
            "slow mode",
            &|a| matches!(a, AuditAction::SlowMode { .. }),
            true,
        ),
        ("freeze", &|a| matches!(a, AuditAction::Freeze { .. }), true),
        ("freeze ended", &|a| *a == AuditAction::FreezeEnded, false),
        ("mute", &|a| matches!(a, AuditAction::Mute { .. }), true),
        (
            "kick with rejoin ban",
            &|a| matches!(a, AuditAction::KickWithRejoinBan { .. }),
            true,
        ),
        (
            "timed block",
            &|a| matches!(a, AuditAction::BlockFor { .. }),
            true,
        ),
        (
            "timed block ended",
            &|a| *a == AuditAction::BlockExpired,
            false,
        ),
        (
            "staff delete",
            &|a| matches!(a, AuditAction::DeleteMessage { .. }),
            true,
        ),
        (
            "recall",
            &|a| matches!(a, AuditAction::RecallMessage { .. }),
            false,
        ),
        (
            "pin",
            &|a| matches!(a, AuditAction::PinMessage { .. }),
            true,
        ),
        ("shadow ban", &|a| *a == AuditAction::ShadowBan, true),
        (
            "hold for review",
            &|a| matches!(a, AuditAction::Hold { hold_ms: Some(_) }),
            true,
        ),
    ];
    let mut audit_missing = Vec::new();
    for (name, is, reasoned) in &acts {
        let entries: Vec<_> = audit.iter().filter(|e| is(&e.action)).collect();
        let engine_act = matches!(*name, "freeze ended" | "timed block ended");
        let ok = !entries.is_empty()
            && entries
                .iter()
                .all(|e| (!reasoned || e.reason.is_some()) && (e.operator.is_none() == engine_act));
        if !ok {
            audit_missing.push(*name);
        }
    }
    let with_reason = audit.iter().filter(|e| e.reason.is_some()).count();
    let exits = staff.exits.lock().clone();
    let auto_removed = leavers
        .iter()
        .filter(|i| exits.contains(&UserId::new(&format!("viewer{i}")).unwrap()))
        .count();
    let mut persisted = stats.retained as u64;
    for room in &side_rooms {
        persisted += engine
            .room_stats(room)
            .await
            .map_or(0, |s| s.retained as u64);
    }
    let delivered = totals.delivered.load(Ordering::Relaxed);
    let elapsed = show.elapsed().as_secs_f64();
    let members_total = args.members + args.rooms * 50 + 3;
    let m = stats.messages;

    println!("\n## report\n");
    let rows: Vec<(&str, String)> = vec![
        (
            "members (stream room / side rooms)",
            format!("{} / {}", args.members, args.rooms * 50),
        ),
        (
            "members in the stream room at the end",
            stats.member_count.to_string(),
        ),
        (
            "messages attempted / accepted",
            format!("{} / {}", sends.attempted, sends.accepted),
        ),
        (
            "dropped by the threshold (low / normal / high)",
            format!(
                "{} / {} / {}",
                m.dropped_low, m.dropped_normal, m.dropped_high
            ),
        ),
        (
            "refused: rate-limited 509 / muted 215 / not a member 702 / other",
            format!(
                "{} / {} / {} / {}",
                sends.by_code.get(&509).copied().unwrap_or(0),
                sends.by_code.get(&215).copied().unwrap_or(0),
                sends.by_code.get(&702).copied().unwrap_or(0),
                sends
                    .by_code
                    .iter()
                    .filter(|(c, _)| ![4, 509, 215, 702, 219, 508].contains(*c))
                    .map(|(_, n)| n)
                    .sum::<u64>(),
            ),
        ),
        ("deliveries to handlers", delivered.to_string()),
        (
            "deliveries per second (average over the show)",
            format!("{:.0}", delivered as f64 / elapsed),
        ),
        ("publish-to-handler latency p50 / p99 / max", {
            let p = totals.latency.percentiles();
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                p.p50 as f64 / 1000.0,
                p.p99 as f64 / 1000.0,
                p.max as f64 / 1000.0
            )
        }),
        (
            "missed-N markers (events dropped from full queues)",
            totals.missed.load(Ordering::Relaxed).to_string(),
        ),
        (
            "offline and back within the grace period, resumed without gaps",
            format!("{resumed_ok} of {}", returners.len()),
        ),
        (
            "offline past the grace period, removed automatically",
            format!("{auto_removed} of {}", leavers.len()),
        ),
        (
            "memory per member (RSS growth while joining: engine + this run's viewer state)",
            format!(
                "{} bytes",
                rss_joined.saturating_sub(rss_before) / members_total as u64
            ),
        ),
        (
            "messages persisted (retained in the store)",
            persisted.to_string(),
        ),
        (
            "slow mode (2 s) on for / refused sends (509)",
            format!(
                "{:.1} s / {}",
                match (&slow_on, &slow_off) {
                    (Some(on), Some(off)) => (off.time - on.time) as f64 / 1000.0,
                    _ => 0.0,
                },
                sends.slow_mode
            ),
        ),
        (
            "timed freeze: length / sends refused (219) / staff messages during it",
            format!(
                "{:.1} s / {} / {in_freeze}",
                freeze_window.map_or(0.0, |(from, until)| (until - from) as f64 / 1000.0),
                sends.code(219)
            ),
        ),
        (
            "kick with rejoin ban + timed block (2 s): rejoins refused (707) / back after it",
            format!(
                "{} / {}",
                moderated.rejoin_refused,
                if moderated.timed_out_rejoined {
                    "yes"
                } else {
                    "no"
                }
            ),
        ),
        (
            "word filter (pre-send hook): masked / rejected (508)",
            format!(
                "{} / {}",
                filter.rewritten.load(Ordering::Relaxed),
                filter.rejected.load(Ordering::Relaxed)
            ),
        ),
        (
            "recalled by its sender / deleted by staff / pinned",
            format!(
                "{} / {} / {}",
                u8::from(moderated.recalled_seq.is_some()),
                u8::from(moderated.deleted_seq.is_some()),
                info.pinned_messages.len()
            ),
        ),
        (
            "held for review: deleted during its hold, seen by viewers / released, seen by viewers / seen marked by staff",
            format!(
                "{} / {held_deleted_seen} / {} / {held_released_seen} / {}",
                u8::from(moderated.held_deleted_seq.is_some()),
                u8::from(moderated.held_released_seq.is_some()),
                totals.held_marked.load(Ordering::Relaxed)
            ),
        ),
        (
            "shadow-banned troll: accepted / seen marked by staff / leaked to viewers",
            format!(
                "{} / {} / {}",
                moderated.shadowed_seqs.len(),
                totals.shadow_marked.load(Ordering::Relaxed),
                totals.shadow_leaked.load(Ordering::Relaxed)
            ),
        ),
        (
            "audit log entries / with a reason / engine expiries",
            format!(
                "{} / {with_reason} / {}",
                audit.len(),
                logged(&|a| matches!(
                    a,
                    AuditAction::FreezeEnded | AuditAction::BlockExpired | AuditAction::MuteExpired
                ))
            ),
        ),
    ];
    for (k, v) in &rows {
        println!("| {k:<80} | {v:>26} |");
    }

    let checks = [
        (
            "every viewer saw its room's messages in order",
            totals.order_violations.load(Ordering::Relaxed) == 0,
        ),
        (
            "no message reached a member after it was removed",
            totals.after_removal.load(Ordering::Relaxed) == 0,
        ),
        (
            "gaps in what viewers saw are all accounted for by missed-N markers",
            gaps_unexplained == 0,
        ),
        (
            "viewers who came back resumed from history without gaps",
            resume_failures == 0,
        ),
        (
            "viewers who stayed away were removed",
            auto_removed == leavers.len(),
        ),
        (
            "the threshold dropped low-priority messages",
            m.dropped_low > 0,
        ),
        (
            "counts add up: deliveries <= accepted x members",
            delivered <= sends.accepted * members_total as u64,
        ),
        (
            "the spammers were stopped (rate limit, mute, kick, block)",
            sends.by_code.get(&509).copied().unwrap_or(0) > 0,
        ),
        (
            "slow mode refused sends, and nobody but staff had two messages within the cooldown",
            sends.slow_mode > 0 && slow_on.is_some() && slow_off.is_some() && slow_violations == 0,
        ),
        (
            "nobody but staff sent during the freeze, which refused sends and ended by itself",
            freeze_window.is_some()
                && by_others_in_freeze == 0
                && in_freeze > 0
                && sends.code(219) > 0
                && !info.frozen,
        ),
        (
            "the kicked and the timed-out spammers could not rejoin; the timeout ended by itself",
            moderated.rejoin_refused == 2
                && moderated.block_listed_until.is_some()
                && moderated.timed_out_rejoined,
        ),
        (
            "no viewer received a filtered word or link; history holds none, masked ones instead",
            totals.filtered_seen.load(Ordering::Relaxed) == 0
                && filtered_in_history == 0
                && masked_in_history > 0
                && sends.code(508) > 0,
        ),
        (
            "the recalled and the staff-deleted messages show recalled in history",
            shows_recalled(moderated.recalled_seq) && shows_recalled(moderated.deleted_seq),
        ),
        ("the pinned message is listed in the room's info", pinned),
        (
            "the audit log holds every act, the operators' with their reasons",
            audit_missing.is_empty(),
        ),
        (
            "a held message deleted by a moderator reached no viewer; the other went out after its hold; staff saw both marked",
            moderated.held_deleted_seq.is_some()
                && held_deleted_seen == 0
                && held_released_seen > 0
                && totals.held_marked.load(Ordering::Relaxed) >= 2,
        ),
        (
            "the shadow-banned troll was accepted, seen (marked) by staff only, by no viewer",
            !moderated.shadowed_seqs.is_empty()
                && totals.shadow_marked.load(Ordering::Relaxed) > 0
                && totals.shadow_leaked.load(Ordering::Relaxed) == 0,
        ),
    ];
    if !audit_missing.is_empty() {
        eprintln!("not in the audit log as expected: {audit_missing:?}");
    }
    println!("\n## checks\n");
    let mut failed = 0;
    for (name, ok) in checks {
        println!("- [{}] {name}", if ok { "x" } else { " " });
        if !ok {
            failed += 1;
        }
    }
    engine.shutdown().await;
    if failed > 0 {
        eprintln!("\n{failed} check(s) failed");
        std::process::exit(1);
    }
    println!("\nall checks held");
}
