//! Shadow bans and timed blocks raced and broken as a new user embedding roomcast in a
//! live-stream service would (a fresh-context review, from README.md, docs/semantics.md and the
//! public API). Tests marked `// FINDING:` failed before their fix. No fixed sleeps:
//! `ManualClock` and polling with deadlines.

use std::collections::BTreeSet;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use parking_lot::Mutex;
use roomcast::{
    AuditAction, AuditEntry, ChatClient, ChatError, ChatMessage, ChatOptions, ChatRoomEvent,
    ChatRoomPermissionType, ClientEvent, CreateChatRoomOptions, Engine, EventStream, HistoryQuery,
    Limits, ManualClock, OutgoingMessage, PreSendDecision, PreSendFuture, PreSendHook, RoomId,
    RoomLimits, UserId,
};
use tokio::sync::Notify;

const DEADLINE: Duration = Duration::from_secs(20);
const T0: i64 = 1_700_000_000_000;

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn unthrottled() -> Limits {
    let mut limits = Limits::default();
    limits.room_delivery_rate = None;
    limits.api_calls_per_user_per_second = None;
    limits.user_messages_per_window = None;
    limits
}

async fn engine(clock: Option<ManualClock>) -> (Engine, ChatClient) {
    let mut b = Engine::builder().limits(unthrottled());
    if let Some(c) = clock {
        b = b.clock(c);
    }
    let engine = b.build().await.unwrap();
    engine.add_super_admin("owner").await.unwrap();
    let owner = engine.login("owner").await.unwrap();
    (engine, owner)
}

async fn create(owner: &ChatClient) -> RoomId {
    owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new("stream").with_max_users(10_000))
        .await
        .unwrap()
        .room_id
}

async fn join(engine: &Engine, user: &str, room: RoomId) -> ChatClient {
    let c = engine.login(user).await.unwrap();
    c.chat_room_manager().join_chat_room(&room).await.unwrap();
    c
}

async fn say(c: &ChatClient, room: RoomId, text: &str) -> ChatMessage {
    c.chat_manager()
        .send_message(OutgoingMessage::text(room, text))
        .await
        .unwrap()
}

async fn try_say(c: &ChatClient, room: RoomId, text: &str) -> Result<ChatMessage, ChatError> {
    c.chat_manager()
        .send_message(OutgoingMessage::text(room, text))
        .await
}

fn texts(m: &[ChatMessage]) -> Vec<String> {
    m.iter()
        .map(|m| m.text().unwrap_or("").to_string())
        .collect()
}

fn seqs(m: &[ChatMessage]) -> Vec<u64> {
    m.iter().map(|m| m.seq()).collect()
}

/// Records every message and event a client gets, through its event stream's sibling: a
/// handler for messages and an event stream for room events.
#[derive(Default, Clone)]
struct Inbox {
    inner: Arc<InboxInner>,
}
#[derive(Default)]
struct InboxInner {
    messages: Mutex<Vec<ChatMessage>>,
    changed: Notify,
}
impl Inbox {
    fn messages(&self) -> Vec<ChatMessage> {
        self.inner.messages.lock().clone()
    }
    async fn wait_until(&self, what: &str, done: impl Fn(&[ChatMessage]) -> bool) {
        let wait = async {
            loop {
                let n = self.inner.changed.notified();
                if done(&self.inner.messages.lock()) {
                    return;
                }
                n.await;
            }
        };
        if tokio::time::timeout(DEADLINE, wait).await.is_err() {
            panic!(
                "timed out waiting for {what}; got {:?}",
                texts(&self.messages())
            );
        }
    }
    async fn wait_text(&self, t: &str) {
        self.wait_until(t, |m| m.iter().any(|m| m.text() == Some(t)))
            .await
    }
}
impl roomcast::ChatEventHandler for Inbox {
    fn on_messages_received(&self, messages: &[ChatMessage]) {
        self.inner.messages.lock().extend_from_slice(messages);
        self.inner.changed.notify_waiters();
    }
}
fn inbox(c: &ChatClient) -> Inbox {
    let i = Inbox::default();
    c.chat_manager()
        .add_event_handler("review-inbox", i.clone());
    i
}

/// Drains what a stream holds right now plus anything arriving until `marker` text message is
/// seen (a marker the test sends last, so that everything before it was delivered).
async fn events_until_marker(stream: &mut EventStream, marker: &str) -> Vec<ClientEvent> {
    let mut out = Vec::new();
    loop {
        let next =
            tokio::time::timeout(DEADLINE, poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)))
                .await
                .expect("timed out waiting for the marker")
                .expect("stream open");
        let done = matches!(&next, ClientEvent::Message(m) if m.text() == Some(marker));
        out.push(next);
        if done {
            return out;
        }
    }
}

fn room_events(events: &[ClientEvent]) -> Vec<ChatRoomEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Room(r) => Some((**r).clone()),
            _ => None,
        })
        .collect()
}

/// Every retained message `c` sees, walking history oldest first with pages of `size`.
async fn walk_after(c: &ChatClient, room: RoomId, size: u32) -> Vec<ChatMessage> {
    let chat = c.chat_manager();
    let mut out = Vec::new();
    let mut cursor = 0;
    for _ in 0..10_000 {
        let page = chat
            .fetch_history_messages(&room, HistoryQuery::after(cursor, size))
            .await
            .unwrap();
        assert!(page.data.len() <= size as usize);
        out.extend(page.data.iter().cloned());
        match page.cursor {
            Some(c) => cursor = c,
            None => return out,
        }
    }
    panic!("history walk does not end");
}

/// Every retained message `c` sees, walking history newest first (newest, then before).
async fn walk_back(c: &ChatClient, room: RoomId, size: u32) -> Vec<ChatMessage> {
    let chat = c.chat_manager();
    let mut out = Vec::new();
    let mut page = chat
        .fetch_history_messages(&room, HistoryQuery::newest(size))
        .await
        .unwrap();
    for _ in 0..10_000 {
        assert!(page.data.len() <= size as usize);
        out.extend(page.data.iter().cloned());
        match page.cursor {
            Some(c) => {
                page = chat
                    .fetch_history_messages(&room, HistoryQuery::before(c, size))
                    .await
                    .unwrap()
            }
            None => {
                out.reverse();
                return out;
            }
        }
    }
    panic!("history walk does not end");
}

/// Every message of `c`'s local copy, oldest first, loading `size` at a time.
async fn walk_local(c: &ChatClient, room: RoomId, size: u32) -> Vec<ChatMessage> {
    let conv = c.chat_manager().get_conversation(&room);
    let mut out: Vec<ChatMessage> = Vec::new();
    let mut before = None;
    for _ in 0..10_000 {
        let got = conv.load_messages(before, size).await.unwrap();
        if got.is_empty() {
            out.reverse();
            return out;
        }
        before = Some(got.last().unwrap().seq());
        out.extend(got);
    }
    panic!("local walk does not end");
}

async fn audit(c: &ChatClient, room: RoomId) -> Vec<AuditEntry> {
    let mut page = c
        .chat_room_manager()
        .fetch_chat_room_audit_log(&room, None, 1000)
        .await
        .unwrap();
    let mut out = page.data.clone();
    while let Some(cur) = page.cursor {
        page = c
            .chat_room_manager()
            .fetch_chat_room_audit_log(&room, Some(cur), 1000)
            .await
            .unwrap();
        out.extend(page.data.iter().cloned());
    }
    out
}

async fn poll_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let done = async {
        while !f().await {
            tokio::task::yield_now().await;
        }
    };
    if tokio::time::timeout(DEADLINE, done).await.is_err() {
        panic!("timed out waiting for {what}");
    }
}

/// The standard cast: owner, admin "mod", shadow-banned "troll", plain "carol".
struct Cast {
    engine: Engine,
    owner: ChatClient,
    room: RoomId,
    admin: ChatClient,
    troll: ChatClient,
    carol: ChatClient,
}

