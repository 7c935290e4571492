//! The wire protocol (version [`PROTOCOL_VERSION`]): JSON text frames, one object per frame.
//! `docs/protocol.md` gives every frame with an example; these types are its source of truth.
//!
//! A client sends [`ClientFrame`]s (an `op`, its fields, and an optional `id` that the answer
//! echoes); the server sends [`ServerFrame`]s (a `type`). Every request gets exactly one
//! answer, a `reply` or an `error`, in the order the requests were sent. Messages and events
//! are pushed for the rooms joined (or created) on the connection.

use roomcast::{ChatMessage, ChatRoom, ChatRoomEvent, MessageBody, MessagePriority};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The protocol version this gateway speaks, announced in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// WebSocket close codes the gateway uses. Each close also carries a short reason text.
pub mod close {
    /// The client closed, or logged out.
    pub const NORMAL: u16 = 1000;
    /// The gateway or its engine is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (an unexpected continuation frame, say).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// A frame above the transport limit (`GatewayConfig::transport_max_frame`). Frames above
    /// `max_frame` but under the transport limit get an error (510) and the connection stays.
    pub const TOO_BIG: u16 = 1009;
    /// The gateway failed (a bug): the reason says what.
    pub const INTERNAL: u16 = 1011;
    /// The gateway holds `GatewayConfig::max_connections` connections already.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The credentials were refused (bad or expired token, unknown user, or a super admin's
    /// name in insecure mode).
    pub const AUTH_FAILED: u16 = 4001;
    /// No successful login within `GatewayConfig::login_timeout` of connecting.
    pub const LOGIN_TIMEOUT: u16 = 4002;
    /// Nothing received (no frame, no pong) for `GatewayConfig::idle_timeout`.
    pub const IDLE_TIMEOUT: u16 = 4008;
    /// The client did not read: one write waited `GatewayConfig::write_timeout`.
    pub const SLOW_READER: u16 = 4009;
    /// The user holds `GatewayConfig::max_connections_per_user` connections already.
    pub const TOO_MANY_FOR_USER: u16 = 4029;
}

/// A frame from the client: a request and the optional id its answer echoes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFrame {
    /// Echoed in the answer's `id`, so that a client can match answers to requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

impl ClientFrame {
    /// A frame with this id.
    pub fn new(id: u64, request: Request) -> ClientFrame {
        ClientFrame {
            id: Some(id),
            request,
        }
    }
}

/// A message's priority on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Dropped first under overload.
    Low,
    /// The default.
    Normal,
    /// Dropped last.
    High,
}

impl From<Priority> for MessagePriority {
    fn from(p: Priority) -> MessagePriority {
        match p {
            Priority::Low => MessagePriority::Low,
            Priority::Normal => MessagePriority::Normal,
            Priority::High => MessagePriority::High,
        }
    }
}

impl From<MessagePriority> for Priority {
    fn from(p: MessagePriority) -> Priority {
        match p {
            MessagePriority::Low => Priority::Low,
            MessagePriority::High => Priority::High,
            _ => Priority::Normal,
        }
    }
}

