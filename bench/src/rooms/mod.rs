//! `rooms`: room fan-out through a real `flexim-server` process. For each room size, one
//! sender (the room's admin) and every other member on a TCP connection of its own; the room
//! is formed through the protocol with real MLS commits and Welcomes ([`form`]), then the
//! sender writes M real MLS application messages (sealed with `flexim_mls::Member::seal`)
//! with ids, each member acknowledges its copies, and the sender counts a receipt per member
//! and message ([`fanout`]). As the baseline, in the same run and through the same server,
//! the same number of 1:1 deliveries: one sender, one receiver, the messages with ids
//! (`load/`, as `relay --ids` runs them).

mod fanout;
mod form;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flexim_client::Identity;
use flexim_client::protocol::link::MAX_LINKED_BODY;
use flexim_client::protocol::{Datum, Message};
use flexim_testkit::Conn;
use serde::Serialize;

use crate::idle::procfs::Proc;
use crate::load::{self, Histogram, Load, Outcome, Pair, Template};
use crate::server;
use crate::stats::Latency;
use fanout::Shared;
use form::{Admin, Formed, hex};

/// The server's default body limit (`--max-body`, 48 KiB).
const DEFAULT_MAX_BODY: usize = 48 * 1024;

/// The 1:1 baseline's largest window.
const BASELINE_WINDOW: u64 = 4096;

/// `--max-unacked` of the server: as `relay --ids` does (see there), room for a receiver whose
/// ACKs lag behind a burst on two busy cores, which the default (1024) would close as a slow
/// reader; this measures throughput, not that limit.
const MAX_UNACKED: &str = "16384";

/// Options of `rooms`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Room sizes (members, the sender included; at least 2 each), comma-separated. A room
    /// that cannot grow that large through the protocol is measured at the size it reached.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    sizes: Vec<usize>,
    /// Copies to deliver in each room: the sender sends this many divided by the room's other
    /// members (rounded up), so that every room and its 1:1 baseline carry about as many
    /// deliveries whatever its size.
    #[arg(long, default_value_t = 24_000)]
    copies: u64,
    /// Messages to send to each room instead (the baseline then carries as many as the
    /// members received copies).
    #[arg(long)]
    messages: Option<u64>,
    /// Messages the sender may have on their way (not yet receipted by every member); the
    /// 1:1 baseline gets this many times the room's receivers, the same copies in flight
    /// (at most 4096).
    #[arg(long, default_value_t = 4)]
    window: u64,
    /// Plaintext bytes per message.
    #[arg(long, default_value_t = 600)]
    size: usize,
    /// The server's largest datum body (`--max-body`; default: the server's own, 48 KiB):
    /// commits and their Welcomes must fit in it, so it bounds how large a room can grow.
    #[arg(long)]
    max_body: Option<u16>,
    /// The flexim-server binary to start (default: the one next to this tool).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Where the started server keeps its data (a fresh directory, removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    data: PathBuf,
    /// Give up on a room after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Print the figures as one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

/// One room's figures and its baseline's.
#[derive(Debug, Serialize)]
pub struct RoomReport {
    /// How the room was formed (and where it stopped growing, if it did).
    pub formed: Formed,
    /// Members the server lists for the room (MEMBERS).
    pub server_members: usize,
    /// Bytes of one measured message's frame (prefix and msgpack body).
    pub frame_bytes: usize,
    /// Messages sent.
    pub messages: u64,
    /// Copies the members read, in order.
    pub delivered: u64,
    /// Copies expected: messages times members but the sender.
    pub expected: u64,
    /// Receipts the sender read for the measured messages.
    pub receipts: u64,
    /// Answers `3`/`2` the sender read.
    pub answered: u64,
    /// Copies out of order, misrouted, refused or unreadable, on either side.
    pub errors: u64,
    /// From the first send until the last member had read everything, in seconds.
    pub elapsed_s: f64,
    /// Copies delivered per second.
    pub copies_per_sec: f64,
    /// Send-to-receive latency of every copy.
    pub latency: Latency,
    /// Send-to-receipt latency at the sender, per member and message.
    pub receipt_latency: Latency,
    /// The 1:1 baseline: as many deliveries, one sender to one receiver.
    pub baseline: Outcome,
    /// Copies per second divided by the baseline's messages per second.
    pub throughput_ratio: f64,
    /// p99 latency divided by the baseline's.
    pub p99_ratio: f64,
    /// The server's CPU per copy during the room's run, in microseconds (from `/proc`).
    pub server_us_per_copy: f64,
    /// This tool's CPU per copy during the room's run (the sender and every receiver).
    pub generator_us_per_copy: f64,
    /// The server's CPU per message during the baseline's run.
    pub baseline_server_us: f64,
    /// This tool's CPU per message during the baseline's run.
    pub baseline_generator_us: f64,
}

