//! The control protocol (`sysvisor-proto`, one JSON object per line): what the daemon makes
//! of a request line (`daemon::control::parse_request`, the decoding half of
//! `handle_line`) and what sysvisor-runc makes of an answer line. Never a panic; a decoded
//! request has a known `op` and, encoded again, decodes to itself; a refusal names the
//! problem; an answer that decodes, encoded again, decodes to itself.
//!
//! Input: one line (any bytes; the daemon reads bytes up to a newline).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::daemon::control::parse_request;
use sysvisor_proto::{Request, Response};

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(request) => {
            assert!(Request::OPS.contains(&request.op()), "{request:?}");
            let line = serde_json::to_vec(&request).expect("a request encodes");
            assert_eq!(parse_request(&line).as_ref(), Ok(&request), "re-decoded");
        }
        Err(message) => {
            assert!(!message.is_empty());
            assert!(
                ["malformed", "empty request", "unknown op"].iter().any(|p| message.starts_with(p)),
                "refusal {message:?}"
            );
        }
    }
    if let Ok(response) = serde_json::from_slice::<Response>(data) {
        let line = serde_json::to_vec(&response).expect("an answer encodes");
        let again: Response = serde_json::from_slice(&line).expect("an encoded answer decodes");
        assert_eq!(again, response);
    }
});
