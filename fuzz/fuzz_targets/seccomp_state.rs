//! The message runc sends the mount trap's seccomp listener with a notify fd: the OCI
//! `ContainerProcessState` JSON (`mounttrap::state`). `is_complete` (when the listener
//! stops reading) and `ProcessState::parse` never panic; a parsed state has a pid that is
//! a valid host pid and a container id, and was complete; the seccomp fd index points
//! into the fd list.
//!
//! Input: the message bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::mounttrap::state::{is_complete, ProcessState};

fuzz_target!(|data: &[u8]| {
    let complete = is_complete(data);
    let Ok(state) = ProcessState::parse(data) else { return };
    assert!(complete, "parsed, yet not complete: {state:?}");
    assert!(state.pid > 0 && state.pid <= i64::from(i32::MAX), "pid {}", state.pid);
    assert!(!state.state.id.is_empty());
    if let Some(index) = state.seccomp_fd_index() {
        assert!(state.fds.is_empty() && index == 0 || index < state.fds.len(), "{state:?}");
    }
    assert_eq!(state.is_init(), state.pid == state.state.pid);
});
