//! The send path beyond Agora: idempotent sends, the pre-send hook, broadcasts to every room.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use roomcast::{
    ChatClient, CreateChatRoomOptions, Engine, ManualClock, MessageBody, OnHookFailure,
    OutgoingMessage, PreSendDecision, PreSendFuture, PreSendHook, RoomId, UserId,
};
use tokio::sync::{oneshot, Notify};

use crate::support::*;

const T0: i64 = 1_700_000_000_000;

fn keyed(room: RoomId, text: &str, key: &str) -> OutgoingMessage {
    OutgoingMessage::text(room, text).with_idempotency_key(key)
}

/// Sends a plain message as `client` and waits until `inbox` has it: since a member gets a
/// room's messages in the room's order, nothing sent before it can still arrive.
async fn sentinel(client: &ChatClient, room: RoomId, inbox: &Inbox) {
    say(client, room, "sentinel").await;
    inbox
        .wait_until("the sentinel", |i| {
            i.texts().last().is_some_and(|t| t == "sentinel")
        })
        .await;
}

/// Many tasks retrying one key at once get one message, the same one, delivered once; a key
/// is the sender's own; after the window the key sends again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_key_returns_the_first_message_and_delivers_once() {
    let clock = ManualClock::new(T0);
    let (engine, host) = engine_with(unthrottled(), Some(clock.clone()), "host").await;
    let room = create_room(&host, "stream").await.room_id;
    let bob = join(&engine, "bob", room).await;
    let got = inbox(&bob, "inbox");
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let chat = host.chat_manager();
            tokio::spawn(async move { chat.send_message(keyed(room, "hello", "k-1")).await })
        })
        .collect();
    let mut sent = Vec::new();
    for task in tasks {
        sent.push(task.await.unwrap().unwrap());
    }
    assert!(sent.iter().all(|m| m == &sent[0]), "{sent:?}");
    assert_eq!(sent[0].seq(), 1);
    sentinel(&host, room, &got).await;
    assert_eq!(got.texts(), ["hello", "sentinel"]);

    // Another sender's key of the same name is its own.
    let theirs = bob
        .chat_manager()
        .send_message(keyed(room, "hi", "k-1"))
        .await;
    assert_eq!(theirs.unwrap().seq(), 3);
    // Within the window, still the first; from 5 minutes on, a new message.
    clock.advance(roomcast::IDEMPOTENCY_WINDOW - Duration::from_millis(1));
    let again = host
        .chat_manager()
        .send_message(keyed(room, "hello", "k-1"))
        .await;
    assert_eq!(again.unwrap(), sent[0]);
    clock.advance(Duration::from_millis(1));
    let later = host
        .chat_manager()
        .send_message(keyed(room, "hello", "k-1"))
        .await;
    assert_eq!(later.unwrap().seq(), 4);
    // A malformed key is 110; a rejected send records no key.
    let bad = host.chat_manager().send_message(keyed(room, "x", "")).await;
    assert_eq!(bad.unwrap_err().code(), 110);
    let stranger = engine.login("stranger").await.unwrap();
    let refused = stranger
        .chat_manager()
        .send_message(keyed(room, "x", "k-2"))
        .await;
    assert_eq!(refused.unwrap_err().code(), 702);
    stranger
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    let now_in = stranger
        .chat_manager()
        .send_message(keyed(room, "x", "k-2"))
        .await;
    assert_eq!(now_in.unwrap().seq(), 5);
    engine.shutdown().await;
}

/// Keys are stored with their message: a retry after a restart (and a room loaded again)
/// gets the first message, also one the room's retention has dropped meanwhile (its id, seq
/// and time); keys whose window ended are forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_hold_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let open = |clock: ManualClock| {
        // No replay on join: bob's inbox, registered after his join, would catch the replayed
        // "three" or not depending on timing; only what a retry delivers is counted here.
        let limits = unthrottled()
            .with_history_retention(2)
            .with_join_replay_count(0);
        Engine::builder()
            .data_dir(dir.path())
            .limits(limits)
            .clock(clock)
            .build()
    };
    let engine = open(clock.clone()).await.unwrap();
    engine.add_super_admin("host").await.unwrap();
    let host = engine.login("host").await.unwrap();
    let room = create_room(&host, "stream").await.room_id;
    let chat = host.chat_manager();
    let first = chat.send_message(keyed(room, "one", "a")).await.unwrap();
    let second = chat.send_message(keyed(room, "two", "b")).await.unwrap();
    for n in 0..3 {
        say(&host, room, &format!("filler {n}")).await; // "one" and "two" leave the history
    }
    clock.advance(Duration::from_secs(60));
    let third = chat.send_message(keyed(room, "three", "c")).await.unwrap();
    engine.shutdown().await;

    let engine = open(clock.clone()).await.unwrap();
    let host = engine.login("host").await.unwrap();
    host.chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    let bob = join(&engine, "bob", room).await;
    let got = inbox(&bob, "inbox");
    let chat = host.chat_manager();
    assert_eq!(
        chat.send_message(keyed(room, "three", "c")).await.unwrap(),
        third
    );
    let dropped = chat.send_message(keyed(room, "one", "a")).await.unwrap();
    assert_eq!(
        (
            dropped.msg_id(),
            dropped.seq(),
            dropped.server_time(),
            dropped.text()
        ),
        (first.msg_id(), 1, first.server_time(), Some("one"))
    );
    sentinel(&host, room, &got).await;
    assert_eq!(got.texts(), ["sentinel"], "a retry was delivered again");
    // Four minutes later "a" and "b" are five minutes old, "c" four: the next message trims
    // the first two from the store, and a reopened store no longer knows them.
    clock.advance(Duration::from_secs(4 * 60));
    let fresh = chat.send_message(keyed(room, "two", "b")).await.unwrap();
    assert!(fresh.seq() > second.seq());
    engine.shutdown().await;
    let engine = open(clock.clone()).await.unwrap();
    let host = engine.login("host").await.unwrap();
    host.chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    let chat = host.chat_manager();
    assert_eq!(
        chat.send_message(keyed(room, "two", "b")).await.unwrap(),
        fresh
    );
    assert_eq!(
        chat.send_message(keyed(room, "three", "c")).await.unwrap(),
        third
    );
    engine.shutdown().await;
    let report = roomcast::store::check(dir.path()).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

