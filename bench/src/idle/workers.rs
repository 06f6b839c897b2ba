//! The workers: each opens its share of the connections (in this process, or in one of the
//! `--procs` child processes, which talk to the coordinator in JSON lines), holds them, and
//! reports what happened.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::Ipv4Addr;
use std::process::{Child, ChildStdin, Command as Process, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::hold::{Counters, Role, Shared, Stage, hold};
use super::{Endpoints, Key, Transport, connect_authenticated, source};
use crate::stats::Latency;

/// Longest wait, after the chatter stops, for the last messages, answers and receipts.
const CHATTER_GRACE: Duration = Duration::from_secs(10);

/// What one worker (this process, or one of the `--procs` children) opens and does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Share {
    /// The worker's number.
    pub(super) index: usize,
    /// Raw TCP connections.
    pub(super) tcp: usize,
    /// WebSocket connections.
    pub(super) ws: usize,
    /// Chatter pairs among them.
    pub(super) chatter: usize,
    /// Messages per second per pair.
    pub(super) chatter_rate: f64,
    /// The server's TCP address.
    pub(super) tcp_addr: String,
    /// The server's WebSocket URL.
    pub(super) ws_url: Option<String>,
    /// Source addresses to spread over.
    pub(super) sources: u8,
    /// Handshakes at once.
    pub(super) concurrency: usize,
}

/// What a worker tells the coordinator.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Event {
    /// A phase's connections are open (or failed).
    Opened(Opened),
    /// Every connection is closed; the chatter's figures.
    Done(Chatter),
    /// The worker gave up.
    Failed(String),
}

/// One worker's result of one opening phase.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Opened {
    /// Connections authenticated.
    pub(super) opened: usize,
    /// Connections that failed to connect or authenticate.
    pub(super) failed: usize,
    /// The first failure's reason.
    pub(super) first_error: Option<String>,
    /// Connect-to-authenticated time of each opened connection, in milliseconds.
    pub(super) latencies_ms: Vec<f32>,
    /// Seconds from the first connect to the last handshake (key generation excluded).
    pub(super) seconds: f64,
}

/// The chatter's figures (one worker's, or all of them added up).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Chatter {
    /// Pairs.
    pub pairs: usize,
    /// Messages sent.
    pub sent: u64,
    /// Messages answered "relayed" or "stored".
    pub answered: u64,
    /// Messages refused (an error Status).
    pub refused: u64,
    /// Distinct messages received (each opened and checked).
    pub received: u64,
    /// Messages sent and never received.
    pub lost: u64,
    /// Copies received again.
    pub duplicated: u64,
    /// Messages that did not open.
    pub unreadable: u64,
    /// "delivered" receipts the senders got.
    pub receipts: u64,
    /// Connections the server closed before the end (any, not only chatter ones).
    pub closed_early: u64,
    /// Send-to-receive latency (computed by the coordinator from all samples).
    #[serde(skip_deserializing)]
    pub latency: Latency,
    /// The samples behind `latency` (only between a worker and the coordinator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) latencies_ms: Vec<f32>,
}

/// One planned connection: its transport, key, source address and role.
pub(super) struct Slot {
    /// Which transport.
    pub(super) transport: Transport,
    /// Its key.
    pub(super) key: Key,
    /// Where it connects from.
    pub(super) source: Option<Ipv4Addr>,
    /// What it does while held.
    pub(super) role: Role,
}

/// Plans a share's connections: keys, source addresses and chatter roles. A pair is a TCP
/// sender and a WebSocket receiver when both kinds are open, so the chatter crosses transports.
pub(super) fn plan(share: &Share) -> anyhow::Result<Vec<Slot>> {
    let total = share.tcp + share.ws;
    if share.chatter * 2 > total {
        bail!(
            "{} chatter pairs need {} connections, a process has {total}",
            share.chatter,
            share.chatter * 2
        );
    }
    let mut slots: Vec<Slot> = (0..total)
        .map(|i| Slot {
            transport: if i < share.tcp {
                Transport::Tcp
            } else {
                Transport::Ws
            },
            key: Key::generate(),
            source: source(i + share.index, share.sources),
            role: Role::Idle,
        })
        .collect();
    let crossing = share.tcp >= share.chatter && share.ws >= share.chatter;
    for p in 0..share.chatter {
        let (s, r) = if crossing {
            (p, share.tcp + p)
        } else {
            (2 * p, 2 * p + 1)
        };
        slots[s].role = Role::Sender(slots[r].key.public);
        slots[r].role = Role::Receiver(slots[s].key.public);
    }
    Ok(slots)
}

