//! The `handshakes` measurement: logins per second, each on a fresh connection closed right
//! after, with the server's CPU per login.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use serde::Serialize;

use super::procfs::Proc;
use super::workers::Opened;
use super::{
    Endpoints, HandshakeArgs, Key, Transport, connect_authenticated, latency_of, source, target,
};
use crate::stats::{Latency, rate};

/// The figures of `handshakes`.
#[derive(Debug, Serialize)]
pub struct HandshakeReport {
    /// `tcp` or `ws`.
    pub transport: &'static str,
    /// Handshakes asked for.
    pub count: usize,
    /// Handshakes at once.
    pub concurrency: usize,
    /// Source addresses.
    pub sources: u8,
    /// Handshakes completed (our User datum received).
    pub completed: usize,
    /// Handshakes that failed.
    pub failed: usize,
    /// The first failure's reason.
    pub first_error: Option<String>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Completed handshakes per second (connect, header, AUTH, challenge, answer, welcome).
    pub per_sec: f64,
    /// Connect-to-authenticated time.
    pub latency: Latency,
    /// The server's CPU seconds during the run (user + system).
    pub server_cpu_secs: f64,
    /// The server's CPU per handshake, in microseconds (accept, both datums, the store's
    /// read and write, the close), from its CPU time.
    pub server_cpu_us_per_handshake: f64,
    /// Handshakes one server core could complete at that cost (the load generator aside).
    pub per_core_projection: f64,
    /// This load generator's CPU seconds during the run.
    pub generator_cpu_secs: f64,
}

impl HandshakeReport {
    /// The human summary.
    pub fn summary(&self) -> String {
        let error = self
            .first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default();
        format!(
            "handshakes ({}): {} of {} in {:.2} s with {} at once over {} source addresses: {:.0} handshakes/s\n\
             latency (connect to authenticated): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; failed {}{error}\n\
             CPU: server {:.2} s ({:.0} us per handshake -> {:.0} handshakes/s per server core), load generator {:.2} s",
            self.transport,
            self.completed,
            self.count,
            self.seconds,
            self.concurrency,
            self.sources,
            self.per_sec,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.failed,
            self.server_cpu_secs,
            self.server_cpu_us_per_handshake,
            self.per_core_projection,
            self.generator_cpu_secs,
        )
    }
}

/// Runs the handshake measurement.
pub async fn run_handshakes(args: HandshakeArgs) -> anyhow::Result<ExitCode> {
    if args.net.sources > 0 && args.count.div_ceil(args.net.sources as usize) > 25_000 {
        // Each closed connection leaves its port in TIME_WAIT for a minute.
        bail!("more than 25,000 handshakes per source address: raise --sources");
    }
    let (server, proc) = target(&args.target)?;
    let transport = if args.ws {
        Transport::Ws
    } else {
        Transport::Tcp
    };
    let ep = Endpoints::resolve(&server.tcp, server.ws.as_deref()).await?;
    eprintln!(
        "handshakes: generating {} client keys (not timed) ...",
        args.count
    );
    let keys: VecDeque<Key> = (0..args.count).map(|_| Key::generate()).collect();
    let queue = Arc::new(Mutex::new(
        keys.into_iter().enumerate().collect::<VecDeque<_>>(),
    ));
    eprintln!(
        "handshakes: {} over {transport:?} against {} ...",
        args.count, server.tcp
    );
    let (server_cpu0, own_cpu0) = (proc.map_or(0.0, |p| p.cpu_secs()), Proc(None).cpu_secs());
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.net.concurrency.max(1))
        .map(|_| {
            let (queue, ep, sources) = (queue.clone(), ep.clone(), args.net.sources);
            tokio::spawn(async move {
                let mut done = Opened::default();
                loop {
                    let Some((n, key)) = queue.lock().expect("queue lock").pop_front() else {
                        break;
                    };
                    let t = Instant::now();
                    match connect_authenticated(transport, &ep, source(n, sources), &key).await {
                        Ok((conn, _engine)) => {
                            done.opened += 1;
                            done.latencies_ms.push(t.elapsed().as_secs_f32() * 1000.0);
                            drop(conn);
                        }
                        Err(e) => {
                            done.failed += 1;
                            done.first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
                done
            })
        })
        .collect();
    let all = async {
        let mut total = Opened::default();
        for t in tasks {
            let o = t.await?;
            total.opened += o.opened;
            total.failed += o.failed;
            total.first_error = total.first_error.or(o.first_error);
            total.latencies_ms.extend(o.latencies_ms);
        }
        anyhow::Ok(total)
    };
    let total = tokio::time::timeout(Duration::from_secs(args.timeout), all)
        .await
        .map_err(|_| anyhow!("the handshakes took longer than {} s", args.timeout))??;
    let elapsed = started.elapsed();
    let server_cpu = proc.map_or(0.0, |p| p.cpu_secs()) - server_cpu0;
    let generator_cpu = Proc(None).cpu_secs() - own_cpu0;
    drop(server);
    let us = if total.opened > 0 {
        server_cpu * 1e6 / total.opened as f64
    } else {
        0.0
    };
    let report = HandshakeReport {
        transport: match transport {
            Transport::Tcp => "tcp",
            Transport::Ws => "ws",
        },
        count: args.count,
        concurrency: args.net.concurrency,
        sources: args.net.sources,
        completed: total.opened,
        failed: total.failed,
        first_error: total.first_error,
        seconds: elapsed.as_secs_f64(),
        per_sec: rate(total.opened, elapsed),
        latency: latency_of(&total.latencies_ms),
        server_cpu_secs: server_cpu,
        server_cpu_us_per_handshake: us,
        per_core_projection: if us > 0.0 { 1e6 / us } else { 0.0 },
        generator_cpu_secs: generator_cpu,
    };
    crate::finish(
        args.json,
        &report,
        |r| r.summary(),
        report.failed == 0,
        "some handshakes failed (see above)",
    )
}
