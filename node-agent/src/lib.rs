//! Tailor's node agent: applies its node's `NodeLogConfig`.

pub mod docker;
pub mod event;
pub mod fsutil;
pub mod sinks;