/// Opens `slots` with `concurrency` handshakes at once; each connection is handed to its own
/// task as soon as it is authenticated, so it starts reading at once (the presence notices of
/// every later login arrive on it).
pub(super) async fn open_phase(
    slots: Vec<Slot>,
    ep: &Endpoints,
    concurrency: usize,
    stage: &watch::Receiver<Stage>,
    shared: &Arc<Shared>,
) -> (Opened, Vec<JoinHandle<Vec<f32>>>) {
    let started = Instant::now();
    let queue = Arc::new(Mutex::new(VecDeque::from(slots)));
    let openers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (queue, ep, stage, shared) =
                (queue.clone(), ep.clone(), stage.clone(), shared.clone());
            tokio::spawn(async move {
                let mut opened = Opened::default();
                let mut held = Vec::new();
                loop {
                    let Some(slot) = queue.lock().expect("queue lock").pop_front() else {
                        break;
                    };
                    let t = Instant::now();
                    match connect_authenticated(slot.transport, &ep, slot.source, &slot.key).await {
                        Ok((conn, engine)) => {
                            opened.opened += 1;
                            opened.latencies_ms.push(t.elapsed().as_secs_f32() * 1000.0);
                            let task = hold(conn, engine, slot.role, stage.clone(), shared.clone());
                            held.push(tokio::spawn(task));
                        }
                        Err(e) => {
                            opened.failed += 1;
                            opened.first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
                (opened, held)
            })
        })
        .collect();
    let mut total = Opened::default();
    let mut held = Vec::new();
    for o in openers {
        match o.await {
            Ok((o, h)) => {
                total.opened += o.opened;
                total.failed += o.failed;
                if total.first_error.is_none() {
                    total.first_error = o.first_error;
                }
                total.latencies_ms.extend(o.latencies_ms);
                held.extend(h);
            }
            Err(e) => {
                total.failed += 1;
                total.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    total.seconds = started.elapsed().as_secs_f64();
    (total, held)
}

/// One worker: opens the TCP share, waits for the coordinator, opens the WebSocket share,
/// waits, runs the chatter until told to stop, lets the last messages arrive, closes all.
/// `next` returning `None` (the coordinator is gone) closes everything.
pub(super) async fn worker(
    share: Share,
    events: mpsc::Sender<Event>,
    mut next: mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    let ep = Endpoints::resolve(&share.tcp_addr, share.ws_url.as_deref()).await?;
    let mut slots = plan(&share)?;
    let ws_slots = slots.split_off(share.tcp);
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        epoch: Instant::now(),
        period: Duration::from_secs_f64(1.0 / share.chatter_rate.max(0.001)),
    });
    let (stage_tx, stage) = watch::channel(Stage::Idle);
    let mut held = Vec::new();
    let mut go_on = true;
    for phase in [slots, ws_slots] {
        let (opened, h) = open_phase(phase, &ep, share.concurrency, &stage, &shared).await;
        held.extend(h);
        events.send(Event::Opened(opened)).await?;
        go_on = next.recv().await.is_some();
        if !go_on {
            break;
        }
    }
    if go_on {
        let _ = stage_tx.send(Stage::Chatter);
        go_on = next.recv().await.is_some();
    }
    let _ = stage_tx.send(Stage::Drain);
    let c = &shared.counters;
    let deadline = Instant::now() + CHATTER_GRACE;
    while go_on && !c.settled() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stage_tx.send(Stage::Close);
    let mut latencies_ms = Vec::new();
    for h in held {
        latencies_ms.extend(h.await.unwrap_or_default());
    }
    let get = Counters::get;
    let chatter = Chatter {
        pairs: share.chatter,
        sent: get(&c.sent),
        answered: get(&c.answered),
        refused: get(&c.refused),
        received: get(&c.received),
        lost: get(&c.sent).saturating_sub(get(&c.received)),
        duplicated: get(&c.duplicated),
        unreadable: get(&c.unreadable),
        receipts: get(&c.receipts),
        closed_early: get(&c.closed_early),
        latency: Latency::default(),
        latencies_ms,
    };
    events.send(Event::Done(chatter)).await?;
    Ok(())
}

/// Runs a worker and turns its error into a `Failed` event.
pub(super) async fn run_worker(
    share: Share,
    events: mpsc::Sender<Event>,
    next: mpsc::Receiver<()>,
) {
    if let Err(e) = worker(share, events.clone(), next).await {
        let _ = events.send(Event::Failed(format!("{e:#}"))).await;
    }
}

/// The coordinator's end of one worker.
pub(super) struct WorkerHandle {
    /// What the worker reports.
    pub(super) events: mpsc::Receiver<Event>,
    /// How the coordinator says "next".
    pub(super) control: Control,
}

/// A worker in this process or in a child process.
pub(super) enum Control {
    /// A task here.
    Local(mpsc::Sender<()>),
    /// A child process: one line on its stdin means "next".
    Child {
        /// The child's stdin.
        stdin: ChildStdin,
        /// The child, waited for (or killed) at the end.
        process: Child,
    },
}

impl WorkerHandle {
    pub(super) fn local(share: Share) -> WorkerHandle {
        let (ev_tx, events) = mpsc::channel(4);
        let (next_tx, next_rx) = mpsc::channel(4);
        tokio::spawn(run_worker(share, ev_tx, next_rx));
        WorkerHandle {
            events,
            control: Control::Local(next_tx),
        }
    }

    /// Starts a child process of this tool with `share`; its events come as JSON lines.
    pub(super) fn child(share: &Share) -> anyhow::Result<WorkerHandle> {
        let exe = std::env::current_exe()?;
        let mut process = Process::new(&exe)
            .args(["idle", "--child", &serde_json::to_string(share)?])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let stdout = process.stdout.take().expect("stdout is piped");
        let stdin = process.stdin.take().expect("stdin is piped");
        let (ev_tx, events) = mpsc::channel(4);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line)
                    .unwrap_or_else(|e| Event::Failed(format!("a child said {line:?}: {e}")));
                if ev_tx.blocking_send(event).is_err() {
                    break;
                }
            }
        });
        Ok(WorkerHandle {
            events,
            control: Control::Child { stdin, process },
        })
    }

    pub(super) async fn next(&mut self) {
        match &mut self.control {
            Control::Local(tx) => {
                let _ = tx.send(()).await;
            }
            Control::Child { stdin, .. } => {
                let _ = writeln!(stdin, "next").and_then(|()| stdin.flush());
            }
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if let Control::Child { process, .. } = &mut self.control {
            // A child that finished has exited; one that did not is stopped here.
            if !matches!(process.try_wait(), Ok(Some(_))) {
                let _ = process.kill();
            }
            let _ = process.wait();
        }
    }
}

