//! Helpers for the end-to-end suite: the kit it shares with the load generator
//! (`flexim-testkit`: real server and Redis processes, the framed connection), a small
//! WebDriver client for the browser tests, and certificates for the TLS tests.

pub mod certs;
pub mod webdriver;

pub use flexim_testkit::*;
