//! Tailor's node agent: applies its node's `NodeLogConfig`.

pub mod event;
pub mod fsutil;
pub mod pipeline;
pub mod sinks;
