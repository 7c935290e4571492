//! roomcast embedded in an actix-web service: a WebSocket at `/ws` speaking a small JSON
//! protocol (see `roomcast_workspace::gateway`), and a chat page at `/`.
//!
//! `cargo run --release --example actix_web_gateway -- [port]` (default 8080), then open
//! `http://127.0.0.1:8080/` in two browser tabs, log in as two users, join `lobby` and chat.

use std::net::SocketAddr;

use roomcast_workspace::gateway::{actix, demo_engine};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let (engine, lobby) = demo_engine().await?;
    let gateway = actix::start(engine.clone(), SocketAddr::from(([127, 0, 0, 1], port)))?;
    println!(
        "roomcast over actix-web at http://{}/ (room `lobby` is {lobby})",
        gateway.addr
    );
    println!("press Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    gateway.stop();
    engine.shutdown().await;
    Ok(())
}
