//! The `idle` measurement: the server's memory per connection, phase by phase, and what
//! flowed during the hold.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use super::procfs::{Memory, Proc, kernel_tcp_kib};
use super::workers::{Chatter, Event, Share, WorkerHandle, child_main, gather};
use super::{IdleArgs, Transport, latency_of, split, target};
use crate::stats::{Latency, rate};

/// How long the server is left alone after a phase before its memory is read, so that
/// transient buffers of the handshakes are freed first.
const SETTLE: Duration = Duration::from_secs(1);
/// Open files a process needs besides its sockets (standard streams, the runtime, the
/// store's files): a share of connections must leave this many free.
const SPARE_FILES: u64 = 100;

/// One opening phase, all workers together.
#[derive(Debug, Default, Serialize)]
pub struct Phase {
    /// Connections asked for.
    pub asked: usize,
    /// Connections authenticated.
    pub opened: usize,
    /// Connections that failed.
    pub failed: usize,
    /// The first failure's reason.
    pub first_error: Option<String>,
    /// Seconds from the first connect to the last authentication.
    pub seconds: f64,
    /// Connections authenticated per second during the phase.
    pub per_sec: f64,
    /// Connect-to-authenticated time.
    pub latency: Latency,
    /// The server's memory after the phase (and a second to settle).
    pub memory_after: Memory,
    /// Server memory per connection of this phase, VmRSS, in KiB.
    pub rss_kib_per_conn: f64,
    /// Server memory per connection of this phase, RssAnon, in KiB.
    pub anon_kib_per_conn: f64,
    /// Connections of this kind per GiB of server memory at that rate (VmRSS).
    pub conns_per_gib: f64,
    /// The kernel's TCP socket memory (whole machine, both ends) added in this phase, in KiB.
    pub kernel_tcp_kib_added: i64,
    /// The server's open files after the phase.
    pub server_open_files: usize,
}

/// The figures of `idle`.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    /// Load generator processes.
    pub procs: usize,
    /// Source addresses.
    pub sources: u8,
    /// Handshakes at once per process.
    pub concurrency: usize,
    /// The server's memory before any connection.
    pub memory_before: Memory,
    /// The raw TCP phase.
    pub tcp: Phase,
    /// The WebSocket phase.
    pub ws: Phase,
    /// Seconds everything was held open after both phases.
    pub hold_secs: f64,
    /// The server's memory at the end of the hold.
    pub memory_end: Memory,
    /// The server's open files at the end of the hold.
    pub server_open_files_end: usize,
    /// The server's open-files limit.
    pub server_open_files_limit: Option<u64>,
    /// The server's CPU use during the hold, as a share of one core.
    pub server_cpu_during_hold: f64,
    /// Messages flowing among the connections during the hold.
    pub chatter: Chatter,
}

