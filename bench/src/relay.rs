//! Relay throughput: P sender/receiver pairs logged in on one flexim server over TCP or
//! WebSocket, each sender writing M messages without an id (the plain relay path: the server
//! answers each with Status RELAYED and keeps nothing) with at most W on their way, against a
//! plain byte forwarder driven by the same load in the same run (`forwarder.rs`). With `--ids`,
//! the same server then takes the same load on the path real clients use (every message with
//! an id, acknowledged in batches, receipted), and the report compares the two. How the load
//! generator stays cheap is in `load/`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use flexim_client::Identity;
use flexim_client::protocol::e2e::MAX_PLAINTEXT;
use serde::Serialize;

use crate::forwarder::Forwarder;
use crate::load::{self, Conn, Load, Outcome, Pair, Template};
use crate::server;

/// `--max-unacked` of the server in ids mode (see [`run`]).
const UNACKED_FOR_IDS: &str = "16384";

/// The transport to measure.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Raw TCP (the `\xa4FLEX` header, then frames back to back).
    Tcp,
    /// WebSocket (`/ws`, one frame per binary message).
    Ws,
}

/// Options of `relay`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The transport, for the server and the forwarder alike.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Sender/receiver pairs.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Messages per sender (the default takes a few seconds per system in a release build).
    #[arg(long, default_value_t = 80_000)]
    messages: u64,
    /// Plaintext bytes per message (sealed once per pair, so the frame is larger).
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Messages a pair may have on their way (sent, not yet received).
    #[arg(long, default_value_t = 64)]
    window: u64,
    /// Total messages per second to offer, spread evenly over the pairs (paced); without it,
    /// every sender goes as fast as its window allows (saturation).
    #[arg(long)]
    rate: Option<f64>,
    /// Also measure the byte forwarder with the same load (the default).
    #[arg(long, overrides_with = "no_baseline")]
    baseline: bool,
    /// Measure the flexim server only.
    #[arg(long, overrides_with = "baseline")]
    no_baseline: bool,
    /// The flexim-server binary to start (default: the one next to this tool).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where the started server keeps its data (a fresh directory, removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    data: PathBuf,
    /// Give up on a system after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Print the figures as one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Then measure the path real clients use on the same server: every message with an id,
    /// each receiver acknowledging what it read in batches (one ACK per read round, at most
    /// 256 ids), each sender counting receipts; fails unless every message is receipted. The
    /// forwarder is left out then unless `--baseline` is given.
    #[arg(long)]
    ids: bool,
}

/// The ids path against the plain one, same server process, same load.
#[derive(Debug, Serialize)]
pub struct IdsReport {
    /// The flexim server's figures with ids.
    pub relay: Outcome,
    /// CPU seconds the server used during the ids run.
    pub server_cpu_s: Option<f64>,
    /// CPU seconds this process used during the ids run.
    pub generator_cpu_s: Option<f64>,
    /// Throughput with ids divided by the plain relay's.
    pub throughput_ratio: f64,
    /// Server CPU per delivered message, plain path, in microseconds.
    pub plain_server_us_per_message: Option<f64>,
    /// Server CPU per delivered message, ids path, in microseconds.
    pub ids_server_us_per_message: Option<f64>,
}

/// Everything measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The transport.
    pub transport: Transport,
    /// Pairs.
    pub pairs: usize,
    /// Messages per sender.
    pub messages_per_pair: u64,
    /// Plaintext bytes per message.
    pub size: usize,
    /// Bytes per frame on the wire (prefix and msgpack body, without WebSocket framing).
    pub frame_bytes: usize,
    /// Window per pair.
    pub window: u64,
    /// The offered rate (messages per second in total), when paced.
    pub rate: Option<f64>,
    /// The flexim server's figures.
    pub relay: Outcome,
    /// The forwarder's figures, unless `--no-baseline`.
    pub forwarder: Option<Outcome>,
    /// Relay throughput divided by the forwarder's.
    pub throughput_ratio: Option<f64>,
    /// Relay p99 latency divided by the forwarder's.
    pub p99_ratio: Option<f64>,
    /// CPU seconds the flexim server process used during its run (from `/proc`; Linux only).
    pub relay_server_cpu_s: Option<f64>,
    /// CPU seconds this process (the load generator) used during the relay's run.
    pub relay_generator_cpu_s: Option<f64>,
    /// CPU seconds this process (the load generator and the forwarder together) used during
    /// the forwarder's run.
    pub forwarder_process_cpu_s: Option<f64>,
    /// The crypto forwarder's figures (the same load over the Noise link, each record opened
    /// and sealed again by the forwarder), unless `--no-baseline`: what the link must cost.
    pub crypto_forwarder: Option<Outcome>,
    /// Relay throughput divided by the crypto forwarder's.
    pub crypto_throughput_ratio: Option<f64>,
    /// Relay p99 latency divided by the crypto forwarder's.
    pub crypto_p99_ratio: Option<f64>,
    /// CPU seconds this process used during the crypto forwarder's run.
    pub crypto_forwarder_process_cpu_s: Option<f64>,
    /// The ids path, with `--ids`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<IdsReport>,
}

