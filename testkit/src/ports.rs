//! Ports for test servers' listeners, from below the kernel's ephemeral range.
//!
//! A test that restarts its server on the same ports (a crash, a re-install, a browser page
//! that must reconnect to the same origin) leaves them free for a moment. A port from the
//! ephemeral range could be taken in that moment by any other test's listener on port 0, or
//! by any client connection's local end, and the restart would fail. A port below the range is
//! never handed out that way: only another test picking the same port here could take it, and
//! it first checks that the port is free.

use std::net::{IpAddr, SocketAddr, TcpListener};

/// The lowest port picked: above the well-known and most registered services' ports.
const LOWEST: u16 = 10_000;

/// The first port of the kernel's ephemeral range (Linux; 32768 where it cannot be read).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A port on `ip` that is free now, below the ephemeral range (or port 0, for the OS to
/// choose, if the range leaves no room below it).
pub(crate) fn free_port(ip: IpAddr) -> u16 {
    let end = ephemeral_start();
    if end <= LOWEST + 100 {
        return 0;
    }
    for _ in 0..1000 {
        let mut r = [0u8; 2];
        crate::random(&mut r);
        let port = LOWEST + u16::from_le_bytes(r) % (end - LOWEST);
        // Free for a listener now (dropped at once: the server binds it next).
        if TcpListener::bind(SocketAddr::new(ip, port)).is_ok() {
            return port;
        }
    }
    0
}
