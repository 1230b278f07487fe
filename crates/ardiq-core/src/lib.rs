//! ArdiQ engine (placeholder while the protocol lands).
