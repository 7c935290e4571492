//! Hold for review (Twitch's chat delay) attacked as a new user embedding roomcast would (a
//! fresh-context review, written from README.md, docs/semantics.md and the public API only,
//! before reading the engine). Every test runs on a `ManualClock`, with no sleeps: waits poll
//! with a deadline, and "nothing more arrived" is checked behind a barrier (an announcement
//! change by an admin: events are never held, and a call that reaches the room after a release
//! time first delivers what is due, so whatever a member should have by then is in its stream
//! before the marker). Tests marked `` failed when written; they are
//! kept as regression tests.

#![allow(missing_docs)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use roomcast::{
    AuditAction, ChatClient, ChatError, ChatMessage, ChatRoomEvent, ClientEvent, Clock,
    CreateChatRoomOptions, Engine, HistoryQuery, Limits, ManualClock, OutgoingMessage,
    PreSendDecision, PreSendFuture, PreSendHook, RoomId, UserId,
};
use tokio::sync::Notify;

const DEADLINE: Duration = Duration::from_secs(30);
const T0: i64 = 1_700_000_000_000;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.room_delivery_rate = None;
    limits.api_calls_per_user_per_second = None;
    limits.user_messages_per_window = None;
    limits
}

async fn build(clock: &ManualClock, limits: Limits, dir: Option<&std::path::Path>) -> Engine {
    build_with(clock, limits, dir, None).await
}

async fn build_with(
    clock: &ManualClock,
    limits: Limits,
    dir: Option<&std::path::Path>,
    hook: Option<Masker>,
) -> Engine {
    let mut b = Engine::builder().limits(limits).clock(clock.clone());
    if let Some(dir) = dir {
        b = b.data_dir(dir);
    }
    if let Some(hook) = hook {
        b = b.pre_send_hook(hook);
    }
    let engine = b.build().await.unwrap();
    engine.add_super_admin("owner").await.unwrap();
    engine
}

/// An engine on a manual clock, a room "stream" owned by `owner`, and `mod`, an admin of it who
/// makes the barriers' markers.
struct Fx {
    engine: Engine,
    clock: ManualClock,
    owner: ChatClient,
    moder: ChatClient,
    room: RoomId,
}

async fn fixture() -> Fx {
    fixture_with(limits(), None).await
}

async fn fixture_with(limits: Limits, dir: Option<&std::path::Path>) -> Fx {
    let clock = ManualClock::new(T0);
    let engine = build(&clock, limits, dir).await;
    fixture_on(engine, clock).await
}

async fn fixture_on(engine: Engine, clock: ManualClock) -> Fx {
    let owner = engine.login("owner").await.unwrap();
    let room = owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("stream").with_max_users(10_000))
        .await
        .unwrap()
        .room_id;
    let moder = join(&engine, "mod", room).await;
    owner
        .chat_room_manager()
        .add_chat_room_admin(&room, "mod")
        .await
        .unwrap();
    Fx {
        engine,
        clock,
        owner,
        moder,
        room,
    }
}

impl Fx {
    async fn join(&self, user: &str) -> ChatClient {
        join(&self.engine, user, self.room).await
    }

    async fn hold(&self, hold: Option<Duration>) {
        self.owner
            .chat_room_manager()
            .set_chat_room_hold(&self.room, hold)
            .await
            .unwrap();
    }

    fn tap(&self, c: &ChatClient) -> Tap {
        tap(c, &self.clock)
    }

    /// `mod` changes the announcement; waits until every tap got the change.
    async fn barrier(&self, taps: &[&Tap]) {
        barrier_by(&self.moder, self.room, taps).await
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }
}

async fn join(engine: &Engine, user: &str, room: RoomId) -> ChatClient {
    let c = engine.login(user).await.unwrap();
    c.chat_room_manager().join_chat_room(&room).await.unwrap();
    c
}

async fn say(c: &ChatClient, room: RoomId, text: &str) -> ChatMessage {
    try_say(c, room, text).await.unwrap()
}

async fn try_say(c: &ChatClient, room: RoomId, text: &str) -> Result<ChatMessage, ChatError> {
    c.chat_manager()
        .send_message(OutgoingMessage::text(room, text))
        .await
}

static MARKERS: AtomicU64 = AtomicU64::new(0);

async fn barrier_by(by: &ChatClient, room: RoomId, taps: &[&Tap]) {
    let n = MARKERS.fetch_add(1, Ordering::SeqCst);
    let text = format!("marker {n}");
    by.chat_room_manager()
        .update_chat_room_announcement(&room, text.clone())
        .await
        .unwrap();
    for t in taps {
        t.wait(&format!("{text} at {}", t.user()), |t| {
            t.room_events().iter().any(|e| {
                matches!(e, ChatRoomEvent::AnnouncementChanged { announcement, .. } if *announcement == text)
            })
        })
        .await;
    }
}

/// Everything one client's event stream gets, with the engine clock when it was read.
#[derive(Clone)]
struct Tap {
    inner: Arc<TapInner>,
}

struct TapInner {
    user: String,
    got: Mutex<Vec<(i64, ClientEvent)>>,
    changed: Notify,
}

fn tap(c: &ChatClient, clock: &ManualClock) -> Tap {
    let inner = Arc::new(TapInner {
        user: c.current_user_id().as_str().to_string(),
        got: Mutex::new(Vec::new()),
        changed: Notify::new(),
    });
    let mut stream = c.events();
    let writer = inner.clone();
    let clock = clock.clone();
    tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            let at = clock.now_ms();
            writer.got.lock().push((at, event));
            writer.changed.notify_waiters();
        }
    });
    Tap { inner }
}