/// CPU seconds of the server and of this tool.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    /// The server process.
    server: Proc,
}

impl Cpu {
    /// The CPU seconds each has used so far.
    fn now(&self) -> (f64, f64) {
        (self.server.cpu_secs(), Proc(None).cpu_secs())
    }

    /// Microseconds of each since `before`, per one of `n`.
    fn per(&self, before: (f64, f64), n: u64) -> (f64, f64) {
        let (server, generator) = self.now();
        let n = n.max(1) as f64;
        (
            (server - before.0) / n * 1e6,
            (generator - before.1) / n * 1e6,
        )
    }
}

impl RoomReport {
    /// Whether every copy and receipt arrived and nothing went wrong, here and in the baseline.
    fn correct(&self) -> bool {
        self.delivered == self.expected
            && self.receipts == self.expected
            && self.answered == self.messages
            && self.errors == 0
            && self.server_members == self.formed.members
            && self.baseline.correct(true)
    }
}

/// Everything measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The datum body limit commits had to fit in.
    pub max_body: usize,
    /// Plaintext bytes per message.
    pub size: usize,
    /// The sender's window.
    pub window: u64,
    /// One entry per size asked.
    pub rooms: Vec<RoomReport>,
}

/// Runs the measurement.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!args.sizes.is_empty(), "--sizes names no size");
    let largest = args.sizes.iter().copied().max().unwrap_or(2).max(2);
    let members = largest.to_string();
    let body = args.max_body.map(|b| b.to_string());
    let mut flags = vec!["--max-room-members", &members, "--max-unacked", MAX_UNACKED];
    if let Some(b) = &body {
        flags.extend(["--max-body", b]);
    }
    let target = server::Target::spawn(args.server_bin.as_deref(), &args.data, &flags)?;
    let max_body = args
        .max_body
        .map_or(DEFAULT_MAX_BODY, usize::from)
        .min(MAX_LINKED_BODY);
    eprintln!(
        "rooms: server at {} (pid {}), rooms of {:?}",
        target.tcp,
        target.pid().unwrap_or(0),
        args.sizes,
    );
    let addr = target.tcp.parse().context("the server's address")?;
    let cpu = Cpu {
        server: Proc(target.pid()),
    };
    let mut rooms = Vec::new();
    for &size in &args.sizes {
        let room = tokio::time::timeout(
            Duration::from_secs(args.timeout),
            measure_room(addr, cpu, size.max(2), max_body, &args),
        )
        .await
        .with_context(|| format!("the room of {size} took over {} s", args.timeout))??;
        rooms.push(room);
    }
    drop(target);
    let report = Report {
        max_body,
        size: args.size,
        window: args.window,
        rooms,
    };
    let correct = report.rooms.iter().all(RoomReport::correct);
    crate::finish(
        args.json,
        &report,
        Report::summary,
        correct,
        "copies or receipts were lost, refused or out of order, or the server's member list differs (see above)",
    )
}

