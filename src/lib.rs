//! The `capf` binary's tools: the admin CLI and its API client, the phone simulator and the
//! load generator. The server itself lives in `capf-server` and the layers below it.

pub mod bench;
pub mod cli;
pub mod client;
pub mod phone;