impl Tap {
    fn user(&self) -> &str {
        &self.inner.user
    }
    fn len(&self) -> usize {
        self.inner.got.lock().len()
    }
    fn events_from(&self, start: usize) -> Vec<(i64, ClientEvent)> {
        self.inner.got.lock()[start..].to_vec()
    }
    fn timed_messages(&self) -> Vec<(i64, ChatMessage)> {
        self.inner
            .got
            .lock()
            .iter()
            .filter_map(|(at, e)| match e {
                ClientEvent::Message(m) => Some((*at, m.clone())),
                _ => None,
            })
            .collect()
    }
    fn messages(&self) -> Vec<ChatMessage> {
        self.messages_from(0)
    }
    fn messages_from(&self, start: usize) -> Vec<ChatMessage> {
        self.events_from(start)
            .into_iter()
            .filter_map(|(_, e)| match e {
                ClientEvent::Message(m) => Some(m),
                _ => None,
            })
            .collect()
    }
    fn seqs(&self) -> Vec<u64> {
        self.messages().iter().map(|m| m.seq()).collect()
    }
    fn seqs_from(&self, start: usize) -> Vec<u64> {
        self.messages_from(start).iter().map(|m| m.seq()).collect()
    }
    fn count(&self, seq: u64) -> usize {
        self.seqs().iter().filter(|s| **s == seq).count()
    }
    fn room_events(&self) -> Vec<ChatRoomEvent> {
        self.inner
            .got
            .lock()
            .iter()
            .filter_map(|(_, e)| match e {
                ClientEvent::Room(r) => Some((**r).clone()),
                _ => None,
            })
            .collect()
    }
    fn missed(&self) -> u64 {
        self.inner
            .got
            .lock()
            .iter()
            .map(|(_, e)| match e {
                ClientEvent::Missed { count } => *count,
                _ => 0,
            })
            .sum()
    }
    /// Positions in the stream of the message `seq` and of the recall event for `seq`.
    fn message_pos(&self, seq: u64) -> Vec<usize> {
        self.inner
            .got
            .lock()
            .iter()
            .enumerate()
            .filter(|(_, (_, e))| matches!(e, ClientEvent::Message(m) if m.seq() == seq))
            .map(|(i, _)| i)
            .collect()
    }
    fn recall_pos(&self, seq: u64) -> Vec<usize> {
        self.inner
            .got
            .lock()
            .iter()
            .enumerate()
            .filter(|(_, (_, e))| {
                matches!(e, ClientEvent::Room(r) if matches!(**r, ChatRoomEvent::MessageRecalled { seq: s, .. } if s == seq))
            })
            .map(|(i, _)| i)
            .collect()
    }
    fn pin_pos(&self, seq: u64) -> Vec<usize> {
        self.inner
            .got
            .lock()
            .iter()
            .enumerate()
            .filter(|(_, (_, e))| {
                matches!(e, ClientEvent::Room(r) if matches!(**r, ChatRoomEvent::MessagePinned { seq: s, .. } if s == seq))
            })
            .map(|(i, _)| i)
            .collect()
    }
    fn texts(&self) -> Vec<String> {
        self.messages()
            .iter()
            .map(|m| m.text().unwrap_or("").to_string())
            .collect()
    }
    async fn wait(&self, what: &str, done: impl Fn(&Tap) -> bool) {
        let wait = async {
            loop {
                let notified = self.inner.changed.notified();
                if done(self) {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(DEADLINE, wait).await.is_err() {
            panic!(
                "{}: timed out waiting for {what}; got seqs {:?}, events {:#?}",
                self.user(),
                self.seqs(),
                self.room_events()
            );
        }
    }
    async fn wait_seq(&self, seq: u64) {
        self.wait(&format!("seq {seq}"), |t| t.count(seq) > 0).await
    }
}

async fn history(c: &ChatClient, room: RoomId) -> Vec<ChatMessage> {
    let chat = c.chat_manager();
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let page = chat
            .fetch_history_messages(&room, HistoryQuery::after(cursor, 200))
            .await
            .unwrap();
        out.extend(page.data.iter().cloned());
        match page.cursor {
            Some(c) => cursor = c,
            None => return out,
        }
    }
}

fn seqs(m: &[ChatMessage]) -> Vec<u64> {
    m.iter().map(|m| m.seq()).collect()
}

/// Polls `check` (every 2 ms of real time) until it holds, failing the test after the
/// deadline: for engine counters that have no event to wait on.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let mut poll = tokio::time::interval(Duration::from_millis(2));
    let start = std::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        poll.tick().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input, events, audit.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_with_the_documented_codes_and_changes_nothing() {
    let fx = fixture().await;
    let rooms = fx.owner.chat_room_manager();
    let bob = fx.join("bob").await;
    let outsider = fx.engine.login("outsider").await.unwrap();

    for bad in [
        Duration::ZERO,
        Duration::from_millis(999),
        secs(61),
        secs(60) + Duration::from_millis(1),
        Duration::MAX,
    ] {
        let err = rooms.set_chat_room_hold(&fx.room, Some(bad)).await;
        assert_eq!(err.unwrap_err().code(), 110, "hold of {bad:?}");
    }
    assert_eq!(
        rooms.fetch_chat_room_info(&fx.room).await.unwrap().hold,
        None
    );
    // The bounds themselves are fine.
    for good in [secs(1), secs(60), Duration::from_millis(1500)] {
        rooms
            .set_chat_room_hold(&fx.room, Some(good))
            .await
            .unwrap();
        assert_eq!(
            rooms.fetch_chat_room_info(&fx.room).await.unwrap().hold,
            Some(good)
        );
    }
    // A member and a stranger may not set it (703, as the docs say); an admin may.
    let err = bob
        .chat_room_manager()
        .set_chat_room_hold(&fx.room, Some(secs(5)))
        .await;
    assert_eq!(err.unwrap_err().code(), 703);
    let err = bob
        .chat_room_manager()
        .set_chat_room_hold(&fx.room, None)
        .await;
    assert_eq!(err.unwrap_err().code(), 703);
    let err = outsider
        .chat_room_manager()
        .set_chat_room_hold(&fx.room, Some(secs(5)))
        .await;
    assert_eq!(err.unwrap_err().code(), 703, "a stranger setting the hold");
    fx.moder
        .chat_room_manager()
        .set_chat_room_hold(&fx.room, Some(secs(7)))
        .await
        .unwrap();
    // An unknown room: 705.
    let err = rooms
        .set_chat_room_hold(&RoomId::from_u64(987_654_321), Some(secs(5)))
        .await;
    assert_eq!(err.unwrap_err().code(), 705);
    // A reason over 512 characters: 110, nothing changes.
    let err = rooms
        .with_reason("x".repeat(513))
        .set_chat_room_hold(&fx.room, Some(secs(9)))
        .await;
    assert_eq!(err.unwrap_err().code(), 110);
    assert_eq!(
        rooms.fetch_chat_room_info(&fx.room).await.unwrap().hold,
        Some(secs(7))
    );

    // Deleting what is not there: 500 (seq 0, a seq never used), and no audit entry.
    let before = rooms
        .fetch_chat_room_audit_log(&fx.room, None, 100)
        .await
        .unwrap()
        .data
        .len();
    for seq in [0, 1, 42, u64::MAX] {
        let err = rooms.delete_chat_room_message(&fx.room, seq).await;
        assert_eq!(err.unwrap_err().code(), 500, "delete of seq {seq}");
        let err = bob.chat_manager().recall_message(&fx.room, seq).await;
        assert_eq!(err.unwrap_err().code(), 500, "recall of seq {seq}");
    }
    // A member deleting a held message of someone else: 703.
    let carol = fx.join("carol").await;
    let held = say(&carol, fx.room, "held").await;
    assert!(held.is_held());
    let err = bob
        .chat_room_manager()
        .delete_chat_room_message(&fx.room, held.seq())
        .await;
    assert_eq!(err.unwrap_err().code(), 703);
    let err = bob
        .chat_manager()
        .recall_message(&fx.room, held.seq())
        .await;
    assert_eq!(err.unwrap_err().code(), 703);
    let err = outsider
        .chat_manager()
        .recall_message(&fx.room, held.seq())
        .await;
    assert_eq!(err.unwrap_err().code(), 702);
    let after = rooms
        .fetch_chat_room_audit_log(&fx.room, None, 100)
        .await
        .unwrap()
        .data
        .len();
    assert_eq!(before, after, "refused calls logged nothing");
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hold_changes_carry_operator_and_reason_reach_every_other_member_and_are_audited() {
    let fx = fixture().await;
    let bob = fx.join("bob").await;
    let bob_tap = fx.tap(&bob);
    let owner_tap = fx.tap(&fx.owner);
    let mod_tap = fx.tap(&fx.moder);

    fx.moder
        .chat_room_manager()
        .with_reason("raid incoming")
        .set_chat_room_hold(&fx.room, Some(secs(15)))
        .await
        .unwrap();
    let want = ChatRoomEvent::HoldChanged {
        room_id: fx.room,
        hold: Some(secs(15)),
        operator: Some(uid("mod")),
        operator_reason: Some("raid incoming".into()),
    };
    for t in [&bob_tap, &owner_tap] {
        let w = want.clone();
        t.wait("HoldChanged", move |t| t.room_events().contains(&w))
            .await;
    }
    // Setting the hold in force again changes nothing: no event, no log entry.
    fx.owner
        .chat_room_manager()
        .set_chat_room_hold(&fx.room, Some(secs(15)))
        .await
        .unwrap();
    fx.owner
        .chat_room_manager()
        .with_reason("raid over")
        .set_chat_room_hold(&fx.room, None)
        .await
        .unwrap();
    // Turning off what is off changes nothing either.
    fx.owner
        .chat_room_manager()
        .set_chat_room_hold(&fx.room, None)
        .await
        .unwrap();
    barrier_by(&fx.owner, fx.room, &[&bob_tap, &mod_tap]).await;
    let holds = |t: &Tap| -> Vec<ChatRoomEvent> {
        t.room_events()
            .into_iter()
            .filter(|e| matches!(e, ChatRoomEvent::HoldChanged { .. }))
            .collect()
    };
    let off = ChatRoomEvent::HoldChanged {
        room_id: fx.room,
        hold: None,
        operator: Some(uid("owner")),
        operator_reason: Some("raid over".into()),
    };
    assert_eq!(holds(&bob_tap), vec![want.clone(), off.clone()]);
    assert_eq!(holds(&mod_tap), vec![off], "the operator is not told");
    fx.barrier(&[&owner_tap]).await;
    assert_eq!(
        holds(&owner_tap),
        vec![want],
        "the owner was the operator of the off"
    );

    let log = fx
        .owner
        .chat_room_manager()
        .fetch_chat_room_audit_log(&fx.room, None, 100)
        .await
        .unwrap()
        .data;
    let hold_entries: Vec<_> = log
        .iter()
        .filter(|e| matches!(e.action, AuditAction::Hold { .. }))
        .collect();
    assert_eq!(hold_entries.len(), 2, "{log:#?}");
    assert_eq!(hold_entries[0].action, AuditAction::Hold { hold_ms: None });
    assert_eq!(hold_entries[0].operator, Some(uid("owner")));
    assert_eq!(hold_entries[0].reason.as_deref(), Some("raid over"));
    assert_eq!(
        hold_entries[1].action,
        AuditAction::Hold {
            hold_ms: Some(15_000)
        }
    );
    assert_eq!(hold_entries[1].operator, Some(uid("mod")));
    assert_eq!(hold_entries[1].reason.as_deref(), Some("raid incoming"));
    assert_eq!(hold_entries[1].time, T0);
    // Members cannot read the log.
    let err = bob
        .chat_room_manager()
        .fetch_chat_room_audit_log(&fx.room, None, 10)
        .await;
    assert_eq!(err.unwrap_err().code(), 703);
    fx.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Exactly once, in order, never early.
// ---------------------------------------------------------------------------------------------

/// What a member who is not staff must and may have received by `now`: every message (but its
/// own) up to the first still held one (`must`), or, since its own held messages never reach
/// it, up to the first still held one of someone else (`may`).
fn due_for(user: &str, accepted: &[ChatMessage], now: i64) -> (Vec<u64>, Vec<u64>) {
    let mut sorted = accepted.to_vec();
    sorted.sort_by_key(|m| m.seq());
    let prefix = |skip_own_held: bool| -> Vec<u64> {
        let mut out = Vec::new();
        for m in &sorted {
            let held = m.is_held_at(now);
            let own = m.from().as_str() == user;
            if held && !(skip_own_held && own) {
                break;
            }
            if !own {
                out.push(m.seq());
            }
        }
        out
    };
    (prefix(false), prefix(true))
}

fn is_prefix_chain(must: &[u64], got: &[u64], may: &[u64]) -> bool {
    got.len() >= must.len()
        && got[..must.len()] == *must
        && may.len() >= got.len()
        && may[..got.len()] == *got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_senders_and_clock_steps_deliver_each_message_once_in_order_and_never_early() {
    let fx = fixture().await;
    fx.hold(Some(secs(3))).await;
    let senders: Vec<ChatClient> = {
        let mut v = Vec::new();
        for i in 0..6 {
            v.push(fx.join(&format!("s{i}")).await);
        }
        v
    };
    let viewers = [fx.join("v0").await, fx.join("v1").await];
    let mut taps = vec![fx.tap(&fx.owner)];
    taps.extend(viewers.iter().map(|v| fx.tap(v)));
    taps.push(fx.tap(&senders[0]));
    taps.push(fx.tap(&senders[1]));
    let accepted: Arc<Mutex<Vec<ChatMessage>>> = Arc::default();

    let mut step_rng = 0x9e37_79b9_7f4a_7c15_u64;
    for round in 0..25 {
        let mut tasks = Vec::new();
        for (i, s) in senders.iter().enumerate() {
            let (s, room, accepted) = (s.clone(), fx.room, accepted.clone());
            tasks.push(tokio::spawn(async move {
                for k in 0..2 {
                    let m = say(&s, room, &format!("r{round} s{i} k{k}")).await;
                    accepted.lock().push(m);
                }
            }));
        }
        {
            let (o, room, accepted) = (fx.owner.clone(), fx.room, accepted.clone());
            tasks.push(tokio::spawn(async move {
                let m = say(&o, room, &format!("r{round} owner")).await;
                accepted.lock().push(m);
            }));
        }
        {
            let clock = fx.clock.clone();
            step_rng ^= step_rng << 13;
            step_rng ^= step_rng >> 7;
            step_rng ^= step_rng << 17;
            let steps = step_rng % 4;
            let step = 100 + step_rng % 700;
            tasks.push(tokio::spawn(async move {
                for _ in 0..steps {
                    clock.advance(Duration::from_millis(step));
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        fx.barrier(&taps.iter().collect::<Vec<_>>()).await;
        let now = fx.now();
        let accepted = accepted.lock().clone();
        for t in &taps[1..] {
            let (must, may) = due_for(t.user(), &accepted, now);
            let got = t.seqs();
            assert!(
                is_prefix_chain(&must, &got, &may),
                "round {round}, {} at {now}: got {got:?}\nmust {must:?}\nmay {may:?}",
                t.user()
            );
        }
        // The owner has everything but its own, at once.
        let mut all: Vec<u64> = accepted
            .iter()
            .filter(|m| m.from().as_str() != "owner")
            .map(|m| m.seq())
            .collect();
        all.sort();
        assert_eq!(taps[0].seqs(), all, "round {round}: the owner");
    }
    fx.clock.advance(secs(61));
    fx.barrier(&taps.iter().collect::<Vec<_>>()).await;
    let accepted = accepted.lock().clone();
    let all: BTreeSet<u64> = accepted.iter().map(|m| m.seq()).collect();
    assert_eq!(
        all,
        (1..=accepted.len() as u64).collect(),
        "sequence numbers without gaps"
    );
    for m in &accepted {
        if m.from().as_str() == "owner" {
            assert_eq!(m.held_until(), None);
        } else {
            assert_eq!(m.held_until(), Some(m.server_time() + 3_000), "{m:?}");
        }
    }
    for t in &taps {
        let want: Vec<u64> = {
            let mut v: Vec<u64> = accepted
                .iter()
                .filter(|m| m.from().as_str() != t.user())
                .map(|m| m.seq())
                .collect();
            v.sort();
            v
        };
        assert_eq!(t.seqs(), want, "{}: each message once, in order", t.user());
        assert_eq!(t.missed(), 0);
        let staff = t.user() == "owner";
        for (at, m) in t.timed_messages() {
            if staff {
                assert_eq!(m.is_held(), m.from().as_str() != "owner", "{m:?}");
            } else {
                assert!(!m.is_held(), "{}: got a marked message {m:?}", t.user());
                if let Some(orig) = accepted.iter().find(|a| a.seq() == m.seq()) {
                    if let Some(until) = orig.held_until() {
                        assert!(
                            at >= until,
                            "{} got seq {} at {at}, held until {until}",
                            t.user(),
                            m.seq()
                        );
                    }
                }
            }
        }
    }
    fx.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Deleting and recalling.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_held_message_never_reaches_viewers_and_what_waited_behind_it_goes_at_once() {
    let fx = fixture().await;
    fx.hold(Some(secs(30))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let (bob_t, carol_t, owner_t) = (fx.tap(&bob), fx.tap(&carol), fx.tap(&fx.owner));

    let spam = say(&bob, fx.room, "buy followers").await;
    assert!(spam.is_held());
    let hello = say(&fx.owner, fx.room, "hello from the host").await;
    owner_t.wait_seq(spam.seq()).await;
    fx.moder
        .chat_room_manager()
        .with_reason("spam")
        .delete_chat_room_message(&fx.room, spam.seq())
        .await
        .unwrap();
    // Carol gets the host's message without the clock moving: it waited only behind the
    // deleted one.
    carol_t.wait_seq(hello.seq()).await;
    let recalled = ChatRoomEvent::MessageRecalled {
        room_id: fx.room,
        msg_id: spam.msg_id(),
        seq: spam.seq(),
        from: uid("bob"),
        operator: Some(uid("mod")),
        operator_reason: Some("spam".into()),
    };
    for t in [&bob_t, &owner_t] {
        let r = recalled.clone();
        t.wait("the recall event", move |t| t.room_events().contains(&r))
            .await;
    }
    fx.clock.advance(secs(31));
    fx.barrier(&[&carol_t, &owner_t, &bob_t]).await;
    assert_eq!(carol_t.seqs(), vec![hello.seq()]);
    assert!(
        carol_t.recall_pos(spam.seq()).is_empty(),
        "carol is not told"
    );
    assert_eq!(owner_t.count(spam.seq()), 1);
    assert_eq!(bob_t.seqs(), vec![hello.seq()]);
    // Past its release time, history shows it recalled, body gone, to everyone.
    for c in [&carol, &bob, &fx.owner] {
        let h = history(c, fx.room).await;
        let m = h
            .iter()
            .find(|m| m.seq() == spam.seq())
            .expect("in history");
        assert!(m.is_recalled());
        assert_eq!(m.text(), Some(""));
    }
    let log = fx
        .owner
        .chat_room_manager()
        .fetch_chat_room_audit_log(&fx.room, None, 100)
        .await
        .unwrap()
        .data;
    let log: Vec<_> = log
        .into_iter()
        .filter(|e| e.action != AuditAction::UpdateAnnouncement) // the barriers' markers
        .collect();
    assert_eq!(
        log[0].action,
        AuditAction::DeleteMessage { seq: spam.seq() }
    );
    assert_eq!(log[0].operator, Some(uid("mod")));
    assert_eq!(log[0].targets, vec![uid("bob")]);
    assert_eq!(log[0].reason.as_deref(), Some("spam"));
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_racing_the_release_is_all_or_nothing_for_each_viewer() {
    let fx = fixture().await;
    fx.hold(Some(secs(1))).await;
    let bob = fx.join("bob").await;
    let viewers = [
        fx.join("v0").await,
        fx.join("v1").await,
        fx.join("v2").await,
    ];
    let taps: Vec<Tap> = viewers.iter().map(|v| fx.tap(v)).collect();
    let mut sent = Vec::new();
    for i in 0..30u64 {
        let m = say(&bob, fx.room, &format!("m{i}")).await;
        let until = m.held_until().unwrap();
        let clock = fx.clock.clone();
        let rooms = fx.moder.chat_room_manager();
        let room = fx.room;
        let seq = m.seq();
        // i % 3: the clock reaches the release time exactly before, during or after the delete.
        match i % 3 {
            0 => {
                clock.set(until);
                rooms.delete_chat_room_message(&room, seq).await.unwrap();
            }
            1 => {
                let a = tokio::spawn(async move { clock.set(until) });
                let b =
                    tokio::spawn(async move { rooms.delete_chat_room_message(&room, seq).await });
                a.await.unwrap();
                b.await.unwrap().unwrap();
            }
            _ => {
                rooms.delete_chat_room_message(&room, seq).await.unwrap();
                clock.set(until);
            }
        }
        sent.push(m);
    }
    fx.clock.advance(secs(5));
    fx.barrier(&taps.iter().collect::<Vec<_>>()).await;
    for t in &taps {
        for m in &sent {
            let got = t.message_pos(m.seq());
            let told = t.recall_pos(m.seq());
            assert!(
                got.len() <= 1 && told.len() <= 1,
                "{}: seq {} twice",
                t.user(),
                m.seq()
            );
            assert_eq!(
                got.is_empty(),
                told.is_empty(),
                "{}: seq {} delivered {:?} / recall event {:?}: a viewer gets both or neither",
                t.user(),
                m.seq(),
                got,
                told
            );
            if let (Some(g), Some(r)) = (got.first(), told.first()) {
                assert!(
                    g < r,
                    "{}: recall of seq {} before the message",
                    t.user(),
                    m.seq()
                );
            }
        }
        assert!(t.messages().iter().all(|m| !m.is_held()));
    }
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_after_the_release_is_an_ordinary_deletion() {
    let fx = fixture().await;
    fx.hold(Some(secs(5))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let m = say(&bob, fx.room, "fine at first").await;
    fx.clock.advance(secs(5));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), vec![m.seq()]);
    fx.moder
        .chat_room_manager()
        .with_reason("on second thought")
        .delete_chat_room_message(&fx.room, m.seq())
        .await
        .unwrap();
    let want = ChatRoomEvent::MessageRecalled {
        room_id: fx.room,
        msg_id: m.msg_id(),
        seq: m.seq(),
        from: uid("bob"),
        operator: Some(uid("mod")),
        operator_reason: Some("on second thought".into()),
    };
    carol_t
        .wait("the recall", move |t| t.room_events().contains(&want))
        .await;
    // And the sender's own recall after the release, within its window, too.
    let m2 = say(&bob, fx.room, "typo").await;
    fx.clock.advance(secs(6));
    carol_t.wait_seq(m2.seq()).await;
    bob.chat_manager()
        .recall_message(&fx.room, m2.seq())
        .await
        .unwrap();
    let seq2 = m2.seq();
    carol_t
        .wait("the sender's recall", move |t| {
            !t.recall_pos(seq2).is_empty()
        })
        .await;
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sender_recalling_its_held_message_keeps_it_from_viewers() {
    let fx = fixture().await;
    fx.hold(Some(secs(20))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let (carol_t, owner_t) = (fx.tap(&carol), fx.tap(&fx.owner));
    let oops = say(&bob, fx.room, "my address is ...").await;
    let after = say(&bob, fx.room, "never mind").await;
    owner_t.wait_seq(after.seq()).await;
    bob.chat_manager()
        .recall_message(&fx.room, oops.seq())
        .await
        .unwrap();
    let seq = oops.seq();
    owner_t
        .wait("the recall", move |t| !t.recall_pos(seq).is_empty())
        .await;
    // Recalling again changes nothing.
    bob.chat_manager()
        .recall_message(&fx.room, oops.seq())
        .await
        .unwrap();
    fx.clock.advance(secs(20));
    fx.barrier(&[&carol_t, &owner_t]).await;
    assert_eq!(carol_t.seqs(), vec![after.seq()]);
    assert!(carol_t.recall_pos(oops.seq()).is_empty());
    assert_eq!(owner_t.recall_pos(oops.seq()).len(), 1);
    assert!(!carol_t.texts().iter().any(|t| t.contains("address")));
    let h = history(&carol, fx.room).await;
    assert!(h.iter().any(|m| m.seq() == oops.seq() && m.is_recalled()));
    let log = fx
        .owner
        .chat_room_manager()
        .fetch_chat_room_audit_log(&fx.room, None, 100)
        .await
        .unwrap()
        .data;
    let log: Vec<_> = log
        .into_iter()
        .filter(|e| e.action != AuditAction::UpdateAnnouncement) // the barriers' markers
        .collect();
    assert_eq!(
        log[0].action,
        AuditAction::RecallMessage { seq: oops.seq() }
    );
    assert_eq!(log[0].operator, Some(uid("bob")));
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_staff_message_queued_behind_a_held_one_never_leaks_its_body() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let held = say(&bob, fx.room, "question?").await;
    let secret = say(&fx.owner, fx.room, "oops, the stream key is 1234").await;
    assert!(!secret.is_held());
    fx.moder
        .chat_room_manager()
        .delete_chat_room_message(&fx.room, secret.seq())
        .await
        .unwrap();
    let last = say(&fx.owner, fx.room, "sorry").await;
    fx.clock.advance(secs(10));
    carol_t.wait_seq(last.seq()).await;
    fx.barrier(&[&carol_t]).await;
    for m in carol_t.messages() {
        assert!(
            !m.text().unwrap_or("").contains("stream key"),
            "the deleted body reached a viewer: {m:?}"
        );
    }
    assert_eq!(carol_t.count(held.seq()), 1);
    assert_eq!(carol_t.count(last.seq()), 1);
    // If carol got seq 2 at all, it came recalled, or before the recall event.
    let got = carol_t.message_pos(secret.seq());
    let told = carol_t.recall_pos(secret.seq());
    assert!(got.len() <= 1 && told.len() <= 1);
    if let (Some(g), Some(r)) = (got.first(), told.first()) {
        let recalled_copy = carol_t
            .messages()
            .iter()
            .any(|m| m.seq() == secret.seq() && m.is_recalled());
        assert!(g < r || recalled_copy, "the message after its recall event");
    }
    fx.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Roles changing during a hold.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotion_and_demotion_during_a_hold_deliver_each_message_exactly_once() {
    let fx = fixture().await;
    let rooms = fx.owner.chat_room_manager();
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await; // promoted during the hold
    let dave = fx.join("dave").await; // demoted during the hold
    let erin = fx.join("erin").await;
    rooms.add_chat_room_admin(&fx.room, "dave").await.unwrap();
    let (carol_t, dave_t, erin_t) = (fx.tap(&carol), fx.tap(&dave), fx.tap(&erin));

    let b1 = say(&bob, fx.room, "b1").await;
    dave_t.wait_seq(b1.seq()).await;
    assert!(dave_t.messages()[0].is_held(), "staff see it marked");
    rooms.add_chat_room_admin(&fx.room, "carol").await.unwrap();
    rooms
        .remove_chat_room_admin(&fx.room, "dave")
        .await
        .unwrap();
    let b2 = say(&bob, fx.room, "b2").await;
    carol_t.wait_seq(b2.seq()).await; // carol is staff now: at once
    let o3 = say(&fx.owner, fx.room, "o3").await;
    fx.barrier(&[&carol_t, &dave_t, &erin_t]).await;
    assert_eq!(erin_t.seqs(), Vec::<u64>::new(), "nothing released yet");
    // Dave is a member again: b2 only at the release.
    assert_eq!(dave_t.seqs(), vec![b1.seq()]);
    // Carol, staff now, sees b2 (and the host's o3 behind it) at once; b1 now or at release.
    assert!(carol_t.seqs().contains(&o3.seq()));
    // Carol's history as staff shows both held messages, marked.
    let h = history(&carol, fx.room).await;
    assert!(h.iter().filter(|m| m.is_held()).count() >= 2, "{h:?}");

    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t, &dave_t, &erin_t]).await;
    let want = vec![b1.seq(), b2.seq(), o3.seq()];
    assert_eq!(erin_t.seqs(), want);
    assert_eq!(
        dave_t.seqs(),
        want,
        "dave: b1 once (as admin), b2 and o3 once (as member)"
    );
    let mut carol_sorted = carol_t.seqs();
    carol_sorted.sort();
    assert_eq!(
        carol_sorted,
        want,
        "carol: each exactly once (got {:?})",
        carol_t.seqs()
    );
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ownership_transfer_during_a_hold_delivers_each_message_exactly_once() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let (carol_t, owner_t) = (fx.tap(&carol), fx.tap(&fx.owner));
    let b1 = say(&bob, fx.room, "b1").await;
    owner_t.wait_seq(b1.seq()).await;
    fx.owner
        .chat_room_manager()
        .change_owner(&fx.room, "carol")
        .await
        .unwrap();
    let b2 = say(&bob, fx.room, "b2").await;
    carol_t.wait_seq(b2.seq()).await;
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t, &owner_t]).await;
    assert_eq!(owner_t.seqs(), vec![b1.seq(), b2.seq()], "the old owner");
    let mut c = carol_t.seqs();
    c.sort();
    assert_eq!(
        c,
        vec![b1.seq(), b2.seq()],
        "the new owner: {:?}",
        carol_t.seqs()
    );
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn staff_leaving_and_rejoining_during_a_hold_get_each_message_once_after_rejoining() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let boss = fx.join("boss").await; // an admin who leaves for good
    fx.owner
        .chat_room_manager()
        .add_chat_room_admin(&fx.room, "boss")
        .await
        .unwrap();
    let (owner_t, boss_t) = (fx.tap(&fx.owner), fx.tap(&boss));
    let b1 = say(&bob, fx.room, "b1").await;
    owner_t.wait_seq(b1.seq()).await;
    boss_t.wait_seq(b1.seq()).await;
    fx.owner
        .chat_room_manager()
        .leave_chat_room(&fx.room)
        .await
        .unwrap();
    boss.chat_room_manager()
        .leave_chat_room(&fx.room)
        .await
        .unwrap();
    let b2 = say(&bob, fx.room, "b2").await;
    let mark = owner_t.len();
    fx.owner
        .chat_room_manager()
        .join_chat_room(&fx.room)
        .await
        .unwrap();
    let info = fx
        .owner
        .chat_room_manager()
        .fetch_chat_room_info(&fx.room)
        .await
        .unwrap();
    assert_eq!(info.owner, uid("owner"));
    fx.barrier(&[&owner_t]).await;
    // The owner's replay shows both held messages, marked.
    let replay = owner_t.messages_from(mark);
    assert!(
        replay.iter().any(|m| m.seq() == b1.seq() && m.is_held())
            && replay.iter().any(|m| m.seq() == b2.seq() && m.is_held()),
        "replay {replay:?}"
    );
    let b3 = say(&bob, fx.room, "b3").await;
    owner_t.wait_seq(b3.seq()).await;
    fx.clock.advance(secs(10));
    fx.barrier(&[&owner_t]).await;
    let after = owner_t.seqs_from(mark);
    assert_eq!(
        after,
        vec![b1.seq(), b2.seq(), b3.seq()],
        "nothing twice after the rejoin"
    );
    // Boss, gone, gets nothing more.
    assert_eq!(boss_t.seqs(), vec![b1.seq()]);
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_who_leaves_and_rejoins_during_a_hold_gets_each_message_once() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let boss = fx.join("boss").await;
    fx.owner
        .chat_room_manager()
        .add_chat_room_admin(&fx.room, "boss")
        .await
        .unwrap();
    let boss_t = fx.tap(&boss);
    let b1 = say(&bob, fx.room, "b1").await;
    boss_t.wait_seq(b1.seq()).await;
    boss.chat_room_manager()
        .leave_chat_room(&fx.room)
        .await
        .unwrap();
    let b2 = say(&bob, fx.room, "b2").await;
    let mark = boss_t.len();
    let joined = boss
        .chat_room_manager()
        .join_chat_room(&fx.room)
        .await
        .unwrap();
    let staff = joined.admin_list.contains(&uid("boss"));
    fx.barrier(&[&boss_t]).await;
    let replay = boss_t.seqs_from(mark);
    if staff {
        assert_eq!(replay, vec![b1.seq(), b2.seq()]);
    } else {
        assert!(
            replay.is_empty(),
            "a member's replay holds no held message: {replay:?}"
        );
    }
    fx.clock.advance(secs(10));
    fx.barrier(&[&boss_t]).await;
    assert_eq!(
        boss_t.seqs_from(mark),
        vec![b1.seq(), b2.seq()],
        "staff now: {staff}"
    );
    fx.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Joining, leaving, presence, several clients.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_joining_during_a_hold_gets_a_replay_without_held_or_queued_then_each_live_once() {
    let fx = fixture().await;
    let bob = fx.join("bob").await;
    let o1 = say(&fx.owner, fx.room, "o1").await;
    let b0 = say(&bob, fx.room, "b0 before the hold").await;
    fx.hold(Some(secs(10))).await;
    let b2 = say(&bob, fx.room, "b2").await;
    let o3 = say(&fx.owner, fx.room, "o3 queued").await;
    fx.clock.advance(secs(4));
    let b4 = say(&bob, fx.room, "b4").await;
    let carol = fx.engine.login("carol").await.unwrap();
    let carol_t = fx.tap(&carol);
    carol
        .chat_room_manager()
        .join_chat_room(&fx.room)
        .await
        .unwrap();
    fx.barrier(&[&carol_t]).await;
    assert_eq!(
        carol_t.seqs(),
        vec![o1.seq(), b0.seq()],
        "replay: what precedes the oldest held"
    );
    // History likewise: o3 (staff, behind a held one) is in history at once.
    let h = seqs(&history(&carol, fx.room).await);
    assert_eq!(h, vec![o1.seq(), b0.seq(), o3.seq()]);
    fx.clock.advance(secs(6));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), vec![o1.seq(), b0.seq(), b2.seq(), o3.seq()]);
    fx.clock.advance(secs(4));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(
        carol_t.seqs(),
        vec![o1.seq(), b0.seq(), b2.seq(), o3.seq(), b4.seq()]
    );
    assert!(carol_t.messages().iter().all(|m| !m.is_held()));
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_leaving_and_rejoining_during_a_hold_gets_each_message_once() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let b1 = say(&bob, fx.room, "b1").await;
    carol
        .chat_room_manager()
        .leave_chat_room(&fx.room)
        .await
        .unwrap();
    let b2 = say(&bob, fx.room, "b2").await;
    carol
        .chat_room_manager()
        .join_chat_room(&fx.room)
        .await
        .unwrap();
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), Vec::<u64>::new());
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), vec![b1.seq(), b2.seq()]);
    // The sender leaving does not take its held message away.
    let b3 = say(&bob, fx.room, "b3").await;
    bob.chat_room_manager()
        .leave_chat_room(&fx.room)
        .await
        .unwrap();
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), vec![b1.seq(), b2.seq(), b3.seq()]);
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_client_of_a_user_gets_each_message_once_and_a_sender_none_of_its_own() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let bob2 = fx.engine.login("bob").await.unwrap();
    let carol = fx.join("carol").await;
    let carol2 = fx.engine.login("carol").await.unwrap();
    let owner2 = fx.engine.login("owner").await.unwrap();
    let taps = [
        fx.tap(&bob),
        fx.tap(&bob2),
        fx.tap(&carol),
        fx.tap(&carol2),
        fx.tap(&fx.owner),
        fx.tap(&owner2),
    ];
    let b1 = say(&bob, fx.room, "from bob's phone").await;
    let b2 = say(&bob2, fx.room, "from bob's laptop").await;
    let c3 = say(&carol2, fx.room, "carol's laptop").await;
    let o4 = say(&owner2, fx.room, "host").await;
    for t in &taps[4..] {
        t.wait_seq(c3.seq()).await;
    }
    let all: Vec<&Tap> = taps.iter().collect();
    fx.barrier(&all).await;
    for t in &taps[..4] {
        assert!(
            t.seqs().is_empty(),
            "{}: nothing before the release ({:?})",
            t.user(),
            t.seqs()
        );
    }
    fx.clock.advance(secs(10));
    fx.barrier(&all).await;
    for t in &taps[..2] {
        assert_eq!(t.seqs(), vec![c3.seq(), o4.seq()], "bob's clients");
    }
    for t in &taps[2..4] {
        assert_eq!(
            t.seqs(),
            vec![b1.seq(), b2.seq(), o4.seq()],
            "carol's clients"
        );
    }
    for t in &taps[4..] {
        assert_eq!(
            t.seqs(),
            vec![b1.seq(), b2.seq(), c3.seq()],
            "the owner's clients"
        );
    }
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_back_online_before_the_release_gets_it_live() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let o1 = say(&fx.owner, fx.room, "o1").await;
    carol_t.wait_seq(o1.seq()).await;
    // Case 1: online when sent, offline for a moment, back before the release.
    let b2 = say(&bob, fx.room, "b2").await;
    carol.disconnect().unwrap();
    carol.reconnect().unwrap();
    // Case 2: offline when sent, back before the release.
    carol.disconnect().unwrap();
    let b3 = say(&bob, fx.room, "b3").await;
    carol.reconnect().unwrap();
    // What a resuming client does: history after the last seq seen (nothing yet: held).
    let page = carol
        .chat_manager()
        .fetch_history_messages(&fx.room, HistoryQuery::after(o1.seq(), 50))
        .await
        .unwrap();
    assert!(page.data.is_empty(), "{:?}", page.data);
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(
        carol_t.seqs(),
        vec![o1.seq(), b2.seq(), b3.seq()],
        "online at the release and in the room throughout: each live once"
    );
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_offline_at_the_release_finds_it_in_history_without_gaps_or_duplicates() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let o1 = say(&fx.owner, fx.room, "o1").await;
    carol_t.wait_seq(o1.seq()).await;
    let b2 = say(&bob, fx.room, "b2").await;
    carol.disconnect().unwrap();
    fx.clock.advance(secs(10));
    let o3 = say(&fx.owner, fx.room, "o3").await;
    let b4 = say(&bob, fx.room, "b4").await;
    carol.reconnect().unwrap();
    let o5 = say(&fx.owner, fx.room, "o5").await;
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t]).await;
    let live = carol_t.seqs();
    let last_seen = o1.seq();
    let page = carol
        .chat_manager()
        .fetch_history_messages(&fx.room, HistoryQuery::after(last_seen, 50))
        .await
        .unwrap();
    // The union of live and history is every message once, none of them marked.
    let mut union: Vec<u64> = live.clone();
    union.extend(seqs(&page.data));
    union.sort();
    union.dedup();
    assert_eq!(
        union,
        vec![o1.seq(), b2.seq(), o3.seq(), b4.seq(), o5.seq()],
        "live {live:?}, history {:?}",
        seqs(&page.data)
    );
    assert!(
        !live.contains(&b2.seq()) && !live.contains(&o3.seq()),
        "offline gets no pushes"
    );
    assert!(page.data.iter().all(|m| !m.is_held()));
    fx.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Interplay with the other moderation tools.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shadow_banned_senders_held_message_reaches_only_staff_and_does_not_tip_it_off() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let troll = fx.join("troll").await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    fx.owner
        .chat_room_manager()
        .shadow_ban_chat_room_members(&fx.room, ["troll"])
        .await
        .unwrap();
    let (carol_t, owner_t, troll_t) = (fx.tap(&carol), fx.tap(&fx.owner), fx.tap(&troll));
    let t1 = say(&troll, fx.room, "troll 1").await;
    let b2 = say(&bob, fx.room, "bob 2").await;
    // The troll sees what any member sees: held, not shadowed.
    assert!(!t1.is_shadowed());
    assert_eq!(
        t1.is_held(),
        b2.is_held(),
        "the troll's message looks like bob's"
    );
    assert_eq!(t1.held_until().map(|u| u - t1.server_time()), Some(10_000));
    let o3 = say(&fx.owner, fx.room, "owner 3").await;
    owner_t.wait_seq(b2.seq()).await;
    let tm = owner_t
        .messages()
        .into_iter()
        .find(|m| m.seq() == t1.seq())
        .unwrap();
    assert!(tm.is_shadowed() && tm.is_held());
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t, &owner_t, &troll_t]).await;
    assert_eq!(carol_t.seqs(), vec![b2.seq(), o3.seq()]);
    assert_eq!(troll_t.seqs(), vec![b2.seq(), o3.seq()]);
    assert_eq!(owner_t.seqs(), vec![t1.seq(), b2.seq()]);
    assert!(!seqs(&history(&carol, fx.room).await).contains(&t1.seq()));
    let own = history(&troll, fx.room).await;
    let own = own.iter().find(|m| m.seq() == t1.seq()).unwrap();
    assert!(!own.is_shadowed());
    // A held shadowed message cannot be pinned either.
    let err = fx
        .owner
        .chat_room_manager()
        .pin_chat_room_message(&fx.room, t1.seq())
        .await;
    assert_eq!(err.unwrap_err().code(), 500);
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_mode_counts_from_the_acceptance_not_the_release() {
    let fx = fixture().await;
    fx.hold(Some(secs(30))).await;
    fx.owner
        .chat_room_manager()
        .set_chat_room_slow_mode(&fx.room, Some(secs(10)))
        .await
        .unwrap();
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let b1 = say(&bob, fx.room, "b1").await;
    fx.clock.advance(secs(4));
    let err = try_say(&bob, fx.room, "too soon").await.unwrap_err();
    assert_eq!(err.code(), 509);
    assert!(
        matches!(err, ChatError::SlowMode(w) if w == secs(6)),
        "{err:?}"
    );
    fx.clock.advance(secs(6));
    let b2 = say(&bob, fx.room, "b2").await;
    assert_eq!(b2.seq(), b1.seq() + 1, "a refused message takes no seq");
    assert_eq!(b2.held_until(), Some(b2.server_time() + 30_000));
    fx.clock.advance(secs(20));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), vec![b1.seq()]);
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), vec![b1.seq(), b2.seq()]);
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allow_listed_members_are_held_too_and_admins_never() {
    let fx = fixture().await;
    fx.hold(Some(secs(5))).await;
    let vip = fx.join("vip").await;
    fx.owner
        .chat_room_manager()
        .add_members_to_chat_room_allow_list(&fx.room, ["vip"])
        .await
        .unwrap();
    let m = say(&vip, fx.room, "vip").await;
    assert!(m.is_held());
    let a = say(&fx.moder, fx.room, "admin").await;
    assert!(!a.is_held());
    let o = say(&fx.owner, fx.room, "owner").await;
    assert!(!o.is_held());
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_retries_during_a_hold_return_the_first_message_and_deliver_it_once() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let (carol_t, owner_t) = (fx.tap(&carol), fx.tap(&fx.owner));
    let keyed = OutgoingMessage::text(fx.room, "once").with_idempotency_key("k-1");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (chat, m) = (bob.chat_manager(), keyed.clone());
        tasks.push(tokio::spawn(async move { chat.send_message(m).await }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().unwrap());
    }
    let first = answers[0].clone();
    for a in &answers {
        assert_eq!(
            (a.seq(), a.msg_id(), a.server_time()),
            (first.seq(), first.msg_id(), first.server_time())
        );
        assert_eq!(
            a.held_until(),
            first.held_until(),
            "the same answer, hold included"
        );
    }
    fx.clock.advance(secs(3));
    let again = bob
        .chat_manager()
        .send_message(keyed.clone())
        .await
        .unwrap();
    assert_eq!(again.seq(), first.seq());
    assert_eq!(again.held_until(), first.held_until());
    fx.clock.advance(secs(7));
    fx.barrier(&[&carol_t, &owner_t]).await;
    let after = bob.chat_manager().send_message(keyed).await.unwrap();
    assert_eq!(after.seq(), first.seq());
    fx.barrier(&[&carol_t, &owner_t]).await;
    assert_eq!(carol_t.seqs(), vec![first.seq()]);
    assert_eq!(owner_t.seqs(), vec![first.seq()]);
    let h = history(&fx.owner, fx.room).await;
    assert_eq!(h.len(), 1);
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idempotent_retry_of_a_deleted_held_message_does_not_resurrect_it() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let keyed = OutgoingMessage::text(fx.room, "spam link").with_idempotency_key("k-2");
    let first = bob
        .chat_manager()
        .send_message(keyed.clone())
        .await
        .unwrap();
    fx.moder
        .chat_room_manager()
        .delete_chat_room_message(&fx.room, first.seq())
        .await
        .unwrap();
    let retry = bob.chat_manager().send_message(keyed).await.unwrap();
    assert_eq!(retry.seq(), first.seq());
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t]).await;
    assert!(
        carol_t.seqs().is_empty(),
        "the deleted message reached a viewer after a retry: {:?}",
        carol_t.texts()
    );
    let h = history(&carol, fx.room).await;
    assert!(h.iter().all(|m| m.is_recalled()), "{h:?}");
    fx.engine.shutdown().await;
}

