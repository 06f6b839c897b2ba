//! `flexim-bench soak`: legitimate traffic under abuse and faults.
//!
//! One run, two phases of the same length with the same legitimate load on the same server:
//! phase A the load alone (the baseline), phase B the load while abusers flood, stall,
//! slowloris and reconnect-storm the server and the tool kills it (and Redis) now and then.
//! Then the legitimate senders stop writing, and the run waits (bounded) until every message
//! they wrote has arrived and been confirmed. It reports the legitimate throughput and latency
//! of both phases and their ratio, the messages the server confirmed that never arrived (which
//! must be none: the tool fails otherwise), and what each abuser got from the server.
//!
//! The pieces: `legit.rs` the legitimate pairs, `ledger.rs` the book they keep, `flood.rs`,
//! `stall.rs`, `slowloris.rs` and `storm.rs` the abusers (`abuse.rs` starts them and holds
//! what they share),
//! `faults.rs` the kills, `tally.rs` the counting, `report.rs` the figures, and `rules.rs`
//! everything the soak assumes about the server.

mod abuse;
mod abuser;
mod faults;
mod flood;
mod ledger;
mod legit;
mod report;
mod rules;
mod slowloris;
mod stall;
mod storm;
mod tally;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use flexim_client::protocol::PublicKey;
use flexim_client::protocol::e2e::MAX_PLAINTEXT;
use flexim_client::{Client, Identity};
use flexim_testkit::{RedisServer, TestServer};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::idle::procfs::Proc;
use abuse::AbuseRun;
use abuser::Lives;
use faults::{Outage, Processes};
use ledger::Ledger;
use legit::{Shared, StageTallies};
use report::{Drain, Machine, Phase, Report, Settings};
use tally::{AbuserReport, Tally};

/// How long the tasks get to stop by themselves once told to, before they are aborted (a
/// login in progress may take up to the client's connect timeout).
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Where the run is; every task watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Phase A: the legitimate load alone.
    Baseline,
    /// Phase B: the load, the abusers and the faults.
    Abuse,
    /// After phase B: no new legitimate messages; the last ones arrive and are confirmed.
    Drain,
    /// Everything stops.
    Close,
}

/// An abuser of phase B.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abuse {
    /// Keys sending as fast as they are answered, to the legitimate recipients and to sinks.
    Flood,
    /// Recipients that log in and never read, with senders writing to them.
    Stall,
    /// Slow TCP headers, half HTTP heads, unfinished and silent WebSocket upgrades.
    Slowloris,
    /// Connect, handshake, disconnect in a tight loop.
    Storm,
    /// No abuser (faults only, or a second baseline).
    None,
}

/// Where the server keeps its data.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// The embedded store, a file in the server's data directory.
    Embedded,
    /// A redis-server this tool starts (append-only file, fsync on every write).
    Redis,
}

/// Options of `soak`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds of each phase (A, the baseline, then B, the abuse).
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Legitimate sender/recipient pairs (half TCP to WebSocket, half WebSocket to TCP).
    #[arg(long, default_value_t = 8)]
    pairs: usize,
    /// Messages per second each legitimate pair writes.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Messages a legitimate pair may have on their way (written, not yet received).
    #[arg(long, default_value_t = 256)]
    window: u64,
    /// Plaintext bytes per message.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// The abusers of phase B, comma-separated (`none` for none).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "flood,stall,slowloris,storm"
    )]
    abuse: Vec<Abuse>,
    /// Kill the server with SIGKILL every this many seconds of phase B, and start it again on
    /// its data and ports (0: never; none later than 2 s before the phase ends). The default
    /// kills once in a 20-second phase, away from the 5- and 10-second deadlines slowloris
    /// meets (a kill at the same moment would end those connections first).
    #[arg(long, default_value_t = 12)]
    kill_every: u64,
    /// The store: `embedded`, or `redis` on a redis-server this tool starts.
    #[arg(long, value_enum, default_value_t = Store::Embedded)]
    store: Store,
    /// With `--store redis`: restart redis-server (SIGKILL, then start on its data) every this
    /// many seconds of phase B, the first after half of it (0: never).
    #[arg(long, default_value_t = 10)]
    redis_restart_every: u64,
    /// Flood keys.
    #[arg(long, default_value_t = 4)]
    flood_keys: usize,
    /// Messages each flood key keeps unanswered.
    #[arg(long, default_value_t = 64)]
    flood_window: usize,
    /// Sink keys the flood also writes to (logged in once, never again: their queues fill).
    #[arg(long, default_value_t = 4)]
    sinks: usize,
    /// Stalled recipients (log in, never read).
    #[arg(long, default_value_t = 4)]
    stall_keys: usize,
    /// Senders writing to the stalled recipients.
    #[arg(long, default_value_t = 2)]
    stall_senders: usize,
    /// Messages per second each stall sender writes (the default gives each stalled recipient
    /// 500 a second: over the server's 1,024 unacknowledged messages per session in about
    /// two seconds).
    #[arg(long, default_value_t = 1000.0)]
    stall_rate: f64,
    /// Seconds a stalled recipient holds its connection without reading before it looks and
    /// logs in again.
    #[arg(long, default_value_t = 5)]
    stall_hold: u64,
    /// Slow connections held at once per slowloris kind (four kinds).
    #[arg(long, default_value_t = 8)]
    slowloris: usize,
    /// Reconnect storm tasks (each logs in and out again at once, in a loop).
    #[arg(long, default_value_t = 8)]
    storm: usize,
    /// Seconds to wait after phase B for every legitimate message to arrive and be confirmed.
    #[arg(long, default_value_t = 60)]
    drain: u64,
    /// Fail unless B's legitimate throughput is at least this fraction of A's (0, the default:
    /// reported, not enforced, so that a brief run on a busy machine checks delivery only).
    #[arg(long, default_value_t = 0.0)]
    min_ratio: f64,
    /// A flag for the server (repeatable), e.g. `--server-arg=--max-unacked=4096`: the same
    /// settings for both phases.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// The flexim-server binary to start (default: the one next to this tool).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The redis-server binary, with `--store redis`.
    #[arg(long, default_value = "redis-server")]
    redis_bin: PathBuf,
    /// Where the server (and Redis) keep their data (fresh directories, removed afterwards).
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    data: PathBuf,
    /// Print the figures as one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
}