/// The `--child` side: runs the worker, reading "next" lines on stdin and writing events as
/// JSON lines on stdout.
pub(super) async fn child_main(share: &str) -> anyhow::Result<ExitCode> {
    let share: Share = serde_json::from_str(share).context("the --child share")?;
    let (ev_tx, mut events) = mpsc::channel(4);
    let (next_tx, next_rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            if line.is_err() || next_tx.blocking_send(()).is_err() {
                break;
            }
        }
    });
    let work = tokio::spawn(run_worker(share, ev_tx, next_rx));
    while let Some(event) = events.recv().await {
        println!("{}", serde_json::to_string(&event)?);
    }
    work.await?;
    Ok(ExitCode::SUCCESS)
}

/// Waits for one event from every worker, failing on a `Failed` one or after `timeout`.
pub(super) async fn gather(
    workers: &mut [WorkerHandle],
    timeout: Duration,
) -> anyhow::Result<Vec<Event>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::with_capacity(workers.len());
    for w in workers.iter_mut() {
        match tokio::time::timeout_at(deadline, w.events.recv()).await {
            Ok(Some(Event::Failed(why))) => bail!("a load generator process failed: {why}"),
            Ok(Some(event)) => out.push(event),
            Ok(None) => bail!("a load generator process ended early"),
            Err(_) => bail!("no answer from the load generators within {timeout:?}"),
        }
    }
    Ok(out)
}
