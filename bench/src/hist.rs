//! A log-linear latency histogram (HDR-like: 64 sub-buckets per power of two,
//! so every value is kept within 1.6 %), lock-free so that many subscriber
//! tasks can record into one.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// Nanosecond values.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
}

fn index(v: u64) -> usize {
    if v < SUB {
        v as usize
    } else {
        let e = 63 - v.leading_zeros();
        let shift = e - SUB_BITS;
        (((e - SUB_BITS + 1) as u64) * SUB + ((v >> shift) & (SUB - 1))) as usize
    }
}

/// Middle of the values that fall into bucket `i`.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        i
    } else {
        let e = i / SUB + u64::from(SUB_BITS) - 1;
        let sub = i % SUB;
        let shift = e - u64::from(SUB_BITS);
        ((SUB + sub) << shift) + ((1u64 << shift) >> 1)
    }
}

impl Histogram {
    /// An empty histogram.
    pub(crate) fn new() -> Histogram {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub(crate) fn record(&self, v: u64) {
        self.buckets[index(v)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(v, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    /// How many values were recorded.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Largest value (exact).
    pub(crate) fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }

    /// Mean value.
    pub(crate) fn mean(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            0.0
        } else {
            self.sum.load(Relaxed) as f64 / n as f64
        }
    }

    /// The value at quantile `q` (0..=1), within the bucket precision; never above max.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                return value(i).min(self.max());
            }
        }
        self.max()
    }

    /// Summary in milliseconds: p50, p90, p99, max, mean.
    pub(crate) fn summary_ms(&self) -> LatencyMs {
        let ms = |ns: u64| ns as f64 / 1e6;
        LatencyMs {
            p50: ms(self.quantile(0.50)),
            p90: ms(self.quantile(0.90)),
            p99: ms(self.quantile(0.99)),
            max: ms(self.max()),
            mean: self.mean() / 1e6,
        }
    }
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct LatencyMs {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotone_and_precise() {
        let mut last = 0;
        for v in (0..200_000u64).chain([1 << 40, u64::MAX / 2, u64::MAX]) {
            let i = index(v);
            assert!(i < BUCKETS);
            assert!(i >= last || v > 200_000);
            last = i;
            let mid = value(i) as f64;
            if v > 0 {
                assert!((mid - v as f64).abs() / (v as f64) < 0.02, "{v} {mid}");
            }
        }
        let h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() < 10_000.0, "{p50}");
        assert_eq!(h.max(), 1_000_000);
        assert!(h.quantile(1.0) <= 1_000_000);
    }
}
