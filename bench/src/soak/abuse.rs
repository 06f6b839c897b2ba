//! The abusers of phase B as a whole: what they need made before phase A (their targets logged
//! in once), the runtime they run on, and collecting what each got. Each abuser runs while the
//! stage is [`Stage::Abuse`] and stops by itself after it; what they share is in `abuser.rs`.

use std::sync::Arc;
use std::time::Duration;

use flexim_client::Identity;
use flexim_client::protocol::{PublicKey, SecretKey};
use flexim_protocol::e2e::MAX_PLAINTEXT;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::abuser::Lives;
use super::tally::{AbuserReport, Tally};
use super::{Abuse, Args, Ends, Stage, flood, join_all, legit, slowloris, stall, storm};

/// `n` new keys, each logged in once at `addr` and out again, having accepted `contacts`
/// (docs/PROTOCOL.md §14: their messages are relayed, not held in a requests box).
async fn introduce(addr: &str, n: usize, contacts: &[PublicKey]) -> anyhow::Result<Vec<SecretKey>> {
    let mut keys = Vec::with_capacity(n);
    for _ in 0..n {
        let id = Identity::generate()?;
        let mut c = legit::log_in(addr, &id).await?;
        for k in contacts {
            c.accept_request(&k.to_hex()).await?;
        }
        c.close().await?;
        keys.push(id.0);
    }
    Ok(keys)
}

/// What the abusers need that is made before phase A: their targets have logged in once.
pub struct Prepared {
    /// The abusers asked for.
    abusers: Vec<Abuse>,
    /// The flood's plan.
    flood: flood::Plan,
    /// The stall's plan.
    stall: stall::Plan,
    /// Slowloris's plan.
    slowloris: slowloris::Plan,
    /// The storm's plan.
    storm: storm::Plan,
}

/// Logs the sinks and the stalled recipients in once (messages go only to keys that have),
/// and plans each abuser.
pub async fn prepare(
    args: &Args,
    ends: &Ends,
    recipients: Vec<PublicKey>,
    lives: &Arc<Lives>,
) -> anyhow::Result<Prepared> {
    let tcp = ends.tcp.to_string();
    let abusers = args.abusers();
    let wants = |a| abusers.contains(&a);
    // The flood's keys are strangers to everyone: what consent leaves them is a few messages
    // per target in its requests box, then `-25`.
    let sinks = introduce(&tcp, if wants(Abuse::Flood) { args.sinks } else { 0 }, &[]).await?;
    let stall_keys = if wants(Abuse::Stall) {
        args.stall_keys.max(1)
    } else {
        0
    };
    // The stalled readers' senders are their contacts: a reader that stops reading is a
    // problem of the people it accepted.
    let senders: Vec<Identity> = (0..args.stall_senders)
        .map(|_| Identity::generate())
        .collect::<Result<_, _>>()?;
    let contacts: Vec<PublicKey> = senders.iter().map(Identity::public_key).collect();
    let stalled = introduce(&tcp, stall_keys, &contacts).await?;
    let mut targets = recipients;
    targets.extend(sinks.iter().map(|k| k.public_key()));
    let size = args.size.clamp(1, MAX_PLAINTEXT);
    Ok(Prepared {
        flood: flood::Plan {
            keys: args.flood_keys,
            window: args.flood_window.max(1),
            size,
            targets,
            tcp: tcp.clone(),
            ws: ends.ws.clone(),
        },
        stall: stall::Plan {
            keys: stalled,
            senders: senders.into_iter().map(|i| i.0).collect(),
            rate: args.stall_rate,
            hold: Duration::from_secs(args.stall_hold.max(1)),
            size,
            tcp: ends.tcp,
            lives: lives.clone(),
        },
        slowloris: slowloris::Plan {
            per_kind: args.slowloris,
            tcp: ends.tcp,
            http: ends.http,
            ws: ends.ws.clone(),
            lives: lives.clone(),
        },
        storm: storm::Plan {
            tasks: args.storm,
            tcp,
            ws: ends.ws.clone(),
        },
        abusers,
    })
}

/// One abuser while it runs.
struct Running {
    /// Its name.
    name: &'static str,
    /// What it counts.
    tally: Arc<Tally>,
    /// Its task, whose result is its notes.
    task: JoinHandle<Vec<String>>,
}

/// The abusers while they run: on a runtime of their own, so that their tasks (a flood key
/// never waits for anything but the server) do not queue ahead of the legitimate clients' in
/// one scheduler. The two compete for the machine's cores as the server's clients would, as
/// threads the kernel schedules, not as tasks of one runtime.
pub struct AbuseRun {
    /// The abusers' runtime.
    runtime: tokio::runtime::Runtime,
    /// The abusers started.
    running: Vec<Running>,
}

impl AbuseRun {
    /// Starts the abusers `prepared` asks for; they run while the stage is the abuse.
    pub fn start(prepared: Prepared, stage: &watch::Receiver<Stage>) -> anyhow::Result<AbuseRun> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("soak-abuse")
            .enable_all()
            .build()?;
        let mut running = Vec::new();
        for abuser in &prepared.abusers {
            let (tally, st) = (Arc::new(Tally::default()), stage.clone());
            let t = tally.clone();
            let (name, task) = match abuser {
                Abuse::Flood => {
                    let plan = prepared.flood.clone();
                    (
                        "flood",
                        runtime.spawn(async move {
                            flood::run(plan, st, t).await;
                            Vec::new()
                        }),
                    )
                }
                Abuse::Stall => {
                    let plan = prepared.stall.clone();
                    (
                        "stall",
                        runtime.spawn(async move {
                            stall::run(plan, st, t).await;
                            Vec::new()
                        }),
                    )
                }
                Abuse::Slowloris => {
                    let plan = prepared.slowloris.clone();
                    ("slowloris", runtime.spawn(slowloris::run(plan, st, t)))
                }
                Abuse::Storm => (
                    "storm",
                    runtime.spawn(storm::run(prepared.storm.clone(), st, t)),
                ),
                Abuse::None => continue,
            };
            running.push(Running { name, tally, task });
        }
        Ok(AbuseRun { runtime, running })
    }

    /// Waits for the abusers to stop (the stage has moved on), and reports what each got.
    pub async fn stop(self) -> Vec<AbuserReport> {
        let (meta, tasks): (Vec<_>, Vec<_>) = self
            .running
            .into_iter()
            .map(|r| ((r.name, r.tally), r.task))
            .unzip();
        let notes = join_all(tasks).await;
        // Tasks of the abusers' own (one per flood key, ...) that are still stuck in a write
        // are dropped with their runtime.
        self.runtime.shutdown_background();
        meta.into_iter()
            .zip(notes)
            .map(|((name, tally), notes)| AbuserReport {
                name,
                counts: tally.snapshot(),
                notes: notes.unwrap_or_else(|| vec!["stopped by force".into()]),
            })
            .collect()
    }
}
