//! Cluster mode with every node a process of its own: one nats-server (Debian's 2.9 in CI) and
//! three `examples/cluster_node.rs` children, a, b and c, driven by JSON lines. Users on every
//! node join and chat in one room, moderate it from another node, send concurrently from two
//! nodes, and keep sending while the room's owner is killed with SIGKILL (with one sender, and
//! with a sender on each surviving node).
//!
//! Without nats-server the tests print a skip message and pass, unless `ROOMCAST_REQUIRE_NATS=1`
//! (CI sets it). No sleeps: every wait polls (a condition variable) with a deadline; the only
//! pause is the failover tests' backoff between retried sends. The tests run one at a time
//! (each holds [`SERIAL`]): the failover's timings (a 1 s lease) should not depend on what the
//! other tests load the machine with. A failing test prints the tail of every node's output.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use roomcast_cluster::testing::NatsServer;
use roomcast_cluster::{Cluster, ClusterConfig};
use serde_json::{json, Value};

#[path = "shared/cluster_node.rs"]
mod cluster_node;
use cluster_node::node_binary;

/// Every node's lease TTL: a dead owner's rooms move after about this long.
const LEASE_TTL: Duration = Duration::from_secs(1);
/// Every node's NATS call timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long an event or a state may take to show up.
const WAIT: Duration = Duration::from_secs(10);
/// How long one command may take to be answered (a call routed again after timeouts included).
const CALL_DEADLINE: Duration = Duration::from_secs(20);
/// A call answered slower than this is reported (on stderr).
const SLOW_CALL: Duration = Duration::from_secs(1);
/// How long a node may take to start (connect and join its cluster).
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// Lines of each node's output kept for the report of a failing test.
const TAIL: usize = 1000;

/// One test at a time (see the module's doc).
static SERIAL: Mutex<()> = Mutex::new(());

/// What a node's reader threads collected from its output.
#[derive(Default)]
struct Output {
    ready: Option<Value>,
    answers: HashMap<u64, Value>,
    /// Every event line, in the order the node printed them.
    events: Vec<Value>,
    /// The last lines of stdout and stderr, for reports.
    tail: VecDeque<String>,
    /// Stdout ended (the process exited or was killed).
    closed: bool,
}

struct Shared {
    output: Mutex<Output>,
    changed: Condvar,
}

impl Shared {
    fn keep(output: &mut Output, line: String) {
        if output.tail.len() == TAIL {
            output.tail.pop_front();
        }
        output.tail.push_back(line);
    }
}

/// One `cluster_node` child process.
struct Node {
    id: String,
    child: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

/// A command's failure: the error code and message the node answered.
#[derive(Debug)]
struct Refused {
    code: u64,
    message: String,
}

impl Node {
    /// Starts node `id` of `cluster` (without waiting for it: see [`Node::wait_ready`]).
    fn spawn(server: &NatsServer, cluster: &str, id: &str) -> Node {
        let mut child = Command::new(node_binary())
            .args(["--nats", &server.url(), "--cluster", cluster, "--node", id])
            .args(["--lease-ttl-ms", &LEASE_TTL.as_millis().to_string()])
            .args([
                "--request-timeout-ms",
                &REQUEST_TIMEOUT.as_millis().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node {id}: {e}"));
        let shared = Arc::new(Shared {
            output: Mutex::new(Output::default()),
            changed: Condvar::new(),
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let reader = shared.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parsed: Option<Value> = serde_json::from_str(&line).ok();
                let mut output = reader.output.lock();
                match parsed {
                    Some(v) if v.get("ready").is_some() => output.ready = Some(v),
                    Some(v) if v.get("event").is_some() => output.events.push(v),
                    Some(v) if v.get("id").and_then(Value::as_u64).is_some() => {
                        let id = v["id"].as_u64().unwrap_or_default();
                        output.answers.insert(id, v);
                    }
                    _ => {}
                }
                Shared::keep(&mut output, line);
                reader.changed.notify_all();
            }
            reader.output.lock().closed = true;
            reader.changed.notify_all();
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let reader = shared.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                Shared::keep(&mut reader.output.lock(), format!("stderr: {line}"));
            }
        });
        Node {
            id: id.to_string(),
            stdin: Mutex::new(child.stdin.take()),
            child: Mutex::new(child),
            shared,
            next_id: AtomicU64::new(1),
        }
    }

    /// Waits until `what(output)` holds, or panics after `deadline` (or once the node's output
    /// ended, if `what` does not hold then).
    fn wait_until<T>(
        &self,
        deadline: Duration,
        what: &str,
        mut check: impl FnMut(&mut Output) -> Option<T>,
    ) -> T {
        let end = Instant::now() + deadline;
        let mut output = self.shared.output.lock();
        loop {
            if let Some(found) = check(&mut output) {
                return found;
            }
            if output.closed {
                panic!("node {}: {what}: the node's output ended", self.id);
            }
            if self.shared.changed.wait_until(&mut output, end).timed_out() {
                if let Some(found) = check(&mut output) {
                    return found;
                }
                panic!("node {}: {what}: not within {deadline:?}", self.id);
            }
        }
    }

