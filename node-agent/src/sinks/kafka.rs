//! Kafka output (in progress).
