//! Helpers that keep each test to a few lines.

use std::collections::BTreeMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use parking_lot::Mutex;
use roomcast::{
    ChatClient, ChatRoom, ChatRoomEvent, ChatRoomEventHandler, ClientEvent, CreateChatRoomOptions,
    Engine, EventStream, LeaveReason, RoomId, Timestamp, UserId,
};
use tokio::sync::Notify;

/// How long any wait in a test may take before the test fails. Generous: a deadline, not a
/// delay; tests finish as soon as the awaited thing happens.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

/// An engine on a temporary store with `admin` as super admin, and `admin`'s client.
pub async fn engine_with_admin(admin: &str) -> (Engine, ChatClient) {
    let engine = Engine::builder().build().await.unwrap();
    engine.add_super_admin(admin).await.unwrap();
    let client = engine.login(admin).await.unwrap();
    (engine, client)
}

/// Creates a room named `name` as `owner`.
pub async fn create_room(owner: &ChatClient, name: &str) -> ChatRoom {
    owner
        .chat_room_manager()
        .create_chat_room(CreateChatRoomOptions::new(name))
        .await
        .unwrap()
}

/// Logs `user` in and joins `room`, returning the client.
pub async fn join(engine: &Engine, user: &str, room: RoomId) -> ChatClient {
    let client = engine.login(user).await.unwrap();
    client
        .chat_room_manager()
        .join_chat_room(&room)
        .await
        .unwrap();
    client
}

/// A handler that records every event it gets, rebuilt from the callback arguments, so that a
/// test also checks that each event reaches the method of its name with its fields.
#[derive(Default, Clone)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

#[derive(Default)]
struct RecorderInner {
    events: Mutex<Vec<ChatRoomEvent>>,
    changed: Notify,
}

impl Recorder {
    fn push(&self, event: ChatRoomEvent) {
        self.inner.events.lock().push(event);
        self.inner.changed.notify_waiters();
    }

    /// Everything recorded so far.
    pub fn events(&self) -> Vec<ChatRoomEvent> {
        self.inner.events.lock().clone()
    }

    /// Forgets what was recorded.
    pub fn clear(&self) {
        self.inner.events.lock().clear();
    }

