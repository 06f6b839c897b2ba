//! The soak's figures: the legitimate traffic in each phase (throughput, send-to-receive
//! latency, what its clients were told), the ratio of the abused phase to the baseline, the
//! delivery check over the whole run, and what each abuser got; as a table, and as one line
//! the docs can quote.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::faults::{Fault, Outage};
use super::ledger::{Reception, Totals};
use super::tally::AbuserReport;
use crate::stats::Latency;

/// The run's settings, as the report states them.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// `embedded` or `redis`.
    pub store: &'static str,
    /// Legitimate pairs.
    pub pairs: usize,
    /// Messages per second each pair writes.
    pub rate_per_pair: f64,
    /// Messages a pair may have on their way.
    pub window: u64,
    /// Plaintext bytes per message.
    pub size: usize,
    /// Seconds of each phase.
    pub phase_s: f64,
    /// The abusers of phase B.
    pub abuse: Vec<&'static str>,
    /// Seconds between server kills in phase B (none if 0).
    pub kill_every_s: f64,
    /// Seconds between Redis restarts in phase B (none if 0).
    pub redis_restart_every_s: f64,
    /// Flags given to the server beyond the soak's own.
    pub server_args: Vec<String>,
}

/// The legitimate traffic in one phase.
#[derive(Debug, Serialize)]
pub struct Phase {
    /// Seconds.
    pub secs: f64,
    /// Legitimate messages received during the phase (first copies).
    pub received: usize,
    /// Received per second.
    pub per_sec: f64,
    /// Send-to-receive latency of those, measured from when the sender first wrote each
    /// (across refusals, resends and reconnects).
    pub latency: Latency,
    /// Seconds the server was down (killed, not ready again) during the phase.
    pub server_down_s: f64,
    /// Received per second of the time the server was up.
    pub per_sec_while_up: f64,
    /// p99 latency of the messages whose journey did not overlap a fault (a server kill and
    /// restart, or a Redis restart): what the abuse alone costs.
    pub p99_outside_faults_ms: f64,
    /// What the legitimate clients were told or went through (refusals by Status,
    /// disconnects, logins again).
    pub clients: BTreeMap<String, u64>,
    /// CPU seconds the server used in the phase (every life of it, across kills): on two
    /// cores shared with this tool, what explains the latency.
    pub server_cpu_s: f64,
    /// CPU seconds this tool used in the phase: the legitimate clients, and in B the abusers.
    pub tool_cpu_s: f64,
}

impl Phase {
    /// The figures of the phase from `from` for `len`, out of every reception.
    pub fn of(
        from: Instant,
        len: Duration,
        receptions: &[Reception],
        outages: &[Outage],
        clients: BTreeMap<String, u64>,
    ) -> Phase {
        let until = from + len;
        let inside: Vec<&Reception> = receptions
            .iter()
            .filter(|r| r.received >= from && r.received < until)
            .collect();
        let mut all: Vec<Duration> = inside.iter().map(|r| r.received - r.sent).collect();
        let spans_fault = |r: &Reception| {
            outages
                .iter()
                .any(|o| r.sent < o.until && r.received > o.from)
        };
        let mut calm: Vec<Duration> = inside
            .iter()
            .filter(|r| !spans_fault(r))
            .map(|r| r.received - r.sent)
            .collect();
        let down: f64 = outages
            .iter()
            .filter(|o| o.fault == Fault::KillServer && o.from >= from && o.from < until)
            .map(|o| o.down_s)
            // An empty sum of floats is -0.0, which would print as such.
            .fold(0.0, |a, b| a + b);
        let secs = len.as_secs_f64();
        Phase {
            secs,
            received: inside.len(),
            per_sec: inside.len() as f64 / secs.max(1e-9),
            latency: Latency::of(&mut all),
            server_down_s: down,
            per_sec_while_up: inside.len() as f64 / (secs - down).max(1e-9),
            p99_outside_faults_ms: Latency::of(&mut calm).p99_ms,
            clients,
            server_cpu_s: 0.0,
            tool_cpu_s: 0.0,
        }
    }
}