/// CPU time (user and system) a process has used so far, in seconds, from
/// `/proc/PID/stat`; `None` where there is no such file.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start with the state, field 3;
    // utime and stime are fields 14 and 15, in clock ticks of 1/100 s on Linux.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The CPU seconds `pid` used while `f` ran.
async fn cpu_during<T>(pid: &str, f: impl Future<Output = T>) -> (T, Option<f64>) {
    let before = cpu_seconds(pid);
    let out = f.await;
    let used = cpu_seconds(pid).zip(before).map(|(a, b)| a - b);
    (out, used)
}

impl Report {
    /// The human summary.
    fn summary(&self) -> String {
        let line = |name: &str, o: &Outcome| {
            format!(
                "{name:<9} delivered {} in {:.2} s: {:.0} msg/s; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms\n\
                 {:<9} lost {}, unsent {}, misrouted {}, out of order {}, refused {}, garbled {}, timed-out pairs {}, failed pairs {}{}",
                o.delivered,
                o.elapsed_s,
                o.msgs_per_sec,
                o.latency.p50_ms,
                o.latency.p99_ms,
                o.latency.max_ms,
                "",
                o.lost,
                o.unsent,
                o.misrouted,
                o.out_of_order,
                o.refused,
                o.garbled,
                o.timed_out_pairs,
                o.failed_pairs,
                match (name, o.receipts) {
                    ("forwarder" | "crypto fw", _) => String::new(),
                    (_, Some(r)) => format!(", RELAYED answers {}, receipted {r}", o.relayed),
                    (_, None) => format!(", RELAYED answers {}", o.relayed),
                },
            )
        };
        let mut s = format!(
            "relay over {:?}: {} pairs x {} messages of {} B ({} B frames), window {}{}\n",
            self.transport,
            self.pairs,
            self.messages_per_pair,
            self.size,
            self.frame_bytes,
            self.window,
            match self.rate {
                Some(r) => format!(", offered {r:.0} msg/s"),
                None => ", unpaced".to_string(),
            }
        );
        s += &line("relay", &self.relay);
        if let (Some(server), Some(generator)) =
            (self.relay_server_cpu_s, self.relay_generator_cpu_s)
        {
            s += &format!(
                "\n{:<9} CPU: server {server:.2} s, load generator {generator:.2} s",
                ""
            );
        }
        if let Some(f) = &self.forwarder {
            s += "\n";
            s += &line("forwarder", f);
            if let Some(cpu) = self.forwarder_process_cpu_s {
                s += &format!("\n{:<9} CPU: forwarder and load generator {cpu:.2} s", "");
            }
        }
        if let (Some(t), Some(p)) = (self.throughput_ratio, self.p99_ratio) {
            s += &format!("\nrelay/forwarder: throughput {t:.2}, p99 latency {p:.2}");
        }
        if let Some(f) = &self.crypto_forwarder {
            s += "\n";
            s += &line("crypto fw", f);
            if let Some(cpu) = self.crypto_forwarder_process_cpu_s {
                s += &format!("\n{:<9} CPU: forwarder and load generator {cpu:.2} s", "");
            }
        }
        if let (Some(t), Some(p)) = (self.crypto_throughput_ratio, self.crypto_p99_ratio) {
            s += &format!("\nrelay/crypto forwarder: throughput {t:.2}, p99 latency {p:.2}");
        }
        if let Some(ids) = &self.ids {
            s += "\n";
            s += &line("ids", &ids.relay);
            if let (Some(server), Some(generator)) = (ids.server_cpu_s, ids.generator_cpu_s) {
                s += &format!(
                    "\n{:<9} CPU: server {server:.2} s, load generator {generator:.2} s",
                    ""
                );
            }
            s += &format!("\nids/plain: throughput {:.2}", ids.throughput_ratio);
            if let (Some(p), Some(i)) = (
                ids.plain_server_us_per_message,
                ids.ids_server_us_per_message,
            ) {
                s += &format!(
                    ", server CPU per message {i:.2} us with ids, {p:.2} us plain ({:.2}x)",
                    i / p
                );
            }
        }
        s
    }
}

