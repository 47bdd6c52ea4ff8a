//! `keeper-server`: the tokio driver, sessions, watches and the HTTP API.
pub mod peer;
