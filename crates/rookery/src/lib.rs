//! Rookery: the wiring of one `rookery` process (configuration, roles,
//! operations endpoints) and the administration commands.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod http;
pub mod server;
pub mod telemetry;
pub mod upload;

pub use config::Config;
