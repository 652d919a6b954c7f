//! Request service (placeholder).
