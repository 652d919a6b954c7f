//! sysvisor-runc: a runc-compatible OCI runtime that rewrites a bundle into a system
//! container and hands the real work to runc.
//!
//! The `create`/`run` pipeline ([`lifecycle`]): parse args ([`cli`]) -> load spec
//! ([`spec`]) -> transform (pure, [`transform`], with the seccomp profile of [`seccomp`]
//! and the host's capabilities from [`caps`], [`nesting`] and [`systemd`] for system
//! software inside) -> side effects (uid range [`idrange`], volume directories
//! [`volumes`], id-shifted rootfs [`rootfs`], daemon registration [`daemon`]) -> runc
//! ([`runc`]) -> cgroup delegation ([`cgroups`]).
//! Errors go to runc's `--log` file in runc's format ([`log`]). Every other command passes
//! straight through to runc.

pub mod atomic_file;
pub mod binds;
pub mod caps;
pub mod cgroups;
pub mod cli;
pub mod daemon;
pub mod docker;
pub mod idrange;
pub mod lifecycle;
pub mod log;
pub mod mirrors;
pub mod nesting;
pub mod rootfs;
pub mod runc;
pub mod seccomp;
pub mod spec;
pub mod systemd;
pub mod transform;
pub mod volumes;
