//! How comfyc and comfyd reach a ComfyUI server: what both need and neither owns.
//!
//! - [`tls`]: one rustls configuration, the system's trusted certificates plus a private CA
//!   named by `SSL_CERT_FILE`, shared by HTTP (reqwest) and the websocket (tungstenite) so both
//!   trust the same servers.
//! - [`headers`]: extra request headers (`--header 'Authorization: Bearer ...'`), parsed once
//!   and marked sensitive so their values never show in logs or messages.
//! - [`cause`]: what an error chain says went wrong, for messages: the innermost cause, and
//!   for a TLS failure a sentence saying what is wrong with the certificate and what to do.
//!
//! The compiler library stays pure (no network); this crate is used by the `comfyc` binary's
//! `nodes pull` and by the daemon's ComfyUI client.

pub mod cause;
pub mod headers;
pub mod tls;

pub use cause::{describe, tls_error};
pub use headers::{HeaderError, Headers};
pub use tls::{TlsError, client_config};
