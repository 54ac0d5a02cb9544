//! Harness for the end-to-end suites (see tests/).
