//! The moderation and attribute calls of `ChatRoomManager`: roles, lists, mutes, specification,
//! announcement, member list, custom attributes.
//!
//! Who may call what is Agora's (see `shared/AGORA-REFERENCE.md`, and
//! `roomcast_model::check_permission`): a call without the right role fails with 703, one on a
//! user who is not in the room with 702. Each change fires its `ChatRoomEventHandler` callback to
//! the members the reference names, never to the member who acted.

use std::collections::BTreeMap;

use roomcast_engine::{QueryAnswer, RoomQuery};
use roomcast_model::{
    AttributeFailures, AuditEntry, BlockedMember, ChatCursorResult, ChatError, ChatPageResult,
    Moderation, MuteDuration, MutedMember, RoomId, RoomLimits, SetAttributes, UserId,
};

use crate::ChatRoomManager;

fn users<I, S>(list: I) -> Result<Vec<UserId>, ChatError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    list.into_iter().map(|u| UserId::new(u.as_ref())).collect()
}

fn unexpected() -> ChatError {
    ChatError::General("unexpected answer from the room".into())
}

impl ChatRoomManager {
    async fn moderate(&self, room_id: &RoomId, action: Moderation) -> Result<(), ChatError> {
        let by = self.client.current_user_id();
        let reason = self.reason.clone();
        self.client
            .core()?
            .moderate(by, *room_id, action, reason)
            .await
    }

