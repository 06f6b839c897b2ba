//! Slowloris: connections that hold a socket and a task on the server by sending almost
//! nothing, each kind against the deadline that should end it.
//!
//! - `tcp-header`: the FLEX header one byte every two seconds, never the fifth (the server
//!   resets the connection at the header deadline, docs/PROTOCOL.md §2.2);
//! - `http-head`: half an HTTP request head, then one more header line every two seconds, never
//!   the blank line that ends it (the classic slowloris, which keeps a per-read idle timer
//!   alive; the server's deadline is for the whole head, §2.4);
//! - `ws-upgrade`: a WebSocket upgrade request sent the same way, never finished;
//! - `ws-silent`: a WebSocket upgrade that completes, then no FLEX header ever (closed with code
//!   1002 at the header deadline, §2.3).
//!
//! Each connection is opened again as soon as the server ends it. What is counted: how each
//! ended (reset, closed, close code) and after how long, and any held past its deadline (by
//! more than the margin of `rules.rs`), which would be a server bug.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flexim_client::protocol::HEADER;
use flexim_testkit::{Conn, Got};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::Stage;
use super::abuser::{Lives, PAUSE, abuse_over, abusing};
use super::rules::{DEADLINE_MARGIN, HEADER_DEADLINE, HTTP_DEADLINE};
use super::tally::Tally;

/// Time between two drips.
const DRIP: Duration = Duration::from_secs(2);

/// The kinds of slow connection (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// The FLEX header, a byte at a time.
    TcpHeader,
    /// Half an HTTP request head, a line at a time.
    HttpHead,
    /// A WebSocket upgrade request, a line at a time.
    WsUpgrade,
    /// An upgraded WebSocket that never sends the FLEX header.
    WsSilent,
}

const KINDS: [Kind; 4] = [
    Kind::TcpHeader,
    Kind::HttpHead,
    Kind::WsUpgrade,
    Kind::WsSilent,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::TcpHeader => "tcp-header",
            Kind::HttpHead => "http-head",
            Kind::WsUpgrade => "ws-upgrade",
            Kind::WsSilent => "ws-silent",
        }
    }

    /// The deadline the server documents for it.
    fn deadline(self) -> Duration {
        match self {
            Kind::TcpHeader | Kind::WsSilent => HEADER_DEADLINE,
            Kind::HttpHead | Kind::WsUpgrade => HTTP_DEADLINE,
        }
    }

    /// What it drips, one piece per [`DRIP`] (enough for minutes).
    fn pieces(self, host: &str) -> Vec<Vec<u8>> {
        let lines = |first: &[&str]| {
            let mut v: Vec<Vec<u8>> = first.iter().map(|l| format!("{l}\r\n").into()).collect();
            v.extend((0..100).map(|i| format!("X-Slow-{i}: x\r\n").into_bytes()));
            v
        };
        let host = format!("Host: {host}");
        match self {
            // Four of the five bytes: the header never completes.
            Kind::TcpHeader => HEADER[..4].iter().map(|b| vec![*b]).collect(),
            Kind::HttpHead => lines(&["GET / HTTP/1.1", &host]),
            Kind::WsUpgrade => lines(&[
                "GET /ws HTTP/1.1",
                &host,
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            ]),
            Kind::WsSilent => Vec::new(),
        }
    }
}

/// How one slow connection ended.
enum Ended {
    /// The server ended it: how, and after how long.
    ByServer(String, Duration),
    /// It was still open when the abuse ended, after this long.
    StillOpen(Duration),
    /// It could not be opened.
    NoConnection,
}

/// What slowloris does.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Connections held at once per kind.
    pub per_kind: usize,
    /// The server's TCP address.
    pub tcp: SocketAddr,
    /// The server's HTTP address.
    pub http: SocketAddr,
    /// The server's WebSocket URL.
    pub ws: String,
    /// The server's lives, to tell connections a kill ended apart.
    pub lives: Arc<Lives>,
}

/// How long the connections of each kind were held before the server ended them.
type Holds = Mutex<BTreeMap<Kind, Vec<Duration>>>;

