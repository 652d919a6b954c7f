//! Placeholder.
pub enum Controller {}
pub struct Layout;
pub struct Mount;
pub enum MountKind {}