impl Args {
    /// The abusers asked for, without `none` and repeats.
    fn abusers(&self) -> Vec<Abuse> {
        let mut a: Vec<Abuse> = Vec::new();
        for x in &self.abuse {
            if *x != Abuse::None && !a.contains(x) {
                a.push(*x);
            }
        }
        a
    }

    fn settings(&self) -> Settings {
        let name = |a: &Abuse| match a {
            Abuse::Flood => "flood",
            Abuse::Stall => "stall",
            Abuse::Slowloris => "slowloris",
            Abuse::Storm => "storm",
            Abuse::None => "none",
        };
        let redis = self.store == Store::Redis;
        Settings {
            store: if redis { "redis" } else { "embedded" },
            pairs: self.pairs,
            rate_per_pair: self.rate,
            window: self.window,
            size: self.size,
            phase_s: self.secs as f64,
            abuse: self.abusers().iter().map(name).collect(),
            kill_every_s: self.kill_every as f64,
            redis_restart_every_s: if redis {
                self.redis_restart_every as f64
            } else {
                0.0
            },
            server_args: self.server_args.clone(),
        }
    }
}

/// Where the server listens (the same ports across restarts).
#[derive(Debug, Clone)]
struct Ends {
    /// FLEX over TCP.
    tcp: SocketAddr,
    /// The WebSocket URL.
    ws: String,
    /// The HTTP listener.
    http: SocketAddr,
}

/// One legitimate pair, logged in.
struct Pair {
    /// The sender's client.
    sender: Client,
    /// The recipient's client.
    recipient: Client,
    /// The sender's key, which the recipient checks.
    from: PublicKey,
    /// The recipient's key, which the sender writes to.
    to: PublicKey,
}

/// Runs the soak.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.pairs == 0 || args.rate <= 0.0 || args.secs == 0 {
        anyhow::bail!("--pairs, --rate and --secs must be positive");
    }
    let load_before = load_average();
    let (server, redis) = start_processes(&args)?;
    let ends = Ends {
        tcp: server.tcp,
        ws: server.ws.clone(),
        http: server
            .http_addr()
            .parse()
            .context("the server's HTTP address")?,
    };
    let shared = Arc::new(Shared {
        ledger: Arc::new(Ledger::new(args.pairs, args.size.clamp(1, MAX_PLAINTEXT))),
        tallies: Arc::new(StageTallies::default()),
        period: Duration::from_secs_f64(1.0 / args.rate),
        window: args.window.max(1),
    });
    eprintln!(
        "soak: logging in {} legitimate pairs at {} and {} ...",
        args.pairs, ends.tcp, ends.ws
    );
    let pairs = legit_pairs(args.pairs, &ends).await?;
    let recipients: Vec<PublicKey> = pairs.iter().map(|p| p.to).collect();
    let lives = Arc::new(Lives::default());
    let prepared = abuse::prepare(&args, &ends, recipients, &lives).await?;
    let procs = Processes { server, redis };
    let ran = run_phases(&args, procs, pairs, prepared, lives, &shared).await?;

    let machine = Machine {
        load_average: [load_before, load_average()],
        server_warnings: warnings(&ran.procs.server),
    };
    drop(ran.procs);
    let phase = Duration::from_secs(args.secs);
    let tallies = &shared.tallies;
    let phases = [
        phase_figures(
            (ran.a0, phase),
            &shared,
            &ran.outages,
            &tallies.baseline,
            ran.cpu[0],
        ),
        phase_figures(
            (ran.b0, phase),
            &shared,
            &ran.outages,
            &tallies.abuse,
            ran.cpu[1],
        ),
    ];
    let totals = shared.ledger.totals();
    let (settings, drain, abusers) = (args.settings(), ran.drain, ran.abusers);
    let report = Report::new(
        settings,
        phases,
        totals,
        drain,
        abusers,
        ran.outages,
        machine,
    );
    let fast_enough = report.throughput_ratio >= args.min_ratio;
    crate::finish(
        args.json,
        &report,
        Report::summary,
        report.correct() && fast_enough,
        &verdict(&report, fast_enough, args.min_ratio),
    )
}

