//! The framework-neutral connection core: one loop per WebSocket that reads requests, answers
//! them, forwards the user's events and keeps the heartbeat, then cleans up.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use roomcast::{
    ChatClient, ChatError, ChatRoomEvent, ClientEvent, CreateChatRoomOptions, EventStream,
    HistoryQuery, MuteDuration, OutgoingMessage, RoomId, UserId,
};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::protocol::{close, ClientFrame, Request, ServerFrame, WireMessage, WireRoom};
use crate::{Credentials, Gateway, Slot};

/// What the transport received, as the core needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text frame.
    Text(String),
    /// A binary frame of this many bytes (not part of the protocol: answered with 110).
    Binary(usize),
    /// A ping with its payload (the core answers with a pong).
    Ping(Vec<u8>),
    /// A pong (it counts as hearing from the client).
    Pong,
    /// The client closed the connection.
    Close,
    /// A frame above the transport's limit: the core closes with 1009.
    TooBig,
    /// The transport failed (reset, protocol error): the core stops.
    Failed(String),
}

/// The transport is gone: nothing more can be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportClosed;

/// Writes to a WebSocket, as the core needs it.
#[allow(async_fn_in_trait)]
pub trait Outgoing {
    /// Writes a text frame (waiting while the socket is full).
    async fn send_text(&mut self, text: String) -> Result<(), TransportClosed>;
    /// Queues a text frame, to be written by the next [`Outgoing::flush`] (or sooner); a
    /// transport without such a buffer writes it now.
    async fn feed_text(&mut self, text: String) -> Result<(), TransportClosed> {
        self.send_text(text).await
    }
    /// Writes what [`Outgoing::feed_text`] queued.
    async fn flush(&mut self) -> Result<(), TransportClosed> {
        Ok(())
    }
    /// Writes a ping.
    async fn send_ping(&mut self) -> Result<(), TransportClosed>;
    /// Writes a pong with this payload.
    async fn send_pong(&mut self, payload: Vec<u8>) -> Result<(), TransportClosed>;
    /// Writes a close frame with this code and reason, and ends the connection.
    async fn close(self, code: u16, reason: String);
}

/// Why the loop ends: a close code and reason, or a transport that is already gone.
enum End {
    Close(u16, String),
    Gone,
}

/// What a request failed with.
enum Fail {
    /// An error answer; the connection stays.
    Chat(ChatError),
    /// An error answer with a gateway code (not a `ChatError`); the connection stays.
    Code(u32, String),
    /// An error answer, then the connection closes.
    Close(u32, String, u16),
    /// The connection ends.
    End(End),
}

impl From<ChatError> for Fail {
    fn from(e: ChatError) -> Fail {
        Fail::Chat(e)
    }
}

impl From<End> for Fail {
    fn from(e: End) -> Fail {
        Fail::End(e)
    }
}

/// What this connection knows of a room it is in.
#[derive(Default)]
struct RoomState {
    /// The highest sequence number pushed on this connection.
    last_seq: u64,
    /// The member count last pushed.
    count: Option<u32>,
}

struct Conn<O: Outgoing> {
    gateway: Gateway,
    slot: Slot,
    out: Option<O>,
    client: Option<ChatClient>,
    events: Option<EventStream>,
    rooms: HashMap<RoomId, RoomState>,
    last_heard: Instant,
    /// Writing a burst of pushed frames: feed them, flush once at the end.
    feeding: bool,
}

/// One write to the transport.
enum Wire {
    /// A text frame, written now.
    Text(String),
    /// A text frame, queued until the next flush.
    Feed(String),
    /// What was queued.
    Flush,
    Ping,
    Pong(Vec<u8>),
}

/// What woke the connection's loop.
enum Wake {
    Shutdown,
    Frame(Option<Incoming>),
    Event(Option<ClientEvent>),
    Timer,
}

/// How often a connection that has not logged in looks whether the engine stopped.
const ENGINE_CHECK: Duration = Duration::from_millis(250);

