//! roomcast embedded in an actix-web service: the chat page at `/`, the WebSocket protocol
//! (docs/protocol.md) at `/ws`, served by the same connection core as the axum example.
//!
//! `cargo run --release --example actix_web_gateway -- [port] [--insecure]` (default port
//! 8080), then open the printed links (one per demo user) in separate browser tabs.

use std::net::SocketAddr;

use roomcast_workspace::gateway::Demo;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(8080);
    let demo = Demo::new(args.iter().any(|a| a == "--insecure")).await?;
    let server = roomcast_gateway::actix::start(
        demo.gateway.clone(),
        SocketAddr::from(([127, 0, 0, 1], port)),
        2,
    )?;
    let base = format!("http://{}", server.addr);
    println!("roomcast over actix-web at {base}/");
    demo.print(&base);
    println!("press Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    demo.gateway.shutdown();
    server.stop();
    demo.gateway.engine().shutdown().await;
    Ok(())
}
