//! The fan-out workload, run the same way through roomcast and through three baselines:
//! raw `tokio::sync::broadcast`, one tokio task + mpsc channel per member, and the actix
//! websocket-chat pattern (a room actor holding a `Recipient` per member actor).
//!
//! Every contender delivers to `members` consumers; each consumer counts what it received (and
//! what its contender reported lost) into its own counter, and reports once when it has
//! accounted for every message, so that the measuring itself adds no shared hot spot. In paced
//! runs each consumer also records publish-to-consumer latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// What the consumers of one run share.
pub struct Probe {
    base: Instant,
    /// When each message (by 0-based index) was published, in ns since `base`.
    sent_ns: Vec<AtomicU64>,
    per_consumer: u64,
    consumers: u64,
    finished: AtomicU64,
    lost: AtomicU64,
    done: (Mutex<()>, Condvar),
    latencies: Mutex<Vec<u32>>,
    record_latency: bool,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").finish_non_exhaustive()
    }
}

impl Probe {
    /// A probe for `messages` messages to `consumers` consumers.
    pub fn new(messages: usize, consumers: usize, record_latency: bool) -> Arc<Probe> {
        Arc::new(Probe {
            base: Instant::now(),
            sent_ns: (0..messages).map(|_| AtomicU64::new(0)).collect(),
            per_consumer: messages as u64,
            consumers: consumers as u64,
            finished: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            done: (Mutex::new(()), Condvar::new()),
            latencies: Mutex::new(Vec::new()),
            record_latency,
        })
    }

    /// Records that message `index` is being published now.
    pub fn published(&self, index: usize) {
        self.sent_ns[index].store(self.base.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Waits until every consumer has accounted for every message, or `timeout`; true if all
    /// did.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.done.0.lock();
        while self.finished.load(Ordering::Acquire) < self.consumers {
            if self.done.1.wait_until(&mut guard, deadline).timed_out() {
                return self.finished.load(Ordering::Acquire) >= self.consumers;
            }
        }
        true
    }

    /// Deliveries reported lost (dropped or lagged) by the contender.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// The latency samples, in microseconds.
    pub fn take_latencies(&self) -> Vec<u64> {
        self.latencies.lock().drain(..).map(u64::from).collect()
    }
}

/// One consumer's counter. Not shared with other consumers.
pub struct Consumer {
    probe: Arc<Probe>,
    seen: AtomicU64,
    samples: Mutex<Vec<u32>>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer reporting to `probe`.
    pub fn new(probe: Arc<Probe>) -> Arc<Consumer> {
        Arc::new(Consumer {
            probe,
            seen: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
        })
    }

    /// Message `index` (0-based) arrived.
    pub fn received(&self, index: usize) {
        if self.probe.record_latency {
            let sent = self.probe.sent_ns[index].load(Ordering::Relaxed);
            let now = self.probe.base.elapsed().as_nanos() as u64;
            self.samples
                .lock()
                .push((now.saturating_sub(sent) / 1_000) as u32);
        }
        self.add(1);
    }

    /// `n` messages were lost on the way to this consumer.
    pub fn lost(&self, n: u64) {
        self.probe.lost.fetch_add(n, Ordering::Relaxed);
        self.add(n);
    }

    fn add(&self, n: u64) {
        let seen = self.seen.fetch_add(n, Ordering::Relaxed) + n;
        let target = self.probe.per_consumer;
        if seen >= target && seen - n < target {
            if self.probe.record_latency {
                let mut mine = std::mem::take(&mut *self.samples.lock());
                self.probe.latencies.lock().append(&mut mine);
            }
            if self.probe.finished.fetch_add(1, Ordering::AcqRel) + 1 == self.probe.consumers {
                let _guard = self.probe.done.0.lock();
                self.probe.done.1.notify_all();
            }
        }
    }
}

/// A fan-out system under test.
pub trait Contender {
    /// Its name in reports.
    fn name(&self) -> &'static str;
    /// Wires `probe`'s consumers for a run of `messages` messages (fresh consumers each run).
    fn prepare(&mut self, probe: &Arc<Probe>);
    /// Publishes message `index` (0-based) of the current run.
    fn publish(&mut self, index: usize);
    /// Called after every consumer has finished the run.
    fn finish(&mut self) {}
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Contender.
    pub name: &'static str,
    /// Consumers.
    pub members: usize,
    /// Messages published.
    pub messages: usize,
    /// Wall time from the first publish until every consumer accounted for every message.
    pub elapsed: Duration,
    /// Deliveries received.
    pub delivered: u64,
    /// Deliveries lost (dropped or lagged).
    pub lost: u64,
    /// True if every consumer finished before the timeout.
    pub complete: bool,
    /// Latency percentiles (paced runs).
    pub latency: Option<crate::Percentiles>,
}

impl RunResult {
    /// Deliveries per second.
    pub fn per_second(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64()
    }
}

/// Publishes `messages` messages as fast as the contender takes them.
pub fn burst(c: &mut dyn Contender, members: usize, messages: usize) -> RunResult {
    let probe = Probe::new(messages, members, false);
    c.prepare(&probe);
    let start = Instant::now();
    for i in 0..messages {
        probe.published(i);
        c.publish(i);
    }
    let complete = probe.wait(Duration::from_secs(120));
    finish(
        c,
        &probe,
        members,
        messages,
        start.elapsed(),
        complete,
        None,
    )
}

/// Publishes `messages` messages at `rate` per second and records latency.
pub fn paced(c: &mut dyn Contender, members: usize, messages: usize, rate: u32) -> RunResult {
    let probe = Probe::new(messages, members, true);
    c.prepare(&probe);
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    for i in 0..messages {
        let at = start + interval * i as u32;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        probe.published(i);
        c.publish(i);
    }
    let complete = probe.wait(Duration::from_secs(120));
    let mut samples = probe.take_latencies();
    let latency = Some(crate::Percentiles::of(&mut samples));
    finish(
        c,
        &probe,
        members,
        messages,
        start.elapsed(),
        complete,
        latency,
    )
}

fn finish(
    c: &mut dyn Contender,
    probe: &Probe,
    members: usize,
    messages: usize,
    elapsed: Duration,
    complete: bool,
    latency: Option<crate::Percentiles>,
) -> RunResult {
    c.finish();
    let total = (members * messages) as u64;
    RunResult {
        name: c.name(),
        members,
        messages,
        elapsed,
        delivered: total.saturating_sub(probe.lost()),
        lost: probe.lost(),
        complete,
        latency,
    }
}

/// The message the baselines carry: about what a chat message is.
pub struct Msg {
    /// Index in the run.
    pub index: usize,
    /// A short text.
    pub text: String,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Msg").finish_non_exhaustive()
    }
}

pub mod baselines;
pub mod roomcast_contender;
