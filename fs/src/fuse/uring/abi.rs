//! The FUSE-over-io_uring ABI (linux/fuse.h, 7.42; kernel 6.14 and later), by byte offsets:
//! the per-entry header buffer the kernel fills with a request and reads a reply from, the
//! command in the 80-byte area of a 128-byte SQE, and the INIT flag that asks for it.
//!
//! Buffers shared with the kernel are plain byte vectors read and written at these offsets,
//! so no struct layout has to be trusted beyond what the uapi header fixes.

use io_uring::{opcode, squeue, types};

/// `FUSE_OVER_IO_URING` (bit 41 of the 64-bit INIT flags): the daemon serves requests over
/// io_uring. It lives in `flags2`, which the kernel reads only with `FUSE_INIT_EXT`.
pub const FLAGS2_OVER_IO_URING: u32 = 1 << (41 - 32);
/// `FUSE_INIT_EXT` (bit 30 of `flags`): `flags2` is valid.
pub const FLAG_INIT_EXT: u32 = 1 << 30;

/// `FUSE_IO_URING_CMD_REGISTER`: hand the kernel an entry (header and payload buffers); it
/// completes when a request has been written into them.
pub const CMD_REGISTER: u32 = 1;
/// `FUSE_IO_URING_CMD_COMMIT_AND_FETCH`: the reply is in the entry; complete when the next
/// request has been written into it.
pub const CMD_COMMIT_AND_FETCH: u32 = 2;

/// `struct fuse_in_header` and `struct fuse_out_header` sizes.
pub const IN_HEADER_LEN: usize = 40;
pub const OUT_HEADER_LEN: usize = 16;

/// `struct fuse_uring_req_header`: `in_out[128]` (`fuse_in_header` of the request, then
/// `fuse_out_header` of the reply), `op_in[128]` (the opcode's fixed argument, e.g.
/// `fuse_read_in`), `fuse_uring_ent_in_out` (32 bytes).
pub const HEADER_LEN: usize = 128 + 128 + 32;
pub const OP_IN: usize = 128;
pub const OP_IN_MAX: usize = 128;
/// `fuse_uring_ent_in_out.commit_id`: the request's unique id, to name in the commit.
const COMMIT_ID: usize = 256 + 8;
/// `fuse_uring_ent_in_out.payload_sz`: bytes of payload, in either direction.
const PAYLOAD_SZ: usize = 256 + 16;

/// The smallest payload buffer the kernel accepts for a connection whose INIT reply said
/// `max_write` and `max_pages` (`fuse_uring_create`: the largest of 8 KiB, `max_write` and
/// `max_pages` pages; without `FUSE_MAX_PAGES` the kernel uses 32 pages).
pub fn payload_len(max_write: u32, max_pages: u16, page_size: usize) -> usize {
    const FUSE_MIN_READ_BUFFER: usize = 8192;
    const FUSE_DEFAULT_MAX_PAGES_PER_REQ: usize = 32;
    let pages = usize::from(max_pages).max(FUSE_DEFAULT_MAX_PAGES_PER_REQ);
    FUSE_MIN_READ_BUFFER.max(max_write as usize).max(pages * page_size)
}

pub fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

pub fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

pub fn put_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_ne_bytes());
}

/// What the kernel wrote into an entry's header buffer with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetched {
    /// `fuse_in_header.len`: header, opcode argument and payload.
    pub len: usize,
    pub unique: u64,
    pub commit_id: u64,
    pub payload_len: usize,
}

impl Fetched {
    pub fn parse(header: &[u8]) -> Fetched {
        Fetched {
            len: u32_at(header, 0) as usize,
            unique: u64_at(header, 8),
            commit_id: u64_at(header, COMMIT_ID),
            payload_len: u32_at(header, PAYLOAD_SZ) as usize,
        }
    }

    /// Length of the opcode's fixed argument in `op_in`: what the header length leaves after
    /// `fuse_in_header` and the payload. `None` if the lengths do not add up.
    pub fn op_in_len(&self, payload_capacity: usize) -> Option<usize> {
        if self.payload_len > payload_capacity {
            return None;
        }
        let op = self.len.checked_sub(IN_HEADER_LEN + self.payload_len)?;
        (op <= OP_IN_MAX).then_some(op)
    }
}

/// Puts a reply (`fuse_out_header` + `payload_len` bytes already in the payload buffer) into
/// an entry's header buffer.
pub fn set_reply(header: &mut [u8], out_header: &[u8; OUT_HEADER_LEN], payload_len: u32) {
    header[..OUT_HEADER_LEN].copy_from_slice(out_header);
    put_u32(header, PAYLOAD_SZ, payload_len);
}

/// `struct fuse_uring_cmd_req` in the SQE's 80-byte command area.
fn cmd_req(commit_id: u64, qid: u16) -> [u8; 80] {
    let mut cmd = [0u8; 80];
    cmd[8..16].copy_from_slice(&commit_id.to_ne_bytes());
    cmd[16..18].copy_from_slice(&qid.to_ne_bytes());
    cmd
}

