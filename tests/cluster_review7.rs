//! Seventh adversarial review of cluster mode (a new user's view: README, docs/cluster.md and
//! the public API only).
//!
//! 1. failover churn: three nodes, ~30 members sending, the owner's node cut off (~2.5 s) five
//!    times while a few members leave and rejoin;
//! 2. presence: a user on two nodes goes offline on one, then its other node is cut off: the
//!    grace counts from when it was last online anywhere; admins and owner stay;
//! 3. local copies (`delete_messages_on_exit` false / true) across an owner cut-and-heal and a
//!    leave, including a member on the cut node;
//! 4. racing moderators on three nodes during an owner cut: every node agrees on the lists at
//!    the end, and members' events are consistent with the final state;
//! 5. idempotent sends retried across owner cuts (901s included) and a second retry of an
//!    acknowledged key; a clean shutdown hands the room over at once;
//! 6. a member kicked and one blocked while their node is cut off, then the owner's node goes:
//!    kept out and told `Kicked` when their node is back;
//! 7. the offline grace across an owner change (counted from when the member went offline).
//!
//! Nothing in it failed on the engine. Seen in two of ~16 runs with two suites at once, by an
//! earlier version of `offline_grace_across_an_owner_change` that measured removal by the member
//! list: right after a takeover, the new owner's list lacked an offline member of another node,
//! most likely because that node's rejoin had not reached it yet (a window documented in
//! docs/cluster.md). Those runs stopped there; in every run since, the member's exit came only
//! after the grace period. The test measures removal by the exit event and prints a NOTE when
//! it sees such a list.
//!
//! Each test skips without a `nats-server`.

#[path = "shared/cluster_harness.rs"]
#[macro_use]
mod cluster_harness;
#[path = "shared/proxy.rs"]
mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster_harness::*;
use parking_lot::Mutex;
use proxy::Proxy;
use roomcast::{
    ChatMessage, ChatOptions, ChatRoomEvent, Engine, LeaveReason, MuteDuration, RoomLimits,
};
use roomcast_cluster::testing::NatsServer;

/// Which nodes hold the room in memory (the owner, perhaps mirrors too: a guess).
fn in_memory(nodes: &[&Engine]) -> Vec<usize> {
    nodes.iter().map(|n| n.rooms_in_memory()).collect()
}

/// The node to cut: the only one with the room in memory, else the one after `prev`.
fn pick_owner(nodes: &[&Engine], prev: usize) -> (usize, bool) {
    let mem = in_memory(nodes);
    let holders: Vec<usize> = (0..mem.len()).filter(|&i| mem[i] > 0).collect();
    if holders.len() == 1 {
        (holders[0], true)
    } else {
        ((prev + 1) % nodes.len(), false)
    }
}

// ------------------------------------------------------------------------------------------
// 1. Failover churn
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_churn_owner_cut_five_times() {
    churn("r7churn", 5, 40, Duration::from_millis(1500)).await;
}

/// The same, harsher: eight cuts, the next one as soon as a few sends went through after a
/// heal (rejoins and takeovers still settling).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_churn_back_to_back_cuts() {
    churn("r7churnfast", 8, 5, Duration::from_millis(100)).await;
}

