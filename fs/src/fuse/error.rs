//! Errors of the FUSE transport: setting up, mounting, serving and unmounting.
//!
//! Messages do not repeat their source; print the chain (`{:#}` with anyhow) for the whole
//! story on one line.

use std::io;
use std::path::PathBuf;

/// Why the FUSE transport could not start, run or stop. Every message is one line.
#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    /// A path in the view table cannot be turned into a directory tree.
    #[error("invalid view path {path:?}: {reason}")]
    InvalidViewPath { path: String, reason: &'static str },

    /// Mounting needs root (mount(2) of a FUSE file system with allow_other).
    #[error("must run as root (effective uid is {euid})")]
    NotRoot { euid: u32 },

    /// The FUSE device is missing or unusable.
    #[error("{path} is not available: {reason}")]
    NoFuseDevice { path: &'static str, reason: String },

    /// The mount point does not exist or cannot be inspected.
    #[error("mount point {}", path.display())]
    MountPointAccess {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The mount point is not a directory.
    #[error("mount point {} is not a directory", path.display())]
    NotADirectory { path: PathBuf },

    /// Something is already mounted on the mount point.
    #[error("mount point {} is already a mount point", path.display())]
    AlreadyMounted { path: PathBuf },

    /// mount(2) or the session setup failed.
    #[error("cannot mount on {}", path.display())]
    Mount {
        path: PathBuf,
        #[source]
        source: fuse_backend_rs::transport::Error,
    },

    /// A worker channel (epoll on the FUSE device) could not be created.
    #[error("cannot create a FUSE channel")]
    Channel(#[source] fuse_backend_rs::transport::Error),

    /// A worker thread could not be started.
    #[error("cannot start a worker thread")]
    Spawn(#[source] io::Error),

    /// Blocking or waiting for the shutdown signals failed.
    #[error("cannot set up signal handling")]
    Signal(#[source] nix::Error),

    /// The CPU affinity of the process could not be read.
    #[error("cannot read the CPU affinity")]
    Affinity(#[source] nix::Error),

    /// FUSE over io_uring was required and cannot be used.
    #[error("FUSE over io_uring")]
    Uring(#[from] super::uring::UringError),

    /// Unmounting failed.
    #[error("cannot unmount {}", path.display())]
    Unmount {
        path: PathBuf,
        #[source]
        source: fuse_backend_rs::transport::Error,
    },
}
