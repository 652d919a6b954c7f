//! FUSE transport: serves the view table (read-only files) and the dynamic trees of
//! [`crate::sysctl`] (`proc/sys` and parts of `sys/`, some files writable).
//!
//! Layers, from the kernel up:
//! - [`session`]: pre-mount checks, mount(2) via fuse-backend-rs `FuseSession`, one pinned
//!   worker thread per CPU (each on its own clone of the device, see [`devfuse`]), signals
//!   and unmount;
//! - [`uring`]: FUSE over io_uring, one queue per CPU served on that CPU (INIT handshake,
//!   ring entries, reply capture); chosen by [`Transport`];
//! - `worker`: what the threads of both share (request counters, exit notice, pinning);
//! - [`filesystem`]: the FUSE operations (`FileSystem` impl): attributes, lookups, readdir,
//!   open = render a snapshot through the service, read = slices of it, writes to dynamic
//!   files;
//! - [`inode`]: the static tree built from [`crate::views::TABLE`] and the mirror table
//!   (one inode per view file, whoever asks), and the counted inodes of dynamic nodes;
//! - [`own`]: daemon mode's second mount, every registered container's own files served
//!   from the kernel's page cache (zero-message opens, attributes cached for the TTL);
//! - [`handles`]: the sharded table of open-file snapshots and directory listings.

pub mod devfuse;
pub mod error;
pub mod filesystem;
pub mod handles;
pub mod inode;
pub mod own;
pub mod session;
pub mod uring;
mod worker;

pub use error::FuseError;
pub use filesystem::{ContentSource, VirtualFs};
pub use inode::Tree;
pub use own::{ContainerInits, OwnFs};
pub use session::{ActiveTransport, Mount, RequestStats, ShutdownSignals, StopReason, Transport};