async fn cast(clock: Option<ManualClock>) -> Cast {
    let (engine, owner) = engine(clock).await;
    let room = create(&owner).await;
    let admin = join(&engine, "mod", room).await;
    owner
        .chat_room_manager()
        .add_chat_room_admin(&room, "mod")
        .await
        .unwrap();
    let troll = join(&engine, "troll", room).await;
    let carol = join(&engine, "carol", room).await;
    Cast {
        engine,
        owner,
        room,
        admin,
        troll,
        carol,
    }
}

fn assert_no_shadowed_from(msgs: &[ChatMessage], who: &str, ctx: &str) {
    for m in msgs {
        assert!(
            !m.is_shadowed(),
            "{ctx}: a shadowed message reached a plain member: {m:?}"
        );
        let _ = who;
    }
}

// ------------------------------------------------------------------------------------------
// Shadow bans
// ------------------------------------------------------------------------------------------

/// History with every page size and both directions: carol sees exactly the visible messages
/// (and full pages when there are that many), the troll its own unmarked plus the visible, the
/// staff everything, the troll's marked.
#[tokio::test]
async fn history_every_page_size_and_direction() {
    let c = cast(None).await;
    let room = c.room;
    // v0 t1 t2 v3 t4 t5 t6 v7 t8 (t = troll while banned)
    say(&c.carol, room, "v0").await;
    c.owner
        .chat_room_manager()
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    let mut all = vec!["v0".to_string()];
    for (i, who) in ["t", "t", "v", "t", "t", "t", "v", "t", "t"]
        .iter()
        .enumerate()
    {
        let t = format!("{who}{}", i + 1);
        let sender = if *who == "t" { &c.troll } else { &c.carol };
        let m = say(sender, room, &t).await;
        assert!(!m.is_shadowed());
        all.push(t);
    }
    let visible: Vec<String> = all.iter().filter(|t| t.starts_with('v')).cloned().collect();
    for size in 1..=12u32 {
        for (name, walked) in [
            ("after", walk_after(&c.carol, room, size).await),
            ("back", walk_back(&c.carol, room, size).await),
        ] {
            assert_eq!(texts(&walked), visible, "carol, {name}, size {size}");
            assert_no_shadowed_from(&walked, "troll", "carol history");
        }
        for walked in [
            walk_after(&c.troll, room, size).await,
            walk_back(&c.troll, room, size).await,
        ] {
            assert_eq!(texts(&walked), all, "troll, size {size}");
            assert!(walked.iter().all(|m| !m.is_shadowed()));
        }
        for staff in [&c.owner, &c.admin] {
            let walked = walk_after(staff, room, size).await;
            assert_eq!(texts(&walked), all, "staff, size {size}");
            for m in &walked {
                assert_eq!(m.is_shadowed(), m.text().unwrap().starts_with('t'));
            }
        }
        // A page holds page_size messages when there are that many.
        let newest = c
            .carol
            .chat_manager()
            .fetch_history_messages(&room, HistoryQuery::newest(size))
            .await
            .unwrap();
        assert_eq!(
            newest.data.len(),
            (size as usize).min(visible.len()),
            "size {size}"
        );
    }
    c.engine.shutdown().await;
}

/// The troll recalls its own shadowed message: the others must not be told (a
/// `MessageRecalled` names the hidden message's sender and seq), and carol's history must not
/// show a recalled placeholder for it. The staff, who saw it, are told.
#[tokio::test]
async fn sender_recall_of_shadowed_message_is_not_announced() {
    let c = cast(None).await;
    let room = c.room;
    let mut carol_events = c.carol.events();
    let mut admin_events = c.admin.events();
    c.owner
        .chat_room_manager()
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    let hidden = say(&c.troll, room, "hidden").await;
    c.troll
        .chat_manager()
        .recall_message(&room, hidden.seq())
        .await
        .unwrap();
    say(&c.owner, room, "marker").await;
    let carol_seen = events_until_marker(&mut carol_events, "marker").await;
    for e in &carol_seen {
        match e {
            ClientEvent::Message(m) => assert_eq!(m.text(), Some("marker"), "{m:?}"),
            ClientEvent::Room(r) => panic!("carol was told something: {r:?}"),
            _ => {}
        }
    }
    let admin_seen = room_events(&events_until_marker(&mut admin_events, "marker").await);
    assert!(
        admin_seen.iter().any(
            |e| matches!(e, ChatRoomEvent::MessageRecalled { seq, .. } if *seq == hidden.seq())
        ),
        "the staff saw it and are told of its recall: {admin_seen:?}"
    );
    let hist = walk_after(&c.carol, room, 10).await;
    assert_eq!(
        texts(&hist),
        ["marker"],
        "no recalled placeholder for a hidden message"
    );
    let local = walk_local(&c.carol, room, 10).await;
    assert_eq!(texts(&local), ["marker"]);
    c.engine.shutdown().await;
}

/// A staff delete of a shadowed message: the sender and the staff are told, nobody else; and
/// carol's history / local copy do not grow a recalled placeholder at its seq.
#[tokio::test]
async fn staff_delete_of_shadowed_message_tells_only_sender_and_staff() {
    let c = cast(None).await;
    let room = c.room;
    let mut carol_events = c.carol.events();
    let mut troll_events = c.troll.events();
    let mut owner_events = c.owner.events();
    c.owner
        .chat_room_manager()
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    let hidden = say(&c.troll, room, "hidden").await;
    c.admin
        .chat_room_manager()
        .with_reason("spam")
        .delete_chat_room_message(&room, hidden.seq())
        .await
        .unwrap();
    say(&c.admin, room, "marker").await;
    let carol_seen = room_events(&events_until_marker(&mut carol_events, "marker").await);
    assert!(carol_seen.is_empty(), "carol was told: {carol_seen:?}");
    let troll_seen = room_events(&events_until_marker(&mut troll_events, "marker").await);
    assert!(
        troll_seen.iter().any(
            |e| matches!(e, ChatRoomEvent::MessageRecalled { seq, .. } if *seq == hidden.seq())
        ),
        "{troll_seen:?}"
    );
    let owner_seen = room_events(&events_until_marker(&mut owner_events, "marker").await);
    assert!(owner_seen
        .iter()
        .any(|e| matches!(e, ChatRoomEvent::MessageRecalled { seq, .. } if *seq == hidden.seq())));
    assert_eq!(texts(&walk_after(&c.carol, room, 10).await), ["marker"]);
    assert_eq!(texts(&walk_local(&c.carol, room, 10).await), ["marker"]);
    // The troll's own history shows it recalled, unmarked.
    let own = walk_after(&c.troll, room, 10).await;
    assert!(own[0].is_recalled() && !own[0].is_shadowed());
    c.engine.shutdown().await;
}

/// The replay on join hides shadowed messages from a new viewer, shows them marked to a
/// joining admin, and unmarked to the troll rejoining.
#[tokio::test]
async fn join_replay_hides_shadowed_messages() {
    let c = cast(None).await;
    let room = c.room;
    c.owner
        .chat_room_manager()
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    say(&c.carol, room, "v1").await;
    say(&c.troll, room, "t2").await;
    say(&c.carol, room, "v3").await;
    say(&c.troll, room, "t4").await;

    let dave = c.engine.login("dave").await.unwrap();
    let dave_in = inbox(&dave);
    dave.chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    say(&c.owner, room, "marker").await;
    dave_in.wait_text("marker").await;
    assert_eq!(texts(&dave_in.messages()), ["v1", "v3", "marker"]);

    // The troll leaves and comes back: its own are in its replay, unmarked.
    c.troll
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    let troll_in = inbox(&c.troll);
    c.troll
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    say(&c.owner, room, "marker2").await;
    troll_in.wait_text("marker2").await;
    let got = troll_in.messages();
    assert_eq!(texts(&got), ["v1", "t2", "v3", "t4", "marker", "marker2"]);
    assert!(got.iter().all(|m| !m.is_shadowed()));

    // The admin leaves and comes back: its replay shows them marked.
    c.admin
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    let admin_in = inbox(&c.admin);
    c.admin
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    // The admin rejoins as a member (leaving dropped the role? then it is no staff).
    let info = c
        .admin
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    say(&c.owner, room, "marker3").await;
    admin_in.wait_text("marker3").await;
    let got = admin_in.messages();
    if info.permission_type == ChatRoomPermissionType::Admin {
        assert!(got.iter().filter(|m| m.is_shadowed()).count() == 2);
    } else {
        assert_no_shadowed_from(&got, "troll", "ex-admin replay");
        assert!(!texts(&got).contains(&"t2".to_string()));
    }
    c.engine.shutdown().await;
}