/// A request (the `op` field names it). Rooms are given by id (`room`), users by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Log in: with a `token` (the gateway's authenticator checks it), or with a `user` id
    /// where the gateway runs in insecure demo mode. Once per connection.
    Login {
        /// A token issued by the embedding service.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// A user id (insecure demo mode only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// Log out and close the connection (close code 1000).
    Logout,
    /// Answered with `reply` (op `ping`): an application-level heartbeat for clients that
    /// cannot send WebSocket pings (browsers).
    Ping,
    /// A page of the public room list, newest first (`page` from 1, `size` 1 to 1,000).
    Rooms {
        /// Page number, from 1 (default 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page: Option<u32>,
        /// Page size (default 20).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u32>,
        /// Only rooms whose name contains this (case-insensitive).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<String>,
    },
    /// Create a room (super admins only); the creator owns it and is in it.
    Create {
        /// The room's name.
        name: String,
        /// The room's description.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// The most members it takes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_users: Option<u32>,
    },
    /// Destroy a room (its owner only).
    Destroy {
        /// The room.
        room: String,
    },
    /// Join a room (a member already in it, after a reconnect within the grace period or from
    /// a second tab, gets `already: true`). The reply comes first, then history as `message`
    /// frames marked `history: true`: the messages after `since` if given (resume after a
    /// reconnect: nothing is sent twice on this connection), else the newest
    /// `GatewayConfig::history_on_join`.
    Join {
        /// The room.
        room: String,
        /// The last sequence number this client saw in the room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: String,
    },
    /// Send a text message; the reply carries its `seq`, `msg_id` and `time`.
    Send {
        /// The room.
        room: String,
        /// The text.
        text: String,
        /// Its priority (default normal).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        priority: Option<Priority>,
        /// An idempotency key: a retry with the same key in the same room within 5 minutes
        /// answers the first send's `seq`, `msg_id` and `time` and sends nothing again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// A page of history, newest first: before `before` if given, else the newest; or after
    /// `after` (oldest first), to fill a gap.
    History {
        /// The room.
        room: String,
        /// Messages older than this sequence number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        /// Messages newer than this sequence number, oldest first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        /// At most this many (default 20, at most 200).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u32>,
    },
    /// The room's info (name, description, announcement, owner, admins, counts, mute-all).
    Info {
        /// The room.
        room: String,
    },
    /// A page of the member list (owner and admins).
    Members {
        /// The room.
        room: String,
        /// The cursor of the previous page's reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<u64>,
        /// Page size (default 100).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u32>,
    },
    /// Mute members, for `seconds` or until unmuted.
    Mute {
        /// The room.
        room: String,
        /// The members.
        users: Vec<String>,
        /// How long; absent: until unmuted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        /// A reason for the act (at most 512 characters), carried by its events and the room's
        /// audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Unmute members.
    Unmute {
        /// The room.
        room: String,
        /// The members.
        users: Vec<String>,
        /// A reason for the act (at most 512 characters), carried by its events and the room's
        /// audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Remove members from the room.
    Kick {
        /// The room.
        room: String,
        /// The members.
        users: Vec<String>,
        /// They may not join again for this many seconds (a timeout).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ban_seconds: Option<u64>,
        /// A reason for the act (at most 512 characters), carried by its events and the room's
        /// audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Slow mode: one message per `seconds` (1 to 120) per member who is not exempt; no
    /// `seconds` turns it off.
    SlowMode {
        /// The room.
        room: String,
        /// The cooldown.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        /// A reason for the act (at most 512 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Freeze the room for `seconds`, or until unfrozen: only the owner and admins may send.
    Freeze {
        /// The room.
        room: String,
        /// How long; absent: until unfrozen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        /// A reason for the act (at most 512 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// End a freeze.
    Unfreeze {
        /// The room.
        room: String,
        /// A reason for the act (at most 512 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Hold for review (Twitch's chat delay): messages of members who are not staff reach the
    /// owner and admins at once (marked `held_until`) and everyone else after `seconds` (1 to
    /// 60); no `seconds` turns it off (what is held still waits until its time).
    Hold {
        /// The room.
        room: String,
        /// How long messages are held.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        /// A reason for the act (at most 512 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Recall one's own message (within the recall window, 504 past it).
    Recall {
        /// The room.
        room: String,
        /// The message's sequence number.
        seq: u64,
    },
    /// Delete anyone's message (owner and admins); a message still held for review is then
    /// never delivered to the members who are not staff.
    Delete {
        /// The room.
        room: String,
        /// The message's sequence number.
        seq: u64,
        /// A reason for the act (at most 512 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Pin a message (owner and admins).
    Pin {
        /// The room.
        room: String,
        /// The message's sequence number.
        seq: u64,
        /// A reason for the act (at most 512 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Unpin a message (owner and admins).
    Unpin {
        /// The room.
        room: String,
        /// The message's sequence number.
        seq: u64,
        /// A reason for the act (at most 512 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Shadow-ban members (owner and admins): their messages reach only themselves and, marked,
    /// the owner and admins.
    ShadowBan {
        /// The room.
        room: String,
        /// The members.
        users: Vec<String>,
        /// A reason for the act (at most 512 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Lift shadow bans.
    Unshadow {
        /// The room.
        room: String,
        /// The members.
        users: Vec<String>,
        /// A reason for the act (at most 512 characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Put users on the block list (removing them from the room).
    Block {
        /// The room.
        room: String,
        /// The users.
        users: Vec<String>,
        /// How long (a timed block, which ends by itself); absent: until unblocked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seconds: Option<u64>,
        /// A reason for the act (at most 512 characters), carried by its events and the room's
        /// audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Take users off the block list.
    Unblock {
        /// The room.
        room: String,
        /// The users.
        users: Vec<String>,
        /// A reason for the act (at most 512 characters), carried by its events and the room's
        /// audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Mute every member but the owner, admins and the allow list.
    MuteAll {
        /// The room.
        room: String,
        /// A reason for the act (at most 512 characters), carried by its events and the room's
        /// audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// End mute-all.
    UnmuteAll {
        /// The room.
        room: String,
        /// A reason for the act (at most 512 characters), carried by its events and the room's
        /// audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Set the announcement.
    Announce {
        /// The room.
        room: String,
        /// The announcement.
        text: String,
        /// A reason for the act (at most 512 characters), carried by its events and the room's
        /// audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Make a member an admin (owner only).
    AddAdmin {
        /// The room.
        room: String,
        /// The member.
        user: String,
        /// A reason for the act (at most 512 characters), carried by its events and the room's
        /// audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Take a member's admin role (owner only).
    RemoveAdmin {
        /// The room.
        room: String,
        /// The admin.
        user: String,
        /// A reason for the act (at most 512 characters), carried by its events and the room's
        /// audit log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A page of the mute list.
    MuteList {
        /// The room.
        room: String,
        /// Page number from 1 (default 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page: Option<u32>,
        /// Page size (default 100).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u32>,
    },
    /// A page of the block list.
    BlockList {
        /// The room.
        room: String,
        /// Page number from 1 (default 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page: Option<u32>,
        /// Page size (default 100).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u32>,
    },
}

impl Request {
    /// The request's `op`, as on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Login { .. } => "login",
            Request::Logout => "logout",
            Request::Ping => "ping",
            Request::Rooms { .. } => "rooms",
            Request::Create { .. } => "create",
            Request::Destroy { .. } => "destroy",
            Request::Join { .. } => "join",
            Request::Leave { .. } => "leave",
            Request::Send { .. } => "send",
            Request::History { .. } => "history",
            Request::Info { .. } => "info",
            Request::Members { .. } => "members",
            Request::Mute { .. } => "mute",
            Request::Unmute { .. } => "unmute",
            Request::Kick { .. } => "kick",
            Request::SlowMode { .. } => "slow_mode",
            Request::Freeze { .. } => "freeze",
            Request::Unfreeze { .. } => "unfreeze",
            Request::Hold { .. } => "hold",
            Request::Recall { .. } => "recall",
            Request::Delete { .. } => "delete",
            Request::Pin { .. } => "pin",
            Request::Unpin { .. } => "unpin",
            Request::ShadowBan { .. } => "shadow_ban",
            Request::Unshadow { .. } => "unshadow",
            Request::Block { .. } => "block",
            Request::Unblock { .. } => "unblock",
            Request::MuteAll { .. } => "mute_all",
            Request::UnmuteAll { .. } => "unmute_all",
            Request::Announce { .. } => "announce",
            Request::AddAdmin { .. } => "add_admin",
            Request::RemoveAdmin { .. } => "remove_admin",
            Request::MuteList { .. } => "mute_list",
            Request::BlockList { .. } => "block_list",
        }
    }
}

/// A message as the protocol carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireMessage {
    /// The room.
    pub room: String,
    /// The message's id.
    pub msg_id: String,
    /// The sender.
    pub from: String,
    /// The room's sequence number of the message: 1, 2, 3... per room, no gaps.
    pub seq: u64,
    /// When the engine accepted it (ms since the Unix epoch, on the engine's clock).
    pub time: i64,
    /// The text (for a custom message: its event name in brackets).
    pub text: String,
    /// A custom message's event and parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Value>,
    /// Its priority.
    pub priority: Priority,
    /// True for messages sent from history (on join or resume), false for live ones.
    pub history: bool,
    /// True for a shadow-banned member's message, which only the owner and admins receive
    /// (absent otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadowed: bool,
    /// For the owner and admins: a message held for review until then (ms since the Unix
    /// epoch, engine clock); the members who are not staff receive it then (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_until: Option<i64>,
}

impl WireMessage {
    /// The wire form of an engine message.
    pub fn new(m: &ChatMessage, history: bool) -> WireMessage {
        let (text, custom) = match m.body() {
            MessageBody::Text { content } => (content.clone(), None),
            MessageBody::Custom { event, params } => (
                format!("[{event}]"),
                Some(serde_json::json!({"event": event, "params": params})),
            ),
        };
        WireMessage {
            room: m.room_id().to_string(),
            msg_id: m.msg_id().to_string(),
            from: m.from().to_string(),
            seq: m.seq(),
            time: m.server_time(),
            text,
            custom,
            priority: m.priority().into(),
            history,
            shadowed: m.is_shadowed(),
            held_until: m.held_until(),
        }
    }
}

/// A room's info as the protocol carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireRoom {
    /// The room's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its owner.
    pub owner: String,
    /// Its admins.
    pub admins: Vec<String>,
    /// Its announcement.
    pub announcement: String,
    /// Members now.
    pub members: u32,
    /// The most members it takes.
    pub max_users: u32,
    /// Mute-all is on.
    pub all_muted: bool,
    /// Slow mode's cooldown in seconds, if on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_mode_secs: Option<u64>,
    /// The room is frozen (only the owner and admins may send).
    #[serde(default)]
    pub frozen: bool,
    /// When the freeze ends (ms since the epoch), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen_until: Option<i64>,
    /// Hold for review in seconds, if on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_secs: Option<u64>,
    /// The pinned messages' sequence numbers, oldest pin first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned: Vec<u64>,
}

impl From<&ChatRoom> for WireRoom {
    fn from(r: &ChatRoom) -> WireRoom {
        WireRoom {
            id: r.room_id.to_string(),
            name: r.name.clone(),
            description: r.description.clone(),
            owner: r.owner.to_string(),
            admins: r.admin_list.iter().map(|a| a.to_string()).collect(),
            announcement: r.announcement.clone(),
            members: r.member_count,
            max_users: r.max_users,
            all_muted: r.is_all_member_muted,
            slow_mode_secs: r.slow_mode.map(|d| d.as_secs()),
            frozen: r.frozen,
            frozen_until: r.frozen_until,
            hold_secs: r.hold.map(|d| d.as_secs()),
            pinned: r.pinned_messages.iter().map(|p| p.seq).collect(),
        }
    }
}

/// A frame from the server (the `type` field names it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerFrame {
    /// The first frame of every connection: what this gateway speaks and expects.
    Hello {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// Text frames above this many bytes are refused with an error (510).
        max_frame: usize,
        /// The gateway pings this often.
        heartbeat_ms: u64,
        /// The gateway closes (4008) a connection it has heard nothing from for this long.
        idle_timeout_ms: u64,
        /// The gateway closes (4002) a connection not logged in this long after it opened.
        login_timeout_ms: u64,
    },
    /// A request succeeded. `op` and `id` are the request's; the other fields depend on `op`
    /// (see `docs/protocol.md`).
    Reply {
        /// The request's op.
        op: String,
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The answer's fields.
        #[serde(flatten)]
        data: Map<String, Value>,
    },
    /// A request failed, with roomcast's (Agora's) error code.
    Error {
        /// The request's op (`parse` if the frame was not a request).
        op: String,
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The code (see `ChatError::code`).
        code: u32,
        /// What went wrong.
        message: String,
    },
    /// A message in a room the user is in.
    Message(WireMessage),
    /// A chat-room event for the user: `event` is the callback's name in snake case
    /// (`member_joined`, `mute_list_added`...), the other fields are the event's.
    Event {
        /// The event's name.
        event: String,
        /// The room.
        room: String,
        /// The event's fields.
        #[serde(flatten)]
        fields: Map<String, Value>,
    },
    /// On resume, messages after `after` up to `next` (excluded) are no longer retained: the
    /// client cannot get them.
    Gap {
        /// The room.
        room: String,
        /// The client's last sequence number.
        after: u64,
        /// The oldest one the room still has.
        next: u64,
    },
    /// The connection's event queue overflowed: its `count` oldest events were dropped. Fetch
    /// messages with `history` (`after` the last seq seen) and state with `info`.
    Missed {
        /// How many events were dropped.
        count: u64,
    },
    /// A room's member count changed (pushed at most every `GatewayConfig::count_interval`).
    Count {
        /// The room.
        room: String,
        /// Members now.
        members: u32,
    },
}

impl ServerFrame {
    /// The frame as JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(
                r#"{{"type":"error","op":"internal","code":1,"message":"{}"}}"#,
                e.to_string().replace('"', "'")
            )
        })
    }

    /// A reply with these fields.
    pub fn reply(op: &str, id: Option<u64>, data: Value) -> ServerFrame {
        let data = match data {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                let mut m = Map::new();
                m.insert("value".into(), other);
                m
            }
        };
        ServerFrame::Reply {
            op: op.to_string(),
            id,
            data,
        }
    }

    /// The frame for a chat-room event: the variant's name in snake case, `room`, and the
    /// variant's fields (`room_id` becomes `room`; a changed specification gives the room's
    /// info under `info`).
    pub fn event(event: &ChatRoomEvent) -> ServerFrame {
        let value = serde_json::to_value(event).unwrap_or(Value::Null);
        let (name, fields) = match value {
            Value::Object(m) if m.len() == 1 => m.into_iter().next().unwrap_or_default(),
            other => ("unknown".to_string(), other),
        };
        let mut fields = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        // A `RoomId` serializes as a number (a u64, which JavaScript cannot hold exactly): the
        // frame names the room as a string, like every other frame.
        fields.remove("room_id");
        let room = event.room_id().to_string();
        if let ChatRoomEvent::SlowModeChanged { cooldown, .. } = event {
            fields.remove("cooldown");
            fields.insert(
                "cooldown_secs".into(),
                cooldown.map_or(Value::Null, |c| Value::from(c.as_secs())),
            );
        }
        if let ChatRoomEvent::HoldChanged { hold, .. } = event {
            fields.remove("hold");
            fields.insert(
                "hold_secs".into(),
                hold.map_or(Value::Null, |h| Value::from(h.as_secs())),
            );
        }
        // Message ids are u64s too: strings, as in message frames.
        if let Some(id) = fields.get_mut("msg_id") {
            if let Value::Number(n) = id {
                *id = Value::String(n.to_string());
            }
        }
        if let ChatRoomEvent::SpecificationChanged { room: info, .. } = event {
            fields.remove("room");
            fields.insert(
                "info".into(),
                serde_json::to_value(WireRoom::from(&**info)).unwrap_or_default(),
            );
        }
        ServerFrame::Event {
            event: snake_case(&name),
            room,
            fields,
        }
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use roomcast::{RoomId, UserId};

    #[test]
    fn requests_parse_from_their_documented_json() {
        let f: ClientFrame =
            serde_json::from_str(r#"{"op":"send","id":3,"room":"r","text":"hi"}"#).unwrap();
        assert_eq!(f.id, Some(3));
        assert_eq!(
            f.request,
            Request::Send {
                room: "r".into(),
                text: "hi".into(),
                priority: None,
                key: None,
            }
        );
        let f: ClientFrame =
            serde_json::from_str(r#"{"op":"send","room":"r","text":"hi","key":"k-1"}"#).unwrap();
        assert!(matches!(f.request, Request::Send { key: Some(k), .. } if k == "k-1"));
        let f: ClientFrame = serde_json::from_str(r#"{"op":"mute_all","room":"r"}"#).unwrap();
        assert_eq!(f.request.op(), "mute_all");
        assert!(serde_json::from_str::<ClientFrame>(r#"{"op":"fly"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"op":"join"}"#).is_err());
    }

    #[test]
    fn event_frames_name_their_room_as_a_string() {
        let room = RoomId::from_u64(u64::MAX - 7);
        let event = ChatRoomEvent::MemberJoined {
            room_id: room,
            participant: UserId::new("bob").unwrap(),
        };
        let v: Value = serde_json::from_str(&ServerFrame::event(&event).to_text()).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(v["event"], "member_joined");
        assert_eq!(v["room"], room.to_string());
        assert_eq!(v["participant"], "bob");
        assert!(v.get("room_id").is_none());
    }

    #[test]
    fn event_names_are_snake_case() {
        assert_eq!(snake_case("MemberJoined"), "member_joined");
        assert_eq!(
            snake_case("AllMemberMuteStateChanged"),
            "all_member_mute_state_changed"
        );
    }
}
