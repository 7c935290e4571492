//! What nodes say to each other: calls forwarded to a room's owner and their answers (node to
//! node, request and reply), and each room's deliveries (published once by the owner on the
//! room's subject, fanned out by every node with members in it). Frames are records of the
//! store's codec (a versioned, checksummed envelope), kind `ClusterFrame`.

use std::sync::Arc;

use roomcast_model::{
    AttributeFailures, AuditEntry, ChatCursorResult, ChatError, ChatMessage, ChatRoom,
    ChatRoomEvent, Command, HistoryQuery, OutgoingMessage, RoomId, Timestamp, UserId,
};
use roomcast_store::codec::{self, RecordKind};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{ClientEvent, QueryAnswer, RoomQuery, RoomStats};

/// One entry of a room's log (`S`: `&[u8]` to write, `Vec<u8>` to read; the same bytes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum LogFrame<S> {
    /// Write sets, in order (those queued together: group commit).
    Sets(Vec<S>),
    /// Part `part` (from 0) of `parts` of snapshot `id` of the room
    /// (`roomcast_store::WriteSet::snapshot`): once every part is in the log, the entries
    /// before the first are redundant. A snapshot whose parts did not all make it (its writer
    /// died) is ignored.
    Snapshot {
        id: u64,
        part: u32,
        parts: u32,
        set: S,
    },
}

/// What the nodes where one user has sessions (its devices) tell each other, on the user's
/// subject.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum UserNotice {
    /// A session of the user opened on the sending node: the others say which rooms it is in.
    Hello,
    /// The user is in these rooms (it just joined them through the sending node, or that
    /// node's session is in them): a session of it elsewhere gets their deliveries too.
    In(Vec<RoomId>),
}

/// A call for a room, sent to the node that owns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Call {
    /// `user`, whose session is on node `node`, joins.
    Join {
        room: RoomId,
        user: UserId,
        node: String,
        /// Its local copy is kept after it leaves (`delete_messages_on_exit` is off).
        keeps_copy: bool,
        /// Offline since then (`None`: online).
        offline_since: Option<Timestamp>,
        /// Only if a member already, through a session on another node (the user's other
        /// device): `NotJoined` if not.
        #[serde(default)]
        attach: bool,
    },
    Leave {
        room: RoomId,
        user: UserId,
        owner_may_leave: bool,
    },
    Send {
        from: UserId,
        message: OutgoingMessage,
    },
    Apply {
        room: RoomId,
        command: Command,
    },
    Recall {
        room: RoomId,
        by: UserId,
        seq: u64,
        reason: Option<String>,
        as_moderator: bool,
    },
    Pin {
        room: RoomId,
        by: UserId,
        seq: u64,
        reason: Option<String>,
    },
    History {
        room: RoomId,
        viewer: UserId,
        query: HistoryQuery,
    },
    AuditLog {
        room: RoomId,
        viewer: UserId,
        before: Option<u64>,
        page_size: u32,
    },
    Query {
        room: RoomId,
        viewer: UserId,
        query: RoomQuery,
    },
    Info {
        room: RoomId,
        viewer: UserId,
    },
    Stats {
        room: RoomId,
    },
    Destroy {
        room: RoomId,
        user: UserId,
    },
    LocalMessages {
        room: RoomId,
        user: UserId,
        before: Option<u64>,
        count: usize,
        /// Where the caller's current membership's span starts (a copy deleted on exit).
        current: Option<u64>,
    },
    /// Is this node there? (The owner of rooms with members on it asks.)
    Ping,
    /// A super admin's broadcast, to this room.
    Broadcast {
        room: RoomId,
        from: UserId,
        message: OutgoingMessage,
    },
    /// The presence of `user`'s session on `node` (a member of the room) changed.
    Presence {
        room: RoomId,
        user: UserId,
        node: String,
        offline_since: Option<Timestamp>,
    },
    /// A room changed owners: node `node` still has these members in it, each with its
    /// presence there and the mark at which the room last confirmed it (`Session::room_mark`).
    Rejoin {
        room: RoomId,
        node: String,
        members: Vec<RejoiningMember>,
    },
}

impl Call {
    /// The room the call is for.
    pub(crate) fn room(&self) -> RoomId {
        match self {
            Call::Ping => RoomId::from_u64(0),
            Call::Send { message, .. } => message.room_id,
            Call::Join { room, .. }
            | Call::Leave { room, .. }
            | Call::Apply { room, .. }
            | Call::Recall { room, .. }
            | Call::Pin { room, .. }
            | Call::History { room, .. }
            | Call::AuditLog { room, .. }
            | Call::Query { room, .. }
            | Call::Info { room, .. }
            | Call::Stats { room }
            | Call::Destroy { room, .. }
            | Call::LocalMessages { room, .. }
            | Call::Presence { room, .. }
            | Call::Rejoin { room, .. }
            | Call::Broadcast { room, .. } => *room,
        }
    }
}

