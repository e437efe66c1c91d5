//! The capf server: the service that carries out what sessions ask for, the CAPF listeners
//! (TLS seam, limits, deadlines), the admin API, configuration, metrics and the application
//! that wires them together.

pub mod api;
pub mod app;
pub mod certinfo;
pub mod config;
pub mod crypto_pool;
pub mod fds;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pinned;
pub mod scrape;
pub mod server;
pub mod service;
pub mod supervise;
pub mod tokens;
