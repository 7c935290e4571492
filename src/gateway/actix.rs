//! The actix-web (actix-ws) gateway.

use std::net::SocketAddr;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use roomcast::Engine;

use super::{event_json, next, Connection, PAGE};

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}

async fn ws(
    req: HttpRequest,
    body: web::Payload,
    engine: web::Data<Engine>,
) -> actix_web::Result<HttpResponse> {
    let (response, session, mut frames) = actix_ws::handle(&req, body)?;
    let engine = engine.get_ref().clone();
    actix_web::rt::spawn(async move {
        let mut conn = Connection::default();
        let mut out = session.clone();
        while let Some(Ok(frame)) = next(&mut frames).await {
            match frame {
                actix_ws::Message::Text(text) => {
                    let (answer, events) = conn.handle(&engine, &text).await;
                    if out.text(answer.to_string()).await.is_err() {
                        break;
                    }
                    if let Some(mut events) = events {
                        // Forward this client's events until the socket or the engine closes.
                        let mut push = session.clone();
                        actix_web::rt::spawn(async move {
                            while let Some(event) = next(&mut events).await {
                                if push.text(event_json(&event).to_string()).await.is_err() {
                                    break;
                                }
                            }
                        });
                    }
                }
                actix_ws::Message::Ping(bytes) => {
                    let _ = out.pong(&bytes).await;
                }
                actix_ws::Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = out.close(None).await;
    });
    Ok(response)
}

/// A running gateway.
pub struct Gateway {
    /// Where it listens.
    pub addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

impl Gateway {
    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        let handle = self.handle.clone();
        let _ =
            std::thread::spawn(move || actix_rt::System::new().block_on(handle.stop(true))).join();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `engine` on `addr` (port 0: any free port) on a thread of its own with its own actix
/// System, as an application embedding roomcast in actix-web would.
pub fn start(engine: Engine, addr: SocketAddr) -> std::io::Result<Gateway> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let system = actix_rt::System::new();
        let failed = tx.clone();
        let result = system.block_on(async move {
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::new(engine.clone()))
                    .route("/", web::get().to(page))
                    .route("/ws", web::get().to(ws))
            })
            .workers(2)
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
    });
    let (addr, handle) = rx
        .recv()
        .map_err(|_| std::io::Error::other("the gateway thread ended"))??;
    Ok(Gateway {
        addr,
        handle,
        thread: Some(thread),
    })
}