struct Masker;
impl PreSendHook for Masker {
    fn pre_send<'a>(&'a self, _from: &'a UserId, m: &'a OutgoingMessage) -> PreSendFuture<'a> {
        Box::pin(async move {
            match &m.body {
                roomcast::MessageBody::Text { content } if content.contains("http") => {
                    PreSendDecision::Reject("no links".into())
                }
                roomcast::MessageBody::Text { content } if content.contains("darn") => {
                    PreSendDecision::Rewrite(OutgoingMessage::text(
                        m.room_id,
                        content.replace("darn", "****"),
                    ))
                }
                _ => PreSendDecision::Allow,
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pre_send_hooks_rewrite_is_what_is_held_and_released() {
    let clock = ManualClock::new(T0);
    let engine = build_with(&clock, limits(), None, Some(Masker)).await;
    let fx = fixture_on(engine, clock).await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let (carol_t, owner_t) = (fx.tap(&carol), fx.tap(&fx.owner));
    let m = say(&bob, fx.room, "darn lag").await;
    assert_eq!(m.text(), Some("**** lag"));
    assert!(m.is_held());
    let err = try_say(&bob, fx.room, "see http://x").await.unwrap_err();
    assert_eq!(err.code(), 508);
    let m2 = say(&bob, fx.room, "ok").await;
    assert_eq!(
        m2.seq(),
        m.seq() + 1,
        "a rejected message takes no seq and holds nothing"
    );
    owner_t.wait_seq(m2.seq()).await;
    assert_eq!(owner_t.texts(), vec!["**** lag", "ok"]);
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.texts(), vec!["**** lag", "ok"]);
    let h = history(&carol, fx.room).await;
    assert_eq!(h[0].text(), Some("**** lag"));
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]

async fn pinning_a_held_message_never_shows_viewers_a_pin_before_the_message() {
    // What a user expects: either a held message cannot be pinned (500, like a shadowed one),
    // or the pin reaches a viewer no earlier than the message it names (a client shows a pin it
    // cannot render otherwise, and a moderator pinning it would reveal what is under review).
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let m = say(&bob, fx.room, "great question").await;
    let pinned = fx
        .owner
        .chat_room_manager()
        .pin_chat_room_message(&fx.room, m.seq())
        .await;
    match pinned {
        Err(e) => assert_eq!(e.code(), 500, "{e:?}"),
        Ok(()) => {
            fx.barrier(&[&carol_t]).await;
            fx.clock.advance(secs(10));
            fx.barrier(&[&carol_t]).await;
            let got = carol_t.message_pos(m.seq());
            let pin = carol_t.pin_pos(m.seq());
            assert_eq!(got.len(), 1);
            if let Some(p) = pin.first() {
                assert!(
                    got[0] < *p,
                    "carol was told of the pin of seq {} (at {p}) before she got it (at {})",
                    m.seq(),
                    got[0]
                );
            }
        }
    }
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]

async fn pinning_a_staff_message_queued_behind_a_held_one_never_shows_the_pin_first() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    say(&bob, fx.room, "held").await;
    let rules = say(&fx.owner, fx.room, "rules: be nice").await;
    // Waiting behind a held message, it cannot be pinned yet (500): the pin would reach the
    // viewers before the message.
    let early = fx
        .owner
        .chat_room_manager()
        .pin_chat_room_message(&fx.room, rules.seq())
        .await;
    assert_eq!(early.unwrap_err().code(), 500);
    fx.barrier(&[&carol_t]).await;
    fx.clock.advance(secs(10));
    fx.owner
        .chat_room_manager()
        .pin_chat_room_message(&fx.room, rules.seq())
        .await
        .unwrap();
    fx.barrier(&[&carol_t]).await;
    let got = carol_t.message_pos(rules.seq());
    let pin = carol_t.pin_pos(rules.seq());
    assert_eq!((got.len(), pin.len()), (1, 1));
    assert!(
        got[0] < pin[0],
        "carol was told of the pin of seq {} before she got the message",
        rules.seq()
    );
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pinned_held_message_deleted_during_the_hold_is_unpinned() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let m = say(&bob, fx.room, "pin me").await;
    let rooms = fx.owner.chat_room_manager();
    if rooms.pin_chat_room_message(&fx.room, m.seq()).await.is_ok() {
        rooms
            .delete_chat_room_message(&fx.room, m.seq())
            .await
            .unwrap();
        let info = rooms.fetch_chat_room_info(&fx.room).await.unwrap();
        assert!(info.pinned_messages.is_empty());
    }
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn turning_the_hold_off_on_and_changing_it_keeps_release_times_and_the_rooms_order() {
    let fx = fixture().await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    fx.hold(Some(secs(60))).await;
    let a = say(&bob, fx.room, "a").await; // until T0+60
    assert_eq!(a.held_until(), Some(T0 + 60_000));
    fx.hold(Some(secs(1))).await;
    fx.clock.advance(secs(1));
    let b = say(&bob, fx.room, "b").await; // until T0+2, but behind a
    assert_eq!(b.held_until(), Some(T0 + 2_000));
    fx.hold(None).await;
    let c = say(&bob, fx.room, "c").await; // not held, behind a
    assert!(!c.is_held());
    fx.clock.advance(secs(5)); // T0+6: b's release time has passed, a's has not
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), Vec::<u64>::new(), "b and c wait behind a");
    // History: b is past its release time and c was never held: shown; a is not.
    let h = seqs(&history(&carol, fx.room).await);
    assert_eq!(h, vec![b.seq(), c.seq()]);
    fx.hold(Some(secs(30))).await;
    let d = say(&bob, fx.room, "d").await; // T0+36
    assert_eq!(d.held_until(), Some(T0 + 36_000));
    fx.clock.set(T0 + 60_000);
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), vec![a.seq(), b.seq(), c.seq(), d.seq()]);
    fx.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Kicks and blocks of the sender.