/// Everything the soak measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// How it ran.
    pub settings: Settings,
    /// Phase A: the legitimate load alone.
    pub baseline: Phase,
    /// Phase B: the same load with the abusers and the faults.
    pub abused: Phase,
    /// B's throughput over A's, over the whole phase: what the target (at least 0.8) is for.
    pub throughput_ratio: f64,
    /// B's throughput while the server was up over A's.
    pub throughput_ratio_while_up: f64,
    /// B's p99 latency over A's.
    pub p99_ratio: f64,
    /// The delivery check over the whole run, the drain included.
    pub delivery: Totals,
    /// The drain after phase B.
    pub drain: Drain,
    /// What each abuser got.
    pub abusers: Vec<AbuserReport>,
    /// The faults, as they happened.
    pub outages: Vec<Outage>,
    /// What else was going on.
    pub machine: Machine,
}

/// The drain after phase B: the legitimate clients stop writing new messages and the run waits
/// (bounded) until everything written was received and confirmed.
#[derive(Debug, Serialize)]
pub struct Drain {
    /// Seconds it took, or its bound.
    pub secs: f64,
    /// Whether everything was received and confirmed within the bound.
    pub settled: bool,
    /// What the legitimate clients went through meanwhile.
    pub clients: BTreeMap<String, u64>,
}

/// The machine during the run, for the record of what else ran on it.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// The load average when the run began and when it ended (`/proc/loadavg`).
    pub load_average: [String; 2],
    /// Lines the server logged at warning level or above, over all its lives (a restart
    /// after a kill appends to the same log).
    pub server_warnings: usize,
}

/// `a / b`, or 0 when `b` is 0.
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

impl Report {
    /// The report, with the ratios worked out.
    pub fn new(
        settings: Settings,
        [baseline, abused]: [Phase; 2],
        delivery: Totals,
        drain: Drain,
        abusers: Vec<AbuserReport>,
        outages: Vec<Outage>,
        machine: Machine,
    ) -> Report {
        Report {
            throughput_ratio: ratio(abused.per_sec, baseline.per_sec),
            throughput_ratio_while_up: ratio(abused.per_sec_while_up, baseline.per_sec),
            p99_ratio: ratio(abused.latency.p99_ms, baseline.latency.p99_ms),
            settings,
            baseline,
            abused,
            delivery,
            drain,
            abusers,
            outages,
            machine,
        }
    }

    /// Nothing confirmed was lost or altered, and the legitimate traffic got through phase B.
    pub fn correct(&self) -> bool {
        self.delivery.lost == 0 && self.delivery.garbled == 0 && self.abused.received > 0
    }

    /// The line the docs quote.
    pub fn headline(&self) -> String {
        format!(
            "soak ({} store): legit throughput B/A {:.2} ({:.0} vs {:.0} msg/s; {:.2} while the server was up), p99 B {:.1} ms ({:.1} ms outside the faults) vs A {:.1} ms, confirmed {} lost {}",
            self.settings.store,
            self.throughput_ratio,
            self.abused.per_sec,
            self.baseline.per_sec,
            self.throughput_ratio_while_up,
            self.abused.latency.p99_ms,
            self.abused.p99_outside_faults_ms,
            self.baseline.latency.p99_ms,
            self.delivery.confirmed,
            self.delivery.lost,
        )
    }

    /// The human summary: settings, the phase table, delivery, abusers, faults, headline.
    pub fn summary(&self) -> String {
        let s = &self.settings;
        let mut out = format!(
            "soak: {} legitimate pairs (half TCP to WebSocket, half the other way) at {} msg/s each, {} B texts, window {}; phases of {:.0} s; {} store\n\
             phase B: abuse {}; server SIGKILL every {} s; Redis restart every {} s{}\n\n",
            s.pairs,
            s.rate_per_pair,
            s.size,
            s.window,
            s.phase_s,
            s.store,
            if s.abuse.is_empty() {
                "none".to_string()
            } else {
                s.abuse.join(", ")
            },
            or_never(s.kill_every_s),
            or_never(s.redis_restart_every_s),
            match s.server_args.is_empty() {
                true => String::new(),
                false => format!("; server flags {}", s.server_args.join(" ")),
            },
        );
        out += &self.phase_table();
        out += &self.delivery_lines();
        for a in &self.abusers {
            out += &format!("\nabuser {}:\n", a.name);
            for (what, n) in &a.counts {
                out += &format!("  {n:>9}  {what}\n");
            }
            for note in &a.notes {
                out += &format!("  {note}\n");
            }
        }
        for o in &self.outages {
            out += &format!(
                "\nfault: {} at {:.1} s into phase B, down {:.2} s",
                o.what, o.at_s, o.down_s
            );
        }
        out += &format!(
            "\nmachine load average at start: {}; at end: {}; server warnings logged: {}\n\n{}",
            self.machine.load_average[0],
            self.machine.load_average[1],
            self.machine.server_warnings,
            self.headline()
        );
        out
    }

