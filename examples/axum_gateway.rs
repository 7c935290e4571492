//! roomcast embedded in an axum service, on a plain tokio runtime (no actix System in sight:
//! the engine runs its own): the chat page at `/`, the WebSocket protocol (docs/protocol.md) at
//! `/ws`.
//!
//! `cargo run --release --example axum_gateway -- [port] [--insecure]` (default port 8081),
//! then open the printed links (one per demo user: the owner `host`, the admin `mod`, the
//! viewers `alice` and `bob`) in separate browser tabs. `--insecure` trusts typed user ids
//! instead of tokens (local demos only).

use roomcast_workspace::gateway::Demo;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(8081);
    let demo = Demo::new(args.iter().any(|a| a == "--insecure")).await?;
    let listener = roomcast_gateway::axum::bind(([127, 0, 0, 1], port).into())?;
    let base = format!("http://{}", listener.local_addr()?);
    println!("roomcast over axum at {base}/");
    demo.print(&base);
    let gateway = demo.gateway.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        gateway.shutdown(); // closes every connection and ends `serve`
    });
    roomcast_gateway::axum::serve(listener, demo.gateway.clone()).await?;
    demo.gateway.engine().shutdown().await;
    Ok(())
}
