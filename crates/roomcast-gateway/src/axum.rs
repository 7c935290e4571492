//! The axum adapter: [`router`] serves the chat page and the WebSocket at `/ws`; [`upgrade`]
//! is the WebSocket handler alone, for a router of your own.
//!
//! ```no_run
//! # async fn run(gateway: roomcast_gateway::Gateway) -> std::io::Result<()> {
//! let app = roomcast_gateway::axum::router(gateway);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};

use crate::{Gateway, Incoming, Outgoing, TransportClosed, PAGE_CSS, PAGE_HTML, PAGE_JS};

/// The gateway's routes: `/` (the chat page), `/app.js`, `/style.css` and `/ws`.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/", get(|| async { Html(PAGE_HTML) }))
        .route(
            "/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    PAGE_JS,
                )
            }),
        )
        .route(
            "/style.css",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                    PAGE_CSS,
                )
            }),
        )
        .route("/ws", get(upgrade))
        .with_state(gateway)
}

/// Upgrades a request to a WebSocket served by the gateway.
pub async fn upgrade(State(gateway): State<Gateway>, ws: WebSocketUpgrade) -> Response {
    let limit = gateway.config().transport_limit();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| serve(gateway, socket))
        .into_response()
}

/// Serves one upgraded socket until it closes.
pub async fn serve(gateway: Gateway, socket: WebSocket) {
    let (sink, stream) = socket.split();
    let incoming = stream.map(|frame| match frame {
        Ok(Message::Text(text)) => Incoming::Text(text.as_str().to_owned()),
        Ok(Message::Binary(bytes)) => Incoming::Binary(bytes.len()),
        Ok(Message::Ping(payload)) => Incoming::Ping(payload.to_vec()),
        Ok(Message::Pong(_)) => Incoming::Pong,
        Ok(Message::Close(_)) => Incoming::Close,
        Err(e) => {
            let text = e.to_string();
            if text.contains("Space limit exceeded") || text.contains("too long") {
                Incoming::TooBig
            } else {
                Incoming::Failed(text)
            }
        }
    });
    gateway.serve(incoming, AxumOut(sink)).await;
}

/// The writing half of an axum WebSocket.
struct AxumOut(SplitSink<WebSocket, Message>);

impl Outgoing for AxumOut {
    async fn send_text(&mut self, text: String) -> Result<(), TransportClosed> {
        self.0
            .send(Message::Text(text.into()))
            .await
            .map_err(|_| TransportClosed)
    }

    async fn send_ping(&mut self) -> Result<(), TransportClosed> {
        self.0
            .send(Message::Ping(Default::default()))
            .await
            .map_err(|_| TransportClosed)
    }

    async fn send_pong(&mut self, payload: Vec<u8>) -> Result<(), TransportClosed> {
        self.0
            .send(Message::Pong(payload.into()))
            .await
            .map_err(|_| TransportClosed)
    }

    async fn close(mut self, code: u16, reason: String) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.0.send(Message::Close(Some(frame))).await;
        let _ = self.0.close().await;
    }
}