impl IdleReport {
    /// Whether every connection opened and stayed, and no chatter message went astray.
    pub fn correct(&self) -> bool {
        let c = &self.chatter;
        self.tcp.failed == 0
            && self.ws.failed == 0
            && c.closed_early == 0
            && c.lost == 0
            && c.duplicated == 0
            && c.refused == 0
            && c.unreadable == 0
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let phase = |name: &str, p: &Phase| {
            if p.asked == 0 {
                return format!("{name}: none");
            }
            let error = p
                .first_error
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default();
            format!(
                "{name}: {} of {} authenticated in {:.1} s ({:.0}/s; handshake p50 {:.1} ms, p99 {:.1} ms), \
                 {} failed{error}\n  server memory: {:.2} KiB per connection (VmRSS), {:.2} KiB (RssAnon) \
                 -> {:.0} connections per GiB; kernel TCP memory {:+} KiB (whole machine); server open files {}",
                p.opened,
                p.asked,
                p.seconds,
                p.per_sec,
                p.latency.p50_ms,
                p.latency.p99_ms,
                p.failed,
                p.rss_kib_per_conn,
                p.anon_kib_per_conn,
                p.conns_per_gib,
                p.kernel_tcp_kib_added,
                p.server_open_files,
            )
        };
        let c = &self.chatter;
        let limit = self
            .server_open_files_limit
            .map_or("unknown".to_string(), |l| l.to_string());
        format!(
            "idle: {} process(es), {} source addresses, {} handshakes at once per process\n\
             server before: VmRSS {} KiB, RssAnon {} KiB\n\
             {}\n{}\n\
             held {:.0} s: server VmRSS {} KiB, RssAnon {} KiB, open files {} (limit {limit}), CPU {:.1}% of a core\n\
             chatter: {} pairs, {} sent, {} answered, {} received (p50 {:.2} ms, p99 {:.2} ms), {} receipts; \
             lost {}, duplicated {}, refused {}, unreadable {}; connections closed early {}",
            self.procs,
            self.sources,
            self.concurrency,
            self.memory_before.vm_rss_kib,
            self.memory_before.rss_anon_kib,
            phase("tcp", &self.tcp),
            phase("ws ", &self.ws),
            self.hold_secs,
            self.memory_end.vm_rss_kib,
            self.memory_end.rss_anon_kib,
            self.server_open_files_end,
            self.server_cpu_during_hold * 100.0,
            c.pairs,
            c.sent,
            c.answered,
            c.received,
            c.latency.p50_ms,
            c.latency.p99_ms,
            c.receipts,
            c.lost,
            c.duplicated,
            c.refused,
            c.unreadable,
            c.closed_early,
        )
    }
}