async fn churn(cluster: &str, rounds: usize, sends_after_heal: usize, settle: Duration) {
    let server = server!();
    let _ = ms();
    let proxies = [
        Proxy::start(server.port()).await,
        Proxy::start(server.port()).await,
        Proxy::start(server.port()).await,
    ];
    let a = node_at(proxies[0].url(), cluster, "a", |b| b).await;
    let b = node_at(proxies[1].url(), cluster, "b", |b| b).await;
    let c = node_at(proxies[2].url(), cluster, "c", |b| b).await;
    let nodes = [&a, &b, &c];
    let (host, room) = room_with(
        &a,
        "churn",
        RoomLimits::default().with_history_retention(100_000),
    )
    .await;

    const N: usize = 30;
    const CHURN: usize = 5; // u25..u29 leave and rejoin
    let mut clients = Vec::new();
    let mut seen = Vec::new();
    for i in 0..N {
        let cl = nodes[i % 3].login(format!("u{i:02}")).await.unwrap();
        seen.push(Seen::of(&cl));
        clients.push(cl);
    }
    futures_util::future::join_all(clients.iter().map(|cl| join(cl, room))).await;
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // 702s a stayer got: (who, ms).
    let not_in: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let mut tasks = Vec::new();
    for (i, cl) in clients.iter().enumerate().take(N - CHURN) {
        let (cl, acked, stop, not_in) = (cl.clone(), acked.clone(), stop.clone(), not_in.clone());
        tasks.push(tokio::spawn(async move {
            let mut codes: BTreeMap<u32, usize> = BTreeMap::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let text = format!("u{i:02} {n}");
                match send(&cl, room, &text).await {
                    Ok(m) => {
                        acked.lock().push((m.seq(), m.msg_id(), text));
                        n += 1;
                        let_pass(Duration::from_millis(300)).await;
                    }
                    Err(e) => {
                        *codes.entry(e.code()).or_default() += 1;
                        if e.code() == 702 {
                            not_in.lock().push((format!("u{i:02}"), ms()));
                        } else {
                            assert!(e.is_delivery_failure(), "u{i:02} send: {e}");
                        }
                        let_pass(Duration::from_millis(25)).await;
                    }
                }
            }
            codes
        }));
    }
    // Churners: leave, rejoin, send a little; finally even ones leave, odd ones stay in.
    let mut churn_tasks = Vec::new();
    for (i, cl) in clients.iter().enumerate().skip(N - CHURN) {
        let (cl, acked, stop, not_in) = (cl.clone(), acked.clone(), stop.clone(), not_in.clone());
        churn_tasks.push(tokio::spawn(async move {
            let mut n = 0;
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                leave(&cl, room).await;
                let_pass(Duration::from_millis(400 + 100 * (i as u64 % 3))).await;
                join(&cl, room).await;
                rounds += 1;
                for _ in 0..3 {
                    let text = format!("u{i:02} {n}");
                    match send(&cl, room, &text).await {
                        Ok(m) => {
                            acked.lock().push((m.seq(), m.msg_id(), text));
                            n += 1;
                        }
                        Err(e) => {
                            // 702 right after a join that answered Ok or 701: recorded.
                            assert!(
                                e.is_delivery_failure() || e.code() == 702,
                                "churner u{i:02}: {e}"
                            );
                            if e.code() == 702 {
                                not_in
                                    .lock()
                                    .push((format!("churner u{i:02} after joining"), ms()));
                            }
                        }
                    }
                    let_pass(Duration::from_millis(300)).await;
                }
            }
            if i % 2 == 0 {
                leave(&cl, room).await;
                (i, false, rounds)
            } else {
                join(&cl, room).await;
                (i, true, rounds)
            }
        }));
    }

    wait_acked("first sends", &acked, 50).await;
    let observer_of = |cut: usize| -> usize { (0..N - CHURN).find(|i| i % 3 != cut).unwrap() };
    let mut prev = 2;
    let mut moved = 0;
    for round in 0..rounds {
        let (cut, sure) = pick_owner(&nodes, prev);
        prev = cut;
        let obs = observer_of(cut);
        let before = seen[obs].recoveries();
        eprintln!(
            "round {round}: in memory {:?}, cutting node {cut} (sure: {sure}) at {} ms",
            in_memory(&nodes),
            ms()
        );
        proxies[cut].cut();
        let_pass(Duration::from_millis(2500)).await;
        proxies[cut].heal();
        let n0 = acked.lock().len();
        wait_acked("sends after the heal", &acked, n0 + sends_after_heal).await;
        let_pass(settle).await;
        if seen[obs].recoveries() > before {
            moved += 1;
        }
    }
    eprintln!("owner changes seen by observers: {moved} of {rounds} cuts");
    stop.store(true, Ordering::Relaxed);
    let mut codes_all: BTreeMap<u32, usize> = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *codes_all.entry(k).or_default() += v;
        }
    }
    let mut final_in = BTreeSet::new();
    let mut final_out = BTreeSet::new();
    for t in churn_tasks {
        let (i, inside, rounds) = t.await.unwrap();
        eprintln!("churner u{i:02}: {rounds} rounds, in at the end: {inside}");
        if inside {
            final_in.insert(format!("u{i:02}"));
        } else {
            final_out.insert(format!("u{i:02}"));
        }
    }
    eprintln!("stayers' send failures by code: {codes_all:?}");
    let acked_all = acked.lock().clone();
    eprintln!("acknowledged: {}", acked_all.len());

    // A stayer never got 702.
    let not_in = not_in.lock().clone();
    assert!(
        not_in.is_empty(),
        "702 (not in room) on send from a member that never left (or had just joined): {not_in:?}"
    );

    // Members from every node.
    let mut want: Vec<String> = (0..N - CHURN).map(|i| format!("u{i:02}")).collect();
    want.extend(final_in.iter().cloned());
    want.push("host".into());
    want.sort();
    for (k, cl) in [&host, &clients[1], &clients[2]].iter().enumerate() {
        let want = want.clone();
        let mut last;
        let deadline = Instant::now() + DEADLINE;
        loop {
            last = members(cl, room).await;
            if last == want || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(POLL * 10).await;
        }
        for out in &final_out {
            assert!(
                !last.contains(out),
                "{out} left but is a member (as node {k} lists): {last:?}"
            );
        }
        assert_eq!(last, want, "member list as node {k} lists it");
    }

    // History: no gaps, no duplicates, every acked message.
    let h = history(&host, room).await;
    let faults = history_faults(&h, &acked_all, &BTreeSet::new(), "host");
    assert!(faults.is_empty(), "history: {faults:?}");
    let seqs: BTreeSet<u64> = h.iter().map(ChatMessage::seq).collect();
    assert_eq!(seqs.len(), h.len(), "duplicate seqs in history");

    // Every stayer: live order, no phantoms, live ∪ own history covers every acked message.
    let acked_seqs: BTreeSet<u64> = acked_all.iter().map(|a| a.0).collect();
    let mut problems = Vec::new();
    for i in 0..N - CHURN {
        let who = format!("u{i:02}");
        let live: BTreeSet<u64> = seen[i].seqs().into_iter().collect();
        // A sender does not get its own messages: those are not gaps.
        let own_skip: BTreeSet<u64> = acked_all
            .iter()
            .filter(|a| a.2.starts_with(&format!("{who} ")))
            .map(|a| a.0)
            .collect();
        let order = seen[i].order_faults(&own_skip);
        if !order.is_empty() {
            problems.push(format!("{who} order: {:?}", &order[..order.len().min(5)]));
            problems.extend(seen[i].around_first_reversal());
        }
        let ph = seen[i].phantoms(&h);
        if !ph.is_empty() {
            problems.push(format!("{who} phantoms: {:?}", &ph[..ph.len().min(5)]));
        }
        let own: BTreeSet<u64> = acked_all
            .iter()
            .filter(|a| a.2.starts_with(&format!("{who} ")))
            .map(|a| a.0)
            .collect();
        let missing_live: Vec<u64> = acked_seqs
            .iter()
            .filter(|s| !live.contains(s) && !own.contains(s))
            .copied()
            .collect();
        // Fill from history the way a client would: after each gap's start.
        let mine = history(&clients[i], room).await;
        let filled: BTreeSet<u64> = mine.iter().map(ChatMessage::seq).collect();
        let lost: Vec<u64> = missing_live
            .iter()
            .filter(|s| !filled.contains(s))
            .copied()
            .collect();
        if !lost.is_empty() {
            problems.push(format!(
                "{who}: {} acked messages neither live nor in its history: {:?}",
                lost.len(),
                &lost[..lost.len().min(10)]
            ));
        }
        if i < 3 {
            eprintln!(
                "{who}: live {}, filled from history {}, recoveries {}",
                live.len(),
                missing_live.len(),
                seen[i].recoveries()
            );
        }
    }
    assert!(problems.is_empty(), "stayers: {problems:#?}");
    for e in nodes {
        e.shutdown().await;
    }
}