/// A hook under test control: rejects "spam", masks "darn", panics on "boom", hangs on
/// "hang", waits for the test on "slow", and answers a "bot?" by sending from inside itself.
#[derive(Default, Clone)]
struct Moderator {
    inner: Arc<ModeratorInner>,
}

#[derive(Default)]
struct ModeratorInner {
    slow_entered: Notify,
    release: Mutex<Option<oneshot::Receiver<()>>>,
    bot: Mutex<Option<ChatClient>>,
    seen: Mutex<Vec<String>>,
}

impl PreSendHook for Moderator {
    fn pre_send<'a>(&'a self, _from: &'a UserId, m: &'a OutgoingMessage) -> PreSendFuture<'a> {
        Box::pin(async move {
            let MessageBody::Text { content } = &m.body else {
                return PreSendDecision::Allow;
            };
            self.inner.seen.lock().push(content.clone());
            match content.as_str() {
                "spam" => PreSendDecision::Reject("spam is not welcome".into()),
                "boom" => panic!("the hook broke"),
                "hang" => std::future::pending().await,
                "slow" => {
                    let release = self.inner.release.lock().take();
                    self.inner.slow_entered.notify_one();
                    if let Some(release) = release {
                        let _ = release.await;
                    }
                    PreSendDecision::Allow
                }
                "bot?" => {
                    let bot = self.inner.bot.lock().clone().unwrap();
                    let reply = OutgoingMessage::text(m.room_id, "bot: hi");
                    bot.chat_manager().send_message(reply).await.unwrap();
                    PreSendDecision::Allow
                }
                c if c.contains("darn") => PreSendDecision::Rewrite(OutgoingMessage::text(
                    m.room_id,
                    c.replace("darn", "****"),
                )),
                _ => PreSendDecision::Allow,
            }
        })
    }
}

async fn hooked(
    hook: Moderator,
    timeout: Duration,
    on_failure: OnHookFailure,
) -> (Engine, ChatClient) {
    let engine = Engine::builder()
        .limits(unthrottled())
        .pre_send_hook(hook)
        .pre_send_timeout(timeout, on_failure)
        .build()
        .await
        .unwrap();
    engine.add_super_admin("host").await.unwrap();
    let host = engine.login("host").await.unwrap();
    (engine, host)
}

/// The hook allows, rejects (508 with its reason) and rewrites, the owner's messages too; a
/// panicking hook follows the failure policy (allow by default); a hook that sends from
/// inside itself does not deadlock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_send_hook_allows_rejects_and_rewrites() {
    let hook = Moderator::default();
    let (engine, host) = hooked(hook.clone(), Duration::from_secs(10), OnHookFailure::Allow).await;
    let room = create_room(&host, "stream").await.room_id;
    let bob = join(&engine, "bob", room).await;
    let bot = join(&engine, "bot", room).await;
    *hook.inner.bot.lock() = Some(bot);
    let got = inbox(&bob, "inbox");
    let chat = host.chat_manager();
    let err = chat
        .send_message(OutgoingMessage::text(room, "spam"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 508);
    assert!(err.to_string().contains("spam is not welcome"), "{err}");
    let masked = chat
        .send_message(OutgoingMessage::text(room, "darn"))
        .await
        .unwrap();
    assert_eq!((masked.seq(), masked.text()), (1, Some("****")));
    let broken = chat
        .send_message(OutgoingMessage::text(room, "boom"))
        .await
        .unwrap();
    assert_eq!(broken.seq(), 2);
    let asked = chat
        .send_message(OutgoingMessage::text(room, "bot?"))
        .await
        .unwrap();
    assert_eq!(
        asked.seq(),
        4,
        "the bot's reply, sent from the hook, went first"
    );
    sentinel(&host, room, &got).await;
    assert_eq!(got.texts(), ["****", "boom", "bot: hi", "bot?", "sentinel"]);
    // The bot's reply did not go through the hook again.
    assert!(!hook.inner.seen.lock().contains(&"bot: hi".to_string()));
    engine.shutdown().await;
}