    /// Slow mode (Twitch's): each member who is not exempt (owner, admins, allow list) may send
    /// one message per `cooldown`, 1 to 120 s (110 otherwise); `None` turns it off. Owner and
    /// admins (703 otherwise). A send inside the cooldown fails with 509
    /// ([`ChatError::SlowMode`], which says how long to wait). The other members get
    /// `on_slow_mode_changed`; the room's info shows it (`ChatRoom::slow_mode`). roomcast's own.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine, ManualClock};
    /// # let clock = ManualClock::new(1_700_000_000_000);
    /// # let engine = Engine::builder().clock(clock.clone()).build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::{ChatError, OutgoingMessage};
    /// use std::time::Duration;
    /// let rooms = host.chat_room_manager();
    /// rooms.set_chat_room_slow_mode(&room, Some(Duration::from_secs(30))).await?;
    /// assert_eq!(rooms.fetch_chat_room_info(&room).await?.slow_mode, Some(Duration::from_secs(30)));
    /// let chat = bob.chat_manager();
    /// chat.send_message(OutgoingMessage::text(room, "first")).await?;
    /// clock.advance(Duration::from_secs(10));
    /// let err = chat.send_message(OutgoingMessage::text(room, "too soon")).await.unwrap_err();
    /// assert_eq!(err.code(), 509);
    /// assert!(matches!(err, ChatError::SlowMode(wait) if wait == Duration::from_secs(20)));
    /// host.chat_manager().send_message(OutgoingMessage::text(room, "hosts are exempt")).await?;
    /// clock.advance(Duration::from_secs(20));
    /// chat.send_message(OutgoingMessage::text(room, "second")).await?;
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn set_chat_room_slow_mode(
        &self,
        room_id: &RoomId,
        cooldown: Option<std::time::Duration>,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::SetSlowMode(cooldown))
            .await
    }

    /// Hold for review (Twitch's chat delay): while it is on, a message from a member who is not
    /// the owner or an admin is accepted at once (the send returns it, with its sequence number
    /// and [`ChatMessage::held_until`](crate::ChatMessage::held_until)) but the other members who are not staff receive it only
    /// once `hold` has passed on the engine clock, in the room's order; the owner and admins get
    /// it at once, marked ([`ChatMessage::is_held`](crate::ChatMessage::is_held)), and may delete it meanwhile
    /// ([`ChatRoomManager::delete_chat_room_message`]): it then never reaches the others.
    /// History, replay and local copies hide it from them until then. `hold` is 1 to 60 s
    /// ([`HOLD_RANGE`](crate::HOLD_RANGE); 110 otherwise); `None` turns it off (messages held
    /// already keep their release time). Owner and admins (703 otherwise). The other members
    /// get `on_hold_changed_from_chat_room`; the room's info shows it (`ChatRoom::hold`).
    /// roomcast's own.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine, ManualClock};
    /// # let clock = ManualClock::new(1_700_000_000_000);
    /// # let engine = Engine::builder().clock(clock.clone()).build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// # let carol = engine.login("carol").await?;
    /// # carol.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::{HistoryQuery, OutgoingMessage};
    /// use std::time::Duration;
    /// let rooms = host.chat_room_manager();
    /// rooms.set_chat_room_hold(&room, Some(Duration::from_secs(10))).await?;
    /// assert_eq!(rooms.fetch_chat_room_info(&room).await?.hold, Some(Duration::from_secs(10)));
    /// let sent = bob.chat_manager().send_message(OutgoingMessage::text(room, "hi")).await?;
    /// assert!(sent.is_held());
    /// // Carol is not staff: she sees it only once the hold has passed.
    /// let newest = HistoryQuery::newest(10);
    /// let page = carol.chat_manager().fetch_history_messages(&room, newest).await?;
    /// assert!(page.data.is_empty());
    /// // The host sees it at once, marked.
    /// let page = host.chat_manager().fetch_history_messages(&room, newest).await?;
    /// assert!(page.data[0].is_held());
    /// clock.advance(Duration::from_secs(10));
    /// let page = carol.chat_manager().fetch_history_messages(&room, newest).await?;
    /// assert_eq!(page.data[0].seq(), sent.seq());
    /// assert!(!page.data[0].is_held());
    /// rooms.set_chat_room_hold(&room, None).await?;
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn set_chat_room_hold(
        &self,
        room_id: &RoomId,
        hold: Option<std::time::Duration>,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::SetHold(hold)).await
    }

    /// Freezes the room (Sendbird's freeze) for `duration` or until unfrozen: only the owner
    /// and admins may send meanwhile; anyone else's send fails with 219
    /// ([`ChatError::RoomFrozen`], with the end), allow list included. Owner and admins (703
    /// otherwise). A timed freeze ends by itself on the engine clock; every member then gets
    /// `on_chat_room_freeze_changed` with no operator. A new freeze replaces the one in force.
    /// The room's info shows it (`ChatRoom::frozen`, `frozen_until`). roomcast's own.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine, ManualClock};
    /// # let clock = ManualClock::new(1_700_000_000_000);
    /// # let engine = Engine::builder().clock(clock.clone()).build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::{MuteDuration, OutgoingMessage};
    /// use std::time::Duration;
    /// let rooms = host.chat_room_manager();
    /// rooms.freeze_chat_room(&room, MuteDuration::For(Duration::from_secs(60))).await?;
    /// let info = rooms.fetch_chat_room_info(&room).await?;
    /// assert!(info.frozen && info.frozen_until == Some(1_700_000_060_000));
    /// let chat = bob.chat_manager();
    /// let err = chat.send_message(OutgoingMessage::text(room, "hi")).await.unwrap_err();
    /// assert_eq!(err.code(), 219);
    /// host.chat_manager().send_message(OutgoingMessage::text(room, "staff only")).await?;
    /// clock.advance(Duration::from_secs(60)); // the freeze ends by itself
    /// chat.send_message(OutgoingMessage::text(room, "thawed")).await?;
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn freeze_chat_room(
        &self,
        room_id: &RoomId,
        duration: impl Into<MuteDuration>,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::Freeze(duration.into()))
            .await
    }

    /// Ends a freeze (owner and admins; nothing happens if the room is not frozen). The other
    /// members get `on_chat_room_freeze_changed(frozen: false)`. roomcast's own.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine, ManualClock};
    /// # let clock = ManualClock::new(1_700_000_000_000);
    /// # let engine = Engine::builder().clock(clock.clone()).build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::{MuteDuration, OutgoingMessage};
    /// let rooms = host.chat_room_manager();
    /// rooms.freeze_chat_room(&room, MuteDuration::Forever).await?;
    /// rooms.unfreeze_chat_room(&room).await?;
    /// assert!(!rooms.fetch_chat_room_info(&room).await?.frozen);
    /// bob.chat_manager().send_message(OutgoingMessage::text(room, "hi")).await?;
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn unfreeze_chat_room(&self, room_id: &RoomId) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::Unfreeze).await
    }

    /// Removes members who may not join again for `ban` (a Twitch timeout; Tencent's and
    /// RongCloud's kick duration): as [`ChatRoomManager::remove_chat_room_members`], and a join
    /// before the ban ends fails with 707 ([`ChatError::RejoinBanned`], with the end). Owner
    /// and admins on members, as a kick. roomcast's own.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine, ManualClock};
    /// # let clock = ManualClock::new(1_700_000_000_000);
    /// # let engine = Engine::builder().clock(clock.clone()).build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use std::time::Duration;
    /// let rooms = host.chat_room_manager();
    /// rooms.remove_chat_room_members_with_rejoin_ban(&room, ["bob"], Duration::from_secs(600)).await?;
    /// let err = bob.chat_room_manager().join_chat_room(&room).await.unwrap_err();
    /// assert_eq!(err.code(), 707);
    /// clock.advance(Duration::from_secs(600));
    /// bob.chat_room_manager().join_chat_room(&room).await?;
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn remove_chat_room_members_with_rejoin_ban<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
        ban: std::time::Duration,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let action = Moderation::KickWithRejoinBan {
            targets: users(members)?,
            ban,
        };
        self.moderate(room_id, action).await
    }

    /// This manager, whose moderation calls (roles, kicks, blocks, mutes, lists, mute-all,
    /// specification, limits, announcement) give `reason`: their events carry it
    /// ([`crate::ChatRoomEvent::operator_reason`]) and the room's audit log keeps it. At most
    /// [`crate::REASON_MAX_CHARS`] characters (a call with a longer one fails with 110 and
    /// changes nothing); an empty reason is none. roomcast's own: Agora's calls take no reason.
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # async fn next(events: &mut roomcast::EventStream) -> roomcast::ClientEvent {
    /// #     let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
    /// #     event.await.expect("an event within 10 s").expect("the stream is open")
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::{ChatRoomEvent, ClientEvent, MuteDuration};
    /// let mut bob_events = bob.events();
    /// host.chat_room_manager()
    ///     .with_reason("links in chat")
    ///     .mute_chat_room_members(&room, ["bob"], MuteDuration::Forever)
    ///     .await?;
    /// let ClientEvent::Room(event) = next(&mut bob_events).await else { panic!() };
    /// assert!(matches!(*event, ChatRoomEvent::MuteListAdded { .. }));
    /// assert_eq!(event.operator_reason(), Some("links in chat"));
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn with_reason(&self, reason: impl Into<String>) -> ChatRoomManager {
        ChatRoomManager {
            client: self.client.clone(),
            reason: Some(reason.into()),
        }
    }

    /// A page of the room's audit log, newest first (owner and admins; 703 otherwise): every
    /// act of moderation, by a user or by the engine (a mute that ended by itself), with its
    /// time, operator, action, targets and reason. `before` continues from a page's `cursor`;
    /// `page_size` is 1 to [`crate::LIST_PAGE_MAX`]. The log keeps each room's newest
    /// `Limits::audit_log_retention` entries (10,000 by default) and survives restarts; it goes
    /// with its room. roomcast's own.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::AuditAction;
    /// let rooms = host.chat_room_manager();
    /// rooms.mute_all_chat_room_members(&room).await?;
    /// rooms.with_reason("spam").remove_chat_room_members(&room, ["bob"]).await?;
    /// let page = rooms.fetch_chat_room_audit_log(&room, None, 10).await?;
    /// assert_eq!(page.data[0].action, AuditAction::Kick);
    /// assert_eq!(page.data[0].reason.as_deref(), Some("spam"));
    /// assert_eq!(page.data[0].operator.as_ref().map(|u| u.as_str()), Some("host"));
    /// assert_eq!(page.data[1].action, AuditAction::MuteAll);
    /// assert_eq!(page.cursor, None); // nothing older
    /// let err = bob.chat_room_manager().fetch_chat_room_audit_log(&room, None, 10).await;
    /// assert_eq!(err.unwrap_err().code(), 703);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_chat_room_audit_log(
        &self,
        room_id: &RoomId,
        before: Option<u64>,
        page_size: u32,
    ) -> Result<ChatCursorResult<AuditEntry>, ChatError> {
        let viewer = self.client.current_user_id();
        self.client
            .core()?
            .fetch_audit_log(viewer, *room_id, before, page_size)
            .await
    }

    /// Deletes message `seq` of a room, whoever sent it and however old (owner and admins;
    /// 703 otherwise), as [`crate::ChatManager::recall_message`] does for them, with this
    /// manager's reason ([`ChatRoomManager::with_reason`]): the other members get
    /// `on_messages_recalled`, the message's body leaves the store, a pin of it goes, and the
    /// audit log records `DeleteMessage`. 500 if the room retains no message `seq`.
    /// roomcast's own (moderation beyond Agora).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::{AuditAction, HistoryQuery, OutgoingMessage};
    /// let spoiler = OutgoingMessage::text(room, "the butler did it");
    /// let sent = bob.chat_manager().send_message(spoiler).await?;
    /// let rooms = host.chat_room_manager();
    /// rooms.with_reason("spoiler").delete_chat_room_message(&room, sent.seq()).await?;
    /// let page = host.chat_manager().fetch_history_messages(&room, HistoryQuery::newest(1)).await?;
    /// assert_eq!(page.data[0].recalled().map(|r| r.by.as_str()), Some("host"));
    /// let log = rooms.fetch_chat_room_audit_log(&room, None, 1).await?;
    /// assert_eq!(log.data[0].action, AuditAction::DeleteMessage { seq: sent.seq() });
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn delete_chat_room_message(
        &self,
        room_id: &RoomId,
        seq: u64,
    ) -> Result<(), ChatError> {
        let by = self.client.current_user_id();
        self.client
            .core()?
            .recall_message(by, *room_id, seq, self.reason.clone(), true)
            .await
    }

    /// Pins message `seq` of a room (owner and admins; 703 otherwise), with this manager's
    /// reason. Every other member gets `on_message_pinned_from_chat_room`; the room's info lists
    /// it ([`crate::ChatRoom::pinned_messages`], oldest pin first). A room pins at most
    /// `Limits::max_pinned_messages` (10 by default; 4 beyond); pinning a pinned message changes
    /// nothing; a recalled message cannot be pinned (500), and recalling a pinned message
    /// unpins it. 500 if the room retains no message `seq`. Agora's pinned messages, in a
    /// Twitch-style live room.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::OutgoingMessage;
    /// let rules = OutgoingMessage::text(room, "be nice");
    /// let sent = host.chat_manager().send_message(rules).await?;
    /// let rooms = host.chat_room_manager();
    /// rooms.pin_chat_room_message(&room, sent.seq()).await?;
    /// let info = bob.chat_room_manager().fetch_chat_room_info(&room).await?;
    /// assert_eq!(info.pinned_messages[0].seq, sent.seq());
    /// let err = bob.chat_room_manager().pin_chat_room_message(&room, sent.seq()).await;
    /// assert_eq!(err.unwrap_err().code(), 703);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn pin_chat_room_message(&self, room_id: &RoomId, seq: u64) -> Result<(), ChatError> {
        let by = self.client.current_user_id();
        self.client
            .core()?
            .pin_message(by, *room_id, seq, self.reason.clone())
            .await
    }

    /// Unpins message `seq` of a room (owner and admins; 703 otherwise), with this manager's
    /// reason; the other members get `on_message_unpinned_from_chat_room`. A message that is
    /// not pinned changes nothing.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// use roomcast::OutgoingMessage;
    /// let sent = host.chat_manager().send_message(OutgoingMessage::text(room, "poll!")).await?;
    /// let rooms = host.chat_room_manager();
    /// rooms.pin_chat_room_message(&room, sent.seq()).await?;
    /// rooms.with_reason("poll closed").unpin_chat_room_message(&room, sent.seq()).await?;
    /// assert!(rooms.fetch_chat_room_info(&room).await?.pinned_messages.is_empty());
    /// rooms.unpin_chat_room_message(&room, sent.seq()).await?; // not pinned: nothing happens
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn unpin_chat_room_message(
        &self,
        room_id: &RoomId,
        seq: u64,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::UnpinMessage(seq)).await
    }

    /// Shadow-bans users (Stream's shadow ban): the owner and admins (703 otherwise), not on the
    /// owner or an admin (703); the users need not be in the room. A shadow-banned member's
    /// sends succeed as usual (a sequence number, history), but its messages reach only the
    /// owner and admins, marked ([`ChatMessage::is_shadowed`](crate::ChatMessage::is_shadowed));
    /// history and replay hide them from everyone else and show them to their sender unmarked.
    /// Nothing tells the member: the owner and admins but the operator get
    /// `on_shadow_ban_changed_from_chat_room`. Takes the manager's reason
    /// ([`ChatRoomManager::with_reason`]) and is logged. Banning a banned user changes nothing.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let troll = engine.login("troll").await?;
    /// # troll.chat_room_manager().join_chat_room(&room).await?;
    /// # let amy = engine.login("amy").await?;
    /// # amy.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::{HistoryQuery, OutgoingMessage};
    /// let rooms = host.chat_room_manager();
    /// rooms.with_reason("spam").shadow_ban_chat_room_members(&room, ["troll"]).await?;
    /// let sent = troll.chat_manager().send_message(OutgoingMessage::text(room, "buy now")).await?;
    /// assert!(!sent.is_shadowed()); // the troll sees nothing unusual
    /// let seen = |client: &roomcast::ChatClient| {
    ///     let chat = client.chat_manager();
    ///     async move { chat.fetch_history_messages(&room, HistoryQuery::newest(10)).await }
    /// };
    /// assert!(seen(&amy).await?.data.is_empty()); // hidden from the other members
    /// assert!(seen(&host).await?.data[0].is_shadowed()); // shown, marked, to the staff
    /// assert_eq!(seen(&troll).await?.data[0].seq(), sent.seq());
    /// let err = troll.chat_room_manager().shadow_ban_chat_room_members(&room, ["amy"]).await;
    /// assert_eq!(err.unwrap_err().code(), 703);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn shadow_ban_chat_room_members<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::ShadowBan(users(members)?))
            .await
    }

    /// Lifts users' shadow ban (owner and admins; 703 otherwise): their later messages reach
    /// everyone again (those sent while banned stay hidden). A user who is not shadow-banned is
    /// left as it is. The owner and admins but the operator get
    /// `on_shadow_ban_changed_from_chat_room(banned: false)`; the users are not told.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::OutgoingMessage;
    /// let rooms = host.chat_room_manager();
    /// rooms.shadow_ban_chat_room_members(&room, ["bob"]).await?;
    /// rooms.unshadow_ban_chat_room_members(&room, ["bob", "nobody"]).await?;
    /// assert_eq!(rooms.fetch_chat_room_shadow_ban_list(&room, 1, 20).await?.total, 0);
    /// let sent = bob.chat_manager().send_message(OutgoingMessage::text(room, "hi")).await?;
    /// assert!(!sent.is_shadowed());
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn unshadow_ban_chat_room_members<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::ShadowUnban(users(members)?))
            .await
    }

    /// Page `page_num` (from 1) of the shadow-ban list, sorted by user id (owner and admins;
    /// 703 otherwise). Pages hold 1 to [`crate::LIST_PAGE_MAX`] users (110 otherwise); `total`
    /// counts the whole list.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::UserId;
    /// let rooms = host.chat_room_manager();
    /// rooms.shadow_ban_chat_room_members(&room, ["zed", "amy", "max"]).await?;
    /// let first = rooms.fetch_chat_room_shadow_ban_list(&room, 1, 2).await?;
    /// assert_eq!(first.data, [UserId::new("amy")?, UserId::new("max")?]);
    /// assert_eq!(first.total, 3);
    /// let err = bob.chat_room_manager().fetch_chat_room_shadow_ban_list(&room, 1, 2).await;
    /// assert_eq!(err.unwrap_err().code(), 703); // bob cannot tell whether he is on it
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_chat_room_shadow_ban_list(
        &self,
        room_id: &RoomId,
        page_num: u32,
        page_size: u32,
    ) -> Result<ChatPageResult<UserId>, ChatError> {
        let query = RoomQuery::ShadowBanList {
            page_num,
            page_size,
        };
        match self.query(room_id, query).await? {
            QueryAnswer::Users(page) => Ok(page),
            _ => Err(unexpected()),
        }
    }

    async fn query(&self, room_id: &RoomId, query: RoomQuery) -> Result<QueryAnswer, ChatError> {
        let viewer = self.client.current_user_id();
        self.client.core()?.query(viewer, *room_id, query).await
    }

    /// Makes a member an admin (owner only; at most 99 admins, 4 beyond). The new admin and
    /// the admins get `on_admin_added_from_chat_room`.
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # async fn next(events: &mut roomcast::EventStream) -> roomcast::ClientEvent {
    /// #     let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
    /// #     event.await.expect("an event within 10 s").expect("the stream is open")
    /// # }
    /// # async fn next_room_event(events: &mut roomcast::EventStream) -> roomcast::ChatRoomEvent {
    /// #     match next(events).await {
    /// #         roomcast::ClientEvent::Room(event) => (*event).clone(),
    /// #         other => panic!("expected a room event, got {other:?}"),
    /// #     }
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::{ChatRoomEvent, UserId};
    /// let rooms = host.chat_room_manager();
    /// let mut bob_events = bob.events();
    /// rooms.add_chat_room_admin(&room, "bob").await?;
    /// assert_eq!(rooms.fetch_chat_room_info(&room).await?.admin_list, [UserId::new("bob")?]);
    /// let told = ChatRoomEvent::AdminAdded {
    ///     operator_reason: None,
    ///     room_id: room,
    ///     admin: UserId::new("bob")?,
    ///     operator: Some(UserId::new("host")?),
    /// };
    /// assert_eq!(next_room_event(&mut bob_events).await, told);
    /// assert_eq!(rooms.add_chat_room_admin(&room, "carol").await.unwrap_err().code(), 702);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn add_chat_room_admin(
        &self,
        room_id: &RoomId,
        admin: impl AsRef<str>,
    ) -> Result<(), ChatError> {
        let admin = UserId::new(admin.as_ref())?;
        self.moderate(room_id, Moderation::AddAdmin(admin)).await
    }

    /// Takes an admin's role (owner only). The former admin and the admins get
    /// `on_admin_removed_from_chat_room`.
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # async fn next(events: &mut roomcast::EventStream) -> roomcast::ClientEvent {
    /// #     let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
    /// #     event.await.expect("an event within 10 s").expect("the stream is open")
    /// # }
    /// # async fn next_room_event(events: &mut roomcast::EventStream) -> roomcast::ChatRoomEvent {
    /// #     match next(events).await {
    /// #         roomcast::ClientEvent::Room(event) => (*event).clone(),
    /// #         other => panic!("expected a room event, got {other:?}"),
    /// #     }
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::ChatRoomEvent;
    /// let rooms = host.chat_room_manager();
    /// let mut bob_events = bob.events();
    /// rooms.add_chat_room_admin(&room, "bob").await?;
    /// rooms.remove_chat_room_admin(&room, "bob").await?;
    /// assert!(rooms.fetch_chat_room_info(&room).await?.admin_list.is_empty());
    /// let added = next_room_event(&mut bob_events).await;
    /// assert!(matches!(added, ChatRoomEvent::AdminAdded { .. }));
    /// let removed = next_room_event(&mut bob_events).await;
    /// assert!(matches!(removed, ChatRoomEvent::AdminRemoved { .. }));
    /// // bob is a member still, and not an admin any more.
    /// assert_eq!(rooms.remove_chat_room_admin(&room, "bob").await.unwrap_err().code(), 110);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn remove_chat_room_admin(
        &self,
        room_id: &RoomId,
        admin: impl AsRef<str>,
    ) -> Result<(), ChatError> {
        let admin = UserId::new(admin.as_ref())?;
        self.moderate(room_id, Moderation::RemoveAdmin(admin)).await
    }

    /// Transfers ownership to a member (owner only); the old owner becomes a plain member (and the
    /// new owner is no longer an admin). The other members get `on_owner_changed_from_chat_room`.
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # async fn next(events: &mut roomcast::EventStream) -> roomcast::ClientEvent {
    /// #     let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
    /// #     event.await.expect("an event within 10 s").expect("the stream is open")
    /// # }
    /// # async fn next_room_event(events: &mut roomcast::EventStream) -> roomcast::ChatRoomEvent {
    /// #     match next(events).await {
    /// #         roomcast::ClientEvent::Room(event) => (*event).clone(),
    /// #         other => panic!("expected a room event, got {other:?}"),
    /// #     }
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::{ChatRoomEvent, ChatRoomPermissionType, UserId};
    /// let rooms = host.chat_room_manager();
    /// let mut bob_events = bob.events();
    /// rooms.change_owner(&room, "bob").await?;
    /// let info = rooms.fetch_chat_room_info(&room).await?;
    /// assert_eq!(info.owner.as_str(), "bob");
    /// assert_eq!(info.permission_type, ChatRoomPermissionType::Member); // the old owner
    /// let told = ChatRoomEvent::OwnerChanged {
    ///     operator_reason: None,
    ///     room_id: room,
    ///     new_owner: UserId::new("bob")?,
    ///     old_owner: UserId::new("host")?,
    ///     operator: Some(UserId::new("host")?),
    /// };
    /// assert_eq!(next_room_event(&mut bob_events).await, told);
    /// assert_eq!(rooms.destroy_chat_room(&room).await.unwrap_err().code(), 703);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn change_owner(
        &self,
        room_id: &RoomId,
        new_owner: impl AsRef<str>,
    ) -> Result<(), ChatError> {
        let new_owner = UserId::new(new_owner.as_ref())?;
        self.moderate(room_id, Moderation::ChangeOwner(new_owner))
            .await
    }

    /// Removes (kicks) members: the owner may remove admins and members, admins members only.
    /// Each gets `on_removed_from_chat_room` (reason `Kicked`), the others
    /// `on_member_exited_from_chat_room`. All targets are checked first; on an error none is
    /// removed. A kicked member may join again.
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # async fn next(events: &mut roomcast::EventStream) -> roomcast::ClientEvent {
    /// #     let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
    /// #     event.await.expect("an event within 10 s").expect("the stream is open")
    /// # }
    /// # async fn next_room_event(events: &mut roomcast::EventStream) -> roomcast::ChatRoomEvent {
    /// #     match next(events).await {
    /// #         roomcast::ClientEvent::Room(event) => (*event).clone(),
    /// #         other => panic!("expected a room event, got {other:?}"),
    /// #     }
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::{ChatRoomEvent, LeaveReason};
    /// let rooms = host.chat_room_manager();
    /// let mut bob_events = bob.events();
    /// rooms.remove_chat_room_members(&room, ["bob"]).await?;
    /// assert_eq!(rooms.fetch_chat_room_info(&room).await?.member_count, 1);
    /// assert!(matches!(next_room_event(&mut bob_events).await,
    ///     ChatRoomEvent::RemovedFromChatRoom { reason: LeaveReason::Kicked, .. }));
    ///
    /// bob.chat_room_manager().join_chat_room(&room).await?; // a kicked member may come back
    /// // carol is not in the room: nobody is removed.
    /// let err = rooms.remove_chat_room_members(&room, ["bob", "carol"]).await.unwrap_err();
    /// assert_eq!(err.code(), 702);
    /// assert_eq!(rooms.fetch_chat_room_info(&room).await?.member_count, 2);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn remove_chat_room_members<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::Kick(users(members)?))
            .await
    }

    /// Blocks users (owner and admins; admins not the owner or other admins). Members among them
    /// are removed as if kicked, and none may join again (707) until unblocked.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// let rooms = host.chat_room_manager();
    /// rooms.block_chat_room_members(&room, ["bob", "troll"]).await?; // troll is not even in it
    /// assert_eq!(rooms.fetch_chat_room_info(&room).await?.member_count, 1); // bob was removed
    /// let err = bob.chat_room_manager().join_chat_room(&room).await.unwrap_err();
    /// assert_eq!(err.code(), 707);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn block_chat_room_members<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::Block(users(members)?))
            .await
    }

    /// Blocks users for `duration` (a Twitch timeout): as
    /// [`ChatRoomManager::block_chat_room_members`] (members among them are removed, and a join
    /// fails with 707, a send with 210), but the block ends by itself on the engine clock, also
    /// after a restart or while the room sleeps. The block list shows its end
    /// ([`BlockedMember::expire_time`]); the audit log keeps `BlockFor` with the end and, when
    /// it ends, the engine's `BlockExpired` (no operator). Blocking a blocked user again
    /// replaces its end (a plain block: until unblocked); an unblock ends it at once. A zero
    /// duration is 110. Owner and admins, as a block. roomcast's own.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine, ManualClock};
    /// # let clock = ManualClock::new(1_700_000_000_000);
    /// # let engine = Engine::builder().clock(clock.clone()).build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::AuditAction;
    /// use std::time::Duration;
    /// let rooms = host.chat_room_manager();
    /// rooms
    ///     .with_reason("spam")
    ///     .block_chat_room_members_for(&room, ["bob"], Duration::from_secs(600))
    ///     .await?;
    /// let blocked = rooms.fetch_chat_room_block_list(&room, 1, 20).await?;
    /// assert_eq!(blocked.data[0].expire_time, Some(1_700_000_600_000));
    /// let err = bob.chat_room_manager().join_chat_room(&room).await.unwrap_err();
    /// assert_eq!(err.code(), 707);
    ///
    /// clock.advance(Duration::from_secs(600)); // the block ends by itself
    /// bob.chat_room_manager().join_chat_room(&room).await?;
    /// assert_eq!(rooms.fetch_chat_room_block_list(&room, 1, 20).await?.total, 0);
    /// let log = loop {
    ///     // The engine's own act, logged as its timer fires.
    ///     let log = rooms.fetch_chat_room_audit_log(&room, None, 10).await?;
    ///     if log.data[0].action == AuditAction::BlockExpired {
    ///         break log;
    ///     }
    ///     tokio::task::yield_now().await;
    /// };
    /// assert_eq!((log.data[0].operator.clone(), log.data[0].time), (None, 1_700_000_600_000));
    /// assert_eq!(log.data[1].reason.as_deref(), Some("spam"));
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn block_chat_room_members_for<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
        duration: std::time::Duration,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let action = Moderation::BlockFor {
            targets: users(members)?,
            duration,
        };
        self.moderate(room_id, action).await
    }

    /// Unblocks users (owner and admins). A timed block ends at once.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// let rooms = host.chat_room_manager();
    /// rooms.block_chat_room_members(&room, ["bob"]).await?;
    /// rooms.unblock_chat_room_members(&room, ["bob"]).await?;
    /// bob.chat_room_manager().join_chat_room(&room).await?; // bob may join again
    /// assert_eq!(rooms.fetch_chat_room_block_list(&room, 1, 20).await?.total, 0);
    /// let err = bob.chat_room_manager().unblock_chat_room_members(&room, ["troll"]).await;
    /// assert_eq!(err.unwrap_err().code(), 703); // bob is a plain member
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn unblock_chat_room_members<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::Unblock(users(members)?))
            .await
    }

    /// Page `page_num` (from 1) of the block list, sorted by user id (owner and admins), each
    /// with the end of its block ([`BlockedMember::expire_time`]: `None` until unblocked, the
    /// time a timed block ends otherwise; ended blocks are not listed). Pages hold 1 to
    /// [`crate::LIST_PAGE_MAX`] users (110 otherwise); `total` counts the whole list.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// let rooms = host.chat_room_manager();
    /// rooms.block_chat_room_members(&room, ["zed", "amy", "max"]).await?;
    /// let first = rooms.fetch_chat_room_block_list(&room, 1, 2).await?;
    /// let ids: Vec<&str> = first.data.iter().map(|b| b.user_id.as_str()).collect();
    /// assert_eq!(ids, ["amy", "max"]); // sorted by id
    /// assert_eq!(first.data[0].expire_time, None); // until unblocked
    /// assert_eq!(first.total, 3);
    /// let second = rooms.fetch_chat_room_block_list(&room, 2, 2).await?;
    /// assert_eq!(second.data[0].user_id.as_str(), "zed");
    /// assert!(!second.has_more());
    /// let err = bob.chat_room_manager().fetch_chat_room_block_list(&room, 1, 2).await;
    /// assert_eq!(err.unwrap_err().code(), 703);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_chat_room_block_list(
        &self,
        room_id: &RoomId,
        page_num: u32,
        page_size: u32,
    ) -> Result<ChatPageResult<BlockedMember>, ChatError> {
        let query = RoomQuery::BlockList {
            page_num,
            page_size,
        };
        match self.query(room_id, query).await? {
            QueryAnswer::BlockList(page) => Ok(page),
            _ => Err(unexpected()),
        }
    }

    /// Mutes members for a while or until unmuted ([`MuteDuration`]; a `Duration` converts
    /// into one). The owner mutes admins and members, admins members only. A muted member's
    /// messages fail with 215, even if it is on the allow list. The targets, the owner and the
    /// admins (but not the member who muted) get `on_mute_list_added_from_chat_room` with the end
    /// time; when the mute ends by itself they all get `on_mute_list_removed_from_chat_room`.
    /// Muting a muted member again replaces its end time.
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # async fn next(events: &mut roomcast::EventStream) -> roomcast::ClientEvent {
    /// #     let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
    /// #     event.await.expect("an event within 10 s").expect("the stream is open")
    /// # }
    /// # async fn next_room_event(events: &mut roomcast::EventStream) -> roomcast::ChatRoomEvent {
    /// #     match next(events).await {
    /// #         roomcast::ClientEvent::Room(event) => (*event).clone(),
    /// #         other => panic!("expected a room event, got {other:?}"),
    /// #     }
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{ChatRoomEvent, ManualClock, OutgoingMessage};
    /// use std::time::Duration;
    /// let clock = ManualClock::new(1_700_000_000_000);
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().clock(clock.clone()).build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// let rooms = host.chat_room_manager();
    /// let mut bob_events = bob.events();
    /// let hello = || OutgoingMessage::text(room, "hello");
    /// rooms.mute_chat_room_members(&room, ["bob"], Duration::from_secs(600)).await?;
    /// assert_eq!(bob.chat_manager().send_message(hello()).await.unwrap_err().code(), 215);
    /// assert!(matches!(next_room_event(&mut bob_events).await,
    ///     ChatRoomEvent::MuteListAdded { expire_time: Some(1_700_000_600_000), .. }));
    ///
    /// clock.advance(Duration::from_secs(600)); // the mute ends by itself
    /// assert!(matches!(next_room_event(&mut bob_events).await,
    ///     ChatRoomEvent::MuteListRemoved { operator: None, .. }));
    /// bob.chat_manager().send_message(hello()).await?;
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn mute_chat_room_members<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
        duration: impl Into<MuteDuration>,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let action = Moderation::Mute {
            targets: users(members)?,
            duration: duration.into(),
        };
        self.moderate(room_id, action).await
    }

    /// Unmutes members (same rights as muting).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::{MuteDuration, OutgoingMessage};
    /// let rooms = host.chat_room_manager();
    /// let hello = || OutgoingMessage::text(room, "hello");
    /// rooms.mute_chat_room_members(&room, ["bob"], MuteDuration::Forever).await?;
    /// assert_eq!(bob.chat_manager().send_message(hello()).await.unwrap_err().code(), 215);
    /// rooms.unmute_chat_room_members(&room, ["bob"]).await?;
    /// bob.chat_manager().send_message(hello()).await?;
    /// assert_eq!(rooms.fetch_chat_room_mute_list(&room, 1, 20).await?.total, 0);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn unmute_chat_room_members<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::Unmute(users(members)?))
            .await
    }

    /// Page `page_num` (from 1) of the mute list, sorted by user id, each member with the end
    /// of its mute (`None`: until unmuted), without mutes that have ended (owner and admins).
    /// Pages hold 1 to [`crate::LIST_PAGE_MAX`] entries (110 otherwise).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{ManualClock, MuteDuration};
    /// use std::time::Duration;
    /// let clock = ManualClock::new(1_700_000_000_000);
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().clock(clock.clone()).build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # for user in ["bob", "carol"] {
    /// #     engine.login(user).await?.chat_room_manager().join_chat_room(&room).await?;
    /// # }
    /// let rooms = host.chat_room_manager();
    /// rooms.mute_chat_room_members(&room, ["bob"], Duration::from_secs(60)).await?;
    /// rooms.mute_chat_room_members(&room, ["carol"], MuteDuration::Forever).await?;
    /// let page = rooms.fetch_chat_room_mute_list(&room, 1, 20).await?;
    /// let muted: Vec<_> = page.data.iter().map(|m| (m.user_id.as_str(), m.expire_time)).collect();
    /// assert_eq!(muted, [("bob", Some(1_700_000_060_000)), ("carol", None)]);
    ///
    /// clock.advance(Duration::from_secs(60)); // bob's mute has ended
    /// assert_eq!(rooms.fetch_chat_room_mute_list(&room, 1, 20).await?.total, 1);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_chat_room_mute_list(
        &self,
        room_id: &RoomId,
        page_num: u32,
        page_size: u32,
    ) -> Result<ChatPageResult<MutedMember>, ChatError> {
        let query = RoomQuery::MuteList {
            page_num,
            page_size,
        };
        match self.query(room_id, query).await? {
            QueryAnswer::MuteList(page) => Ok(page),
            _ => Err(unexpected()),
        }
    }

    /// Mutes every member but the owner, the admins and the allow-listed (owner and admins).
    /// Independent of the mute list. The other members get
    /// `on_all_chat_room_member_mute_state_changed`.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::OutgoingMessage;
    /// let rooms = host.chat_room_manager();
    /// rooms.mute_all_chat_room_members(&room).await?;
    /// assert!(rooms.fetch_chat_room_info(&room).await?.is_all_member_muted);
    /// let err = bob.chat_manager().send_message(OutgoingMessage::text(room, "hi")).await;
    /// assert_eq!(err.unwrap_err().code(), 219);
    /// host.chat_manager().send_message(OutgoingMessage::text(room, "quiet, please")).await?;
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn mute_all_chat_room_members(&self, room_id: &RoomId) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::MuteAll(true)).await
    }

    /// Turns mute-all off (owner and admins).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::OutgoingMessage;
    /// let rooms = host.chat_room_manager();
    /// rooms.mute_all_chat_room_members(&room).await?;
    /// rooms.unmute_all_chat_room_members(&room).await?;
    /// assert!(!rooms.fetch_chat_room_info(&room).await?.is_all_member_muted);
    /// bob.chat_manager().send_message(OutgoingMessage::text(room, "hi")).await?;
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn unmute_all_chat_room_members(&self, room_id: &RoomId) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::MuteAll(false)).await
    }

    /// Adds members to the allow list (owner and admins): they may send while mute-all is on,
    /// and their messages count as high priority.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// # let carol = engine.login("carol").await?;
    /// # carol.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::OutgoingMessage;
    /// let rooms = host.chat_room_manager();
    /// rooms.mute_all_chat_room_members(&room).await?;
    /// rooms.add_members_to_chat_room_allow_list(&room, ["bob"]).await?;
    /// bob.chat_manager().send_message(OutgoingMessage::text(room, "allowed")).await?;
    /// let err = carol.chat_manager().send_message(OutgoingMessage::text(room, "me too?")).await;
    /// assert_eq!(err.unwrap_err().code(), 219);
    /// let outsider = rooms.add_members_to_chat_room_allow_list(&room, ["dave"]).await;
    /// assert_eq!(outsider.unwrap_err().code(), 702);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn add_members_to_chat_room_allow_list<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::AllowListAdd(users(members)?))
            .await
    }

    /// Removes users from the allow list (owner and admins).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// let rooms = host.chat_room_manager();
    /// rooms.add_members_to_chat_room_allow_list(&room, ["bob"]).await?;
    /// // Users who are not on the list are passed over.
    /// rooms.remove_members_from_chat_room_allow_list(&room, ["bob", "nobody"]).await?;
    /// assert!(!bob.chat_room_manager().is_member_in_chat_room_allow_list(&room).await?);
    /// assert_eq!(rooms.fetch_chat_room_allow_list(&room, 1, 20).await?.total, 0);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn remove_members_from_chat_room_allow_list<I, S>(
        &self,
        room_id: &RoomId,
        members: I,
    ) -> Result<(), ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.moderate(room_id, Moderation::AllowListRemove(users(members)?))
            .await
    }

    /// Page `page_num` (from 1) of the allow list, sorted by user id (owner and admins; the
    /// SDK's `fetchChatRoomAllowListFromServer`). Pages hold 1 to [`crate::LIST_PAGE_MAX`] users
    /// (110 otherwise).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// # let carol = engine.login("carol").await?;
    /// # carol.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::UserId;
    /// let rooms = host.chat_room_manager();
    /// rooms.add_members_to_chat_room_allow_list(&room, ["carol", "bob"]).await?;
    /// let page = rooms.fetch_chat_room_allow_list(&room, 1, 20).await?;
    /// assert_eq!(page.data, [UserId::new("bob")?, UserId::new("carol")?]);
    /// assert_eq!(page.total, 2);
    /// let err = bob.chat_room_manager().fetch_chat_room_allow_list(&room, 1, 20).await;
    /// assert_eq!(err.unwrap_err().code(), 703);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_chat_room_allow_list(
        &self,
        room_id: &RoomId,
        page_num: u32,
        page_size: u32,
    ) -> Result<ChatPageResult<UserId>, ChatError> {
        let query = RoomQuery::AllowList {
            page_num,
            page_size,
        };
        match self.query(room_id, query).await? {
            QueryAnswer::Users(page) => Ok(page),
            _ => Err(unexpected()),
        }
    }

    /// Whether the caller is on the allow list (the owner and admins always are). Any member.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// let bob_rooms = bob.chat_room_manager();
    /// assert!(!bob_rooms.is_member_in_chat_room_allow_list(&room).await?);
    /// host.chat_room_manager().add_members_to_chat_room_allow_list(&room, ["bob"]).await?;
    /// assert!(bob_rooms.is_member_in_chat_room_allow_list(&room).await?);
    /// assert!(host.chat_room_manager().is_member_in_chat_room_allow_list(&room).await?);
    /// let outsider = engine.login("carol").await?.chat_room_manager();
    /// let err = outsider.is_member_in_chat_room_allow_list(&room).await.unwrap_err();
    /// assert_eq!(err.code(), 702);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn is_member_in_chat_room_allow_list(
        &self,
        room_id: &RoomId,
    ) -> Result<bool, ChatError> {
        match self.query(room_id, RoomQuery::IsOnAllowList).await? {
            QueryAnswer::Bool(b) => Ok(b),
            _ => Err(unexpected()),
        }
    }

    /// Renames the room (owner and admins; 1 to 128 characters by default). The other members get
    /// `on_specification_changed`.
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # async fn next(events: &mut roomcast::EventStream) -> roomcast::ClientEvent {
    /// #     let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
    /// #     event.await.expect("an event within 10 s").expect("the stream is open")
    /// # }
    /// # async fn next_room_event(events: &mut roomcast::EventStream) -> roomcast::ChatRoomEvent {
    /// #     match next(events).await {
    /// #         roomcast::ClientEvent::Room(event) => (*event).clone(),
    /// #         other => panic!("expected a room event, got {other:?}"),
    /// #     }
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::ChatRoomEvent;
    /// let rooms = host.chat_room_manager();
    /// let mut bob_events = bob.events();
    /// rooms.change_chat_room_name(&room, "Finals").await?;
    /// assert_eq!(rooms.fetch_chat_room_info(&room).await?.name, "Finals");
    /// match next_room_event(&mut bob_events).await {
    ///     ChatRoomEvent::SpecificationChanged { room: now, .. } => assert_eq!(now.name, "Finals"),
    ///     other => panic!("unexpected {other:?}"),
    /// }
    /// assert_eq!(rooms.change_chat_room_name(&room, "").await.unwrap_err().code(), 110);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn change_chat_room_name(
        &self,
        room_id: &RoomId,
        name: impl Into<String>,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::ChangeName(name.into()))
            .await
    }

    /// Changes the description (owner and admins; up to 512 characters by default). The other
    /// members get `on_specification_changed`.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// let rooms = host.chat_room_manager();
    /// rooms.change_chat_room_description(&room, "best of five").await?;
    /// assert_eq!(rooms.fetch_chat_room_info(&room).await?.description, "best of five");
    /// let too_long = "x".repeat(513);
    /// let err = rooms.change_chat_room_description(&room, too_long).await.unwrap_err();
    /// assert_eq!(err.code(), 110);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn change_chat_room_description(
        &self,
        room_id: &RoomId,
        description: impl Into<String>,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::ChangeDescription(description.into()))
            .await
    }

    /// Changes max members (owner and admins; not below the current member count, 110). The other
    /// members get `on_specification_changed`.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// let rooms = host.chat_room_manager();
    /// rooms.change_chat_room_max_users(&room, 2).await?; // host and bob: full
    /// assert_eq!(rooms.fetch_chat_room_info(&room).await?.max_users, 2);
    /// let carol = engine.login("carol").await?;
    /// assert_eq!(carol.chat_room_manager().join_chat_room(&room).await.unwrap_err().code(), 704);
    /// assert_eq!(rooms.change_chat_room_max_users(&room, 1).await.unwrap_err().code(), 110);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn change_chat_room_max_users(
        &self,
        room_id: &RoomId,
        max_users: u32,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::ChangeMaxUsers(max_users))
            .await
    }

    /// Replaces the room's own limits with `limits` (owner only, 703 otherwise): a field left
    /// unset follows the engine's ([`crate::Limits`]), so `RoomLimits::default()` hands every
    /// limit back to the engine. To change one field, start from the room's current ones
    /// (`fetch_chat_room_info(..).limits`). Checked as the engine's limits are (110; nothing
    /// changes). The other members get `on_specification_changed`, and the room's info shows
    /// the limits; they persist with the room.
    ///
    /// A new delivery threshold or message window starts counting afresh. A member already
    /// offline is measured from when it went away against the grace in force when its check
    /// runs (a longer grace extends its deadline; a shorter one never removes it before the
    /// deadline it had). A lower retention trims with the next message; a larger replay count
    /// fills as messages arrive.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::RoomLimits;
    /// use std::time::Duration;
    /// let rooms = host.chat_room_manager();
    /// let quick = RoomLimits::default().with_offline_grace(Duration::from_secs(30));
    /// rooms.change_chat_room_limits(&room, quick).await?;
    /// let info = rooms.fetch_chat_room_info(&room).await?;
    /// assert_eq!(info.limits.offline_grace, Some(Duration::from_secs(30)));
    /// assert_eq!(info.limits.history_retention, None); // the engine's
    /// // Add a retention of its own, keeping the grace: start from the current limits.
    /// let longer = info.limits.with_history_retention(5_000);
    /// rooms.change_chat_room_limits(&room, longer).await?;
    /// let info = rooms.fetch_chat_room_info(&room).await?;
    /// assert_eq!(info.limits.offline_grace, Some(Duration::from_secs(30)));
    /// assert_eq!(info.limits.history_retention, Some(5_000));
    /// // Hand every limit back to the engine.
    /// rooms.change_chat_room_limits(&room, RoomLimits::default()).await?;
    /// assert_eq!(rooms.fetch_chat_room_info(&room).await?.limits, RoomLimits::default());
    /// let bob_rooms = bob.chat_room_manager();
    /// let err = bob_rooms.change_chat_room_limits(&room, RoomLimits::default()).await;
    /// assert_eq!(err.unwrap_err().code(), 703);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn change_chat_room_limits(
        &self,
        room_id: &RoomId,
        limits: RoomLimits,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::ChangeLimits(limits))
            .await
    }

    /// Changes the announcement (owner and admins; up to 512 characters by default). The other
    /// members get `on_announcement_changed_from_chat_room`.
    ///
    /// ```
    /// # use futures_util::StreamExt;
    /// # async fn next(events: &mut roomcast::EventStream) -> roomcast::ClientEvent {
    /// #     let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
    /// #     event.await.expect("an event within 10 s").expect("the stream is open")
    /// # }
    /// # async fn next_room_event(events: &mut roomcast::EventStream) -> roomcast::ChatRoomEvent {
    /// #     match next(events).await {
    /// #         roomcast::ClientEvent::Room(event) => (*event).clone(),
    /// #         other => panic!("expected a room event, got {other:?}"),
    /// #     }
    /// # }
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::{ChatRoomEvent, UserId};
    /// let rooms = host.chat_room_manager();
    /// let mut bob_events = bob.events();
    /// rooms.update_chat_room_announcement(&room, "Finals at 8pm").await?;
    /// let told = ChatRoomEvent::AnnouncementChanged {
    ///     operator_reason: None,
    ///     room_id: room,
    ///     announcement: "Finals at 8pm".into(),
    ///     operator: Some(UserId::new("host")?),
    /// };
    /// assert_eq!(next_room_event(&mut bob_events).await, told);
    /// let err = bob.chat_room_manager().update_chat_room_announcement(&room, "mine now").await;
    /// assert_eq!(err.unwrap_err().code(), 703);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn update_chat_room_announcement(
        &self,
        room_id: &RoomId,
        announcement: impl Into<String>,
    ) -> Result<(), ChatError> {
        self.moderate(room_id, Moderation::UpdateAnnouncement(announcement.into()))
            .await
    }

    /// The announcement (members).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// let bob_rooms = bob.chat_room_manager();
    /// assert_eq!(bob_rooms.fetch_chat_room_announcement(&room).await?, ""); // none yet
    /// host.chat_room_manager().update_chat_room_announcement(&room, "Finals at 8pm").await?;
    /// assert_eq!(bob_rooms.fetch_chat_room_announcement(&room).await?, "Finals at 8pm");
    /// let outsider = engine.login("carol").await?.chat_room_manager();
    /// assert_eq!(outsider.fetch_chat_room_announcement(&room).await.unwrap_err().code(), 702);
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_chat_room_announcement(
        &self,
        room_id: &RoomId,
    ) -> Result<String, ChatError> {
        match self.query(room_id, RoomQuery::Announcement).await? {
            QueryAnswer::Text(t) => Ok(t),
            _ => Err(unexpected()),
        }
    }

    /// A page of the member list, newest first (members). Start with `None`; pass the previous
    /// page's `cursor` to get the next (`None` there means the end). The page size is 1 to
    /// [`crate::LIST_PAGE_MAX`] (110 otherwise).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// # for user in ["carol", "dave"] {
    /// #     engine.login(user).await?.chat_room_manager().join_chat_room(&room).await?;
    /// # }
    /// // host, bob, carol and dave joined in that order.
    /// let rooms = host.chat_room_manager();
    /// let first = rooms.fetch_chat_room_members(&room, None, 3).await?;
    /// let names: Vec<&str> = first.data.iter().map(|u| u.as_str()).collect();
    /// assert_eq!(names, ["dave", "carol", "bob"]); // newest first
    /// let rest = rooms.fetch_chat_room_members(&room, first.cursor, 3).await?;
    /// assert_eq!(rest.data[0].as_str(), "host");
    /// assert_eq!(rest.cursor, None); // the end
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_chat_room_members(
        &self,
        room_id: &RoomId,
        cursor: Option<u64>,
        page_size: u32,
    ) -> Result<ChatCursorResult<UserId>, ChatError> {
        roomcast_model::check_page_size(page_size, crate::LIST_PAGE_MAX)?;
        match self
            .query(room_id, RoomQuery::Members { cursor, page_size })
            .await?
        {
            QueryAnswer::Members(page) => Ok(page),
            _ => Err(unexpected()),
        }
    }

    /// Every custom attribute of the room, key to value (members; the SDK's
    /// `fetchChatRoomAttributes` without keys).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::SetAttributes;
    /// let rooms = host.chat_room_manager();
    /// let set = SetAttributes::new([("poll", "best map?"), ("theme", "dark")]);
    /// rooms.set_chat_room_attributes(&room, set).await?.into_result()?;
    /// let all = bob.chat_room_manager().fetch_all_chat_room_attributes(&room).await?;
    /// assert_eq!(all.len(), 2);
    /// assert_eq!(all["theme"], "dark");
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_all_chat_room_attributes(
        &self,
        room_id: &RoomId,
    ) -> Result<BTreeMap<String, String>, ChatError> {
        self.fetch_chat_room_attributes(room_id, Vec::<String>::new())
            .await
    }

    /// Custom attributes (members): those of the given keys that exist (all of them if `keys`
    /// is empty).
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::SetAttributes;
    /// let rooms = host.chat_room_manager();
    /// let set = SetAttributes::new([("poll", "best map?"), ("theme", "dark")]);
    /// rooms.set_chat_room_attributes(&room, set).await?.into_result()?;
    /// let bob_rooms = bob.chat_room_manager();
    /// let some = bob_rooms.fetch_chat_room_attributes(&room, ["theme", "nope"]).await?;
    /// assert_eq!(some.len(), 1); // only the keys that exist
    /// assert_eq!(some["theme"], "dark");
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn fetch_chat_room_attributes<I, S>(
        &self,
        room_id: &RoomId,
        keys: I,
    ) -> Result<BTreeMap<String, String>, ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let keys = keys.into_iter().map(|k| k.as_ref().to_string()).collect();
        match self.query(room_id, RoomQuery::Attributes { keys }).await? {
            QueryAnswer::Attributes(a) => Ok(a),
            _ => Err(unexpected()),
        }
    }

    /// Sets custom attributes (any member; 1 to 10 pairs, 110 otherwise). Each key belongs to
    /// whoever set it: a key of another member is changed only with `overwrite`. Returns the keys
    /// that failed and why (703 owned by another or version mismatch, 110 bad key or value, 4
    /// over 100 keys); the others are applied, and the other members get
    /// `on_attributes_updated`.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// use roomcast::{CreateChatRoomOptions, Engine, SetAttributes};
    /// let engine = Engine::builder().build().await?;
    /// engine.add_super_admin("host").await?;
    /// let host = engine.login("host").await?;
    /// let rooms = host.chat_room_manager();
    /// let room = rooms.create_chat_room(CreateChatRoomOptions::new("show")).await?;
    /// let failed = rooms
    ///     .set_chat_room_attributes(&room.room_id, SetAttributes::new([("poll", "best map?")]))
    ///     .await?;
    /// assert!(failed.is_empty());
    /// let attrs = rooms.fetch_chat_room_attributes(&room.room_id, ["poll"]).await?;
    /// assert_eq!(attrs["poll"], "best map?");
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn set_chat_room_attributes(
        &self,
        room_id: &RoomId,
        set: SetAttributes,
    ) -> Result<AttributeFailures, ChatError> {
        let by = self.client.current_user_id();
        self.client.core()?.set_attributes(by, *room_id, set).await
    }

    /// Removes custom attributes (any member; 1 to 10 keys). Keys of other members are removed
    /// only with `force`. Returns the keys that failed and why; the other members get
    /// `on_attributes_removed` for the rest.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), roomcast::ChatError> {
    /// # use roomcast::{CreateChatRoomOptions, Engine};
    /// # let engine = Engine::builder().build().await?;
    /// # engine.add_super_admin("host").await?;
    /// # let host = engine.login("host").await?;
    /// # let room = CreateChatRoomOptions::new("stream");
    /// # let room = host.chat_room_manager().create_chat_room(room).await?.room_id;
    /// # let bob = engine.login("bob").await?;
    /// # bob.chat_room_manager().join_chat_room(&room).await?;
    /// use roomcast::SetAttributes;
    /// let rooms = host.chat_room_manager();
    /// let set = SetAttributes::new([("topic", "speedruns")]);
    /// bob.chat_room_manager().set_chat_room_attributes(&room, set).await?.into_result()?;
    /// // The key is bob's: without `force`, even the owner cannot remove it.
    /// let failed = rooms.remove_chat_room_attributes(&room, ["topic"], false).await?;
    /// assert_eq!(failed.get("topic").map(|e| e.code()), Some(703));
    /// let failed = rooms.remove_chat_room_attributes(&room, ["topic"], true).await?;
    /// assert!(failed.is_empty());
    /// assert!(rooms.fetch_all_chat_room_attributes(&room).await?.is_empty());
    /// # engine.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn remove_chat_room_attributes<I, S>(
        &self,
        room_id: &RoomId,
        keys: I,
        force: bool,
    ) -> Result<AttributeFailures, ChatError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let by = self.client.current_user_id();
        let keys = keys.into_iter().map(|k| k.as_ref().to_string()).collect();
        self.client
            .core()?
            .remove_attributes(by, *room_id, keys, force)
            .await
    }
}