/// One load through the flexim server.
struct Measured {
    /// The figures.
    outcome: Outcome,
    /// The server's CPU seconds during the load.
    server_cpu: Option<f64>,
    /// This process's CPU seconds during the load.
    generator_cpu: Option<f64>,
    /// Each pair's frame, `from` and `to`, for the forwarder.
    templates: Vec<(Template, String, String)>,
}

/// Server CPU per delivered message in microseconds.
fn per_message(cpu: Option<f64>, o: &Outcome) -> Option<f64> {
    cpu.filter(|_| o.delivered > 0)
        .map(|c| c / o.delivered as f64 * 1e6)
}

/// A connection to `addr` (`ws://...` or HOST:PORT), nothing sent yet.
async fn open(addr: &str) -> anyhow::Result<Conn> {
    if addr.starts_with("ws://") {
        Conn::open_ws(addr, None, false).await
    } else {
        let at = addr
            .parse()
            .with_context(|| format!("the address {addr}"))?;
        Conn::open_tcp(at, None, flexim_testkit::LARGE_READS).await
    }
}

/// Logs `pairs` new pairs in at `addr` and runs the load through the server (messages with
/// ids when `ids`).
async fn through_server(
    target: &server::Target,
    addr: &str,
    pairs: usize,
    text: &str,
    ids: bool,
    load: &Load,
) -> anyhow::Result<Measured> {
    let mut relay_pairs = Vec::new();
    let mut templates = Vec::new();
    for _ in 0..pairs {
        let (s_id, r_id) = (Identity::generate()?, Identity::generate()?);
        let mut sender = open(addr).await?;
        let mut engine = sender.engine(&s_id.0);
        sender
            .login_with(&mut engine)
            .await
            .with_context(|| format!("logging in at {addr}"))?;
        sender.adopt_link(engine.take_link());
        let mut receiver = open(addr).await?;
        receiver
            .login(&r_id.0)
            .await
            .with_context(|| format!("logging in at {addr}"))?;
        // The pair are contacts (docs/PROTOCOL.md §14): the receiver accepted the sender.
        receiver.befriend(&s_id.public_key()).await?;
        let sealed = engine.seal(&r_id.public_key(), text, &[], 0, None)?;
        let template = Template::new(&sealed, ids)?;
        templates.push((template.clone(), sealed.from.clone(), sealed.to.clone()));
        relay_pairs.push(Pair {
            sender,
            receiver,
            template,
            from: sealed.from,
            to: sealed.to,
            answers: true,
        });
    }
    eprintln!(
        "relay: {} pairs x {} messages ({} B frames{}) through flexim-server ...",
        pairs,
        load.messages,
        templates[0].0.len(),
        if ids { ", with ids" } else { "" }
    );
    let server_pid = target.pid().map(|p| p.to_string()).unwrap_or_default();
    let before = cpu_seconds(&server_pid);
    let (outcome, generator_cpu) = cpu_during("self", load::run(relay_pairs, load)).await;
    let server_cpu = cpu_seconds(&server_pid).zip(before).map(|(a, b)| a - b);
    Ok(Measured {
        outcome: outcome?,
        server_cpu,
        generator_cpu,
        templates,
    })
}

/// The same load through the byte forwarder (the same frames, no handshake, no answers), or
/// with `linked` through the crypto forwarder (the same frames in records of the Noise link,
/// opened and sealed again by the forwarder).
async fn through_forwarder(
    websocket: bool,
    linked: bool,
    templates: Vec<(Template, String, String)>,
    load: &Load,
) -> anyhow::Result<(Outcome, Option<f64>)> {
    let fwd = Forwarder::start(websocket, linked).await?;
    let mut fwd_pairs = Vec::new();
    for (i, (template, from, to)) in templates.into_iter().enumerate() {
        let (sender, receiver) = fwd.connect_pair(i as u32).await?;
        fwd_pairs.push(Pair {
            sender,
            receiver,
            template,
            from,
            to,
            answers: false,
        });
    }
    eprintln!(
        "relay: the same load through the {} forwarder at {} ...",
        if linked { "crypto" } else { "byte" },
        fwd.addr
    );
    let (outcome, cpu) = cpu_during("self", load::run(fwd_pairs, load)).await;
    drop(fwd);
    Ok((outcome?, cpu))
}

