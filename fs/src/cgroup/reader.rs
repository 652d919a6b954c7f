//! Placeholder.
pub struct Cgroups;
