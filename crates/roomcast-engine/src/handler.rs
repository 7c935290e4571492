//! `ChatRoomEventHandler`: one default no-op method per callback of the SDK's handler, derived
//! from the closed [`ChatRoomEvent`] enum by [`dispatch`].

use std::collections::BTreeMap;

use roomcast_model::{
    ChatMessage, ChatRoom, ChatRoomEvent, LeaveReason, MessageId, RoomId, Timestamp, UserId,
};

/// Receives chat-room events (the SDK's `ChatRoomEventHandler`).
///
/// The methods are the SDK's callbacks in snake case, with one addition: moderation callbacks
/// also get the `operator`, the member who acted (`None` when the engine did, e.g. a mute that
/// ended by itself or an offline member removed after its grace period).
///
/// Register one with `ChatRoomManager::add_event_handler(id, handler)`. Every method has a default
/// that does nothing, so implement only those you need. Methods run on the engine's callback
/// threads, never on a room actor, one event at a time per client and in each room's order. Keep
/// them quick and non-blocking: a slow handler delays only its own client's events (whose queue
/// then drops its oldest events), and a panic in a handler is caught and logged.
#[allow(unused_variables)]
pub trait ChatRoomEventHandler: Send + Sync + 'static {
    /// `onOwnerChangedFromChatRoom`: ownership moved from `old_owner` to `new_owner`.
    fn on_owner_changed_from_chat_room(
        &self,
        room_id: &RoomId,
        new_owner: &UserId,
        old_owner: &UserId,
        operator: Option<&UserId>,
    ) {
    }
    /// `onMuteListAddedFromChatRoom`: `mute_members` muted until `expire_time` (ms since the
    /// Unix epoch; `None`: until unmuted, the SDK's -1).
    fn on_mute_list_added_from_chat_room(
        &self,
        room_id: &RoomId,
        mute_members: &[UserId],
        expire_time: Option<Timestamp>,
        operator: Option<&UserId>,
    ) {
    }
    /// `onMuteListRemovedFromChatRoom`: `mute_members` unmuted.
    fn on_mute_list_removed_from_chat_room(
        &self,
        room_id: &RoomId,
        mute_members: &[UserId],
        operator: Option<&UserId>,
    ) {
    }
    /// `onChatRoomDestroyed`: the room was destroyed by its owner.
    fn on_chat_room_destroyed(&self, room_id: &RoomId, room_name: &str) {}
    /// `onSpecificationChanged`: name, description, max members or the room's own limits
    /// changed; `room` is the room as it is now.
    fn on_specification_changed(&self, room: &ChatRoom, operator: Option<&UserId>) {}
    /// `onMemberJoinedFromChatRoom`: `participant` joined.
    fn on_member_joined_from_chat_room(&self, room_id: &RoomId, participant: &UserId) {}
    /// `onMemberExitedFromChatRoom`: `participant` left the room.
    fn on_member_exited_from_chat_room(
        &self,
        room_id: &RoomId,
        room_name: &str,
        participant: &UserId,
    ) {
    }
    /// `onRemovedFromChatRoom`: this client's user was removed, for `reason`.
    fn on_removed_from_chat_room(
        &self,
        room_id: &RoomId,
        room_name: &str,
        participant: &UserId,
        reason: LeaveReason,
        operator: Option<&UserId>,
    ) {
    }
    /// `onAnnouncementChangedFromChatRoom`: the announcement changed.
    fn on_announcement_changed_from_chat_room(
        &self,
        room_id: &RoomId,
        announcement: &str,
        operator: Option<&UserId>,
    ) {
    }
    /// `onAllowListAddedFromChatRoom`: `members` added to the allow list.
    fn on_allow_list_added_from_chat_room(
        &self,
        room_id: &RoomId,
        members: &[UserId],
        operator: Option<&UserId>,
    ) {
    }
    /// `onAllowListRemovedFromChatRoom`: `members` removed from the allow list.
    fn on_allow_list_removed_from_chat_room(
        &self,
        room_id: &RoomId,
        members: &[UserId],
        operator: Option<&UserId>,
    ) {
    }
    /// `onAllChatRoomMemberMuteStateChanged`: mute-all turned on or off.
    fn on_all_chat_room_member_mute_state_changed(
        &self,
        room_id: &RoomId,
        is_all_muted: bool,
        operator: Option<&UserId>,
    ) {
    }
    /// `onAdminAddedFromChatRoom`: `admin` became an admin.
    fn on_admin_added_from_chat_room(
        &self,
        room_id: &RoomId,
        admin: &UserId,
        operator: Option<&UserId>,
    ) {
    }
    /// `onAdminRemovedFromChatRoom`: `admin` is no longer an admin.
    fn on_admin_removed_from_chat_room(
        &self,
        room_id: &RoomId,
        admin: &UserId,
        operator: Option<&UserId>,
    ) {
    }
    /// `onAttributesUpdated`: `from` set `attributes`.
    fn on_attributes_updated(
        &self,
        room_id: &RoomId,
        attributes: &BTreeMap<String, String>,
        from: &UserId,
    ) {
    }
    /// `onAttributesRemoved`: `from` removed `keys`.
    fn on_attributes_removed(&self, room_id: &RoomId, keys: &[String], from: &UserId) {}
    /// roomcast's own: the room was restarted after a failure; this user is still a member, and
    /// the room's history holds its messages up to `last_seq` (fetch what came after the last
    /// sequence number this client saw).
    fn on_chat_room_recovered(&self, room_id: &RoomId, last_seq: u64) {}
    /// roomcast's own: this client fell behind and `count` of its oldest queued events
    /// (messages or room events) were dropped; the same notice as
    /// [`ChatEventHandler::on_events_missed`], so that a client with only room handlers is told
    /// too. Fetch the room's info and history to catch up.
    fn on_events_missed(&self, count: u64) {}
    /// roomcast's own (Twitch's slow mode): slow mode was turned on with `cooldown` per
    /// member, or off (`None`).
    fn on_slow_mode_changed(
        &self,
        room_id: &RoomId,
        cooldown: Option<std::time::Duration>,
        operator: Option<&UserId>,
        reason: Option<&str>,
    ) {
    }
    /// roomcast's own (Sendbird's freeze): the room was frozen until `until` (`None`: until
    /// unfrozen), so only the owner and admins may send, or unfrozen (`frozen` false; the
    /// operator is `None` when a timed freeze ended by itself).
    fn on_chat_room_freeze_changed(
        &self,
        room_id: &RoomId,
        frozen: bool,
        until: Option<Timestamp>,
        operator: Option<&UserId>,
        reason: Option<&str>,
    ) {
    }
    /// roomcast's own (Agora's pinned messages): message `seq` (`msg_id`) was pinned by
    /// `operator`.
    fn on_message_pinned_from_chat_room(
        &self,
        room_id: &RoomId,
        msg_id: MessageId,
        seq: u64,
        operator: Option<&UserId>,
    ) {
    }
    /// roomcast's own: message `seq` was unpinned by `operator` (or recalled by it).
    fn on_message_unpinned_from_chat_room(
        &self,
        room_id: &RoomId,
        seq: u64,
        operator: Option<&UserId>,
    ) {
    }
    /// roomcast's own (Twitch's chat delay), to every member but the operator: `operator`
    /// turned hold for review on (`hold`: how long messages of members who are not staff wait
    /// before the others who are not staff receive them) or off (`None`).
    fn on_hold_changed_from_chat_room(
        &self,
        room_id: &RoomId,
        hold: Option<std::time::Duration>,
        operator: Option<&UserId>,
        operator_reason: Option<&str>,
    ) {
    }
    /// roomcast's own (Stream's shadow ban), to the owner and admins only: `operator`
    /// shadow-banned `members` (`banned`) or lifted their shadow ban. The members are never told.
    fn on_shadow_ban_changed_from_chat_room(
        &self,
        room_id: &RoomId,
        members: &[UserId],
        banned: bool,
        operator: Option<&UserId>,
    ) {
    }
    /// roomcast's own: every chat-room event, whole, before any callback. The default calls
    /// the event's own callback ([`dispatch_callback`]). Override it to see what the SDK's
    /// callbacks do not carry, such as the reason a moderator gave
    /// ([`ChatRoomEvent::operator_reason`]); call [`dispatch_callback`] from it to keep the
    /// callbacks too.
    fn on_chat_room_event(&self, event: &ChatRoomEvent) {
        dispatch_callback(self, event)
    }
}