/// REGISTER of the entry whose two iovecs (header, payload) are at `iovecs`.
pub fn register_sqe(
    fuse_fd: i32,
    qid: u16,
    iovecs: *const libc::iovec,
    user_data: u64,
) -> squeue::Entry128 {
    let sqe = opcode::UringCmd80::new(types::Fd(fuse_fd), CMD_REGISTER)
        .cmd(cmd_req(0, qid))
        .addr(Some(iovecs as u64))
        .build()
        .user_data(user_data);
    // The kernel insists on `sqe->len == 2` (header and payload), which the builder cannot set.
    with_len(sqe, 2)
}

/// COMMIT_AND_FETCH of the reply to request `commit_id`.
pub fn commit_sqe(fuse_fd: i32, qid: u16, commit_id: u64, user_data: u64) -> squeue::Entry128 {
    opcode::UringCmd80::new(types::Fd(fuse_fd), CMD_COMMIT_AND_FETCH)
        .cmd(cmd_req(commit_id, qid))
        .build()
        .user_data(user_data)
}

/// Byte offset of `len` in `struct io_uring_sqe` (uapi: opcode, flags, ioprio, fd, off, addr).
const SQE_LEN: usize = 24;

fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    // SAFETY: `Entry128` is `#[repr(C)]`: the 64-byte `struct io_uring_sqe` followed by the
    // 64 further command bytes, 128 bytes of plain data in all (transmute checks the size);
    // every byte pattern is a valid value. The layout is checked by `sqe_layout` below.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    put_u32(&mut raw, SQE_LEN, len);
    // SAFETY: as above.
    unsafe { std::mem::transmute(raw) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(sqe: squeue::Entry128) -> [u8; 128] {
        // SAFETY: see `with_len`.
        unsafe { std::mem::transmute(sqe) }
    }

    #[test]
    fn sqe_layout() {
        let iov = 0x1122_3344_5566_7788usize as *const libc::iovec;
        let sqe = raw(register_sqe(7, 3, iov, 99));
        assert_eq!(sqe[0], io_uring::opcode::UringCmd80::CODE);
        assert_eq!(u32_at(&sqe, 4), 7, "fd");
        assert_eq!(u32_at(&sqe, 8), CMD_REGISTER, "cmd_op");
        assert_eq!(u64_at(&sqe, 16), 0x1122_3344_5566_7788, "addr");
        assert_eq!(u32_at(&sqe, SQE_LEN), 2, "len");
        assert_eq!(u64_at(&sqe, 32), 99, "user_data");
        // The command area starts at byte 48: flags, commit_id, qid.
        assert_eq!(u64_at(&sqe, 48), 0);
        assert_eq!(u16::from_ne_bytes([sqe[64], sqe[65]]), 3, "qid");

        let sqe = raw(commit_sqe(7, 1, 0xabcd, 5));
        assert_eq!(u32_at(&sqe, 8), CMD_COMMIT_AND_FETCH);
        assert_eq!(u32_at(&sqe, SQE_LEN), 0);
        assert_eq!(u64_at(&sqe, 56), 0xabcd, "commit_id");
        assert_eq!(u16::from_ne_bytes([sqe[64], sqe[65]]), 1, "qid");
    }

    #[test]
    fn fetched_lengths() {
        let mut header = vec![0u8; HEADER_LEN];
        put_u32(&mut header, 0, (IN_HEADER_LEN + 40 + 5) as u32);
        header[8..16].copy_from_slice(&42u64.to_ne_bytes());
        header[COMMIT_ID..COMMIT_ID + 8].copy_from_slice(&42u64.to_ne_bytes());
        put_u32(&mut header, PAYLOAD_SZ, 5);
        let f = Fetched::parse(&header);
        assert_eq!(f, Fetched { len: 85, unique: 42, commit_id: 42, payload_len: 5 });
        assert_eq!(f.op_in_len(4096), Some(40));
        assert_eq!(f.op_in_len(4), None, "payload larger than the buffer");
        put_u32(&mut header, 0, 10);
        assert_eq!(Fetched::parse(&header).op_in_len(4096), None, "shorter than its parts");
        put_u32(&mut header, 0, (IN_HEADER_LEN + 200 + 5) as u32);
        assert_eq!(Fetched::parse(&header).op_in_len(4096), None, "op_in overflows");
    }

    #[test]
    fn reply_into_header() {
        let mut header = vec![0u8; HEADER_LEN];
        let mut out = [0u8; OUT_HEADER_LEN];
        out[0] = 16;
        out[8] = 42;
        set_reply(&mut header, &out, 123);
        assert_eq!(&header[..16], &out);
        assert_eq!(u32_at(&header, PAYLOAD_SZ), 123);
    }

    #[test]
    fn payload_lengths() {
        assert_eq!(payload_len(1 << 20, 256, 4096), 1 << 20);
        assert_eq!(payload_len(4096, 0, 4096), 32 * 4096);
        assert_eq!(payload_len(0, 1, 1024), 32 * 1024);
    }
}
