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
    let mut server = TestServer::start();
    assert!(server.stop(), "exit status 0 after SIGTERM");
    assert!(server.logs().contains("shutting down"));
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = flexim_tests::TempDir::new("busy");
    let out = Command::new(bin_dir().join("flexim-server"))
        .args(["--tcp", &addr, "--http", "127.0.0.1:0", "--data"])
        .arg(dir.0.join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
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
    let _alice = flexim_tests::Raw::login(server.tcp, &flexim_tests::new_key())
        .await
        .unwrap();
    let (_, metrics) = flexim_tests::http_get(&server.http, "/metrics")
        .await
        .unwrap();
    assert!(metrics.contains("flexim_logins_total 1"), "{metrics}");
}
