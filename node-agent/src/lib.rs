//! Tailor's node agent: applies its node's `NodeLogConfig`.

pub mod backup;
pub mod event;
pub mod fsutil;
pub mod sinks;
