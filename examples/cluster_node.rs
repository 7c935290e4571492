//! One roomcast cluster node as a process of its own, driven by JSON lines: what
//! `tests/cluster_processes.rs` runs three of (and kills one of with SIGKILL).
//!
//! ```text
//! cargo run --example cluster_node -- --nats nats://127.0.0.1:4222 --cluster demo --node a \
//!     [--lease-ttl-ms 1000] [--request-timeout-ms 2000]
//! ```
//!
//! It prints `{"ready":true,"node":"a"}` once the engine is built (or `{"ready":false,"error":..}`
//! and exits with 1), then reads one command per line on stdin and answers each on stdout with
//! the command's `id`: `{"id":7,"ok":true,...}` or `{"id":7,"error":215,"message":"..."}`.
//! Commands run concurrently (an answer may overtake an earlier one). Every line is flushed.
//!
//! | command | fields | answer |
//! |---|---|---|
//! | `super_admin` | `user` | |
//! | `login` | `user` | (the client is kept; its events are printed) |
//! | `create` | `user`, `name` | `room` (the id, a string) |
//! | `join` | `user`, `room` | `member_count` |
//! | `leave` | `user`, `room` | |
//! | `send` | `user`, `room`, `text`, optional `key` (idempotency key) | `seq`, `msg_id` |
//! | `mute` | `user`, `room`, `target`, `seconds` | |
//! | `unmute` | `user`, `room`, `target` | |
//! | `kick` | `user`, `room`, `target` | |
//! | `add_admin` | `user`, `room`, `target` | |
//! | `history` | `user`, `room`, `after` (default 0) | `messages`: `[{seq, text, from}]`, oldest first, every page |
//! | `info` | `user`, `room` | `member_count`, `owner`, `admins`, `name`, `all_muted` |
//! | `members` | `user`, `room` | `members`: every member's id, sorted |
//! | `quit` | | (then the engine shuts down and the process exits) |
//!
//! Events of logged-in users, one line each, without an `id`:
//! `{"event":"message","user":"bob","room":"..","seq":3,"from":"alice","text":".."}` for a
//! message, `{"event":"member_joined","user":"alice","room":"..","participant":"bob"}` and so on
//! for a room event (named as the gateway's protocol names them, `docs/protocol.md`; a
//! `chat_room_recovered` carries `last_seq`), `{"event":"missed","user":..,"count":..}` when a
//! user's stream fell behind.
//!
//! The node runs with `harness_limits()` (no room delivery threshold, no per-user rate limits),
//! so that tests can send as fast as they like.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use roomcast::{
    ChatClient, ChatError, ClientEvent, ClusterConfig, CreateChatRoomOptions, Engine, HistoryQuery,
    OutgoingMessage, RoomId,
};
use roomcast_gateway::protocol::ServerFrame;
use roomcast_workspace::harness_limits;
use serde_json::{json, Map, Value};

/// Writes one JSON line on stdout and flushes it (one lock: lines never interleave).
fn emit(line: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

struct Args {
    nats: String,
    cluster: String,
    node: String,
    lease_ttl: Duration,
    request_timeout: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut nats = None;
    let mut cluster = None;
    let mut node = None;
    let mut lease_ttl = Duration::from_secs(1);
    let mut request_timeout = Duration::from_secs(2);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let ms = |v: String| {
            v.parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| format!("{v}: {e}"))
        };
        match arg.as_str() {
            "--nats" => nats = Some(value()?),
            "--cluster" => cluster = Some(value()?),
            "--node" => node = Some(value()?),
            "--lease-ttl-ms" => lease_ttl = ms(value()?)?,
            "--request-timeout-ms" => request_timeout = ms(value()?)?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        nats: nats.ok_or("--nats URL is required")?,
        cluster: cluster.ok_or("--cluster NAME is required")?,
        node: node.ok_or("--node ID is required")?,
        lease_ttl,
        request_timeout,
    })
}

/// A command's failure: a `ChatError` (its code) or a malformed command (code 110, as an
/// invalid parameter).
struct Failure {
    code: u32,
    message: String,
}

