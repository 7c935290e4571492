//! The side-by-side fan-out report: the same workloads through roomcast and three baselines
//! (raw `tokio::sync::broadcast`, mpsc + task per member, the actix ChatServer pattern), in one
//! process and one run, with ratios.
//!
//! `cargo run --release --example fanout_report` (add `--quick` for a smaller run).
//!
//! Every consumer counts what it receives, so the numbers include what a user's handler would
//! see. roomcast runs with its per-room delivery threshold off and queues large enough for the
//! burst; lost deliveries are reported next to throughput.

use std::time::Instant;

use roomcast_workspace::fanout::baselines::{ActixChatServer, MpscPerMember, TokioBroadcast};
use roomcast_workspace::fanout::roomcast_contender::Roomcast;
use roomcast_workspace::fanout::{burst, paced, Contender, RunResult};
use roomcast_workspace::rss_bytes;

/// Counts live heap bytes, to tell what members hold from what the allocator keeps around.
struct Counting;

static LIVE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(
            new as i64 - layout.size() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_heap() -> i64 {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn row(r: &RunResult, baseline: Option<f64>) {
    let ratio = baseline.map_or(String::from("-"), |b| format!("{:.1}x", r.per_second() / b));
    let lat = r.latency.map_or(String::from("-"), |l| {
        format!(
            "{:.2} / {:.2} / {:.2}",
            l.p50 as f64 / 1000.0,
            l.p99 as f64 / 1000.0,
            l.max as f64 / 1000.0
        )
    });
    println!(
        "| {:<40} | {:>7} | {:>5} | {:>8.2} | {:>10.2} | {:>6} | {:>9} | {:<22} | {}",
        r.name,
        r.members,
        r.messages,
        r.elapsed.as_secs_f64() * 1000.0,
        r.per_second() / 1e6,
        r.lost,
        ratio,
        lat,
        if r.complete { "" } else { "INCOMPLETE" },
    );
}

fn header(title: &str) {
    println!("\n### {title}\n");
    println!(
        "| {:<40} | {:>7} | {:>5} | {:>8} | {:>10} | {:>6} | {:>9} | {:<22} |",
        "contender", "members", "msgs", "ms", "M deliv/s", "lost", "vs actix", "p50 / p99 / max ms"
    );
    println!("|{}|", ["-"; 8].map(|d| d.repeat(3)).join("|"));
}

/// Runs `runs` bursts and keeps the median by throughput.
fn best_of(c: &mut dyn Contender, members: usize, messages: usize, runs: usize) -> RunResult {
    let mut results: Vec<RunResult> = (0..runs).map(|_| burst(c, members, messages)).collect();
    results.sort_by(|a, b| a.per_second().total_cmp(&b.per_second()));
    results.swap_remove(runs / 2)
}

fn burst_table(members: usize, messages: usize, runs: usize) {
    header(&format!(
        "burst: {members} online members, {messages} messages (median of {runs})"
    ));
    let cap = messages.next_power_of_two().max(1024);
    let actix = {
        let mut c = ActixChatServer::new(members);
        best_of(&mut c, members, messages, runs)
    };
    let base = actix.per_second();
    let mut rc = Roomcast::new(members, cap, None);
    let r = best_of(&mut rc, members, messages, runs);
    row(&r, Some(base));
    let mut rc = rc.awaiting_each_send();
    row(&best_of(&mut rc, members, messages, runs), Some(base));
    drop(rc);
    let mut b = TokioBroadcast::new(members, cap);
    row(&best_of(&mut b, members, messages, runs), Some(base));
    drop(b);
    let mut m = MpscPerMember::new(members, cap);
    row(&best_of(&mut m, members, messages, runs), Some(base));
    drop(m);
    row(&actix, Some(base));
}

fn paced_table(members: usize, rate: u32, seconds: u32) {
    let messages = (rate * seconds) as usize;
    header(&format!(
        "paced: {members} members, {rate} messages/s for {seconds} s ({:.1} M deliveries/s offered)",
        (members as f64 * rate as f64) / 1e6
    ));
    let cap = 1024;
    let mut rc = Roomcast::new(members, cap, None);
    row(&paced(&mut rc, members, messages, rate), None);
    drop(rc);
    let mut b = TokioBroadcast::new(members, cap);
    row(&paced(&mut b, members, messages, rate), None);
    drop(b);
    let mut m = MpscPerMember::new(members, cap);
    row(&paced(&mut m, members, messages, rate), None);
    drop(m);
    let mut a = ActixChatServer::new(members);
    row(&paced(&mut a, members, messages, rate), None);
}

fn slow_consumers(members: usize, rate: u32, seconds: u32) {
    let messages = (rate * seconds) as usize;
    header(&format!(
        "slow consumers: roomcast, {members} members at {rate} msgs/s, 1% never read (queue 256)"
    ));
    let mut healthy = Roomcast::new(members, 256, None);
    let n = healthy.healthy();
    let all = paced(&mut healthy, n, messages, rate);
    row(&all, None);
    drop(healthy);
    let before = rss_bytes();
    let mut mixed = Roomcast::new(members, 256, Some(100));
    let stalled = mixed.stalled();
    let setup = rss_bytes();
    let n = mixed.healthy();
    let with_stalled = paced(&mut mixed, n, messages, rate);
    let after = rss_bytes();
    row(&with_stalled, None);
    let (p_all, p_mixed) = (
        all.latency.map_or(0, |l| l.p99),
        with_stalled.latency.map_or(0, |l| l.p99),
    );
    println!(
        "\n{stalled} stalled members; healthy p99 {:.2} ms vs {:.2} ms without stalled members ({:+.0}%); \
         RSS {:.1} MiB after setup, {:.1} MiB after the run (engine + harness, from {:.1} MiB)",
        p_mixed as f64 / 1000.0,
        p_all as f64 / 1000.0,
        (p_mixed as f64 / p_all.max(1) as f64 - 1.0) * 100.0,
        setup as f64 / 1048576.0,
        after as f64 / 1048576.0,
        before as f64 / 1048576.0,
    );
}

/// Live heap and RSS of an engine with `members` idle online members (each with a handler),
/// measured from before the engine starts.
fn engine_footprint(members: usize) -> (i64, u64, usize) {
    let (rss0, heap0) = (rss_bytes(), live_heap());
    let rc = Roomcast::new(members, 1024, None);
    // Let the engine finish what setup queued (handler attachments, join events) so that what is
    // measured is what idle members hold, not work in flight.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (rss1, heap1) = (rss_bytes(), live_heap());
    let harness = rc.harness_bytes_per_member();
    drop(rc);
    (heap1 - heap0, rss1.saturating_sub(rss0), harness)
}

fn memory(members: usize) {
    println!("\n### memory: {members} idle online members\n");
    // The engine's fixed costs (threads' buffers, the temporary store, runtimes) do not depend on
    // the member count: the per-member cost is the slope between two sizes.
    let _warm_up = engine_footprint(1_000);
    let small = members / 2;
    let (heap_small, _, _) = engine_footprint(small);
    let start = Instant::now();
    let (heap_large, rss_large, harness) = engine_footprint(members);
    let slope = (heap_large - heap_small) / (members - small) as i64;
    println!(
        "roomcast, one room, members each with a handler (setup of {members}: {:.1} s):\n\
         - live heap {:.1} MiB with {small} members, {:.1} MiB with {members}: {slope} bytes per \
         added member, of which the harness's own client handle, handler and counter slot are \
         about {harness}: **{} bytes per member on the engine side**\n\
         - fixed cost of an engine (heap at {members} members less {slope} per member): {:.1} MiB\n\
         - RSS grew {:.1} MiB with {members} members ({} bytes per member, fixed costs and what \
         the allocator keeps included)",
        start.elapsed().as_secs_f64(),
        heap_small as f64 / 1048576.0,
        heap_large as f64 / 1048576.0,
        slope - harness as i64,
        (heap_large - slope * members as i64) as f64 / 1048576.0,
        rss_large as f64 / 1048576.0,
        rss_large / members as u64,
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# roomcast fan-out report");
    println!(
        "\nmachine: {cores} cores; load average before: {}",
        loadavg()
    );
    let started = Instant::now();
    if std::env::args().any(|a| a == "--paced") {
        paced_table(10_000, 100, 3);
        return;
    }
    if std::env::args().any(|a| a == "--memory") {
        memory(100_000);
        return;
    }
    if std::env::args().any(|a| a == "--burst10k") {
        burst_table(10_000, 500, 1);
        return;
    }
    if quick {
        burst_table(1_000, 200, 3);
        paced_table(1_000, 100, 1);
        memory(10_000);
    } else {
        burst_table(10_000, 500, 3);
        burst_table(100_000, 100, 3);
        paced_table(10_000, 100, 3);
        slow_consumers(10_000, 100, 3);
        memory(100_000);
    }
    println!(
        "\nload average after: {}; report took {:.0} s",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
}
