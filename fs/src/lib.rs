//! sysvisor-fs: one multithreaded FUSE server that serves each caller a virtual view of
//! /proc and /sys shaped by its own cgroup limits and pid namespace.
//!
//! Layers, from the kernel up:
//! - [`fuse`]: the FUSE transport (mount, worker threads, inodes, handles).
//! - [`service`]: turns "pid P reads view V" into bytes, through the caches.
//! - [`caller`]: who is asking (pid -> cgroups, pid namespace), cached per process.
//! - [`cgroup`]: limits and usage from cgroup v1 and v2 behind one interface.
//! - [`views`]: one module per virtual file, each a pure renderer plus its inputs.
//! - [`host`]: the host's own /proc and /sys files.
//! - [`loadavg`]: per-cgroup load averages, sampled in the background.
//! - [`sysctl`]: the dynamic trees (`proc/sys`, parts of `sys/`): namespaced, emulated and
//!   read-only entries, by the caller's namespaces and container.
//! - [`daemon`]: daemon mode (`serve`): the registry of containers and the control socket.
//! - [`mounttrap`]: proc and sysfs mounts inside containers (seccomp user notification).

pub mod cache;
pub mod caller;
pub mod cgroup;
pub mod daemon;
pub mod fuse;
pub mod host;
pub mod loadavg;
pub mod mounttrap;
pub mod service;
pub mod sysctl;
pub mod views;