/// Local copies with a small `count`: carol's copy skips the hidden messages and a page of
/// `count` still holds `count` messages when there are that many (else a client paging with
/// `load_messages(before, n)` stops early at an empty page).
#[tokio::test]
async fn local_copy_pages_skip_shadowed_messages() {
    let c = cast(None).await;
    let room = c.room;
    c.owner
        .chat_room_manager()
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    say(&c.carol, room, "v1").await;
    for i in 0..3 {
        say(&c.troll, room, &format!("t{i}")).await;
    }
    let conv = c.carol.chat_manager().get_conversation(&room);
    let newest = conv.load_messages(None, 1).await.unwrap();
    assert_eq!(texts(&newest), ["v1"], "the newest message carol sees");
    for size in 1..=5 {
        assert_eq!(texts(&walk_local(&c.carol, room, size).await), ["v1"]);
        let own = walk_local(&c.troll, room, size).await;
        assert_eq!(texts(&own), ["v1", "t0", "t1", "t2"]);
        assert!(own.iter().all(|m| !m.is_shadowed()));
        let staff = walk_local(&c.admin, room, size).await;
        assert_eq!(staff.iter().filter(|m| m.is_shadowed()).count(), 3);
    }
    c.engine.shutdown().await;
}

/// A kept local copy (delete_messages_on_exit = false) after carol leaves still hides them.
#[tokio::test]
async fn kept_local_copy_hides_shadowed_messages() {
    let c = cast(None).await;
    let room = c.room;
    let keeper = c
        .engine
        .login_with_options(
            "keeper",
            ChatOptions::default().with_delete_messages_on_exit(false),
        )
        .await
        .unwrap();
    keeper
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    c.owner
        .chat_room_manager()
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    say(&c.troll, room, "hidden").await;
    say(&c.carol, room, "v").await;
    keeper
        .chat_room_manager()
        .leave_chat_room(&room)
        .await
        .unwrap();
    let kept = keeper
        .chat_manager()
        .get_conversation(&room)
        .load_messages(None, 10)
        .await
        .unwrap();
    assert_eq!(texts(&kept), ["v"]);
    c.engine.shutdown().await;
}

/// Idempotent retries: the troll's retry returns its first message (same seq, unmarked),
/// delivers nothing, and a retry after the ban is lifted still reveals nothing to carol.
#[tokio::test]
async fn idempotent_retry_of_a_shadowed_message() {
    let c = cast(None).await;
    let room = c.room;
    let carol_in = inbox(&c.carol);
    let admin_in = inbox(&c.admin);
    c.owner
        .chat_room_manager()
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    let msg = || OutgoingMessage::text(room, "retry me").with_idempotency_key("k1");
    let first = c.troll.chat_manager().send_message(msg()).await.unwrap();
    let again = c.troll.chat_manager().send_message(msg()).await.unwrap();
    assert_eq!((again.seq(), again.msg_id()), (first.seq(), first.msg_id()));
    assert!(!again.is_shadowed());
    c.owner
        .chat_room_manager()
        .unshadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    let after = c.troll.chat_manager().send_message(msg()).await.unwrap();
    assert_eq!(after.seq(), first.seq());
    assert!(!after.is_shadowed());
    say(&c.owner, room, "marker").await;
    carol_in.wait_text("marker").await;
    assert_eq!(texts(&carol_in.messages()), ["marker"]);
    admin_in.wait_text("marker").await;
    let staff = admin_in.messages();
    assert_eq!(texts(&staff), ["retry me", "marker"], "delivered once");
    assert!(staff[0].is_shadowed());
    assert_eq!(texts(&walk_after(&c.carol, room, 5).await), ["marker"]);
    c.engine.shutdown().await;
}