/// Forms a room of `size` members at `addr` and measures its fan-out, then the baseline.
async fn measure_room(
    addr: std::net::SocketAddr,
    cpu: Cpu,
    size: usize,
    max_body: usize,
    args: &Args,
) -> anyhow::Result<RoomReport> {
    let mut admin = Admin::login(addr).await?;
    let invitees = form::invitees(addr, admin.key.public_key(), size - 1).await?;
    // At most one message per copy (a room of two): the largest count any room size needs.
    let most = args.messages.unwrap_or(args.copies).max(1);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        sent_at: (0..most).map(|_| AtomicU64::new(0)).collect(),
        expect: AtomicU64::new(u64::MAX),
        invited: AtomicUsize::new(0),
        finished: AtomicBool::new(false),
        room: hex(&admin.room),
        admin: admin.hex(),
    });
    let keys: Vec<_> = invitees.iter().map(|i| i.key).collect();
    let mut receivers: Vec<_> = invitees
        .into_iter()
        .map(|i| fanout::spawn_receiver(i.conn, shared.clone()))
        .collect();
    eprintln!("rooms: forming a room of {size} with commits ...");
    let formed = admin.form(&keys, max_body).await?;
    if let Some(why) = &formed.stop {
        eprintln!("rooms: the room stopped growing: {why}");
    }
    // Those the room could not take will get nothing: stop them.
    for r in receivers.drain(formed.members - 1..) {
        r.abort();
    }
    let copies = (formed.members - 1) as u64;
    let messages = args
        .messages
        .unwrap_or_else(|| args.copies.div_ceil(copies.max(1)))
        .clamp(1, most);
    shared.expect.store(messages, Ordering::SeqCst);
    wait_for_invitations(&shared, formed.members - 1).await?;
    let server_members = admin.server_members().await?;
    let text = vec![b'x'; args.size.max(1)];
    let frames = seal_all(&mut admin, &shared, &text, messages)?;
    eprintln!(
        "rooms: {} messages to {} members ({} B frames) ...",
        messages,
        copies,
        frames[0].len()
    );
    let before = cpu.now();
    let sent = fanout::send(&mut admin.conn, &frames, &shared, copies, args.window).await;
    shared.finished.store(true, Ordering::SeqCst);
    let sent = sent?;
    let mut latency = Histogram::default();
    let (mut delivered, mut errors, mut last) = (0, sent.refused + sent.garbled, None);
    for r in receivers {
        let seen = r.await.context("a receiver panicked")??;
        delivered += seen.delivered;
        errors += seen.out_of_order + seen.misrouted + seen.refused + seen.garbled;
        latency.merge(&seen.latency);
        last = last.max(seen.finished);
    }
    let (server_us_per_copy, generator_us_per_copy) = cpu.per(before, delivered);
    let started = sent.started.context("nothing was sent")?;
    let elapsed = last.map_or(Duration::ZERO, |l| l - started).as_secs_f64();
    drop(admin);
    // As many copies in flight as the room had, but within the server's default of 1024
    // unacknowledged messages per session, past which it would close the receiver.
    let window = (args.window * copies.max(1)).min(BASELINE_WINDOW);
    let (baseline, (baseline_server_us, baseline_generator_us)) =
        one_to_one(addr, cpu, &text, messages * copies, window, args).await?;
    let copies_per_sec = delivered as f64 / elapsed.max(1e-9);
    let latency = latency.latency();
    Ok(RoomReport {
        server_members,
        frame_bytes: frames[0].len(),
        messages,
        delivered,
        expected: messages * copies,
        receipts: sent.receipts,
        answered: sent.answered,
        errors,
        elapsed_s: elapsed,
        copies_per_sec,
        throughput_ratio: copies_per_sec / baseline.msgs_per_sec.max(f64::MIN_POSITIVE),
        p99_ratio: latency.p99_ms / baseline.latency.p99_ms.max(f64::MIN_POSITIVE),
        latency,
        server_us_per_copy,
        generator_us_per_copy,
        baseline_server_us,
        baseline_generator_us,
        receipt_latency: sent.receipt_latency.latency(),
        baseline,
        formed,
    })
}

/// Waits until `n` receivers have read their invitation, and a moment more for their
/// acceptances to reach the server.
async fn wait_for_invitations(shared: &Shared, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.invited.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} members read their invitation",
                shared.invited.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

/// Seals `count` application messages of the room with MLS and builds their frames: `date`
/// the sequence number, `id` the sequence number in 32 hex digits.
fn seal_all(
    admin: &mut Admin,
    shared: &Shared,
    text: &[u8],
    count: u64,
) -> anyhow::Result<Vec<Vec<u8>>> {
    (0..count)
        .map(|seq| {
            let sealed = admin.member.seal(admin.room, text)?;
            let message = Message {
                to: shared.room.clone(),
                from: shared.admin.clone(),
                date: seq as i64,
                msg: STANDARD.encode(sealed),
                id: Some(format!("{seq:032x}")),
                ..Default::default()
            };
            Ok(Datum::Message(message).to_frame()?)
        })
        .collect()
}

