//! The closed set of chat-room events: the source of truth for `ChatRoomEventHandler`.
//!
//! Each variant is one callback of the Agora SDK's `ChatRoomEventHandler`. The engine's handler
//! trait and its event stream are both derived from this enum, so an event cannot exist in one
//! and be missing from the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ChatRoom, MessageId, RoomId, Timestamp, UserId};

/// Why a member was removed from a room (the SDK's `LeaveReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LeaveReason {
    /// An owner or admin removed (kicked) or blocked the member.
    Kicked,
    /// The member was offline longer than the room's grace period.
    Offline,
    /// The room was destroyed.
    Destroyed,
}

/// One chat-room event, as delivered to a member's handlers and event stream.
///
/// `#[non_exhaustive]`: later versions add events (a `match` needs a `_` arm). A new event is a
/// new variant here and a new `ChatRoomEventHandler` method with a default body, so handlers
/// written today keep compiling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ChatRoomEvent {
    /// `onOwnerChangedFromChatRoom`: ownership moved from `old_owner` to `new_owner`.
    OwnerChanged {
        /// The room.
        room_id: RoomId,
        /// The new owner.
        new_owner: UserId,
        /// The previous owner, now a plain member.
        old_owner: UserId,
        /// Who did it (roomcast's own: Agora's callbacks lack it); `None` when the engine did
        /// (an expiry, an offline removal).
        operator: Option<UserId>,
        /// The reason the operator gave (up to 512 characters), if any: roomcast's own
        /// (Agora's callback has no such argument).
        operator_reason: Option<String>,
    },
    /// `onMuteListAddedFromChatRoom`: members were muted until `expire_time`.
    MuteListAdded {
        /// The room.
        room_id: RoomId,
        /// The members muted.
        members: Vec<UserId>,
        /// When the mute ends, in ms since the Unix epoch; `None`: never (until unmuted).
        expire_time: Option<Timestamp>,
        /// Who did it (roomcast's own: Agora's callbacks lack it); `None` when the engine did
        /// (an expiry, an offline removal).
        operator: Option<UserId>,
        /// The reason the operator gave (up to 512 characters), if any: roomcast's own
        /// (Agora's callback has no such argument).
        operator_reason: Option<String>,
    },
    /// `onMuteListRemovedFromChatRoom`: members were unmuted (by a call or by expiry).
    MuteListRemoved {
        /// The room.
        room_id: RoomId,
        /// The members unmuted.
        members: Vec<UserId>,
        /// Who did it (roomcast's own: Agora's callbacks lack it); `None` when the engine did
        /// (an expiry, an offline removal).
        operator: Option<UserId>,
        /// The reason the operator gave (up to 512 characters), if any: roomcast's own
        /// (Agora's callback has no such argument).
        operator_reason: Option<String>,
    },
    /// `onChatRoomDestroyed`: the owner destroyed the room; every member was removed.
    ChatRoomDestroyed {
        /// The room.
        room_id: RoomId,
        /// Its name when it was destroyed.
        room_name: String,
    },
    /// `onSpecificationChanged`: name, description, max members or the room's own limits
    /// changed; `room` is the room as it is now.
    SpecificationChanged {
        /// The room as it is now.
        room: Box<ChatRoom>,
        /// Who did it (roomcast's own: Agora's callbacks lack it); `None` when the engine did
        /// (an expiry, an offline removal).
        operator: Option<UserId>,
        /// The reason the operator gave (up to 512 characters), if any: roomcast's own
        /// (Agora's callback has no such argument).
        operator_reason: Option<String>,
    },
    /// `onMemberJoinedFromChatRoom`: `participant` joined.
    MemberJoined {
        /// The room.
        room_id: RoomId,
        /// Who joined.
        participant: UserId,
    },
    /// `onMemberExitedFromChatRoom`: `participant` left (by itself, kicked, blocked or offline).
    MemberExited {
        /// The room.
        room_id: RoomId,
        /// The room's name.
        room_name: String,
        /// Who left.
        participant: UserId,
    },
    /// `onRemovedFromChatRoom`: the receiving member itself was removed, for `reason`.
    RemovedFromChatRoom {
        /// The room.
        room_id: RoomId,
        /// The room's name.
        room_name: String,
        /// The member removed (the receiver).
        participant: UserId,
        /// Why.
        reason: LeaveReason,
        /// Who did it (roomcast's own: Agora's callbacks lack it); `None` when the engine did
        /// (an expiry, an offline removal).
        operator: Option<UserId>,
        /// The reason the operator gave (up to 512 characters), if any: roomcast's own
        /// (Agora's callback has no such argument).
        operator_reason: Option<String>,
    },
    /// `onAnnouncementChangedFromChatRoom`: the announcement is now `announcement`.
    AnnouncementChanged {
        /// The room.
        room_id: RoomId,
        /// The new announcement (empty when cleared).
        announcement: String,
        /// Who did it (roomcast's own: Agora's callbacks lack it); `None` when the engine did
        /// (an expiry, an offline removal).
        operator: Option<UserId>,
        /// The reason the operator gave (up to 512 characters), if any: roomcast's own
        /// (Agora's callback has no such argument).
        operator_reason: Option<String>,
    },
    /// `onAllowListAddedFromChatRoom`: members were added to the allow list.
    AllowListAdded {
        /// The room.
        room_id: RoomId,
        /// The members added.
        members: Vec<UserId>,
        /// Who did it (roomcast's own: Agora's callbacks lack it); `None` when the engine did
        /// (an expiry, an offline removal).
        operator: Option<UserId>,
        /// The reason the operator gave (up to 512 characters), if any: roomcast's own
        /// (Agora's callback has no such argument).
        operator_reason: Option<String>,
    },
    /// `onAllowListRemovedFromChatRoom`: members were removed from the allow list.
    AllowListRemoved {
        /// The room.
        room_id: RoomId,
        /// The members removed.
        members: Vec<UserId>,
        /// Who did it (roomcast's own: Agora's callbacks lack it); `None` when the engine did
        /// (an expiry, an offline removal).
        operator: Option<UserId>,
        /// The reason the operator gave (up to 512 characters), if any: roomcast's own
        /// (Agora's callback has no such argument).
        operator_reason: Option<String>,
    },
    /// `onAllChatRoomMemberMuteStateChanged`: mute-all was turned on or off.
    AllMemberMuteStateChanged {
        /// The room.
        room_id: RoomId,
        /// True if all members are now muted.
        is_all_muted: bool,
        /// Who did it (roomcast's own: Agora's callbacks lack it); `None` when the engine did
        /// (an expiry, an offline removal).
        operator: Option<UserId>,
        /// The reason the operator gave (up to 512 characters), if any: roomcast's own
        /// (Agora's callback has no such argument).
        operator_reason: Option<String>,
    },
    /// `onAdminAddedFromChatRoom`: `admin` became an admin.
    AdminAdded {
        /// The room.
        room_id: RoomId,
        /// The new admin.
        admin: UserId,
        /// Who did it (roomcast's own: Agora's callbacks lack it); `None` when the engine did
        /// (an expiry, an offline removal).
        operator: Option<UserId>,
        /// The reason the operator gave (up to 512 characters), if any: roomcast's own
        /// (Agora's callback has no such argument).
        operator_reason: Option<String>,
    },
    /// `onAdminRemovedFromChatRoom`: `admin` is no longer an admin.
    AdminRemoved {
        /// The room.
        room_id: RoomId,
        /// The former admin.
        admin: UserId,
        /// Who did it (roomcast's own: Agora's callbacks lack it); `None` when the engine did
        /// (an expiry, an offline removal).
        operator: Option<UserId>,
        /// The reason the operator gave (up to 512 characters), if any: roomcast's own
        /// (Agora's callback has no such argument).
        operator_reason: Option<String>,
    },
    /// `onAttributesUpdated`: custom attributes were set by `from`.
    AttributesUpdated {
        /// The room.
        room_id: RoomId,
        /// The keys set and their new values.
        attributes: BTreeMap<String, String>,
        /// Who set them.
        from: UserId,
    },
    /// roomcast's own: the room was restarted after its actor failed (see
    /// [`ChatRoomEvent::is_recovery`]).
    ChatRoomRecovered {
        /// The room.
        room_id: RoomId,
        /// The last message's sequence number in the room's history.
        last_seq: u64,
    },
    /// `onAttributesRemoved`: custom attributes were removed by `from`.
    AttributesRemoved {
        /// The room.
        room_id: RoomId,
        /// The keys removed.
        keys: Vec<String>,
        /// Who removed them.
        from: UserId,
    },
    /// roomcast's own (Twitch's slow mode): slow mode was turned on with this cooldown, or off.
    SlowModeChanged {
        /// The room.
        room_id: RoomId,
        /// The cooldown per member; `None`: off.
        cooldown: Option<std::time::Duration>,
        /// Who changed it.
        operator: Option<UserId>,
        /// The reason the operator gave (up to 512 characters), if any.
        operator_reason: Option<String>,
    },
    /// roomcast's own (Sendbird's freeze): the room was frozen (only the owner and admins may
    /// send) until `until` (`None`: until unfrozen), or unfrozen (`frozen` false; by the engine,
    /// with no operator, when a timed freeze ends).
    FreezeChanged {
        /// The room.
        room_id: RoomId,
        /// True if the room is frozen now.
        frozen: bool,
        /// When the freeze ends by itself (engine clock), if it does.
        until: Option<Timestamp>,
        /// Who changed it; `None` for the engine.
        operator: Option<UserId>,
        /// The reason the operator gave (up to 512 characters), if any.
        operator_reason: Option<String>,
    },
    /// The SDK's `ChatEventHandler::onMessagesRecalled`: a message was recalled by its sender
    /// or deleted by the owner or an admin; its body is gone (history and local copies show it
    /// recalled). Chat handlers get it as `on_messages_recalled`.
    MessageRecalled {
        /// The room.
        room_id: RoomId,
        /// The message's id.
        msg_id: MessageId,
        /// Its sequence number.
        seq: u64,
        /// Its sender.
        from: UserId,
        /// Who recalled it: the sender, or the owner or admin who deleted it.
        operator: Option<UserId>,
        /// The reason the operator gave (a deletion through `ChatRoomManager::with_reason`).
        operator_reason: Option<String>,
    },
    /// A message was pinned (Agora's pinned messages; roomcast's own event).
    MessagePinned {
        /// The room.
        room_id: RoomId,
        /// The message's id.
        msg_id: MessageId,
        /// Its sequence number.
        seq: u64,
        /// Who pinned it.
        operator: Option<UserId>,
        /// The reason the operator gave, if any.
        operator_reason: Option<String>,
    },
    /// A message was unpinned: by the owner or an admin, or because it was recalled.
    MessageUnpinned {
        /// The room.
        room_id: RoomId,
        /// The message's sequence number.
        seq: u64,
        /// Who unpinned it (or recalled it).
        operator: Option<UserId>,
        /// The reason the operator gave, if any.
        operator_reason: Option<String>,
    },
    /// Members were shadow-banned (`banned`) or their shadow ban was lifted (Stream's shadow
    /// ban; roomcast's own event). Only the owner and admins get it: the targets are never
    /// told.
    ShadowBanChanged {
        /// The room.
        room_id: RoomId,
        /// Whose shadow ban changed.
        members: Vec<UserId>,
        /// True if they were shadow-banned, false if it was lifted.
        banned: bool,
        /// Who did it.
        operator: Option<UserId>,
        /// The reason the operator gave, if any.
        operator_reason: Option<String>,
    },
    /// roomcast's own (Twitch's chat delay): hold for review was turned on with this hold, or
    /// off. To every member but the operator.
    HoldChanged {
        /// The room.
        room_id: RoomId,
        /// How long messages of members who are not staff are held; `None`: off.
        hold: Option<std::time::Duration>,
        /// Who changed it.
        operator: Option<UserId>,
        /// The reason the operator gave, if any.
        operator_reason: Option<String>,
    },
}