struct Masker;
impl PreSendHook for Masker {
    fn pre_send<'a>(&'a self, _from: &'a UserId, m: &'a OutgoingMessage) -> PreSendFuture<'a> {
        Box::pin(async move {
            match &m.body {
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

/// A pre-send hook that rewrites the troll's message: still shadowed (hidden from carol,
/// marked to staff, unmarked to the troll).
#[tokio::test]
async fn a_rewritten_message_stays_shadowed() {
    let engine = Engine::builder()
        .limits(unthrottled())
        .pre_send_hook(Masker)
        .build()
        .await
        .unwrap();
    engine.add_super_admin("owner").await.unwrap();
    let owner = engine.login("owner").await.unwrap();
    let room = create(&owner).await;
    let troll = join(&engine, "troll", room).await;
    let carol = join(&engine, "carol", room).await;
    let carol_in = inbox(&carol);
    let owner_in = inbox(&owner);
    owner
        .chat_room_manager()
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    let sent = say(&troll, room, "darn it").await;
    assert_eq!(sent.text(), Some("**** it"));
    assert!(!sent.is_shadowed());
    say(&owner, room, "marker").await;
    carol_in.wait_text("marker").await;
    assert_eq!(texts(&carol_in.messages()), ["marker"]);
    owner_in.wait_text("**** it").await;
    assert!(owner_in.messages()[0].is_shadowed());
    assert_eq!(texts(&walk_after(&carol, room, 1).await), ["marker"]);
    engine.shutdown().await;
}

/// The troll notices nothing: room info, member list, its role; its events carry no trace.
#[tokio::test]
async fn the_banned_member_notices_nothing() {
    let c = cast(None).await;
    let room = c.room;
    let info_before = c
        .troll
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    let members_before = c
        .troll
        .chat_room_manager()
        .fetch_chat_room_members(&room, None, 100)
        .await
        .unwrap();
    let mut troll_events = c.troll.events();
    c.admin
        .chat_room_manager()
        .with_reason("troll")
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    let info = c
        .troll
        .chat_room_manager()
        .fetch_chat_room_info(&room)
        .await
        .unwrap();
    assert_eq!(info, info_before);
    let carol_view = c
        .carol
        .chat_room_manager()
        .fetch_chat_room_members(&room, None, 100)
        .await
        .unwrap();
    assert!(carol_view.data.contains(&uid("troll")));
    let members = c
        .troll
        .chat_room_manager()
        .fetch_chat_room_members(&room, None, 100)
        .await
        .unwrap();
    assert_eq!(members.data, members_before.data);
    let sent = say(&c.troll, room, "hi").await;
    assert_eq!(sent.seq(), 1);
    c.admin
        .chat_room_manager()
        .unshadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    say(&c.owner, room, "marker").await;
    let seen: Vec<ChatRoomEvent> =
        room_events(&events_until_marker(&mut troll_events, "marker").await)
            .into_iter()
            .filter(|e| !matches!(e, ChatRoomEvent::MemberJoined { .. }))
            .collect();
    assert!(seen.is_empty(), "the troll was told: {seen:?}");
    c.engine.shutdown().await;
}

/// A banned member made admin: an admin's messages are never shadowed ("their messages are
/// never shadowed"), so carol gets what it sends as admin, while what it sent while banned
/// stays hidden; as staff it now sees others' shadowed messages, marked.
#[tokio::test]
async fn a_banned_member_made_admin() {
    let c = cast(None).await;
    let room = c.room;
    let rooms = c.owner.chat_room_manager();
    let dave = join(&c.engine, "dave", room).await;
    rooms
        .shadow_ban_chat_room_members(&room, ["troll", "dave"])
        .await
        .unwrap();
    say(&c.troll, room, "before").await;
    say(&dave, room, "dave hidden").await;
    rooms.add_chat_room_admin(&room, "troll").await.unwrap();
    let carol_in = inbox(&c.carol);
    let troll_in = inbox(&c.troll);
    let as_admin = say(&c.troll, room, "as admin").await;
    assert!(!as_admin.is_shadowed());
    say(&dave, room, "dave again").await;
    say(&c.owner, room, "marker").await;
    carol_in.wait_text("marker").await;
    assert_eq!(texts(&carol_in.messages()), ["as admin", "marker"]);
    troll_in.wait_text("marker").await;
    let got = troll_in.messages();
    assert_eq!(texts(&got), ["dave again", "marker"]);
    assert!(
        got[0].is_shadowed(),
        "the new admin sees shadowed messages marked"
    );
    assert_eq!(
        texts(&walk_after(&c.carol, room, 2).await),
        ["as admin", "marker"]
    );
    c.engine.shutdown().await;
}

/// An admin demoted (while a troll is banned): it is no longer staff, so its history and its
/// local copy ("a local copy asks whether the user is staff now") hide the troll's messages,
/// and it gets no more of them live.
#[tokio::test]
async fn a_demoted_admin_no_longer_sees_shadowed_messages() {
    let c = cast(None).await;
    let room = c.room;
    let rooms = c.owner.chat_room_manager();
    rooms
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    say(&c.troll, room, "hidden").await;
    say(&c.carol, room, "v").await;
    assert_eq!(walk_local(&c.admin, room, 10).await.len(), 2);
    rooms.remove_chat_room_admin(&room, "mod").await.unwrap();
    let admin_in = inbox(&c.admin);
    say(&c.troll, room, "hidden2").await;
    say(&c.owner, room, "marker").await;
    admin_in.wait_text("marker").await;
    assert_eq!(texts(&admin_in.messages()), ["marker"]);
    assert_eq!(texts(&walk_after(&c.admin, room, 1).await), ["v", "marker"]);
    assert_eq!(texts(&walk_back(&c.admin, room, 3).await), ["v", "marker"]);
    assert_eq!(
        texts(&walk_local(&c.admin, room, 10).await),
        ["v", "marker"]
    );
    // The shadow-ban list is the staff's: 703 now.
    assert_eq!(
        c.admin
            .chat_room_manager()
            .fetch_chat_room_shadow_ban_list(&room, 1, 10)
            .await
            .unwrap_err()
            .code(),
        703
    );
    c.engine.shutdown().await;
}

/// Ownership passes to a member: the old owner, now a member, sees no shadowed messages.
#[tokio::test]
async fn an_owner_who_hands_over_is_no_longer_staff() {
    let c = cast(None).await;
    let room = c.room;
    let rooms = c.owner.chat_room_manager();
    rooms
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    say(&c.troll, room, "hidden").await;
    rooms.change_owner(&room, "carol").await.unwrap();
    let info = rooms.fetch_chat_room_info(&room).await.unwrap();
    if info.permission_type == ChatRoomPermissionType::Member {
        assert!(walk_after(&c.owner, room, 5).await.is_empty());
    }
    // The new owner sees it, marked.
    let carol_sees = walk_after(&c.carol, room, 5).await;
    assert_eq!(texts(&carol_sees), ["hidden"]);
    assert!(carol_sees[0].is_shadowed());
    c.engine.shutdown().await;
}

/// Hibernation: the room sleeps with a shadow-banned troll and its hidden messages, and wakes
/// as it was: list, hidden history, new messages still shadowed.
#[tokio::test]
async fn shadow_bans_survive_hibernation() {
    let clock = ManualClock::new(T0);
    let mut limits = unthrottled();
    limits.room_hibernate_after = Some(Duration::from_secs(60));
    let engine = Engine::builder()
        .limits(limits)
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    engine.add_super_admin("owner").await.unwrap();
    let owner = engine.login("owner").await.unwrap();
    let room = create(&owner).await;
    let troll = join(&engine, "troll", room).await;
    let carol = join(&engine, "carol", room).await;
    owner
        .chat_room_manager()
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    say(&troll, room, "hidden").await;
    say(&carol, room, "v").await;
    for c in [&owner, &troll, &carol] {
        c.disconnect().unwrap();
    }
    poll_until("the room hibernates", || {
        clock.advance(Duration::from_secs(61));
        let n = engine.rooms_in_memory();
        async move { n == 0 }
    })
    .await;
    for c in [&owner, &troll, &carol] {
        c.reconnect().unwrap();
    }
    // Troll and carol may have been removed for being offline; rejoin if so.
    for c in [&troll, &carol] {
        let _ = c.chat_room_manager().join_chat_room(&room).await;
    }
    let _ = owner.chat_room_manager().join_chat_room(&room).await;
    let list = owner
        .chat_room_manager()
        .fetch_chat_room_shadow_ban_list(&room, 1, 10)
        .await
        .unwrap();
    assert_eq!(list.data, [uid("troll")]);
    let carol_in = inbox(&carol);
    let owner_in = inbox(&owner);
    say(&troll, room, "hidden2").await;
    say(&owner, room, "marker").await;
    carol_in.wait_text("marker").await;
    assert!(!texts(&carol_in.messages())
        .iter()
        .any(|t| t.starts_with("hidden")));
    owner_in.wait_text("hidden2").await;
    assert!(owner_in
        .messages()
        .iter()
        .any(|m| m.text() == Some("hidden2") && m.is_shadowed()));
    let hist = walk_after(&carol, room, 1).await;
    assert!(
        !texts(&hist).iter().any(|t| t.starts_with("hidden")),
        "{:?}",
        texts(&hist)
    );
    let staff = walk_after(&owner, room, 1).await;
    assert_eq!(staff.iter().filter(|m| m.is_shadowed()).count(), 2);
    engine.shutdown().await;
}

/// Restart on a data dir: the troll's kept own history, the staff's marks, carol's hidden
/// view, the local copies, and the idempotency retry of a shadowed message.
#[tokio::test]
async fn shadow_bans_survive_a_restart_with_local_copies_and_retries() {
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        let e = Engine::builder()
            .data_dir(dir.path())
            .limits(unthrottled())
            .build()
            .await
            .unwrap();
        e.add_super_admin("owner").await.unwrap();
        e
    };
    let keyed = |room| OutgoingMessage::text(room, "keyed").with_idempotency_key("kk");
    let (room, first) = {
        let engine = open().await;
        let owner = engine.login("owner").await.unwrap();
        let room = create(&owner).await;
        let troll = join(&engine, "troll", room).await;
        let carol = engine
            .login_with_options(
                "carol",
                ChatOptions::default().with_delete_messages_on_exit(false),
            )
            .await
            .unwrap();
        carol
            .chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap();
        owner
            .chat_room_manager()
            .shadow_ban_chat_room_members(&room, ["troll"])
            .await
            .unwrap();
        let first = troll
            .chat_manager()
            .send_message(keyed(room))
            .await
            .unwrap();
        say(&carol, room, "v").await;
        carol
            .chat_room_manager()
            .leave_chat_room(&room)
            .await
            .unwrap();
        engine.shutdown().await;
        (room, first)
    };
    let engine = open().await;
    let carol = engine
        .login_with_options(
            "carol",
            ChatOptions::default().with_delete_messages_on_exit(false),
        )
        .await
        .unwrap();
    let kept = carol
        .chat_manager()
        .get_conversation(&room)
        .load_messages(None, 10)
        .await
        .unwrap();
    assert_eq!(texts(&kept), ["v"], "carol's kept copy after a restart");
    let troll = engine.login("troll").await.unwrap();
    let _ = troll.chat_room_manager().join_chat_room(&room).await;
    let again = troll
        .chat_manager()
        .send_message(keyed(room))
        .await
        .unwrap();
    assert_eq!(again.seq(), first.seq());
    assert!(!again.is_shadowed());
    let own = walk_after(&troll, room, 1).await;
    assert_eq!(texts(&own), ["keyed", "v"]);
    assert!(own.iter().all(|m| !m.is_shadowed()));
    let local = walk_local(&troll, room, 1).await;
    assert!(local.iter().all(|m| !m.is_shadowed()));
    engine.shutdown().await;
}

/// Many tasks on a multi-thread runtime: senders race bans and unbans. Whatever the
/// interleaving: carol never receives a shadowed message; for every seq, carol got it live iff
/// the staff got it unmarked, iff carol's history holds it; the senders always get unmarked
/// answers; the staff get every seq once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn senders_racing_bans_and_unbans() {
    let (engine, owner) = engine(None).await;
    let room = create(&owner).await;
    let carol = join(&engine, "carol", room).await;
    let admin = join(&engine, "mod", room).await;
    owner
        .chat_room_manager()
        .add_chat_room_admin(&room, "mod")
        .await
        .unwrap();
    let mut senders = Vec::new();
    for n in 0..4 {
        senders.push(join(&engine, &format!("s{n}"), room).await);
    }
    let carol_in = inbox(&carol);
    let owner_in = inbox(&owner);
    let per = 40;
    let mut tasks = Vec::new();
    for (n, s) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let m = say(&s, room, &format!("s{n}-{i}")).await;
                assert!(!m.is_shadowed());
            }
        }));
    }
    let toggler = {
        let admin = admin.clone();
        tokio::spawn(async move {
            let rooms = admin.chat_room_manager();
            for i in 0..30 {
                let who = ["s0", "s1", "s2", "s3"];
                if i % 2 == 0 {
                    rooms
                        .shadow_ban_chat_room_members(&room, who)
                        .await
                        .unwrap();
                } else {
                    rooms
                        .unshadow_ban_chat_room_members(&room, who)
                        .await
                        .unwrap();
                }
                tokio::task::yield_now().await;
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    toggler.await.unwrap();
    say(&owner, room, "marker").await;
    carol_in.wait_text("marker").await;
    owner_in.wait_until("all", |m| m.len() >= 4 * per).await;
    let staff = owner_in.messages();
    assert_eq!(seqs(&staff), (1..=(4 * per) as u64).collect::<Vec<_>>());
    let want: Vec<u64> = staff
        .iter()
        .filter(|m| !m.is_shadowed())
        .map(|m| m.seq())
        .collect();
    let live = carol_in.messages();
    assert!(live.iter().all(|m| !m.is_shadowed()));
    let mut live_seqs = seqs(&live);
    live_seqs.pop(); // marker
    assert_eq!(live_seqs, want, "carol's live view = the staff's unmarked");
    let mut hist = seqs(&walk_after(&carol, room, 7).await);
    hist.pop();
    assert_eq!(hist, want, "carol's history = her live view");
    let admin_hist = walk_after(&admin, room, 13).await;
    let admin_shadowed: Vec<u64> = admin_hist
        .iter()
        .filter(|m| m.is_shadowed())
        .map(|m| m.seq())
        .collect();
    let staff_shadowed: Vec<u64> = staff
        .iter()
        .filter(|m| m.is_shadowed())
        .map(|m| m.seq())
        .collect();
    assert_eq!(admin_shadowed, staff_shadowed, "history marks = live marks");
    engine.shutdown().await;
}

// FINDING: a ban of ["troll" (already banned), "zed"] logs a ShadowBan entry naming the troll
// again ("changes nothing for that user (no event, no log entry)"); the staff event is right.
/// Banning a banned user or lifting a ban that is not there logs nothing and tells nobody.
#[tokio::test]
async fn repeated_bans_and_unbans_change_nothing() {
    let c = cast(None).await;
    let room = c.room;
    let rooms = c.owner.chat_room_manager();
    let mut admin_events = c.admin.events();
    rooms
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    let n = audit(&c.owner, room).await.len();
    rooms
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    rooms
        .unshadow_ban_chat_room_members(&room, ["carol"])
        .await
        .unwrap();
    assert_eq!(audit(&c.owner, room).await.len(), n);
    // Mixed: one new, one already banned: the entry names only the new one.
    rooms
        .shadow_ban_chat_room_members(&room, ["troll", "zed"])
        .await
        .unwrap();
    say(&c.owner, room, "marker").await;
    let told: Vec<Vec<UserId>> =
        room_events(&events_until_marker(&mut admin_events, "marker").await)
            .into_iter()
            .filter_map(|e| match e {
                ChatRoomEvent::ShadowBanChanged { members, .. } => Some(members),
                _ => None,
            })
            .collect();
    // The staff's event names only zed (the first event is the first ban's).
    assert_eq!(told, vec![vec![uid("troll")], vec![uid("zed")]]);
    let log = audit(&c.owner, room).await;
    assert_eq!(log.len(), n + 1);
    assert_eq!(log[0].action, AuditAction::ShadowBan);
    // FINDING: the log entry of a mixed ban names the already-banned troll again (the event
    // does not), though "banning a banned user changes nothing for that user (no event, no log
    // entry)".
    assert_eq!(
        log[0].targets,
        [uid("zed")],
        "the already-banned troll named again in the log"
    );
    c.engine.shutdown().await;
}

// ------------------------------------------------------------------------------------------
// Timed blocks
// ------------------------------------------------------------------------------------------

/// Polls (with a deadline) until the audit log holds a BlockExpired for `who`, printing the
/// log if it never does.
async fn wait_block_expired(owner: &ChatClient, room: RoomId, who: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = audit(owner, room).await;
        if !block_expired(&log, who).is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            let acts: Vec<(i64, AuditAction)> = log
                .iter()
                .rev()
                .map(|e| (e.time - T0, e.action.clone()))
                .collect();
            panic!("no BlockExpired for {who}; the log: {acts:?}");
        }
        tokio::task::yield_now().await;
    }
}

fn block_expired(log: &[AuditEntry], who: &str) -> Vec<AuditEntry> {
    log.iter()
        .filter(|e| e.action == AuditAction::BlockExpired && e.targets.contains(&uid(who)))
        .cloned()
        .collect()
}

async fn block_list(c: &ChatClient, room: RoomId) -> Vec<(String, Option<i64>)> {
    c.chat_room_manager()
        .fetch_chat_room_block_list(&room, 1, 100)
        .await
        .unwrap()
        .data
        .into_iter()
        .map(|b| (b.user_id.as_str().to_string(), b.expire_time))
        .collect()
}

/// Joins and sends exactly at the boundary: 1 ms before it 707 (join) / 210 (send); at it the
/// user may join and send at once, the list leaves it out; `BlockExpired` is logged once, with
/// no operator, at the end time.
#[tokio::test]
async fn timed_block_boundary() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine(Some(clock.clone())).await;
    let room = create(&owner).await;
    let bob = join(&engine, "bob", room).await;
    let rooms = owner.chat_room_manager();
    rooms
        .with_reason("timeout")
        .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(10))
        .await
        .unwrap();
    let end = T0 + 10_000;
    assert_eq!(block_list(&owner, room).await, [("bob".into(), Some(end))]);
    assert_eq!(try_say(&bob, room, "x").await.unwrap_err().code(), 210);
    clock.set(end - 1);
    assert_eq!(
        bob.chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap_err()
            .code(),
        707
    );
    assert_eq!(try_say(&bob, room, "x").await.unwrap_err().code(), 210);
    assert_eq!(block_list(&owner, room).await.len(), 1);
    clock.set(end);
    assert!(
        block_list(&owner, room).await.is_empty(),
        "the list leaves it out from its end"
    );
    bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    say(&bob, room, "back").await;
    wait_block_expired(&owner, room, "bob").await;
    let log = audit(&owner, room).await;
    let exp = block_expired(&log, "bob");
    assert_eq!(exp.len(), 1);
    assert_eq!((exp[0].operator.clone(), exp[0].time), (None, end));
    let given: Vec<_> = log
        .iter()
        .filter(|e| matches!(e.action, AuditAction::BlockFor { until } if until == end))
        .collect();
    assert_eq!(given.len(), 1);
    assert_eq!(given[0].reason.as_deref(), Some("timeout"));
    assert_eq!(given[0].operator, Some(uid("owner")));
    // More time passes: nothing more is logged.
    clock.advance(Duration::from_secs(3600));
    say(&owner, room, "later").await;
    assert_eq!(block_expired(&audit(&owner, room).await, "bob").len(), 1);
    engine.shutdown().await;
}