// ------------------------------------------------------------------------------------------
// 2. Presence across nodes: the grace counts from when the user was last online anywhere
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_grace_counts_from_last_online_anywhere() {
    let server = server!();
    let _ = ms();
    let grace = Duration::from_secs(2);
    let proxy = Proxy::start(server.port()).await;
    let a = node(&server, "r7pres", "a").await;
    let b = node(&server, "r7pres", "b").await;
    let c = node_at(proxy.url(), "r7pres", "c", |b| b).await;
    let (host, room) = room_with(&a, "pres", RoomLimits::default().with_offline_grace(grace)).await;
    let host_seen = Seen::of(&host);
    let u_b = b.login("u").await.unwrap();
    let u_c = c.login("u").await.unwrap();
    join(&u_b, room).await;
    let adm = c.login("adm").await.unwrap();
    let v = c.login("v").await.unwrap();
    // The owner role on c too: the host logged in on c (owner is exempt).
    let host_c = c.login("host").await.unwrap();
    tokio::join!(join(&adm, room), join(&v, room));
    rt!(host.chat_room_manager(), m => m.add_chat_room_admin(&room, "adm"))
        .await
        .unwrap();
    wait_until("all members", || async {
        members(&host, room).await == ["adm", "host", "u", "v"]
    })
    .await;
    // u attached on c? (login on c after join through b: attached shortly after)
    let _ = &u_c;

    // u goes offline on b; online on c still.
    u_b.disconnect().unwrap();
    let_pass(grace + Duration::from_millis(1000)).await;
    assert!(
        !host_seen.has_event(|e| is_member_exited(e, "u")),
        "u removed while its session on c was online"
    );
    // Now c is cut off: u was online (on c) until now; the grace counts from here.
    host.chat_room_manager(); // no-op
    host_c.disconnect().unwrap(); // host offline on c only; online on a
    let cut_at = Instant::now();
    proxy.cut();
    host_seen
        .wait_event("u removed as offline", |e| is_member_exited(e, "u"))
        .await;
    let took = cut_at.elapsed();
    eprintln!("u removed {took:?} after c was cut (grace {grace:?})");
    assert!(
        took + Duration::from_millis(100) >= grace,
        "u removed {took:?} after its last online node was cut: before the grace {grace:?} \
         (counted from when it went offline on b?)"
    );
    host_seen
        .wait_event("v removed as offline", |e| is_member_exited(e, "v"))
        .await;
    let_pass(grace + Duration::from_millis(500)).await;
    assert!(
        !host_seen.has_event(|e| is_member_exited(e, "adm")),
        "admin adm removed while c cut off"
    );
    assert!(
        !host_seen.has_event(|e| is_member_exited(e, "host")),
        "owner removed"
    );
    assert_eq!(
        members(&host, room).await,
        ["adm", "host"],
        "members during the cut"
    );
    proxy.heal();
    let u_c_seen = Seen::of(&u_c);
    let _ = u_c_seen;
    wait_until("members after the heal", || async {
        members(&host, room).await == ["adm", "host"]
    })
    .await;
    // u and v are out: a send from either is 702.
    let r = retry(|| send(&v, room, "v after")).await;
    assert_eq!(
        r.map(|m| m.seq()).map_err(|e| e.code()),
        Err(702),
        "v after removal"
    );
    let r = retry(|| send(&u_c, room, "u after")).await;
    assert_eq!(
        r.map(|m| m.seq()).map_err(|e| e.code()),
        Err(702),
        "u (c) after removal"
    );
    // adm (on c) can still send after the heal.
    send_ok(&adm, room, "adm after").await;
    for e in [&a, &b, &c] {
        e.shutdown().await;
    }
}

