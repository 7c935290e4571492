//! The gateway's chat page in a real browser: Debian's Chromium, driven by
//! `tests/browser/chat.mjs` (playwright-core), against the axum and the actix-web adapters.
//!
//! A host (super admin: creates the room, owns and moderates it) and two viewers log in with
//! tokens, chat both ways, get muted (the page shows the error), send XSS strings (they stay
//! text), and one viewer's connection is dropped while the others talk (on resume it shows
//! every message exactly once, in seq order). Screenshots go to
//! `<target dir>/browser-screenshots/<adapter>-<step>.png`.
//!
//! Needs `node`, `npm` and `/usr/bin/chromium` (or `ROOMCAST_CHROMIUM`); runs `npm ci` in
//! `tests/browser` when its `node_modules` is missing. Without them the test says why and
//! passes, unless `ROOMCAST_REQUIRE_BROWSER=1` (as in CI), where it fails.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roomcast_gateway::{Gateway, GatewayConfig, TokenAuthenticator};

/// The whole node scenario must end within this (it has its own, shorter, watchdog).
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);
const SECRET: &[u8] = b"the browser test's secret, thirty-two bytes or more";

/// One browser run at a time: the machine has 2 cores.
static BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn screenshot_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target dir>/tmp.
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("browser-screenshots")
}

fn chromium() -> PathBuf {
    std::env::var_os("ROOMCAST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn required() -> bool {
    std::env::var("ROOMCAST_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

/// Why the browser test cannot run here, if it cannot: then it fails when required, else it
/// says why and passes.
fn unavailable(why: String) -> Option<()> {
    if required() {
        panic!("the browser test cannot run and ROOMCAST_REQUIRE_BROWSER=1: {why}");
    }
    eprintln!("SKIPPED: the browser test cannot run: {why} (set ROOMCAST_REQUIRE_BROWSER=1 to fail instead)");
    None
}

fn runs(program: &str, arg: &str) -> Result<String, String> {
    match Command::new(program).arg(arg).output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().into()),
        Ok(out) => Err(format!("`{program} {arg}` exited with {}", out.status)),
        Err(e) => Err(format!("`{program}` is missing ({e})")),
    }
}

/// Checks node, npm and chromium, and installs the node packages if needed.
fn prepare() -> Option<()> {
    let node = match runs("node", "--version") {
        Ok(v) => v,
        Err(why) => return unavailable(why),
    };
    if let Err(why) = runs("npm", "--version") {
        return unavailable(why);
    }
    let chromium = chromium();
    if !chromium.exists() {
        return unavailable(format!(
            "{} is missing (apt-get install -y chromium)",
            chromium.display()
        ));
    }
    let dir = browser_dir();
    if !dir.join("node_modules/playwright-core").exists() {
        eprintln!("npm ci in {}", dir.display());
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => return unavailable(format!("`npm ci` in tests/browser exited with {s}")),
            Err(e) => return unavailable(format!("`npm ci` could not run: {e}")),
        }
    }
    eprintln!("node {node}, {}", chromium.display());
    Some(())
}

struct Setup {
    gateway: Gateway,
    tokens: [String; 3],
}

async fn setup() -> Setup {
    let engine = roomcast::Engine::builder().build().await.unwrap();
    engine.add_super_admin("host").await.unwrap();
    let auth = TokenAuthenticator::new(SECRET).unwrap();
    let ttl = Duration::from_secs(3600);
    let tokens = ["host", "alice", "bob"].map(|u| auth.issue(u, ttl).unwrap());
    let config = GatewayConfig::default().with_count_interval(Duration::from_millis(500));
    Setup {
        gateway: Gateway::new(engine, auth, config),
        tokens,
    }
}

/// Runs the node scenario against `addr`; panics with its output unless it passed.
fn scenario(adapter: &str, addr: SocketAddr, tokens: &[String; 3]) {
    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).unwrap();
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(browser_dir().join("chat.mjs"))
        .arg(format!("http://{addr}/"))
        .args(tokens)
        .current_dir(browser_dir())
        .env("ROOMCAST_CHROMIUM", chromium())
        .env("ROOMCAST_SHOTS", &shots)
        .env("ROOMCAST_ADAPTER", adapter)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let stdout = pipe(Box::new(child.stdout.take().unwrap()));
    let stderr = pipe(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > SCENARIO_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    eprintln!(
        "--- {adapter}: node chat.mjs ({:.1} s) ---\n{out}{err}--- screenshots in {} ---",
        started.elapsed().as_secs_f64(),
        shots.display()
    );
    let status = status.unwrap_or_else(|| {
        panic!("{adapter}: the browser scenario did not end within {SCENARIO_TIMEOUT:?}")
    });
    assert!(
        status.success(),
        "{adapter}: the browser scenario failed ({status})"
    );
    assert!(
        out.contains("browser scenario passed"),
        "{adapter}: the scenario exited 0 without saying it passed"
    );
    for step in ["desktop-host", "viewer-375", "host-375"] {
        let png = shots.join(format!("{adapter}-{step}.png"));
        assert!(png.exists(), "{} was not written", png.display());
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_page_over_axum() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    if prepare().is_none() {
        return;
    }
    let rt = runtime();
    let Setup { gateway, tokens } = rt.block_on(setup());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = rt.spawn(async move {
        roomcast_gateway::axum::serve(listener, gateway)
            .await
            .unwrap();
    });
    scenario("axum", addr, &tokens);
    server.abort();
}

#[test]
fn the_page_over_actix() {
    let _one = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    if prepare().is_none() {
        return;
    }
    let rt = runtime();
    let Setup { gateway, tokens } = rt.block_on(setup());
    let server =
        roomcast_gateway::actix::start(gateway, "127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let addr = server.addr;
    let result = std::panic::catch_unwind(|| scenario("actix", addr, &tokens));
    server.stop();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
