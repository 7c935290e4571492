//! roomcast embedded in an axum service, on a plain tokio runtime (no actix System in sight:
//! the engine runs its own): the same WebSocket protocol and chat page as the actix-web example.
//!
//! `cargo run --release --example axum_gateway -- [port]` (default 8081), then open
//! `http://127.0.0.1:8081/`.

use roomcast_workspace::gateway::{axum::router, demo_engine};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8081);
    let (engine, lobby) = demo_engine().await?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "roomcast over axum at http://{}/ (room `lobby` is {lobby})",
        listener.local_addr()?
    );
    let shutdown_engine = engine.clone();
    axum::serve(listener, router(engine))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    shutdown_engine.shutdown().await;
    Ok(())
}
