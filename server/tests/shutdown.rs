//! Shutdown waits for the connections themselves: when `Server::run` returns, every
//! connection's task has ended, those still waiting for their header included, so nothing of
//! the server is left running behind the caller's back.

use std::time::Duration;

use flexim_protocol::HEADER;
use flexim_server::{Config, EdgeConfig, Limits, Server, StoreChoice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; false if it is still open after `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(wait, read_all).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_only_once_every_connection_is_closed() {
    let dir = std::env::temp_dir().join(format!("flexim-shutdown-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = Config {
        tcp: "127.0.0.1:0".parse().unwrap(),
        http: "127.0.0.1:0".parse().unwrap(),
        data: dir.join("data"),
        static_dir: dir.join("static"),
        name: "test".into(),
        store: StoreChoice::Embedded,
        limits: Limits::default(),
        edge: EdgeConfig::default(),
    };
    let server = Server::bind(config).await.unwrap();
    let tcp = server.tcp_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    // One connection that has not sent its header (it would wait 5 s for it), one past it.
    let mut silent = TcpStream::connect(tcp).await.unwrap();
    let mut session = TcpStream::connect(tcp).await.unwrap();
    session.write_all(&HEADER).await.unwrap();
    let mut hello = [0u8; 3];
    session.read_exact(&mut hello).await.unwrap();
    assert_eq!(hello[0], 5, "the server's User datum comes first");

    stop.send(()).unwrap();
    let returned = tokio::time::timeout(Duration::from_secs(5), run).await;
    assert!(
        matches!(returned, Ok(Ok(Ok(d))) if d.connections == 2 && d.left == 0),
        "run returns: {returned:?}"
    );
    // Both are closed already when `run` has returned: no read waits.
    assert!(closed_within(&mut silent, Duration::from_millis(200)).await);
    assert!(closed_within(&mut session, Duration::from_millis(200)).await);
    let _ = std::fs::remove_dir_all(&dir);
}