// ------------------------------------------------------------------------------------------
// 3. Local copies across an owner cut-and-heal
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_copies_across_owner_cut_and_heal() {
    let server = server!();
    let _ = ms();
    let proxy = Proxy::start(server.port()).await;
    let a = node_at(proxy.url(), "r7copy", "a", |b| b).await;
    let b = node(&server, "r7copy", "b").await;
    let c = node(&server, "r7copy", "c").await;
    let (host, room) = room_with(
        &a,
        "copies",
        RoomLimits::default().with_join_replay_count(1),
    )
    .await;
    let keep_opts = || ChatOptions::default().with_delete_messages_on_exit(false);
    let keep_b = b.login_with_options("keepb", keep_opts()).await.unwrap();
    let keep_a = a.login_with_options("keepa", keep_opts()).await.unwrap(); // on the cut node
    let del_c = c.login("delc").await.unwrap();
    let del_a = a.login("dela").await.unwrap(); // on the cut node
    let sender = b.login("snd").await.unwrap();
    join(&sender, room).await;
    for i in 1..=3 {
        send_ok(&host, room, &format!("m{i}")).await;
    }
    for cl in [&keep_b, &keep_a, &del_c, &del_a] {
        join(cl, room).await; // replay: m3
    }
    let mut sent = vec![3u64];
    for i in 4..=6 {
        sent.push(send_ok(&sender, room, &format!("m{i}")).await.seq());
    }
    // Owner cut off; messages from b during the cut; heal.
    proxy.cut();
    let cut_at = Instant::now();
    for i in 7..=9 {
        sent.push(send_ok(&sender, room, &format!("m{i}")).await.seq());
    }
    let rest = Duration::from_millis(2500).saturating_sub(cut_at.elapsed());
    let_pass(rest).await;
    proxy.heal();
    for i in 10..=12 {
        sent.push(send_ok(&sender, room, &format!("m{i}")).await.seq());
    }
    let want: Vec<u64> = sent.clone();
    eprintln!("sent seqs {want:?}");
    let mut failures = Vec::new();
    for (who, cl) in [
        ("keepb", &keep_b),
        ("keepa", &keep_a),
        ("delc", &del_c),
        ("dela", &del_a),
    ] {
        // Eventually (a cut node's member may need a moment to be back).
        let deadline = Instant::now() + DEADLINE;
        let mut got;
        loop {
            got = copy_seqs(cl, room).await;
            if got == want || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(POLL * 10).await;
        }
        if got != want {
            failures.push(format!("{who} in the room: copy {got:?}, want {want:?}"));
        }
    }
    for cl in [&keep_b, &keep_a, &del_c, &del_a] {
        leave(cl, room).await;
    }
    send_ok(&sender, room, "m13").await;
    for (who, cl, keep) in [
        ("keepb", &keep_b, true),
        ("keepa", &keep_a, true),
        ("delc", &del_c, false),
        ("dela", &del_a, false),
    ] {
        let got = copy_seqs(cl, room).await;
        let w: Vec<u64> = if keep { want.clone() } else { Vec::new() };
        if got != w {
            failures.push(format!("{who} after leaving: copy {got:?}, want {w:?}"));
        }
    }
    assert!(failures.is_empty(), "local copies: {failures:#?}");
    drop(host);
    for e in [&a, &b, &c] {
        e.shutdown().await;
    }
}

// ------------------------------------------------------------------------------------------
// 4. Racing moderators on three nodes during an owner cut
// ------------------------------------------------------------------------------------------

fn mute_state(seen: &Seen, who: &str) -> Option<(bool, usize)> {
    let evs = seen.room_events();
    evs.iter().enumerate().rev().find_map(|(i, e)| match e {
        ChatRoomEvent::MuteListAdded { members, .. }
            if members.iter().any(|m| m.as_str() == who) =>
        {
            Some((true, i))
        }
        ChatRoomEvent::MuteListRemoved { members, .. }
            if members.iter().any(|m| m.as_str() == who) =>
        {
            Some((false, i))
        }
        _ => None,
    })
}

fn admin_state(seen: &Seen, who: &str) -> Option<(bool, usize)> {
    let evs = seen.room_events();
    evs.iter().enumerate().rev().find_map(|(i, e)| match e {
        ChatRoomEvent::AdminAdded { admin, .. } if admin.as_str() == who => Some((true, i)),
        ChatRoomEvent::AdminRemoved { admin, .. } if admin.as_str() == who => Some((false, i)),
        _ => None,
    })
}

