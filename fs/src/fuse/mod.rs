//! FUSE transport: serves the view table as a read-only file system.
//!
//! Layers, from the kernel up:
//! - [`session`]: pre-mount checks, mount(2) via fuse-backend-rs `FuseSession`, one pinned
//!   worker thread per CPU (each with its own epoll channel), signals and unmount;
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

pub use error::FuseError;
pub use filesystem::{ContentSource, VirtualFs};
pub use inode::Tree;
pub use session::{Mount, RequestStats, ShutdownSignals, StopReason};
