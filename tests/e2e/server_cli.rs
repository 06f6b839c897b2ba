//! The server binary: flags, environment, banner, key persistence, signals.

use std::process::Command;

use flexim_tests::{TestServer, bin_dir};

#[test]
fn the_banner_names_addresses_key_and_fingerprint() {
    let server = TestServer::start();
    assert_ne!(server.tcp.port(), 0, "port 0 was resolved");
    assert!(server.ws.starts_with("ws://127.0.0.1:") && server.ws.ends_with("/ws"));
    assert_eq!(server.key.len(), 64);
    let fp = server
        .banner
        .iter()
        .find_map(|l| l.strip_prefix("fingerprint: "))
        .expect("fingerprint line");
    assert_eq!(fp.replace(' ', ""), server.key);
    assert!(server.data_dir().join("server.key").exists());
}

#[test]
fn help_explains_flags_and_environment() {
    let out = Command::new(bin_dir().join("flexim-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--tcp",
        "FLEXIM_TCP",
        "--http",
        "FLEXIM_HTTP",
        "--data",
        "FLEXIM_DATA",
        "--admin",
        "[default: 127.0.0.1:9321]",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
}

#[test]
fn addresses_can_come_from_the_environment() {
    let dir = flexim_tests::TempDir::new("env");
    let mut child = Command::new(bin_dir().join("flexim-server"))
        .env("FLEXIM_TCP", "127.0.0.1:0")
        .env("FLEXIM_HTTP", "127.0.0.1:0")
        .env("FLEXIM_ADMIN", "127.0.0.1:0")
        .env("FLEXIM_DATA", dir.0.join("d"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let lines: Vec<String> = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .take_while(|l| l != "ready")
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("tcp: 127.0.0.1:") && !l.ends_with(":4321")),
        "{lines:?}"
    );
    assert!(dir.0.join("d").join("server.key").exists());
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut server = TestServer::start_with(&["--shutdown-grace", "3.5"]);
    let _a = std::net::TcpStream::connect(server.tcp).unwrap();
    let _b = std::net::TcpStream::connect(server.tcp).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(server.stop(), "exit status 0 after SIGTERM");
    let logs = server.logs();
    assert!(logs.contains("shutting down"), "{logs}");
    // It says what it did: two connections told, and closed.
    assert!(
        logs.contains("telling 2 connections the server stops (Status -17); waiting up to 3.5s"),
        "{logs}"
    );
    assert!(logs.contains("drained: 2 connections closed in"), "{logs}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = flexim_tests::TempDir::new("busy");
    let out = Command::new(bin_dir().join("flexim-server"))
        .args(["--tcp", &addr, "--http", "127.0.0.1:0", "--data"])
        .arg(dir.0.join("d"))
        // As developer machines often have it: still one line, no backtrace.
        .env("RUST_BACKTRACE", "full")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
}

#[tokio::test]
async fn http_serves_the_page_health_and_metrics() {
    let server = TestServer::start();
    let (status, body) = flexim_tests::http_get(&server.http, "/").await.unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("flexim"), "{body}");
    let (status, body) = flexim_tests::http_get(&server.http, "/healthz")
        .await
        .unwrap();
    assert!(
        status.contains("200") && body.trim() == "ok",
        "{status} {body}"
    );
    // One login shows up in the counters.
    let _alice = flexim_tests::Conn::login_tcp(server.tcp, &flexim_tests::new_key())
        .await
        .unwrap();
    // /metrics is on the admin listener.
    let admin = format!(
        "http://{}/",
        server.admin_addr().expect("an admin listener")
    );
    let (_, metrics) = flexim_tests::http_get(&admin, "/metrics").await.unwrap();
    assert!(metrics.contains("flexim_logins_total 1"), "{metrics}");
    // The gauge of sessions by transport.
    assert!(
        metrics.contains("flexim_sessions{transport=\"tcp\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flexim_sessions{transport=\"ws\"} 0\n"),
        "{metrics}"
    );
}

/// `/metrics` has what an operator graphs: histograms of the handshake, of delivery to
/// online users and of store commits, and gauges of what waits (frames and bytes queued for
/// sessions, bytes in the offline store).
#[tokio::test]
async fn metrics_graph_latencies_and_what_waits() {
    use flexim_tests::{Conn, message_with_id, new_key};
    let server = TestServer::start();
    let (alice, bob) = (new_key(), new_key());
    server.introduce(&[&alice, &bob]).await;
    let mut a = Conn::login_tcp(server.tcp, &alice).await.unwrap();
    let mut b = Conn::login_ws(&server.ws, &bob).await.unwrap();
    let to_bob =
        |id: &str| message_with_id(&alice.public_key(), &bob.public_key().to_hex(), id, id);
    a.send(&to_bob("m1")).await.unwrap();
    assert_eq!(b.message().await.unwrap().msg, "m1");
    drop(b);
    server.until_offline(&bob.public_key()).await;
    a.send(&to_bob("m2")).await.unwrap();
    let m = server.metrics().await.unwrap();
    let at_least = |name: &str, n: u64| {
        let got = m.get(name).copied();
        assert!(got.is_some_and(|v| v >= n), "{name}: {got:?} in {m:?}");
    };
    // introduce() logged each in once, and the kit's watcher: at least four handshakes.
    at_least("flexim_handshake_seconds_count", 4);
    at_least("flexim_handshake_seconds_bucket{le=\"+Inf\"}", 4);
    at_least("flexim_delivery_seconds_count", 1);
    at_least("flexim_store_commit_seconds_count", 1);
    assert!(m.contains_key("flexim_queued_frames"), "{m:?}");
    // m2 waits in the store: its bytes are counted there.
    let mut stored = 0;
    for _ in 0..100 {
        stored = server.metrics().await.unwrap()["flexim_stored_bytes"];
        if stored > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(stored > 41, "{stored}");
}

/// The browser bundle goes out gzipped to browsers that accept it, from the copy
/// `just build-web` made, so the page loads a quarter of the bytes.
#[tokio::test]
async fn the_browser_bundle_is_served_precompressed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pkg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../static/pkg");
    let gz = std::fs::metadata(pkg.join("flexim_web_bg.wasm.gz"))
        .expect("the bundle is built: run `just build-web` (or `just test`) first")
        .len();
    let plain = std::fs::metadata(pkg.join("flexim_web_bg.wasm"))
        .unwrap()
        .len();
    assert!(
        gz * 2 < plain,
        "gzip saves more than half: {gz} of {plain} bytes"
    );
    let server = TestServer::start();
    let host = server
        .http
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!(
        "GET /pkg/flexim_web_bg.wasm HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("content-type: application/wasm"), "{head}");
    assert_eq!((raw.len() - split - 4) as u64, gz);
}

#[test]
fn bad_store_and_retention_values_are_clear_errors() {
    for (flag, value, says) in [
        ("--store", "mysql://x", "use `embedded` or a Redis URL"),
        ("--retention", "5x", "the unit must be s, m, h or d"),
        ("--retention", "soon", "is not a duration like 30d"),
    ] {
        let out = Command::new(bin_dir().join("flexim-server"))
            .args([flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
    // A Redis that is not there is said so, not waited for.
    let dir = flexim_tests::TempDir::new("noredis");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(bin_dir().join("flexim-server"))
        .args(["--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--store"])
        .arg(format!("redis://127.0.0.1:{port}"))
        .arg("--data")
        .arg(dir.0.join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open the store"), "{err}");
}

/// `/readyz` says whether the server takes users: ready while its store answers, 503 with the
/// reason when the store (here Redis) is gone, and ready again once it is back; `/healthz`
/// says only that the process runs.
#[tokio::test]
async fn readyz_follows_the_store() {
    let mut redis = flexim_tests::RedisServer::start();
    let server = TestServer::start_with(&["--store", &redis.url]);
    let get = |path: &'static str| {
        let http = server.http.clone();
        async move { flexim_tests::http_get(&http, path).await.unwrap() }
    };
    let (status, body) = get("/readyz").await;
    assert!(
        status.contains("200") && body == "ready\n",
        "{status} {body}"
    );
    redis.kill();
    let (status, body) = get("/readyz").await;
    assert!(status.contains("503"), "{status} {body}");
    assert!(body.starts_with("not ready: the store"), "{body}");
    let (status, _) = get("/healthz").await;
    assert!(status.contains("200"), "{status}");
    redis.start_again();
    let mut ready = false;
    for _ in 0..100 {
        if get("/readyz").await.0.contains("200") {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(ready, "ready again once the store is back");
}

/// `--log-format json`: every log line is one JSON object, with the event's fields.
#[tokio::test]
async fn json_logs_are_one_object_a_line() {
    let mut server = TestServer::start_with(&["--log-format", "json"]);
    let key = flexim_tests::new_key();
    drop(
        flexim_tests::Conn::login_tcp(server.tcp, &key)
            .await
            .unwrap(),
    );
    assert!(server.stop());
    let logs = server.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.len() > 3, "{logs}");
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["fields"].is_object())
    );
    let hex = key.public_key().to_hex();
    assert!(
        lines.iter().any(
            |l| l["fields"]["message"] == "authenticated" && l["fields"]["key"] == hex.as_str()
        ),
        "{logs}"
    );
}