impl ChatRoomEvent {
    /// The reason the operator of a moderation event gave, if any (see
    /// `ChatRoomManager::with_reason`).
    pub fn operator_reason(&self) -> Option<&str> {
        match self {
            ChatRoomEvent::OwnerChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::MuteListAdded {
                operator_reason, ..
            }
            | ChatRoomEvent::MuteListRemoved {
                operator_reason, ..
            }
            | ChatRoomEvent::RemovedFromChatRoom {
                operator_reason, ..
            }
            | ChatRoomEvent::AllMemberMuteStateChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::AllowListAdded {
                operator_reason, ..
            }
            | ChatRoomEvent::AllowListRemoved {
                operator_reason, ..
            }
            | ChatRoomEvent::AdminAdded {
                operator_reason, ..
            }
            | ChatRoomEvent::AdminRemoved {
                operator_reason, ..
            }
            | ChatRoomEvent::AnnouncementChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::SpecificationChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::SlowModeChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::FreezeChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::MessageRecalled {
                operator_reason, ..
            }
            | ChatRoomEvent::MessagePinned {
                operator_reason, ..
            }
            | ChatRoomEvent::MessageUnpinned {
                operator_reason, ..
            }
            | ChatRoomEvent::ShadowBanChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::HoldChanged {
                operator_reason, ..
            } => operator_reason.as_deref(),
            _ => None,
        }
    }

