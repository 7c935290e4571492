//! The gateway's connection behaviour, the same on both adapters: every test runs against
//! axum and against actix-web, through real sockets on 127.0.0.1.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast::{Engine, RoomId};
use roomcast_gateway::protocol::close;
use roomcast_gateway::{Gateway, GatewayConfig, InsecureAuthenticator, TokenAuthenticator};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
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
    engine_from(Engine::builder().limits(limits)).await
}

async fn engine_from(builder: roomcast::EngineBuilder) -> (Engine, RoomId) {
    let engine = builder.build().await.unwrap();
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

async fn each_adapter<F, Fut>(test: F)
where
    F: Fn(Adapter) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for adapter in ADAPTERS {
        eprintln!("-- {adapter:?}");
        test(adapter).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_with_events_and_ordered_answers() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let mut alice = Client::login(server.addr, "alice").await;
        let mut bob = Client::login(server.addr, "bob").await;
        let joined = alice.call(json!({"op": "join", "room": room})).await;
        assert_eq!(joined["room"]["name"], "lobby");
        assert_eq!(joined["room"]["owner"], "host");
        bob.call(json!({"op": "join", "room": room})).await;
        let event = alice.expect("bob's join", |v| v["type"] == "event").await;
        assert_eq!(
            (&event["event"], &event["participant"], &event["room"]),
            (&json!("member_joined"), &json!("bob"), &json!(room))
        );
        let sent = alice
            .call(json!({"op": "send", "room": room, "text": "<b>hi</b> bob"}))
            .await;
        assert_eq!(sent["seq"], 1, "{sent}");
        let got = bob.expect("the message", |v| v["type"] == "message").await;
        assert_eq!(
            (&got["from"], &got["text"], &got["seq"], &got["history"]),
            (
                &json!("alice"),
                &json!("<b>hi</b> bob"),
                &json!(1),
                &json!(false)
            )
        );
        // Pipelined requests are answered in order, each with its id.
        for i in 0..5 {
            alice
                .send(json!({"op": "send", "id": 100 + i, "room": room, "text": format!("m{i}")}))
                .await;
        }
        for i in 0..5 {
            let r = alice.expect("answers", |v| v["type"] == "reply").await;
            assert_eq!(r["id"], 100 + i);
        }
        // A member who joins later gets the newest messages as history, in order.
        let mut carol = Client::login(server.addr, "carol").await;
        carol.call(json!({"op": "join", "room": room})).await;
        let mut seqs = Vec::new();
        for _ in 0..6 {
            let m = carol.expect("history", |v| v["type"] == "message").await;
            assert_eq!(m["history"], true);
            seqs.push(m["seq"].as_u64().unwrap());
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
        // Errors carry roomcast's codes.
        let e = bob
            .call(json!({"op": "kick", "room": room, "users": ["alice"]}))
            .await;
        assert_eq!((&e["type"], &e["code"]), (&json!("error"), &json!(703)));
        let e = bob.call(json!({"op": "join", "room": "12x"})).await;
        assert_eq!(e["code"], 700);
        let e = bob.call(json!({"op": "join", "room": "999"})).await;
        assert_eq!(e["code"], 705);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_authenticated() {
    each_adapter(|adapter| async move {
        let (server, _) = start(adapter, GatewayConfig::default()).await;
        // Before login, requests are refused (201) and the connection stays.
        let mut c = Client::connect(server.addr).await;
        let e = c.call(json!({"op": "rooms"})).await;
        assert_eq!(e["code"], 201);
        // A user id is not a credential here.
        let e = c.call(json!({"op": "login", "user": "host"})).await;
        assert_eq!(e["code"], 202);
        let (code, reason, _) = c.closed().await;
        assert_eq!(
            (code, reason.as_str()),
            (close::AUTH_FAILED, "a token is required")
        );
        // Nor is a forged or an expired token.
        let other = TokenAuthenticator::new(b"another secret of thirty-two bytes!!")
            .unwrap()
            .issue("host", Duration::from_secs(60))
            .unwrap();
        let expired = tokens()
            .issue_until(
                "host",
                std::time::SystemTime::now() - Duration::from_secs(120),
            )
            .unwrap();
        for (bad, why) in [
            (other, "not valid"),
            (expired, "expired"),
            ("x.y.z".into(), "not valid"),
        ] {
            let mut c = Client::connect(server.addr).await;
            let e = c.call(json!({"op": "login", "token": bad})).await;
            assert_eq!(e["code"], 202);
            let (code, reason, _) = c.closed().await;
            assert_eq!(code, close::AUTH_FAILED);
            assert!(reason.contains(why), "{reason}");
        }
        // The host's own token makes it the super admin it is.
        let mut host = Client::connect(server.addr).await;
        let r = host
            .call(json!({"op": "login", "token": token("host")}))
            .await;
        assert_eq!(
            (&r["user"], &r["super_admin"]),
            (&json!("host"), &json!(true))
        );
        let created = host.call(json!({"op": "create", "name": "second"})).await;
        assert_eq!(created["room"]["owner"], "host");
        let mut bob = Client::login(server.addr, "bob").await;
        let e = bob.call(json!({"op": "create", "name": "mine"})).await;
        assert_eq!(e["type"], "error");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_mode_trusts_typed_names_but_never_a_super_admins() {
    each_adapter(|adapter| async move {
        let (engine, _) = engine().await;
        let gateway = Gateway::new(
            engine,
            InsecureAuthenticator::trust_client_user_ids(),
            GatewayConfig::default(),
        );
        let server = serve(adapter, gateway).await;
        let mut bob = Client::connect(server.addr).await;
        let r = bob.call(json!({"op": "login", "user": "Bob"})).await;
        assert_eq!(r["user"], "bob");
        let mut fake = Client::connect(server.addr).await;
        let e = fake.call(json!({"op": "login", "user": "host"})).await;
        assert_eq!(e["code"], 202);
        assert_eq!(fake.closed().await.0, close::AUTH_FAILED);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_login_on_one_socket_is_refused_and_events_come_once() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let mut bob = Client::login(server.addr, "bob").await;
        let e = bob
            .call(json!({"op": "login", "token": token("bob")}))
            .await;
        assert_eq!(e["code"], 200);
        bob.call(json!({"op": "join", "room": room})).await;
        let mut alice = Client::login(server.addr, "alice").await;
        alice.call(json!({"op": "join", "room": room})).await;
        alice
            .call(json!({"op": "send", "room": room, "text": "once"}))
            .await;
        // Everything bob gets before the answer to a later ping: the join and message, once.
        bob.send(json!({"op": "ping", "id": 77})).await;
        let mut messages = 0;
        loop {
            match bob.read().await {
                Got::Json(v) if v["id"] == 77 => break,
                Got::Json(v) if v["type"] == "message" => messages += 1,
                _ => {}
            }
        }
        if messages == 0 {
            bob.expect("the message", |v| v["type"] == "message").await;
            messages = 1;
        }
        assert_eq!(messages, 1);
        bob.send(json!({"op": "ping", "id": 78})).await;
        let next = bob.expect("pong", |v| v["type"] != "event").await;
        assert_eq!(next["id"], 78, "no second copy: {next}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_the_connection_stays() {
    each_adapter(|adapter| async move {
        let config = GatewayConfig::default()
            .with_max_frame(1024)
            .with_transport_max_frame(64 * 1024);
        let (server, lobby) = start(adapter, config).await;
        let mut c = Client::login(server.addr, "bob").await;
        c.send(json!({"op": "send", "room": lobby.to_string(), "text": "x".repeat(2000)}))
            .await;
        let e = c.expect("too big", |v| v["type"] == "error").await;
        assert_eq!((&e["op"], &e["code"]), (&json!("frame"), &json!(510)));
        c.ws.send(Message::Binary(vec![1, 2, 3].into()))
            .await
            .unwrap();
        let e = c.expect("binary", |v| v["type"] == "error").await;
        assert_eq!((&e["op"], &e["code"]), (&json!("binary"), &json!(110)));
        c.ws.send(Message::Text("{not json".into())).await.unwrap();
        let e = c.expect("parse", |v| v["type"] == "error").await;
        assert_eq!((&e["op"], &e["code"]), (&json!("parse"), &json!(110)));
        let e = c.call(json!({"op": "teleport"})).await;
        assert_eq!((&e["op"], &e["code"]), (&json!("parse"), &json!(110)));
        let e = c.call(json!({"op": "join"})).await;
        assert_eq!(e["code"], 110);
        let r = c.call(json!({"op": "ping"})).await;
        assert_eq!(r["type"], "reply");
        // Above the transport's limit: closed with 1009, and a reason.
        c.ws.send(Message::Text("y".repeat(100 * 1024).into()))
            .await
            .unwrap();
        let (code, _, _) = c.closed().await;
        assert_eq!(code, close::TOO_BIG);
    })
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connect_login_close_cycles_leave_nothing_behind() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        // Warm up (the first connection opens the server's lazily made things).
        {
            let mut c = Client::login(server.addr, "warm").await;
            c.call(json!({"op": "join", "room": room})).await;
            c.ws.close(None).await.unwrap();
        }
        let gateway = server.gateway.clone();
        eventually("the warm-up connection goes", || gateway.connections() == 0).await;
        let fds = open_fds();
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        for i in 0..1000 {
            let mut c = Client::login(server.addr, &format!("u{}", i % 50)).await;
            if i % 2 == 0 {
                c.call(json!({"op": "join", "room": room})).await;
            }
            if i % 3 == 0 {
                // An abrupt end: no close frame, the TCP connection just goes.
                drop(c);
            } else {
                c.ws.close(None).await.unwrap();
            }
        }
        eventually("every connection is released", || {
            gateway.connections() == 0
        })
        .await;
        eventually("no socket is left open (CLOSE-WAIT included)", || {
            open_fds() <= fds + 2
        })
        .await;
        eventually("no task is left", || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
                <= tasks
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_stays_bounded_and_is_told_what_it_missed() {
    each_adapter(|adapter| async move {
        let limits = roomcast::Limits::default()
            .with_api_calls_per_user_per_second(None)
            .with_room_delivery_rate(None)
            .with_user_messages_per_window(None);
        // A user's queue of 256 events: what a stalled reader costs is that, plus its socket.
        let (engine, lobby) =
            engine_from(Engine::builder().limits(limits).event_queue_capacity(256)).await;
        let room = lobby.to_string();
        // Patient with the reader that stalls (the default closes it after 10 s: 4009).
        let config = GatewayConfig::default().with_write_timeout(Duration::from_secs(300));
        let gateway = Gateway::new(engine, tokens(), config);
        let server = serve(adapter, gateway).await;
        let mut slow = Client::login(server.addr, "slow").await;
        slow.call(json!({"op": "join", "room": room})).await;
        let mut fast = Client::login(server.addr, "fast").await;
        fast.call(json!({"op": "join", "room": room})).await;
        // 5,000 messages of 4 KiB while `slow` reads nothing: far more than its socket's
        // buffers and the engine's queue hold together.
        let text = "z".repeat(4096);
        for _ in 0..5_000 {
            fast.send(json!({"op": "send", "room": room, "text": text}))
                .await;
        }
        let mut answered = 0;
        while answered < 5_000 {
            let v = fast
                .expect("answers", |v| v["type"] == "reply" || v["type"] == "error")
                .await;
            assert_eq!(v["type"], "reply", "{v}");
            answered += 1;
        }
        let mut messages = 0;
        let mut missed = 0;
        while missed == 0 || messages == 0 {
            match slow.read().await {
                Got::Json(v) if v["type"] == "message" => messages += 1,
                Got::Json(v) if v["type"] == "missed" => missed += v["count"].as_u64().unwrap(),
                Got::Json(_) | Got::Ping => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(missed > 0);
        assert!(messages < 5_000);
        // And it is still served.
        let r = slow.call(json!({"op": "ping"})).await;
        assert_eq!(r["type"], "reply");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_time_out() {
    each_adapter(|adapter| async move {
        let config = GatewayConfig::default()
            .with_login_timeout(Duration::from_millis(300))
            .with_heartbeat_interval(Duration::from_millis(100))
            .with_idle_timeout(Duration::from_millis(600));
        let (server, _) = start(adapter, config).await;
        // Never logs in.
        let mut lazy = Client::connect(server.addr).await;
        let (code, _, _) = lazy.closed().await;
        assert_eq!(code, close::LOGIN_TIMEOUT);
        // Logs in, then reads nothing, so never answers the pings.
        let mut mute = Client::login(server.addr, "mute").await;
        // A client that reads (tungstenite answers pings) stays past the idle timeout.
        let mut alive = Client::login(server.addr, "alive").await;
        let until = tokio::time::Instant::now() + Duration::from_millis(1500);
        let mut pings = 0;
        while tokio::time::Instant::now() < until {
            if let Ok(frame) =
                tokio::time::timeout(Duration::from_millis(200), alive.ws.next()).await
            {
                match frame {
                    Some(Ok(Message::Ping(_))) => pings += 1,
                    Some(Ok(Message::Close(f))) => panic!("closed: {f:?}"),
                    _ => {}
                }
            }
        }
        assert!(pings >= 3, "pings: {pings}");
        let r = alive.call(json!({"op": "ping"})).await;
        assert_eq!(r["type"], "reply");
        // The silent one was closed for idling: the gateway serves only `alive` now. (Its close
        // frame may be lost: a client that does not read answers no close handshake, and the
        // pongs it owes then meet a closed socket.)
        let gateway = server.gateway.clone();
        eventually("the silent one is closed", || gateway.connections() == 1).await;
        let (code, _, _) = mute.closed().await;
        assert!(
            [close::IDLE_TIMEOUT, close::SLOW_READER, 1006].contains(&code),
            "{code}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_per_user_and_in_all() {
    each_adapter(|adapter| async move {
        let config = GatewayConfig::default()
            .with_max_connections(3)
            .with_max_connections_per_user(2);
        let (server, _) = start(adapter, config).await;
        let _a = Client::login(server.addr, "ann").await;
        let _b = Client::login(server.addr, "ann").await;
        let mut third = Client::connect(server.addr).await;
        let e = third
            .call(json!({"op": "login", "token": token("ann")}))
            .await;
        assert_eq!(e["type"], "error");
        assert_eq!(third.closed().await.0, close::TOO_MANY_FOR_USER);
        let gateway = server.gateway.clone();
        eventually("the refused one is released", || gateway.connections() == 2).await;
        let _c = Client::login(server.addr, "ben").await;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr))
            .await
            .unwrap();
        match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(f.code, CloseCode::from(close::TRY_AGAIN_LATER))
            }
            other => panic!("{other:?}"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_resumes_from_the_last_seq_without_gaps_or_duplicates() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let mut alice = Client::login(server.addr, "alice").await;
        alice.call(json!({"op": "join", "room": room})).await;
        let mut bob = Client::login(server.addr, "bob").await;
        bob.call(json!({"op": "join", "room": room})).await;
        for i in 0..3 {
            alice
                .call(json!({"op": "send", "room": room, "text": format!("a{i}")}))
                .await;
        }
        let mut last = 0;
        for _ in 0..3 {
            last = bob.expect("live", |v| v["type"] == "message").await["seq"]
                .as_u64()
                .unwrap();
        }
        assert_eq!(last, 3);
        drop(bob); // the connection drops; bob stays a member for the grace period
        for i in 3..8 {
            alice
                .call(json!({"op": "send", "room": room, "text": format!("a{i}")}))
                .await;
        }
        let mut bob = Client::login(server.addr, "bob").await;
        let r = bob
            .call(json!({"op": "join", "room": room, "since": last}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        // While resuming, more arrive live.
        for i in 8..10 {
            alice
                .call(json!({"op": "send", "room": room, "text": format!("a{i}")}))
                .await;
        }
        let mut seqs = Vec::new();
        while seqs.len() < 6 {
            let m = bob.expect("resumed", |v| v["type"] == "message").await;
            seqs.push(m["seq"].as_u64().unwrap());
        }
        assert_eq!(seqs, [4, 5, 6, 7, 8, 9], "no gap, no duplicate");
        // Nothing more: the next frame is the answer to a ping.
        let r = bob.call(json!({"op": "ping"})).await;
        assert_eq!(r["type"], "reply");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_connection_with_going_away() {
    each_adapter(|adapter| async move {
        let (server, _) = start(adapter, GatewayConfig::default()).await;
        let mut a = Client::login(server.addr, "a").await;
        let mut b = Client::connect(server.addr).await;
        server.gateway.shutdown();
        assert_eq!(a.closed().await.0, close::GOING_AWAY);
        assert_eq!(b.closed().await.0, close::GOING_AWAY);
        // A new connection is refused: `axum::serve` stops listening, actix's server answers
        // the upgrade and closes with 1001.
        let url = format!("ws://{}/ws", server.addr);
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await {
            match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
                Some(Ok(Message::Close(Some(f)))) => {
                    assert_eq!(u16::from(f.code), close::GOING_AWAY)
                }
                other => panic!("{other:?}"),
            }
        } else {
            assert_eq!(adapter, Adapter::Axum);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moderation_reasons_reach_the_events() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let mut host = Client::login(server.addr, "host").await;
        host.call(json!({"op": "join", "room": room})).await;
        let mut bob = Client::login(server.addr, "bob").await;
        bob.call(json!({"op": "join", "room": room})).await;
        let r = host
            .call(json!({"op": "mute", "room": room, "users": ["bob"], "seconds": 60, "reason": "caps lock"}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        let e = bob
            .expect("the mute", |v| v["event"] == "mute_list_added")
            .await;
        assert_eq!(e["operator_reason"], "caps lock");
        let long = "x".repeat(513);
        let e = host
            .call(json!({"op": "kick", "room": room, "users": ["bob"], "reason": long}))
            .await;
        assert_eq!((&e["type"], &e["code"]), (&json!("error"), &json!(110)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_mode_freeze_and_timeouts_through_the_socket() {
    each_adapter(|adapter| async move {
        let (server, lobby) = start(adapter, GatewayConfig::default()).await;
        let room = lobby.to_string();
        let mut host = Client::login(server.addr, "host").await;
        host.call(json!({"op": "join", "room": room})).await;
        let mut bob = Client::login(server.addr, "bob").await;
        bob.call(json!({"op": "join", "room": room})).await;
        let r = host
            .call(json!({"op": "slow_mode", "room": room, "seconds": 30}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        let e = bob
            .expect("slow mode", |v| v["event"] == "slow_mode_changed")
            .await;
        assert_eq!(e["cooldown_secs"], 30);
        bob.call(json!({"op": "send", "room": room, "text": "one"}))
            .await;
        let e = bob
            .call(json!({"op": "send", "room": room, "text": "two"}))
            .await;
        assert_eq!(e["code"], 509, "{e}");
        let info = bob.call(json!({"op": "info", "room": room})).await;
        assert_eq!(info["room"]["slow_mode_secs"], 30);
        host.call(json!({"op": "freeze", "room": room, "seconds": 60}))
            .await;
        let e = bob
            .expect("freeze", |v| v["event"] == "freeze_changed")
            .await;
        assert_eq!(e["frozen"], true);
        let r = host
            .call(json!({"op": "kick", "room": room, "users": ["bob"], "ban_seconds": 600}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        let e = bob.call(json!({"op": "join", "room": room})).await;
        assert_eq!(e["code"], 707, "{e}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_messages_deletes_pins_and_shadow_bans_through_the_socket() {
    each_adapter(|adapter| async move {
        let clock = roomcast::ManualClock::new(1_700_000_000_000);
        let (engine, lobby) = engine_from(Engine::builder().clock(clock.clone())).await;
        let gateway = Gateway::new(engine, tokens(), GatewayConfig::default());
        let server = serve(adapter, gateway).await;
        let room = lobby.to_string();
        let mut host = Client::login(server.addr, "host").await;
        host.call(json!({"op": "join", "room": room})).await;
        let mut bob = Client::login(server.addr, "bob").await;
        bob.call(json!({"op": "join", "room": room})).await;
        let mut carol = Client::login(server.addr, "carol").await;
        carol.call(json!({"op": "join", "room": room})).await;

        // Bounds and roles.
        let e = host
            .call(json!({"op": "hold", "room": room, "seconds": 61}))
            .await;
        assert_eq!(e["code"], 110, "{e}");
        let e = bob
            .call(json!({"op": "hold", "room": room, "seconds": 10}))
            .await;
        assert_eq!(e["code"], 703, "{e}");
        let r = host
            .call(json!({"op": "hold", "room": room, "seconds": 10, "reason": "raid"}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        let e = carol
            .expect("the hold", |v| v["event"] == "hold_changed")
            .await;
        assert_eq!(
            (&e["hold_secs"], &e["operator_reason"]),
            (&json!(10), &json!("raid"))
        );
        let info = carol.call(json!({"op": "info", "room": room})).await;
        assert_eq!(info["room"]["hold_secs"], 10);

        // Two held messages: the host has them at once, marked; a deleted one never reaches
        // carol, the other does once the hold has passed.
        let spam = bob
            .call(json!({"op": "send", "room": room, "text": "spam"}))
            .await;
        let fine = bob
            .call(json!({"op": "send", "room": room, "text": "fine"}))
            .await;
        for text in ["spam", "fine"] {
            let m = host
                .expect(text, |v| v["type"] == "message" && v["text"] == text)
                .await;
            assert!(m["held_until"].is_i64(), "{m}");
        }
        let r = host
            .call(json!({"op": "delete", "room": room, "seq": spam["seq"], "reason": "spam"}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        clock.advance(Duration::from_secs(10));
        // The release comes before the next call's answer.
        host.call(json!({"op": "pin", "room": room, "seq": fine["seq"]}))
            .await;
        // Carol never hears of the deleted one: neither it nor its deletion.
        let m = carol
            .expect("the released message", |v| {
                v["type"] == "message" || v["event"] == "message_recalled"
            })
            .await;
        assert_eq!(m["text"], "fine", "{m}");
        assert!(m.get("held_until").is_none(), "{m}");
        let e = carol
            .expect("the pin", |v| v["event"] == "message_pinned")
            .await;
        assert_eq!(e["seq"], fine["seq"]);
        let info = carol.call(json!({"op": "info", "room": room})).await;
        assert_eq!(info["room"]["pinned"], json!([fine["seq"]]));
        let r = host
            .call(json!({"op": "unpin", "room": room, "seq": fine["seq"]}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");

        // Recall: one's own message only.
        host.call(json!({"op": "hold", "room": room})).await;
        let mine = carol
            .call(json!({"op": "send", "room": room, "text": "oops"}))
            .await;
        let e = bob
            .call(json!({"op": "recall", "room": room, "seq": mine["seq"]}))
            .await;
        assert_eq!(e["code"], 703, "{e}");
        let r = carol
            .call(json!({"op": "recall", "room": room, "seq": mine["seq"]}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        let e = bob
            .expect("the recall", |v| v["event"] == "message_recalled")
            .await;
        assert_eq!(e["seq"], mine["seq"]);
        assert!(e["msg_id"].is_string(), "ids are strings: {e}");

        // Shadow ban: bob's message reaches the host marked and not carol.
        let r = host
            .call(json!({"op": "shadow_ban", "room": room, "users": ["bob"]}))
            .await;
        assert_eq!(r["type"], "reply", "{r}");
        bob.call(json!({"op": "send", "room": room, "text": "hidden"}))
            .await;
        let m = host
            .expect("hidden", |v| {
                v["type"] == "message" && v["text"] == "hidden"
            })
            .await;
        assert_eq!(m["shadowed"], true);
        host.call(json!({"op": "unshadow", "room": room, "users": ["bob"]}))
            .await;
        bob.call(json!({"op": "send", "room": room, "text": "seen"}))
            .await;
        let m = carol.expect("seen", |v| v["type"] == "message").await;
        assert_eq!(m["text"], "seen", "the shadowed one never came: {m}");
        drop(server);
    })
    .await;
}
