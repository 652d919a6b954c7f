//! Placeholder until its renderer lands.
use super::{Request, ViewError};

pub fn generate(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    let _ = req;
    Ok(Vec::new())
}