/// A room accepts messages in the order their sends were called, even when an earlier one's
/// hook is slower; a hook that hangs is cut off by the timeout (reject: 508) and the room's
/// next send is not held up for longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_hook_keeps_the_rooms_order_and_a_hung_one_times_out() {
    let hook = Moderator::default();
    let (release, released) = oneshot::channel();
    *hook.inner.release.lock() = Some(released);
    let (engine, host) = hooked(hook.clone(), Duration::from_secs(10), OnHookFailure::Reject).await;
    let room = create_room(&host, "stream").await.room_id;
    let other = create_room(&host, "other").await.room_id;
    let bob = join(&engine, "bob", room).await;
    let entered = hook.inner.slow_entered.notified();
    let chat = host.chat_manager();
    let slow = tokio::spawn({
        let chat = chat.clone();
        async move { chat.send_message(OutgoingMessage::text(room, "slow")).await }
    });
    tokio::time::timeout(DEADLINE, entered).await.unwrap();
    // Its hook is running: every later send to the room goes after it, from any task.
    let fast: Vec<_> = (0..8)
        .map(|n| {
            let chat = bob.chat_manager();
            tokio::spawn(async move {
                chat.send_message(OutgoingMessage::text(room, format!("fast {n}")))
                    .await
            })
        })
        .collect();
    // Another room is not held up.
    let elsewhere = chat
        .send_message(OutgoingMessage::text(other, "elsewhere"))
        .await
        .unwrap();
    assert_eq!(elsewhere.seq(), 1);
    release.send(()).unwrap();
    assert_eq!(slow.await.unwrap().unwrap().seq(), 1);
    for task in fast {
        assert!(task.await.unwrap().unwrap().seq() > 1);
    }
    engine.shutdown().await;

    // A hung hook, rejecting on timeout.
    let (engine, host) = hooked(
        Moderator::default(),
        Duration::from_millis(100),
        OnHookFailure::Reject,
    )
    .await;
    let room = create_room(&host, "stream").await.room_id;
    let chat = host.chat_manager();
    let hung = tokio::spawn({
        let chat = chat.clone();
        async move { chat.send_message(OutgoingMessage::text(room, "hang")).await }
    });
    let next = chat
        .send_message(OutgoingMessage::text(room, "next"))
        .await
        .unwrap();
    assert_eq!(next.seq(), 1);
    let err = hung.await.unwrap().unwrap_err();
    assert_eq!(err.code(), 508);
    assert!(err.to_string().contains("in time"), "{err}");
    engine.shutdown().await;
}

/// A super admin's broadcast reaches every active room (in memory, with members) once, counts
/// against its own limit (4 beyond, until the window ends), and is for super admins only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_active_room_within_its_limit() {
    let clock = ManualClock::new(T0);
    let limits = unthrottled().with_broadcasts_per_window(Some((2, Duration::from_secs(60))));
    let (engine, ops) = engine_with(limits, Some(clock.clone()), "ops").await;
    let rooms = ops.chat_room_manager();
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let room = rooms
            .create_chat_room(CreateChatRoomOptions::new(name))
            .await
            .unwrap();
        ids.push(room.room_id);
    }
    // "c" has nobody left in it: not active.
    rooms.leave_chat_room(&ids[2]).await.unwrap();
    let bob = join(&engine, "bob", ids[0]).await;
    let got = inbox(&bob, "inbox");
    say(&ops, ids[0], "before").await;
    let notice = OutgoingMessage::text(ids[0], "maintenance at 10");
    let chat = ops.chat_manager();
    assert_eq!(
        chat.broadcast_to_chat_rooms(notice.clone()).await.unwrap(),
        2
    );
    got.wait_for_count(2).await;
    assert_eq!(got.texts(), ["before", "maintenance at 10"]);
    assert_eq!(got.seqs(), [1, 2]);
    let refused = bob
        .chat_manager()
        .broadcast_to_chat_rooms(notice.clone())
        .await;
    assert_eq!(refused.unwrap_err().code(), 703);
    assert_eq!(
        chat.broadcast_to_chat_rooms(notice.clone()).await.unwrap(),
        2
    );
    let over = chat.broadcast_to_chat_rooms(notice.clone()).await;
    assert_eq!(over.unwrap_err().code(), 4);
    clock.advance(Duration::from_secs(60));
    assert_eq!(chat.broadcast_to_chat_rooms(notice).await.unwrap(), 2);
    engine.shutdown().await;
}
