//! Helpers for the end-to-end suite: the kit it shares with the load generator
//! (`flexim-testkit`: real server and Redis processes, the framed connection) and a small
//! WebDriver client for the browser tests.

pub mod webdriver;

pub use flexim_testkit::*;