    /// Sets the reason of a moderation event (other events have none).
    pub(crate) fn set_operator_reason(&mut self, given: Option<String>) {
        match self {
            ChatRoomEvent::OwnerChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::MuteListAdded {
                operator_reason, ..
            }
            | ChatRoomEvent::MuteListRemoved {
                operator_reason, ..
            }
            | ChatRoomEvent::RemovedFromChatRoom {
                operator_reason, ..
            }
            | ChatRoomEvent::AllMemberMuteStateChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::AllowListAdded {
                operator_reason, ..
            }
            | ChatRoomEvent::AllowListRemoved {
                operator_reason, ..
            }
            | ChatRoomEvent::AdminAdded {
                operator_reason, ..
            }
            | ChatRoomEvent::AdminRemoved {
                operator_reason, ..
            }
            | ChatRoomEvent::AnnouncementChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::SpecificationChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::SlowModeChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::FreezeChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::MessageRecalled {
                operator_reason, ..
            }
            | ChatRoomEvent::MessagePinned {
                operator_reason, ..
            }
            | ChatRoomEvent::MessageUnpinned {
                operator_reason, ..
            }
            | ChatRoomEvent::ShadowBanChanged {
                operator_reason, ..
            }
            | ChatRoomEvent::HoldChanged {
                operator_reason, ..
            } => *operator_reason = given,
            _ => {}
        }
    }