/// Runs the idle measurement.
pub async fn run_idle(args: IdleArgs) -> anyhow::Result<ExitCode> {
    if let Some(share) = &args.child {
        return child_main(share).await;
    }
    let procs = args.procs.max(1);
    let total = args.tcp + args.ws;
    let own_limit = Proc(None).open_files_limit().unwrap_or(u64::MAX);
    let per_proc = total.div_ceil(procs) as u64;
    if per_proc + SPARE_FILES > own_limit {
        bail!(
            "{per_proc} connections per process, but a process may open only {own_limit} files \
             here: use --procs {}",
            (total as u64).div_ceil(own_limit.saturating_sub(SPARE_FILES).max(1))
        );
    }
    if args.net.sources > 0 && total.div_ceil(args.net.sources as usize) > 25_000 {
        bail!("more than 25,000 connections per source address: raise --sources");
    }
    let (server, proc) = target(&args.target)?;
    let server_limit = proc.and_then(|p| p.open_files_limit());
    if let Some(limit) = server_limit
        && total as u64 + SPARE_FILES > limit
    {
        bail!("{total} connections, but the server may open only {limit} files");
    }
    if args.ws > 0 && server.ws.is_none() {
        bail!("the WebSocket URL is unknown: pass --ws-url with --server");
    }
    let memory = |p: Option<Proc>| p.map_or(Ok(Memory::default()), |p| p.memory());
    eprintln!(
        "idle: {} TCP then {} WebSocket connections against {} from {procs} process(es) ...",
        args.tcp, args.ws, server.tcp
    );
    tokio::time::sleep(SETTLE).await;
    let memory_before = memory(proc)?;
    let mut workers = Vec::with_capacity(procs);
    for i in 0..procs {
        let share = Share {
            index: i,
            tcp: split(args.tcp, procs, i),
            ws: split(args.ws, procs, i),
            chatter: split(args.chatter, procs, i),
            chatter_rate: args.chatter_rate,
            tcp_addr: server.tcp.clone(),
            ws_url: server.ws.clone(),
            sources: args.net.sources,
            concurrency: args.net.concurrency,
        };
        workers.push(if procs == 1 {
            WorkerHandle::local(share)
        } else {
            WorkerHandle::child(&share)?
        });
    }
    let timeout = Duration::from_secs(args.timeout);
    let mut phases = Vec::new();
    let mut before = memory_before;
    for (transport, asked) in [(Transport::Tcp, args.tcp), (Transport::Ws, args.ws)] {
        let kernel_before = kernel_tcp_kib();
        if transport == Transport::Ws {
            for w in workers.iter_mut() {
                w.next().await;
            }
        }
        let events = gather(&mut workers, timeout).await?;
        let mut phase = Phase {
            asked,
            ..Phase::default()
        };
        let mut latencies = Vec::new();
        for e in events {
            if let Event::Opened(o) = e {
                phase.opened += o.opened;
                phase.failed += o.failed;
                phase.first_error = phase.first_error.or(o.first_error);
                latencies.extend(o.latencies_ms);
                // The workers open at the same time: the phase lasts as long as the slowest.
                phase.seconds = phase.seconds.max(o.seconds);
            }
        }
        eprintln!(
            "  {transport:?}: {} authenticated in {:.1} s, {} failed",
            phase.opened, phase.seconds, phase.failed
        );
        phase.per_sec = rate(phase.opened, Duration::from_secs_f64(phase.seconds));
        phase.latency = latency_of(&latencies);
        tokio::time::sleep(SETTLE).await;
        phase.memory_after = memory(proc)?;
        phase.server_open_files = proc.map_or(0, |p| p.open_files());
        phase.kernel_tcp_kib_added = kernel_tcp_kib() as i64 - kernel_before as i64;
        if phase.opened > 0 {
            let n = phase.opened as f64;
            phase.rss_kib_per_conn =
                (phase.memory_after.vm_rss_kib as f64 - before.vm_rss_kib as f64) / n;
            phase.anon_kib_per_conn =
                (phase.memory_after.rss_anon_kib as f64 - before.rss_anon_kib as f64) / n;
            if phase.rss_kib_per_conn > 0.0 {
                phase.conns_per_gib = 1024.0 * 1024.0 / phase.rss_kib_per_conn;
            }
        }
        before = phase.memory_after;
        phases.push(phase);
    }
    // Hold: the chatter flows while every connection stays open.
    let cpu_before = proc.map_or(0.0, |p| p.cpu_secs());
    let hold_started = Instant::now();
    for w in workers.iter_mut() {
        w.next().await;
    }
    eprintln!("  holding for {} s ...", args.hold);
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let hold_secs = hold_started.elapsed().as_secs_f64();
    let cpu_during_hold = (proc.map_or(0.0, |p| p.cpu_secs()) - cpu_before) / hold_secs;
    let memory_end = memory(proc)?;
    let server_open_files_end = proc.map_or(0, |p| p.open_files());
    for w in workers.iter_mut() {
        w.next().await;
    }
    let mut chatter = Chatter::default();
    for e in gather(&mut workers, timeout).await? {
        if let Event::Done(c) = e {
            chatter.pairs += c.pairs;
            chatter.sent += c.sent;
            chatter.answered += c.answered;
            chatter.refused += c.refused;
            chatter.received += c.received;
            chatter.lost += c.lost;
            chatter.duplicated += c.duplicated;
            chatter.unreadable += c.unreadable;
            chatter.receipts += c.receipts;
            chatter.closed_early += c.closed_early;
            chatter.latencies_ms.extend(c.latencies_ms);
        }
    }
    chatter.latency = latency_of(&chatter.latencies_ms);
    chatter.latencies_ms = Vec::new();
    drop(workers);
    drop(server);
    let mut phases = phases.into_iter();
    let report = IdleReport {
        procs,
        sources: args.net.sources,
        concurrency: args.net.concurrency,
        memory_before,
        tcp: phases.next().unwrap_or_default(),
        ws: phases.next().unwrap_or_default(),
        hold_secs,
        memory_end,
        server_open_files_end,
        server_open_files_limit: server_limit,
        server_cpu_during_hold: cpu_during_hold,
        chatter,
    };
    crate::finish(
        args.json,
        &report,
        IdleReport::summary,
        report.correct(),
        "connections failed or were closed, or chatter messages were lost (see above)",
    )
}
