//! The stall: recipients that log in and then never read their socket, while senders keep
//! writing to them. The server's writes to such a connection stop once the socket's buffers
//! are full (its receive buffer is made small on purpose); the server should then end it
//! (write deadline, too many unacknowledged messages, a full outbound queue) and keep its
//! messages stored, without the legitimate traffic noticing.
//!
//! A stalled recipient holds its connection for `hold` seconds without reading, then reads
//! for a moment to see what the server did (the Statuses it was sent, whether the connection
//! had been cut), and logs in again to stall once more. The stalled keys logged in once before
//! the run, so that messages to them are accepted while they are away.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flexim_client::Identity;
use flexim_client::protocol::{Datum, PublicKey, SecretKey, status};
use flexim_testkit::{Conn, Got, SMALL_READS};
use tokio::net::TcpSocket;
use tokio::sync::watch;

use super::Stage;
use super::abuser::{self, Lives, PAUSE, abuse_over, abusing};
use super::tally::{Tally, count_event};

/// The stalled connection's socket receive buffer: small, so that the server's writes stop
/// after a few kilobytes instead of the kernel's default of over 100 KiB.
const RECEIVE_BUFFER: u32 = 4096;
/// How long the look after a hold waits for the next frame before it decides the server has
/// left the connection open.
const QUIET: Duration = Duration::from_millis(300);
/// The longest the look after a hold reads (a connection the server kept writing to once it
/// was read again would otherwise keep it forever).
const LOOK: Duration = Duration::from_secs(2);
/// Messages a stall sender keeps unanswered at most.
const WINDOW: usize = 256;

/// What the stall does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The stalled recipients' keys (each logged in once already).
    pub keys: Vec<SecretKey>,
    /// The keys of the senders writing to them (the stalled keys accepted them).
    pub senders: Vec<SecretKey>,
    /// Messages per second each sender writes (to the stalled keys in turn).
    pub rate: f64,
    /// How long a stalled recipient holds its connection without reading.
    pub hold: Duration,
    /// Plaintext bytes per message.
    pub size: usize,
    /// The server's TCP address.
    pub tcp: SocketAddr,
    /// The server's lives, to tell connections a kill ended apart.
    pub lives: Arc<Lives>,
}

/// Runs the stall while the stage is the abuse, counting into `tally`.
pub async fn run(plan: Plan, stage: watch::Receiver<Stage>, tally: Arc<Tally>) {
    let targets: Vec<PublicKey> = plan.keys.iter().map(SecretKey::public_key).collect();
    let mut tasks = Vec::new();
    for key in &plan.keys {
        let (key, plan, stage, tally) = (key.clone(), plan.clone(), stage.clone(), tally.clone());
        tasks.push(tokio::spawn(reader(key, plan, stage, tally)));
    }
    for (i, key) in plan.senders.iter().enumerate() {
        let s = sender(
            i,
            Identity::from_secret(key.clone()),
            targets.clone(),
            plan.clone(),
            stage.clone(),
            tally.clone(),
        );
        tasks.push(tokio::spawn(s));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// A connection to `addr` with a small receive buffer, nothing sent yet.
async fn open_small(addr: SocketAddr) -> anyhow::Result<Conn> {
    let socket = TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(RECEIVE_BUFFER)?;
    let stream = socket.connect(addr).await?;
    Ok(Conn::tcp_from(stream, &[], SMALL_READS))
}

/// One stalled recipient: log in, stop reading for the hold, look, again.
async fn reader(key: SecretKey, plan: Plan, mut stage: watch::Receiver<Stage>, tally: Arc<Tally>) {
    while abusing(&stage) {
        let login = async {
            let mut conn = open_small(plan.tcp).await?;
            conn.login(&key).await?;
            anyhow::Ok(conn)
        };
        let mut conn = match login.await {
            Ok(c) => c,
            Err(_) => {
                tally.add("stalled logins that failed");
                tokio::time::sleep(PAUSE).await;
                continue;
            }
        };
        tally.add("stalled logins");
        let began = plan.lives.now();
        let held = tokio::select! {
            _ = tokio::time::sleep(plan.hold) => Held::Whole,
            _ = abuse_over(&mut stage) => Held::CutShort,
        };
        let held = match plan.lives.met_a_kill(began) {
            true => Held::Killed,
            false => held,
        };
        look(&mut conn, &tally, held).await;
    }
}

/// How a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// It lasted its whole time.
    Whole,
    /// The abuse ended first.
    CutShort,
    /// The server was killed during it (which ends every connection).
    Killed,
}

/// Reads what the server left on a stalled connection after the hold: counts the error
/// Statuses it was sent and the messages, and whether the server had ended it.
async fn look(conn: &mut Conn, tally: &Tally, held: Held) {
    let deadline = Instant::now() + LOOK;
    let mut messages = 0;
    let open = match held {
        Held::Whole => "still open after a whole hold",
        _ => "still open when the abuse ended, the hold cut short",
    };
    let verdict = loop {
        if Instant::now() > deadline {
            break open;
        }
        match tokio::time::timeout(QUIET, conn.next()).await {
            Err(_) => break open,
            Ok(Err(_)) => break "ended by a frame that did not decode",
            Ok(Ok(Got::Gone | Got::Close(..))) if held == Held::Killed => {
                break "cut by a server kill";
            }
            Ok(Ok(Got::Gone | Got::Close(..))) => break "cut by the server during the hold",
            Ok(Ok(Got::Datum(Datum::Message(_)))) => messages += 1,
            Ok(Ok(Got::Datum(Datum::Status(s)))) if status::is_error(s.status) => {
                tally.status("stalled recipient was sent", s.status)
            }
            Ok(Ok(Got::Datum(_))) => {}
        }
    };
    tally.add(verdict);
    tally.add_n(
        "messages a stalled recipient found when it read again",
        messages,
    );
}

/// One sender writing to the stalled keys at its rate, counting what it is answered.
async fn sender(
    i: usize,
    me: Identity,
    targets: Vec<PublicKey>,
    plan: Plan,
    mut stage: watch::Receiver<Stage>,
    tally: Arc<Tally>,
) {
    let text = "s".repeat(plan.size.max(1));
    let period = Duration::from_secs_f64(1.0 / plan.rate.max(0.1));
    let addr = plan.tcp.to_string();
    let mut next = i;
    while abusing(&stage) {
        let Some(mut client) = abuser::connect(&addr, &me, &mut stage, &tally).await else {
            return;
        };
        let mut tick = tokio::time::interval(period);
        let ended = loop {
            tokio::select! {
                _ = tick.tick() => {
                    if client.engine().pending_len() < WINDOW {
                        let to = &targets[next % targets.len()];
                        next += 1;
                        if client.queue_text(to, &text, &[]).await.is_err() {
                            break true;
                        }
                        tally.add("messages sent to stalled recipients");
                    }
                }
                event = client.next_event() => if count_event(&tally, &event) { break true },
                _ = abuse_over(&mut stage) => break false,
            }
        };
        if !ended {
            return;
        }
        tokio::time::sleep(PAUSE).await;
    }
}