/// The baseline: `messages` 1:1 messages with ids from one new user to another (contacts),
/// at most `window` on their way, through the same server; with the server's and this tool's
/// CPU per message during the load.
async fn one_to_one(
    addr: std::net::SocketAddr,
    cpu: Cpu,
    text: &[u8],
    messages: u64,
    window: u64,
    args: &Args,
) -> anyhow::Result<(Outcome, (f64, f64))> {
    let (s_id, r_id) = (Identity::generate()?, Identity::generate()?);
    let mut sender = Conn::open_tcp(addr, None, flexim_testkit::LARGE_READS).await?;
    let mut engine = sender.engine(&s_id.0);
    sender.login_with(&mut engine).await?;
    sender.adopt_link(engine.take_link());
    let mut receiver = Conn::open_tcp(addr, None, flexim_testkit::LARGE_READS).await?;
    receiver.login(&r_id.0).await?;
    receiver.befriend(&s_id.public_key()).await?;
    let text = String::from_utf8_lossy(text);
    let sealed = engine.seal(&r_id.public_key(), &text, &[], 0, None)?;
    let template = Template::new(&sealed, true)?;
    eprintln!(
        "rooms: baseline: {messages} 1:1 messages ({} B frames), window {window} ...",
        template.len()
    );
    let pair = Pair {
        sender,
        receiver,
        template,
        from: sealed.from,
        to: sealed.to,
        answers: true,
    };
    let load = Load {
        messages: messages.max(1),
        window,
        rate_per_pair: None,
        timeout: Duration::from_secs(args.timeout),
    };
    let before = cpu.now();
    let outcome = load::run(vec![pair], &load).await?;
    let per = cpu.per(before, outcome.delivered);
    Ok((outcome, per))
}

impl Report {
    /// The human summary: one block per room, then a table of ratios.
    fn summary(&self) -> String {
        let mut s = format!(
            "rooms: one sender, {} B messages (MLS, with ids, ACKed, receipted), window {}; datum limit {} B\n",
            self.size, self.window, self.max_body
        );
        let first = self.rooms.first();
        for r in &self.rooms {
            let f = &r.formed;
            s += &format!(
                "room of {} (wanted {}; server lists {}): formed with {} commits in {:.1} s, largest commit datum {} B{}\n",
                f.members,
                f.wanted,
                r.server_members,
                f.commits,
                f.seconds,
                f.largest_datum,
                f.stop
                    .as_ref()
                    .map_or(String::new(), |w| format!("\n  STOPPED GROWING: {w}")),
            );
            s += &format!(
                "  room: {} messages ({} B frames) -> {} of {} copies, {} receipts, in {:.2} s: {:.0} copies/s ({:.0} msg/s); latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; receipt p99 {:.2} ms; errors {}\n",
                r.messages,
                r.frame_bytes,
                r.delivered,
                r.expected,
                r.receipts,
                r.elapsed_s,
                r.copies_per_sec,
                r.copies_per_sec / (f.members.max(2) - 1) as f64,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.latency.max_ms,
                r.receipt_latency.p99_ms,
                r.errors
            );
            let b = &r.baseline;
            s += &format!(
                "  1:1:  {} messages in {:.2} s: {:.0} msg/s; latency p50 {:.2} ms, p99 {:.2} ms; receipted {}\n",
                b.delivered,
                b.elapsed_s,
                b.msgs_per_sec,
                b.latency.p50_ms,
                b.latency.p99_ms,
                b.receipts.unwrap_or(0)
            );
            s += &format!(
                "  CPU per delivery: server {:.2} us in the room, {:.2} us 1:1; load generator {:.2} / {:.2} us\n",
                r.server_us_per_copy,
                r.baseline_server_us,
                r.generator_us_per_copy,
                r.baseline_generator_us
            );
            s += &format!(
                "  room/1:1: throughput {:.2}, p99 latency {:.2}, server CPU per delivery {:.2}",
                r.throughput_ratio,
                r.p99_ratio,
                r.server_us_per_copy / r.baseline_server_us.max(f64::MIN_POSITIVE)
            );
            if let Some(first) = first {
                s += &format!(
                    "; room/room of {}: throughput {:.2}, p99 latency {:.2}",
                    first.formed.members,
                    r.copies_per_sec / first.copies_per_sec.max(f64::MIN_POSITIVE),
                    r.latency.p99_ms / first.latency.p99_ms.max(f64::MIN_POSITIVE)
                );
            }
            s += "\n";
        }
        s.trim_end().to_string()
    }
}
