//! Disk buffer.