/// Most events pushed in one burst (one flush).
const BURST: usize = 64;

/// Code of Agora's "user already logged in".
const ALREADY_LOGGED_IN: u32 = 200;
/// Code of Agora's "authentication failed".
const AUTH_FAILED: u32 = 202;

pub(crate) async fn serve<I, O>(gateway: Gateway, mut incoming: I, out: O) -> u16
where
    I: futures_core::Stream<Item = Incoming> + Unpin,
    O: Outgoing,
{
    let Some(slot) = gateway.open_slot() else {
        let out = out;
        out.close(close::TRY_AGAIN_LATER, "too many connections".into())
            .await;
        return close::TRY_AGAIN_LATER;
    };
    let mut conn = Conn {
        gateway,
        slot,
        out: Some(out),
        client: None,
        events: None,
        rooms: HashMap::new(),
        last_heard: Instant::now(),
        feeding: false,
    };
    let end = conn.run(&mut incoming).await;
    let linger = conn
        .gateway
        .inner
        .config
        .write_timeout
        .min(Duration::from_secs(2));
    if let Some(client) = conn.client.take() {
        client.logout();
    }
    conn.events = None;
    let code = match end {
        End::Close(code, reason) => {
            if let Some(out) = conn.out.take() {
                let write_timeout = conn.gateway.inner.config.write_timeout;
                let _ = tokio::time::timeout(write_timeout, out.close(code, reason)).await;
                // The closing handshake: wait a little for the client's close (or its end), so
                // that the client reads our close frame before the socket goes.
                let _ = tokio::time::timeout(linger, async {
                    while let Some(frame) = incoming.next().await {
                        if matches!(frame, Incoming::Close | Incoming::Failed(_)) {
                            break;
                        }
                    }
                })
                .await;
            }
            code
        }
        End::Gone => 1006,
    };
    tracing::debug!(code, "gateway connection closed");
    code
}

