//! Request service: "process PID reads view V" -> bytes (placeholder: host files only,
//! replaced by the cached per-caller implementation).

use std::sync::Arc;
use std::time::Duration;

use crate::host::HostProc;
use crate::views::{ViewError, TABLE};

/// How the service is set up.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How long a rendered view may be served again to callers with the same view.
    pub cache_ttl: Duration,
    pub host: HostProc,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no such view {0}")]
    NoSuchView(usize),
    #[error("caller {pid} is gone")]
    CallerGone { pid: u32 },
    #[error(transparent)]
    View(#[from] ViewError),
}

pub struct Service {
    config: ServiceConfig,
}

impl Service {
    pub fn new(config: ServiceConfig) -> Result<Arc<Service>, ServiceError> {
        Ok(Arc::new(Service { config }))
    }

    /// The bytes of view `view` (an index into [`TABLE`]) as process `pid` must see them.
    pub fn content(&self, view: usize, pid: u32) -> Result<Vec<u8>, ServiceError> {
        let _ = pid;
        let spec = TABLE.get(view).ok_or(ServiceError::NoSuchView(view))?;
        let rel = spec.path.strip_prefix("proc/").unwrap_or(spec.path);
        Ok(self.config.host.read(rel)?.into_bytes())
    }

    /// Stops background work (the load average sampler).
    pub fn shutdown(&self) {}
}
