//! `keeper-client`: an async client for Keeper's HTTP API.