// ---------------------------------------------------------------------------------------------

// A moderator who blocks or kicks a sender during the hold has not deleted its messages: roomcast
// documents no purge on a kick or block (its earlier, released messages stay too), so the held
// ones are still released. What a moderator needs is that deleting them still works once the
// sender is gone. (Twitch purges a banned user's recent messages; roomcast leaves that to a
// delete per message: noted in the report.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn blocking_the_sender_during_a_hold_keeps_its_messages_deletable_and_releases_the_rest() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let (carol_t, bob_t) = (fx.tap(&carol), fx.tap(&bob));
    let b1 = say(&bob, fx.room, "b1").await;
    let b2 = say(&bob, fx.room, "b2 nasty").await;
    let o3 = say(&fx.owner, fx.room, "o3").await;
    fx.moder
        .chat_room_manager()
        .with_reason("troll")
        .block_chat_room_members(&fx.room, ["bob"])
        .await
        .unwrap();
    fx.moder
        .chat_room_manager()
        .delete_chat_room_message(&fx.room, b2.seq())
        .await
        .unwrap();
    bob_t
        .wait("bob's removal", |t| {
            t.room_events()
                .iter()
                .any(|e| matches!(e, ChatRoomEvent::RemovedFromChatRoom { .. }))
        })
        .await;
    // The blocked sender may not recall any more (not in the room).
    let err = bob.chat_manager().recall_message(&fx.room, b1.seq()).await;
    assert_eq!(err.unwrap_err().code(), 702);
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), vec![b1.seq(), o3.seq()]);
    assert!(carol_t.recall_pos(b2.seq()).is_empty());
    let removed = bob_t
        .events_from(0)
        .iter()
        .position(|(_, e)| {
            matches!(e, ClientEvent::Room(r) if matches!(**r, ChatRoomEvent::RemovedFromChatRoom { .. }))
        })
        .expect("bob is told he was removed");
    assert_eq!(
        bob_t.seqs_from(removed),
        Vec::<u64>::new(),
        "the blocked sender gets nothing after its removal"
    );
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kicking_the_sender_during_a_hold_still_releases_its_messages_once_in_order() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let b1 = say(&bob, fx.room, "b1").await;
    fx.moder
        .chat_room_manager()
        .remove_chat_room_members(&fx.room, ["bob"])
        .await
        .unwrap();
    bob.chat_room_manager()
        .join_chat_room(&fx.room)
        .await
        .unwrap();
    let b2 = say(&bob, fx.room, "b2").await;
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), vec![b1.seq(), b2.seq()]);
    fx.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// History, replay and local copies.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn history_pages_replay_and_local_copies_hide_held_messages_and_stay_full() {
    let mut l = limits();
    l.join_replay_count = 3;
    let fx = fixture_with(l, None).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    for i in 0..5 {
        say(&fx.owner, fx.room, &format!("o{i}")).await; // 1..=5
    }
    fx.hold(Some(secs(10))).await;
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(say(&bob, fx.room, &format!("b{i}")).await); // 6..=9
        say(&fx.owner, fx.room, &format!("x{i}")).await; // 7, 9, 11, 13 (queued)
    }
    let chat = carol.chat_manager();
    let page = chat
        .fetch_history_messages(&fx.room, HistoryQuery::newest(3))
        .await
        .unwrap();
    assert_eq!(page.data.len(), 3, "a full page");
    assert!(page.data.iter().all(|m| m.from().as_str() == "owner"));
    let walked = history(&carol, fx.room).await;
    assert!(walked
        .iter()
        .all(|m| m.from().as_str() == "owner" && !m.is_held()));
    assert_eq!(walked.len(), 9);
    // Newest-first walk agrees.
    let mut back = Vec::new();
    let mut page = chat
        .fetch_history_messages(&fx.room, HistoryQuery::newest(2))
        .await
        .unwrap();
    loop {
        back.extend(seqs(&page.data));
        match page.cursor {
            Some(c) => {
                page = chat
                    .fetch_history_messages(&fx.room, HistoryQuery::before(c, 2))
                    .await
                    .unwrap()
            }
            None => break,
        }
    }
    back.reverse();
    assert_eq!(back, seqs(&walked));
    // Bob (the sender) sees his own; the owner sees them marked.
    let bobs = history(&bob, fx.room).await;
    assert_eq!(bobs.len(), 13);
    let owners = history(&fx.owner, fx.room).await;
    assert_eq!(owners.iter().filter(|m| m.is_held()).count(), 4);
    // Local copy.
    let local = carol
        .chat_manager()
        .get_conversation(&fx.room)
        .load_messages(None, 100)
        .await
        .unwrap();
    assert!(
        local.iter().all(|m| m.from().as_str() == "owner"),
        "{local:?}"
    );
    fx.clock.advance(secs(10));
    let walked = history(&carol, fx.room).await;
    assert_eq!(walked.len(), 13);
    assert!(walked.iter().all(|m| !m.is_held()));
    let local = carol
        .chat_manager()
        .get_conversation(&fx.room)
        .load_messages(None, 100)
        .await
        .unwrap();
    assert_eq!(local.len(), 13);
    assert!(local.iter().all(|m| !m.is_held()));
    let _ = held;
    fx.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Destroy, shutdown, restart, hibernation, crash.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn destroying_the_room_mid_hold_delivers_nothing_after_and_leaves_no_timer() {
    let fx = fixture().await;
    let baseline = fx.engine.pending_timers();
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    for i in 0..5 {
        say(&bob, fx.room, &format!("b{i}")).await;
        say(&fx.owner, fx.room, &format!("o{i}")).await;
    }
    fx.owner
        .chat_room_manager()
        .destroy_chat_room(&fx.room)
        .await
        .unwrap();
    carol_t
        .wait("destroyed", |t| {
            t.room_events()
                .iter()
                .any(|e| matches!(e, ChatRoomEvent::ChatRoomDestroyed { .. }))
        })
        .await;
    let mark = carol_t.len();
    fx.clock.advance(secs(11));
    // A barrier in another room.
    let other = fx
        .owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("other"))
        .await
        .unwrap()
        .room_id;
    carol
        .chat_room_manager()
        .join_chat_room(&other)
        .await
        .unwrap();
    barrier_by(&fx.owner, other, &[&carol_t]).await;
    assert!(
        carol_t.seqs_from(mark).is_empty(),
        "deliveries after the destroy: {:?}",
        carol_t.seqs_from(mark)
    );
    assert!(carol_t.seqs().is_empty(), "nothing held was ever released");
    eventually("the release timers go with the room", || {
        fx.engine.pending_timers() <= baseline
    })
    .await;
    // The engine is fine.
    let m = say(&fx.owner, other, "still alive").await;
    carol_t.wait_seq(m.seq()).await;
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_with_held_messages_and_a_release_racing_it_is_clean() {
    let fx = fixture().await;
    fx.hold(Some(secs(5))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let _carol_t = fx.tap(&carol);
    for i in 0..20 {
        say(&bob, fx.room, &format!("b{i}")).await;
    }
    let clock = fx.clock.clone();
    let racer = tokio::spawn(async move {
        for _ in 0..20 {
            clock.advance(Duration::from_millis(300));
            tokio::task::yield_now().await;
        }
    });
    tokio::time::timeout(DEADLINE, fx.engine.shutdown())
        .await
        .expect("shutdown returns");
    racer.await.unwrap();
    assert!(fx.engine.is_shut_down());
    let err = try_say(&bob, fx.room, "after").await.unwrap_err();
    assert_eq!(err.code(), 900);
    let err = fx
        .owner
        .chat_room_manager()
        .delete_chat_room_message(&fx.room, 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), 900);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_keeps_held_messages_hidden_until_their_release_and_the_room_keeps_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let (held1, staff2, held3) = {
        let engine = build(&clock, limits(), Some(dir.path())).await;
        let fx = fixture_on(engine, clock.clone()).await;
        fx.hold(Some(secs(30))).await;
        let bob = fx.join("bob").await;
        let h1 = say(&bob, fx.room, "h1").await;
        let s2 = say(&fx.owner, fx.room, "s2").await;
        let h3 = bob
            .chat_manager()
            .send_message(OutgoingMessage::text(fx.room, "h3").with_idempotency_key("k"))
            .await
            .unwrap();
        fx.engine.shutdown().await;
        (h1, s2, h3)
    };
    let room = held1.room_id();
    clock.advance(secs(5));
    let engine = build(&clock, limits(), Some(dir.path())).await;
    let owner = join(&engine, "owner", room).await;
    let info = owner
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    assert_eq!(info.hold, Some(secs(30)), "the hold persists");
    let carol = engine.login("carol").await.unwrap();
    let carol_t = tap(&carol, &clock);
    carol
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    barrier_by(&owner, room, &[&carol_t]).await;
    // (Its replay: see
    // `after_a_restart_a_joiners_replay_still_stops_before_the_oldest_held_message`.)
    let mark = carol_t.len();
    assert_eq!(seqs(&history(&carol, room).await), vec![staff2.seq()]);
    let oh = history(&owner, room).await;
    assert_eq!(
        oh.iter()
            .map(|m| (m.seq(), m.held_until()))
            .collect::<Vec<_>>(),
        vec![
            (held1.seq(), held1.held_until()),
            (staff2.seq(), None),
            (held3.seq(), held3.held_until())
        ]
    );
    // The retry after the restart gets the first answer.
    let bob = join(&engine, "bob", room).await;
    let retry = bob
        .chat_manager()
        .send_message(OutgoingMessage::text(room, "h3").with_idempotency_key("k"))
        .await
        .unwrap();
    assert_eq!(retry.seq(), held3.seq());
    // New messages after the restart: bob's is held, the owner's is not; neither is lost.
    let h5 = say(&bob, room, "h5").await;
    assert!(h5.is_held());
    let s6 = say(&owner, room, "s6").await;
    clock.advance(secs(25)); // T0+30: h1 and h3 released
    barrier_by(&owner, room, &[&carol_t]).await;
    let h = history(&carol, room).await;
    assert_eq!(
        seqs(&h),
        vec![held1.seq(), staff2.seq(), held3.seq(), s6.seq()]
    );
    assert!(h.iter().all(|m| !m.is_held()));
    clock.advance(secs(30));
    barrier_by(&owner, room, &[&carol_t]).await;
    let live = carol_t.seqs_from(mark);
    assert!(
        live.contains(&h5.seq()) && live.contains(&s6.seq()),
        "messages sent after the restart reach a member live: {live:?}"
    );
    let mut sorted = live.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, live, "in order, once");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_with_held_messages_does_not_hibernate_and_delivers_them_live() {
    let mut l = limits();
    l.room_hibernate_after = Some(Duration::ZERO);
    let fx = fixture_with(l, None).await;
    fx.moder
        .chat_room_manager()
        .leave_chat_room(&fx.room)
        .await
        .unwrap();
    // A control room in the same state but with nothing held: it must go to sleep (which shows
    // that the hibernation check ran), the held room must not.
    let _control = fx
        .owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("control"))
        .await
        .unwrap()
        .room_id;
    fx.hold(Some(secs(60))).await;
    let bob = fx.engine.login("bob").await.unwrap();
    fx.owner.disconnect().unwrap();
    let mut last = None;
    let mut control_slept = false;
    // Up to four minutes of engine time, a new held message every 30 s (so something is always
    // held), until a hibernation sweep has put the control room to sleep.
    'cycles: for _cycle in 0..8 {
        bob.chat_room_manager()
            .join_chat_room(&fx.room)
            .await
            .unwrap();
        last = Some(say(&bob, fx.room, "held while idle").await);
        bob.chat_room_manager()
            .leave_chat_room(&fx.room)
            .await
            .unwrap();
        for _ in 0..6 {
            fx.clock.advance(secs(5));
            let engine = fx.engine.clone();
            let settle = async move {
                while engine.rooms_in_memory() == 2 {
                    tokio::task::yield_now().await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_millis(300), settle).await;
            assert!(
                fx.engine.rooms_in_memory() >= 1,
                "the room with held messages hibernated"
            );
            if fx.engine.rooms_in_memory() == 1 {
                control_slept = true;
                break 'cycles;
            }
        }
    }
    assert!(
        control_slept,
        "no hibernation sweep in four minutes of engine time"
    );
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(fx.engine.rooms_in_memory(), 1, "the held room stays awake");
    let last = last.unwrap();
    // A viewer who joins now gets the last held message live at its release.
    let carol = fx.engine.login("carol").await.unwrap();
    let carol_t = fx.tap(&carol);
    carol
        .chat_room_manager()
        .join_chat_room(&fx.room)
        .await
        .unwrap();
    fx.owner.reconnect().unwrap();
    fx.owner
        .chat_room_manager()
        .join_chat_room(&fx.room)
        .await
        .ok();
    barrier_by(&fx.owner, fx.room, &[&carol_t]).await;
    assert_eq!(carol_t.count(last.seq()), 0, "not before its release");
    fx.clock.set(last.held_until().unwrap());
    barrier_by(&fx.owner, fx.room, &[&carol_t]).await;
    assert_eq!(carol_t.count(last.seq()), 1, "got {:?}", carol_t.seqs());
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_room_crash_during_a_hold_does_not_stall_later_messages() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let b1 = say(&bob, fx.room, "b1").await;
    let o2 = say(&fx.owner, fx.room, "o2").await;
    let _ = fx.engine.inject_room_panic(&fx.room).await;
    carol_t
        .wait("the recovery notice", |t| {
            t.room_events()
                .iter()
                .any(|e| matches!(e, ChatRoomEvent::ChatRoomRecovered { .. }))
        })
        .await;
    let mark = carol_t.len();
    let o3 = say(&fx.owner, fx.room, "o3").await;
    let b4 = say(&bob, fx.room, "b4").await;
    assert!(b4.is_held(), "the hold survives the crash");
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t]).await;
    // History shows everything from its release time.
    let h = seqs(&history(&carol, fx.room).await);
    assert_eq!(h, vec![b1.seq(), o2.seq(), o3.seq(), b4.seq()]);
    let live = carol_t.seqs_from(mark);
    assert!(
        live.contains(&o3.seq()) && live.contains(&b4.seq()),
        "messages accepted after the recovery reach viewers live: {live:?}"
    );
    let all = carol_t.seqs();
    let mut dedup = all.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup, all, "in order, each once");
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hold_in_one_room_does_not_delay_another() {
    let fx = fixture().await;
    fx.hold(Some(secs(30))).await;
    let other = fx
        .owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("other"))
        .await
        .unwrap()
        .room_id;
    let bob = fx.join("bob").await;
    bob.chat_room_manager()
        .join_chat_room(&other)
        .await
        .unwrap();
    let carol = fx.join("carol").await;
    carol
        .chat_room_manager()
        .join_chat_room(&other)
        .await
        .unwrap();
    let carol_t = fx.tap(&carol);
    say(&bob, fx.room, "held here").await;
    let m = say(&bob, other, "free there").await;
    assert!(!m.is_held());
    carol_t.wait_seq(m.seq()).await;
    assert_eq!(carol_t.texts(), vec!["free there"]);
    fx.engine.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Further attacks.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]

