//! The ringmq broker engine.
#![warn(missing_docs)]
pub mod admin;
pub mod auth;
pub mod broker;
pub mod cli;
pub mod config;
pub mod connection;
pub mod mesh;
pub mod message;
pub mod notify;
pub mod overload;
pub mod persist;
pub mod preflight;
pub mod ratelimit;
pub mod retained;
pub mod runtime;
pub mod session;
#[cfg(test)]
mod test_strategies;
pub mod tls;
pub mod transport;
pub mod trie;
pub mod websocket;
