//! The faults of phase B: the server killed with SIGKILL (no chance to flush or say goodbye)
//! and started again on the same data directory and ports, and, on the Redis store,
//! redis-server killed and started again on its data. Redis runs as the kit starts it
//! (`--appendonly yes --appendfsync always`, the settings docs/CLUSTER.md asks for), so every
//! write it acknowledged survives, and so every message the server confirmed.
//!
//! Each fault is timed: from the kill until the process is ready again (the server's "ready"
//! line, Redis's PONG). The legitimate clients find out by themselves (their connections end)
//! and come back with backoff; the time that costs them is in the phase's throughput.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flexim_testkit::{RedisServer, TestServer};
use serde::Serialize;

use super::abuser::Lives;
use crate::idle::procfs::Proc;

/// The time the last fault leaves before the end of the phase, so that the clients' recovery
/// is measured inside it: a fault later than this is not made.
pub const RECOVERY: Duration = Duration::from_secs(2);

/// A fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the server, start it again on its data and ports.
    KillServer,
    /// SIGKILL redis-server, start it again on its data and port.
    RestartRedis,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::KillServer => "server SIGKILL and restart",
            Fault::RestartRedis => "redis-server SIGKILL and restart",
        }
    }
}

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Outage {
    /// Which fault it was.
    #[serde(skip)]
    pub fault: Fault,
    /// What was done, in words.
    pub what: &'static str,
    /// When, in seconds since phase B began.
    pub at_s: f64,
    /// Seconds from the kill until the process was ready again.
    pub down_s: f64,
    /// When it began (for the figures that leave outages out).
    #[serde(skip)]
    pub from: Instant,
    /// When it ended.
    #[serde(skip)]
    pub until: Instant,
}

/// What the faults did, for the report.
pub struct Struck {
    /// The processes, still running.
    pub procs: Processes,
    /// Each fault as it happened.
    pub outages: Vec<Outage>,
    /// CPU seconds the server processes that were killed had used in all, read just before
    /// each kill (a killed process's time is gone from `/proc` after it).
    pub killed_cpu_s: f64,
}

/// The processes the faults hit; they come back from [`run`] to be stopped at the end.
pub struct Processes {
    /// The flexim server.
    pub server: TestServer,
    /// Redis, on the Redis store.
    pub redis: Option<RedisServer>,
}

/// When, after the start of a phase of `phase`, each fault happens: a server kill every
/// `kill_every`, a Redis restart every `redis_every` with the first after half of it (so that
/// with equal periods they fall halfway between each other), none later than [`RECOVERY`]
/// before the end.
pub fn schedule(
    phase: Duration,
    kill_every: Option<Duration>,
    redis_every: Option<Duration>,
) -> Vec<(Duration, Fault)> {
    let last = phase.saturating_sub(RECOVERY);
    let mut plan = Vec::new();
    let mut every = |period: Option<Duration>, offset: f64, fault| {
        let Some(p) = period.filter(|p| !p.is_zero()) else {
            return;
        };
        for k in 1.. {
            let at = p.mul_f64(k as f64 - offset);
            if at > last {
                break;
            }
            plan.push((at, fault));
        }
    };
    every(kill_every, 0.0, Fault::KillServer);
    every(redis_every, 0.5, Fault::RestartRedis);
    plan.sort_by_key(|(at, _)| *at);
    plan
}

/// Makes the faults of `plan`, each at its time after `start`; gives the processes back with
/// what happened. `lives` moves on as each server kill begins and ends, so that an abuser can
/// tell a connection a kill ended from one the server ended by its rules.
///
/// It blocks, and is meant for a thread of its own ([`tokio::task::spawn_blocking`]): starting
/// a process and reading its banner block anyway, and on its own thread the schedule does not
/// depend on how busy the clients keep the runtime's workers (whose timers fire late when they
/// are).
pub fn run(
    mut procs: Processes,
    plan: Vec<(Duration, Fault)>,
    start: Instant,
    lives: Arc<Lives>,
) -> Struck {
    let (mut outages, mut killed_cpu_s) = (Vec::new(), 0.0);
    for (at, fault) in plan {
        std::thread::sleep((start + at).saturating_duration_since(Instant::now()));
        let from = Instant::now();
        let kill = fault == Fault::KillServer;
        if kill {
            lives.next();
            killed_cpu_s += Proc(procs.server.pid()).cpu_secs();
        }
        procs = strike(procs, fault);
        if kill {
            lives.next();
        }
        let until = Instant::now();
        eprintln!(
            "soak: {} at {:.1} s into phase B, down {:.2} s",
            fault.name(),
            from.duration_since(start).as_secs_f64(),
            until.duration_since(from).as_secs_f64()
        );
        outages.push(Outage {
            fault,
            what: fault.name(),
            at_s: from.duration_since(start).as_secs_f64(),
            down_s: until.duration_since(from).as_secs_f64(),
            from,
            until,
        });
    }
    Struck {
        procs,
        outages,
        killed_cpu_s,
    }
}

/// Makes one fault and waits until the process is back. A server or Redis that does not
/// start again panics (in the kit), which ends the run: nothing after it would mean anything.
fn strike(procs: Processes, fault: Fault) -> Processes {
    let Processes { server, mut redis } = procs;
    let server = match fault {
        Fault::KillServer => server.crash_and_restart(),
        Fault::RestartRedis => {
            if let Some(r) = redis.as_mut() {
                r.restart();
            }
            server
        }
    };
    Processes { server, redis }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_stay_inside_the_phase_and_apart() {
        let s = |p, k, r| schedule(Duration::from_secs(p), k, r);
        let secs = |n| Some(Duration::from_secs(n));
        // The defaults: one kill halfway, Redis restarts a quarter and three quarters in.
        assert_eq!(
            s(20, secs(10), secs(10)),
            [
                (Duration::from_secs(5), Fault::RestartRedis),
                (Duration::from_secs(10), Fault::KillServer),
                (Duration::from_secs(15), Fault::RestartRedis),
            ]
        );
        assert_eq!(
            s(5, secs(3), None),
            [(Duration::from_secs(3), Fault::KillServer)]
        );
        assert!(s(20, None, Some(Duration::ZERO)).is_empty());
        assert!(s(3, secs(2), None).is_empty(), "no time left to recover");
    }
}
