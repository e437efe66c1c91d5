//! capf: a Certificate Authority Proxy Function server for Cisco IP phones.
//!
//! See the README for the module layout and how data flows between modules.

pub mod auth;
pub mod device;
pub mod keyspec;
pub mod store;