    /// The room's actor was restarted after a failure (roomcast's own; Agora has no such event).
    /// Members stay members; messages up to `last_seq` are in history, so a member that saw an
    /// earlier sequence number last can fetch the rest.
    pub fn is_recovery(&self) -> bool {
        matches!(self, ChatRoomEvent::ChatRoomRecovered { .. })
    }

    /// The room the event is about.
    pub fn room_id(&self) -> RoomId {
        match self {
            ChatRoomEvent::OwnerChanged { room_id, .. }
            | ChatRoomEvent::MuteListAdded { room_id, .. }
            | ChatRoomEvent::MuteListRemoved { room_id, .. }
            | ChatRoomEvent::ChatRoomDestroyed { room_id, .. }
            | ChatRoomEvent::MemberJoined { room_id, .. }
            | ChatRoomEvent::MemberExited { room_id, .. }
            | ChatRoomEvent::RemovedFromChatRoom { room_id, .. }
            | ChatRoomEvent::AnnouncementChanged { room_id, .. }
            | ChatRoomEvent::AllowListAdded { room_id, .. }
            | ChatRoomEvent::AllowListRemoved { room_id, .. }
            | ChatRoomEvent::AllMemberMuteStateChanged { room_id, .. }
            | ChatRoomEvent::AdminAdded { room_id, .. }
            | ChatRoomEvent::AdminRemoved { room_id, .. }
            | ChatRoomEvent::AttributesUpdated { room_id, .. }
            | ChatRoomEvent::AttributesRemoved { room_id, .. }
            | ChatRoomEvent::ChatRoomRecovered { room_id, .. }
            | ChatRoomEvent::SlowModeChanged { room_id, .. }
            | ChatRoomEvent::FreezeChanged { room_id, .. }
            | ChatRoomEvent::MessageRecalled { room_id, .. }
            | ChatRoomEvent::MessagePinned { room_id, .. }
            | ChatRoomEvent::MessageUnpinned { room_id, .. }
            | ChatRoomEvent::ShadowBanChanged { room_id, .. }
            | ChatRoomEvent::HoldChanged { room_id, .. } => *room_id,
            ChatRoomEvent::SpecificationChanged { room, .. } => room.room_id,
        }
    }
}

/// Who receives an event. Resolved by the engine against the room's membership *after* the
/// command was applied, so a member who just joined is in it and one who just left is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every member of the room except these (the member who acted, and the one it acted on
    /// when that one is told apart): at most two.
    MembersExcept(Vec<UserId>),
    /// Every member of the room.
    Members,
    /// The owner and the admins who are in the room, except these (at most two, as above).
    StaffExcept(Vec<UserId>),
    /// Those of these users who are in the room.
    MembersAmong(Vec<UserId>),
    /// Exactly these users (who need not still be members: a removed member is told so).
    Users(Vec<UserId>),
}

/// An event and its audience, produced by [`crate::Room::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Who receives it.
    pub to: Audience,
    /// What they receive.
    pub event: ChatRoomEvent,
}