/// A member a node reports after a change of owners (see [`Call::Rejoin`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RejoiningMember {
    pub(crate) user: UserId,
    /// `None`: online there.
    pub(crate) offline_since: Option<Timestamp>,
    /// Where the room last confirmed it (`None`: never).
    pub(crate) mark: Option<(u64, u64)>,
    /// Its local copy of the room: where it starts (`None`: not known there), and whether it
    /// is kept after leaving (`ChatOptions::delete_messages_on_exit` false): a new owner closes
    /// the copy the member's join opened, as the owner that let it in would have.
    pub(crate) copy: (Option<u64>, bool),
}

/// A call's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Answer {
    Unit,
    Joined {
        room: ChatRoom,
        copy_from: u64,
        /// Where the room stands among its membership changes (`Session::room_mark`).
        mark: (u64, u64),
    },
    Room(ChatRoom),
    Message(ChatMessage),
    Failures(AttributeFailures),
    History(ChatCursorResult<ChatMessage>),
    /// The first part of a history page too big for one NATS message: the caller asks for the
    /// rest from its cursor.
    HistoryPart(ChatCursorResult<ChatMessage>),
    Audit(ChatCursorResult<AuditEntry>),
    Query(QueryAnswer),
    Stats(RoomStats),
    Messages(Vec<ChatMessage>),
}

/// The reply frame: the answer, or the call's error.
pub(crate) type Reply = Result<Answer, ChatError>;

fn unexpected(answer: Answer) -> ChatError {
    ChatError::General(format!("a node answered with {answer:?}"))
}

impl Answer {
    pub(crate) fn unit(self) -> Result<(), ChatError> {
        match self {
            Answer::Unit => Ok(()),
            other => Err(unexpected(other)),
        }
    }
    pub(crate) fn room(self) -> Result<ChatRoom, ChatError> {
        match self {
            Answer::Room(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }
    pub(crate) fn message(self) -> Result<ChatMessage, ChatError> {
        match self {
            Answer::Message(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }
    pub(crate) fn failures(self) -> Result<AttributeFailures, ChatError> {
        match self {
            Answer::Failures(f) => Ok(f),
            other => Err(unexpected(other)),
        }
    }
    pub(crate) fn history(self) -> Result<ChatCursorResult<ChatMessage>, ChatError> {
        match self {
            Answer::History(h) => Ok(h),
            other => Err(unexpected(other)),
        }
    }
    pub(crate) fn audit(self) -> Result<ChatCursorResult<AuditEntry>, ChatError> {
        match self {
            Answer::Audit(a) => Ok(a),
            other => Err(unexpected(other)),
        }
    }
    pub(crate) fn query(self) -> Result<QueryAnswer, ChatError> {
        match self {
            Answer::Query(q) => Ok(q),
            other => Err(unexpected(other)),
        }
    }
    pub(crate) fn stats(self) -> Result<RoomStats, ChatError> {
        match self {
            Answer::Stats(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }
    pub(crate) fn messages(self) -> Result<Vec<ChatMessage>, ChatError> {
        match self {
            Answer::Messages(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }
}

/// One item delivered to members.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Item {
    Message(ChatMessage),
    Event(ChatRoomEvent),
}

impl Item {
    pub(crate) fn into_event(self) -> ClientEvent {
        match self {
            Item::Message(m) => ClientEvent::Message(m),
            Item::Event(e) => ClientEvent::Room(Arc::new(e)),
        }
    }
}

/// What a room's owner publishes for the other nodes, in the room's order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Delivery {
    /// `user`'s session on `node` is a member now: its node delivers the room's broadcasts to
    /// it from here on.
    Joined {
        user: UserId,
        node: String,
        /// Where the room stands among its membership changes (`Session::room_mark`).
        mark: (u64, u64),
    },
    /// These users are no longer members (their sessions on `node` only, if given: a node
    /// that reported members who were not, after a change of owners or an outage).
    Left {
        users: Vec<UserId>,
        node: Option<String>,
    },
    /// To every member but `except`.
    Broadcast { item: Item, except: Vec<UserId> },
    /// To these users (on `node` only, if given), members or not (a removed member hears of
    /// its removal).
    To {
        users: Vec<UserId>,
        node: Option<String>,
        items: Vec<Item>,
    },
    /// The join replay of `user`'s session on `node`, right after its `Joined`: delivered only
    /// if that `Joined` is what made the session a member there (a session already fed with
    /// the room live has these, or newer).
    Replay {
        user: UserId,
        node: String,
        items: Vec<Item>,
        /// More parts of it follow (a replay too big for one NATS message): the node delivers
        /// the whole replay at once, with its last part.
        more: bool,
    },
    /// Node `node` owns the room now (it took it over): the other nodes tell it who of theirs
    /// is in the room.
    Owner { node: String },
    /// The room was destroyed.
    Destroyed,
}

/// Encodes a frame.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ChatError> {
    codec::encode(RecordKind::ClusterFrame, value).map_err(crate::storage_error)
}

/// Decodes a frame.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ChatError> {
    codec::decode(RecordKind::ClusterFrame, bytes).map_err(crate::storage_error)
}