/// Runs the measurement.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let load = Load {
        messages: args.messages.max(1),
        window: args.window.max(1),
        rate_per_pair: args
            .rate
            .filter(|r| *r > 0.0)
            .map(|r| r / args.pairs.max(1) as f64),
        timeout: Duration::from_secs(args.timeout),
    };
    let pairs = args.pairs.max(1);
    let text = "x".repeat(args.size.clamp(1, MAX_PLAINTEXT));
    let websocket = args.transport == Transport::Ws;

    // The flexim server: real logins, one message sealed per pair. In ids mode it may hold more
    // unacknowledged messages per session than its default: once most pairs have finished,
    // the last ones run at tens of thousands of messages per second each, and a stall of a few
    // tens of milliseconds on two busy cores (the server's and this tool's threads taking turns)
    // lets over a thousand be relayed before the receiver's ACKs for them are read. The default
    // limit would then, by its rule, close the receiver as one that does not acknowledge; this
    // measures throughput, not that limit (tests/e2e/delivery.rs tests it).
    let extra: &[&str] = if args.ids {
        &["--max-unacked", UNACKED_FOR_IDS]
    } else {
        &[]
    };
    let target = server::Target::spawn(args.server_bin.as_deref(), &args.data, extra)?;
    let addr = if websocket {
        target
            .ws
            .clone()
            .context("the server did not print its WebSocket URL")?
    } else {
        target.tcp.clone()
    };
    eprintln!(
        "relay: logging in {} pairs at {addr} (server pid {}) ...",
        pairs,
        target.pid().unwrap_or(0)
    );
    let plain = through_server(&target, &addr, pairs, &text, false, &load).await?;
    let ids = match args.ids {
        true => Some(through_server(&target, &addr, pairs, &text, true, &load).await?),
        false => None,
    };
    drop(target);

    // `--baseline` and `--no-baseline` override each other: the last one given wins. With
    // `--ids` the forwarder runs only when asked for.
    let wanted = if args.ids {
        args.baseline
    } else {
        args.baseline || !args.no_baseline
    };
    let mut baselines = [None, None];
    if wanted {
        for (linked, slot) in [false, true].into_iter().zip(&mut baselines) {
            let t = plain.templates.clone();
            *slot = Some(through_forwarder(websocket, linked, t, &load).await?);
        }
    }
    let [byte, crypto] = baselines;
    let report = report(&args, &load, &text, plain, ids, byte, crypto);
    let correct = report.relay.correct(true)
        && report.ids.as_ref().is_none_or(|i| i.relay.correct(true))
        && report.forwarder.as_ref().is_none_or(|f| f.correct(false))
        && report
            .crypto_forwarder
            .as_ref()
            .is_none_or(|f| f.correct(false));
    crate::finish(
        args.json,
        &report,
        Report::summary,
        correct,
        "messages were lost, misrouted, refused, out of order or not receipted, or not all sent in time (see above)",
    )
}

/// The report of a run.
fn report(
    args: &Args,
    load: &Load,
    text: &str,
    plain: Measured,
    ids: Option<Measured>,
    byte: Option<(Outcome, Option<f64>)>,
    crypto: Option<(Outcome, Option<f64>)>,
) -> Report {
    let relay = plain.outcome;
    let (forwarder, forwarder_cpu) = byte.map_or((None, None), |(o, c)| (Some(o), c));
    let (crypto_forwarder, crypto_cpu) = crypto.map_or((None, None), |(o, c)| (Some(o), c));
    let ratio_to = |base: &Option<Outcome>, f: fn(&Outcome) -> f64| {
        base.as_ref()
            .and_then(|fw| (f(fw) > 0.0).then(|| f(&relay) / f(fw)))
    };
    let ratio = |f: fn(&Outcome) -> f64| ratio_to(&forwarder, f);
    let ids = ids.map(|m| IdsReport {
        throughput_ratio: m.outcome.msgs_per_sec / relay.msgs_per_sec.max(f64::MIN_POSITIVE),
        plain_server_us_per_message: per_message(plain.server_cpu, &relay),
        ids_server_us_per_message: per_message(m.server_cpu, &m.outcome),
        relay: m.outcome,
        server_cpu_s: m.server_cpu,
        generator_cpu_s: m.generator_cpu,
    });
    Report {
        transport: args.transport,
        pairs: args.pairs.max(1),
        messages_per_pair: load.messages,
        size: text.len(),
        frame_bytes: plain.templates[0].0.len(),
        window: load.window,
        rate: args.rate,
        throughput_ratio: ratio(|o| o.msgs_per_sec),
        p99_ratio: ratio(|o| o.latency.p99_ms),
        crypto_throughput_ratio: ratio_to(&crypto_forwarder, |o| o.msgs_per_sec),
        crypto_p99_ratio: ratio_to(&crypto_forwarder, |o| o.latency.p99_ms),
        relay,
        forwarder,
        relay_server_cpu_s: plain.server_cpu,
        relay_generator_cpu_s: plain.generator_cpu,
        forwarder_process_cpu_s: forwarder_cpu,
        crypto_forwarder,
        crypto_forwarder_process_cpu_s: crypto_cpu,
        ids,
    }
}
