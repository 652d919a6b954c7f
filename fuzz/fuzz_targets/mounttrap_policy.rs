//! The mount trap's decisions (`mounttrap::policy::decide`) over an arbitrary notification
//! and arbitrary strings in the caller's memory, and the overlays it protects, read from a
//! container's `config.json` (`mounttrap::overlays::Overlays::from_config`). Never a panic,
//! and:
//! - only a `mount` of `proc` or `sysfs` without bind/move/remount/propagation flags is
//!   performed by the trap, with only the flags it passes on and never an empty option
//!   string; only `umount`/`umount2` are checked; only `fsopen("proc"|"sysfs")` is answered
//!   (ENOSYS); everything else continues;
//! - every overlay of a config lies below `/proc` or `/sys`, as a clean relative path
//!   (never the mount's root itself).
//!
//! Input: a header (byte 0: the architecture, bytes 1-4: the system call number, then six
//! 8-byte arguments, little-endian), then text: the config JSON, a NUL, and the caller's
//! strings separated by NULs. An address `n` reads string `n` (an address past them cannot
//! be read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::mounttrap::abi::{
    self, Answer, Notification, Syscall, AUDIT_ARCH_AARCH64, AUDIT_ARCH_ARM, AUDIT_ARCH_I386,
    AUDIT_ARCH_X86_64,
};
use sysvisor_fs::mounttrap::overlays::Overlays;
use sysvisor_fs::mounttrap::policy::{decide, Decision, EmptyFs, FsKind, Strings, PASSED_FLAGS};
use sysvisor_fuzz::{split2, split_header};

const HEADER_LEN: usize = 1 + 4 + 6 * 8;
const ARCHES: [u32; 5] =
    [AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64, AUDIT_ARCH_ARM, 0];

struct Memory<'a>(Vec<&'a str>);

impl Strings for Memory<'_> {
    fn string(&mut self, address: u64) -> Option<String> {
        let index = usize::try_from(address).ok()?;
        self.0.get(index).map(|s| s.to_string())
    }
}

fuzz_target!(|data: &[u8]| {
    let (mut header, text) = split_header(data, HEADER_LEN);
    let arch = ARCHES[usize::from(header.u8()) % ARCHES.len()];
    let nr = header.u32() as i32;
    let args = [(); 6].map(|()| header.u64());
    let (config, strings) = split2(text);
    let mut memory = Memory(strings.split('\0').collect());
    let notif = Notification { id: 1, pid: 1, nr, arch, args };
    let call = Syscall::decode(arch, nr);
    let arg = |i: usize| abi::arg(arch, nr, args[i]);
    let string = |memory: &mut Memory, i: usize| memory.string(arg(i));

    match decide(&notif, &mut memory) {
        Decision::NewMount(new) => {
            assert_eq!(call, Some(Syscall::Mount));
            assert_eq!(new.flags & !PASSED_FLAGS, 0, "{new:?}");
            assert_ne!(new.data.as_deref(), Some(""));
            assert_eq!(string(&mut memory, 2).as_deref(), Some(new.fs.name()));
            assert_eq!(string(&mut memory, 1).as_ref(), Some(&new.target));
        }
        Decision::EmptyMount(empty) => {
            assert_eq!(call, Some(Syscall::Mount));
            assert_eq!(empty.flags & !PASSED_FLAGS, 0, "{empty:?}");
            let fstype = string(&mut memory, 2);
            assert_eq!(fstype.as_deref().and_then(EmptyFs::from_name), Some(empty.fs));
            assert_eq!(string(&mut memory, 1).as_ref(), Some(&empty.target));
        }
        Decision::CheckUmount { target, .. } => {
            assert!(matches!(call, Some(Syscall::Umount | Syscall::Umount2)), "{call:?}");
            assert_eq!(string(&mut memory, 0).as_ref(), Some(&target));
        }
        Decision::Answer(Answer::Errno(errno)) => {
            assert_eq!(call, Some(Syscall::Fsopen));
            assert_eq!(errno, libc::ENOSYS);
            let name = string(&mut memory, 0);
            let name = name.as_deref();
            assert!(
                name.and_then(FsKind::from_name).is_some()
                    || name.and_then(EmptyFs::from_name).is_some()
            );
        }
        Decision::Answer(answer) => assert_eq!(answer, Answer::Continue),
    }

    let Ok(overlays) = Overlays::from_config(config.as_bytes()) else { return };
    for fs in [FsKind::Proc, FsKind::Sysfs] {
        for overlay in overlays.of(fs) {
            let rel = &overlay.rel;
            assert!(!rel.starts_with('/') && !rel.ends_with('/'), "{fs:?} {rel:?}");
            assert!(rel.split('/').all(|p| !matches!(p, "" | "." | "..")), "{rel:?}");
            assert!(overlays.covers(fs, rel));
        }
    }
});