async fn a_joiners_replay_is_full_when_staff_messages_queue_behind_a_held_one() {
    // The room's newest messages are staff messages waiting behind a held one: a viewer who
    // joins gets the newest `join_replay_count` messages that precede the oldest held message
    // (docs: "gets on replay only what precedes the oldest held message"), not an empty replay.
    let fx = fixture().await; // join_replay_count: 10
    let bob = fx.join("bob").await;
    for i in 0..12 {
        say(&fx.owner, fx.room, &format!("o{i}")).await; // 1..=12
    }
    fx.hold(Some(secs(10))).await;
    let held = say(&bob, fx.room, "held").await; // 13
    for i in 0..10 {
        say(&fx.owner, fx.room, &format!("x{i}")).await; // 14..=23, queued
    }
    let dave = fx.engine.login("dave").await.unwrap();
    let dave_t = fx.tap(&dave);
    dave.chat_room_manager()
        .join_chat_room(&fx.room)
        .await
        .unwrap();
    fx.barrier(&[&dave_t]).await;
    assert_eq!(
        dave_t.seqs(),
        (3..=12).collect::<Vec<u64>>(),
        "the replay: the newest 10 before the held seq {}",
        held.seq()
    );
    fx.clock.advance(secs(10));
    fx.barrier(&[&dave_t]).await;
    assert_eq!(dave_t.seqs(), (3..=23).collect::<Vec<u64>>());
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]

