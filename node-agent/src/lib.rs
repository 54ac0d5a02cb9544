//! Tailor's node agent: applies its node's `NodeLogConfig`.

pub mod ack;
pub mod docker;
pub mod encode;
pub mod event;
pub mod fsutil;
pub mod process;
pub mod resolve;
pub mod sinks;
