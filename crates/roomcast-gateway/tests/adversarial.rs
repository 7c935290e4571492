//! A fresh-context review of the gateway as a new user sees it: what its docs promise, probed on
//! both adapters through real sockets on 127.0.0.1. Tests marked `// FINDING:` failed before
//! their fix.

#![allow(missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast::{Engine, RoomId};
use roomcast_gateway::protocol::close;
use roomcast_gateway::{Gateway, GatewayConfig, InsecureAuthenticator, TokenAuthenticator};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &[u8] = b"the tests' secret, thirty-two bytes or more";
const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Adapter {
    Axum,
    Actix,
}

const ADAPTERS: [Adapter; 2] = [Adapter::Axum, Adapter::Actix];

/// A gateway served by one adapter on a free port.
struct Server {
    addr: SocketAddr,
    gateway: Gateway,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

fn tokens() -> TokenAuthenticator {
    TokenAuthenticator::new(SECRET).unwrap()
}

fn token(user: &str) -> String {
    tokens().issue(user, Duration::from_secs(600)).unwrap()
}

async fn serve(adapter: Adapter, gateway: Gateway) -> Server {
    match adapter {
        Adapter::Axum => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let served = gateway.clone();
            let task = tokio::spawn(async move {
                let _ = roomcast_gateway::axum::serve(listener, served).await;
            });
            Server {
                addr,
                gateway,
                stop: Some(Box::new(move || task.abort())),
            }
        }
        Adapter::Actix => {
            let server =
                roomcast_gateway::actix::start(gateway.clone(), "127.0.0.1:0".parse().unwrap(), 1)
                    .unwrap();
            Server {
                addr: server.addr,
                gateway,
                stop: Some(Box::new(move || server.stop())),
            }
        }
    }
}

/// An engine with the super admin `host`, and a room `lobby` it owns (and left).
async fn engine() -> (Engine, RoomId) {
    engine_with(roomcast::Limits::default()).await
}

async fn engine_with(limits: roomcast::Limits) -> (Engine, RoomId) {
    let engine = Engine::builder().limits(limits).build().await.unwrap();
    engine.add_super_admin("host").await.unwrap();
    let host = engine.login("host").await.unwrap();
    let room = host
        .chat_room_manager()
        .create_chat_room(roomcast::CreateChatRoomOptions::new("lobby"))
        .await
        .unwrap()
        .room_id;
    host.logout();
    (engine, room)
}

async fn start(adapter: Adapter, config: GatewayConfig) -> (Server, RoomId) {
    let (engine, room) = engine().await;
    let gateway = Gateway::new(engine, tokens(), config);
    (serve(adapter, gateway).await, room)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a client read.
#[derive(Debug)]
enum Got {
    Json(Value),
    Close(u16, String),
    Ping,
    End,
}

struct Client {
    ws: Ws,
    next_id: u64,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        let mut c = Client { ws, next_id: 1 };
        let hello = c.expect("hello", |v| v["type"] == "hello").await;
        assert_eq!(hello["protocol"], 1);
        c
    }

    async fn login(addr: SocketAddr, user: &str) -> Client {
        let mut c = Client::connect(addr).await;
        let r = c.call(json!({"op": "login", "token": token(user)})).await;
        assert_eq!(r["type"], "reply", "{r}");
        c
    }

    async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    async fn read(&mut self) -> Got {
        let next = tokio::time::timeout(DEADLINE, self.ws.next())
            .await
            .expect("a frame within the deadline");
        match next {
            Some(Ok(Message::Text(t))) => Got::Json(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(frame))) => match frame {
                Some(f) => Got::Close(u16::from(f.code), f.reason.to_string()),
                None => Got::Close(1005, String::new()),
            },
            Some(Ok(Message::Ping(_))) => Got::Ping,
            Some(Ok(_)) => Got::Json(Value::Null),
            Some(Err(_)) | None => Got::End,
        }
    }

    /// The next JSON frame `pick` accepts; panics on a close.
    async fn expect(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        loop {
            match self.read().await {
                Got::Json(v) if pick(&v) => return v,
                Got::Json(_) | Got::Ping => {}
                other => panic!("waiting for {what}, got {other:?}"),
            }
        }
    }

    /// Sends a request with a fresh id and returns its answer (reply or error).
    async fn call(&mut self, mut request: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        request["id"] = json!(id);
        self.send(request).await;
        self.expect("an answer", |v| {
            v["id"] == id && (v["type"] == "reply" || v["type"] == "error")
        })
        .await
    }

    /// Frames until the close, which it returns (code, reason).
    async fn closed(&mut self) -> (u16, String, Vec<Value>) {
        let mut seen = Vec::new();
        loop {
            match self.read().await {
                Got::Json(v) => seen.push(v),
                Got::Ping => {}
                Got::Close(code, reason) => return (code, reason, seen),
                Got::End => return (1006, String::new(), seen),
            }
        }
    }
}