fn recovered_after(seen: &Seen, i: usize) -> bool {
    seen.room_events()[i..]
        .iter()
        .any(ChatRoomEvent::is_recovery)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_moderators_during_owner_cut() {
    let server = server!();
    let _ = ms();
    let proxy = Proxy::start(server.port()).await;
    let a = node_at(proxy.url(), "r7mod", "a", |b| b).await;
    let b = node(&server, "r7mod", "b").await;
    let c = node(&server, "r7mod", "c").await;
    let (host, room) = room_with(&a, "mod", RoomLimits::default()).await;
    let m1 = b.login("m1").await.unwrap();
    let m2 = c.login("m2").await.unwrap();
    let host_b = b.login("host").await.unwrap(); // the owner acting from b too
    let t_mute = c.login("tmute").await.unwrap();
    let t_block = b.login("tblock").await.unwrap();
    let t_kick = a.login("tkick").await.unwrap();
    let t_admin = c.login("tadmin").await.unwrap();
    let watcher = b.login("watch").await.unwrap();
    for cl in [&m1, &m2, &t_mute, &t_block, &t_kick, &t_admin, &watcher] {
        join(cl, room).await;
    }
    rt!(host.chat_room_manager(), m => m.add_chat_room_admin(&room, "m1"))
        .await
        .unwrap();
    rt!(host.chat_room_manager(), m => m.add_chat_room_admin(&room, "m2"))
        .await
        .unwrap();
    let s_mute = Seen::of(&t_mute);
    let s_block = Seen::of(&t_block);
    let s_kick = Seen::of(&t_kick);
    let s_admin = Seen::of(&t_admin);
    let s_watch = Seen::of(&watcher);

    let stop = Arc::new(AtomicBool::new(false));
    let codes: Arc<Mutex<BTreeMap<(String, u32), usize>>> = Arc::default();
    let note = |codes: &Arc<Mutex<BTreeMap<(String, u32), usize>>>,
                what: &str,
                r: Result<(), roomcast::ChatError>| {
        if let Err(e) = r {
            *codes
                .lock()
                .entry((what.to_string(), e.code()))
                .or_default() += 1;
        }
    };
    let mut tasks = Vec::new();
    // m1 mutes / m2 unmutes tmute; m2 blocks / m1 unblocks tblock; m1 and m2 kick tkick
    // (who rejoins); host (a) adds / host (b) removes tadmin.
    for (k, mgr_cl) in [(0, m1.clone()), (1, m2.clone())] {
        let (stop, codes) = (stop.clone(), codes.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let m = mgr_cl.chat_room_manager();
                if (n + k) % 2 == 0 {
                    note(
                        &codes,
                        "mute",
                        rt!(m.clone(), m => m.mute_chat_room_members(&room, ["tmute"], MuteDuration::Forever) )
                        .await,
                    );
                    note(
                        &codes,
                        "block",
                        rt!(m.clone(), m => m.block_chat_room_members(&room, ["tblock"]))
                        .await,
                    );
                } else {
                    note(
                        &codes,
                        "unmute",
                        rt!(m.clone(), m => m.unmute_chat_room_members(&room, ["tmute"]))
                        .await,
                    );
                    note(
                        &codes,
                        "unblock",
                        rt!(m.clone(), m => m.unblock_chat_room_members(&room, ["tblock"]))
                        .await,
                    );
                }
                note(
                    &codes,
                    "kick",
                    rt!(m.clone(), m => m.remove_chat_room_members(&room, ["tkick"]))
                    .await,
                );
                n += 1;
                let_pass(Duration::from_millis(37 + 11 * k as u64)).await;
            }
        }));
    }
    for (k, cl) in [(0u32, host.clone()), (1, host_b.clone())] {
        let (stop, codes) = (stop.clone(), codes.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let m = cl.chat_room_manager();
                if k == 0 {
                    note(
                        &codes,
                        "add_admin",
                        rt!(m.clone(), m => m.add_chat_room_admin(&room, "tadmin")).await,
                    );
                } else {
                    note(
                        &codes,
                        "remove_admin",
                        rt!(m.clone(), m => m.remove_chat_room_admin(&room, "tadmin")).await,
                    );
                }
                let_pass(Duration::from_millis(41 + 13 * k as u64)).await;
            }
        }));
    }
    {
        let (stop, codes, tk, tb) = (stop.clone(), codes.clone(), t_kick.clone(), t_block.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (cl, what) in [(&tk, "rejoin_kick"), (&tb, "rejoin_block")] {
                    let m = cl.chat_room_manager();
                    let r = retry(|| {
                        let m = m.clone();
                        async move { m.join_chat_room(&room).await.map(|_| ()) }
                    })
                    .await;
                    note(&codes, what, r);
                }
                let_pass(Duration::from_millis(50)).await;
            }
        }));
    }
    let_pass(Duration::from_millis(1500)).await;
    eprintln!("cutting a (owner) at {} ms", ms());
    proxy.cut();
    let_pass(Duration::from_millis(2500)).await;
    proxy.heal();
    let_pass(Duration::from_millis(3000)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("failures by (op, code): {:?}", codes.lock());
    // One more call through every node so that they are all current.
    send_ok(&watcher, room, "end").await;

    // Every node agrees.
    let readers = [&host, &m1, &m2];
    let mut views = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        views.clear();
        for r in readers {
            let mm = r.chat_room_manager();
            let mutes: Vec<String> =
                rt!(mm.clone(), m => m.fetch_chat_room_mute_list(&room, 1, 100))
                    .await
                    .unwrap()
                    .data
                    .iter()
                    .map(|x| x.user_id.to_string())
                    .collect();
            let blocks: Vec<String> =
                rt!(mm.clone(), m => m.fetch_chat_room_block_list(&room, 1, 100))
                    .await
                    .unwrap()
                    .data
                    .iter()
                    .map(|x| x.user_id.to_string())
                    .collect();
            let mut admins: Vec<String> = rt!(mm.clone(), m => m.fetch_chat_room_info(&room))
                .await
                .unwrap()
                .admin_list
                .iter()
                .map(|x| x.to_string())
                .collect();
            admins.sort();
            let mems = members(r, room).await;
            views.push((mutes, blocks, admins, mems));
        }
        if views.iter().all(|v| *v == views[0]) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(POLL * 10).await;
    }
    for v in &views {
        eprintln!("view: {v:?}");
    }
    assert!(
        views.iter().all(|v| *v == views[0]),
        "nodes disagree: {views:#?}"
    );
    let (mutes, blocks, admins, mems) = views[0].clone();
    let muted = mutes.contains(&"tmute".to_string());
    let blocked = blocks.contains(&"tblock".to_string());
    let is_admin = admins.contains(&"tadmin".to_string());
    assert!(
        !(blocked && mems.contains(&"tblock".to_string())),
        "tblock blocked and a member: {mems:?}"
    );
    let mut problems = Vec::new();
    // tmute: its last mute event vs the final state.
    match mute_state(&s_mute, "tmute") {
        Some((m, i)) if m != muted => problems.push(format!(
            "tmute's last mute event says muted={m}, lists say {muted} (recovery after it: {})",
            recovered_after(&s_mute, i)
        )),
        None => problems.push("tmute got no mute event".into()),
        _ => {}
    }
    for (who, s) in [("tadmin", &s_admin), ("watch", &s_watch)] {
        match admin_state(s, "tadmin") {
            Some((m, i)) if m != is_admin => problems.push(format!(
                "{who}'s last admin event says tadmin admin={m}, lists say {is_admin} (recovery after it: {})",
                recovered_after(s, i)
            )),
            // Whether a plain member is told of admin changes is not documented: only noted.
            None if who == "watch" => eprintln!("watch got no admin event for tadmin"),
            None => problems.push(format!("{who} got no admin event for tadmin")),
            _ => {}
        }
    }
    // tblock: if blocked and not a member, its last removal was Kicked; member iff it says so.
    let tblock_member = mems.contains(&"tblock".to_string());
    let last_block_evt = s_block.room_events().iter().rev().find_map(is_removed);
    eprintln!(
        "tblock blocked {blocked}, member {tblock_member}, last removal {last_block_evt:?}; tkick member {}, removals {}",
        mems.contains(&"tkick".to_string()),
        s_kick.count_events(|e| is_removed(e) == Some(LeaveReason::Kicked))
    );
    if blocked && tblock_member {
        problems.push("tblock blocked but a member".into());
    }
    // tblock's own view: a send succeeds iff it is a member.
    let r = retry(|| send(&t_block, room, "tblock probe")).await;
    if r.is_ok() != tblock_member {
        problems.push(format!(
            "tblock send {:?} but member={tblock_member}",
            r.map(|m| m.seq()).map_err(|e| e.code())
        ));
    }
    let r = retry(|| send(&t_mute, room, "tmute probe")).await;
    let want_mute_code = if muted { Err(215) } else { Ok(()) };
    if r.as_ref().map(|_| ()).map_err(|e| e.code()) != want_mute_code {
        problems.push(format!(
            "tmute send {:?} but muted={muted}",
            r.map(|m| m.seq()).map_err(|e| e.code())
        ));
    }
    assert!(problems.is_empty(), "events/state: {problems:#?}");
    for e in [&a, &b, &c] {
        e.shutdown().await;
    }
}

