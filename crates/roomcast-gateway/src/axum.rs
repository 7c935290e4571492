//! The axum adapter: [`serve`] runs the gateway on a listener; [`router`] gives its routes
//! (the chat page and the WebSocket at `/ws`) to merge into a router of your own; [`upgrade`]
//! is the WebSocket handler alone.
//!
//! ```no_run
//! # async fn run(gateway: roomcast_gateway::Gateway) -> std::io::Result<()> {
//! let listener = roomcast_gateway::axum::bind("127.0.0.1:8080".parse().unwrap())?;
//! roomcast_gateway::axum::serve(listener, gateway).await
//! # }
//! ```
//!
//! With a router of your own, set `TCP_NODELAY` on accepted sockets as [`serve`] does
//! (`axum::serve::ListenerExt::tap_io`): chat frames are small, and without it Nagle's
//! algorithm and delayed acknowledgements hold some of them back by 40 ms.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};

use crate::{Gateway, Incoming, Outgoing, TransportClosed, PAGE_CSS, PAGE_HTML, PAGE_JS};

/// A listener on `addr` with a backlog of 4,096 pending connections (capped by the system's
/// `somaxconn`): a crowd reconnecting at once after a restart overflows tokio's default of
/// 1,024, and each refused SYN costs its client a second.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Serves the gateway's routes on `listener` (with `TCP_NODELAY` on every connection) until
/// [`Gateway::shutdown`] is called.
pub async fn serve(listener: tokio::net::TcpListener, gateway: Gateway) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let mut stopped = gateway.inner.shutdown.subscribe();
    axum::serve(listener, router(gateway))
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await
}

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
    // Small buffers: a connection costs kilobytes, not tungstenite's 2 x 128 KiB default (the
    // core flushes after each burst anyway).
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| serve_socket(gateway, socket))
        .into_response()
}

/// Serves one upgraded socket until it closes.
pub async fn serve_socket(gateway: Gateway, socket: WebSocket) {
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

    async fn feed_text(&mut self, text: String) -> Result<(), TransportClosed> {
        self.0
            .feed(Message::Text(text.into()))
            .await
            .map_err(|_| TransportClosed)
    }

    async fn flush(&mut self) -> Result<(), TransportClosed> {
        SinkExt::flush(&mut self.0)
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
