//! FUSE transport (placeholder).