/// Hands `event` to `handler` ([`ChatRoomEventHandler::on_chat_room_event`], which calls the
/// event's callback unless overridden).
pub fn dispatch(handler: &dyn ChatRoomEventHandler, event: &ChatRoomEvent) {
    handler.on_chat_room_event(event)
}

/// Calls the method of `handler` that corresponds to `event` (the SDK's callback).
///
/// A handler that wants whole events (with the reason a moderator gave) and its callbacks too:
///
/// ```
/// use std::sync::Mutex;
/// use roomcast_engine::{dispatch, dispatch_callback, ChatRoomEventHandler};
/// use roomcast_model::{ChatRoomEvent, RoomId, UserId};
///
/// #[derive(Default)]
/// struct Moderation { reasons: Mutex<Vec<String>>, unmuted: Mutex<usize> }
/// impl ChatRoomEventHandler for Moderation {
///     fn on_chat_room_event(&self, event: &ChatRoomEvent) {
///         if let Some(reason) = event.operator_reason() {
///             self.reasons.lock().unwrap().push(reason.to_string());
///         }
///         dispatch_callback(self, event); // and the callbacks below, as usual
///     }
///     fn on_mute_list_removed_from_chat_room(&self, _: &RoomId, _: &[UserId], _: Option<&UserId>) {
///         *self.unmuted.lock().unwrap() += 1;
///     }
/// }
/// # let event = ChatRoomEvent::MuteListRemoved {
/// #     room_id: RoomId::from_u64(7),
/// #     members: vec![UserId::new("bob").unwrap()],
/// #     operator: Some(UserId::new("mod").unwrap()),
/// #     operator_reason: Some("apologised".into()),
/// # };
/// let handler = Moderation::default();
/// dispatch(&handler, &event); // what the engine does for each event
/// assert_eq!(*handler.reasons.lock().unwrap(), ["apologised"]);
/// assert_eq!(*handler.unmuted.lock().unwrap(), 1);
/// ```
pub fn dispatch_callback<H: ChatRoomEventHandler + ?Sized>(handler: &H, event: &ChatRoomEvent) {
    use ChatRoomEvent as E;
    match event {
        E::OwnerChanged {
            room_id,
            new_owner,
            old_owner,
            operator,
            ..
        } => handler.on_owner_changed_from_chat_room(
            room_id,
            new_owner,
            old_owner,
            operator.as_ref(),
        ),
        E::MuteListAdded {
            room_id,
            members,
            expire_time,
            operator,
            ..
        } => handler.on_mute_list_added_from_chat_room(
            room_id,
            members,
            *expire_time,
            operator.as_ref(),
        ),
        E::MuteListRemoved {
            room_id,
            members,
            operator,
            ..
        } => handler.on_mute_list_removed_from_chat_room(room_id, members, operator.as_ref()),
        E::ChatRoomDestroyed {
            room_id, room_name, ..
        } => handler.on_chat_room_destroyed(room_id, room_name),
        E::SpecificationChanged { room, operator, .. } => {
            handler.on_specification_changed(room, operator.as_ref())
        }
        E::MemberJoined {
            room_id,
            participant,
            ..
        } => handler.on_member_joined_from_chat_room(room_id, participant),
        E::MemberExited {
            room_id,
            room_name,
            participant,
            ..
        } => handler.on_member_exited_from_chat_room(room_id, room_name, participant),
        E::RemovedFromChatRoom {
            room_id,
            room_name,
            participant,
            reason,
            operator,
            ..
        } => handler.on_removed_from_chat_room(
            room_id,
            room_name,
            participant,
            *reason,
            operator.as_ref(),
        ),
        E::AnnouncementChanged {
            room_id,
            announcement,
            operator,
            ..
        } => {
            handler.on_announcement_changed_from_chat_room(room_id, announcement, operator.as_ref())
        }
        E::AllowListAdded {
            room_id,
            members,
            operator,
            ..
        } => handler.on_allow_list_added_from_chat_room(room_id, members, operator.as_ref()),
        E::AllowListRemoved {
            room_id,
            members,
            operator,
            ..
        } => handler.on_allow_list_removed_from_chat_room(room_id, members, operator.as_ref()),
        E::AllMemberMuteStateChanged {
            room_id,
            is_all_muted,
            operator,
            ..
        } => handler.on_all_chat_room_member_mute_state_changed(
            room_id,
            *is_all_muted,
            operator.as_ref(),
        ),
        E::AdminAdded {
            room_id,
            admin,
            operator,
            ..
        } => handler.on_admin_added_from_chat_room(room_id, admin, operator.as_ref()),
        E::AdminRemoved {
            room_id,
            admin,
            operator,
            ..
        } => handler.on_admin_removed_from_chat_room(room_id, admin, operator.as_ref()),
        E::AttributesUpdated {
            room_id,
            attributes,
            from,
            ..
        } => handler.on_attributes_updated(room_id, attributes, from),
        E::AttributesRemoved {
            room_id,
            keys,
            from,
            ..
        } => handler.on_attributes_removed(room_id, keys, from),
        E::ChatRoomRecovered { room_id, last_seq } => {
            handler.on_chat_room_recovered(room_id, *last_seq)
        }
        E::SlowModeChanged {
            room_id,
            cooldown,
            operator,
            operator_reason,
        } => handler.on_slow_mode_changed(
            room_id,
            *cooldown,
            operator.as_ref(),
            operator_reason.as_deref(),
        ),
        E::FreezeChanged {
            room_id,
            frozen,
            until,
            operator,
            operator_reason,
        } => handler.on_chat_room_freeze_changed(
            room_id,
            *frozen,
            *until,
            operator.as_ref(),
            operator_reason.as_deref(),
        ),
        E::MessagePinned {
            room_id,
            msg_id,
            seq,
            operator,
            ..
        } => handler.on_message_pinned_from_chat_room(room_id, *msg_id, *seq, operator.as_ref()),
        E::MessageUnpinned {
            room_id,
            seq,
            operator,
            ..
        } => handler.on_message_unpinned_from_chat_room(room_id, *seq, operator.as_ref()),
        E::ShadowBanChanged {
            room_id,
            members,
            banned,
            operator,
            ..
        } => handler.on_shadow_ban_changed_from_chat_room(
            room_id,
            members,
            *banned,
            operator.as_ref(),
        ),
        E::HoldChanged {
            room_id,
            hold,
            operator,
            operator_reason,
        } => handler.on_hold_changed_from_chat_room(
            room_id,
            *hold,
            operator.as_ref(),
            operator_reason.as_deref(),
        ),
        // A message event in the SDK: `ChatEventHandler::on_messages_recalled` gets it.
        E::MessageRecalled { .. } => {}
        // The model's enum is `#[non_exhaustive]`; every variant it has today is above (the
        // `every_event_reaches_its_callback` test names each one).
        other => tracing::error!(event = ?other, "a room event without a handler method"),
    }
}

