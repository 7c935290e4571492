//! The per-room delivery threshold: which messages a room drops under overload.
//!
//! A token bucket refilled at `rate` messages per second, holding at most two seconds' worth.
//! Each admitted message takes one token, and a message of each priority needs a reserve of
//! tokens left in the bucket: half the bucket for low, a quarter for normal, none for high. As a
//! room's message rate climbs past `rate`, the bucket drains, low messages stop being admitted
//! first, then normal ones, high ones last. The sustained admitted rate is `rate`; from an idle
//! room a burst of up to `rate` low, `1.5 x rate` normal or `2 x rate` high messages passes.

use serde::{Deserialize, Serialize};

use crate::{MessagePriority, Timestamp};

/// Counts of a room's messages since it started (or was restarted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RoomMessageStats {
    /// Messages admitted and delivered to the room.
    pub accepted: u64,
    /// Low-priority messages dropped by the delivery threshold.
    pub dropped_low: u64,
    /// Normal-priority messages dropped by the delivery threshold.
    pub dropped_normal: u64,
    /// High-priority messages dropped by the delivery threshold.
    pub dropped_high: u64,
}

impl RoomMessageStats {
    /// All dropped messages.
    pub fn dropped(&self) -> u64 {
        self.dropped_low + self.dropped_normal + self.dropped_high
    }
}

/// The delivery threshold of one room.
#[derive(Debug, Clone)]
pub struct DeliveryGate {
    rate: Option<u32>,
    tokens: f64,
    last_ms: Timestamp,
}

impl DeliveryGate {
    /// A gate admitting `rate` messages per second (`None`: no threshold), full at `now`.
    pub fn new(rate: Option<u32>, now: Timestamp) -> DeliveryGate {
        DeliveryGate {
            rate,
            tokens: rate.map_or(0.0, Self::capacity),
            last_ms: now,
        }
    }

    fn capacity(rate: u32) -> f64 {
        (2 * rate.max(1)) as f64
    }

    /// True if a message of `priority` may go out at `now`; takes a token if so.
    pub fn admit(&mut self, priority: MessagePriority, now: Timestamp) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        let capacity = Self::capacity(rate);
        let elapsed = (now - self.last_ms).max(0) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now);
        self.tokens = (self.tokens + elapsed * rate as f64).min(capacity);
        let reserve = match priority {
            MessagePriority::Low => capacity * 0.5,
            MessagePriority::Normal => capacity * 0.25,
            MessagePriority::High => 0.0,
        };
        if self.tokens >= reserve + 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessagePriority::*;

    fn burst(gate: &mut DeliveryGate, p: MessagePriority, n: usize, now: Timestamp) -> usize {
        (0..n).filter(|_| gate.admit(p, now)).count()
    }

    #[test]
    fn no_threshold_admits_everything() {
        let mut g = DeliveryGate::new(None, 0);
        assert_eq!(burst(&mut g, Low, 10_000, 0), 10_000);
    }

    #[test]
    fn bursts_from_idle_by_priority() {
        for (p, expect) in [(Low, 20), (Normal, 30), (High, 40)] {
            let mut g = DeliveryGate::new(Some(20), 0);
            assert_eq!(burst(&mut g, p, 1_000, 0), expect, "{p:?}");
        }
    }

    #[test]
    fn under_sustained_overload_low_goes_first_then_normal() {
        let mut g = DeliveryGate::new(Some(20), 0);
        let mut admitted = [0usize; 3];
        // 10 seconds of 100 messages/s of each priority, interleaved.
        for tick in 0..1_000 {
            let now = tick * 10;
            for (i, p) in [Low, Normal, High].into_iter().enumerate() {
                if g.admit(p, now) {
                    admitted[i] += 1;
                }
            }
        }
        let [low, normal, high] = admitted;
        assert!(
            high >= 190,
            "high keeps (nearly) the whole rate: {admitted:?}"
        );
        assert!(normal < high && low <= normal, "{admitted:?}");
        assert!(low + normal + high <= 20 * 10 + 40, "{admitted:?}");
    }

    #[test]
    fn the_rate_refills() {
        let mut g = DeliveryGate::new(Some(20), 0);
        assert_eq!(burst(&mut g, High, 1_000, 0), 40);
        assert_eq!(burst(&mut g, High, 1_000, 500), 10);
        assert!(!g.admit(High, 500));
        assert!(g.admit(High, 560), "one token refills in 50 ms");
    }
}