/// What the phases left for the report.
struct Ran {
    /// When phase A began.
    a0: Instant,
    /// When phase B began.
    b0: Instant,
    /// CPU seconds the server and this tool used in each phase.
    cpu: [(f64, f64); 2],
    /// The faults, as they happened.
    outages: Vec<Outage>,
    /// The drain after phase B.
    drain: Drain,
    /// What each abuser got.
    abusers: Vec<AbuserReport>,
    /// The processes, still running (to read the server's log before they are stopped).
    procs: Processes,
}

/// CPU seconds used so far by the server process and by this tool.
struct Cpu {
    /// The server (its current life).
    server: f64,
    /// This tool, every thread.
    tool: f64,
}

impl Cpu {
    fn now(server: &TestServer) -> Cpu {
        Cpu {
            server: Proc(server.pid()).cpu_secs(),
            tool: Proc(None).cpu_secs(),
        }
    }

    /// (server, tool) seconds since `earlier`; `killed` is what server processes killed
    /// meanwhile had used (their counts end with them; a restarted one's begins at 0).
    fn since(&self, earlier: &Cpu, killed: f64) -> (f64, f64) {
        let server = match killed > 0.0 {
            true => killed - earlier.server + self.server,
            false => self.server - earlier.server,
        };
        (server, self.tool - earlier.tool)
    }
}

/// Phase A (the legitimate load alone), phase B (with the abusers and the faults), then the
/// drain; every task stopped at the end.
async fn run_phases(
    args: &Args,
    procs: Processes,
    pairs: Vec<Pair>,
    prepared: abuse::Prepared,
    lives: Arc<Lives>,
    shared: &Arc<Shared>,
) -> anyhow::Result<Ran> {
    let (stage, watching) = watch::channel(Stage::Baseline);
    let legit_tasks = spawn_legit(pairs, shared, &watching);
    let phase = Duration::from_secs(args.secs);

    eprintln!("soak: phase A (baseline), {} s ...", args.secs);
    let a0 = Instant::now();
    let cpu_a = Cpu::now(&procs.server);
    tokio::time::sleep(phase).await;
    let cpu_b = Cpu::now(&procs.server);

    eprintln!("soak: phase B (abuse and faults), {} s ...", args.secs);
    stage.send_replace(Stage::Abuse);
    let b0 = Instant::now();
    let abuse = AbuseRun::start(prepared, &watching)?;
    let redis_every = procs
        .redis
        .as_ref()
        .map(|_| Duration::from_secs(args.redis_restart_every));
    let schedule = faults::schedule(
        phase,
        Some(Duration::from_secs(args.kill_every)),
        redis_every,
    );
    let faulting = tokio::task::spawn_blocking(move || faults::run(procs, schedule, b0, lives));
    tokio::time::sleep_until((b0 + phase).into()).await;
    let struck = faulting
        .await
        .context("a server or Redis did not start again after a kill")?;
    let procs = struck.procs;
    let cpu_end = Cpu::now(&procs.server);
    let cpu = [
        cpu_b.since(&cpu_a, 0.0),
        cpu_end.since(&cpu_b, struck.killed_cpu_s),
    ];
    let outages = struck.outages;

    stage.send_replace(Stage::Drain);
    let bound = Duration::from_secs(args.drain);
    let drain = drain(&shared.ledger, &shared.tallies, bound).await;
    stage.send_replace(Stage::Close);
    join_all(legit_tasks).await;
    let abusers = abuse.stop().await;
    Ok(Ran {
        a0,
        b0,
        cpu,
        outages,
        drain,
        abusers,
        procs,
    })
}

