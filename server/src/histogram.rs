//! Latency histograms for `/metrics`, in Prometheus' format: fixed buckets, one relaxed
//! atomic each, so that recording one duration is a few additions with no lock on the path
//! it measures.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The upper bounds of the buckets, in seconds: from a fraction of a millisecond (a frame
/// handed to a session that is waiting for it, a commit without a sync) to ten seconds (a
/// disk or a Redis in trouble, a reader that stopped reading).
pub(crate) const BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// Durations counted by bucket.
#[derive(Default)]
pub(crate) struct Histogram {
    /// How many durations fell at or under each bound and over the one before (the last
    /// counts those over every bound); made cumulative when rendered.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    /// The sum of every duration, in microseconds.
    sum_micros: AtomicU64,
}

/// A histogram's counts at one moment, to render (or to hand across a trait as a value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per bucket, not cumulative ([`Histogram::buckets`]).
    pub buckets: [u64; BOUNDS.len() + 1],
    /// The sum in microseconds.
    pub sum_micros: u64,
}

impl Histogram {
    /// Counts one duration.
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_micros: self.sum_micros.load(Relaxed),
        }
    }
}

impl Snapshot {
    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Appends the histogram `name` with its `help` to `out`: cumulative `_bucket` lines up
    /// to `+Inf`, `_sum` in seconds and `_count`.
    pub(crate) fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut below = 0;
        for (bound, n) in BOUNDS.iter().zip(self.buckets) {
            below += n;
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {below}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_bucket_and_render_cumulatively() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50)); // under the first bound
        h.observe(Duration::from_micros(100)); // at the first bound: still in it
        h.observe(Duration::from_millis(3)); // 0.005
        h.observe(Duration::from_secs(60)); // over every bound
        let s = h.snapshot();
        assert_eq!((s.buckets[0], s.buckets[5], s.buckets[14]), (2, 1, 1));
        assert_eq!(s.count(), 4);
        let mut text = String::new();
        s.render(&mut text, "t_seconds", "A test.");
        assert!(text.contains("# TYPE t_seconds histogram\n"), "{text}");
        assert!(
            text.contains("t_seconds_bucket{le=\"0.0001\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{le=\"0.005\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("t_seconds_bucket{le=\"10\"} 3\n"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 4\n"), "{text}");
        assert!(text.contains("t_seconds_sum 60.00315\n"), "{text}");
        assert!(text.contains("t_seconds_count 4\n"), "{text}");
    }
}
