//! Latencies in a fixed amount of memory however many messages there are.

use crate::stats::Latency;

/// Latencies in nanoseconds, log-linear buckets with 64 steps per power of two (within 1.6%),
/// in a fixed amount of memory however many messages there are.
#[derive(Debug, Clone)]
pub struct Histogram {
    /// Samples per bucket.
    counts: Vec<u64>,
    /// Samples in total.
    n: u64,
    /// The largest sample, exactly.
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 128 + 57 * 64],
            n: 0,
            max: 0,
        }
    }
}

impl Histogram {
    /// The bucket of `v`: exact below 128, else the power of two and the next 6 bits.
    fn index(v: u64) -> usize {
        if v < 128 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros();
        let sub = (v >> (e - 6)) & 63;
        128 + (e as usize - 7) * 64 + sub as usize
    }

    /// The smallest value of bucket `i`, and its width.
    fn bounds(i: usize) -> (u64, u64) {
        if i < 128 {
            return (i as u64, 1);
        }
        let (e, sub) = ((i - 128) / 64 + 7, ((i - 128) % 64) as u64);
        ((64 + sub) << (e - 6), 1 << (e - 6))
    }

    /// Adds one sample.
    pub fn record(&mut self, nanos: u64) {
        self.counts[Self::index(nanos)] += 1;
        self.n += 1;
        self.max = self.max.max(nanos);
    }

    /// Adds all of `other`'s samples.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.n += other.n;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (the middle of its bucket), in nanoseconds.
    fn quantile(&self, q: f64) -> u64 {
        let rank = ((self.n as f64 * q).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = Self::bounds(i);
                return low.saturating_add(width / 2).min(self.max);
            }
        }
        self.max
    }

    /// p50, p99 and max in milliseconds; all zero without samples.
    pub fn latency(&self) -> Latency {
        if self.n == 0 {
            return Latency::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Latency {
            p50_ms: ms(self.quantile(0.50)),
            p99_ms: ms(self.quantile(0.99)),
            max_ms: ms(self.max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles_are_within_a_bucket() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let l = h.latency();
        assert!((l.p50_ms - 50.0).abs() / 50.0 < 0.02, "{l:?}");
        assert!((l.p99_ms - 99.0).abs() / 99.0 < 0.02, "{l:?}");
        assert_eq!(l.max_ms, 100.0);
        for v in [0, 1, 127, 128, 129, 255, 256, 1 << 40, u64::MAX] {
            let (low, width) = Histogram::bounds(Histogram::index(v));
            assert!(low <= v && v - low < width, "{v}");
        }
    }
}
