//! Placeholder.
#[derive(Debug)]
pub struct ProcCgroups;
pub struct CgroupEntry;