impl From<ChatError> for Failure {
    fn from(e: ChatError) -> Failure {
        Failure {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

fn bad(message: impl Into<String>) -> Failure {
    Failure {
        code: 110,
        message: message.into(),
    }
}

struct Node {
    engine: Engine,
    clients: Mutex<HashMap<String, ChatClient>>,
}

fn field<'a>(command: &'a Value, name: &str) -> Result<&'a str, Failure> {
    command
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("missing string field {name:?}")))
}

fn room_of(command: &Value) -> Result<RoomId, Failure> {
    let room = field(command, "room")?;
    room.parse::<RoomId>()
        .map_err(|e| bad(format!("bad room id {room:?}: {e}")))
}

impl Node {
    fn client(&self, command: &Value) -> Result<ChatClient, Failure> {
        let user = field(command, "user")?;
        self.clients
            .lock()
            .get(&user.to_lowercase())
            .cloned()
            .ok_or_else(|| bad(format!("{user} is not logged in here")))
    }

    /// Logs `user` in (once) and prints every event its client receives.
    async fn login(&self, user: &str) -> Result<(), Failure> {
        if self.clients.lock().contains_key(&user.to_lowercase()) {
            return Ok(());
        }
        let client = self.engine.login(user).await?;
        let name = client.current_user_id().as_str().to_string();
        let mut events = client.events();
        self.clients.lock().insert(name.clone(), client);
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                emit(&event_line(&name, &event));
            }
        });
        Ok(())
    }

    async fn run(&self, command: &Value) -> Result<Value, Failure> {
        let op = field(command, "op")?;
        match op {
            "super_admin" => {
                self.engine.add_super_admin(field(command, "user")?).await?;
                Ok(json!({}))
            }
            "login" => {
                self.login(field(command, "user")?).await?;
                Ok(json!({}))
            }
            "create" => {
                let client = self.client(command)?;
                let options = CreateChatRoomOptions::new(field(command, "name")?);
                let room = client.chat_room_manager().create_chat_room(options).await?;
                Ok(json!({ "room": room.room_id.to_string() }))
            }
            "join" => {
                let client = self.client(command)?;
                let room = client
                    .chat_room_manager()
                    .join_chat_room(&room_of(command)?)
                    .await?;
                Ok(json!({ "member_count": room.member_count }))
            }
            "leave" => {
                let client = self.client(command)?;
                client
                    .chat_room_manager()
                    .leave_chat_room(&room_of(command)?)
                    .await?;
                Ok(json!({}))
            }
            "send" => {
                let client = self.client(command)?;
                let mut message = OutgoingMessage::text(room_of(command)?, field(command, "text")?);
                if let Some(key) = command.get("key").and_then(Value::as_str) {
                    message = message.with_idempotency_key(key);
                }
                // Answered only once the room acknowledged the message.
                let sent = client.chat_manager().send_message(message).await?;
                Ok(json!({ "seq": sent.seq(), "msg_id": sent.msg_id().to_string() }))
            }
            "mute" => {
                let client = self.client(command)?;
                let seconds = command
                    .get("seconds")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("missing number field \"seconds\""))?;
                client
                    .chat_room_manager()
                    .mute_chat_room_members(
                        &room_of(command)?,
                        [field(command, "target")?],
                        Duration::from_secs(seconds),
                    )
                    .await?;
                Ok(json!({}))
            }
            "unmute" => {
                let client = self.client(command)?;
                client
                    .chat_room_manager()
                    .unmute_chat_room_members(&room_of(command)?, [field(command, "target")?])
                    .await?;
                Ok(json!({}))
            }
            "kick" => {
                let client = self.client(command)?;
                client
                    .chat_room_manager()
                    .remove_chat_room_members(&room_of(command)?, [field(command, "target")?])
                    .await?;
                Ok(json!({}))
            }
            "add_admin" => {
                let client = self.client(command)?;
                client
                    .chat_room_manager()
                    .add_chat_room_admin(&room_of(command)?, field(command, "target")?)
                    .await?;
                Ok(json!({}))
            }
            "history" => {
                let client = self.client(command)?;
                let room = room_of(command)?;
                let mut after = command.get("after").and_then(Value::as_u64).unwrap_or(0);
                let mut messages = Vec::new();
                loop {
                    let page = client
                        .chat_manager()
                        .fetch_history_messages(&room, HistoryQuery::after(after, 200))
                        .await?;
                    let Some(last) = page.data.last() else { break };
                    after = last.seq();
                    for m in &page.data {
                        messages.push(json!({
                            "seq": m.seq(),
                            "text": m.text(),
                            "from": m.from().as_str(),
                        }));
                    }
                    if !page.has_more() {
                        break;
                    }
                }
                Ok(json!({ "messages": messages }))
            }
            "info" => {
                let client = self.client(command)?;
                let info = client
                    .chat_room_manager()
                    .fetch_chat_room_info(&room_of(command)?)
                    .await?;
                let admins: Vec<&str> = info.admin_list.iter().map(|a| a.as_str()).collect();
                Ok(json!({
                    "member_count": info.member_count,
                    "owner": info.owner.as_str(),
                    "admins": admins,
                    "name": info.name,
                    "all_muted": info.is_all_member_muted,
                }))
            }
            "members" => {
                let client = self.client(command)?;
                let room = room_of(command)?;
                let mut members = Vec::new();
                let mut cursor = None;
                loop {
                    let page = client
                        .chat_room_manager()
                        .fetch_chat_room_members(&room, cursor, 1000)
                        .await?;
                    members.extend(page.data.iter().map(|u| u.as_str().to_string()));
                    cursor = page.cursor;
                    if cursor.is_none() {
                        break;
                    }
                }
                members.sort();
                Ok(json!({ "members": members }))
            }
            other => Err(bad(format!("unknown op {other:?}"))),
        }
    }
}

