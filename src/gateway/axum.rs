//! The axum gateway: roomcast in a plain tokio service.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use roomcast::Engine;
use tokio::sync::mpsc;

use super::{event_json, next, Connection, PAGE};

/// The gateway's routes: `/` (the chat page) and `/ws`.
pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ws", get(upgrade))
        .with_state(engine)
}

async fn upgrade(ws: WebSocketUpgrade, State(engine): State<Engine>) -> impl IntoResponse {
    ws.on_upgrade(move |socket| serve(socket, engine))
}

async fn serve(socket: WebSocket, engine: Engine) {
    let (mut sink, mut frames) = socket.split();
    // One writer task: answers and pushed events go through one channel, in order.
    let (out, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    });
    let mut conn = Connection::default();
    while let Some(Ok(frame)) = frames.next().await {
        let Message::Text(text) = frame else {
            continue;
        };
        let (answer, events) = conn.handle(&engine, &text).await;
        if out.send(answer.to_string()).is_err() {
            break;
        }
        if let Some(mut events) = events {
            let out = out.clone();
            tokio::spawn(async move {
                while let Some(event) = next(&mut events).await {
                    if out.send(event_json(&event).to_string()).is_err() {
                        break;
                    }
                }
            });
        }
    }
    writer.abort();
}
