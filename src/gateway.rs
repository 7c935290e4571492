//! roomcast behind a WebSocket: a small JSON protocol, served by actix-web (actix-ws) or axum.
//!
//! One WebSocket is one client. Requests are JSON objects with an `op`:
//!
//! | request | answer |
//! |---|---|
//! | `{"op":"login","user":"alice"}` | `{"type":"ok","op":"login","user":"alice"}` |
//! | `{"op":"rooms"}` | `{"type":"rooms","rooms":[{"id":"..","name":"..","members":3}]}` |
//! | `{"op":"join","room":"<id>"}` | `{"type":"ok","op":"join","room":"<id>"}` |
//! | `{"op":"leave","room":"<id>"}` | `{"type":"ok","op":"leave","room":"<id>"}` |
//! | `{"op":"send","room":"<id>","text":".."}` | `{"type":"ok","op":"send","seq":7}` |
//!
//! Failures answer `{"type":"error","op":..,"code":702,"message":".."}` with roomcast's (Agora's)
//! code. After login, the server pushes `{"type":"message","room","from","seq","text"}` for every
//! message and `{"type":"event","event":{..}}` for every chat-room event of the user.

pub mod actix;
pub mod axum;

use futures_core::Stream;
use roomcast::{ChatClient, ChatError, ClientEvent, Engine, MessageBody, OutgoingMessage, RoomId};
use serde::Deserialize;
use serde_json::{json, Value};

/// The page served at `/`: a minimal chat client.
pub const PAGE: &str = include_str!("gateway/page.html");

/// A request from a WebSocket client.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Log in as `user`.
    Login {
        /// The user id.
        user: String,
    },
    /// List the public rooms.
    Rooms,
    /// Join a room.
    Join {
        /// The room id.
        room: String,
    },
    /// Leave a room.
    Leave {
        /// The room id.
        room: String,
    },
    /// Send a text message.
    Send {
        /// The room id.
        room: String,
        /// The text.
        text: String,
    },
}

fn error(op: &str, e: &ChatError) -> Value {
    json!({"type": "error", "op": op, "code": e.code(), "message": e.to_string()})
}

/// One WebSocket's state: the client it logged in as, if any.
#[derive(Default)]
pub struct Connection {
    client: Option<ChatClient>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// Handles one text frame; returns the answer, and the client's event stream when the frame
    /// logged in (the caller forwards it with [`event_json`]).
    pub async fn handle(
        &mut self,
        engine: &Engine,
        frame: &str,
    ) -> (Value, Option<roomcast::EventStream>) {
        let request: Request = match serde_json::from_str(frame) {
            Ok(r) => r,
            Err(e) => {
                return (
                    json!({"type": "error", "op": "parse", "code": 110, "message": e.to_string()}),
                    None,
                )
            }
        };
        let client = match (&request, &self.client) {
            (Request::Login { user }, _) => {
                return match engine.login(user).await {
                    Ok(client) => {
                        let events = client.events();
                        let user = client.current_user_id().to_string();
                        self.client = Some(client);
                        (
                            json!({"type": "ok", "op": "login", "user": user}),
                            Some(events),
                        )
                    }
                    Err(e) => (error("login", &e), None),
                };
            }
            (_, None) => return (error("request", &ChatError::UserNotLogin), None),
            (_, Some(client)) => client,
        };
        let room_of = |room: &str| room.parse::<RoomId>();
        let answer = match request {
            // A login was answered above; it only shares this arm to keep the match whole.
            Request::Login { .. } | Request::Rooms => client
                .chat_room_manager()
                .fetch_public_chat_rooms(1, 100, None)
                .await
                .map(|page| {
                    let rooms: Vec<Value> = page
                        .data
                        .iter()
                        .map(|r| {
                            json!({"id": r.room_id.to_string(), "name": r.name, "members": r.member_count})
                        })
                        .collect();
                    json!({"type": "rooms", "rooms": rooms})
                })
                .unwrap_or_else(|e| error("rooms", &e)),
            Request::Join { room } => match room_of(&room) {
                Ok(id) => client
                    .chat_room_manager()
                    .join_chat_room(&id)
                    .await
                    .map(|_| json!({"type": "ok", "op": "join", "room": room}))
                    .unwrap_or_else(|e| error("join", &e)),
                Err(e) => error("join", &e),
            },
            Request::Leave { room } => match room_of(&room) {
                Ok(id) => client
                    .chat_room_manager()
                    .leave_chat_room(&id)
                    .await
                    .map(|_| json!({"type": "ok", "op": "leave", "room": room}))
                    .unwrap_or_else(|e| error("leave", &e)),
                Err(e) => error("leave", &e),
            },
            Request::Send { room, text } => match room_of(&room) {
                Ok(id) => client
                    .chat_manager()
                    .send_message(OutgoingMessage::text(id, text))
                    .await
                    .map(|m| json!({"type": "ok", "op": "send", "seq": m.seq()}))
                    .unwrap_or_else(|e| error("send", &e)),
                Err(e) => error("send", &e),
            },
        };
        (answer, None)
    }
}

/// The JSON pushed to a WebSocket for one client event.
pub fn event_json(event: &ClientEvent) -> Value {
    match event {
        ClientEvent::Message(m) => {
            let text = match m.body() {
                MessageBody::Text { content } => content.clone(),
                MessageBody::Custom { event, .. } => format!("[{event}]"),
            };
            json!({
                "type": "message",
                "room": m.room_id().to_string(),
                "from": m.from().to_string(),
                "seq": m.seq(),
                "text": text,
            })
        }
        ClientEvent::Room(e) => {
            json!({"type": "event", "event": serde_json::to_value(&**e).unwrap_or(Value::Null)})
        }
        ClientEvent::Missed { count } => json!({"type": "missed", "count": count}),
        _ => json!({"type": "unknown"}),
    }
}

/// The next item of a stream (a tiny `StreamExt::next`).
pub async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

/// An engine with a super admin `host` and one room, `lobby`, for the gateway examples.
pub async fn demo_engine() -> Result<(Engine, RoomId), ChatError> {
    let engine = Engine::builder().build().await?;
    engine.add_super_admin("host").await?;
    let host = engine.login("host").await?;
    let room = host
        .chat_room_manager()
        .create_chat_room(roomcast::CreateChatRoomOptions::new("lobby").with_max_users(10_000))
        .await?;
    // The host keeps no client: it leaves, and the room stays (its owner may come back).
    host.chat_room_manager()
        .leave_chat_room(&room.room_id)
        .await?;
    Ok((engine, room.room_id))
}
