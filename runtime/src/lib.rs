//! sysvisor-runc: a runc-compatible OCI runtime that rewrites a bundle into a system
//! container and hands the real work to runc.
//!
//! The `create`/`run` pipeline: parse args ([`cli`]) -> load spec ([`spec`]) -> transform
//! (pure, [`transform`]) -> side effects (uid range [`idrange`], id-shifted rootfs
//! [`rootfs`], daemon registration [`daemon`]) -> exec runc ([`runc`]). Every other
//! command passes straight through to runc.

pub mod cli;
pub mod daemon;
pub mod idrange;
pub mod rootfs;
pub mod runc;
pub mod seccomp;
pub mod spec;
pub mod transform;
