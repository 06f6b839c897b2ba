//! The end-to-end suite: real `flexim-server` processes on 127.0.0.1 port 0 with temporary data
//! directories, real sockets (TCP, WebSocket, and both over TLS), real clients and real
//! cryptography.

mod abuse;
mod admin;
mod admin_users;
mod backup;
mod bad_input;
mod browser;
mod browser_rooms;
mod browser_tls;
mod chat;
mod cli;
mod cluster;
mod config_file;
mod consent;
mod crash;
mod deadlines;
mod delivery;
mod edge;
mod handshake;
mod limits;
mod link;
mod memory;
mod offline;
mod pairs;
mod pins;
mod privacy;
mod queues;
mod rates;
mod receipts;
mod redis_store;
mod rooms;
mod rooms_server;
mod routing;
mod server_cli;
mod tls;
