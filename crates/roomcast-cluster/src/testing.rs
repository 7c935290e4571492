//! A throwaway local `nats-server` for tests (feature `testing`).
//!
//! [`NatsServer::start`] runs `nats-server -js -a 127.0.0.1 -p <free port> -sd <temp dir>`,
//! waits until it accepts clients, and kills it when dropped. [`NatsServer::kill`] (SIGKILL)
//! and [`NatsServer::restart`] (same port, same store directory) test what survives a crash.
//!
//! The binary is `$ROOMCAST_NATS_SERVER` if set, else `nats-server` on `PATH`, in `/usr/sbin`
//! (where Debian's `nats-server` package puts it), `/usr/bin` or `/usr/local/bin`. When there is
//! none, [`NatsServer::start`] panics if `ROOMCAST_REQUIRE_NATS=1` (CI), and otherwise prints
//! a skip message and returns `None` so that the test can return early.

use std::fs::File;
use std::future::Future;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that turns a missing `nats-server` from a skip into a failure.
pub const REQUIRE_ENV: &str = "ROOMCAST_REQUIRE_NATS";

/// The environment variable naming the `nats-server` binary to use.
pub const BINARY_ENV: &str = "ROOMCAST_NATS_SERVER";

/// How long a server may take to accept clients after it was started.
pub const START_DEADLINE: Duration = Duration::from_secs(10);

/// A `nats-server` with JetStream on a free loopback port and a temporary store directory.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server, or returns `None` (after printing why) when `nats-server` is not
    /// installed and `ROOMCAST_REQUIRE_NATS` is not `1`.
    ///
    /// # Panics
    /// When `nats-server` is missing and required, or is there but does not start.
    pub fn start() -> Option<NatsServer> {
        if Self::find_binary().is_none() {
            if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
                panic!(
                    "nats-server is not installed and {REQUIRE_ENV}=1 (apt-get install nats-server)"
                );
            }
            eprintln!(
                "skipped: nats-server is not installed (apt-get install nats-server, or set \
                 {BINARY_ENV}); set {REQUIRE_ENV}=1 to fail instead"
            );
            return None;
        }
        match Self::try_start() {
            Ok(server) => Some(server),
            Err(e) => panic!("nats-server did not start: {e}"),
        }
    }

    /// Starts a server, or says why it could not.
    pub fn try_start() -> io::Result<NatsServer> {
        let binary = Self::find_binary().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "nats-server is not installed")
        })?;
        let mut last_error = None;
        // Another process may take the free port before the server binds it: try another.
        for _ in 0..3 {
            let mut server = NatsServer {
                binary: binary.clone(),
                port: free_port()?,
                dir: tempfile::Builder::new()
                    .prefix("roomcast-nats-")
                    .tempdir()?,
                child: None,
            };
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("nats-server did not start")))
    }

    /// The `nats-server` binary this would run, if any.
    pub fn find_binary() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os(BINARY_ENV) {
            let path = PathBuf::from(path);
            return path.is_file().then_some(path);
        }
        let path_dirs = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default();
        path_dirs
            .into_iter()
            .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    }

    /// The URL to connect to: `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (`-sd`, the same across restarts).
    pub fn store_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log (its standard output and error).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills the server with SIGKILL (a crash: nothing is flushed or closed) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts it again on the same port with the same store
    /// directory, and waits until it accepts clients (JetStream recovered).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    fn spawn(&mut self) -> io::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let store = self.dir.path().join("store");
        let child = Command::new(&self.binary)
            .arg("-js")
            .args(["-a", "127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&store)
            .args(["-n", &format!("roomcast-test-{}", self.port)])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Polls until the server greets a client with its INFO line (deadline
    /// [`START_DEADLINE`]).
    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(io::Error::other(format!(
                        "nats-server exited with {status}; its log:\n{}",
                        self.log()
                    )));
                }
            }
            if greets(addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "nats-server did not accept clients on {addr} within {START_DEADLINE:?}; \
                         its log:\n{}",
                        self.log()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a NATS server at `addr` sends its INFO line.
fn greets(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut first = [0u8; 4];
    stream.read_exact(&mut first).is_ok() && &first == b"INFO"
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Polls `probe` every 20 ms until it returns `Some`, and returns that; panics with `what`
/// if `deadline` passes first. For tests that wait for something to happen (a lease to
/// expire, a server to come back) without guessing how long it takes.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= end {
            panic!("{what}: not within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
