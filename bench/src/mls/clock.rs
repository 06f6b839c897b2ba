//! Timing one operation: wall time from `std::time::Instant` and CPU time from the process CPU
//! clock. The process clock, not the thread's: OpenMLS encrypts a commit's path secrets and
//! derives parent keys on rayon's thread pool (`par_iter` in its treekem and parent nodes), so
//! a commit's work is spread over both cores and a thread clock would miss part of it.

use std::time::Instant;

use serde::Serialize;

/// The CPU time all threads of this process have used, in nanoseconds.
///
/// `/proc/self/stat` counts in ticks of 10 ms, too coarse for operations of a millisecond, and
/// std has no CPU clock; `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)` is exact to the nanosecond.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration, and the clock id is
    // one every Linux has; the call writes nothing else.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One run of an operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Sample {
    /// CPU time of the whole process during the run, in microseconds.
    pub cpu_us: f64,
    /// Wall time of the run, in microseconds.
    pub wall_us: f64,
}

/// Runs `f` once and returns its result with its times.
pub fn time<T>(f: impl FnOnce() -> T) -> (T, Sample) {
    let (cpu, wall) = (process_cpu_ns(), Instant::now());
    let out = f();
    let sample = Sample {
        wall_us: wall.elapsed().as_nanos() as f64 / 1e3,
        cpu_us: process_cpu_ns().saturating_sub(cpu) as f64 / 1e3,
    };
    (out, sample)
}

/// The median of several runs, CPU and wall each on its own (the median of an even count is
/// the mean of the middle two).
pub fn median(samples: &[Sample]) -> Sample {
    let of = |f: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    Sample {
        cpu_us: of(|s| s.cpu_us),
        wall_us: of(|s| s.wall_us),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_clock_counts_work_and_the_median_is_the_middle() {
        let (sum, s) = time(|| (0..2_000_000u64).fold(0u64, |a, b| a ^ b.wrapping_mul(31)));
        assert!(sum > 0 && s.cpu_us > 0.0 && s.wall_us > 0.0);
        let at = |c: f64| Sample {
            cpu_us: c,
            wall_us: 2.0 * c,
        };
        assert_eq!(median(&[at(3.0), at(1.0), at(2.0)]), at(2.0));
        assert_eq!(median(&[at(4.0), at(1.0), at(2.0), at(3.0)]), at(2.5));
    }
}