/// Re-blocking with a longer end: the first end's timer must not lift the new block.
#[tokio::test]
async fn reblock_longer_old_end_does_not_lift() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine(Some(clock.clone())).await;
    let room = create(&owner).await;
    let bob = engine.login("bob").await.unwrap();
    let rooms = owner.chat_room_manager();
    rooms
        .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(10))
        .await
        .unwrap();
    rooms
        .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        block_list(&owner, room).await,
        [("bob".into(), Some(T0 + 60_000))]
    );
    clock.advance(Duration::from_secs(30));
    // Let any timer for the old end run: a round trip through the room.
    say(&owner, room, "tick").await;
    assert_eq!(
        bob.chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap_err()
            .code(),
        707
    );
    assert_eq!(
        block_list(&owner, room).await,
        [("bob".into(), Some(T0 + 60_000))]
    );
    assert!(block_expired(&audit(&owner, room).await, "bob").is_empty());
    clock.advance(Duration::from_secs(30));
    bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    wait_block_expired(&owner, room, "bob").await;
    let exp = block_expired(&audit(&owner, room).await, "bob");
    assert_eq!(exp.len(), 1);
    assert_eq!(exp[0].time, T0 + 60_000);
    engine.shutdown().await;
}

/// Re-blocking with a shorter end: it ends at the shorter end.
#[tokio::test]
async fn reblock_shorter_ends_at_the_new_end() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine(Some(clock.clone())).await;
    let room = create(&owner).await;
    let bob = engine.login("bob").await.unwrap();
    let rooms = owner.chat_room_manager();
    rooms
        .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(60))
        .await
        .unwrap();
    rooms
        .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        block_list(&owner, room).await,
        [("bob".into(), Some(T0 + 10_000))]
    );
    clock.advance(Duration::from_secs(10));
    bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    wait_block_expired(&owner, room, "bob").await;
    clock.advance(Duration::from_secs(60));
    say(&owner, room, "tick").await;
    let exp = block_expired(&audit(&owner, room).await, "bob");
    assert_eq!(exp.len(), 1, "{exp:?}");
    assert_eq!(exp[0].time, T0 + 10_000);
    engine.shutdown().await;
}

