//! The delivery contract under fire: the server is killed with SIGKILL again and again while
//! several clients send, and every message reaches the recipient's application exactly once,
//! in each sender's order.
//!
//! Everything here is the real thing: server processes killed by the kernel mid-write, the
//! client library's outbox resending what was never confirmed, and its de-duplication carried
//! across reconnects. The recipient drops in and out, so messages take both paths: relayed
//! from memory (held until acknowledged) and stored (group-committed, then delivered).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flexim_client::{Client, Event, Identity, Outbox, Seen};
use flexim_protocol::status;
use flexim_tests::{TestServer, new_key};
use tokio::sync::Mutex;

/// How many times the server is killed.
const KILLS: usize = 20;
/// Senders; the first speaks WebSocket, the others TCP.
const SENDERS: usize = 3;
/// How long the whole test may take once the killing is over (a bound, not a timing claim).
const SETTLE: Duration = Duration::from_secs(120);

/// A pseudo-random duration between `lo` and `hi` milliseconds.
fn jitter(lo: u64, hi: u64) -> Duration {
    let mut b = [0u8; 8];
    flexim_tests::random(&mut b);
    Duration::from_millis(lo + u64::from_le_bytes(b) % (hi - lo))
}

/// Connects, retrying while the server is down or restarting.
async fn connect(addr: &str, me: &Identity) -> Client {
    loop {
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_secs(5), Client::connect(addr, me, None)).await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// What one sender did.
#[derive(Debug, Default)]
struct Sent {
    /// Messages written (numbered 0..count), each kept until confirmed.
    count: usize,
    /// Ids the server answered "stored" (2) or later reported stored (8).
    stored: Vec<String>,
}

/// Sends numbered messages until `stop`, reconnecting and resending after every crash; then
/// stays until every message it wrote is confirmed.
async fn sender(
    index: usize,
    addr: String,
    me: Identity,
    to: String,
    stop: Arc<AtomicBool>,
) -> Sent {
    let mut sent = Sent::default();
    let mut outbox = Outbox::new();
    let started = Instant::now();
    loop {
        let mut c = connect(&addr, &me).await;
        match c.resend(std::mem::take(&mut outbox)).await {
            Ok(answers) => sent.stored.extend(
                answers
                    .into_iter()
                    .filter(|s| s.status == status::STORED)
                    .filter_map(|s| s.id),
            ),
            Err(_) => {
                outbox = c.take_outbox();
                continue;
            }
        }
        loop {
            if stop.load(Ordering::SeqCst) {
                if c.outbox().is_empty() {
                    return sent;
                }
                assert!(
                    started.elapsed() < SETTLE + Duration::from_secs(60),
                    "sender {index}: {} messages never confirmed",
                    c.outbox().len()
                );
                // Wait for the receipts of what is still unconfirmed.
                match tokio::time::timeout(Duration::from_millis(200), c.next_event()).await {
                    Ok(Ok(Event::Receipt { id, status, .. }))
                        if status.status == status::STORED_LATER =>
                    {
                        sent.stored.push(id)
                    }
                    Ok(Ok(Event::Closed)) | Ok(Err(_)) => break,
                    _ => {}
                }
                continue;
            }
            // The newest unconfirmed message, to tell afterwards whether this one joined the
            // outbox (it is appended there before it is sent).
            let newest = |c: &Client| c.outbox().ids().last().map(str::to_string);
            let before = newest(&c);
            let text = format!("{index}:{}", sent.count);
            let result = c.send_text(&to, &text, &[]).await;
            // The message counts as written once it was answered, or is in the outbox (it is
            // resent until confirmed).
            match &result {
                Ok(s) => {
                    if s.status == status::STORED {
                        sent.stored.extend(s.id.clone());
                    }
                    sent.count += 1;
                }
                Err(_) if newest(&c) != before => sent.count += 1,
                Err(_) => {}
            }
            if result.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(4)).await;
        }
        outbox = c.take_outbox();
    }
}

