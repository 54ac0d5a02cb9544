//! Tailor's node agent: applies its node's `NodeLogConfig`.

pub mod ack;
pub mod backup;
pub mod bench;
pub mod buffer;
pub mod checkpoint;
pub mod config;
pub mod decode;
pub mod docker;
pub mod encode;
pub mod engine;
pub mod event;
pub mod fsutil;
pub mod metrics;
pub mod moved_root;
pub mod pipeline;
pub mod process;
pub mod resolve;
pub mod secrets;
pub mod sinks;
pub mod status;
