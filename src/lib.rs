//! capf: a Certificate Authority Proxy Function server for Cisco IP phones.
//!
//! See the README for the module layout and how data flows between modules.

pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod ca;
pub mod certinfo;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto_pool;
pub mod device;
pub mod files;
pub mod keyspec;
pub mod logging;
pub mod metrics;
pub mod phone;
pub mod proto;
pub mod server;
pub mod service;
pub mod session;
pub mod status;
pub mod store;
pub mod tokens;