/// Receives, acknowledging after each message, dropping in and out, until told to stop.
async fn recipient(
    addr: String,
    me: Identity,
    got: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    let mut seen = Seen::default();
    loop {
        let mut c = connect(&addr, &me).await;
        c.restore_seen(seen);
        let online_until = Instant::now() + jitter(150, 600);
        while Instant::now() < online_until || stop.load(Ordering::SeqCst) {
            match tokio::time::timeout(Duration::from_millis(100), c.next_event()).await {
                Ok(Ok(Event::Message(m))) => {
                    // Processing: the application records it, then acknowledges it.
                    got.lock().await.push(m.text.clone());
                    if let Some(id) = m.id
                        && c.ack(&[id]).await.is_err()
                    {
                        break;
                    }
                }
                Ok(Ok(Event::Closed)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) if stop.load(Ordering::SeqCst) => return,
                Err(_) => {}
            }
        }
        seen = c.take_seen();
        drop(c);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(jitter(20, 300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmed_message_arrives_once_in_order_across_sigkills() {
    let mut server = TestServer::start();
    let tcp = server.tcp.to_string();
    // Bob accepted every sender (they are his contacts), so all of them are relayed.
    let bob_key = new_key();
    let keys: Vec<_> = (0..SENDERS).map(|_| new_key()).collect();
    let mut everyone: Vec<_> = keys.iter().collect();
    everyone.push(&bob_key);
    server.introduce(&everyone).await;
    let bob = Identity::from_secret(bob_key.clone());
    let bob_hex = bob.public_key().to_hex();
    let stop_sending = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let addr = if i == 0 {
                server.ws.clone()
            } else {
                tcp.clone()
            };
            tokio::spawn(sender(
                i,
                addr,
                Identity::from_secret(keys[i].clone()),
                bob_hex.clone(),
                stop_sending.clone(),
            ))
        })
        .collect();
    let got = Arc::new(Mutex::new(Vec::new()));
    let stop_receiving = Arc::new(AtomicBool::new(false));
    let receiving = tokio::spawn(recipient(
        tcp.clone(),
        bob,
        got.clone(),
        stop_receiving.clone(),
    ));

    let kills = AtomicUsize::new(0);
    for _ in 0..KILLS {
        tokio::time::sleep(jitter(200, 700)).await;
        server = tokio::task::block_in_place(move || server.crash_and_restart());
        kills.fetch_add(1, Ordering::SeqCst);
    }
    stop_sending.store(true, Ordering::SeqCst);
    let mut sent = Vec::new();
    for s in senders {
        sent.push(
            tokio::time::timeout(SETTLE, s)
                .await
                .expect("every sender's messages are confirmed")
                .unwrap(),
        );
    }
    // Everything is confirmed; wait until the recipient has it all.
    let total: usize = sent.iter().map(|s| s.count).sum();
    let deadline = Instant::now() + SETTLE;
    while got.lock().await.len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A little longer, so a duplicate on its way would be seen.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_receiving.store(true, Ordering::SeqCst);
    receiving.await.unwrap();

    let got = got.lock().await.clone();
    let stored: usize = sent.iter().map(|s| s.stored.len()).sum();
    eprintln!(
        "{} kills; {total} messages written by {SENDERS} senders, {stored} answered stored; {} received",
        kills.load(Ordering::SeqCst),
        got.len()
    );
    assert!(
        stored > 0,
        "some messages went through the store (the recipient was away at times)"
    );
    // Exactly once, in each sender's order: sender i's messages arrive as i:0, i:1, ...
    for (i, s) in sent.iter().enumerate() {
        let mine: Vec<usize> = got
            .iter()
            .filter_map(|t| t.strip_prefix(&format!("{i}:")))
            .map(|n| n.parse().unwrap())
            .collect();
        let want: Vec<usize> = (0..s.count).collect();
        assert_eq!(
            mine, want,
            "sender {i}: every message once, in order ({} written)",
            s.count
        );
    }
    assert_eq!(got.len(), total, "nothing else arrived");
}