    fn wait_ready(&self) {
        let ready = self.wait_until(READY_DEADLINE, "ready", |o| o.ready.clone());
        assert_eq!(
            ready["ready"], true,
            "node {} did not start: {ready}",
            self.id
        );
    }

    /// Sends `op` with `fields` and waits for its answer.
    fn call(&self, op: &str, fields: Value) -> Result<Value, Refused> {
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let mut command = fields;
        command["op"] = op.into();
        command["id"] = id.into();
        {
            let mut stdin = self.stdin.lock();
            let pipe = stdin
                .as_mut()
                .unwrap_or_else(|| panic!("node {} was killed", self.id));
            if let Err(e) = writeln!(pipe, "{command}").and_then(|()| pipe.flush()) {
                panic!("node {}: cannot send {command}: {e}", self.id);
            }
        }
        let asked = Instant::now();
        let answer = self.wait_until(CALL_DEADLINE, &format!("the answer to {command}"), |o| {
            o.answers.remove(&id)
        });
        if asked.elapsed() > SLOW_CALL {
            eprintln!(
                "slow: node {} answered {command} in {:?}: {answer}",
                self.id,
                asked.elapsed()
            );
        }
        match answer.get("error") {
            None => Ok(answer),
            Some(code) => Err(Refused {
                code: code.as_u64().unwrap_or_default(),
                message: answer["message"].as_str().unwrap_or_default().to_string(),
            }),
        }
    }

    /// [`Node::call`], which must succeed.
    fn ok(&self, op: &str, fields: Value) -> Value {
        let shown = fields.to_string();
        self.call(op, fields)
            .unwrap_or_else(|e| panic!("node {}: {op} {shown} failed: {e:?}", self.id))
    }

    /// [`Node::call`], which must fail: its error code.
    fn refused(&self, op: &str, fields: Value) -> u64 {
        let shown = fields.to_string();
        match self.call(op, fields) {
            Ok(answer) => panic!(
                "node {}: {op} {shown} succeeded ({answer}), expected a failure",
                self.id
            ),
            Err(e) => e.code,
        }
    }

    fn login(&self, user: &str) {
        self.ok("login", json!({ "user": user }));
    }

    fn join(&self, user: &str, room: &str) -> u64 {
        self.ok("join", json!({ "user": user, "room": room }))["member_count"]
            .as_u64()
            .expect("member_count")
    }

    fn send(&self, user: &str, room: &str, text: &str) -> u64 {
        self.ok("send", json!({ "user": user, "room": room, "text": text }))["seq"]
            .as_u64()
            .expect("seq")
    }

