//! The actix-web gateway on 127.0.0.1, driven by two WebSocket clients through login, join,
//! chat and leave; and the axum one through the same steps.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr) -> Socket {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    ws
}

async fn send(ws: &mut Socket, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON frame that `pick` accepts (others are skipped), within a deadline.
async fn expect(ws: &mut Socket, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    let wait = async {
        while let Some(frame) = ws.next().await {
            if let Ok(Message::Text(text)) = frame {
                let v: Value = serde_json::from_str(&text).unwrap();
                if pick(&v) {
                    return v;
                }
            }
        }
        panic!("the socket closed while waiting for {what}");
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn conversation(addr: SocketAddr, lobby: &str) {
    let mut alice = connect(addr).await;
    let mut bob = connect(addr).await;
    send(&mut alice, json!({"op": "join", "room": lobby})).await;
    let v = expect(&mut alice, "not logged in", |v| v["type"] == "error").await;
    assert_eq!(v["code"], 201);
    for (ws, user) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        send(ws, json!({"op": "login", "user": user})).await;
        expect(ws, "login", |v| v["op"] == "login").await;
        send(ws, json!({"op": "rooms"})).await;
        let rooms = expect(ws, "rooms", |v| v["type"] == "rooms").await;
        assert!(rooms["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == lobby));
        send(ws, json!({"op": "join", "room": lobby})).await;
        expect(ws, "join", |v| v["op"] == "join").await;
    }
    // alice hears bob join (a chat-room event, pushed).
    let joined = expect(&mut alice, "bob's join", |v| v["type"] == "event").await;
    assert_eq!(joined["event"]["MemberJoined"]["participant"], "bob");

    send(
        &mut alice,
        json!({"op": "send", "room": lobby, "text": "hello bob"}),
    )
    .await;
    let ack = expect(&mut alice, "send ack", |v| v["op"] == "send").await;
    assert_eq!(ack["seq"], 1);
    let got = expect(&mut bob, "alice's message", |v| v["type"] == "message").await;
    assert_eq!(
        (
            got["from"].as_str(),
            got["text"].as_str(),
            got["seq"].as_u64()
        ),
        (Some("alice"), Some("hello bob"), Some(1))
    );

    send(
        &mut bob,
        json!({"op": "send", "room": "not-a-room", "text": "x"}),
    )
    .await;
    let err = expect(&mut bob, "bad room", |v| v["type"] == "error").await;
    assert_eq!(err["code"], 700);

    send(&mut bob, json!({"op": "leave", "room": lobby})).await;
    expect(&mut bob, "leave", |v| v["op"] == "leave").await;
    let left = expect(&mut alice, "bob's exit", |v| {
        v["type"] == "event" && v["event"].get("MemberExited").is_some()
    })
    .await;
    assert_eq!(left["event"]["MemberExited"]["participant"], "bob");
    send(
        &mut bob,
        json!({"op": "send", "room": lobby, "text": "after leaving"}),
    )
    .await;
    let err = expect(&mut bob, "not in the room", |v| v["type"] == "error").await;
    assert_eq!(err["code"], 702);
}

#[tokio::test]
async fn two_clients_chat_through_the_actix_web_gateway() {
    let (engine, lobby) = roomcast_workspace::gateway::demo_engine().await.unwrap();
    let gateway =
        roomcast_workspace::gateway::actix::start(engine.clone(), "127.0.0.1:0".parse().unwrap())
            .unwrap();
    let page = reqwest_free_get(gateway.addr).await;
    assert!(page.contains("roomcast chat"));
    conversation(gateway.addr, &lobby.to_string()).await;
    gateway.stop();
    engine.shutdown().await;
}

#[tokio::test]
async fn two_clients_chat_through_the_axum_gateway() {
    let (engine, lobby) = roomcast_workspace::gateway::demo_engine().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = roomcast_workspace::gateway::axum::router(engine.clone());
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    conversation(addr, &lobby.to_string()).await;
    server.abort();
    engine.shutdown().await;
}

/// GET / over a plain TCP socket (no HTTP client crate needed for one request).
async fn reqwest_free_get(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}
