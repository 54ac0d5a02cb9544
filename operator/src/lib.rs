//! Tailor's operator (library part).