/// The next event of the stream, or never if there is none yet.
async fn next_event(events: &mut Option<EventStream>) -> Option<ClientEvent> {
    match events {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

impl<O: Outgoing> Conn<O> {
    fn config(&self) -> &crate::GatewayConfig {
        &self.gateway.inner.config
    }

    async fn run<I>(&mut self, incoming: &mut I) -> End
    where
        I: futures_core::Stream<Item = Incoming> + Unpin,
    {
        let mut shutdown = self.gateway.inner.shutdown.subscribe();
        if *shutdown.borrow_and_update() {
            return End::Close(close::GOING_AWAY, "the gateway is shutting down".into());
        }
        if self.gateway.inner.engine.is_shut_down() {
            return End::Close(close::GOING_AWAY, "the engine stopped".into());
        }
        let config = self.config().clone();
        let hello = ServerFrame::Hello {
            protocol: crate::protocol::PROTOCOL_VERSION,
            max_frame: config.max_frame,
            heartbeat_ms: millis(config.heartbeat_interval),
            idle_timeout_ms: millis(config.idle_timeout),
            login_timeout_ms: millis(config.login_timeout),
        };
        if let Err(end) = self.write(&hello).await {
            return end;
        }
        let opened = Instant::now();
        let mut next_ping = opened + config.heartbeat_interval;
        let mut next_count = opened + config.count_interval;
        loop {
            let login_deadline = (self.client.is_none()).then_some(opened + config.login_timeout);
            let idle_deadline = self.last_heard + config.idle_timeout;
            let mut wake = next_ping.min(idle_deadline).min(next_count);
            if let Some(d) = login_deadline {
                // Not logged in: no event stream tells of the engine stopping, so look.
                wake = wake.min(d).min(Instant::now() + ENGINE_CHECK);
            }
            let woke = tokio::select! {
                biased;
                _ = shutdown.changed() => Wake::Shutdown,
                frame = incoming.next() => Wake::Frame(frame),
                event = next_event(&mut self.events) => Wake::Event(event),
                _ = tokio::time::sleep_until(wake) => Wake::Timer,
            };
            let step = match woke {
                Wake::Shutdown => Err(End::Close(
                    close::GOING_AWAY,
                    "the gateway is shutting down".into(),
                )),
                // A request may wait on the engine or the authenticator: the gateway's shutdown
                // and the login deadline still end the connection meanwhile.
                Wake::Frame(frame) => {
                    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
                    tokio::select! {
                        biased;
                        _ = shutdown.changed() => Err(End::Close(
                            close::GOING_AWAY,
                            "the gateway is shutting down".into(),
                        )),
                        _ = tokio::time::sleep_until(login_deadline.unwrap_or(far)) => {
                            Err(End::Close(close::LOGIN_TIMEOUT, "no login in time".into()))
                        }
                        step = self.on_frame(frame) => step,
                    }
                }
                Wake::Event(Some(event)) => self.push_burst(event).await,
                Wake::Event(None) => {
                    Err(End::Close(close::GOING_AWAY, "the engine stopped".into()))
                }
                Wake::Timer => {
                    let now = Instant::now();
                    if login_deadline.is_some_and(|d| now >= d) {
                        Err(End::Close(close::LOGIN_TIMEOUT, "no login in time".into()))
                    } else if now >= idle_deadline {
                        Err(End::Close(
                            close::IDLE_TIMEOUT,
                            "nothing heard in time".into(),
                        ))
                    } else if self.client.is_none() && self.gateway.inner.engine.is_shut_down() {
                        Err(End::Close(close::GOING_AWAY, "the engine stopped".into()))
                    } else {
                        let mut result = Ok(());
                        if now >= next_ping {
                            next_ping = now + config.heartbeat_interval;
                            result = self.ping().await;
                        }
                        if result.is_ok() && now >= next_count {
                            next_count = now + config.count_interval;
                            result = self.push_counts().await;
                        }
                        result
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Pushes `first` and the events already waiting behind it (up to [`BURST`]), then flushes
    /// once: a burst costs one write to the socket, not one per frame.
    async fn push_burst(&mut self, first: ClientEvent) -> Result<(), End> {
        self.feeding = true;
        let mut result = self.push(first).await;
        for _ in 1..BURST {
            if result.is_err() {
                break;
            }
            let Some(ready) = self.events.as_mut().and_then(|e| e.next().now_or_never()) else {
                break;
            };
            match ready {
                Some(event) => result = self.push(event).await,
                // The stream ended: the next poll of the loop says so.
                None => break,
            }
        }
        self.feeding = false;
        result?;
        self.transmit(Wire::Flush).await
    }

    /// Writes a frame, within the write timeout (queues it while pushing a burst).
    async fn write(&mut self, frame: &ServerFrame) -> Result<(), End> {
        let text = frame.to_text();
        let wire = if self.feeding {
            Wire::Feed(text)
        } else {
            Wire::Text(text)
        };
        self.transmit(wire).await
    }

    async fn ping(&mut self) -> Result<(), End> {
        self.transmit(Wire::Ping).await
    }

    /// One write to the transport, within the write timeout: a transport gone ends the
    /// connection quietly, a write that waits too long closes it (4009).
    async fn transmit(&mut self, wire: Wire) -> Result<(), End> {
        let timeout = self.config().write_timeout;
        let Some(out) = self.out.as_mut() else {
            return Err(End::Gone);
        };
        let written = async {
            match wire {
                Wire::Text(text) => out.send_text(text).await,
                Wire::Feed(text) => out.feed_text(text).await,
                Wire::Flush => out.flush().await,
                Wire::Ping => out.send_ping().await,
                Wire::Pong(payload) => out.send_pong(payload).await,
            }
        };
        match tokio::time::timeout(timeout, written).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(TransportClosed)) => Err(End::Gone),
            Err(_) => Err(End::Close(
                close::SLOW_READER,
                "the client does not read".into(),
            )),
        }
    }

    async fn on_frame(&mut self, frame: Option<Incoming>) -> Result<(), End> {
        let Some(frame) = frame else {
            return Err(End::Gone);
        };
        self.last_heard = Instant::now();
        match frame {
            Incoming::Text(text) => self.on_text(text).await,
            Incoming::Binary(len) => {
                let message =
                    format!("binary frames are not part of the protocol ({len} bytes ignored)");
                self.write(&error("binary", None, 110, message)).await
            }
            Incoming::Ping(payload) => self.transmit(Wire::Pong(payload)).await,
            Incoming::Pong => Ok(()),
            Incoming::Close => Err(End::Close(close::NORMAL, String::new())),
            Incoming::TooBig => Err(End::Close(
                close::TOO_BIG,
                format!(
                    "a frame above {} bytes",
                    self.gateway.inner.config.transport_limit()
                ),
            )),
            Incoming::Failed(why) => {
                tracing::debug!(why, "gateway transport failed");
                let lower = why.to_ascii_lowercase();
                if lower.contains("utf-8") || lower.contains("utf8") {
                    Err(End::Close(
                        close::INVALID_DATA,
                        "a text frame is not UTF-8".into(),
                    ))
                } else if lower.contains("reset") || lower.contains("broken pipe") {
                    Err(End::Gone)
                } else {
                    Err(End::Close(close::PROTOCOL_ERROR, truncate(&why, 100)))
                }
            }
        }
    }

    async fn on_text(&mut self, text: String) -> Result<(), End> {
        let max = self.config().max_frame;
        if text.len() > max {
            let message = format!("a frame of {} bytes is over the limit of {max}", text.len());
            return self.write(&error("frame", None, 510, message)).await;
        }
        let frame: ClientFrame = match serde_json::from_str(&text) {
            Ok(f) => f,
            Err(e) => {
                let id = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("id").and_then(Value::as_u64));
                return self
                    .write(&error("parse", id, 110, format!("not a request: {e}")))
                    .await;
            }
        };
        let op = frame.request.op();
        let id = frame.id;
        match self.handle(frame.request, id).await {
            Ok(Some(data)) => self.write(&ServerFrame::reply(op, id, data)).await,
            Ok(None) => Ok(()),
            Err(Fail::Chat(e)) => {
                self.write(&error(op, id, e.code(), e.to_string())).await?;
                if matches!(e, ChatError::EngineStopped) {
                    return Err(End::Close(close::GOING_AWAY, "the engine stopped".into()));
                }
                Ok(())
            }
            Err(Fail::Code(code, message)) => self.write(&error(op, id, code, message)).await,
            Err(Fail::Close(code, message, close_code)) => {
                self.write(&error(op, id, code, message.clone())).await?;
                Err(End::Close(close_code, message))
            }
            Err(Fail::End(end)) => Err(end),
        }
    }

    fn client(&self) -> Result<&ChatClient, Fail> {
        self.client
            .as_ref()
            .ok_or(Fail::Chat(ChatError::UserNotLogin))
    }

    async fn handle(&mut self, request: Request, id: Option<u64>) -> Result<Option<Value>, Fail> {
        if let Request::Login { token, user } = request {
            return self.login(Credentials { token, user }).await.map(Some);
        }
        let client = self.client()?.clone();
        let rooms = client.chat_room_manager();
        let answer = match request {
            Request::Login { .. } => unreachable!("answered above"),
            Request::Logout => {
                self.write(&ServerFrame::reply("logout", id, Value::Null))
                    .await?;
                return Err(Fail::End(End::Close(close::NORMAL, "logged out".into())));
            }
            Request::Ping => json!({}),
            Request::Rooms { page, size, filter } => {
                let page = rooms
                    .fetch_public_chat_rooms(
                        page.unwrap_or(1),
                        size.unwrap_or(20),
                        filter.as_deref().filter(|f| !f.is_empty()),
                    )
                    .await?;
                let list: Vec<WireRoom> = page.data.iter().map(WireRoom::from).collect();
                json!({"rooms": list, "page": page.page_num, "total": page.total})
            }
            Request::Create {
                name,
                description,
                max_users,
            } => {
                let mut options = CreateChatRoomOptions::new(name);
                if let Some(d) = description {
                    options = options.with_description(d);
                }
                if let Some(m) = max_users {
                    options = options.with_max_users(m);
                }
                let room = rooms.create_chat_room(options).await?;
                self.rooms.entry(room.room_id).or_default();
                json!({"room": WireRoom::from(&room)})
            }
            Request::Destroy { room } => {
                let room = parse_room(&room)?;
                rooms.destroy_chat_room(&room).await?;
                self.rooms.remove(&room);
                json!({"room": room.to_string()})
            }
            Request::Join { room, since } => return self.join(&client, &room, since, id).await,
            Request::Leave { room } => {
                let room = parse_room(&room)?;
                rooms.leave_chat_room(&room).await?;
                self.rooms.remove(&room);
                json!({"room": room.to_string()})
            }
            Request::Send {
                room,
                text,
                priority,
                key,
            } => {
                let room = parse_room(&room)?;
                let mut message = OutgoingMessage::text(room, text);
                if let Some(p) = priority {
                    message = message.with_priority(p.into());
                }
                if let Some(key) = key {
                    message = message.with_idempotency_key(key);
                }
                let sent = client.chat_manager().send_message(message).await?;
                json!({
                    "room": room.to_string(),
                    "seq": sent.seq(),
                    "msg_id": sent.msg_id().to_string(),
                    "time": sent.server_time(),
                })
            }
            Request::History {
                room,
                before,
                after,
                size,
            } => {
                let room = parse_room(&room)?;
                let size = size.unwrap_or(20);
                let query = match (before, after) {
                    (Some(_), Some(_)) => {
                        return Err(Fail::Code(110, "give `before` or `after`, not both".into()))
                    }
                    (Some(seq), None) => HistoryQuery::before(seq, size),
                    (None, Some(seq)) => HistoryQuery::after(seq, size),
                    (None, None) => HistoryQuery::newest(size),
                };
                let page = client
                    .chat_manager()
                    .fetch_history_messages(&room, query)
                    .await?;
                let messages: Vec<WireMessage> = page
                    .data
                    .iter()
                    .map(|m| WireMessage::new(m, true))
                    .collect();
                json!({"room": room.to_string(), "messages": messages, "cursor": page.cursor})
            }
            Request::Info { room } => {
                let room = parse_room(&room)?;
                let info = rooms.fetch_chat_room_info(&room).await?;
                json!({"room": WireRoom::from(&info)})
            }
            Request::Members { room, cursor, size } => {
                let room = parse_room(&room)?;
                let page = rooms
                    .fetch_chat_room_members(&room, cursor, size.unwrap_or(100))
                    .await?;
                let members: Vec<&str> = page.data.iter().map(UserId::as_str).collect();
                json!({"room": room.to_string(), "members": members, "cursor": page.cursor})
            }
            Request::Mute {
                room,
                users,
                seconds,
                reason,
            } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                let duration = match seconds {
                    Some(s) => MuteDuration::For(Duration::from_secs(s)),
                    None => MuteDuration::Forever,
                };
                rooms
                    .mute_chat_room_members(&room, &users, duration)
                    .await?;
                json!({"room": room.to_string(), "users": users})
            }
            Request::Unmute {
                room,
                users,
                reason,
            } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                rooms.unmute_chat_room_members(&room, &users).await?;
                json!({"room": room.to_string(), "users": users})
            }
            Request::Kick {
                room,
                users,
                ban_seconds,
                reason,
            } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                match ban_seconds {
                    Some(s) => {
                        let ban = Duration::from_secs(s);
                        rooms
                            .remove_chat_room_members_with_rejoin_ban(&room, &users, ban)
                            .await?
                    }
                    None => rooms.remove_chat_room_members(&room, &users).await?,
                }
                json!({"room": room.to_string(), "users": users})
            }
            Request::SlowMode {
                room,
                seconds,
                reason,
            } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                let cooldown = seconds.map(Duration::from_secs);
                rooms.set_chat_room_slow_mode(&room, cooldown).await?;
                json!({"room": room.to_string()})
            }
            Request::Freeze {
                room,
                seconds,
                reason,
            } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                let duration = match seconds {
                    Some(s) => MuteDuration::For(Duration::from_secs(s)),
                    None => MuteDuration::Forever,
                };
                rooms.freeze_chat_room(&room, duration).await?;
                json!({"room": room.to_string()})
            }
            Request::Unfreeze { room, reason } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                rooms.unfreeze_chat_room(&room).await?;
                json!({"room": room.to_string()})
            }
            Request::Hold {
                room,
                seconds,
                reason,
            } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                let hold = seconds.map(Duration::from_secs);
                rooms.set_chat_room_hold(&room, hold).await?;
                json!({"room": room.to_string()})
            }
            Request::Recall { room, seq } => {
                let room = parse_room(&room)?;
                client.chat_manager().recall_message(&room, seq).await?;
                json!({"room": room.to_string(), "seq": seq})
            }
            Request::Delete { room, seq, reason } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                rooms.delete_chat_room_message(&room, seq).await?;
                json!({"room": room.to_string(), "seq": seq})
            }
            Request::Pin { room, seq, reason } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                rooms.pin_chat_room_message(&room, seq).await?;
                json!({"room": room.to_string(), "seq": seq})
            }
            Request::Unpin { room, seq, reason } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                rooms.unpin_chat_room_message(&room, seq).await?;
                json!({"room": room.to_string(), "seq": seq})
            }
            Request::ShadowBan {
                room,
                users,
                reason,
            } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                rooms.shadow_ban_chat_room_members(&room, &users).await?;
                json!({"room": room.to_string(), "users": users})
            }
            Request::Unshadow {
                room,
                users,
                reason,
            } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                rooms.unshadow_ban_chat_room_members(&room, &users).await?;
                json!({"room": room.to_string(), "users": users})
            }
            Request::Block {
                room,
                users,
                seconds,
                reason,
            } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                match seconds {
                    Some(s) => {
                        rooms
                            .block_chat_room_members_for(&room, &users, Duration::from_secs(s))
                            .await?
                    }
                    None => rooms.block_chat_room_members(&room, &users).await?,
                }
                json!({"room": room.to_string(), "users": users})
            }
            Request::Unblock {
                room,
                users,
                reason,
            } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                rooms.unblock_chat_room_members(&room, &users).await?;
                json!({"room": room.to_string(), "users": users})
            }
            Request::MuteAll { room, reason } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                rooms.mute_all_chat_room_members(&room).await?;
                json!({"room": room.to_string()})
            }
            Request::UnmuteAll { room, reason } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                rooms.unmute_all_chat_room_members(&room).await?;
                json!({"room": room.to_string()})
            }
            Request::Announce { room, text, reason } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                rooms.update_chat_room_announcement(&room, text).await?;
                json!({"room": room.to_string()})
            }
            Request::AddAdmin { room, user, reason } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                rooms.add_chat_room_admin(&room, &user).await?;
                json!({"room": room.to_string(), "user": user})
            }
            Request::RemoveAdmin { room, user, reason } => {
                let rooms = reasoned(&rooms, reason);
                let room = parse_room(&room)?;
                rooms.remove_chat_room_admin(&room, &user).await?;
                json!({"room": room.to_string(), "user": user})
            }
            Request::MuteList { room, page, size } => {
                let room = parse_room(&room)?;
                let page = rooms
                    .fetch_chat_room_mute_list(&room, page.unwrap_or(1), size.unwrap_or(100))
                    .await?;
                let members: Vec<Value> = page
                    .data
                    .iter()
                    .map(|m| json!({"user": m.user_id.as_str(), "expire_time": m.expire_time}))
                    .collect();
                json!({"room": room.to_string(), "members": members, "total": page.total})
            }
            Request::BlockList { room, page, size } => {
                let room = parse_room(&room)?;
                let page = rooms
                    .fetch_chat_room_block_list(&room, page.unwrap_or(1), size.unwrap_or(100))
                    .await?;
                let members: Vec<Value> = page
                    .data
                    .iter()
                    .map(|b| json!({"user": b.user_id.as_str(), "expire_time": b.expire_time}))
                    .collect();
                json!({"room": room.to_string(), "members": members, "total": page.total})
            }
        };
        Ok(Some(answer))
    }

    async fn login(&mut self, credentials: Credentials) -> Result<Value, Fail> {
        if let Some(client) = &self.client {
            return Err(Fail::Code(
                ALREADY_LOGGED_IN,
                format!(
                    "this connection is logged in as {} already",
                    client.current_user_id()
                ),
            ));
        }
        let inner = self.gateway.inner.clone();
        let user = match inner.auth.authenticate(&credentials).await {
            Ok(user) => user,
            Err(e) => {
                return Err(Fail::Close(
                    AUTH_FAILED,
                    e.reason().to_string(),
                    close::AUTH_FAILED,
                ))
            }
        };
        let super_admin = inner.engine.super_admins().contains(&user);
        if super_admin && inner.auth.is_insecure() {
            return Err(Fail::Close(
                AUTH_FAILED,
                format!("{user} is a super admin: insecure logins cannot take that name"),
                close::AUTH_FAILED,
            ));
        }
        if !self.slot.claim_user(&user) {
            return Err(Fail::Close(
                ALREADY_LOGGED_IN,
                format!(
                    "{user} has {} connections already",
                    inner.config.max_connections_per_user
                ),
                close::TOO_MANY_FOR_USER,
            ));
        }
        let client = inner.engine.login(user.as_str()).await?;
        self.events = Some(client.events());
        self.client = Some(client);
        Ok(json!({"user": user.as_str(), "super_admin": super_admin}))
    }

    async fn join(
        &mut self,
        client: &ChatClient,
        room: &str,
        since: Option<u64>,
        id: Option<u64>,
    ) -> Result<Option<Value>, Fail> {
        let room = parse_room(room)?;
        if let Some(since) = since {
            // A `since` past the room's last message (a client's stale or wrong state) would
            // hide the next messages as already seen.
            let stats = self.gateway.inner.engine.room_stats(&room).await?;
            if since > stats.last_seq {
                return Err(Fail::Code(
                    110,
                    format!(
                        "since {since} is past the room's last message ({})",
                        stats.last_seq
                    ),
                ));
            }
        }
        let rooms = client.chat_room_manager();
        let (info, already) = match rooms.join_chat_room(&room).await {
            Ok(info) => (info, false),
            // A resume within the grace period, a page reloaded, a second tab: still a member.
            Err(ChatError::AlreadyJoined) => (rooms.fetch_chat_room_info(&room).await?, true),
            Err(e) => return Err(e.into()),
        };
        let members = info.member_count;
        let state = self.rooms.entry(room).or_default();
        if let Some(since) = since {
            // What this connection pushed already is not sent again.
            state.last_seq = state.last_seq.max(since);
        }
        state.count = Some(members);
        let reply = json!({"room": WireRoom::from(&info), "already": already});
        self.write(&ServerFrame::reply("join", id, reply)).await?;
        let chat = client.chat_manager();
        match since {
            Some(since) => {
                let since = self.rooms.get(&room).map_or(since, |s| s.last_seq);
                let mut cursor = since;
                let mut first = true;
                loop {
                    let page = chat
                        .fetch_history_messages(&room, HistoryQuery::after(cursor, 200))
                        .await?;
                    if first {
                        first = false;
                        let oldest = match page.data.first() {
                            Some(m) => Some(m.seq()),
                            None => self
                                .gateway
                                .inner
                                .engine
                                .room_stats(&room)
                                .await
                                .ok()
                                .filter(|s| s.last_seq > since)
                                .map(|s| s.last_seq + 1),
                        };
                        if let Some(next) = oldest.filter(|&n| n > since + 1) {
                            let gap = ServerFrame::Gap {
                                room: room.to_string(),
                                after: since,
                                next,
                            };
                            self.write(&gap).await?;
                        }
                    }
                    for m in &page.data {
                        self.push_message(m, true).await?;
                        cursor = cursor.max(m.seq());
                    }
                    if !page.has_more() || page.data.is_empty() {
                        break;
                    }
                }
            }
            None => {
                let size = self.config().history_on_join.min(200);
                if size > 0 {
                    let page = chat
                        .fetch_history_messages(&room, HistoryQuery::newest(size))
                        .await?;
                    for m in page.data.iter().rev() {
                        self.push_message(m, true).await?;
                    }
                }
            }
        }
        Ok(None)
    }

    /// Pushes a message unless this connection pushed it (or a later one of its room) already.
    async fn push_message(&mut self, m: &roomcast::ChatMessage, history: bool) -> Result<(), End> {
        // Only rooms joined (or created) on this connection: a user's other rooms are its
        // other connections' business, and a room is resumed with `join` and `since`, not by
        // messages that arrive between the login and the join.
        let Some(state) = self.rooms.get_mut(&m.room_id()) else {
            return Ok(());
        };
        if m.seq() <= state.last_seq {
            return Ok(());
        }
        state.last_seq = m.seq();
        self.write(&ServerFrame::Message(WireMessage::new(m, history)))
            .await
    }

    async fn push(&mut self, event: ClientEvent) -> Result<(), End> {
        match event {
            ClientEvent::Message(m) => self.push_message(&m, false).await,
            ClientEvent::Room(event) => {
                if !self.rooms.contains_key(&event.room_id()) {
                    return Ok(());
                }
                let me = self.client.as_ref().map(|c| c.current_user_id().clone());
                match &*event {
                    ChatRoomEvent::RemovedFromChatRoom {
                        room_id,
                        participant,
                        ..
                    } if Some(participant) == me.as_ref() => {
                        self.rooms.remove(room_id);
                    }
                    ChatRoomEvent::ChatRoomDestroyed { room_id, .. } => {
                        self.rooms.remove(room_id);
                    }
                    _ => {}
                }
                self.write(&ServerFrame::event(&event)).await
            }
            ClientEvent::Missed { count } => self.write(&ServerFrame::Missed { count }).await,
            _ => Ok(()),
        }
    }

    async fn push_counts(&mut self) -> Result<(), End> {
        let rooms: Vec<RoomId> = self.rooms.keys().copied().collect();
        for room in rooms {
            let Some(members) = self.gateway.member_count(room).await else {
                continue;
            };
            let Some(state) = self.rooms.get_mut(&room) else {
                continue;
            };
            if state.count != Some(members) {
                state.count = Some(members);
                let frame = ServerFrame::Count {
                    room: room.to_string(),
                    members,
                };
                self.write(&frame).await?;
            }
        }
        Ok(())
    }
}

/// `rooms`, giving `reason` to its moderation calls if there is one.
fn reasoned(
    rooms: &roomcast::ChatRoomManager,
    reason: Option<String>,
) -> roomcast::ChatRoomManager {
    match reason {
        Some(r) => rooms.with_reason(r),
        None => rooms.clone(),
    }
}

fn parse_room(room: &str) -> Result<RoomId, Fail> {
    room.parse::<RoomId>().map_err(Fail::Chat)
}

fn error(op: &str, id: Option<u64>, code: u32, message: String) -> ServerFrame {
    ServerFrame::Error {
        op: op.to_string(),
        id,
        code,
        message,
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => s[..at].to_string(),
        None => s.to_string(),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
