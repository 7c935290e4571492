//! Whether an engine stops when every handle of it is gone, counted by its threads.
//!
//! These tests count the process's threads whose names start with `roomcast`, so they run in a
//! binary of their own (no other test's engine starts or stops threads meanwhile), one at a time
//! (a global lock). They poll the thread list with a deadline; nothing sleeps.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use roomcast::{
    ChatClient, ChatEventHandler, ChatMessage, CreateChatRoomOptions, Engine, OutgoingMessage,
};
use tokio::sync::Notify;

/// How long any wait may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

/// One test at a time: they count threads.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Awaits `fut`, failing the test if it takes longer than [`DEADLINE`].
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not return within {DEADLINE:?}"))
}

/// The process's threads named `roomcast...` (`/proc/self/task/*/comm`, names cut at 15 bytes).
fn roomcast_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
        .filter(|name| name.starts_with("roomcast"))
        .count()
}

/// Polls (yielding between looks) until at most `baseline` roomcast threads are left; returns
/// how many are left when it stops.
async fn wait_for_threads_to_end(baseline: usize) -> usize {
    let poll = async {
        loop {
            if roomcast_threads() <= baseline {
                return;
            }
            tokio::task::yield_now().await;
        }
    };
    let _ = tokio::time::timeout(DEADLINE, poll).await;
    roomcast_threads()
}

/// The reply-bot pattern: a message handler that holds its own user's client and answers
/// "ping" with "pong" through it.
struct ReplyBot {
    client: ChatClient,
    runtime: tokio::runtime::Handle,
}

impl ChatEventHandler for ReplyBot {
    fn on_messages_received(&self, messages: &[ChatMessage]) {
        for m in messages.iter().filter(|m| m.text() == Some("ping")) {
            let client = self.client.clone();
            let room = m.room_id();
            self.runtime.spawn(async move {
                let _ = client
                    .chat_manager()
                    .send_message(OutgoingMessage::text(room, "pong"))
                    .await;
            });
        }
    }
}

/// A message handler that notes whether "pong" arrived.
#[derive(Clone, Default)]
struct PongSeen {
    seen: Arc<Mutex<bool>>,
    changed: Arc<Notify>,
}

impl ChatEventHandler for PongSeen {
    fn on_messages_received(&self, messages: &[ChatMessage]) {
        if messages.iter().any(|m| m.text() == Some("pong")) {
            *self.seen.lock() = true;
            self.changed.notify_waiters();
        }
    }
}

/// Starts an engine with a room, a reply bot in it (its handler holding the bot's own client),
/// and a user that pings the bot and gets its answer. Returns the engine, the owner, the bot's
/// client and the user's.
async fn engine_with_a_reply_bot() -> (Engine, ChatClient, ChatClient, ChatClient) {
    let engine = within("build", Engine::builder().build())
        .await
        .expect("the engine starts");
    within("add_super_admin", engine.add_super_admin("owner"))
        .await
        .unwrap();
    let owner = engine.login("owner").await.unwrap();
    let rooms = owner.chat_room_manager();
    let room = within(
        "create",
        rooms.create_chat_room(CreateChatRoomOptions::new("bots")),
    )
    .await
    .unwrap()
    .room_id;
    let bot = engine.login("bot").await.unwrap();
    let bot_rooms = bot.chat_room_manager();
    within("join", bot_rooms.join_chat_room(&room))
        .await
        .unwrap();
    bot.chat_manager().add_event_handler(
        "reply",
        ReplyBot {
            client: bot.clone(),
            runtime: tokio::runtime::Handle::current(),
        },
    );
    let user = engine.login("user").await.unwrap();
    let user_rooms = user.chat_room_manager();
    within("join", user_rooms.join_chat_room(&room))
        .await
        .unwrap();
    let pong = PongSeen::default();
    let chat = user.chat_manager();
    chat.add_event_handler("pong", pong.clone());
    within(
        "send",
        chat.send_message(OutgoingMessage::text(room, "ping")),
    )
    .await
    .unwrap();
    let answered = tokio::time::timeout(DEADLINE, async {
        loop {
            let notified = pong.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if *pong.seen.lock() {
                return;
            }
            notified.await;
        }
    })
    .await;
    assert!(answered.is_ok(), "the bot did not answer");
    (engine, owner, bot, user)
}

/// Bug: a handler that captures its own `ChatClient` (the reply-bot pattern) keeps the engine
/// alive after the application dropped every handle: the session holds the handler, the handler
/// the client, the client the engine, and the engine the session. The engine's threads then run
/// forever (the docs say dropping the last handle stops the engine).
///
/// Counts the `roomcast` threads before the engine starts, drops the engine handle and every
/// client (the bot's handler still holds one), and polls until the count is back where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_holding_its_own_client_does_not_keep_the_engine_alive() {
    let _serial = SERIAL.lock().await;
    let baseline = roomcast_threads();
    let (engine, owner, bot, user) = engine_with_a_reply_bot().await;
    let running = roomcast_threads();
    assert!(running > baseline, "the engine runs no roomcast threads?");
    drop((engine, owner, bot, user));
    let left = wait_for_threads_to_end(baseline).await;
    assert!(
        left <= baseline,
        "{} of the engine's {} roomcast threads still run {DEADLINE:?} after every handle was \
         dropped (a reply bot's handler holds its own client)",
        left - baseline,
        running - baseline
    );
}

/// Control for the test above: with `Engine::shutdown` called before the handles are dropped,
/// every engine thread ends, reply bot or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_shutdown_a_reply_bot_leaves_no_thread_behind() {
    let _serial = SERIAL.lock().await;
    let baseline = roomcast_threads();
    let (engine, owner, bot, user) = engine_with_a_reply_bot().await;
    let running = roomcast_threads();
    assert!(running > baseline, "the engine runs no roomcast threads?");
    let shutdown = tokio::time::timeout(DEADLINE, engine.shutdown()).await;
    assert!(shutdown.is_ok(), "shutdown did not return");
    drop((engine, owner, bot, user));
    let left = wait_for_threads_to_end(baseline).await;
    assert!(
        left <= baseline,
        "{} of the engine's {} roomcast threads still run {DEADLINE:?} after shutdown",
        left - baseline,
        running - baseline
    );
}