/// Runs `test` on both adapters, each to its end, and fails with what failed on each.
async fn each_adapter<F, Fut>(test: F)
where
    F: Fn(Adapter) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut failures = Vec::new();
    for adapter in ADAPTERS {
        eprintln!("-- {adapter:?}");
        if let Err(e) = tokio::spawn(test(adapter)).await {
            let why = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            failures.push(format!("{adapter:?}: {why}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Polls `f` until it holds, within the deadline.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers of this review.

fn no_limits() -> roomcast::Limits {
    roomcast::Limits::default()
        .with_api_calls_per_user_per_second(None)
        .with_room_delivery_rate(None)
        .with_user_messages_per_window(None)
}

async fn start_unlimited(adapter: Adapter, config: GatewayConfig) -> (Server, RoomId) {
    let (engine, room) = engine_with(no_limits()).await;
    let gateway = Gateway::new(engine, tokens(), config);
    (serve(adapter, gateway).await, room)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

impl Client {
    async fn try_connect(addr: SocketAddr) -> Result<Client, (u16, String)> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        let mut c = Client { ws, next_id: 1 };
        match c.read().await {
            Got::Json(v) if v["type"] == "hello" => Ok(c),
            Got::Close(code, reason) => Err((code, reason)),
            other => Err((0, format!("{other:?}"))),
        }
    }

    async fn raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next raw message (ping/pong included), or None at the end.
    async fn next_raw(&mut self) -> Option<Message> {
        match tokio::time::timeout(DEADLINE, self.ws.next())
            .await
            .expect("a frame within the deadline")
        {
            Some(Ok(m)) => Some(m),
            _ => None,
        }
    }

    /// Every answer (reply/error) and message frame up to the answer with `id`.
    async fn until_answer(&mut self, id: u64) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            match self.read().await {
                Got::Json(v) => {
                    let done = v["id"] == id && (v["type"] == "reply" || v["type"] == "error");
                    seen.push(v);
                    if done {
                        return seen;
                    }
                }
                Got::Ping => {}
                other => panic!("waiting for answer {id}, got {other:?} after {seen:?}"),
            }
        }
    }
}

fn answers(frames: &[Value]) -> Vec<&Value> {
    frames
        .iter()
        .filter(|v| v["type"] == "reply" || v["type"] == "error")
        .collect()
}

fn message_seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| v["seq"].as_u64().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Authentication.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_logins_of_one_user_never_exceed_the_per_user_limit() {
    each_adapter(|adapter| async move {
        let config = GatewayConfig::default().with_max_connections_per_user(2);
        let (server, _) = start(adapter, config).await;
        let addr = server.addr;
        // 24 sockets, all past hello, then all log in as ann (in three spellings) at once.
        let mut clients = Vec::new();
        for _ in 0..24 {
            clients.push(Client::connect(addr).await);
        }
        let gate = Arc::new(tokio::sync::Barrier::new(clients.len()));
        let ok = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for (i, mut c) in clients.into_iter().enumerate() {
            let gate = gate.clone();
            let ok = ok.clone();
            tasks.push(tokio::spawn(async move {
                let name = ["ann", "Ann", "ANN"][i % 3];
                gate.wait().await;
                let r = c.call(json!({"op": "login", "token": token(name)})).await;
                if r["type"] == "reply" {
                    ok.fetch_add(1, Ordering::SeqCst);
                }
                c // kept open
            }));
        }
        let mut kept = Vec::new();
        for t in tasks {
            kept.push(t.await.unwrap());
        }
        assert_eq!(ok.load(Ordering::SeqCst), 2, "logins accepted");
        assert!(server.gateway.connections_of("ann") <= 2);
        assert_eq!(server.gateway.connections_of("ANN"), 2);
        drop(kept);
        let g = server.gateway.clone();
        eventually("all released", || g.connections() == 0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_connects_never_exceed_the_total_limit() {
    each_adapter(|adapter| async move {
        let config = GatewayConfig::default().with_max_connections(4);
        let (server, _) = start(adapter, config).await;
        let addr = server.addr;
        let gate = Arc::new(tokio::sync::Barrier::new(40));
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let gate = gate.clone();
            tasks.push(tokio::spawn(async move {
                gate.wait().await;
                Client::try_connect(addr).await
            }));
        }
        let mut admitted = Vec::new();
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(c) => admitted.push(c),
                Err((code, _)) => {
                    assert_eq!(code, close::TRY_AGAIN_LATER);
                    refused += 1
                }
            }
        }
        assert_eq!(admitted.len(), 4, "admitted");
        assert_eq!(refused, 36);
        assert!(server.gateway.connections() <= 4);
        drop(admitted);
        let g = server.gateway.clone();
        eventually("all released", || g.connections() == 0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_pipelined_with_requests_is_answered_first_and_in_order() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let mut c = Client::connect(server.addr).await;
        // Everything in one go, without waiting for the login's answer.
        c.send(json!({"op": "login", "id": 1, "token": token("pip")}))
            .await;
        c.send(json!({"op": "join", "id": 2, "room": room})).await;
        c.send(json!({"op": "send", "id": 3, "room": room, "text": "hi"}))
            .await;
        c.send(json!({"op": "login", "id": 4, "token": token("pip")}))
            .await;
        c.send(json!({"op": "ping", "id": 5})).await;
        let frames = c.until_answer(5).await;
        let got: Vec<(Value, Value)> = answers(&frames)
            .iter()
            .map(|v| (v["id"].clone(), v["type"].clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (json!(1), json!("reply")),
                (json!(2), json!("reply")),
                (json!(3), json!("reply")),
                (json!(4), json!("error")),
                (json!(5), json!("reply")),
            ],
            "{frames:?}"
        );
    })
    .await;
}

/// An authenticator that takes its time (a database), or never answers.
struct Slow(Option<Duration>);

impl roomcast_gateway::Authenticator for Slow {
    fn authenticate<'a>(
        &'a self,
        credentials: &'a roomcast_gateway::Credentials,
    ) -> roomcast_gateway::AuthFuture<'a> {
        Box::pin(async move {
            match self.0 {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
            roomcast::UserId::new(credentials.user.as_deref().unwrap_or("x"))
                .map_err(|e| roomcast_gateway::AuthError::new(e.to_string()))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_authenticator_keeps_pipelined_requests_in_order() {
    each_adapter(|adapter| async move {
        let (engine, lobby) = engine().await;
        let room = lobby.to_string();
        let gateway = Gateway::new(
            engine,
            Slow(Some(Duration::from_millis(200))),
            GatewayConfig::default(),
        );
        let server = serve(adapter, gateway).await;
        let mut c = Client::connect(server.addr).await;
        c.send(json!({"op": "login", "id": 1, "user": "sloth"}))
            .await;
        c.send(json!({"op": "join", "id": 2, "room": room})).await;
        c.send(json!({"op": "ping", "id": 3})).await;
        let frames = c.until_answer(3).await;
        let a = answers(&frames);
        assert_eq!(
            a.iter().map(|v| v["type"].clone()).collect::<Vec<_>>(),
            [json!("reply"), json!("reply"), json!("reply")],
            "{frames:?}"
        );
    })
    .await;
}

// FINDING: an authenticator that never answers (a hung database call) holds the connection
// forever: `login_timeout` ("a connection not logged in this long after opening is closed
// (4002)") does not fire while the login is being checked, and no frame at all comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_authenticator_does_not_escape_the_login_timeout() {
    each_adapter(|adapter| async move {
        let (engine, _) = engine().await;
        let config = GatewayConfig::default().with_login_timeout(Duration::from_millis(500));
        let server = serve(adapter, Gateway::new(engine, Slow(None), config)).await;
        let mut c = Client::connect(server.addr).await;
        c.send(json!({"op": "login", "id": 1, "user": "stuck"}))
            .await;
        let got = tokio::time::timeout(Duration::from_secs(5), c.closed()).await;
        let code = got.map(|(code, _, _)| code);
        assert_eq!(
            code,
            Ok(close::LOGIN_TIMEOUT),
            "closed within 5 s of a 500 ms login timeout"
        );
        let g = server.gateway.clone();
        eventually("released", || g.connections() == 0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_and_hostile_tokens() {
    each_adapter(|adapter| async move {
        let (server, _) = start(adapter, GatewayConfig::default()).await;
        let good = token("host");
        let parts: Vec<&str> = good.split('.').collect();
        // alg "none" with host as subject; a payload swapped under a valid signature; an
        // empty token; a token with a trailing dot.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJob3N0IiwiZXhwIjo5OTk5OTk5OTk5LCJpYXQiOjAsImlzcyI6InJvb21jYXN0In0.";
        let bob = token("bob");
        let swapped = format!("{}.{}.{}", parts[0], bob.split('.').nth(1).unwrap(), parts[2]);
        for bad in [none.to_string(), swapped, String::new(), format!("{good}.")] {
            let mut c = Client::connect(server.addr).await;
            let e = c.call(json!({"op": "login", "token": bad})).await;
            assert_eq!(e["code"], 202, "{bad}: {e}");
            assert_eq!(c.closed().await.0, close::AUTH_FAILED);
        }
        // Within the documented 5 s of leeway.
        let recent = tokens()
            .issue_until("late", std::time::SystemTime::now() - Duration::from_secs(2))
            .unwrap();
        let mut c = Client::connect(server.addr).await;
        let r = c.call(json!({"op": "login", "token": recent})).await;
        assert_eq!(r["type"], "reply", "{r}");
        // Odd but valid ids fold to lower case.
        let mut c = Client::connect(server.addr).await;
        let r = c
            .call(json!({"op": "login", "token": token("Odd.User-1_X")}))
            .await;
        assert_eq!(r["user"], "odd.user-1_x");
        assert_eq!(server.gateway.connections_of("ODD.USER-1_X"), 1);
        // Tokens cannot be issued for invalid ids.
        assert!(tokens().issue("", Duration::from_secs(5)).is_err());
        assert!(tokens().issue("a b", Duration::from_secs(5)).is_err());
        assert!(tokens().issue(&"a".repeat(10_000), Duration::from_secs(5)).is_err());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_mode_refuses_every_spelling_of_a_super_admin_even_one_added_later() {
    each_adapter(|adapter| async move {
        let (engine, _) = engine().await;
        let gateway = Gateway::new(
            engine.clone(),
            InsecureAuthenticator::trust_client_user_ids(),
            GatewayConfig::default(),
        );
        let server = serve(adapter, gateway).await;
        engine.add_super_admin("boss").await.unwrap();
        for name in ["HOST", "Host", "boss", "BOSS"] {
            let mut c = Client::connect(server.addr).await;
            let e = c.call(json!({"op": "login", "user": name})).await;
            assert_eq!(e["code"], 202, "{name}: {e}");
            assert_eq!(c.closed().await.0, close::AUTH_FAILED);
        }
        // A token is no way around it either (the insecure authenticator reads `user`).
        let mut c = Client::connect(server.addr).await;
        let e = c
            .call(json!({"op": "login", "token": token("host"), "user": "eve"}))
            .await;
        assert_eq!(
            (&e["type"], &e["user"], &e["super_admin"]),
            (&json!("reply"), &json!("eve"), &json!(false))
        );
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Frames.

/// A ping request padded (with `ch`) to exactly `bytes` bytes of JSON.
fn padded_ping(id: u64, bytes: usize, ch: char) -> String {
    let head = format!(r#"{{"op":"ping","id":{id},"pad":""#);
    let tail = r#""}"#;
    let room = bytes - head.len() - tail.len();
    let n = room / ch.len_utf8();
    let mut s = head;
    for _ in 0..n {
        s.push(ch);
    }
    for _ in 0..room - n * ch.len_utf8() {
        s.push('x');
    }
    s.push_str(tail);
    assert_eq!(s.len(), bytes);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_frame_counts_bytes_exactly_with_multibyte_text() {
    each_adapter(|adapter| async move {
        let config = GatewayConfig::default()
            .with_max_frame(1024)
            .with_transport_max_frame(64 * 1024);
        let (server, _) = start(adapter, config).await;
        let mut c = Client::login(server.addr, "bytes").await;
        for (id, bytes, ch, ok) in [
            (10, 1024, 'x', true),
            (11, 1025, 'x', false),
            (12, 1024, '😀', true),
            (13, 1025, '😀', false),
            (14, 1025, 'é', false),
        ] {
            c.raw(Message::Text(padded_ping(id, bytes, ch).into()))
                .await;
            let v = c
                .expect("answer", |v| v["type"] == "reply" || v["type"] == "error")
                .await;
            if ok {
                assert_eq!(
                    (&v["type"], &v["id"]),
                    (&json!("reply"), &json!(id)),
                    "{bytes} {ch}: {v}"
                );
            } else {
                assert_eq!(v["code"], 510, "{bytes} {ch}: {v}");
            }
        }
    })
    .await;
}

fn fragment(data: &str, first: bool, last: bool) -> Message {
    let op = if first {
        OpCode::Data(Data::Text)
    } else {
        OpCode::Data(Data::Continue)
    };
    Message::Frame(Frame::message(data.as_bytes().to_vec(), op, last))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_frames_are_reassembled_and_limited_as_a_whole() {
    each_adapter(|adapter| async move {
        let config = GatewayConfig::default()
            .with_max_frame(1024)
            .with_transport_max_frame(8 * 1024);
        let (server, _) = start(adapter, config).await;
        let mut c = Client::login(server.addr, "frag").await;
        // A request in three pieces, with a ping between two of them.
        let text = r#"{"op":"ping","id":21}"#;
        c.raw(fragment(&text[..5], true, false)).await;
        c.raw(fragment(&text[5..12], false, false)).await;
        c.raw(Message::Ping(b"mid".to_vec().into())).await;
        c.raw(fragment(&text[12..], false, true)).await;
        let mut pong = false;
        loop {
            match c.next_raw().await.expect("open") {
                Message::Pong(p) => {
                    assert_eq!(&p[..], b"mid");
                    pong = true;
                }
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    assert_eq!((&v["type"], &v["id"]), (&json!("reply"), &json!(21)), "{v}");
                    break;
                }
                _ => {}
            }
        }
        if !pong {
            match c.next_raw().await.expect("open") {
                Message::Pong(p) => assert_eq!(&p[..], b"mid"),
                other => panic!("no pong: {other:?}"),
            }
        }
        // Pieces of 500 bytes adding to 2,000: above max_frame, under the transport limit.
        let big = padded_ping(22, 2000, 'x');
        for (i, piece) in big.as_bytes().chunks(500).enumerate() {
            let piece = std::str::from_utf8(piece).unwrap();
            c.raw(fragment(piece, i == 0, i == 3)).await;
        }
        let v = c.expect("510", |v| v["type"] == "error").await;
        assert_eq!(v["code"], 510, "{v}");
        let r = c.call(json!({"op": "ping"})).await;
        assert_eq!(r["type"], "reply");
        // Pieces of 1,000 bytes adding to 20,000: above the transport limit though none is.
        let huge = padded_ping(23, 20_000, 'x');
        let pieces: Vec<&[u8]> = huge.as_bytes().chunks(1000).collect();
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            let piece = std::str::from_utf8(piece).unwrap();
            if c.ws
                .send(fragment(piece, i == 0, i == n - 1))
                .await
                .is_err()
            {
                break;
            }
        }
        let (code, _, _) = c.closed().await;
        assert_eq!(code, close::TOO_BIG);
        let g = server.gateway.clone();
        eventually("released", || g.connections() == 0).await;
    })
    .await;
}

// FINDING (minor): a text frame that is not UTF-8, or a continuation frame with nothing to
// continue, ends the TCP connection without a close frame (the client sees 1006), where
// RFC 6455 says to close with 1007 and 1002. The connection is released either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_and_protocol_violations_close_with_their_codes() {
    each_adapter(|adapter| async move {
        let (server, _) = start(adapter, GatewayConfig::default()).await;
        let mut c = Client::login(server.addr, "utf").await;
        c.raw(Message::Frame(Frame::message(
            vec![b'{', 0xff, 0xfe, b'}'],
            OpCode::Data(Data::Text),
            true,
        )))
        .await;
        let utf8 = c.closed().await.0;
        let mut c = Client::login(server.addr, "cont").await;
        c.raw(fragment("abc", false, true)).await;
        let cont = c.closed().await.0;
        let g = server.gateway.clone();
        eventually("released", || g.connections() == 0).await;
        assert_eq!(
            (utf8, cont),
            (1007, 1002),
            "invalid UTF-8; a stray continuation"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_but_never_reads_pongs_is_heard_and_stays() {
    each_adapter(|adapter| async move {
        let config = GatewayConfig::default()
            .with_heartbeat_interval(Duration::from_millis(100))
            .with_idle_timeout(Duration::from_millis(500));
        let (server, _) = start(adapter, config).await;
        let mut c = Client::login(server.addr, "talker").await;
        // It writes a request every 50 ms for 1.5 s and reads nothing (so it never pongs).
        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
        let mut sent = 0u64;
        while tokio::time::Instant::now() < until {
            sent += 1;
            if c.ws
                .send(Message::Text(
                    json!({"op": "ping", "id": sent}).to_string().into(),
                ))
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let frames = c.until_answer(sent).await;
        assert_eq!(answers(&frames).len() as u64, sent);
        assert_eq!(server.gateway.connections(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_timeout_is_not_reset_by_other_requests() {
    each_adapter(|adapter| async move {
        let config = GatewayConfig::default().with_login_timeout(Duration::from_millis(300));
        let (server, _) = start(adapter, config).await;
        let mut c = Client::connect(server.addr).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut id = 0;
        let code = loop {
            assert!(tokio::time::Instant::now() < deadline, "never closed");
            id += 1;
            if c.ws
                .send(Message::Text(
                    json!({"op": "ping", "id": id}).to_string().into(),
                ))
                .await
                .is_err()
            {
                break c.closed().await.0;
            }
            match tokio::time::timeout(Duration::from_millis(50), c.ws.next()).await {
                Ok(Some(Ok(Message::Close(f)))) => break f.map_or(1005, |f| u16::from(f.code)),
                Ok(None) | Ok(Some(Err(_))) => break 1006,
                _ => {}
            }
        };
        assert_eq!(code, close::LOGIN_TIMEOUT);
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Resume.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_while_messages_keep_flowing_has_no_gap_and_no_duplicate() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start_unlimited(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let addr = server.addr;
        let mut alice = Client::login(addr, "alice").await;
        alice.call(json!({"op": "join", "room": room})).await;
        let mut bob = Client::login(addr, "bob").await;
        bob.call(json!({"op": "join", "room": room})).await;
        const N: u64 = 400;
        let r2 = room.clone();
        let sender = tokio::spawn(async move {
            for i in 0..N {
                let r = alice
                    .call(json!({"op": "send", "room": r2, "text": format!("m{i}")}))
                    .await;
                assert_eq!(r["type"], "reply", "{r}");
            }
            alice
        });
        let mut all = Vec::new();
        let mut last = 0;
        // Three reconnects while alice keeps sending, each after a few messages.
        for _ in 0..3 {
            for _ in 0..20 {
                let m = bob.expect("live", |v| v["type"] == "message").await;
                last = m["seq"].as_u64().unwrap();
                all.push(last);
            }
            drop(bob);
            bob = Client::login(addr, "bob").await;
            let r = bob
                .call(json!({"op": "join", "room": room, "since": last}))
                .await;
            assert_eq!(r["type"], "reply", "{r}");
        }
        while last < N {
            let m = bob.expect("rest", |v| v["type"] == "message").await;
            last = m["seq"].as_u64().unwrap();
            all.push(last);
        }
        sender.await.unwrap();
        let want: Vec<u64> = (1..=N).collect();
        assert_eq!(all, want, "no gap, no duplicate");
    })
    .await;
}

// FINDING: `join` with a `since` beyond the room's last seq is accepted, and then every live
// message with a seq up to `since` is silently dropped on that connection (seq 4 never comes
// when since = 1000): a client with a stale or wrong seq (a recreated room, a restored
// engine, a client bug) goes deaf with no error, no `gap`, no `missed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_beyond_the_last_seq_does_not_swallow_later_live_messages() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start_unlimited(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let mut alice = Client::login(server.addr, "alice").await;
        alice.call(json!({"op": "join", "room": room})).await;
        for i in 0..3 {
            alice
                .call(json!({"op": "send", "room": room, "text": format!("a{i}")}))
                .await;
        }
        let mut bob = Client::login(server.addr, "bob").await;
        let r = bob
            .call(json!({"op": "join", "room": room, "since": 1000}))
            .await;
        // Either refused as invalid, or accepted; if accepted, live messages must still come.
        if r["type"] == "error" {
            assert_eq!(r["code"], 110, "{r}");
            return;
        }
        alice
            .call(json!({"op": "send", "room": room, "text": "live"}))
            .await;
        bob.send(json!({"op": "ping", "id": 99})).await;
        // Wait for the message with a deadline; the ping's answer alone is not enough.
        let frames = bob.until_answer(99).await;
        let mut seqs = message_seqs(&frames);
        if seqs.is_empty() {
            let got = tokio::time::timeout(
                Duration::from_secs(3),
                bob.expect("live", |v| v["type"] == "message"),
            )
            .await;
            seqs = got
                .map(|m| vec![m["seq"].as_u64().unwrap()])
                .unwrap_or_default();
        }
        assert_eq!(
            seqs,
            [4],
            "the live message after a `since` beyond the room's last seq"
        );
    })
    .await;
}

// FINDING: the docs of `join` promise that with `since`, "nothing is sent twice on this
// connection"; joining again with an older `since` on the same connection re-sends messages
// that connection already got live (3, 4, 5 twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_again_with_since_on_the_same_connection_sends_nothing_twice() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start_unlimited(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let mut alice = Client::login(server.addr, "alice").await;
        alice.call(json!({"op": "join", "room": room})).await;
        let mut bob = Client::login(server.addr, "bob").await;
        bob.call(json!({"op": "join", "room": room})).await;
        for i in 0..5 {
            alice
                .call(json!({"op": "send", "room": room, "text": format!("a{i}")}))
                .await;
        }
        for _ in 0..5 {
            bob.expect("live", |v| v["type"] == "message").await;
        }
        let r = bob
            .call(json!({"op": "join", "room": room, "since": 2}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        bob.send(json!({"op": "ping", "id": 500})).await;
        let frames = bob.until_answer(500).await;
        assert_eq!(
            message_seqs(&frames),
            Vec::<u64>::new(),
            "3..5 were sent on this connection already"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_resuming_gets_707_and_no_history() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start_unlimited(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let mut host = Client::login(server.addr, "host").await;
        let r = host
            .call(json!({"op": "join", "room": room, "since": 0}))
            .await;
        let _ = r;
        let mut bob = Client::login(server.addr, "bob").await;
        bob.call(json!({"op": "join", "room": room})).await;
        host.call(json!({"op": "send", "room": room, "text": "before"}))
            .await;
        bob.expect("live", |v| v["type"] == "message").await;
        let r = host
            .call(json!({"op": "block", "room": room, "users": ["bob"]}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        let removed = bob
            .expect("removal", |v| {
                v["type"] == "event" && v["event"] == "removed_from_chat_room"
            })
            .await;
        assert_eq!(removed["room"], room);
        host.call(json!({"op": "send", "room": room, "text": "secret"}))
            .await;
        drop(bob);
        let mut bob = Client::login(server.addr, "bob").await;
        bob.send(json!({"op": "join", "id": 1, "room": room, "since": 1}))
            .await;
        bob.send(json!({"op": "history", "id": 2, "room": room, "after": 0}))
            .await;
        bob.send(json!({"op": "ping", "id": 3})).await;
        let frames = bob.until_answer(3).await;
        let a = answers(&frames);
        assert_eq!(a[0]["code"], 707, "{frames:?}");
        assert_eq!(
            a[1]["type"], "error",
            "history of a room one is blocked from: {frames:?}"
        );
        assert!(message_seqs(&frames).is_empty(), "{frames:?}");
        // The block list shows each block's end: none for bob's, one for a timed block.
        let r = host
            .call(json!({"op": "block", "room": room, "users": ["carol"], "seconds": 600}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        let r = host.call(json!({"op": "block_list", "room": room})).await;
        assert_eq!(r["total"], 2, "{r}");
        let members = r["members"].as_array().expect("members");
        assert_eq!(members[0]["user"], "bob", "{r}");
        assert!(members[0]["expire_time"].is_null(), "{r}");
        assert_eq!(members[1]["user"], "carol", "{r}");
        assert!(members[1]["expire_time"].as_i64().is_some(), "{r}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_told_before_every_gap_in_live_messages() {
    each_adapter(|adapter| async move {
        let engine = Engine::builder()
            .limits(no_limits())
            .event_queue_capacity(16)
            .build()
            .await
            .unwrap();
        engine.add_super_admin("host").await.unwrap();
        let host = engine.login("host").await.unwrap();
        let lobby = host
            .chat_room_manager()
            .create_chat_room(roomcast::CreateChatRoomOptions::new("lobby"))
            .await
            .unwrap()
            .room_id;
        host.logout();
        let room = lobby.to_string();
        let config = GatewayConfig::default().with_write_timeout(Duration::from_secs(300));
        let server = serve(adapter, Gateway::new(engine, tokens(), config)).await;
        let mut slow = Client::login(server.addr, "slow").await;
        slow.call(json!({"op": "join", "room": room})).await;
        let mut fast = Client::login(server.addr, "fast").await;
        fast.call(json!({"op": "join", "room": room})).await;
        const N: u64 = 3000;
        let text = "z".repeat(4096);
        for _ in 0..N {
            fast.send(json!({"op": "send", "room": room, "text": text})).await;
        }
        let mut answered = 0;
        while answered < N {
            let v = fast.expect("answers", |v| v["type"] == "reply" || v["type"] == "error").await;
            assert_eq!(v["type"], "reply", "{v}");
            answered += 1;
        }
        fast.call(json!({"op": "send", "room": room, "text": "end"})).await;
        let mut last = 0;
        let mut told = false;
        let mut missed_total = 0;
        let mut unannounced = Vec::new();
        eprintln!("slow starts reading");
        while last < N + 1 {
            let got = tokio::time::timeout(Duration::from_secs(5), slow.read()).await;
            let Ok(got) = got else {
                slow.send(json!({"op": "ping", "id": 4242})).await;
                let after = slow.until_answer(4242).await;
                let info = fast.call(json!({"op": "info", "room": room})).await;
                fast.call(json!({"op": "send", "room": room, "text": "poke"})).await;
                let poke = tokio::time::timeout(Duration::from_secs(3), slow.expect("poke", |v| v["type"] == "message" || v["type"] == "missed")).await;
                eprintln!("after a poke: {:?}", poke.map(|v| (v["type"].clone(), v["seq"].clone(), v["count"].clone())));
                panic!("stuck: last {last}, missed {missed_total}, unannounced {unannounced:?}; after a ping: {:?}; members {}", after.iter().map(|v| (v["type"].clone(), v["seq"].clone(), v["count"].clone())).collect::<Vec<_>>(), info["room"]["members"]);
            };
            match got {
                Got::Json(v) if v["type"] == "message" => {
                    let seq = v["seq"].as_u64().unwrap();
                    assert!(seq > last, "out of order: {seq} after {last}");
                    if seq != last + 1 && !told {
                        unannounced.push((last, seq));
                    }
                    told = false;
                    last = seq;
                }
                Got::Json(v) if v["type"] == "missed" => {
                    told = true;
                    missed_total += v["count"].as_u64().unwrap();
                }
                Got::Json(_) | Got::Ping => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(missed_total > 0);
        assert!(unannounced.is_empty(), "gaps without `missed`: {unannounced:?}");
        // History after the last seq seen fills any gap.
        let h = slow.call(json!({"op": "history", "room": room, "after": 1, "size": 5})).await;
        assert_eq!(h["type"], "reply", "{h}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Protocol.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_gets_exactly_one_answer_in_order_with_its_id() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start_unlimited(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let mut c = Client::login(server.addr, "bob").await;
        c.call(json!({"op": "join", "room": room})).await;
        // (request, expected code: 0 for "any error")
        let cases: Vec<(Value, u32)> = vec![
            (json!({"op": "send", "room": 1, "text": "x"}), 110),
            (json!({"op": "send", "room": room}), 110),
            (json!({"op": "send", "room": room, "text": 5}), 110),
            (
                json!({"op": "send", "room": room, "text": "x", "priority": "urgent"}),
                110,
            ),
            (json!({"op": "mute", "room": room, "users": "alice"}), 110),
            (json!({"op": "mute", "room": room, "users": [1, 2]}), 110),
            (json!({"op": "kick", "room": room}), 110),
            (json!({"op": "rooms", "page": -1}), 110),
            (json!({"op": "rooms", "page": 0}), 110),
            (json!({"op": "rooms", "size": 0}), 110),
            (json!({"op": "rooms", "size": 1001}), 110),
            (json!({"op": "history", "room": room, "size": "ten"}), 110),
            (json!({"op": "history", "room": room, "before": -5}), 110),
            (json!({"op": "join", "room": "18446744073709551616"}), 700),
            (json!({"op": "join", "room": ""}), 700),
            (json!({"op": "join", "room": "-1"}), 700),
            (json!({"op": "join", "room": "0"}), 0),
            (json!({"op": "info", "room": "424242"}), 705),
            (json!({"op": "leave", "room": "424242"}), 705),
            (json!({"op": "send", "room": "424242", "text": "x"}), 705),
            (json!({"op": "members", "room": room, "size": 0}), 110),
            (json!({"op": "mute_list", "room": room}), 703),
            (
                json!({"op": "add_admin", "room": room, "user": "not a user"}),
                110,
            ),
            (json!({"op": "announce", "room": room, "text": "x"}), 703),
            (json!({"op": "destroy", "room": room}), 703),
            (json!({"op": "create", "name": "x"}), 0),
            (json!({"op": "logout", "extra": [1, 2, 3]}), u32::MAX), // skipped below
        ];
        let cases: Vec<_> = cases
            .into_iter()
            .filter(|(_, code)| *code != u32::MAX)
            .collect();
        for (i, (mut req, _)) in cases.clone().into_iter().enumerate() {
            req["id"] = json!(1000 + i);
            c.send(req).await;
        }
        // Frames that are not requests at all, and ids that are not u64: one answer each.
        for raw in [
            "[1,2]",
            "null",
            "42",
            "{\"op\":\"ping\",\"id\":\"seven\"}",
            "{\"op\":\"ping\",\"id\":-1}",
            "{\"op\":\"ping\",\"id\":1.5}",
            "{\"op\":\"ping\"} trailing",
        ] {
            c.raw(Message::Text(raw.into())).await;
        }
        c.send(json!({"op": "ping", "id": 9999})).await;
        let frames = c.until_answer(9999).await;
        let a = answers(&frames);
        assert_eq!(a.len(), cases.len() + 7 + 1, "one answer per frame: {a:?}");
        for (i, (req, code)) in cases.iter().enumerate() {
            let v = a[i];
            assert_eq!(v["id"], 1000 + i, "in order: {v} for {req}");
            assert_eq!(v["type"], "error", "{req}: {v}");
            if *code != 0 {
                assert_eq!(v["code"], *code, "{req}: {v}");
            }
        }
        for v in &a[cases.len()..cases.len() + 7] {
            assert_eq!(
                (&v["type"], &v["code"]),
                (&json!("error"), &json!(110)),
                "{v}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_pages_respect_their_documented_caps() {
    each_adapter(|adapter| async move {
        let (server, lobby) =
            start_unlimited(adapter, GatewayConfig::default().with_history_on_join(500)).await;
        let room = lobby.to_string();
        let mut c = Client::login(server.addr, "bob").await;
        c.call(json!({"op": "join", "room": room})).await;
        for i in 0..250 {
            c.send(json!({"op": "send", "id": 10_000 + i, "room": room, "text": "h"}))
                .await;
        }
        c.until_answer(10_249).await;
        let h = c
            .call(json!({"op": "history", "room": room, "size": 100000}))
            .await;
        if h["type"] == "reply" {
            let n = h["messages"].as_array().map_or(0, |m| m.len());
            assert!(n <= 200, "history size is at most 200: {n}");
        } else {
            assert_eq!(h["code"], 110);
        }
        // history_on_join is at most 200.
        let mut d = Client::login(server.addr, "dan").await;
        d.send(json!({"op": "join", "id": 1, "room": room})).await;
        d.send(json!({"op": "ping", "id": 2})).await;
        let frames = d.until_answer(2).await;
        let seqs = message_seqs(&frames);
        assert!(
            seqs.len() <= 200,
            "history on join is at most 200: {}",
            seqs.len()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_user_arrays_are_answered_promptly_and_the_socket_stays() {
    each_adapter(|adapter| async move {
        let config = GatewayConfig::default()
            .with_max_frame(4 << 20)
            .with_transport_max_frame(8 << 20);
        let (server, lobby) = start_unlimited(adapter, config).await;
        let room = lobby.to_string();
        let mut host = Client::login(server.addr, "host").await;
        host.call(json!({"op": "join", "room": room, "since": 0}))
            .await;
        let users: Vec<String> = (0..200_000).map(|i| format!("u{i}")).collect();
        for op in ["mute", "kick", "block", "unblock", "unmute"] {
            let started = std::time::Instant::now();
            let r = host
                .call(json!({"op": op, "room": room, "users": users}))
                .await;
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{op} took {:?}",
                started.elapsed()
            );
            eprintln!(
                "{op}: {} {} in {:?}",
                r["type"],
                r["code"],
                started.elapsed()
            );
        }
        let r = host.call(json!({"op": "ping"})).await;
        assert_eq!(r["type"], "reply");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Moderation through the socket.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_codes_and_events_reach_the_sockets() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start_unlimited(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let addr = server.addr;
        let mut host = Client::login(addr, "host").await;
        host.call(json!({"op": "join", "room": room, "since": 0}))
            .await;
        let mut bob = Client::login(addr, "bob").await;
        let mut carol = Client::login(addr, "carol").await;
        let mut dave = Client::login(addr, "dave").await;
        for c in [&mut bob, &mut carol, &mut dave] {
            let r = c.call(json!({"op": "join", "room": room})).await;
            assert_eq!(r["type"], "reply");
        }
        // A viewer cannot moderate.
        for req in [
            json!({"op": "mute", "room": room, "users": ["carol"]}),
            json!({"op": "unmute", "room": room, "users": ["carol"]}),
            json!({"op": "kick", "room": room, "users": ["carol"]}),
            json!({"op": "block", "room": room, "users": ["carol"]}),
            json!({"op": "mute_all", "room": room}),
            json!({"op": "unmute_all", "room": room}),
            json!({"op": "announce", "room": room, "text": "x"}),
            json!({"op": "add_admin", "room": room, "user": "bob"}),
            json!({"op": "remove_admin", "room": room, "user": "host"}),
            json!({"op": "destroy", "room": room}),
            json!({"op": "kick", "room": room, "users": ["host"]}),
        ] {
            let e = bob.call(req.clone()).await;
            assert_eq!(
                (&e["type"], &e["code"]),
                (&json!("error"), &json!(703)),
                "{req}: {e}"
            );
        }
        // Mute: the muted one is told and its send fails with 215.
        let r = host
            .call(json!({"op": "mute", "room": room, "users": ["bob"]}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        bob.expect("mute event", |v| {
            v["type"] == "event" && v["event"] == "mute_list_added"
        })
        .await;
        let e = bob
            .call(json!({"op": "send", "room": room, "text": "x"}))
            .await;
        assert_eq!(e["code"], 215, "{e}");
        // Kick: carol's socket learns it, and her send then fails with 702.
        let r = host
            .call(json!({"op": "kick", "room": room, "users": ["carol"]}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        let ev = carol
            .expect("removed", |v| {
                v["type"] == "event" && v["event"] == "removed_from_chat_room"
            })
            .await;
        assert_eq!(ev["room"], room, "{ev}");
        let e = carol
            .call(json!({"op": "send", "room": room, "text": "x"}))
            .await;
        assert_eq!(e["code"], 702, "{e}");
        // Mute-all: dave gets 219, the owner still sends.
        let r = host.call(json!({"op": "mute_all", "room": room})).await;
        assert_eq!(r["type"], "reply", "{r}");
        dave.expect("mute-all event", |v| {
            v["type"] == "event" && v["event"] == "all_member_mute_state_changed"
        })
        .await;
        let e = dave
            .call(json!({"op": "send", "room": room, "text": "x"}))
            .await;
        assert_eq!(e["code"], 219, "{e}");
        let r = host
            .call(json!({"op": "send", "room": room, "text": "owner"}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        let info = dave.call(json!({"op": "info", "room": room})).await;
        assert_eq!(info["room"]["all_muted"], true, "{info}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_second_socket_keeps_getting_messages_after_the_first_closes() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start_unlimited(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let mut alice = Client::login(server.addr, "alice").await;
        alice.call(json!({"op": "join", "room": room})).await;
        let mut tab1 = Client::login(server.addr, "bob").await;
        let r = tab1.call(json!({"op": "join", "room": room})).await;
        assert_eq!(r["type"], "reply");
        let mut tab2 = Client::login(server.addr, "bob").await;
        let r = tab2
            .call(json!({"op": "join", "room": room, "since": 0}))
            .await;
        assert_eq!(r["type"], "reply", "a second tab resumes: {r}");
        alice
            .call(json!({"op": "send", "room": room, "text": "one"}))
            .await;
        tab1.expect("one in tab 1", |v| v["type"] == "message")
            .await;
        tab2.expect("one in tab 2", |v| v["type"] == "message")
            .await;
        tab1.ws.close(None).await.unwrap();
        let g = server.gateway.clone();
        eventually("tab 1 gone", || g.connections_of("bob") == 1).await;
        alice
            .call(json!({"op": "send", "room": room, "text": "two"}))
            .await;
        let m = tab2
            .expect("two in tab 2", |v| v["type"] == "message")
            .await;
        assert_eq!(m["text"], "two");
        let r = tab2
            .call(json!({"op": "send", "room": room, "text": "still here"}))
            .await;
        assert_eq!(r["type"], "reply", "tab 2 can still send: {r}");
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_concurrent_connects_and_abrupt_drops_leaves_nothing_behind() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start_unlimited(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let addr = server.addr;
        {
            let mut c = Client::login(addr, "warm").await;
            c.call(json!({"op": "join", "room": room})).await;
            c.call(json!({"op": "send", "room": room, "text": "warm"}))
                .await;
            c.ws.close(None).await.unwrap();
        }
        let g = server.gateway.clone();
        eventually("warm-up gone", || g.connections() == 0).await;
        let fds = open_fds();
        let tasks = alive_tasks();
        for _round in 0..4 {
            let mut handles = Vec::new();
            for i in 0..100usize {
                let room = room.clone();
                handles.push(tokio::spawn(async move {
                    match i % 5 {
                        // TCP only, never upgraded.
                        0 => {
                            let s = tokio::net::TcpStream::connect(addr).await.unwrap();
                            drop(s);
                        }
                        // Upgraded, dropped before login.
                        1 => drop(Client::connect(addr).await),
                        // Dropped with a login in flight.
                        2 => {
                            let mut c = Client::connect(addr).await;
                            c.send(json!({"op": "login", "token": token(&format!("s{i}"))}))
                                .await;
                            drop(c);
                        }
                        // Dropped with requests in flight.
                        3 => {
                            let mut c = Client::login(addr, &format!("s{i}")).await;
                            c.send(json!({"op": "join", "room": room})).await;
                            c.send(json!({"op": "send", "room": room, "text": "x"}))
                                .await;
                            c.send(json!({"op": "history", "room": room})).await;
                            drop(c);
                        }
                        // Closed properly while others talk.
                        _ => {
                            let mut c = Client::login(addr, &format!("s{i}")).await;
                            c.call(json!({"op": "join", "room": room})).await;
                            let _ = c.ws.close(None).await;
                            while let Some(Ok(_)) = c.ws.next().await {}
                        }
                    }
                }));
            }
            for h in handles {
                h.await.unwrap();
            }
        }
        eventually("no connection counted", || g.connections() == 0).await;
        eventually("no socket left", || open_fds() <= fds + 2).await;
        if adapter == Adapter::Axum {
            eventually("no task left", || alive_tasks() <= tasks).await;
        }
        // And the gateway still serves.
        let mut c = Client::login(addr, "after").await;
        let r = c.call(json!({"op": "ping"})).await;
        assert_eq!(r["type"], "reply");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_during_a_long_resume_releases_everything() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start_unlimited(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let addr = server.addr;
        let mut w = Client::login(addr, "writer").await;
        w.call(json!({"op": "join", "room": room})).await;
        let text = "r".repeat(2000);
        for i in 0..3000u64 {
            w.send(json!({"op": "send", "id": 100_000 + i, "room": room, "text": text}))
                .await;
        }
        w.until_answer(102_999).await;
        w.ws.close(None).await.unwrap();
        let g = server.gateway.clone();
        eventually("writer gone", || g.connections() == 0).await;
        let fds = open_fds();
        let tasks = alive_tasks();
        for i in 0..20 {
            let mut c = Client::login(addr, &format!("reader{i}")).await;
            c.send(json!({"op": "join", "id": 1, "room": room, "since": 0}))
                .await;
            // Read a little of the resume, then the TCP connection goes.
            for _ in 0..(i * 7) {
                c.read().await;
            }
            drop(c);
        }
        eventually("no connection counted", || g.connections() == 0).await;
        eventually("no socket left", || open_fds() <= fds + 2).await;
        if adapter == Adapter::Axum {
            eventually("no task left", || alive_tasks() <= tasks).await;
        }
        // A full resume still gives every retained message once (after a `gap` for the rest),
        // then the ping's answer.
        let mut c = Client::login(addr, "full").await;
        c.send(json!({"op": "join", "id": 1, "room": room, "since": 0}))
            .await;
        c.send(json!({"op": "ping", "id": 2})).await;
        let mut seqs = Vec::new();
        let mut next = 1;
        loop {
            match c.read().await {
                Got::Json(v) if v["type"] == "message" => seqs.push(v["seq"].as_u64().unwrap()),
                Got::Json(v) if v["type"] == "gap" => next = v["next"].as_u64().unwrap(),
                Got::Json(v) if v["id"] == 2 => break,
                Got::Json(_) | Got::Ping => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(seqs, (next..=3000).collect::<Vec<u64>>());
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Shutdown.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_shutdown_while_connections_are_busy() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start_unlimited(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let addr = server.addr;
        let mut handles = Vec::new();
        let started = Arc::new(tokio::sync::Barrier::new(11));
        for i in 0..10 {
            let room = room.clone();
            let started = started.clone();
            handles.push(tokio::spawn(async move {
                let mut c = Client::login(addr, &format!("busy{i}")).await;
                c.call(json!({"op": "join", "room": room})).await;
                started.wait().await;
                // Keep sending until the socket goes.
                let mut id = 0;
                loop {
                    id += 1;
                    let m = Message::Text(
                        json!({"op": "send", "id": id, "room": room, "text": "b"})
                            .to_string()
                            .into(),
                    );
                    if c.ws.send(m).await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_millis(1), c.ws.next()).await {
                        Ok(Some(Ok(Message::Close(f)))) => {
                            return f.map_or(1005, |f| u16::from(f.code))
                        }
                        Ok(None) | Ok(Some(Err(_))) => return 1006,
                        _ => {}
                    }
                }
                c.closed().await.0
            }));
        }
        started.wait().await;
        server.gateway.shutdown();
        for h in handles {
            let code = tokio::time::timeout(DEADLINE, h)
                .await
                .expect("closed in time")
                .unwrap();
            assert_eq!(code, close::GOING_AWAY);
        }
        let g = server.gateway.clone();
        eventually("none counted", || g.connections() == 0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_shutdown_closes_logged_in_connections_with_going_away() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start_unlimited(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let mut a = Client::login(server.addr, "a").await;
        a.call(json!({"op": "join", "room": room})).await;
        server.gateway.engine().shutdown().await;
        let (code, reason, seen) = a.closed().await;
        assert_eq!(code, close::GOING_AWAY, "{reason} {seen:?}");
    })
    .await;
}

// FINDING: after the engine shuts down, a connection not yet logged in stays open until its
// login timeout (then closes 4002, "no login"), and new connections are still accepted with
// `hello`, though `close::GOING_AWAY` is documented as "the gateway or its engine is shutting
// down". A load balancer keeps routing clients to a gateway whose engine is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_shutdown_closes_every_connection_and_refuses_new_ones() {
    each_adapter(|adapter| async move {
        let (server, _) = start_unlimited(adapter, GatewayConfig::default()).await;
        let mut waiting = Client::connect(server.addr).await;
        server.gateway.engine().shutdown().await;
        let waited = tokio::time::timeout(Duration::from_secs(3), waiting.closed()).await;
        // 0: accepted with `hello`.
        let fresh = match Client::try_connect(server.addr).await {
            Ok(_) => 0,
            Err((code, _)) => code,
        };
        assert_eq!(
            (waited.map(|w| w.0), fresh),
            (Ok(close::GOING_AWAY), close::GOING_AWAY),
            "the connection waiting to log in (Err: still open after 3 s), and a new one"
        );
    })
    .await;
}

// FINDING: the same hung login also ignores `Gateway::shutdown` (no 1001 within 5 s): the
// socket and its connection slot are held until the authenticator returns, if ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_authenticator_does_not_block_gateway_shutdown() {
    each_adapter(|adapter| async move {
        let (engine, _) = engine().await;
        let server = serve(
            adapter,
            Gateway::new(engine, Slow(None), GatewayConfig::default()),
        )
        .await;
        let mut c = Client::connect(server.addr).await;
        c.send(json!({"op": "login", "id": 1, "user": "stuck"}))
            .await;
        // Until the login is being checked.
        c.send(json!({"op": "ping", "id": 2})).await;
        let _ = tokio::time::timeout(Duration::from_millis(300), c.ws.next()).await;
        server.gateway.shutdown();
        let got = tokio::time::timeout(Duration::from_secs(5), c.closed()).await;
        assert_eq!(got.map(|g| g.0), Ok(close::GOING_AWAY));
        let g = server.gateway.clone();
        eventually("released", || g.connections() == 0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_on_one_socket_leaves_the_users_other_socket_served() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start_unlimited(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let mut alice = Client::login(server.addr, "alice").await;
        alice.call(json!({"op": "join", "room": room})).await;
        let mut tab1 = Client::login(server.addr, "bob").await;
        tab1.call(json!({"op": "join", "room": room})).await;
        let mut tab2 = Client::login(server.addr, "bob").await;
        let r = tab2
            .call(json!({"op": "join", "room": room, "since": 0}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        tab1.send(json!({"op": "logout", "id": 1})).await;
        let (code, _, _) = tab1.closed().await;
        assert_eq!(code, close::NORMAL);
        alice
            .call(json!({"op": "send", "room": room, "text": "after logout"}))
            .await;
        let m = tab2
            .expect("the message in tab 2", |v| v["type"] == "message")
            .await;
        assert_eq!(m["text"], "after logout");
        let r = tab2
            .call(json!({"op": "send", "room": room, "text": "tab 2"}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_is_closed_by_the_write_timeout_and_released() {
    each_adapter(|adapter| async move {
        let config = GatewayConfig::default()
            .with_write_timeout(Duration::from_millis(300))
            .with_heartbeat_interval(Duration::from_secs(600))
            .with_idle_timeout(Duration::from_secs(600));
        let (server, lobby) = start_unlimited(adapter, config).await;
        let room = lobby.to_string();
        let mut stuck = Client::login(server.addr, "stuck").await;
        stuck.call(json!({"op": "join", "room": room})).await;
        let mut fast = Client::login(server.addr, "fast").await;
        fast.call(json!({"op": "join", "room": room})).await;
        let text = "w".repeat(4000);
        let g = server.gateway.clone();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        // Flood until the gateway drops the one that does not read.
        while g.connections() == 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stalled reader is still served"
            );
            for i in 0..100 {
                fast.send(json!({"op": "send", "id": i, "room": room, "text": text}))
                    .await;
            }
            fast.until_answer(99).await;
        }
        let (code, _, _) = stuck.closed().await;
        assert!([close::SLOW_READER, 1006].contains(&code), "{code}");
        let r = fast.call(json!({"op": "ping"})).await;
        assert_eq!(r["type"], "reply");
    })
    .await;
}
