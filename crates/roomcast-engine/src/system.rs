//! The engine's own actix System: one thread for the system arbiter (where the supervisor runs)
//! and one arbiter thread per core for the room actors.
//!
//! Starting an actix actor needs an actix System on the current thread, which a caller's plain
//! tokio runtime does not have. So the engine starts its System on a thread of its own and
//! callers only ever send messages to addresses, which works from any thread or runtime.

use actix::{Actor, Addr};
use actix_rt::{Arbiter, ArbiterHandle, System};
use tokio::sync::watch;

pub(crate) struct ActorSystem {
    system: System,
    done: watch::Receiver<bool>,
}

impl ActorSystem {
    /// Starts the System thread and `arbiters` arbiters, and the actor `make` builds on it.
    pub(crate) fn start<A, F>(arbiters: usize, make: F) -> std::io::Result<(ActorSystem, Addr<A>)>
    where
        A: Actor<Context = actix::Context<A>>,
        F: FnOnce(Vec<ArbiterHandle>) -> A + Send + 'static,
    {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (done_tx, done) = watch::channel(false);
        std::thread::Builder::new()
            .name("roomcast-system".into())
            .spawn(move || {
                let runner = System::new();
                let arbiters: Vec<Arbiter> = runner
                    .block_on(async { (0..arbiters.max(1)).map(|_| Arbiter::new()).collect() });
                let handles = arbiters.iter().map(Arbiter::handle).collect();
                let addr = runner.block_on(async move { make(handles).start() });
                if started_tx.send((System::current(), addr)).is_err() {
                    return;
                }
                if let Err(e) = runner.run() {
                    tracing::error!(error = %e, "actor system ended with an error");
                }
                // The System stopped its arbiters; wait for their threads so that every actor
                // (and the store handles they hold) is dropped before we report done.
                for arbiter in arbiters {
                    arbiter.stop();
                    let _ = arbiter.join();
                }
                let _ = done_tx.send(true);
            })?;
        let (system, addr) = started_rx
            .recv()
            .map_err(|_| std::io::Error::other("the actor system thread failed to start"))?;
        Ok((ActorSystem { system, done }, addr))
    }

    /// Asks the System to stop (idempotent, does not wait).
    pub(crate) fn stop(&self) {
        self.system.stop();
    }

    /// Waits until the System thread has stopped and dropped every actor.
    pub(crate) async fn wait(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }
}