    /// Waits (up to [`DEADLINE`]) until `done` holds for the recorded events.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[ChatRoomEvent]) -> bool) {
        let wait = async {
            loop {
                let notified = self.inner.changed.notified();
                if done(&self.inner.events.lock()) {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(DEADLINE, wait).await.is_err() {
            panic!(
                "timed out waiting for {what}; recorded: {:#?}",
                self.events()
            );
        }
    }

    /// Waits until at least `n` events are recorded.
    pub async fn wait_for_count(&self, n: usize) {
        self.wait_until(&format!("{n} events"), |e| e.len() >= n)
            .await;
    }
}

impl ChatRoomEventHandler for Recorder {
    fn on_owner_changed_from_chat_room(
        &self,
        room_id: &RoomId,
        new: &UserId,
        old: &UserId,
        operator: Option<&UserId>,
    ) {
        self.push(ChatRoomEvent::OwnerChanged {
            operator_reason: None,
            room_id: *room_id,
            new_owner: new.clone(),
            old_owner: old.clone(),
            operator: operator.cloned(),
        });
    }
    fn on_mute_list_added_from_chat_room(
        &self,
        room_id: &RoomId,
        m: &[UserId],
        expire: Option<Timestamp>,
        operator: Option<&UserId>,
    ) {
        self.push(ChatRoomEvent::MuteListAdded {
            operator_reason: None,
            room_id: *room_id,
            members: m.to_vec(),
            expire_time: expire,
            operator: operator.cloned(),
        });
    }
    fn on_mute_list_removed_from_chat_room(
        &self,
        room_id: &RoomId,
        m: &[UserId],
        operator: Option<&UserId>,
    ) {
        self.push(ChatRoomEvent::MuteListRemoved {
            operator_reason: None,
            room_id: *room_id,
            members: m.to_vec(),
            operator: operator.cloned(),
        });
    }
    fn on_chat_room_destroyed(&self, room_id: &RoomId, room_name: &str) {
        self.push(ChatRoomEvent::ChatRoomDestroyed {
            room_id: *room_id,
            room_name: room_name.into(),
        });
    }
    fn on_specification_changed(&self, room: &ChatRoom, operator: Option<&UserId>) {
        self.push(ChatRoomEvent::SpecificationChanged {
            operator_reason: None,
            room: Box::new(room.clone()),
            operator: operator.cloned(),
        });
    }
    fn on_member_joined_from_chat_room(&self, room_id: &RoomId, participant: &UserId) {
        self.push(ChatRoomEvent::MemberJoined {
            room_id: *room_id,
            participant: participant.clone(),
        });
    }
    fn on_member_exited_from_chat_room(&self, room_id: &RoomId, name: &str, who: &UserId) {
        self.push(ChatRoomEvent::MemberExited {
            room_id: *room_id,
            room_name: name.into(),
            participant: who.clone(),
        });
    }
    fn on_removed_from_chat_room(
        &self,
        room_id: &RoomId,
        name: &str,
        who: &UserId,
        reason: LeaveReason,
        operator: Option<&UserId>,
    ) {
        self.push(ChatRoomEvent::RemovedFromChatRoom {
            operator_reason: None,
            room_id: *room_id,
            room_name: name.into(),
            participant: who.clone(),
            reason,
            operator: operator.cloned(),
        });
    }
    fn on_announcement_changed_from_chat_room(
        &self,
        room_id: &RoomId,
        text: &str,
        operator: Option<&UserId>,
    ) {
        self.push(ChatRoomEvent::AnnouncementChanged {
            operator_reason: None,
            room_id: *room_id,
            announcement: text.into(),
            operator: operator.cloned(),
        });
    }
    fn on_allow_list_added_from_chat_room(
        &self,
        room_id: &RoomId,
        m: &[UserId],
        operator: Option<&UserId>,
    ) {
        self.push(ChatRoomEvent::AllowListAdded {
            operator_reason: None,
            room_id: *room_id,
            members: m.to_vec(),
            operator: operator.cloned(),
        });
    }
    fn on_allow_list_removed_from_chat_room(
        &self,
        room_id: &RoomId,
        m: &[UserId],
        operator: Option<&UserId>,
    ) {
        self.push(ChatRoomEvent::AllowListRemoved {
            operator_reason: None,
            room_id: *room_id,
            members: m.to_vec(),
            operator: operator.cloned(),
        });
    }
    fn on_all_chat_room_member_mute_state_changed(
        &self,
        room_id: &RoomId,
        all: bool,
        operator: Option<&UserId>,
    ) {
        self.push(ChatRoomEvent::AllMemberMuteStateChanged {
            operator_reason: None,
            room_id: *room_id,
            is_all_muted: all,
            operator: operator.cloned(),
        });
    }
    fn on_admin_added_from_chat_room(
        &self,
        room_id: &RoomId,
        admin: &UserId,
        operator: Option<&UserId>,
    ) {
        self.push(ChatRoomEvent::AdminAdded {
            operator_reason: None,
            room_id: *room_id,
            admin: admin.clone(),
            operator: operator.cloned(),
        });
    }
    fn on_admin_removed_from_chat_room(
        &self,
        room_id: &RoomId,
        admin: &UserId,
        operator: Option<&UserId>,
    ) {
        self.push(ChatRoomEvent::AdminRemoved {
            operator_reason: None,
            room_id: *room_id,
            admin: admin.clone(),
            operator: operator.cloned(),
        });
    }
    fn on_attributes_updated(
        &self,
        room_id: &RoomId,
        attributes: &BTreeMap<String, String>,
        from: &UserId,
    ) {
        self.push(ChatRoomEvent::AttributesUpdated {
            room_id: *room_id,
            attributes: attributes.clone(),
            from: from.clone(),
        });
    }
    fn on_attributes_removed(&self, room_id: &RoomId, keys: &[String], from: &UserId) {
        self.push(ChatRoomEvent::AttributesRemoved {
            room_id: *room_id,
            keys: keys.to_vec(),
            from: from.clone(),
        });
    }
    fn on_chat_room_recovered(&self, room_id: &RoomId, last_seq: u64) {
        self.push(ChatRoomEvent::ChatRoomRecovered {
            room_id: *room_id,
            last_seq,
        });
    }
}

/// Registers a fresh [`Recorder`] on `client` under `id`.
pub fn record(client: &ChatClient, id: &str) -> Recorder {
    let rec = Recorder::default();
    client
        .chat_room_manager()
        .add_event_handler(id, rec.clone());
    rec
}

/// The next item of `stream`, failing the test after [`DEADLINE`].
pub async fn next_event(stream: &mut EventStream) -> Option<ClientEvent> {
    tokio::time::timeout(DEADLINE, poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)))
        .await
        .expect("timed out waiting for a stream event")
}