/// A plain block after a timed one: until unblocked (no end; nothing at the old end).
#[tokio::test]
async fn plain_block_after_timed_block_has_no_end() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine(Some(clock.clone())).await;
    let room = create(&owner).await;
    let bob = engine.login("bob").await.unwrap();
    let rooms = owner.chat_room_manager();
    rooms
        .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(10))
        .await
        .unwrap();
    rooms.block_chat_room_members(&room, ["bob"]).await.unwrap();
    assert_eq!(block_list(&owner, room).await, [("bob".into(), None)]);
    clock.advance(Duration::from_secs(20));
    say(&owner, room, "tick").await;
    assert_eq!(
        bob.chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap_err()
            .code(),
        707
    );
    assert_eq!(block_list(&owner, room).await, [("bob".into(), None)]);
    assert!(block_expired(&audit(&owner, room).await, "bob").is_empty());
    engine.shutdown().await;
}

/// Unblock, then re-block for longer: nothing is logged at the old end and the old end does
/// not lift the new block.
#[tokio::test]
async fn unblock_then_reblock_old_end_is_forgotten() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine(Some(clock.clone())).await;
    let room = create(&owner).await;
    let bob = engine.login("bob").await.unwrap();
    let rooms = owner.chat_room_manager();
    rooms
        .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(10))
        .await
        .unwrap();
    rooms
        .unblock_chat_room_members(&room, ["bob"])
        .await
        .unwrap();
    assert!(block_list(&owner, room).await.is_empty());
    rooms
        .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(100))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(50));
    say(&owner, room, "tick").await;
    assert_eq!(
        bob.chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap_err()
            .code(),
        707
    );
    assert!(block_expired(&audit(&owner, room).await, "bob").is_empty());
    // Unblock and let the second end pass: nothing logged.
    rooms
        .unblock_chat_room_members(&room, ["bob"])
        .await
        .unwrap();
    clock.advance(Duration::from_secs(100));
    say(&owner, room, "tick2").await;
    assert!(block_expired(&audit(&owner, room).await, "bob").is_empty());
    bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    engine.shutdown().await;
}

/// A timed block on an admin: demoted first, comes back as a plain member at the end.
#[tokio::test]
async fn timed_block_on_an_admin() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine(Some(clock.clone())).await;
    let room = create(&owner).await;
    let modr = join(&engine, "mod", room).await;
    let rooms = owner.chat_room_manager();
    rooms.add_chat_room_admin(&room, "mod").await.unwrap();
    let mut ev = modr.events();
    rooms
        .block_chat_room_members_for(&room, ["mod"], Duration::from_secs(5))
        .await
        .unwrap();
    let mut removed = false;
    while !removed {
        let e = tokio::time::timeout(DEADLINE, poll_fn(|cx| Pin::new(&mut ev).poll_next(cx)))
            .await
            .unwrap()
            .unwrap();
        if let ClientEvent::Room(r) = e {
            if let ChatRoomEvent::RemovedFromChatRoom { reason, .. } = &*r {
                assert_eq!(*reason, roomcast::LeaveReason::Kicked);
                removed = true;
            }
        }
    }
    // An admin may not block the owner; a zero duration is 110.
    assert_eq!(
        rooms
            .block_chat_room_members_for(&room, ["x"], Duration::ZERO)
            .await
            .unwrap_err()
            .code(),
        110
    );
    clock.advance(Duration::from_secs(5));
    let info = modr
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    assert_eq!(info.permission_type, ChatRoomPermissionType::Member);
    assert!(info.admin_list.is_empty());
    // Under 1 ms counts as 1 ms.
    rooms
        .block_chat_room_members_for(&room, ["y"], Duration::from_micros(10))
        .await
        .unwrap();
    assert_eq!(
        block_list(&owner, room).await,
        [("y".into(), Some(T0 + 5_000 + 1))]
    );
    engine.shutdown().await;
}