/// Receives messages (the SDK's `ChatEventHandler`), registered with
/// `ChatManager::add_event_handler(id, handler)`. Runs like [`ChatRoomEventHandler`]: on the
/// engine's callback threads, in each room's order.
#[allow(unused_variables)]
pub trait ChatEventHandler: Send + Sync + 'static {
    /// `onMessagesReceived`: new messages from the rooms this user is in (never its own), and the
    /// replay of a room's newest messages when it joins. Consecutive messages that were queued
    /// together arrive in one call, each room's in sequence order.
    fn on_messages_received(&self, messages: &[ChatMessage]) {}

    /// `onMessagesRecalled`: messages of `room_id` were recalled by their sender or deleted by
    /// the owner or an admin (`operator`); their bodies are gone (history and local copies
    /// show them recalled). The member who recalled them is not told.
    fn on_messages_recalled(
        &self,
        room_id: &RoomId,
        msg_ids: &[MessageId],
        operator: Option<&UserId>,
    ) {
    }

    /// roomcast's own: this client fell behind and `count` of its oldest queued events
    /// (messages or room events) were dropped. Fetch the rooms' history from the last sequence
    /// number seen to fill the gap.
    fn on_events_missed(&self, count: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use roomcast_model::{Limits, Room, RoomLimits, RoomSpec};

    #[derive(Default)]
    struct Names(Mutex<Vec<&'static str>>);

    impl Names {
        fn push(&self, name: &'static str) {
            self.0.lock().push(name);
        }
    }

    #[rustfmt::skip]
    impl ChatRoomEventHandler for Names {
        fn on_owner_changed_from_chat_room(&self, _: &RoomId, _: &UserId, _: &UserId, _: Option<&UserId>) { self.push("owner") }
        fn on_mute_list_added_from_chat_room(&self, _: &RoomId, _: &[UserId], _: Option<Timestamp>, _: Option<&UserId>) { self.push("muted") }
        fn on_mute_list_removed_from_chat_room(&self, _: &RoomId, _: &[UserId], _: Option<&UserId>) { self.push("unmuted") }
        fn on_chat_room_destroyed(&self, _: &RoomId, _: &str) { self.push("destroyed") }
        fn on_specification_changed(&self, _: &ChatRoom, _: Option<&UserId>) { self.push("spec") }
        fn on_member_joined_from_chat_room(&self, _: &RoomId, _: &UserId) { self.push("joined") }
        fn on_member_exited_from_chat_room(&self, _: &RoomId, _: &str, _: &UserId) { self.push("exited") }
        fn on_removed_from_chat_room(&self, _: &RoomId, _: &str, _: &UserId, _: LeaveReason, _: Option<&UserId>) { self.push("removed") }
        fn on_announcement_changed_from_chat_room(&self, _: &RoomId, _: &str, _: Option<&UserId>) { self.push("announcement") }
        fn on_allow_list_added_from_chat_room(&self, _: &RoomId, _: &[UserId], _: Option<&UserId>) { self.push("allowed") }
        fn on_allow_list_removed_from_chat_room(&self, _: &RoomId, _: &[UserId], _: Option<&UserId>) { self.push("disallowed") }
        fn on_all_chat_room_member_mute_state_changed(&self, _: &RoomId, _: bool, _: Option<&UserId>) { self.push("mute-all") }
        fn on_admin_added_from_chat_room(&self, _: &RoomId, _: &UserId, _: Option<&UserId>) { self.push("admin+") }
        fn on_admin_removed_from_chat_room(&self, _: &RoomId, _: &UserId, _: Option<&UserId>) { self.push("admin-") }
        fn on_attributes_updated(&self, _: &RoomId, _: &BTreeMap<String, String>, _: &UserId) { self.push("attrs+") }
        fn on_attributes_removed(&self, _: &RoomId, _: &[String], _: &UserId) { self.push("attrs-") }
        fn on_chat_room_recovered(&self, _: &RoomId, _: u64) { self.push("recovered") }
        fn on_slow_mode_changed(&self, _: &RoomId, _: Option<std::time::Duration>, _: Option<&UserId>, _: Option<&str>) { self.push("slow") }
        fn on_chat_room_freeze_changed(&self, _: &RoomId, _: bool, _: Option<Timestamp>, _: Option<&UserId>, _: Option<&str>) { self.push("freeze") }
        fn on_message_pinned_from_chat_room(&self, _: &RoomId, _: MessageId, _: u64, _: Option<&UserId>) { self.push("pinned") }
        fn on_message_unpinned_from_chat_room(&self, _: &RoomId, _: u64, _: Option<&UserId>) { self.push("unpinned") }
        fn on_shadow_ban_changed_from_chat_room(&self, _: &RoomId, _: &[UserId], _: bool, _: Option<&UserId>) { self.push("shadow ban") }
        fn on_hold_changed_from_chat_room(&self, _: &RoomId, _: Option<std::time::Duration>, _: Option<&UserId>, _: Option<&str>) { self.push("hold") }
    }

    /// `ChatRoomEvent` is `#[non_exhaustive]`, so `dispatch` has a `_` arm the compiler cannot
    /// check: this names every event and the one callback it must reach.
    #[test]
    fn every_event_reaches_its_callback() {
        use ChatRoomEvent as E;
        let room_id = RoomId::from_u64(1);
        let u = UserId::new("u").unwrap();
        let op = Some(u.clone());
        let spec = RoomSpec {
            name: "r".into(),
            description: String::new(),
            welcome_message: String::new(),
            max_users: 10,
        };
        let limits = RoomLimits::default();
        let room = Room::create(
            room_id,
            u.clone(),
            spec,
            limits,
            vec![],
            &Limits::default(),
            0,
        )
        .unwrap()
        .snapshot(None);
        let name = String::from("r");
        let cases: Vec<(ChatRoomEvent, &str)> = vec![
            (
                E::OwnerChanged {
                    operator_reason: None,
                    room_id,
                    new_owner: u.clone(),
                    old_owner: u.clone(),
                    operator: op.clone(),
                },
                "owner",
            ),
            (
                E::MuteListAdded {
                    operator_reason: None,
                    room_id,
                    members: vec![],
                    expire_time: None,
                    operator: op.clone(),
                },
                "muted",
            ),
            (
                E::MuteListRemoved {
                    operator_reason: None,
                    room_id,
                    members: vec![],
                    operator: op.clone(),
                },
                "unmuted",
            ),
            (
                E::ChatRoomDestroyed {
                    room_id,
                    room_name: name.clone(),
                },
                "destroyed",
            ),
            (
                E::SpecificationChanged {
                    operator_reason: None,
                    room: Box::new(room),
                    operator: op.clone(),
                },
                "spec",
            ),
            (
                E::MemberJoined {
                    room_id,
                    participant: u.clone(),
                },
                "joined",
            ),
            (
                E::MemberExited {
                    room_id,
                    room_name: name.clone(),
                    participant: u.clone(),
                },
                "exited",
            ),
            (
                E::RemovedFromChatRoom {
                    operator_reason: None,
                    room_id,
                    room_name: name,
                    participant: u.clone(),
                    reason: LeaveReason::Kicked,
                    operator: op.clone(),
                },
                "removed",
            ),
            (
                E::AnnouncementChanged {
                    operator_reason: None,
                    room_id,
                    announcement: String::new(),
                    operator: op.clone(),
                },
                "announcement",
            ),
            (
                E::AllowListAdded {
                    operator_reason: None,
                    room_id,
                    members: vec![],
                    operator: op.clone(),
                },
                "allowed",
            ),
            (
                E::AllowListRemoved {
                    operator_reason: None,
                    room_id,
                    members: vec![],
                    operator: op.clone(),
                },
                "disallowed",
            ),
            (
                E::AllMemberMuteStateChanged {
                    operator_reason: None,
                    room_id,
                    is_all_muted: true,
                    operator: op.clone(),
                },
                "mute-all",
            ),
            (
                E::AdminAdded {
                    operator_reason: None,
                    room_id,
                    admin: u.clone(),
                    operator: op.clone(),
                },
                "admin+",
            ),
            (
                E::AdminRemoved {
                    operator_reason: None,
                    room_id,
                    admin: u.clone(),
                    operator: op,
                },
                "admin-",
            ),
            (
                E::AttributesUpdated {
                    room_id,
                    attributes: BTreeMap::new(),
                    from: u.clone(),
                },
                "attrs+",
            ),
            (
                E::AttributesRemoved {
                    room_id,
                    keys: vec![],
                    from: u,
                },
                "attrs-",
            ),
            (
                E::ChatRoomRecovered {
                    room_id,
                    last_seq: 3,
                },
                "recovered",
            ),
            (
                E::SlowModeChanged {
                    room_id,
                    cooldown: None,
                    operator: None,
                    operator_reason: None,
                },
                "slow",
            ),
            (
                E::FreezeChanged {
                    room_id,
                    frozen: true,
                    until: None,
                    operator: None,
                    operator_reason: None,
                },
                "freeze",
            ),
            (
                E::MessagePinned {
                    room_id,
                    msg_id: MessageId::from_u64(9),
                    seq: 2,
                    operator: None,
                    operator_reason: None,
                },
                "pinned",
            ),
            (
                E::MessageUnpinned {
                    room_id,
                    seq: 2,
                    operator: None,
                    operator_reason: None,
                },
                "unpinned",
            ),
            (
                E::ShadowBanChanged {
                    room_id,
                    members: vec![UserId::new("v").unwrap()],
                    banned: true,
                    operator: None,
                    operator_reason: None,
                },
                "shadow ban",
            ),
            (
                E::HoldChanged {
                    room_id,
                    hold: Some(std::time::Duration::from_secs(10)),
                    operator: None,
                    operator_reason: None,
                },
                "hold",
            ),
        ];
        for (event, expected) in cases {
            let names = Names::default();
            dispatch(&names, &event);
            assert_eq!(*names.0.lock(), vec![expected], "{event:?}");
        }
        // A recall is a message event: the chat handlers' `on_messages_recalled` (the session
        // calls it), no room callback.
        let names = Names::default();
        dispatch(
            &names,
            &E::MessageRecalled {
                room_id,
                msg_id: MessageId::from_u64(9),
                seq: 2,
                from: UserId::new("u").unwrap(),
                operator: None,
                operator_reason: None,
            },
        );
        assert!(names.0.lock().is_empty());
    }
}
