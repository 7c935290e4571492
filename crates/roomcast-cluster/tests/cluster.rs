//! roomcast-cluster against a real nats-server (Debian's 2.9 in CI): each test starts its own
//! server on a free loopback port. Without nats-server installed the tests print a skip
//! message and pass, unless `ROOMCAST_REQUIRE_NATS=1`.
//!
//! Nothing sleeps to wait for something: waits poll with a deadline (`eventually`). Lease
//! expiry needs real time, so leases here live 1 s.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use roomcast_cluster::testing::{eventually, NatsServer};
use roomcast_cluster::{Bytes, Cluster, ClusterConfig, ErrorKind, LeaseStatus, LogEntry};

const TTL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_secs(1);
/// Slack on top of a bound, for a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(500);

macro_rules! server {
    () => {
        match NatsServer::start() {
            Some(server) => server,
            None => return,
        }
    };
}

fn config(server: &NatsServer, node: &str) -> ClusterConfig {
    ClusterConfig::new([server.url()], "test", node)
        .with_lease_ttl(TTL)
        .with_request_timeout(TIMEOUT)
}

async fn node(server: &NatsServer, node: &str) -> Cluster {
    Cluster::connect(config(server, node))
        .await
        .unwrap_or_else(|e| panic!("node {node} could not connect: {e}\n{}", server.log()))
}

fn payloads(entries: &[LogEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| String::from_utf8(e.payload.to_vec()).unwrap())
        .collect()
}

