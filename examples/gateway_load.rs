//! Load on the WebSocket gateway: N connections on loopback (10,000 by default) log in with
//! tokens and join one room; a sender connection sends M messages at a steady rate; every
//! delivery is counted, its latency (send to receipt, across processes on one clock) measured.
//!
//! The clients run in a child process (so that neither side's descriptors count against the
//! other, and the server's RSS is the server's): the report gives the time to connect, log in
//! and join every connection, the deliveries against those expected, latency percentiles, and
//! the server's RSS per connection.
//!
//! `cargo run --release --example gateway_load -- [--connections 10000] [--messages 100]
//! [--rate 10] [--adapter axum|actix] [--seconds 120]` (10 messages/s into 10,000 connections
//! is 100,000 deliveries/s, server and clients sharing the machine).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use roomcast::{CreateChatRoomOptions, Engine};
use roomcast_gateway::{Gateway, GatewayConfig, TokenAuthenticator};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "gateway_load's secret, thirty-two bytes or more";

struct Args {
    connections: usize,
    messages: usize,
    rate: u64,
    adapter: String,
    seconds: u64,
    client: Option<(SocketAddr, String)>,
}

fn args() -> Args {
    let mut a = Args {
        connections: 10_000,
        messages: 100,
        rate: 10,
        adapter: "axum".into(),
        seconds: 120,
        client: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--connections" => a.connections = v.parse().expect("--connections N"),
            "--messages" => a.messages = v.parse().expect("--messages N"),
            "--rate" => a.rate = v.parse().expect("--rate N"),
            "--adapter" => a.adapter = v,
            "--seconds" => a.seconds = v.parse().expect("--seconds N"),
            "--client" => {
                let room = argv.get(i + 2).cloned().expect("--client ADDR ROOM");
                a.client = Some((v.parse().expect("--client ADDR ROOM"), room));
                i += 1;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    a
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    match a.client.clone() {
        Some((addr, room)) => rt.block_on(client(a, addr, room)),
        None => rt.block_on(server(a)),
    }
}

async fn server(a: Args) {
    let engine = Engine::builder()
        .limits(
            roomcast_workspace::harness_limits()
                .with_max_users_cap(1_000_000)
                .with_join_event_threshold(0),
        )
        .build()
        .await
        .expect("an engine");
    engine.add_super_admin("host").await.expect("a super admin");
    let host = engine.login("host").await.expect("host");
    let room = host
        .chat_room_manager()
        .create_chat_room(
            CreateChatRoomOptions::new("load").with_max_users(a.connections as u32 + 10),
        )
        .await
        .expect("a room")
        .room_id;
    host.logout();
    let auth = TokenAuthenticator::new(SECRET.as_bytes()).expect("a secret");
    let config = GatewayConfig::default()
        .with_max_connections(a.connections + 100)
        .with_history_on_join(0)
        .with_login_timeout(Duration::from_secs(60));
    let gateway = Gateway::new(engine.clone(), auth, config);
    let (addr, stop): (SocketAddr, Box<dyn FnOnce()>) = match a.adapter.as_str() {
        "actix" => {
            let s =
                roomcast_gateway::actix::start(gateway.clone(), "127.0.0.1:0".parse().unwrap(), 2)
                    .expect("actix server");
            (s.addr, Box::new(move || s.stop()))
        }
        _ => {
            let listener =
                roomcast_gateway::axum::bind("127.0.0.1:0".parse().unwrap()).expect("bind");
            let addr = listener.local_addr().expect("addr");
            let served = gateway.clone();
            let task = tokio::spawn(async move {
                let _ = roomcast_gateway::axum::serve(listener, served).await;
            });
            (addr, Box::new(move || task.abort()))
        }
    };
    let rss_before = roomcast_workspace::rss_bytes();
    let exe = std::env::current_exe().expect("this program");
    let mut child = std::process::Command::new(exe)
        .args([
            "--client",
            &addr.to_string(),
            &room.to_string(),
            "--connections",
            &a.connections.to_string(),
            "--messages",
            &a.messages.to_string(),
            "--rate",
            &a.rate.to_string(),
            "--seconds",
            &a.seconds.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the client process");
    let stdout = child.stdout.take().expect("its output");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut rss_connected = 0;
    let mut report = None;
    while let Some(line) = rx.recv().await {
        if line == "CONNECTED" {
            rss_connected = roomcast_workspace::rss_bytes();
        } else if let Some(json) = line.strip_prefix("REPORT ") {
            report = serde_json::from_str::<Value>(json).ok();
        } else {
            println!("client: {line}");
        }
    }
    let status = child.wait().expect("the client ends");
    let r = report.unwrap_or_else(|| panic!("the client gave no report ({status})"));
    let per_conn = (rss_connected.saturating_sub(rss_before)) as f64 / a.connections as f64;
    println!();
    println!(
        "gateway_load ({} adapter, release build recommended; engine limits: harness, join events off)",
        a.adapter
    );
    println!("| connections | connect + login + join, all | deliveries / expected | latency p50 / p99 / max | server RSS per connection | missed |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| {} | {:.2} s | {} / {} | {:.1} / {:.1} / {:.1} ms | {:.0} B | {} |",
        a.connections,
        r["connect_s"].as_f64().unwrap_or(0.0),
        r["deliveries"],
        r["expected"],
        r["p50_us"].as_f64().unwrap_or(0.0) / 1000.0,
        r["p99_us"].as_f64().unwrap_or(0.0) / 1000.0,
        r["max_us"].as_f64().unwrap_or(0.0) / 1000.0,
        per_conn,
        r["missed"],
    );
    stop();
    gateway.shutdown();
    engine.shutdown().await;
    if r["deliveries"] != r["expected"] {
        eprintln!("not every delivery arrived");
        std::process::exit(1);
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(addr: SocketAddr, auth: &TokenAuthenticator, user: &str, room: &str) -> Ws {
    let url = format!("ws://{addr}/ws");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let token = auth
        .issue(user, Duration::from_secs(3600))
        .expect("a token");
    let login = json!({"op": "login", "id": 1, "token": token}).to_string();
    ws.send(Message::Text(login.into())).await.expect("login");
    let join = json!({"op": "join", "id": 2, "room": room}).to_string();
    ws.send(Message::Text(join.into())).await.expect("join");
    // Until the join's answer.
    while let Some(Ok(frame)) = ws.next().await {
        if let Message::Text(t) = frame {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["id"] == 2 {
                assert_eq!(v["type"], "reply", "join: {v}");
                break;
            }
            if v["type"] == "error" {
                panic!("{v}");
            }
        }
    }
    ws
}

async fn client(a: Args, addr: SocketAddr, room: String) {
    let auth = Arc::new(TokenAuthenticator::new(SECRET.as_bytes()).expect("a secret"));
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let started = Instant::now();
    // Connect in waves of 500 at once.
    let mut sockets = Vec::with_capacity(a.connections);
    let mut wave = Vec::new();
    for i in 0..a.connections {
        let auth = auth.clone();
        let room = room.clone();
        wave.push(tokio::spawn(async move {
            open(addr, &auth, &format!("viewer{i}"), &room).await
        }));
        if wave.len() == 500 || i + 1 == a.connections {
            for t in wave.drain(..) {
                sockets.push(t.await.expect("a connection"));
            }
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    println!("CONNECTED");
    std::io::stdout().flush().ok();
    let deliveries = Arc::new(AtomicU64::new(0));
    let missed = Arc::new(AtomicU64::new(0));
    let expected = (a.connections * a.messages) as u64;
    let mut readers = Vec::new();
    for ws in sockets {
        let deliveries = deliveries.clone();
        let missed = missed.clone();
        let want = a.messages;
        readers.push(tokio::spawn(async move {
            let mut ws = ws;
            let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("a histogram");
            let mut got = 0;
            while got < want {
                let Some(Ok(frame)) = ws.next().await else {
                    break;
                };
                let Message::Text(t) = frame else { continue };
                let v: Value = serde_json::from_str(&t).expect("json");
                match v["type"].as_str() {
                    Some("message") => {
                        if let Some(sent) = v["text"].as_str().and_then(|s| s.parse::<u64>().ok()) {
                            let _ = hist.record(now_micros().saturating_sub(sent));
                        }
                        got += 1;
                        deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                    Some("missed") => {
                        missed.fetch_add(v["count"].as_u64().unwrap_or(0), Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            let _ = ws.close(None).await;
            hist
        }));
    }
    // The sender: M messages at the rate, each answered.
    let mut sender = open(addr, &auth, "sender", &room).await;
    let gap = Duration::from_micros(1_000_000 / a.rate.max(1));
    let mut tick = tokio::time::interval(gap);
    for i in 0..a.messages {
        tick.tick().await;
        let send =
            json!({"op": "send", "id": 10 + i, "room": room, "text": now_micros().to_string()});
        sender
            .send(Message::Text(send.to_string().into()))
            .await
            .expect("send");
    }
    let mut answered = 0;
    while answered < a.messages {
        match tokio::time::timeout_at(deadline.into(), sender.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "reply" && v["op"] == "send" {
                    answered += 1;
                } else if v["type"] == "error" {
                    panic!("send refused: {v}");
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    let mut all = hdrhistogram::Histogram::<u64>::new(3).expect("a histogram");
    for r in readers {
        match tokio::time::timeout_at(deadline.into(), r).await {
            Ok(Ok(h)) => all.add(h).expect("histograms add"),
            _ => break,
        }
    }
    let report = json!({
        "connect_s": connect_s,
        "deliveries": deliveries.load(Ordering::Relaxed),
        "expected": expected,
        "p50_us": all.value_at_quantile(0.5),
        "p99_us": all.value_at_quantile(0.99),
        "max_us": all.max(),
        "missed": missed.load(Ordering::Relaxed),
    });
    println!("REPORT {report}");
    std::io::stdout().flush().ok();
    // Exit without waiting for the rest of the sockets' close handshakes.
    std::process::exit(0);
}