/// Runs slowloris while the stage is the abuse, counting into `tally`; returns notes on how
/// long the server held each kind.
pub async fn run(plan: Plan, stage: watch::Receiver<Stage>, tally: Arc<Tally>) -> Vec<String> {
    let holds: Arc<Holds> = Arc::default();
    let mut tasks = Vec::new();
    for kind in KINDS {
        for _ in 0..plan.per_kind {
            let (plan, stage, tally, holds) =
                (plan.clone(), stage.clone(), tally.clone(), holds.clone());
            tasks.push(tokio::spawn(keep(kind, plan, stage, tally, holds)));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let holds = holds.lock().expect("holds lock");
    KINDS
        .iter()
        .filter_map(|k| holds.get(k).map(|h| note(*k, h)))
        .collect()
}

/// A sentence on how long the server held `kind`'s connections.
fn note(kind: Kind, holds: &[Duration]) -> String {
    let secs: Vec<f64> = holds.iter().map(Duration::as_secs_f64).collect();
    let max = secs.iter().copied().fold(0.0, f64::max);
    let mean = secs.iter().sum::<f64>() / secs.len().max(1) as f64;
    format!(
        "{}: {} connections ended by the server after {mean:.1} s on average, {max:.1} s at most (its deadline: {} s)",
        kind.name(),
        secs.len(),
        kind.deadline().as_secs()
    )
}

/// Keeps one slow connection of `kind` open, opening it again whenever the server ends it.
async fn keep(
    kind: Kind,
    plan: Plan,
    mut stage: watch::Receiver<Stage>,
    tally: Arc<Tally>,
    holds: Arc<Holds>,
) {
    let late = kind.deadline() + DEADLINE_MARGIN;
    while abusing(&stage) {
        let began = plan.lives.now();
        let ended = match kind {
            Kind::WsSilent => silent(&plan.ws, &mut stage).await,
            _ => drip(kind, &plan, &mut stage).await,
        };
        let name = kind.name();
        let killed = plan.lives.met_a_kill(began);
        match ended {
            Ended::ByServer(..) if killed => tally.add(&format!("{name}: ended by a server kill")),
            Ended::ByServer(how, after) => {
                tally.add(&format!("{name}: ended by the server ({how})"));
                if after > late {
                    tally.add(&format!("{name}: held past its deadline"));
                }
                let mut h = holds.lock().expect("holds lock");
                h.entry(kind).or_default().push(after);
            }
            Ended::StillOpen(age) if age > late => {
                tally.add(&format!("{name}: still open at the end, past its deadline"))
            }
            Ended::StillOpen(_) => tally.add(&format!("{name}: still open at the end")),
            Ended::NoConnection if killed => {
                tally.add(&format!(
                    "{name}: could not connect while the server was down"
                ));
                tokio::time::sleep(PAUSE).await;
            }
            Ended::NoConnection => {
                tally.add(&format!("{name}: could not connect"));
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
}

/// Drips `kind`'s pieces on a raw TCP connection until the server ends it or the abuse does.
async fn drip(kind: Kind, plan: &Plan, stage: &mut watch::Receiver<Stage>) -> Ended {
    let to = match kind {
        Kind::TcpHeader => plan.tcp,
        _ => plan.http,
    };
    let Ok(mut stream) = TcpStream::connect(to).await else {
        return Ended::NoConnection;
    };
    let start = Instant::now();
    let mut pieces = kind.pieces(&to.to_string()).into_iter();
    let mut tick = tokio::time::interval(DRIP);
    let mut buf = [0u8; 1024];
    let mut answered = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Some(piece) = pieces.next()
                    && let Err(e) = stream.write_all(&piece).await
                {
                    return Ended::ByServer(how(&e, answered), start.elapsed());
                }
            }
            read = stream.read(&mut buf) => match read {
                Ok(0) => return Ended::ByServer(closed(answered), start.elapsed()),
                // An answer (an HTTP error page): read on until the server closes.
                Ok(_) => answered = true,
                Err(e) => return Ended::ByServer(how(&e, answered), start.elapsed()),
            },
            _ = abuse_over(stage) => return Ended::StillOpen(start.elapsed()),
        }
    }
}

/// A finished WebSocket upgrade that never sends the FLEX header.
async fn silent(url: &str, stage: &mut watch::Receiver<Stage>) -> Ended {
    let Ok(mut conn) = Conn::open_ws(url, None, true).await else {
        return Ended::NoConnection;
    };
    let start = Instant::now();
    loop {
        tokio::select! {
            read = conn.next_wire() => match read {
                Ok(Ok(_)) => continue,
                Ok(Err(Got::Close(code, _))) => {
                    return Ended::ByServer(format!("close code {code}"), start.elapsed());
                }
                Ok(Err(_)) | Err(_) => return Ended::ByServer("closed".into(), start.elapsed()),
            },
            _ = abuse_over(stage) => return Ended::StillOpen(start.elapsed()),
        }
    }
}

/// How a connection the server ended looked from here.
fn how(e: &std::io::Error, answered: bool) -> String {
    let what = match e.kind() {
        std::io::ErrorKind::ConnectionReset => "reset",
        std::io::ErrorKind::BrokenPipe => "reset (broken pipe)",
        _ => "error",
    };
    with_answer(what, answered)
}

fn closed(answered: bool) -> String {
    with_answer("closed", answered)
}

fn with_answer(what: &str, answered: bool) -> String {
    match answered {
        true => format!("{what} after an answer"),
        false => what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slow_pieces_never_finish_what_they_start() {
        let header: Vec<u8> = Kind::TcpHeader.pieces("h").concat();
        assert_eq!(header, HEADER[..4]);
        for kind in [Kind::HttpHead, Kind::WsUpgrade] {
            let head = String::from_utf8(kind.pieces("127.0.0.1:1").concat()).unwrap();
            assert!(head.contains("Host: 127.0.0.1:1\r\n"), "{head}");
            assert!(!head.contains("\r\n\r\n"), "the head must never end");
            // Enough pieces to outlast any deadline several times over.
            assert!(kind.pieces("h").len() as u32 * DRIP > kind.deadline() * 10);
        }
        let n = note(
            Kind::TcpHeader,
            &[Duration::from_secs(5), Duration::from_secs(6)],
        );
        assert!(
            n.contains("2 connections") && n.contains("5.5 s on average"),
            "{n}"
        );
    }
}