// FINDING (intermittent, ~1 run in 5-10): the block ended while the room slept; bob's join wakes
// the room and succeeds, but `BlockExpired` is never logged (the log stays [BlockFor]), though
// the docs say it is "logged when the room next runs".
/// The block ends while the room sleeps: when the room next runs it logs BlockExpired at the
/// end time, and the user joins.
#[tokio::test]
async fn timed_block_ends_during_hibernation() {
    let clock = ManualClock::new(T0);
    let mut limits = unthrottled();
    limits.room_hibernate_after = Some(Duration::from_secs(60));
    let engine = Engine::builder()
        .limits(limits)
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    engine.add_super_admin("owner").await.unwrap();
    let owner = engine.login("owner").await.unwrap();
    let room = create(&owner).await;
    let bob = engine.login("bob").await.unwrap();
    owner
        .chat_room_manager()
        .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(600))
        .await
        .unwrap();
    owner.disconnect().unwrap();
    clock.advance(Duration::from_secs(120));
    poll_until("the room hibernates", || {
        let n = engine.rooms_in_memory();
        async move { n == 0 }
    })
    .await;
    // Still blocked while asleep (a join wakes it).
    assert_eq!(
        bob.chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap_err()
            .code(),
        707
    );
    poll_until("the room hibernates again", || {
        clock.advance(Duration::from_secs(61));
        let n = engine.rooms_in_memory();
        async move { n == 0 }
    })
    .await;
    clock.set(T0 + 3_600_000);
    owner.reconnect().unwrap();
    bob.chat_room_manager().join_chat_room(&room).await.unwrap();
    wait_block_expired(&owner, room, "bob").await;
    let exp = block_expired(&audit(&owner, room).await, "bob");
    assert_eq!(exp.len(), 1);
    assert_eq!((exp[0].operator.clone(), exp[0].time), (None, T0 + 600_000));
    assert!(block_list(&owner, room).await.is_empty());
    engine.shutdown().await;
}

// FINDING (intermittent, ~1 run in 5-10): the block ended while the engine was down; after the
// restart bob joins, but `BlockExpired` is never logged (the log stays [BlockFor]), though the
// docs say it is "logged when the room next runs".
/// Across restarts: before the end (still blocked, same end), and after (lifted, logged once,
/// not again on a further restart).
#[tokio::test]
async fn timed_block_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let open = || async {
        let e = Engine::builder()
            .data_dir(dir.path())
            .limits(unthrottled())
            .clock(clock.clone())
            .build()
            .await
            .unwrap();
        e.add_super_admin("owner").await.unwrap();
        e
    };
    let room = {
        let engine = open().await;
        let owner = engine.login("owner").await.unwrap();
        let room = create(&owner).await;
        join(&engine, "bob", room).await;
        owner
            .chat_room_manager()
            .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(600))
            .await
            .unwrap();
        engine.shutdown().await;
        room
    };
    clock.advance(Duration::from_secs(60));
    {
        let engine = open().await;
        let owner = engine.login("owner").await.unwrap();
        let bob = engine.login("bob").await.unwrap();
        assert_eq!(
            bob.chat_room_manager()
                .join_chat_room(&room)
                .await
                .unwrap_err()
                .code(),
            707
        );
        assert_eq!(
            block_list(&owner, room).await,
            [("bob".into(), Some(T0 + 600_000))]
        );
        engine.shutdown().await;
    }
    clock.advance(Duration::from_secs(3600));
    {
        let engine = open().await;
        let owner = engine.login("owner").await.unwrap();
        let bob = engine.login("bob").await.unwrap();
        bob.chat_room_manager().join_chat_room(&room).await.unwrap();
        say(&bob, room, "back").await;
        wait_block_expired(&owner, room, "bob").await;
        let exp = block_expired(&audit(&owner, room).await, "bob");
        assert_eq!(exp.len(), 1);
        assert_eq!((exp[0].operator.clone(), exp[0].time), (None, T0 + 600_000));
        engine.shutdown().await;
    }
    {
        let engine = open().await;
        let owner = engine.login("owner").await.unwrap();
        owner
            .chat_room_manager()
            .join_chat_room(&room)
            .await
            .unwrap();
        say(&owner, room, "x").await.seq();
        clock.advance(Duration::from_secs(60));
        say(&owner, room, "y").await;
        assert_eq!(block_expired(&audit(&owner, room).await, "bob").len(), 1);
        assert!(block_list(&owner, room).await.is_empty());
        engine.shutdown().await;
    }
}

