//! Runs fuse-backend-rs's [`Server`] on one request held in memory and captures its reply in
//! memory, instead of reading from and writing to /dev/fuse.
//!
//! `Server::handle_message` takes a `Reader` over the request bytes and a writer on the FUSE
//! device. A [`FuseDevWriter`] writes into the buffer it is given; once split it is
//! "buffered": replies accumulate in that buffer and only the final `commit` (error replies,
//! READ, READDIR) writes them to its file descriptor. So the writer is split up front and
//! its descriptor is /dev/null: every reply ends up, complete and contiguous
//! (`fuse_out_header` then the payload), in the caller's buffer.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::{MetricsHook, Server};
use fuse_backend_rs::transport::{FuseBuf, FuseDevWriter, Reader};

use super::abi::{self, OUT_HEADER_LEN};

/// Where committed replies go: /dev/null (the bytes that matter are already in the buffer).
pub struct Sink(File);

impl Sink {
    pub fn open() -> io::Result<Sink> {
        File::options().write(true).open("/dev/null").map(Sink)
    }
}

/// A captured reply: `len` bytes at the start of the reply buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub len: usize,
    pub error: i32,
}

/// Serves the request in `request` (a whole FUSE message: `fuse_in_header` first) and puts
/// the reply into `reply`. `None` if the request is malformed or got no reply (FORGET,
/// INTERRUPT), or if what was written is not a reply to it.
pub fn serve<F: FileSystem + Sync>(
    server: &Server<F>,
    request: &mut [u8],
    reply: &mut [u8],
    sink: &Sink,
    hook: &dyn MetricsHook,
) -> Option<Reply> {
    if request.len() < abi::IN_HEADER_LEN || reply.len() < OUT_HEADER_LEN {
        return None;
    }
    let unique = abi::u64_at(request, 8);
    reply[..OUT_HEADER_LEN].fill(0);
    let capacity = reply.len();
    {
        let reader = Reader::from_fuse_buffer(FuseBuf::new(request)).ok()?;
        let mut writer = FuseDevWriter::<()>::new(sink.0.as_raw_fd(), reply).ok()?;
        // Makes `writer` buffered over the whole of `reply`; the empty rest is dropped.
        writer.split_at(capacity).ok()?;
        if let Err(err) = server.handle_message(reader, writer.into(), None, Some(hook)) {
            // Typically a request that cannot be decoded; an error reply may still be there.
            tracing::debug!(error = %err, "cannot handle a FUSE request");
        }
    }
    let len = abi::u32_at(reply, 0) as usize;
    let error = abi::u32_at(reply, 4) as i32;
    let answered = abi::u64_at(reply, 8) == unique && (OUT_HEADER_LEN..=capacity).contains(&len);
    answered.then_some(Reply { len, error })
}
