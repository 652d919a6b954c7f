//! FUSE INIT, answered by hand on /dev/fuse so that the reply can ask for io_uring.
//!
//! INIT always goes over /dev/fuse, and the kernel only turns to io_uring if the reply sets
//! `FUSE_OVER_IO_URING`, a `flags2` bit that fuse-backend-rs 0.14 does not know (it drops
//! unknown bits). So the first request is read here, served by the [`Server`] as usual
//! (which records the protocol version and calls `FileSystem::init`), and its reply gets the
//! bit (and `FUSE_INIT_EXT`, without which the kernel ignores `flags2`) before it is written.

use std::fs::File;
use std::io::{Read, Write};
use std::mem::offset_of;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use fuse_backend_rs::abi::fuse_abi::{InitIn, InitOut, Opcode};
use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::{MetricsHook, Server};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::abi::{self, put_u32, u32_at, FLAGS2_OVER_IO_URING, FLAG_INIT_EXT, IN_HEADER_LEN};
use super::capture::{self, Sink};
use super::UringError;

/// How long the kernel may take to send INIT after mount(2) (it is queued by the mount).
const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What INIT settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// The kernel offered io_uring and the reply accepted it.
    pub uring: bool,
    /// Payload buffer each io_uring entry needs.
    pub payload_len: usize,
}

/// Reads INIT from `device` (non-blocking, freshly mounted) and answers it with `server`,
/// asking for io_uring if the kernel offers it.
pub fn answer<F: FileSystem + Sync>(
    device: &File,
    server: &Server<F>,
    bufsize: usize,
    hook: &dyn MetricsHook,
) -> Result<Negotiated, UringError> {
    let mut request = vec![0u8; bufsize];
    let len = read_request(device, &mut request)?;
    let request = &mut request[..len];
    let opcode = u32_at(request, 4);
    if opcode != Opcode::Init as u32 {
        return Err(UringError::Init(format!("first request has opcode {opcode}, not INIT")));
    }
    let offered = kernel_offers_uring(request);
    let mut reply = vec![0u8; 4096];
    let sink = Sink::open().map_err(|e| UringError::Init(format!("cannot open /dev/null: {e}")))?;
    let Some(answer) = capture::serve(server, request, &mut reply, &sink, hook) else {
        return Err(UringError::Init("INIT got no reply".into()));
    };
    let reply = &mut reply[..answer.len];
    let body = abi::OUT_HEADER_LEN;
    let complete = answer.error == 0 && reply.len() >= body + std::mem::size_of::<InitOut>();
    let uring = offered && complete;
    let mut payload_len = 0;
    if complete {
        let max_write = u32_at(reply, body + offset_of!(InitOut, max_write));
        let at = body + offset_of!(InitOut, max_pages);
        let max_pages = u16::from_ne_bytes([reply[at], reply[at + 1]]);
        payload_len = abi::payload_len(max_write, max_pages, page_size());
    }
    if uring {
        let flags = body + offset_of!(InitOut, flags);
        let flags2 = body + offset_of!(InitOut, flags2);
        put_u32(reply, flags, u32_at(reply, flags) | FLAG_INIT_EXT);
        put_u32(reply, flags2, u32_at(reply, flags2) | FLAGS2_OVER_IO_URING);
    }
    let mut device_w = device;
    device_w
        .write_all(reply)
        .map_err(|e| UringError::Init(format!("cannot reply to INIT: {e}")))?;
    if !offered {
        tracing::debug!("the kernel did not offer FUSE over io_uring in INIT");
    }
    Ok(Negotiated { uring, payload_len })
}

/// Whether INIT's `flags2` carries `FUSE_OVER_IO_URING` (set by the kernel when its
/// `enable_uring` parameter is on).
fn kernel_offers_uring(request: &[u8]) -> bool {
    let flags_at = IN_HEADER_LEN + offset_of!(InitIn, flags);
    let flags2_at = IN_HEADER_LEN + std::mem::size_of::<InitIn>();
    if request.len() < flags2_at + 4 {
        return false;
    }
    u32_at(request, flags_at) & FLAG_INIT_EXT != 0
        && u32_at(request, flags2_at) & FLAGS2_OVER_IO_URING != 0
}

/// Waits up to [`INIT_TIMEOUT`] for the first request and reads it.
fn read_request(device: &File, buf: &mut [u8]) -> Result<usize, UringError> {
    let deadline = Instant::now() + INIT_TIMEOUT;
    let mut reader = device;
    loop {
        match reader.read(buf) {
            Ok(len) if len >= IN_HEADER_LEN => return Ok(len),
            Ok(len) => return Err(UringError::Init(format!("short request of {len} bytes"))),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UringError::Init(format!("cannot read INIT: {e}"))),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(UringError::Init(format!("no INIT within {INIT_TIMEOUT:?}")));
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(device.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(UringError::Init(format!("cannot poll the FUSE device: {e}"))),
        }
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| usize::try_from(p).ok())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init_request(flags: u32, flags2: u32) -> Vec<u8> {
        let mut req = vec![0u8; IN_HEADER_LEN + 64];
        put_u32(&mut req, 4, Opcode::Init as u32);
        put_u32(&mut req, IN_HEADER_LEN + offset_of!(InitIn, flags), flags);
        put_u32(&mut req, IN_HEADER_LEN + 16, flags2);
        req
    }

    #[test]
    fn uring_offer_needs_init_ext() {
        assert!(kernel_offers_uring(&init_request(FLAG_INIT_EXT, FLAGS2_OVER_IO_URING)));
        assert!(!kernel_offers_uring(&init_request(0, FLAGS2_OVER_IO_URING)));
        assert!(!kernel_offers_uring(&init_request(FLAG_INIT_EXT, 0)));
        assert!(!kernel_offers_uring(&init_request(FLAG_INIT_EXT, 0)[..IN_HEADER_LEN + 16]));
    }

    #[test]
    fn init_out_layout() {
        // linux/fuse.h: struct fuse_init_out.
        assert_eq!(offset_of!(InitOut, flags), 12);
        assert_eq!(offset_of!(InitOut, max_write), 20);
        assert_eq!(offset_of!(InitOut, max_pages), 28);
        assert_eq!(offset_of!(InitOut, flags2), 32);
        assert_eq!(std::mem::size_of::<InitIn>(), 16);
    }
}
