//! Tailor's node agent: applies its node's `NodeLogConfig`.

pub mod buffer;
pub mod event;
pub mod fsutil;
pub mod sinks;