// ------------------------------------------------------------------------------------------
// 5. Idempotent retries across owner cuts; a clean shutdown hands the room over at once
// ------------------------------------------------------------------------------------------

/// `docs/cluster.md`, "An append fails": a 901 "may still have been stored ... retry it with an
/// idempotency key". README: a retry within 5 minutes returns the first message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_retries_across_owner_cuts() {
    let server = server!();
    let _ = ms();
    let proxies = [
        Proxy::start(server.port()).await,
        Proxy::start(server.port()).await,
        Proxy::start(server.port()).await,
    ];
    let a = node_at(proxies[0].url(), "r7idem", "a", |b| b).await;
    let b = node_at(proxies[1].url(), "r7idem", "b", |b| b).await;
    let c = node_at(proxies[2].url(), "r7idem", "c", |b| b).await;
    let nodes = [&a, &b, &c];
    let (_host, room) = room_with(
        &a,
        "idem",
        RoomLimits::default().with_history_retention(100_000),
    )
    .await;
    let mut clients = Vec::new();
    for i in 0..9 {
        let cl = nodes[i % 3].login(format!("s{i}")).await.unwrap();
        join(&cl, room).await;
        clients.push(cl);
    }
    let stop = Arc::new(AtomicBool::new(false));
    // key -> (seq, id) of the Ok; and mismatches on a second retry of an acked key.
    type Got = Arc<
        Mutex<(
            BTreeMap<String, (u64, roomcast::MessageId)>,
            Vec<String>,
            BTreeMap<u32, usize>,
        )>,
    >;
    let got: Got = Arc::default();
    let mut tasks = Vec::new();
    for (i, cl) in clients.iter().enumerate() {
        let (cl, stop, got) = (cl.clone(), stop.clone(), got.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("s{i}-{n}");
                let out = || {
                    roomcast::OutgoingMessage::text(room, key.clone())
                        .with_idempotency_key(key.clone())
                };
                let deadline = Instant::now() + Duration::from_secs(30);
                let m = loop {
                    match cl.chat_manager().send_message(out()).await {
                        Ok(m) => break m,
                        Err(e) => {
                            assert!(e.is_delivery_failure(), "s{i} {key}: {e}");
                            *got.lock().2.entry(e.code()).or_default() += 1;
                            assert!(
                                Instant::now() < deadline,
                                "s{i} {key}: retries never accepted"
                            );
                            let_pass(Duration::from_millis(25)).await;
                        }
                    }
                };
                got.lock().0.insert(key.clone(), (m.seq(), m.msg_id()));
                // A client that lost the answer sends it again (every 4th message).
                if n % 4 == 0 {
                    let again = retry(|| {
                        let chat = cl.chat_manager();
                        let o = out();
                        async move { chat.send_message(o).await }
                    })
                    .await;
                    match again {
                        Ok(m2) if m2.seq() == m.seq() && m2.msg_id() == m.msg_id() => {}
                        other => got.lock().1.push(format!(
                            "{key}: first ({}, {:?}), again {:?}",
                            m.seq(),
                            m.msg_id(),
                            other.map(|m| (m.seq(), m.msg_id())).map_err(|e| e.code())
                        )),
                    }
                }
                n += 1;
                let_pass(Duration::from_millis(150)).await;
            }
        }));
    }
    let mut prev = 2;
    for round in 0..4 {
        let (cut, sure) = pick_owner(&nodes, prev);
        prev = cut;
        eprintln!("idem round {round}: cutting node {cut} (sure: {sure})");
        proxies[cut].cut();
        let_pass(Duration::from_millis(2500)).await;
        proxies[cut].heal();
        let_pass(Duration::from_millis(2500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let (acked, mismatches, codes) = got.lock().clone();
    eprintln!(
        "idem: {} keys acked, failures by code {codes:?}",
        acked.len()
    );
    let h = history(&clients[1], room).await;
    let mut by_text: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in &h {
        if let Some(t) = m.text() {
            by_text.entry(t.to_string()).or_default().push(m.seq());
        }
    }
    let dups: Vec<_> = by_text.iter().filter(|(_, v)| v.len() > 1).collect();
    let by_seq: BTreeMap<u64, &ChatMessage> = h.iter().map(|m| (m.seq(), m)).collect();
    let wrong: Vec<String> = acked
        .iter()
        .filter(|(k, (s, id))| {
            !matches!(by_seq.get(s), Some(m) if m.msg_id() == *id && m.text() == Some(k.as_str()))
        })
        .map(|(k, v)| format!("{k}: acked {v:?}, history {:?}", by_seq.get(&v.0).map(|m| m.text())))
        .take(10)
        .collect();
    let seqs: Vec<u64> = h.iter().map(ChatMessage::seq).collect();
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert!(seqs == want, "history seqs have gaps/repeats");
    assert!(
        dups.is_empty() && wrong.is_empty() && mismatches.is_empty(),
        "idempotency: duplicates in history {:?}; acked vs history {wrong:?}; second retries {mismatches:?}",
        &dups[..dups.len().min(10)]
    );
    for e in nodes {
        e.shutdown().await;
    }
}

/// `docs/cluster.md`: "A node that stops cleanly (`Engine::shutdown`) releases its leases:
/// another node takes its rooms at once"; its members are no longer in the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clean_shutdown_hands_the_room_over_at_once() {
    let server = server!();
    let _ = ms();
    let a = node(&server, "r7shut", "a").await;
    let b = node(&server, "r7shut", "b").await;
    let c = node(&server, "r7shut", "c").await;
    let (host, room) = room_with(&a, "shut", RoomLimits::default()).await;
    let on_a = a.login("ona").await.unwrap();
    let on_b = b.login("onb").await.unwrap();
    let on_c = c.login("onc").await.unwrap();
    let seen_c = Seen::of(&on_c);
    for cl in [&on_a, &on_b, &on_c] {
        join(cl, room).await;
    }
    let last = send_ok(&on_b, room, "before").await.seq();
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let snd = sender(
        on_b.clone(),
        room,
        "b".into(),
        acked.clone(),
        stop.clone(),
        Duration::from_millis(20),
        &[],
    );
    wait_acked("b sending", &acked, 5).await;
    let t0 = Instant::now();
    let n0 = acked.lock().len();
    a.shutdown().await;
    let shut_took = t0.elapsed();
    let t1 = Instant::now();
    wait_acked("a send after the shutdown", &acked, n0 + 1).await;
    // The first send accepted after shutdown returned.
    let after = t1.elapsed();
    eprintln!("shutdown took {shut_took:?}; next accepted send {after:?} after it");
    stop.store(true, Ordering::Relaxed);
    let log = snd.await.unwrap();
    eprintln!("sender failures: {:?}", log.codes);
    drop(host);
    wait_until("members without a's", || async {
        members(&on_b, room).await == ["onb", "onc"]
    })
    .await;
    let acked_all = acked.lock().clone();
    let h = history(&on_c, room).await;
    let faults = history_faults(&h, &acked_all, &BTreeSet::new(), "onc");
    assert!(faults.is_empty(), "history: {faults:?}");
    assert!(h.iter().any(|m| m.seq() == last));
    assert!(
        after < LEASE_TTL,
        "a send took {after:?} after a clean shutdown (a lease lapse would be {LEASE_TTL:?}); \
         failures {:?}",
        log.codes
    );
    // docs/cluster.md: after a change of owners every remaining member is told.
    wait_until("onc told the room recovered", || async {
        seen_c.recoveries() > 0
    })
    .await;
    b.shutdown().await;
    c.shutdown().await;
}

// ------------------------------------------------------------------------------------------
// 6. Departures while the member's node is away, then the owner changes
// ------------------------------------------------------------------------------------------

/// `docs/cluster.md`, "Departures are in the log": a member kicked or blocked while its node
/// was cut off, the room changing owners meanwhile, is kept out when its node comes back and
/// told `Kicked`; a member that stayed comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kicked_and_blocked_while_away_then_owner_changes() {
    let server = server!();
    let _ = ms();
    let pa = Proxy::start(server.port()).await;
    let pc = Proxy::start(server.port()).await;
    let a = node_at(pa.url(), "r7dep", "a", |b| b).await;
    let b = node(&server, "r7dep", "b").await;
    let c = node_at(pc.url(), "r7dep", "c", |b| b).await;
    let (host, room) = room_with(&a, "dep", RoomLimits::default()).await;
    let adm = b.login("adm").await.unwrap();
    let k = c.login("k").await.unwrap();
    let bl = c.login("bl").await.unwrap();
    let st = c.login("st").await.unwrap();
    let sk = Seen::of(&k);
    let sbl = Seen::of(&bl);
    let sst = Seen::of(&st);
    for cl in [&adm, &k, &bl, &st] {
        join(cl, room).await;
    }
    rt!(host.chat_room_manager(), m => m.add_chat_room_admin(&room, "adm"))
        .await
        .unwrap();
    pc.cut();
    // While c is away: kick k, block bl (the owner still counts them in: within the grace).
    rt!(adm.chat_room_manager(), m => m.remove_chat_room_members(&room, ["k"]))
        .await
        .unwrap();
    rt!(adm.chat_room_manager(), m => m.block_chat_room_members(&room, ["bl"]))
        .await
        .unwrap();
    let m1 = send_ok(&adm, room, "while c away").await.seq();
    // Now the owner goes too (cut for good); b takes the room.
    pa.cut();
    let m2 = send_ok(&adm, room, "new owner").await.seq();
    eprintln!("m1 {m1}, m2 {m2} at {} ms", ms());
    pc.heal();
    sk.wait_event("k told Kicked", removed_as(LeaveReason::Kicked))
        .await;
    sbl.wait_event("bl told Kicked", removed_as(LeaveReason::Kicked))
        .await;
    // host's session was on a, cut off for good: not counted here.
    let deadline = Instant::now() + DEADLINE;
    let mut last;
    loop {
        last = members(&adm, room).await;
        last.retain(|m| m != "host");
        if last == ["adm", "st"] || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(POLL * 10).await;
    }
    assert_eq!(last, ["adm", "st"], "members (but host) after c is back");
    let r = retry(|| send(&k, room, "k after")).await;
    assert_eq!(
        r.map(|m| m.seq()).map_err(|e| e.code()),
        Err(702),
        "k after its kick"
    );
    let r = retry(|| send(&bl, room, "bl after")).await;
    assert_eq!(
        r.map(|m| m.seq()).map_err(|e| e.code()),
        Err(210),
        "bl after its block (blocked: 210 before 702, docs/semantics.md)"
    );
    let r = retry(|| async {
        bl.chat_room_manager()
            .join_chat_room(&room)
            .await
            .map(|_| ())
    })
    .await;
    assert_eq!(r.map_err(|e| e.code()), Err(707), "bl rejoining");
    // st is back and live; may rejoin k.
    let s = send_ok(&adm, room, "after heal").await.seq();
    assert!(
        sst.gets_or_is_told_within(s, DEADLINE).await,
        "st not live after the heal"
    );
    send_ok(&st, room, "st back").await;
    join(&k, room).await;
    send_ok(&k, room, "k back").await;
    // host (a, cut for good) is no longer in the room? It is the owner role: just print.
    eprintln!("members at the end: {:?}", members(&adm, room).await);
    for e in [&b, &c] {
        e.shutdown().await;
    }
    drop(host);
    a.shutdown().await;
}