async fn after_a_restart_a_joiners_replay_still_stops_before_the_oldest_held_message() {
    // Before the restart: h1 (held), s2 (the owner's, behind it). A viewer joining after the
    // restart, before h1's release, must not get s2 on replay: the docs say the replay holds
    // only what precedes the oldest held message, and a client that saw s2 resumes "after 2"
    // and never sees h1.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let room = {
        let engine = build(&clock, limits(), Some(dir.path())).await;
        let fx = fixture_on(engine, clock.clone()).await;
        fx.hold(Some(secs(30))).await;
        let bob = fx.join("bob").await;
        say(&bob, fx.room, "h1").await;
        say(&fx.owner, fx.room, "s2").await;
        fx.engine.shutdown().await;
        fx.room
    };
    let engine = build(&clock, limits(), Some(dir.path())).await;
    let owner = join(&engine, "owner", room).await;
    let carol = engine.login("carol").await.unwrap();
    let carol_t = tap(&carol, &clock);
    carol
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    barrier_by(&owner, room, &[&carol_t]).await;
    assert_eq!(
        carol_t.seqs(),
        Vec::<u64>::new(),
        "replay after a restart: nothing precedes the oldest held message"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_the_first_of_two_held_messages_does_not_release_the_second_early() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let b1 = say(&bob, fx.room, "b1").await; // until T0+10
    fx.clock.advance(secs(5));
    let b2 = say(&bob, fx.room, "b2").await; // until T0+15
    let o3 = say(&fx.owner, fx.room, "o3").await; // behind b2
    fx.clock.advance(secs(1));
    // Before its release, a deleted held message is not in a viewer's history.
    fx.moder
        .chat_room_manager()
        .delete_chat_room_message(&fx.room, b1.seq())
        .await
        .unwrap();
    assert!(!seqs(&history(&carol, fx.room).await).contains(&b1.seq()));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(
        carol_t.seqs(),
        Vec::<u64>::new(),
        "b2 is still held until T0+15"
    );
    fx.clock.set(T0 + 10_000);
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), Vec::<u64>::new());
    fx.clock.set(T0 + 15_000);
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), vec![b2.seq(), o3.seq()]);
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_later_held_message_lets_what_waited_behind_it_go_with_the_earlier_one() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let b1 = say(&bob, fx.room, "b1").await; // until T0+10
    fx.clock.advance(secs(5));
    let b2 = say(&bob, fx.room, "b2").await; // until T0+15
    let o3 = say(&fx.owner, fx.room, "o3").await;
    fx.moder
        .chat_room_manager()
        .delete_chat_room_message(&fx.room, b2.seq())
        .await
        .unwrap();
    fx.clock.set(T0 + 10_000);
    fx.barrier(&[&carol_t]).await;
    assert_eq!(
        carol_t.seqs(),
        vec![b1.seq(), o3.seq()],
        "o3 waited only behind b1 once b2 was deleted"
    );
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joiner_after_a_held_message_was_deleted_gets_what_was_queued_behind_it() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let b1 = say(&bob, fx.room, "b1").await;
    let o2 = say(&fx.owner, fx.room, "o2").await;
    fx.moder
        .chat_room_manager()
        .delete_chat_room_message(&fx.room, b1.seq())
        .await
        .unwrap();
    let carol = fx.engine.login("carol").await.unwrap();
    let carol_t = fx.tap(&carol);
    carol
        .chat_room_manager()
        .join_chat_room(&fx.room)
        .await
        .unwrap();
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), vec![o2.seq()], "the replay");
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), vec![o2.seq()], "and nothing twice");
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sender_promoted_during_the_hold_gets_no_early_release_and_not_its_own_message() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let (bob_t, carol_t) = (fx.tap(&bob), fx.tap(&carol));
    let b1 = say(&bob, fx.room, "b1").await;
    fx.owner
        .chat_room_manager()
        .add_chat_room_admin(&fx.room, "bob")
        .await
        .unwrap();
    let b2 = say(&bob, fx.room, "b2 as admin").await;
    assert!(!b2.is_held());
    fx.barrier(&[&carol_t, &bob_t]).await;
    assert_eq!(
        carol_t.seqs(),
        Vec::<u64>::new(),
        "b1 still held, b2 behind it"
    );
    assert!(
        bob_t.seqs().is_empty(),
        "bob never gets his own: {:?}",
        bob_t.seqs()
    );
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t, &bob_t]).await;
    assert_eq!(carol_t.seqs(), vec![b1.seq(), b2.seq()]);
    assert!(
        bob_t.seqs().is_empty(),
        "bob never gets his own: {:?}",
        bob_t.seqs()
    );
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_racing_the_release_get_each_message_exactly_once() {
    let fx = fixture().await;
    fx.hold(Some(secs(1))).await;
    let bob = fx.join("bob").await;
    let mut taps = Vec::new();
    let mut expected = Vec::new();
    for i in 0..16 {
        let m = say(&bob, fx.room, &format!("m{i}")).await;
        expected.push(m.seq());
        let viewer = fx.engine.login(&format!("v{i}")).await.unwrap();
        let t = fx.tap(&viewer);
        let until = m.held_until().unwrap();
        let clock = fx.clock.clone();
        let room = fx.room;
        let joiner = viewer.clone();
        // The join and the release, in either order or at once.
        match i % 3 {
            0 => {
                clock.set(until);
                joiner
                    .chat_room_manager()
                    .join_chat_room(&room)
                    .await
                    .unwrap();
            }
            1 => {
                let a = tokio::spawn(async move { clock.set(until) });
                let b =
                    tokio::spawn(
                        async move { joiner.chat_room_manager().join_chat_room(&room).await },
                    );
                a.await.unwrap();
                b.await.unwrap().unwrap();
            }
            _ => {
                joiner
                    .chat_room_manager()
                    .join_chat_room(&room)
                    .await
                    .unwrap();
                clock.set(until);
            }
        }
        taps.push((t, viewer, expected.clone()));
    }
    fx.clock.advance(secs(2));
    let all: Vec<&Tap> = taps.iter().map(|(t, _, _)| t).collect();
    fx.barrier(&all).await;
    for (i, (t, _, _)) in taps.iter().enumerate() {
        // Viewer i joined around the release of m_i: it has m_i (replayed or live) exactly
        // once, then every later message once.
        let got = t.seqs();
        let want: Vec<u64> = expected
            .iter()
            .copied()
            .filter(|s| *s >= expected[i])
            .collect();
        assert!(
            got.ends_with(&want) || got == want,
            "{}: got {got:?}, wants {want:?} at the end",
            t.user()
        );
        let mut d = got.clone();
        d.sort();
        d.dedup();
        assert_eq!(d, got, "{}: a message twice or out of order", t.user());
    }
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotions_racing_the_release_deliver_exactly_once() {
    let fx = fixture().await;
    fx.hold(Some(secs(1))).await;
    let bob = fx.join("bob").await;
    let mut cases = Vec::new();
    for i in 0..12 {
        let name = format!("p{i}");
        let viewer = fx.join(&name).await;
        cases.push((name, fx.tap(&viewer), viewer));
    }
    let mut sent = Vec::new();
    for (i, (name, _, _)) in cases.iter().enumerate() {
        let m = say(&bob, fx.room, &format!("m{i}")).await;
        let until = m.held_until().unwrap();
        let clock = fx.clock.clone();
        let rooms = fx.owner.chat_room_manager();
        let (room, name2) = (fx.room, name.clone());
        let a = tokio::spawn(async move { clock.set(until) });
        let b = tokio::spawn(async move { rooms.add_chat_room_admin(&room, name2).await });
        a.await.unwrap();
        b.await.unwrap().unwrap();
        // Demote at once: the next message is for a member again.
        fx.owner
            .chat_room_manager()
            .remove_chat_room_admin(&fx.room, name)
            .await
            .unwrap();
        sent.push(m.seq());
    }
    fx.clock.advance(secs(2));
    let taps: Vec<&Tap> = cases.iter().map(|(_, t, _)| t).collect();
    fx.barrier(&taps).await;
    for t in taps {
        assert_eq!(t.seqs(), sent, "{}: each once, in order", t.user());
    }
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn destroys_racing_the_release_deliver_nothing_after_the_destroy_event() {
    let fx = fixture().await;
    let carol = fx.engine.login("carol").await.unwrap();
    let bob = fx.engine.login("bob").await.unwrap();
    let carol_t = fx.tap(&carol);
    for i in 0..10 {
        let room = fx
            .owner
            .chat_room_manager()
            .create_chat_room(CreateChatRoomOptions::new(format!("r{i}")))
            .await
            .unwrap()
            .room_id;
        fx.owner
            .chat_room_manager()
            .set_chat_room_hold(&room, Some(secs(1)))
            .await
            .unwrap();
        bob.chat_room_manager().join_chat_room(&room).await.unwrap();
        carol
            .chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap();
        let m = say(&bob, room, "racing").await;
        say(&fx.owner, room, "behind").await;
        let clock = fx.clock.clone();
        let until = m.held_until().unwrap();
        let rooms = fx.owner.chat_room_manager();
        let a = tokio::spawn(async move { clock.set(until) });
        let b = tokio::spawn(async move { rooms.destroy_chat_room(&room).await });
        a.await.unwrap();
        b.await.unwrap().unwrap();
        carol_t
            .wait("the destroy", move |t| {
                t.room_events().iter().any(|e| {
                    matches!(e, ChatRoomEvent::ChatRoomDestroyed { room_id, .. } if *room_id == room)
                })
            })
            .await;
    }
    fx.clock.advance(secs(5));
    barrier_by(&fx.moder, fx.room, &[]).await;
    let room_of_marker = fx.room;
    carol
        .chat_room_manager()
        .join_chat_room(&fx.room)
        .await
        .unwrap();
    barrier_by(&fx.moder, room_of_marker, &[&carol_t]).await;
    let events = carol_t.events_from(0);
    for (i, (_, e)) in events.iter().enumerate() {
        if let ClientEvent::Room(r) = e {
            if let ChatRoomEvent::ChatRoomDestroyed { room_id, .. } = &**r {
                let late: Vec<_> = events[i..]
                    .iter()
                    .filter(
                        |(_, e)| matches!(e, ClientEvent::Message(m) if m.room_id() == *room_id),
                    )
                    .collect();
                assert!(
                    late.is_empty(),
                    "messages of a destroyed room after its destroy: {late:?}"
                );
            }
        }
    }
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]

async fn a_held_message_pushed_out_of_retention_is_still_deletable_or_never_delivered() {
    // A moderator must keep the power to stop a held message until its release. With the
    // default retention (1,000 messages) and the default delivery threshold (20 messages/s),
    // a busy room accepts 1,200 messages in a 60 s hold: the held message leaves the store
    // while it is still waiting. A delete must then either still work, or the message must
    // not be delivered. (The room's other traffic here is the staff's, sent as fast as
    // possible.)
    let fx = fixture().await;
    assert_eq!(fx.engine.limits().history_retention, 1_000);
    fx.hold(Some(secs(60))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let bad = say(&bob, fx.room, "something nasty").await;
    let mut last = 0;
    for i in 0..1_000 {
        last = say(&fx.owner, fx.room, &format!("o{i}")).await.seq();
    }
    let deleted = fx
        .moder
        .chat_room_manager()
        .with_reason("nasty")
        .delete_chat_room_message(&fx.room, bad.seq())
        .await;
    fx.clock.advance(secs(60));
    carol_t.wait_seq(last).await;
    let leaked = carol_t
        .messages()
        .iter()
        .any(|m| m.text() == Some("something nasty"));
    assert!(
        !leaked,
        "the held message reached a viewer although the delete answered {deleted:?}"
    );
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_super_admins_broadcast_is_not_held_and_keeps_the_rooms_order() {
    let fx = fixture().await;
    fx.engine.add_super_admin("ops").await.unwrap();
    let ops = fx.engine.login("ops").await.unwrap();
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let (carol_t, owner_t) = (fx.tap(&carol), fx.tap(&fx.owner));
    let b1 = say(&bob, fx.room, "b1").await;
    let n = ops
        .chat_manager()
        .broadcast_to_chat_rooms(OutgoingMessage::text(fx.room, "maintenance at 10"))
        .await
        .unwrap();
    assert_eq!(n, 1);
    owner_t.wait_seq(b1.seq() + 1).await;
    let b = owner_t
        .messages()
        .into_iter()
        .find(|m| m.seq() == b1.seq() + 1)
        .unwrap();
    assert!(
        !b.is_held(),
        "the application's broadcast is not under review: {b:?}"
    );
    fx.clock.advance(secs(10));
    fx.barrier(&[&carol_t]).await;
    assert_eq!(carol_t.seqs(), vec![b1.seq(), b1.seq() + 1]);
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_timers_do_not_pile_up() {
    let fx = fixture().await;
    let baseline = fx.engine.pending_timers();
    fx.hold(Some(secs(5))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let carol_t = fx.tap(&carol);
    let mut last = 0;
    for round in 0..20 {
        for i in 0..5 {
            last = say(&bob, fx.room, &format!("r{round} m{i}")).await.seq();
        }
        fx.clock.advance(Duration::from_millis(1_700));
    }
    fx.clock.advance(secs(6));
    carol_t.wait_seq(last).await;
    assert_eq!(carol_t.seqs(), (1..=last).collect::<Vec<u64>>());
    eventually("the release timers to be gone", || {
        fx.engine.pending_timers() <= baseline
    })
    .await;
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_deletes_and_clock_steps_never_leak_a_message_deleted_while_held() {
    let fx = fixture().await;
    fx.hold(Some(secs(2))).await;
    let senders = [
        fx.join("s0").await,
        fx.join("s1").await,
        fx.join("s2").await,
        fx.join("s3").await,
    ];
    let viewers = [fx.join("v0").await, fx.join("v1").await];
    let taps: Vec<Tap> = viewers.iter().map(|v| fx.tap(v)).collect();
    let accepted: Arc<Mutex<Vec<ChatMessage>>> = Arc::default();
    // (seq, engine time just after the delete returned)
    let deleted: Arc<Mutex<Vec<(u64, i64)>>> = Arc::default();
    let mut tasks = Vec::new();
    for (i, s) in senders.iter().enumerate() {
        let (s, room, accepted) = (s.clone(), fx.room, accepted.clone());
        tasks.push(tokio::spawn(async move {
            for k in 0..40 {
                let m = say(&s, room, &format!("s{i} k{k}")).await;
                accepted.lock().push(m);
                tokio::task::yield_now().await;
            }
        }));
    }
    {
        let (rooms, room, accepted, deleted, clock) = (
            fx.moder.chat_room_manager(),
            fx.room,
            accepted.clone(),
            deleted.clone(),
            fx.clock.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for n in 0..60usize {
                let target = {
                    let a = accepted.lock();
                    if a.is_empty() {
                        None
                    } else {
                        Some(a[(n * 7919) % a.len()].seq())
                    }
                };
                if let Some(seq) = target {
                    rooms.delete_chat_room_message(&room, seq).await.unwrap();
                    deleted.lock().push((seq, clock.now_ms()));
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    {
        let clock = fx.clock.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..80 {
                clock.advance(Duration::from_millis(150));
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    fx.clock.advance(secs(61));
    fx.barrier(&taps.iter().collect::<Vec<_>>()).await;
    let accepted = accepted.lock().clone();
    let deleted = deleted.lock().clone();
    let deleted_seqs: BTreeSet<u64> = deleted.iter().map(|(s, _)| *s).collect();
    for t in &taps {
        for m in &accepted {
            let got = t.message_pos(m.seq());
            assert!(got.len() <= 1, "{}: seq {} twice", t.user(), m.seq());
            if !deleted_seqs.contains(&m.seq()) {
                assert_eq!(got.len(), 1, "{}: seq {} never arrived", t.user(), m.seq());
            }
        }
        for (seq, at) in &deleted {
            let m = accepted.iter().find(|m| m.seq() == *seq).unwrap();
            let got = t.message_pos(*seq);
            let told = t.recall_pos(*seq);
            if *at < m.held_until().unwrap() {
                assert!(
                    got.is_empty() && told.is_empty(),
                    "{}: seq {seq} deleted at {at}, held until {:?}, reached it ({got:?}, {told:?})",
                    t.user(),
                    m.held_until()
                );
            }
            if let (Some(g), Some(r)) = (got.first(), told.first()) {
                assert!(g < r, "{}: recall of {seq} before the message", t.user());
            }
            assert_eq!(got.is_empty(), told.is_empty(), "{}: seq {seq}", t.user());
        }
        let s = t.seqs();
        let mut sorted = s.clone();
        sorted.sort();
        assert_eq!(s, sorted, "{}: in order", t.user());
    }
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_kicked_during_the_hold_gets_nothing_at_the_release() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let erin = fx.join("erin").await;
    let (carol_t, erin_t) = (fx.tap(&carol), fx.tap(&erin));
    let b1 = say(&bob, fx.room, "b1").await;
    fx.moder
        .chat_room_manager()
        .remove_chat_room_members(&fx.room, ["carol"])
        .await
        .unwrap();
    carol_t
        .wait("carol's removal", |t| {
            t.room_events()
                .iter()
                .any(|e| matches!(e, ChatRoomEvent::RemovedFromChatRoom { .. }))
        })
        .await;
    fx.clock.advance(secs(10));
    fx.barrier(&[&erin_t]).await;
    assert_eq!(erin_t.seqs(), vec![b1.seq()]);
    // Carol is in no room: a barrier in a room she joins now.
    let other = fx
        .owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("other"))
        .await
        .unwrap()
        .room_id;
    carol
        .chat_room_manager()
        .join_chat_room(&other)
        .await
        .unwrap();
    barrier_by(&fx.owner, other, &[&carol_t]).await;
    assert!(
        carol_t.seqs().is_empty(),
        "a kicked viewer got {:?}",
        carol_t.seqs()
    );
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kept_local_copy_hides_a_held_message_until_its_release_after_leaving() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let keep = roomcast::ChatOptions::default().with_delete_messages_on_exit(false);
    let carol = fx.engine.login_with_options("carol", keep).await.unwrap();
    carol
        .chat_room_manager()
        .join_chat_room(&fx.room)
        .await
        .unwrap();
    let o1 = say(&fx.owner, fx.room, "o1").await;
    let b2 = say(&bob, fx.room, "b2").await;
    carol
        .chat_room_manager()
        .leave_chat_room(&fx.room)
        .await
        .unwrap();
    let copy = carol.chat_manager().get_conversation(&fx.room);
    assert_eq!(
        seqs(&copy.load_messages(None, 10).await.unwrap()),
        vec![o1.seq()]
    );
    fx.clock.advance(secs(10));
    let got = copy.load_messages(None, 10).await.unwrap();
    assert_eq!(seqs(&got), vec![b2.seq(), o1.seq()]);
    assert!(got.iter().all(|m| !m.is_held()));
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_demoted_admins_history_hides_what_is_still_held() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let dave = fx.join("dave").await;
    let rooms = fx.owner.chat_room_manager();
    rooms.add_chat_room_admin(&fx.room, "dave").await.unwrap();
    let b1 = say(&bob, fx.room, "b1").await;
    let h = history(&dave, fx.room).await;
    assert!(h.iter().any(|m| m.seq() == b1.seq() && m.is_held()));
    rooms
        .remove_chat_room_admin(&fx.room, "dave")
        .await
        .unwrap();
    assert!(history(&dave, fx.room).await.is_empty(), "no longer staff");
    fx.engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_viewer_switching_clients_during_the_hold_gets_it_once_on_the_new_client() {
    let fx = fixture().await;
    fx.hold(Some(secs(10))).await;
    let bob = fx.join("bob").await;
    let carol = fx.join("carol").await;
    let old_t = fx.tap(&carol);
    let b1 = say(&bob, fx.room, "b1").await;
    carol.logout();
    let carol2 = fx.engine.login("carol").await.unwrap();
    let new_t = fx.tap(&carol2);
    let b2 = say(&bob, fx.room, "b2").await;
    fx.clock.advance(secs(10));
    fx.barrier(&[&new_t]).await;
    assert!(old_t.seqs().is_empty());
    assert_eq!(new_t.seqs(), vec![b1.seq(), b2.seq()]);
    fx.engine.shutdown().await;
}