/// Why the run failed, in words.
fn verdict(report: &Report, fast_enough: bool, min_ratio: f64) -> String {
    let mut why = Vec::new();
    if report.delivery.lost > 0 {
        why.push(format!(
            "{} confirmed messages were lost",
            report.delivery.lost
        ));
    }
    if report.delivery.garbled > 0 {
        why.push(format!(
            "{} messages arrived altered",
            report.delivery.garbled
        ));
    }
    if report.abused.received == 0 {
        why.push("no legitimate message got through in phase B".to_string());
    }
    if !fast_enough {
        why.push(format!(
            "legitimate throughput in B was {:.2} of A's, below --min-ratio {min_ratio}",
            report.throughput_ratio
        ));
    }
    why.join("; ")
}

/// Starts Redis (with `--store redis`) and the server on it, as the other modes start them;
/// the server logs to a file in its directory, since under abuse it warns a lot.
fn start_processes(args: &Args) -> anyhow::Result<(TestServer, Option<RedisServer>)> {
    let redis =
        (args.store == Store::Redis).then(|| RedisServer::start_with(&args.redis_bin, &args.data));
    let flags = rules::server_flags(redis.as_ref().map(|r| r.url.as_str()), &args.server_args);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut options = crate::server::options(args.server_bin.as_deref(), &args.data, &flags);
    options.log_to_file = true;
    let server = TestServer::launch(options)?;
    Ok((server, redis))
}

/// Logs the legitimate pairs in: pair `i`'s sender on TCP and recipient on WebSocket for even
/// `i`, the other way round for odd `i`; the recipient first, so that it is online.
async fn legit_pairs(n: usize, ends: &Ends) -> anyhow::Result<Vec<Pair>> {
    let tcp = ends.tcp.to_string();
    let mut pairs = Vec::with_capacity(n);
    for i in 0..n {
        let (from_addr, to_addr) = if i.is_multiple_of(2) {
            (&tcp, &ends.ws)
        } else {
            (&ends.ws, &tcp)
        };
        let (s_id, r_id) = (Identity::generate()?, Identity::generate()?);
        let mut recipient = legit::log_in(to_addr, &r_id).await?;
        // The pair are contacts (docs/PROTOCOL.md §14): the recipient accepted the sender.
        recipient
            .accept_request(&s_id.public_key().to_hex())
            .await?;
        let sender = legit::log_in(from_addr, &s_id).await?;
        pairs.push(Pair {
            sender,
            recipient,
            from: s_id.public_key(),
            to: r_id.public_key(),
        });
    }
    Ok(pairs)
}

/// Starts every legitimate task: the recipients, then the senders.
fn spawn_legit(
    pairs: Vec<Pair>,
    shared: &Arc<Shared>,
    stage: &watch::Receiver<Stage>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::with_capacity(pairs.len() * 2);
    let mut senders = Vec::with_capacity(pairs.len());
    for (i, p) in pairs.into_iter().enumerate() {
        let receive = legit::receive(p.recipient, i, p.from, shared.clone(), stage.clone());
        tasks.push(tokio::spawn(receive));
        senders.push(legit::send(
            p.sender,
            i,
            p.to,
            shared.clone(),
            stage.clone(),
        ));
    }
    tasks.extend(senders.into_iter().map(tokio::spawn));
    tasks
}

/// Waits until every legitimate message was received and confirmed, at most `bound`.
async fn drain(ledger: &Ledger, tallies: &StageTallies, bound: Duration) -> Drain {
    eprintln!("soak: draining (at most {} s) ...", bound.as_secs());
    let start = Instant::now();
    let settled = loop {
        if ledger.settled() {
            break true;
        }
        if start.elapsed() > bound {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    Drain {
        secs: start.elapsed().as_secs_f64(),
        settled,
        clients: tallies.drain.snapshot(),
    }
}

/// Waits for `tasks` to stop by themselves, at most [`STOP_GRACE`], then aborts the rest.
async fn join_all<T>(tasks: Vec<JoinHandle<T>>) -> Vec<Option<T>> {
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    let mut out = Vec::with_capacity(tasks.len());
    for mut t in tasks {
        match tokio::time::timeout_at(deadline, &mut t).await {
            Ok(r) => out.push(r.ok()),
            Err(_) => {
                t.abort();
                out.push(None);
            }
        }
    }
    out
}

/// The figures of the phase that began at `from` and lasted `len`: what arrived in it, what
/// its clients counted in `tally`, and the (server, tool) CPU seconds it took.
fn phase_figures(
    (from, len): (Instant, Duration),
    shared: &Shared,
    outages: &[Outage],
    tally: &Tally,
    (server_cpu_s, tool_cpu_s): (f64, f64),
) -> Phase {
    let receptions = shared.ledger.receptions();
    Phase {
        server_cpu_s,
        tool_cpu_s,
        ..Phase::of(from, len, &receptions, outages, tally.snapshot())
    }
}

/// The machine's load average (`/proc/loadavg`'s first three fields), or "unknown".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Lines the server logged at warning level or above.
fn warnings(server: &TestServer) -> usize {
    server
        .logs()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count()
}
