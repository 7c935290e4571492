//! Helpers shared by roomcast's examples, benchmarks and end-to-end tests.
//!
//! This package exists to hold the workspace's `examples/`, `benches/` and `tests/`; it is not
//! published. Library users depend on the `roomcast` crate.

pub mod fanout;
pub mod gateway;
pub mod scale;

/// Limits for load harnesses (benchmarks, simulations of load, crash and model tests): Agora's
/// defaults, but without the per-room delivery threshold and the per-user rate limits, which a
/// harness driving many calls from few users would hit.
pub fn harness_limits() -> roomcast::Limits {
    let mut limits = roomcast::Limits::default();
    limits.room_delivery_rate = None;
    limits.api_calls_per_user_per_second = None;
    limits.user_messages_per_window = None;
    limits
}

/// The process's resident set size in bytes (Linux; 0 elsewhere).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// A small seeded generator (xorshift64*), so that a simulation or a test replays from its seed.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 if `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Summary statistics of a set of latency samples, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
}

impl Percentiles {
    /// Computes the percentiles of `samples` (sorted in place).
    pub fn of(samples: &mut [u64]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Percentiles {
            count: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: samples[samples.len() - 1],
        }
    }
}

/// Latency samples recorded from many threads at once, in microseconds, into HDR histograms
/// (3 significant digits, any value up to an hour): true percentiles, no saturating bucket.
///
/// Each thread records into a histogram of its own (an uncontended lock); [`Latencies::merged`]
/// adds them up.
#[derive(Debug, Default)]
pub struct Latencies {
    threads: parking_lot::Mutex<Vec<std::sync::Arc<parking_lot::Mutex<Histogram>>>>,
    id: std::sync::OnceLock<u64>,
}

type Histogram = hdrhistogram::Histogram<u64>;

fn new_histogram() -> Histogram {
    // unwrap: the bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()
}

impl Latencies {
    /// An empty recorder.
    pub fn new() -> Latencies {
        Latencies::default()
    }

    fn key(&self) -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        *self
            .id
            .get_or_init(|| NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// Records one sample of `us` microseconds (0 counts as 1).
    pub fn record(&self, us: u64) {
        thread_local! {
            static MINE: std::cell::RefCell<Vec<(u64, std::sync::Arc<parking_lot::Mutex<Histogram>>)>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        let key = self.key();
        let local = MINE.with(|mine| {
            let mut mine = mine.borrow_mut();
            if let Some((_, h)) = mine.iter().find(|(k, _)| *k == key) {
                return h.clone();
            }
            let h = std::sync::Arc::new(parking_lot::Mutex::new(new_histogram()));
            self.threads.lock().push(h.clone());
            mine.push((key, h.clone()));
            h
        });
        local.lock().saturating_record(us.max(1));
    }

    /// Every thread's samples in one histogram.
    pub fn merged(&self) -> Histogram {
        let mut all = new_histogram();
        for h in self.threads.lock().iter() {
            // unwrap: the histograms share bounds, so adding cannot fail.
            all.add(&*h.lock()).unwrap();
        }
        all
    }

    /// The merged samples' percentiles.
    pub fn percentiles(&self) -> Percentiles {
        let h = self.merged();
        Percentiles {
            count: h.len() as usize,
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_from_many_threads_merge_without_saturating() {
        let l = std::sync::Arc::new(Latencies::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for v in 1..=1_000u64 {
                        l.record(v * 1_000 + t);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        l.record(10_000_000); // 10 s: far above any fixed bucket range
        let p = l.percentiles();
        assert_eq!(p.count, 4_001);
        assert!((495_000..=505_000).contains(&p.p50), "{p:?}");
        assert!(p.max >= 9_990_000, "{p:?}");
    }

    #[test]
    fn percentiles_of_a_range() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let p = Percentiles::of(&mut v);
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 51, 99, 100));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }
}
