//! The actix-web adapter (over actix-ws): [`configure`] adds the chat page and the WebSocket
//! at `/ws` to an `App`; [`ws`] is the WebSocket handler alone; [`start`] runs a server on a
//! thread with its own actix System, for services (and tests) that run on plain tokio.
//!
//! ```no_run
//! # fn run(gateway: roomcast_gateway::Gateway) -> std::io::Result<()> {
//! use actix_web::{App, HttpServer};
//! actix_web::rt::System::new().block_on(async move {
//!     HttpServer::new(move || App::new().configure(roomcast_gateway::actix::configure(gateway.clone())))
//!         .bind("127.0.0.1:8080")?
//!         .run()
//!         .await
//! })
//! # }
//! ```

use std::net::SocketAddr;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError};
use futures_util::StreamExt;

use crate::{Gateway, Incoming, Outgoing, TransportClosed, PAGE_CSS, PAGE_HTML, PAGE_JS};

/// Adds the gateway's routes to an `App`: `/` (the chat page), `/app.js`, `/style.css` and
/// `/ws`.
pub fn configure(gateway: Gateway) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(gateway.clone()))
            .route("/", web::get().to(page))
            .route("/app.js", web::get().to(script))
            .route("/style.css", web::get().to(style))
            .route("/ws", web::get().to(ws));
    }
}

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE_HTML)
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(PAGE_JS)
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(PAGE_CSS)
}

/// Upgrades a request to a WebSocket served by the gateway (needs `web::Data<Gateway>`).
pub async fn ws(
    req: HttpRequest,
    body: web::Payload,
    gateway: web::Data<Gateway>,
) -> actix_web::Result<HttpResponse> {
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let gateway = gateway.get_ref().clone();
    let limit = gateway.config().transport_limit();
    let incoming = stream
        .max_frame_size(limit)
        .aggregate_continuations()
        .max_continuation_size(limit)
        .map(|frame| match frame {
            Ok(AggregatedMessage::Text(text)) => Incoming::Text(text.to_string()),
            Ok(AggregatedMessage::Binary(bytes)) => Incoming::Binary(bytes.len()),
            Ok(AggregatedMessage::Ping(payload)) => Incoming::Ping(payload.to_vec()),
            Ok(AggregatedMessage::Pong(_)) => Incoming::Pong,
            Ok(AggregatedMessage::Close(_)) => Incoming::Close,
            Err(ProtocolError::Overflow) => Incoming::TooBig,
            Err(ProtocolError::Io(e)) if e.to_string().contains("maximum continuation size") => {
                Incoming::TooBig
            }
            Err(e) => Incoming::Failed(e.to_string()),
        });
    actix_web::rt::spawn(async move {
        gateway.serve(Box::pin(incoming), ActixOut(session)).await;
    });
    Ok(response)
}

/// The writing half of an actix-ws WebSocket.
struct ActixOut(actix_ws::Session);

impl Outgoing for ActixOut {
    async fn send_text(&mut self, text: String) -> Result<(), TransportClosed> {
        self.0.text(text).await.map_err(|_| TransportClosed)
    }

    async fn send_ping(&mut self) -> Result<(), TransportClosed> {
        self.0.ping(b"").await.map_err(|_| TransportClosed)
    }

    async fn send_pong(&mut self, payload: Vec<u8>) -> Result<(), TransportClosed> {
        self.0.pong(&payload).await.map_err(|_| TransportClosed)
    }

    async fn close(self, code: u16, reason: String) {
        let reason = CloseReason {
            code: CloseCode::from(code),
            description: (!reason.is_empty()).then_some(reason),
        };
        let _ = self.0.close(Some(reason)).await;
    }
}

/// An actix-web server running the gateway on a thread of its own.
pub struct ActixServer {
    /// Where it listens.
    pub addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for ActixServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActixServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ActixServer {
    /// Stops the server (closing its connections) and waits for its thread.
    pub fn stop(mut self) {
        let handle = self.handle.clone();
        let _ =
            std::thread::spawn(move || actix_rt::System::new().block_on(handle.stop(true))).join();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the gateway with actix-web on `addr` (port 0: any free port), with `workers` worker
/// threads, on a thread of its own with its own actix System: callable from any runtime.
pub fn start(gateway: Gateway, addr: SocketAddr, workers: usize) -> std::io::Result<ActixServer> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("roomcast-gateway-actix".into())
        .spawn(move || {
            let system = actix_rt::System::new();
            let failed = tx.clone();
            let result = system.block_on(async move {
                let server =
                    HttpServer::new(move || App::new().configure(configure(gateway.clone())))
                        .workers(workers.max(1))
                        .tcp_nodelay(true)
                        // WebSockets are long-lived: do not wait the default 30 s for them to close.
                        .shutdown_timeout(1)
                        .bind(addr)?;
                let bound = server.addrs()[0];
                let server = server.run();
                let _ = tx.send(Ok((bound, server.handle())));
                server.await
            });
            if let Err(e) = result {
                let _ = failed.send(Err(e));
            }
        })?;
    let (addr, handle) = rx
        .recv()
        .map_err(|_| std::io::Error::other("the gateway thread ended"))??;
    Ok(ActixServer {
        addr,
        handle,
        thread: Some(thread),
    })
}
