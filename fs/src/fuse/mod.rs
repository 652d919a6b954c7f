//! FUSE transport: serves the view table as a read-only file system.
//!
//! Layers, from the kernel up:
//! - [`session`]: pre-mount checks, mount(2) via fuse-backend-rs `FuseSession`, one pinned
//!   worker thread per CPU (each with its own epoll channel), signals and unmount;
//! - [`uring`]: FUSE over io_uring, one queue per CPU served on that CPU (INIT handshake,
//!   ring entries, reply capture); chosen by [`Transport`];
//! - `worker`: what the threads of both share (request counters, exit notice, pinning);
//! - [`filesystem`]: the FUSE operations (`FileSystem` impl): attributes, lookups, readdir,
//!   open = render a snapshot through the service, read = slices of it;
//! - [`inode`]: the static directory tree built from [`crate::views::TABLE`], and the inode
//!   numbers of files (one per file and cgroup set of the caller);
//! - [`handles`]: the sharded table of open-file snapshots.

pub mod error;
pub mod filesystem;
pub mod handles;
pub mod inode;
pub mod session;
pub mod uring;
mod worker;

pub use error::FuseError;
pub use filesystem::{ContentSource, VirtualFs};
pub use inode::Tree;
pub use session::{ActiveTransport, Mount, RequestStats, ShutdownSignals, StopReason, Transport};