/// Polls `b.acquire(room)` until it succeeds (the holder's lease expired).
async fn acquire_when_free(b: &Cluster, room: u64) -> roomcast_cluster::Lease {
    eventually(TTL * 5, "the lease to expire", || async {
        match b.acquire(room).await {
            Ok(lease) => Some(lease),
            Err(e) if e.kind() == ErrorKind::LeaseHeld => None,
            Err(e) => panic!("acquire failed: {e}"),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connecting_at_once_all_succeed_and_must_agree_on_the_ttl() {
    let server = server!();
    // Several fresh clusters, each created by four nodes at once.
    for round in 0..5 {
        let handles: Vec<_> = ["a", "b", "c", "d"]
            .into_iter()
            .map(|n| {
                let mut config = config(&server, n);
                config.cluster = format!("race{round}");
                tokio::spawn(Cluster::connect(config))
            })
            .collect();
        for handle in handles {
            handle.await.unwrap().unwrap();
        }
    }
    for handle in ["a", "b"].map(|n| tokio::spawn(Cluster::connect(config(&server, n)))) {
        handle.await.unwrap().unwrap();
    }
    // Again: binds to what exists.
    let a = node(&server, "a").await;
    assert_eq!(a.node(), "a");
    assert!(a.is_connected());

    let other_ttl = config(&server, "e").with_lease_ttl(TTL * 2);
    let e = Cluster::connect(other_ttl).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConfigMismatch, "{e}");

    // Another cluster on the same NATS has its own bucket and TTL.
    let mut other = config(&server, "a").with_lease_ttl(TTL * 2);
    other.cluster = "other".into();
    Cluster::connect(other).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_no_server_fails_fast_as_unavailable() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = ClusterConfig::new([format!("nats://127.0.0.1:{port}")], "test", "a")
        .with_request_timeout(TIMEOUT);
    let start = Instant::now();
    let e = Cluster::connect(config).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(start.elapsed() < TIMEOUT + SLACK, "{:?}", start.elapsed());

    let bad = ClusterConfig::new(["nats://127.0.0.1:1"], "a.b", "a");
    assert_eq!(
        Cluster::connect(bad).await.unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_racing_for_a_room_have_exactly_one_winner_each_time() {
    let server = server!();
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let room = 7;
    let mut wins = [0usize; 2];
    for round in 0..50 {
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let a = a.clone();
                async move { a.acquire(room).await }
            }),
            tokio::spawn({
                let b = b.clone();
                async move { b.acquire(room).await }
            })
        );
        let (lease, winner, loser_error) = match (ra.unwrap(), rb.unwrap()) {
            (Ok(lease), Err(e)) => {
                wins[0] += 1;
                (lease, "a", e)
            }
            (Err(e), Ok(lease)) => {
                wins[1] += 1;
                (lease, "b", e)
            }
            (ra, rb) => panic!("round {round}: not exactly one winner: {ra:?} {rb:?}"),
        };
        assert_eq!(loser_error.kind(), ErrorKind::LeaseHeld, "{loser_error}");
        assert_eq!(loser_error.owner(), Some(winner));
        assert_eq!(a.owner_of(room).await.unwrap().as_deref(), Some(winner));
        // Released each round: the next round's create goes over a delete marker.
        lease.release().await.unwrap();
        assert_eq!(b.owner_of(room).await.unwrap(), None);
    }
    eprintln!("wins: a {}, b {}", wins[0], wins[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_not_renewed_expires_and_its_old_owner_cannot_renew_it() {
    let server = server!();
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let room = 1;
    let mut lease = a.acquire(room).await.unwrap();
    let first = lease.revision();
    lease.renew().await.unwrap();
    assert!(lease.revision() > first);
    let e = b.acquire(room).await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code(), e.owner()),
        (ErrorKind::LeaseHeld, "lease_held", Some("a"))
    );

    // a stops renewing; b gets the room once the key expires, not before.
    let b_lease = acquire_when_free(&b, room).await;
    let now = Instant::now();
    assert!(
        now >= lease.expires_at(),
        "the lease expired before its conservative bound"
    );
    eprintln!(
        "b acquired {:?} after a's lease's conservative end",
        now - lease.expires_at()
    );
    assert_eq!(a.owner_of(room).await.unwrap().as_deref(), Some("b"));

    let e = lease.renew().await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::LeaseLost, "lease_lost"),
        "{e}"
    );
    let e = lease.release().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LeaseLost);
    // b's lease is untouched by a's attempts.
    assert_eq!(a.owner_of(room).await.unwrap().as_deref(), Some("b"));
    b_lease.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_can_be_acquired_after_release_and_after_expiry() {
    let server = server!();
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let room = 2;

    // After a release (a delete marker is the key's last entry): at once.
    let lease = a.acquire(room).await.unwrap();
    lease.release().await.unwrap();
    assert_eq!(a.owner_of(room).await.unwrap(), None);
    let lease = b.acquire(room).await.unwrap();
    drop(lease);

    // After expiry (the key is gone).
    eventually(TTL * 5, "b's lease to expire", || async {
        a.owner_of(room).await.unwrap().is_none().then_some(())
    })
    .await;
    let lease = a.acquire(room).await.unwrap();
    // A released key that then expires (the marker is gone too).
    lease.release().await.unwrap();
    let lease = acquire_when_free(&b, room).await;
    drop(lease);

    // Acquiring a room this node already holds rewrites its entry; the older lease stays
    // valid (leases are the node's) and picks the newer revision up.
    let mut older = acquire_when_free(&a, room).await;
    let newer = a.acquire(room).await.unwrap();
    assert!(newer.revision() > older.revision());
    older.renew().await.unwrap();
    assert!(older.revision() > newer.revision());
    older.release().await.unwrap();
    assert_eq!(b.owner_of(room).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_lease_outlives_its_ttl_and_is_released_at_once() {
    let server = server!();
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let room = 3;
    let keeper = a.acquire(room).await.unwrap().keep_alive();
    let mut status = keeper.subscribe();
    // Three TTLs pass (really: expiry needs time); b never gets the room meanwhile.
    let until = Instant::now() + TTL * 3;
    let mut renewals = 0;
    while Instant::now() < until {
        let e = b.acquire(room).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::LeaseHeld, "{e}");
        if tokio::time::timeout(TTL / 5, status.changed())
            .await
            .is_ok()
        {
            renewals += 1;
        }
    }
    assert!(renewals >= 3, "{renewals} renewals in 3 TTLs");
    assert!(keeper.is_held());
    let LeaseStatus::Held { expires_at, .. } = keeper.status() else {
        panic!("not held")
    };
    assert!(expires_at > Instant::now());

    keeper.release().await.unwrap();
    b.acquire(room).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_reports_a_lease_taken_behind_its_back() {
    let server = server!();
    let a = node(&server, "a").await;
    let room = 4;
    let keeper = a.acquire(room).await.unwrap().keep_alive();
    // A misbehaving writer overwrites the lease key unconditionally.
    let raw = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(raw);
    js.publish(
        format!("$KV.roomcast_test_owners.{room}"),
        "intruder".into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let error = tokio::time::timeout(TTL * 2, keeper.lost())
        .await
        .expect("the keeper did not notice within 2 TTLs");
    assert_eq!(error.kind(), ErrorKind::LeaseLost, "{error}");
    assert!(!keeper.is_held());
    assert_eq!(
        keeper.release().await.unwrap_err().kind(),
        ErrorKind::LeaseLost
    );
    assert_eq!(a.owner_of(room).await.unwrap().as_deref(), Some("intruder"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_is_fenced_and_leaves_nothing_in_the_log() {
    let server = server!();
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let room = 10;

    let mut a_lease = a.acquire(room).await.unwrap();
    let s1 = a.append(room, "a1", None).await.unwrap();
    let s2 = a.append(room, "a2", Some(s1)).await.unwrap();
    assert!(s2 > s1);
    assert_eq!(a.last_seq(room).await.unwrap(), Some(s2));
    // Another room's log does not move this one's end.
    a.append(room + 1, "other", None).await.unwrap();

    // a pauses (no renewal); b takes the room over, reads the log's end and appends.
    let _b_lease = acquire_when_free(&b, room).await;
    let last = b.last_seq(room).await.unwrap();
    assert_eq!(last, Some(s2));
    let s3 = b.append(room, "b1", last).await.unwrap();

    // a wakes up with its stale view.
    assert_eq!(
        a_lease.renew().await.unwrap_err().kind(),
        ErrorKind::LeaseLost
    );
    let e = a.append(room, "a3-stale", Some(s2)).await.unwrap_err();
    assert_eq!((e.kind(), e.code()), (ErrorKind::Fenced, "fenced"), "{e}");
    assert_eq!(e.last_seq(), Some(s3), "{e}");
    let e = a.append(room, "a3-as-first", None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced);

    let log = b.replay(room, 0).await.unwrap();
    assert_eq!(payloads(&log), ["a1", "a2", "b1"]);
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [s1, s2, s3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_returns_thousands_of_entries_in_order() {
    let server = server!();
    let a = node(&server, "a").await;
    let (room, other) = (20, 21);
    let mut seqs = Vec::with_capacity(5_000);
    let (mut last, mut other_last) = (None, None);
    for i in 0..5_000 {
        let seq = a.append(room, format!("entry-{i}"), last).await.unwrap();
        seqs.push(seq);
        last = Some(seq);
        if i % 100 == 0 {
            other_last = Some(
                a.append(other, format!("other-{i}"), other_last)
                    .await
                    .unwrap(),
            );
        }
    }
    let log = a.replay(room, 0).await.unwrap();
    assert_eq!(log.len(), 5_000);
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
    for (i, entry) in log.iter().enumerate() {
        assert_eq!(entry.payload, Bytes::from(format!("entry-{i}")));
    }

    let tail = a.replay(room, seqs[2_499]).await.unwrap();
    assert_eq!(tail.len(), 2_500);
    assert_eq!(tail[..], log[2_500..]);
    // An `after` between two of the room's entries (another room's sequence).
    assert!(seqs[100] + 1 < seqs[101]);
    let from_gap = a.replay(room, seqs[100] + 1).await.unwrap();
    assert_eq!(from_gap[..], log[101..]);
    assert!(a.replay(room, seqs[4_999]).await.unwrap().is_empty());
    assert!(a.replay(99, 0).await.unwrap().is_empty());
    assert_eq!(a.replay(other, 0).await.unwrap().len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_empties_one_rooms_log_only() {
    let server = server!();
    let a = node(&server, "a").await;
    let (room, other) = (30, 31);
    let mut last = None;
    for i in 0..3 {
        last = Some(a.append(room, format!("r{i}"), last).await.unwrap());
    }
    let o1 = a.append(other, "o1", None).await.unwrap();
    let o2 = a.append(other, "o2", Some(o1)).await.unwrap();

    assert_eq!(a.purge(room).await.unwrap(), 3);
    assert_eq!(a.last_seq(room).await.unwrap(), None);
    assert!(a.replay(room, 0).await.unwrap().is_empty());
    assert_eq!(payloads(&a.replay(other, 0).await.unwrap()), ["o1", "o2"]);
    assert_eq!(a.last_seq(other).await.unwrap(), Some(o2));

    // The purged log starts again from empty; a view from before the purge is stale.
    let e = a.append(room, "stale", last).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Fenced);
    assert_eq!(e.last_seq(), Some(0), "{e}");
    let first = a.append(room, "again", None).await.unwrap();
    assert_eq!(a.last_seq(room).await.unwrap(), Some(first));
    assert_eq!(a.purge(99).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_above_the_limit_fail_clearly() {
    let server = server!();
    let a = node(&server, "a").await;
    let max = a.max_payload();
    assert_eq!(max, 1024 * 1024 - roomcast_cluster::HEADER_ALLOWANCE);
    let too_big = Bytes::from(vec![7u8; max + 1]);
    let e = a.append(1, too_big.clone(), None).await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::PayloadTooLarge, "payload_too_large"),
        "{e}"
    );
    assert_eq!(a.last_seq(1).await.unwrap(), None);
    let e = a.publish_room(1, too_big.clone()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PayloadTooLarge);
    let e = a.request("b", too_big).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::PayloadTooLarge);

    // Exactly the limit fits, headers included, and comes back whole.
    let largest = Bytes::from(vec![9u8; max]);
    let seq = a.append(1, largest.clone(), None).await.unwrap();
    let log = a.replay(1, 0).await.unwrap();
    assert_eq!(
        log,
        [LogEntry {
            seq,
            payload: largest
        }]
    );
    assert!(a.is_connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_fails_calls_within_the_timeout_and_keeps_acked_entries() {
    let mut server = server!();
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let room = 40;
    let mut lease = a.acquire(room).await.unwrap();
    let mut acked = Vec::new();
    let mut last = None;
    for i in 0..200 {
        let seq = a.append(room, format!("e{i}"), last).await.unwrap();
        acked.push(LogEntry {
            seq,
            payload: Bytes::from(format!("e{i}")),
        });
        last = Some(seq);
    }

    let keeper = a.acquire(room + 1).await.unwrap().keep_alive();

    let mut keeper_status = keeper.subscribe();
    let mut connection = a.connection();
    assert_eq!(
        *connection.borrow_and_update(),
        roomcast_cluster::Connection {
            connected: true,
            outages: 0
        }
    );

    server.kill();
    let killed = Instant::now();
    let lost_after = tokio::spawn(async move {
        keeper_status
            .wait_for(|status| !status.is_held())
            .await
            .unwrap();
        killed.elapsed()
    });
    // Whether or not the client has noticed yet, a call ends within the timeout.
    let start = Instant::now();
    let e = a.last_seq(room).await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::Unavailable, "unavailable"),
        "{e}"
    );
    assert!(start.elapsed() < TIMEOUT + SLACK, "{:?}", start.elapsed());
    eventually(Duration::from_secs(5), "the clients to notice", || async {
        (!a.is_connected() && !b.is_connected()).then_some(())
    })
    .await;
    // The outage is counted (room events may have been missed meanwhile).
    tokio::time::timeout(
        Duration::from_secs(5),
        connection.wait_for(|c| !c.connected && c.outages == 1),
    )
    .await
    .expect("the connection's state tells the outage")
    .unwrap();

    async fn unavailable<T: std::fmt::Debug>(
        what: &str,
        call: impl std::future::Future<Output = Result<T, roomcast_cluster::ClusterError>>,
    ) {
        let start = Instant::now();
        let e = call.await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{what}: {e}");
        assert!(
            start.elapsed() < TIMEOUT + SLACK,
            "{what} took {:?}",
            start.elapsed()
        );
    }
    unavailable("append", a.append(room, "lost", last)).await;
    unavailable("last_seq", a.last_seq(room)).await;
    unavailable("replay", a.replay(room, 0)).await;
    unavailable("purge", b.purge(room)).await;
    unavailable("acquire", b.acquire(room)).await;
    unavailable("owner_of", b.owner_of(room)).await;
    unavailable("renew", lease.renew()).await;
    unavailable("request", b.request("a", "ping")).await;
    unavailable("publish_room", b.publish_room(room, "event")).await;
    unavailable("subscribe_room", b.subscribe_room(room)).await;
    unavailable("serve", a.serve()).await;
    let start = Instant::now();
    let e = Cluster::connect(config(&server, "c")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(start.elapsed() < TIMEOUT + SLACK);

    // The renewer gives the lease up once it could not renew it within the TTL.
    let lost_after = tokio::time::timeout(TTL + SLACK, lost_after)
        .await
        .expect("the keeper did not report the loss within the TTL")
        .unwrap();
    assert!(lost_after <= TTL + SLACK, "{lost_after:?}");
    let lost = keeper.lost().await;
    assert_eq!(lost.kind(), ErrorKind::LeaseLost, "{lost}");

    // Back on the same port and store: the clients reconnect by themselves and every acked
    // append is there, in order, and nothing else.
    server.restart().unwrap();
    let log = eventually(
        Duration::from_secs(10),
        "the client to reconnect",
        || async { a.replay(room, 0).await.ok() },
    )
    .await;
    assert_eq!(log, acked);
    let next = a.append(room, "after", last).await.unwrap();
    assert!(next > last.unwrap());
    tokio::time::timeout(
        Duration::from_secs(5),
        connection.wait_for(|c| c.connected && c.outages >= 1),
    )
    .await
    .expect("the connection's state tells it is back")
    .unwrap();
    eventually(Duration::from_secs(10), "b to reconnect", || async {
        b.last_seq(room).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_call_each_other() {
    let server = server!();
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let mut requests = b.serve().await.unwrap();
    let server_task = tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let answer = format!(
                "{} asked {}",
                request.from().unwrap_or("?"),
                String::from_utf8_lossy(request.payload())
            );
            request.respond(answer).await.unwrap();
        }
    });
    let answer = a.request("b", "ping").await.unwrap();
    assert_eq!(answer, Bytes::from("a asked ping"));

    let calls: Vec<_> = (0..20)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move { a.request("b", format!("q{i}")).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(
            call.await.unwrap().unwrap(),
            Bytes::from(format!("a asked q{i}"))
        );
    }
    server_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_node_nobody_serves_fails_fast() {
    let server = server!();
    let a = node(&server, "a").await;
    let start = Instant::now();
    let e = a.request("nobody", "ping").await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::NoResponders, "no_responders"),
        "{e}"
    );
    assert!(start.elapsed() < TIMEOUT / 2, "{:?}", start.elapsed());
    assert_eq!(
        a.request("not.a.node", "x").await.unwrap_err().kind(),
        ErrorKind::InvalidConfig
    );

    // A node that stops serving: no responders again once its subscription is gone.
    let b = node(&server, "b").await;
    let requests = b.serve().await.unwrap();
    drop(requests);
    eventually(Duration::from_secs(5), "b's subscription to go", || async {
        match a.request("b", "ping").await {
            Err(e) if e.kind() == ErrorKind::NoResponders => Some(()),
            _ => None,
        }
    })
    .await;
}

async fn next(events: &mut roomcast_cluster::RoomEvents) -> Bytes {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("no event within 5 s")
        .expect("the subscription ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_reach_that_rooms_subscribers_in_order() {
    let server = server!();
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    let mut seven = b.subscribe_room(7).await.unwrap();
    let mut eight = b.subscribe_room(8).await.unwrap();
    let mut seven_on_a = a.subscribe_room(7).await.unwrap();
    assert_eq!(seven.room(), 7);
    for i in 0..100 {
        a.publish_room(7, format!("m{i}")).await.unwrap();
    }
    a.publish_room(8, "marker").await.unwrap();

    for i in 0..100 {
        assert_eq!(next(&mut seven).await, Bytes::from(format!("m{i}")));
        assert_eq!(next(&mut seven_on_a).await, Bytes::from(format!("m{i}")));
    }
    // Room 8's first event is its own: none of room 7's reached it.
    assert_eq!(next(&mut eight).await, Bytes::from("marker"));
}

/// The room directory: a watcher gets every room there is, then each change, from any node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_directory_lists_every_room_and_its_changes() {
    use futures_util::StreamExt;
    let server = server!();
    let a = node(&server, "a").await;
    let b = node(&server, "b").await;
    a.put_room_summary(1, Bytes::from_static(b"one"))
        .await
        .unwrap();
    a.put_room_summary(2, Bytes::from_static(b"two"))
        .await
        .unwrap();
    let mut watch = b.watch_rooms().await.unwrap();
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 2 {
        let change = tokio::time::timeout(TIMEOUT * 5, watch.next())
            .await
            .expect("the directory's rooms in time")
            .unwrap()
            .unwrap();
        seen.insert(change.room, change.summary);
    }
    assert_eq!(seen[&1].as_deref(), Some(&b"one"[..]));
    a.put_room_summary(1, Bytes::from_static(b"uno"))
        .await
        .unwrap();
    a.remove_room_summary(2).await.unwrap();
    let mut changes = Vec::new();
    while changes.len() < 2 {
        let change = tokio::time::timeout(TIMEOUT * 5, watch.next())
            .await
            .expect("the changes in time")
            .unwrap()
            .unwrap();
        changes.push((change.room, change.summary));
    }
    assert_eq!(
        changes,
        vec![(1, Some(Bytes::from_static(b"uno"))), (2, None)]
    );
}