/// Re-blocking and unblocking races from two admins on a multi-thread runtime, then a final
/// long block: no stale end from the race lifts it, and the list always agrees with joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reblock_unblock_races_leave_no_stale_end() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine(Some(clock.clone())).await;
    let room = create(&owner).await;
    let rooms = owner.chat_room_manager();
    let mut admins = Vec::new();
    for n in 0..3 {
        let a = join(&engine, &format!("a{n}"), room).await;
        rooms
            .add_chat_room_admin(&room, format!("a{n}"))
            .await
            .unwrap();
        admins.push(a);
    }
    let users: Vec<String> = (0..5).map(|n| format!("u{n}")).collect();
    let mut tasks = Vec::new();
    for (k, a) in admins.into_iter().enumerate() {
        let users = users.clone();
        let clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            let r = a.chat_room_manager();
            for i in 0..40u64 {
                let u = &users[((i as usize) + k) % users.len()];
                match (i + k as u64) % 4 {
                    0 | 1 => r
                        .block_chat_room_members_for(&room, [u], Duration::from_secs(5 + i % 7))
                        .await
                        .unwrap(),
                    2 => r.unblock_chat_room_members(&room, [u]).await.unwrap(),
                    _ => {
                        if k == 0 {
                            clock.advance(Duration::from_secs(1));
                        }
                        r.block_chat_room_members(&room, [u]).await.unwrap()
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Final: every user blocked for an hour.
    rooms
        .block_chat_room_members_for(&room, &users, Duration::from_secs(3600))
        .await
        .unwrap();
    let now = audit(&owner, room).await[0].time;
    let end = now + 3_600_000;
    let before = audit(&owner, room).await.len();
    clock.advance(Duration::from_secs(600)); // past every end from the race
    say(&owner, room, "tick").await;
    let list = block_list(&owner, room).await;
    assert_eq!(list.len(), users.len(), "{list:?}");
    assert!(list.iter().all(|(_, e)| *e == Some(end)), "{list:?}");
    for u in &users {
        let c = engine.login(u).await.unwrap();
        assert_eq!(
            c.chat_room_manager()
                .join_chat_room(&room)
                .await
                .unwrap_err()
                .code(),
            707
        );
    }
    let log = audit(&owner, room).await;
    assert_eq!(
        log.len(),
        before,
        "nothing logged after the final block: {:?}",
        &log[..log.len() - before]
    );
    clock.advance(Duration::from_secs(3000));
    for u in &users {
        let c = engine.login(u).await.unwrap();
        c.chat_room_manager().join_chat_room(&room).await.unwrap();
    }
    engine.shutdown().await;
}

/// Lifting the ban does not reveal earlier messages (history, replay, local copy); a ban does
/// not hide earlier ones.
#[tokio::test]
async fn lifting_a_ban_reveals_nothing_and_a_ban_hides_nothing_earlier() {
    let c = cast(None).await;
    let room = c.room;
    let rooms = c.owner.chat_room_manager();
    say(&c.troll, room, "before").await;
    rooms
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    say(&c.troll, room, "during").await;
    rooms
        .unshadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    say(&c.troll, room, "after").await;
    for size in 1..=4 {
        assert_eq!(
            texts(&walk_after(&c.carol, room, size).await),
            ["before", "after"]
        );
        assert_eq!(
            texts(&walk_back(&c.carol, room, size).await),
            ["before", "after"]
        );
        assert_eq!(
            texts(&walk_local(&c.carol, room, size).await),
            ["before", "after"]
        );
    }
    let dave = c.engine.login("dave").await.unwrap();
    let dave_in = inbox(&dave);
    dave.chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    say(&c.owner, room, "marker").await;
    dave_in.wait_text("marker").await;
    assert_eq!(texts(&dave_in.messages()), ["before", "after", "marker"]);
    let staff = walk_after(&c.admin, room, 10).await;
    assert_eq!(
        staff.iter().map(|m| m.is_shadowed()).collect::<Vec<_>>(),
        [false, true, false, false]
    );
    c.engine.shutdown().await;
}

// FINDING: a shadow-banned troll's burst of `join_replay_count` (10) messages empties the
// replay on join for every new viewer (the replay is the newest 10 then filtered), so a troll
// can blank the chat for everyone who arrives; history pages, by contrast, fill to page_size.
/// The replay on join is the newest `join_replay_count` messages the joiner may see: a troll's
/// burst just before a viewer joins must not empty the viewer's replay (as history pages "still
/// hold page_size messages when there are that many").
#[tokio::test]
async fn join_replay_still_holds_its_count_after_a_troll_burst() {
    let c = cast(None).await;
    let room = c.room;
    c.owner
        .chat_room_manager()
        .shadow_ban_chat_room_members(&room, ["troll"])
        .await
        .unwrap();
    for i in 0..10 {
        say(&c.carol, room, &format!("v{i}")).await;
    }
    for i in 0..10 {
        say(&c.troll, room, &format!("t{i}")).await;
    }
    let dave = c.engine.login("dave").await.unwrap();
    let dave_in = inbox(&dave);
    dave.chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    say(&c.owner, room, "marker").await;
    dave_in.wait_text("marker").await;
    let got = texts(&dave_in.messages());
    assert!(!got.iter().any(|t| t.starts_with('t')), "{got:?}");
    let want: Vec<String> = (0..10)
        .map(|i| format!("v{i}"))
        .chain(["marker".to_string()])
        .collect();
    assert_eq!(
        got, want,
        "the replay holds the 10 newest messages dave may see"
    );
    c.engine.shutdown().await;
}

/// A very long timeout (a moderator's "forever" typed as years, or Duration::MAX from an
/// embedder's API): a block far away, or 110; never a crashed room or a block that ends at once.
#[tokio::test]
async fn a_huge_timed_block_duration() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine(Some(clock.clone())).await;
    let room = create(&owner).await;
    let carol = join(&engine, "carol", room).await;
    let rooms = owner.chat_room_manager();
    let mut ev = carol.events();
    for d in [Duration::from_secs(100 * 365 * 86_400), Duration::MAX] {
        match rooms.block_chat_room_members_for(&room, ["bob"], d).await {
            Ok(()) => {
                let list = block_list(&owner, room).await;
                assert_eq!(list.len(), 1, "{d:?}: {list:?}");
                assert!(
                    list[0].1.is_none_or(|e| e > T0 + 86_400_000),
                    "{d:?}: {list:?}"
                );
                let bob = engine.login("bob").await.unwrap();
                assert_eq!(
                    bob.chat_room_manager()
                        .join_chat_room(&room)
                        .await
                        .unwrap_err()
                        .code(),
                    707,
                    "{d:?}"
                );
            }
            Err(e) => assert_eq!(e.code(), 110, "{d:?}: {e:?}"),
        }
    }
    // The room is fine: carol got no recovery notice, the owner can still talk.
    say(&owner, room, "marker").await;
    let seen = room_events(&events_until_marker(&mut ev, "marker").await);
    assert!(
        !seen
            .iter()
            .any(|e| matches!(e, ChatRoomEvent::ChatRoomRecovered { .. })),
        "{seen:?}"
    );
    engine.shutdown().await;
}

// FINDING: an unblock at the exact end of a timed block logs `Unblock` by the moderator and no
// `BlockExpired` at all (the block ended by itself at its end: "the audit log gets
// BlockExpired with no operator at the end time"); just after the end both are logged.
/// An unblock at the block's end (before or as the timer fires): the block ended by itself at
/// its end, so `BlockExpired` is logged at the end and the unblock, which changed nothing, is
/// not logged.
#[tokio::test]
async fn unblock_at_the_end_of_a_timed_block() {
    for round in [0i64, 500] {
        let clock = ManualClock::new(T0);
        let (engine, owner) = engine(Some(clock.clone())).await;
        let room = create(&owner).await;
        let rooms = owner.chat_room_manager();
        rooms
            .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(10))
            .await
            .unwrap();
        clock.set(T0 + 10_000 + round);
        rooms
            .unblock_chat_room_members(&room, ["bob"])
            .await
            .unwrap();
        // Give the timer every chance: later calls through the room, time moving on.
        for _ in 0..50 {
            clock.advance(Duration::from_millis(100));
            say(&owner, room, "tick").await;
            if !block_expired(&audit(&owner, room).await, "bob").is_empty() {
                break;
            }
        }
        let log = audit(&owner, room).await;
        let acts: Vec<(i64, AuditAction)> = log
            .iter()
            .rev()
            .map(|e| (e.time - T0, e.action.clone()))
            .collect();
        let expired = block_expired(&log, "bob");
        assert_eq!(
            expired.len(),
            1,
            "round {round}: BlockExpired at the end: {acts:?}"
        );
        assert_eq!(expired[0].time, T0 + 10_000);
        let unblocks = log
            .iter()
            .filter(|e| e.action == AuditAction::Unblock)
            .count();
        assert_eq!(
            unblocks, 0,
            "round {round}: an unblock of an ended block: {acts:?}"
        );
        engine.shutdown().await;
    }
}

/// Re-blocking at the very end of a timed block: the new block holds; the old end's timer,
/// firing after, must not lift it.
#[tokio::test]
async fn reblock_at_the_end_holds() {
    for round in 0..5 {
        let clock = ManualClock::new(T0);
        let (engine, owner) = engine(Some(clock.clone())).await;
        let room = create(&owner).await;
        let rooms = owner.chat_room_manager();
        let bob = engine.login("bob").await.unwrap();
        rooms
            .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(10))
            .await
            .unwrap();
        clock.set(T0 + 10_000 + round);
        rooms
            .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(10))
            .await
            .unwrap();
        let end = T0 + 20_000 + round;
        say(&owner, room, "tick").await;
        clock.set(end - 1);
        say(&owner, room, "tick").await;
        assert_eq!(
            bob.chat_room_manager()
                .join_chat_room(&room)
                .await
                .unwrap_err()
                .code(),
            707,
            "round {round}"
        );
        assert_eq!(block_list(&owner, room).await, [("bob".into(), Some(end))]);
        let total = rooms
            .fetch_chat_room_block_list(&room, 1, 10)
            .await
            .unwrap()
            .total;
        assert_eq!(total, 1);
        clock.set(end);
        assert_eq!(
            rooms
                .fetch_chat_room_block_list(&room, 1, 10)
                .await
                .unwrap()
                .total,
            0
        );
        bob.chat_room_manager().join_chat_room(&room).await.unwrap();
        engine.shutdown().await;
    }
}

#[allow(dead_code)]
fn _unused(_: BTreeSet<u8>, _: RoomLimits) {}

// FINDING: unblocking a user who is not blocked appends an `Unblock` entry to the audit log
// (semantics.md: "A refused call ... or one that changed nothing ... logs nothing").
/// Removing is idempotent: unblocking someone who is not blocked (never was, or whose timed
/// block ended) changes nothing and so logs nothing ("one that changed nothing logs nothing").
#[tokio::test]
async fn unblocking_someone_not_blocked_logs_nothing() {
    let clock = ManualClock::new(T0);
    let (engine, owner) = engine(Some(clock.clone())).await;
    let room = create(&owner).await;
    let rooms = owner.chat_room_manager();
    say(&owner, room, "x").await;
    let n = audit(&owner, room).await.len();
    let _carol = join(&engine, "carol", room).await;
    rooms
        .unmute_chat_room_members(&room, ["carol"])
        .await
        .unwrap();
    rooms
        .remove_members_from_chat_room_allow_list(&room, ["carol"])
        .await
        .unwrap();
    rooms
        .unshadow_ban_chat_room_members(&room, ["carol"])
        .await
        .unwrap();
    let others: Vec<AuditAction> = audit(&owner, room)
        .await
        .iter()
        .map(|e| e.action.clone())
        .collect();
    rooms
        .unblock_chat_room_members(&room, ["nobody"])
        .await
        .unwrap();
    let log = audit(&owner, room).await;
    assert_eq!(
        others.len(),
        n,
        "unmute / allow-list removal / unshadow of no one: {others:?}"
    );
    assert_eq!(log.len(), n, "unblock of no one: {:?}", log[0]);
    engine.shutdown().await;
}