// ------------------------------------------------------------------------------------------
// 7. The offline grace across an owner change
// ------------------------------------------------------------------------------------------

/// "the grace period runs on the owner's clock": a member offline (its only session) when the
/// owner's node goes is removed after the grace, not before it, and not never; an admin that
/// is offline too stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_grace_across_an_owner_change() {
    let server = server!();
    let _ = ms();
    let grace = Duration::from_secs(5);
    let pa = Proxy::start(server.port()).await;
    let a = node_at(pa.url(), "r7grace", "a", |b| b).await;
    let b = node(&server, "r7grace", "b").await;
    let c = node(&server, "r7grace", "c").await;
    let (host, room) =
        room_with(&a, "grace", RoomLimits::default().with_offline_grace(grace)).await;
    let u = b.login("u").await.unwrap();
    let adm = b.login("adm").await.unwrap();
    let w = c.login("w").await.unwrap();
    let sw = Seen::of(&w);
    for cl in [&u, &adm, &w] {
        join(cl, room).await;
    }
    rt!(host.chat_room_manager(), m => m.add_chat_room_admin(&room, "adm"))
        .await
        .unwrap();
    // w is an admin too, so it sees exits of plain members at any size.
    let off = Instant::now();
    u.disconnect().unwrap();
    adm.disconnect().unwrap();
    let_pass(Duration::from_millis(1000)).await;
    pa.cut(); // the owner goes; b or c takes the room
    send_ok(&w, room, "new owner").await;
    eprintln!(
        "new owner took the room {:?} after u went offline",
        off.elapsed()
    );
    // Removal = w told u exited (the list alone may lag right after a takeover: noted).
    let deadline = Instant::now() + grace + DEADLINE;
    let mut absent_before_exit: Vec<(u128, Vec<String>)> = Vec::new();
    let gone = loop {
        if sw.has_event(|e| is_member_exited(e, "u")) {
            break Some(off.elapsed());
        }
        let m = members(&w, room).await;
        if !m.contains(&"u".to_string()) && !sw.has_event(|e| is_member_exited(e, "u")) {
            absent_before_exit.push((off.elapsed().as_millis(), m));
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(POLL * 5).await;
    };
    eprintln!("u told exited {gone:?} after it went offline (grace {grace:?})");
    if !absent_before_exit.is_empty() {
        eprintln!(
            "NOTE: member list without u before any exit ({} polls), first {:?}, last {:?}",
            absent_before_exit.len(),
            absent_before_exit.first(),
            absent_before_exit.last()
        );
    }
    let gone = gone.expect("u never removed as offline after the owner changed");
    assert!(
        gone + Duration::from_millis(100) >= grace,
        "u removed {gone:?} after going offline: before the grace {grace:?}"
    );
    wait_until("u out of the list", || async {
        !members(&w, room).await.contains(&"u".to_string())
    })
    .await;
    let_pass(Duration::from_millis(1000)).await;
    wait_until("offline admin adm still listed", || async {
        members(&w, room).await.contains(&"adm".to_string())
    })
    .await;
    assert!(
        !sw.has_event(|e| is_member_exited(e, "adm")),
        "offline admin adm removed"
    );
    adm.reconnect().unwrap();
    send_ok(&adm, room, "adm back").await;
    u.reconnect().unwrap();
    let r = retry(|| send(&u, room, "u back")).await;
    assert_eq!(
        r.map(|m| m.seq()).map_err(|e| e.code()),
        Err(702),
        "u after removal"
    );
    for e in [&b, &c] {
        e.shutdown().await;
    }
    drop(host);
    a.shutdown().await;
}