pub fn joined(room: RoomId, who: &str) -> ChatRoomEvent {
    ChatRoomEvent::MemberJoined {
        room_id: room,
        participant: uid(who),
    }
}

pub fn exited(room: &ChatRoom, who: &str) -> ChatRoomEvent {
    ChatRoomEvent::MemberExited {
        room_id: room.room_id,
        room_name: room.name.clone(),
        participant: uid(who),
    }
}

/// A message handler that records what it gets.
#[derive(Default, Clone)]
pub struct Inbox {
    inner: Arc<InboxInner>,
}

#[derive(Default)]
struct InboxInner {
    messages: Mutex<Vec<roomcast::ChatMessage>>,
    calls: Mutex<usize>,
    missed: Mutex<u64>,
    changed: Notify,
}

impl Inbox {
    /// Everything received so far.
    pub fn messages(&self) -> Vec<roomcast::ChatMessage> {
        self.inner.messages.lock().clone()
    }

    /// The texts received so far.
    pub fn texts(&self) -> Vec<String> {
        self.messages()
            .iter()
            .map(|m| m.text().unwrap_or_default().to_string())
            .collect()
    }

    /// The sequence numbers received so far.
    pub fn seqs(&self) -> Vec<u64> {
        self.messages().iter().map(|m| m.seq()).collect()
    }

    /// How many `on_messages_received` calls there were.
    pub fn calls(&self) -> usize {
        *self.inner.calls.lock()
    }

    /// The sum of the missed counts reported.
    pub fn missed(&self) -> u64 {
        *self.inner.missed.lock()
    }

    /// Waits (up to [`DEADLINE`]) until `done` holds.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&Inbox) -> bool) {
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
                "timed out waiting for {what}; got seqs {:?}, missed {}",
                self.seqs(),
                self.missed()
            );
        }
    }

    /// Waits until at least `n` messages arrived.
    pub async fn wait_for_count(&self, n: usize) {
        self.wait_until(&format!("{n} messages"), |i| i.messages().len() >= n)
            .await;
    }
}

impl roomcast::ChatEventHandler for Inbox {
    fn on_messages_received(&self, messages: &[roomcast::ChatMessage]) {
        self.inner.messages.lock().extend_from_slice(messages);
        *self.inner.calls.lock() += 1;
        self.inner.changed.notify_waiters();
    }

    fn on_events_missed(&self, count: u64) {
        *self.inner.missed.lock() += count;
        self.inner.changed.notify_waiters();
    }
}

/// Registers a fresh [`Inbox`] on `client` under `id`.
pub fn inbox(client: &ChatClient, id: &str) -> Inbox {
    let inbox = Inbox::default();
    client.chat_manager().add_event_handler(id, inbox.clone());
    inbox
}

/// Sends a text message as `client`.
pub async fn say(client: &ChatClient, room: RoomId, text: &str) -> roomcast::ChatMessage {
    client
        .chat_manager()
        .send_message(roomcast::OutgoingMessage::text(room, text))
        .await
        .unwrap()
}

/// An engine built from `limits` (and optionally a clock) with `admin` as super admin.
pub async fn engine_with(
    limits: roomcast::Limits,
    clock: Option<roomcast::ManualClock>,
    admin: &str,
) -> (Engine, ChatClient) {
    let mut builder = Engine::builder().limits(limits);
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    let engine = builder.build().await.unwrap();
    engine.add_super_admin(admin).await.unwrap();
    let client = engine.login(admin).await.unwrap();
    (engine, client)
}

/// Limits with the per-room delivery threshold and the per-user rate limits off (for tests that
/// send many messages or make many calls).
pub fn unthrottled() -> roomcast::Limits {
    let mut limits = roomcast::Limits::default();
    limits.room_delivery_rate = None;
    limits.api_calls_per_user_per_second = None;
    limits.user_messages_per_window = None;
    limits
}
