//! capf's public-key infrastructure: the CAPF identity (its certificate and key), issuing
//! LSCs through a signer seam, checking the keys phones send, and authenticating phones by
//! an existing certificate (path building and signature checks).

pub mod auth;
pub mod ca;
pub mod files;