    /// The whole retained history, oldest first, as (seq, text).
    fn history(&self, user: &str, room: &str) -> Vec<(u64, String)> {
        let answer = self.ok("history", json!({ "user": user, "room": room, "after": 0 }));
        answer["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| {
                (
                    m["seq"].as_u64().expect("seq"),
                    m["text"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Every event `user` received so far.
    fn events(&self, user: &str) -> Vec<Value> {
        self.shared
            .output
            .lock()
            .events
            .iter()
            .filter(|e| e["user"] == user)
            .cloned()
            .collect()
    }

    /// The messages `user` received in `room`, in order, as (seq, from, text).
    fn messages(&self, user: &str, room: &str) -> Vec<(u64, String, String)> {
        messages_of(&self.events(user), room)
    }

    /// Waits until `user` received the message `seq` of `room`.
    fn wait_message(&self, user: &str, room: &str, seq: u64) {
        self.wait_until(WAIT, &format!("{user} receives message {seq}"), |o| {
            o.events
                .iter()
                .any(|e| {
                    e["user"] == user
                        && e["event"] == "message"
                        && e["room"] == room
                        && e["seq"] == seq
                })
                .then_some(())
        });
    }

    /// Waits until `user` received every message of `seqs` in `room`, within `deadline`.
    fn wait_messages(&self, user: &str, room: &str, seqs: &BTreeSet<u64>, deadline: Duration) {
        self.wait_until(
            deadline,
            &format!("{user} receives {} messages", seqs.len()),
            |o| {
                let got: BTreeSet<u64> = o
                    .events
                    .iter()
                    .filter(|e| e["user"] == user && e["event"] == "message" && e["room"] == room)
                    .filter_map(|e| e["seq"].as_u64())
                    .collect();
                got.is_superset(seqs).then_some(())
            },
        );
    }

    /// Waits until `user` received an event `name` of `room` that `pick` takes, and returns it.
    fn wait_event(
        &self,
        user: &str,
        room: &str,
        name: &str,
        pick: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_until(WAIT, &format!("{user} receives {name}"), |o| {
            o.events
                .iter()
                .find(|e| e["user"] == user && e["event"] == name && e["room"] == room && pick(e))
                .cloned()
        })
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    fn kill(&self) {
        let mut child = self.child.lock();
        let _ = child.kill();
        let _ = child.wait();
        self.stdin.lock().take();
    }

    fn tail(&self) -> String {
        let output = self.shared.output.lock();
        let lines: Vec<&str> = output.tail.iter().map(String::as_str).collect();
        lines.join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The test is over: no need for a clean shutdown.
        self.kill();
    }
}

/// The messages among `events` of `room`, in order, as (seq, from, text).
fn messages_of(events: &[Value], room: &str) -> Vec<(u64, String, String)> {
    events
        .iter()
        .filter(|e| e["event"] == "message" && e["room"] == room)
        .map(|e| {
            (
                e["seq"].as_u64().expect("seq"),
                e["from"].as_str().unwrap_or_default().to_string(),
                e["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// How many events `name` of `room` are among `events` that `pick` takes.
fn count(events: &[Value], room: &str, name: &str, pick: impl Fn(&Value) -> bool) -> usize {
    events
        .iter()
        .filter(|e| e["event"] == name && e["room"] == room && pick(e))
        .count()
}

/// One nats-server and three nodes a, b and c of one cluster. A failing test prints the tail of
/// every node's output and the server's log.
struct Fixture {
    nodes: Vec<Node>,
    server: NatsServer,
    cluster: String,
    _serial: MutexGuard<'static, ()>,
}

impl Fixture {
    /// `None` (the test is skipped) without nats-server.
    fn start(cluster: &str) -> Option<Fixture> {
        let serial = SERIAL.lock();
        let server = NatsServer::start()?;
        let nodes: Vec<Node> = ["a", "b", "c"]
            .iter()
            .map(|id| Node::spawn(&server, cluster, id))
            .collect();
        let fixture = Fixture {
            nodes,
            server,
            cluster: cluster.to_string(),
            _serial: serial,
        };
        for node in &fixture.nodes {
            node.wait_ready();
        }
        Some(fixture)
    }

    fn abc(&self) -> (&Node, &Node, &Node) {
        (&self.nodes[0], &self.nodes[1], &self.nodes[2])
    }

    /// The node holding `room`'s lease now, read from the lease bucket by a probe of the
    /// cluster's own (which runs no room).
    fn lease_owner(&self, room: &str) -> Option<String> {
        let room: u64 = room.parse().expect("a room id");
        let config = ClusterConfig::new([self.server.url()], self.cluster.as_str(), "probe")
            .with_lease_ttl(LEASE_TTL)
            .with_request_timeout(REQUEST_TIMEOUT);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let cluster = Cluster::connect(config).await.expect("the probe connects");
            cluster.owner_of(room).await.expect("the lease's owner")
        })
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for node in &self.nodes {
                eprintln!(
                    "----- node {} (last {TAIL} lines) -----\n{}",
                    node.id,
                    node.tail()
                );
            }
            let log = self.server.log();
            let lines: Vec<&str> = log.lines().collect();
            let from = lines.len().saturating_sub(40);
            eprintln!(
                "----- nats-server (last 40 lines) -----\n{}",
                lines[from..].join("\n")
            );
        }
    }
}

/// Users on a, b and c join a room created on a and chat: every member receives every other
/// member's messages once, in sequence order, and not its own; joins and leaves reach exactly
/// the other members, on every node.
#[test]
fn join_and_chat_across_three_nodes() {
    let Some(f) = Fixture::start("chat") else {
        return;
    };
    let (a, b, c) = f.abc();
    a.ok("super_admin", json!({ "user": "host" }));
    a.login("host");
    a.login("alice");
    b.login("bob");
    c.login("carol");
    let room = a.ok("create", json!({ "user": "host", "name": "three nodes" }))["room"]
        .as_str()
        .expect("room")
        .to_string();
    assert_eq!(a.join("alice", &room), 2);
    assert_eq!(b.join("bob", &room), 3);
    assert_eq!(c.join("carol", &room), 4);

    let users: [(&Node, &str); 4] = [(a, "host"), (a, "alice"), (b, "bob"), (c, "carol")];
    // Who joined after whom: each joiner is announced to those already in, not to itself.
    let joined_before = |user: &str| -> Vec<&str> {
        match user {
            "host" => vec!["alice", "bob", "carol"],
            "alice" => vec!["bob", "carol"],
            "bob" => vec!["carol"],
            _ => vec![],
        }
    };
    for (node, user) in users {
        for joiner in joined_before(user) {
            node.wait_event(user, &room, "member_joined", |e| e["participant"] == joiner);
        }
    }

    // Three rounds: each member sends one message a round.
    let mut sent: Vec<(u64, String, String)> = Vec::new();
    for round in 0..3 {
        for (node, user) in users {
            let text = format!("{user} {round}");
            let seq = node.send(user, &room, &text);
            sent.push((seq, user.to_string(), text));
        }
    }
    let seqs: Vec<u64> = sent.iter().map(|m| m.0).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<u64>>(), "acknowledged seqs");

    for (node, user) in users {
        let expected: BTreeSet<u64> = sent.iter().filter(|m| m.1 != user).map(|m| m.0).collect();
        node.wait_messages(user, &room, &expected, WAIT);
    }
    // A last message from host and one from carol, after which nothing of the rounds may come.
    let marker = a.send("host", &room, "marker from a");
    for (node, user) in &users[1..] {
        node.wait_message(user, &room, marker);
    }
    let marker2 = c.send("carol", &room, "marker from c");
    for (node, user) in &users[..3] {
        node.wait_message(user, &room, marker2);
    }

    for (node, user) in users {
        let got: Vec<(u64, String, String)> = node
            .messages(user, &room)
            .into_iter()
            .filter(|m| m.0 <= 12)
            .collect();
        let expected: Vec<(u64, String, String)> =
            sent.iter().filter(|m| m.1 != user).cloned().collect();
        assert_eq!(
            got, expected,
            "{user} on node {}: every other member's message once, in seq order, none of its own",
            node.id
        );
        let events = node.events(user);
        for joiner in ["alice", "bob", "carol"] {
            let n = count(&events, &room, "member_joined", |e| {
                e["participant"] == joiner
            });
            let want = usize::from(joined_before(user).contains(&joiner));
            assert_eq!(
                n, want,
                "{user} on node {}: member_joined {joiner}",
                node.id
            );
        }
        assert_eq!(count(&events, &room, "missed", |_| true), 0);
    }

    // Carol leaves from c: the others hear it on a and b; she does not.
    c.ok("leave", json!({ "user": "carol", "room": room }));
    for (node, user) in &users[..3] {
        node.wait_event(user, &room, "member_exited", |e| {
            e["participant"] == "carol"
        });
    }
    let bye = a.send("host", &room, "bye");
    b.wait_message("bob", &room, bye);
    a.wait_message("alice", &room, bye);
    assert!(
        c.messages("carol", &room).iter().all(|m| m.0 != bye),
        "carol got a message after she left"
    );
    assert_eq!(
        count(&c.events("carol"), &room, "member_exited", |_| true),
        0,
        "carol was told of her own leave"
    );
    for (node, user) in &users[..3] {
        let n = count(&node.events(user), &room, "member_exited", |e| {
            e["participant"] == "carol"
        });
        assert_eq!(n, 1, "{user} on node {}: member_exited carol", node.id);
    }
    let info = b.ok("info", json!({ "user": "bob", "room": room }));
    assert_eq!(info["member_count"], 3, "{info}");
    assert_eq!(info["owner"], "host", "{info}");
}

/// An admin on b mutes a member on c: the member cannot send (215); the mute reaches the
/// member, the owner (on a) and the other admin, not the admin who acted nor plain members.
/// A kick from b and an unmute from b as well.
#[test]
fn moderation_from_another_node() {
    let Some(f) = Fixture::start("moderation") else {
        return;
    };
    let (a, b, c) = f.abc();
    a.ok("super_admin", json!({ "user": "host" }));
    for (node, user) in [
        (a, "host"),
        (a, "dave"),
        (b, "bob"),
        (b, "frank"),
        (c, "carol"),
        (c, "erin"),
    ] {
        node.login(user);
    }
    let room = a.ok("create", json!({ "user": "host", "name": "moderated" }))["room"]
        .as_str()
        .expect("room")
        .to_string();
    a.join("dave", &room);
    b.join("bob", &room);
    b.join("frank", &room);
    c.join("carol", &room);
    c.join("erin", &room);
    for admin in ["bob", "frank"] {
        a.ok(
            "add_admin",
            json!({ "user": "host", "room": room, "target": admin }),
        );
    }
    // Everyone is in, and bob knows he is an admin.
    b.wait_event("bob", &room, "admin_added", |e| e["admin"] == "bob");

    // bob (an admin, on b) mutes carol (on c).
    b.ok(
        "mute",
        json!({ "user": "bob", "room": room, "target": "carol", "seconds": 60 }),
    );
    let muted = c.wait_event("carol", &room, "mute_list_added", |_| true);
    assert_eq!(muted["members"], json!(["carol"]), "{muted}");
    assert_eq!(muted["operator"], "bob", "{muted}");
    assert!(muted["expire_time"].is_u64(), "{muted}");
    let code = c.refused(
        "send",
        json!({ "user": "carol", "room": room, "text": "let me talk" }),
    );
    assert_eq!(code, 215, "a muted member's send");

    // After a message everyone receives (in the room's order), the mute has reached whom it
    // reaches.
    let barrier = a.send("host", &room, "after the mute");
    let everyone: [(&Node, &str); 6] = [
        (a, "host"),
        (a, "dave"),
        (b, "bob"),
        (b, "frank"),
        (c, "carol"),
        (c, "erin"),
    ];
    for (node, user) in &everyone[1..] {
        node.wait_message(user, &room, barrier);
    }
    for (node, user) in everyone {
        let want = usize::from(matches!(user, "carol" | "host" | "frank"));
        if want == 1 {
            // host sent the barrier, so it has none: wait for its notice itself.
            node.wait_event(user, &room, "mute_list_added", |_| true);
        }
        let got = count(&node.events(user), &room, "mute_list_added", |_| true);
        assert_eq!(
            got, want,
            "{user} on node {}: mute_list_added (to the target, the owner and the admins, \
             never to the actor)",
            node.id
        );
    }

    // bob kicks erin (on c): she is told she was removed, the others that she left.
    b.ok(
        "kick",
        json!({ "user": "bob", "room": room, "target": "erin" }),
    );
    let removed = c.wait_event("erin", &room, "removed_from_chat_room", |_| true);
    assert_eq!(removed["reason"], "Kicked", "{removed}");
    assert_eq!(removed["operator"], "bob", "{removed}");
    for (node, user) in [(a, "host"), (a, "dave"), (b, "frank"), (c, "carol")] {
        node.wait_event(user, &room, "member_exited", |e| e["participant"] == "erin");
    }
    let code = c.refused(
        "send",
        json!({ "user": "erin", "room": room, "text": "still here?" }),
    );
    assert_eq!(code, 702, "a kicked member's send");
    let info = c.ok("info", json!({ "user": "carol", "room": room }));
    assert_eq!(info["member_count"], 5, "{info}");

    // frank (the other admin, on b) unmutes carol: she can send again.
    b.ok(
        "unmute",
        json!({ "user": "frank", "room": room, "target": "carol" }),
    );
    c.wait_event("carol", &room, "mute_list_removed", |_| true);
    let seq = c.send("carol", &room, "thanks");
    for (node, user) in [(a, "host"), (a, "dave"), (b, "bob"), (b, "frank")] {
        node.wait_message(user, &room, seq);
    }
    for (node, user) in [
        (a, "host"),
        (a, "dave"),
        (b, "bob"),
        (b, "frank"),
        (c, "carol"),
    ] {
        let want = usize::from(matches!(user, "carol" | "host" | "bob"));
        let got = count(&node.events(user), &room, "mute_list_removed", |_| true);
        assert_eq!(got, want, "{user} on node {}: mute_list_removed", node.id);
        let kicked = count(&node.events(user), &room, "member_exited", |e| {
            e["participant"] == "erin"
        });
        let want = usize::from(user != "bob");
        assert_eq!(
            kicked, want,
            "{user} on node {}: member_exited erin",
            node.id
        );
    }
    assert_eq!(
        count(&b.events("bob"), &room, "removed_from_chat_room", |_| true),
        0
    );
}

/// Senders on b and c send 200 messages each at once to a room owned by a: the seqs are
/// 1..=400, and every member on every node receives the others' messages in strictly increasing
/// seq order, without gaps.
#[test]
fn ordering_per_room_with_concurrent_senders() {
    const EACH: usize = 200;
    let Some(f) = Fixture::start("ordering") else {
        return;
    };
    let (a, b, c) = f.abc();
    a.ok("super_admin", json!({ "user": "host" }));
    let members: [(&Node, &str); 6] = [
        (a, "host"),
        (a, "alice"),
        (b, "bob"),
        (b, "dave"),
        (c, "carol"),
        (c, "erin"),
    ];
    for (node, user) in members {
        node.login(user);
    }
    let room = a.ok("create", json!({ "user": "host", "name": "ordered" }))["room"]
        .as_str()
        .expect("room")
        .to_string();
    for (node, user) in &members[1..] {
        node.join(user, &room);
    }

    let started = Instant::now();
    let sends = |node: &Node, user: &str| -> Vec<u64> {
        (0..EACH)
            .map(|i| node.send(user, &room, &format!("{user} {i}")))
            .collect()
    };
    let (bob_seqs, carol_seqs) = std::thread::scope(|s| {
        let bob = s.spawn(|| sends(b, "bob"));
        let carol = s.spawn(|| sends(c, "carol"));
        (
            bob.join().expect("bob's sends"),
            carol.join().expect("carol's sends"),
        )
    });
    eprintln!(
        "{} messages from two nodes in {:?}",
        2 * EACH,
        started.elapsed()
    );
    for (user, seqs) in [("bob", &bob_seqs), ("carol", &carol_seqs)] {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{user}'s acknowledged seqs grow"
        );
    }
    let all: BTreeSet<u64> = bob_seqs.iter().chain(&carol_seqs).copied().collect();
    assert_eq!(
        all,
        (1..=(2 * EACH) as u64).collect::<BTreeSet<u64>>(),
        "the acknowledged seqs are 1..=400, each once"
    );

    for (node, user) in members {
        let own: BTreeSet<u64> = match user {
            "bob" => bob_seqs.iter().copied().collect(),
            "carol" => carol_seqs.iter().copied().collect(),
            _ => BTreeSet::new(),
        };
        let expected: BTreeSet<u64> = all.difference(&own).copied().collect();
        node.wait_messages(user, &room, &expected, Duration::from_secs(20));
        let got: Vec<u64> = node.messages(user, &room).iter().map(|m| m.0).collect();
        assert_eq!(
            got,
            expected.iter().copied().collect::<Vec<u64>>(),
            "{user} on node {}: the others' messages in seq order, each once, no gaps",
            node.id
        );
    }
}

/// How long a failover sender retries one message before it gives up.
const RETRY_FOR: Duration = Duration::from_secs(15);

/// What the failover tests' senders did, each in its own log.
#[derive(Default)]
struct SendLog {
    /// (message number, seq, when acknowledged).
    acked: Vec<(usize, u64, Instant)>,
    /// (message number, error code, message, when).
    errors: Vec<(usize, u64, String, Instant)>,
    /// Why the sender stopped before it was told to, if it did.
    gave_up: Option<String>,
}

/// Senders' logs and the condition variable they signal on progress.
struct Senders {
    logs: Mutex<Vec<SendLog>>,
    progress: Condvar,
    stop: AtomicBool,
}

impl Senders {
    /// Sends `user`'s messages `<user> <i>` (idempotency key `<user>-<i>`) on `node` until
    /// told to stop, each awaiting its acknowledgement; a failed send is retried, with a
    /// backoff, for at most [`RETRY_FOR`].
    fn run(&self, index: usize, node: &Node, user: &str, room: &str) {
        let mut i = 0;
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(25);
        while !self.stop.load(Ordering::SeqCst) {
            let fields = json!({
                "user": user,
                "room": room,
                "text": format!("{user} {i}"),
                "key": format!("{user}-{i}"),
            });
            match node.call("send", fields) {
                Ok(answer) => {
                    let seq = answer["seq"].as_u64().expect("seq");
                    self.logs.lock()[index].acked.push((i, seq, Instant::now()));
                    self.progress.notify_all();
                    i += 1;
                    failing_since = None;
                    backoff = Duration::from_millis(25);
                }
                Err(e) => {
                    let now = Instant::now();
                    self.logs.lock()[index]
                        .errors
                        .push((i, e.code, e.message, now));
                    let since = *failing_since.get_or_insert(now);
                    if now - since > RETRY_FOR {
                        self.logs.lock()[index].gave_up = Some(format!(
                            "{user}'s message {i} failed for over {RETRY_FOR:?}"
                        ));
                        self.progress.notify_all();
                        return;
                    }
                    // The retry's backoff: the one pause of these tests.
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(400));
                }
            }
        }
    }

    /// Waits until every sender's log satisfies `done`; panics (stopping the senders) when a
    /// sender gave up or after `deadline`.
    fn wait(&self, what: &str, deadline: Duration, done: impl Fn(&SendLog) -> bool) {
        let end = Instant::now() + deadline;
        let mut logs = self.logs.lock();
        while !logs.iter().all(&done) {
            if let Some(why) = logs.iter().find_map(|l| l.gave_up.clone()) {
                self.stop.store(true, Ordering::SeqCst);
                panic!("{what}: a sender gave up: {why}");
            }
            if self.progress.wait_until(&mut logs, end).timed_out() && !logs.iter().all(&done) {
                self.stop.store(true, Ordering::SeqCst);
                panic!("{what}: not within {deadline:?}");
            }
        }
    }
}

/// The failover scenario: a room created on a (so owned by a) with `host` on a and the
/// members `senders` and `watchers` on b and c; the senders send without pause while a is
/// killed with SIGKILL, `BEFORE` acknowledged messages each into it, until each has `AFTER`
/// acknowledged after the kill. Checks what every failover must keep: the room moved to b or
/// c; every acknowledged message is in history, on b and on c alike, once, with no gaps; each
/// sender's seqs grow; the members on b and c stay members; those on the surviving node that
/// did not take the room are told it recovered, and every member on b and c receives, in
/// order, every message acknowledged after the kill past its recovery notice's `last_seq`;
/// the room works as before (a join, a message). Returns the new owner.
fn failover(f: &Fixture, senders: &[(&Node, &str)], watchers: &[(&Node, &str)]) -> String {
    const BEFORE: usize = 20;
    const AFTER: usize = 20;
    let (a, b, c) = f.abc();
    a.ok("super_admin", json!({ "user": "host" }));
    a.login("host");
    for (node, user) in senders.iter().chain(watchers) {
        node.login(user);
    }
    let room = a.ok("create", json!({ "user": "host", "name": "survives" }))["room"]
        .as_str()
        .expect("room")
        .to_string();
    for (node, user) in senders.iter().chain(watchers) {
        node.join(user, &room);
    }
    assert_eq!(
        f.lease_owner(&room).as_deref(),
        Some("a"),
        "a owns the room"
    );

    let run = Senders {
        logs: Mutex::new(senders.iter().map(|_| SendLog::default()).collect()),
        progress: Condvar::new(),
        stop: AtomicBool::new(false),
    };
    let killed_at = std::thread::scope(|s| {
        for (index, (node, user)) in senders.iter().enumerate() {
            let (run, room) = (&run, &room);
            s.spawn(move || run.run(index, node, user, room));
        }
        run.wait("acknowledgements before the kill", WAIT, |l| {
            l.acked.len() >= BEFORE
        });
        a.kill();
        let killed_at = Instant::now();
        run.wait("acknowledgements after the kill", RETRY_FOR + WAIT, |l| {
            l.acked.iter().filter(|m| m.2 > killed_at).count() >= AFTER
        });
        run.stop.store(true, Ordering::SeqCst);
        killed_at
    });
    let logs = run.logs.into_inner();
    for ((_, user), log) in senders.iter().zip(&logs) {
        let first_after = log.acked.iter().find(|m| m.2 > killed_at).map(|m| m.2);
        eprintln!(
            "failover: {user}: {} acknowledged ({} after the kill), {} failed attempts, first \
             acknowledgement {:?} after the kill",
            log.acked.len(),
            log.acked.iter().filter(|m| m.2 > killed_at).count(),
            log.errors.len(),
            first_after.map(|t| t - killed_at),
        );
        for error in &log.errors {
            eprintln!(
                "  {user} {} failed {:?} after the kill with {}: {}",
                error.0,
                error.3.saturating_duration_since(killed_at),
                error.1,
                error.2
            );
        }
    }

    // The room moved to b or c.
    let owner = f.lease_owner(&room);
    let owner = match owner.as_deref() {
        Some(owner @ ("b" | "c")) => owner.to_string(),
        other => panic!("the room's new owner is {other:?}, expected b or c"),
    };
    eprintln!("failover: node {owner} took the room");

    // Every acknowledged message is in history, on b and on c alike, once; no gaps.
    let (b_user, c_user) = {
        let on = |node: &Node| {
            senders
                .iter()
                .chain(watchers)
                .find(|(n, _)| n.id == node.id)
                .map(|(_, u)| *u)
                .expect("a member on every surviving node")
        };
        (on(b), on(c))
    };
    let history = b.history(b_user, &room);
    assert_eq!(history, c.history(c_user, &room), "history on b and on c");
    let seqs: Vec<u64> = history.iter().map(|m| m.0).collect();
    let last = seqs.last().copied().unwrap_or(0);
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<u64>>(),
        "history's seqs have no gaps"
    );
    for ((_, user), log) in senders.iter().zip(&logs) {
        for &(i, seq, _) in &log.acked {
            let text = history.iter().find(|m| m.0 == seq).map(|m| m.1.as_str());
            assert_eq!(
                text,
                Some(format!("{user} {i}").as_str()),
                "acknowledged message {user} {i} (seq {seq}) in history"
            );
        }
        let acked: Vec<u64> = log.acked.iter().map(|m| m.1).collect();
        assert!(
            acked.windows(2).all(|w| w[0] < w[1]),
            "{user}'s acknowledged seqs grow: {acked:?}"
        );
    }
    // A retried send carries its first attempt's idempotency key: no message twice.
    let texts: BTreeSet<&str> = history.iter().map(|m| m.1.as_str()).collect();
    assert_eq!(
        texts.len(),
        history.len(),
        "a message is in history twice: {history:?}"
    );

    // The members on b and c stay members. host does not: membership is not stored (see
    // "What persists" in docs/semantics.md), a new owner learns it from the sessions on the
    // nodes that are left, and host's session died with a. It stays the room's owner.
    let mut expected: Vec<&str> = senders.iter().chain(watchers).map(|m| m.1).collect();
    expected.sort_unstable();
    let listed = c.ok("members", json!({ "user": c_user, "room": room }));
    assert_eq!(
        listed["members"],
        json!(expected),
        "the members after the failover"
    );
    let info = c.ok("info", json!({ "user": c_user, "room": room }));
    assert_eq!(info["member_count"], expected.len(), "{info}");
    assert_eq!(info["owner"], "host", "{info}");

    // The members on the surviving node that did not take the room are told it recovered, with
    // the room's last seq then; the messages up to it are in history (checked above), and
    // every message acknowledged after the kill with a greater seq reaches them live, in order.
    // (Live delivery is at most once: what the new owner accepted before those members were
    // back with it, they fetch from history.) So do the members on the new owner's node, after
    // their own recovery notice if they got one.
    let after: BTreeSet<u64> = senders
        .iter()
        .zip(&logs)
        .flat_map(|(_, l)| l.acked.iter().filter(|m| m.2 > killed_at).map(|m| m.1))
        .collect();
    for (node, user) in senders.iter().chain(watchers) {
        let own: BTreeSet<u64> = senders
            .iter()
            .zip(&logs)
            .filter(|((_, u), _)| u == user)
            .flat_map(|(_, l)| l.acked.iter().map(|m| m.1))
            .collect();
        if node.id != owner {
            node.wait_event(user, &room, "chat_room_recovered", |_| true);
        }
        let events = node.events(user);
        let recovered: Vec<u64> = events
            .iter()
            .filter(|e| e["event"] == "chat_room_recovered" && e["room"] == room)
            .map(|e| e["last_seq"].as_u64().expect("last_seq"))
            .collect();
        let live_after = recovered.iter().copied().max().unwrap_or(0);
        let expected: BTreeSet<u64> = after
            .difference(&own)
            .copied()
            .filter(|&seq| seq > live_after)
            .collect();
        node.wait_messages(user, &room, &expected, WAIT);
        let got: Vec<u64> = node.messages(user, &room).iter().map(|m| m.0).collect();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "{user} on {}: messages in seq order, each once: {got:?}",
            node.id
        );
        let missed: Vec<u64> = after
            .difference(&own)
            .filter(|seq| !got.contains(seq))
            .copied()
            .collect();
        eprintln!(
            "failover: {user} on {} received {} messages, chat_room_recovered with last_seq \
             {recovered:?}; not live of those acknowledged after the kill: {missed:?}",
            node.id,
            got.len()
        );
    }
    // What failed sends were told: a member's send should fail with 901 (timeout) or 903 (the
    // room is moving) while the room moves, not as if the sender had left it (702).
    for ((_, user), log) in senders.iter().zip(&logs) {
        let odd: Vec<String> = log
            .errors
            .iter()
            .filter(|e| !matches!(e.1, 901 | 903))
            .map(|e| format!("{user} {}: {} {}", e.0, e.1, e.2))
            .collect();
        if !odd.is_empty() {
            eprintln!("NOTE: failover: sends failed with unexpected codes: {odd:?}");
        }
    }
    // The room works as before: a user joins on c, every member on b and c hears it once;
    // a message sent then reaches every member on b and c, the newcomer too.
    c.login("frank");
    assert_eq!(c.join("frank", &room), expected.len() as u64 + 1);
    let (node, user) = senders[0];
    let seq = node.send(user, &room, "after the failover");
    let members: Vec<(&Node, &str)> = senders
        .iter()
        .chain(watchers)
        .copied()
        .chain([(c, "frank")])
        .collect();
    for &(other, member) in &members {
        if member == user {
            // The sender has no message to wait for: its notice of the join then.
            other.wait_event(member, &room, "member_joined", |e| {
                e["participant"] == "frank"
            });
        } else {
            other.wait_message(member, &room, seq);
        }
        let joined = count(&other.events(member), &room, "member_joined", |e| {
            e["participant"] == "frank"
        });
        let want = usize::from(member != "frank");
        assert_eq!(
            joined, want,
            "{member} on {}: member_joined frank",
            other.id
        );
    }
    owner
}

/// A room owned by a, members on b and c; bob on b sends without pause (awaiting each
/// acknowledgement, retrying a failed send with its idempotency key) while a is killed with
/// SIGKILL: the room moves to b or c; every acknowledged message is in history, whose seqs
/// have no gaps; carol and dave on c are told the room recovered (when c did not take it) and
/// receive the messages sent after the failover.
#[test]
fn failover_when_the_owner_is_killed() {
    let Some(f) = Fixture::start("failover") else {
        return;
    };
    let (_, b, c) = f.abc();
    failover(&f, &[(b, "bob")], &[(c, "carol"), (c, "dave")]);
}

/// The same with a sender on each surviving node (bob on b, carol on c), so that both race
/// to take the room and both have sends in flight when a dies.
#[test]
fn failover_with_senders_on_both_surviving_nodes() {
    let Some(f) = Fixture::start("failover2") else {
        return;
    };
    let (_, b, c) = f.abc();
    failover(&f, &[(b, "bob"), (c, "carol")], &[(b, "erin"), (c, "dave")]);
}
