//! sysvisor-runc: a runc-compatible OCI runtime that rewrites a bundle into a system
//! container and hands the real work to runc.
//!
//! The `create`/`run` pipeline ([`lifecycle`]): parse args ([`cli`]) -> load spec
//! ([`spec`]) -> transform (pure, [`transform`], with the seccomp profile of [`seccomp`]
//! and the host's capabilities from [`caps`]) -> side effects (uid range [`idrange`],
//! id-shifted rootfs [`rootfs`], daemon registration [`daemon`]) -> runc ([`runc`]).
//! Errors go to runc's `--log` file in runc's format ([`log`]). Every other command passes
//! straight through to runc.

pub mod atomic_file;
pub mod caps;
pub mod cli;
pub mod daemon;
pub mod idrange;
pub mod lifecycle;
pub mod log;
pub mod mirrors;
pub mod rootfs;
pub mod runc;
pub mod seccomp;
pub mod spec;
pub mod transform;