/// The line for one event `user` received.
fn event_line(user: &str, event: &ClientEvent) -> Value {
    match event {
        ClientEvent::Message(m) => json!({
            "event": "message",
            "user": user,
            "room": m.room_id().to_string(),
            "seq": m.seq(),
            "from": m.from().as_str(),
            "text": m.text(),
        }),
        ClientEvent::Room(e) => {
            let mut line = Map::new();
            line.insert("event".into(), Value::Null);
            line.insert("user".into(), user.into());
            if let ServerFrame::Event {
                event,
                room,
                fields,
            } = ServerFrame::event(e)
            {
                line.insert("event".into(), event.into());
                line.insert("room".into(), room.into());
                for (k, v) in fields {
                    line.entry(k).or_insert(v);
                }
            }
            Value::Object(line)
        }
        ClientEvent::Missed { count } => json!({ "event": "missed", "user": user, "count": count }),
        other => json!({ "event": "unknown", "user": user, "debug": format!("{other:?}") }),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            emit(&json!({ "ready": false, "error": e }));
            std::process::exit(2);
        }
    };
    let config = ClusterConfig::new([args.nats.clone()], args.cluster.clone(), args.node.clone())
        .with_lease_ttl(args.lease_ttl)
        .with_request_timeout(args.request_timeout);
    let engine = match Engine::builder()
        .cluster(config)
        .limits(harness_limits())
        .build()
        .await
    {
        Ok(engine) => engine,
        Err(e) => {
            emit(&json!({ "ready": false, "error": e.to_string() }));
            std::process::exit(1);
        }
    };
    let node = Arc::new(Node {
        engine,
        clients: Mutex::new(HashMap::new()),
    });

    // stdin on a thread of its own (a blocking read), one line at a time to the runtime.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    emit(&json!({ "ready": true, "node": args.node }));

    // Each command runs in a task of its own; stdin closing ends the node like `quit`.
    while let Some(line) = lines.recv().await {
        if line.trim().is_empty() {
            continue;
        }
        let command: Value = match serde_json::from_str(&line) {
            Ok(c) => c,
            Err(e) => {
                emit(&json!({ "id": null, "error": 110, "message": format!("bad JSON: {e}") }));
                continue;
            }
        };
        let id = command.get("id").cloned().unwrap_or(Value::Null);
        if command.get("op").and_then(Value::as_str) == Some("quit") {
            node.engine.shutdown().await;
            emit(&json!({ "id": id, "ok": true }));
            return;
        }
        let node = node.clone();
        tokio::spawn(async move {
            let answer = match node.run(&command).await {
                Ok(Value::Object(mut fields)) => {
                    fields.insert("id".into(), id);
                    fields.insert("ok".into(), true.into());
                    Value::Object(fields)
                }
                Ok(other) => json!({ "id": id, "ok": true, "value": other }),
                Err(f) => json!({ "id": id, "error": f.code, "message": f.message }),
            };
            emit(&answer);
        });
    }
    node.engine.shutdown().await;
}
