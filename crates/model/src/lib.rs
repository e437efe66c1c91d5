//! The types every layer of capf shares: device names, key specifications, what an operation
//! is and where it stands, and CUCM's wording of a status.
//!
//! No I/O, no async runtime, no database, TLS or HTTP crate: the protocol crate and its fuzz
//! targets build on this alone.

pub mod clock;
pub mod device;
pub mod keyspec;
pub mod operation;
pub mod status;