    /// The two phases side by side, then what their clients went through.
    fn phase_table(&self) -> String {
        let row = |name: &str, p: &Phase| {
            format!(
                "{name:<16} {:>6.1} {:>9} {:>9.1} {:>8.2} {:>8.2} {:>9.2} {:>8.1} {:>12.2}\n",
                p.secs,
                p.received,
                p.per_sec,
                p.latency.p50_ms,
                p.latency.p99_ms,
                p.latency.max_ms,
                p.server_down_s,
                p.p99_outside_faults_ms,
            )
        };
        let mut t = format!(
            "{:<16} {:>6} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>12}\n",
            "phase",
            "secs",
            "received",
            "msg/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "down s",
            "p99 no-fault"
        );
        t += &row("A baseline", &self.baseline);
        t += &row("B abuse+faults", &self.abused);
        t += &format!(
            "B/A: throughput {:.2} (while the server was up: {:.2}), p99 latency x{:.1}\n",
            self.throughput_ratio, self.throughput_ratio_while_up, self.p99_ratio
        );
        for (name, p) in [("A", &self.baseline), ("B", &self.abused)] {
            t += &format!(
                "CPU in {name}: server {:.1} s, this tool {:.1} s (of {:.0} s on two cores)\n",
                p.server_cpu_s,
                p.tool_cpu_s,
                2.0 * p.secs
            );
        }
        for (name, p) in [("A", &self.baseline), ("B", &self.abused)] {
            if !p.clients.is_empty() {
                t += &format!("legitimate clients in {name}: {}\n", counts(&p.clients));
            }
        }
        t
    }

    /// The delivery check.
    fn delivery_lines(&self) -> String {
        let d = &self.delivery;
        let mut t = format!(
            "\ndelivery (whole run, drained in {:.1} s{}): written {}, confirmed {}, received {}, CONFIRMED LOST {}\n\
             copies {}, garbled {}, delivered after a refusal {}, wrong id {}, refusals retried {}, received but unconfirmed {}, neither {}\n",
            self.drain.secs,
            if self.drain.settled {
                ""
            } else {
                ", NOT settled: gave up waiting"
            },
            d.written,
            d.confirmed,
            d.received,
            d.lost,
            d.copies,
            d.garbled,
            d.refused_then_delivered,
            d.wrong_id,
            d.refusals,
            d.received_unconfirmed,
            d.missing_unconfirmed,
        );
        for e in &d.unsettled_examples {
            t += &format!("  unsettled: {e}\n");
        }
        if !self.drain.clients.is_empty() {
            t += &format!(
                "legitimate clients in the drain: {}\n",
                counts(&self.drain.clients)
            );
        }
        t
    }
}

/// "every N s", or "never" for 0.
fn or_never(secs: f64) -> String {
    if secs > 0.0 {
        format!("{secs:.0}")
    } else {
        "never (0)".into()
    }
}

/// Counts as "what N, what N".
fn counts(c: &BTreeMap<String, u64>) -> String {
    c.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_counts_what_arrived_in_it_and_leaves_outages_out_where_asked() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let r = |sent, received| Reception {
            sent: at(sent),
            received: at(received),
        };
        // Three in the phase (one across the outage), one after it.
        let receptions = [r(0, 10), r(100, 1500), r(1800, 1810), r(2100, 2200)];
        let outage = Outage {
            fault: Fault::KillServer,
            what: "server SIGKILL and restart",
            at_s: 0.2,
            down_s: 0.5,
            from: at(200),
            until: at(700),
        };
        let p = Phase::of(
            t0,
            Duration::from_secs(2),
            &receptions,
            &[outage],
            BTreeMap::new(),
        );
        assert_eq!(p.received, 3);
        assert_eq!(p.per_sec, 1.5);
        assert_eq!(p.per_sec_while_up, 2.0);
        assert_eq!(p.latency.max_ms, 1400.0);
        assert_eq!(p.p99_outside_faults_ms, 10.0);
        assert_eq!(p.server_down_s, 0.5);
        assert_eq!(ratio(1.0, 0.0), 0.0);
    }
}
