//! Tailor's node agent (library part).
