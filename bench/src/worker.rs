//! The reader process (`sysvisor-bench read-worker`): N threads, each doing open + read to
//! EOF + close on one path in a loop for a fixed time, recording each iteration's latency.
//! It runs inside the benchmark cgroup and prints one JSON object on stdout.

use crate::report::Percentiles;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// Most latencies one thread keeps (a bound on memory; at 1M ops/s that is 8 s of them).
const MAX_SAMPLES: usize = 8_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerResult {
    /// Completed open+read+close iterations, all threads.
    pub ops: u64,
    /// Failed iterations (open or read error, or empty content).
    pub errors: u64,
    /// Wall time of the measurement, seconds.
    pub elapsed_s: f64,
    pub ops_per_s: f64,
    #[serde(flatten)]
    pub latency: Percentiles,
    /// Size of the first successful read (bytes).
    pub bytes: usize,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// For meminfo: the MemTotal line the reader saw (shows whether the view is virtual).
    pub memtotal: Option<String>,
}

struct ThreadOut {
    lat_ns: Vec<u32>,
    ops: u64,
    errors: u64,
    bytes: usize,
    first_error: Option<String>,
    sample: Option<Vec<u8>>,
}

/// One open + read to EOF + close of `path`: the number of bytes read.
pub fn one(path: &Path, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut f = File::open(path)?;
    let mut total = 0;
    loop {
        match f.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs the measurement and returns its result.
pub fn run(path: PathBuf, threads: usize, seconds: f64) -> Result<WorkerResult> {
    let threads = threads.max(1);
    let dur = Duration::from_secs_f64(seconds);
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::new();
    for _ in 0..threads {
        let path = path.clone();
        let barrier = barrier.clone();
        handles.push(thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut out = ThreadOut {
                lat_ns: Vec::with_capacity(1 << 16),
                ops: 0,
                errors: 0,
                bytes: 0,
                first_error: None,
                sample: None,
            };
            // One warm-up read outside the measurement (and the sample for the report).
            if let Ok(n) = one(&path, &mut buf) {
                out.sample = Some(buf[..n.min(buf.len())].to_vec());
                out.bytes = n;
            }
            barrier.wait();
            let start = Instant::now();
            let end = start + dur;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = one(&path, &mut buf);
                let ns = t0.elapsed().as_nanos().min(u32::MAX as u128) as u32;
                match r {
                    Ok(n) if n > 0 => {
                        out.ops += 1;
                        if out.lat_ns.len() < MAX_SAMPLES {
                            out.lat_ns.push(ns);
                        }
                    }
                    Ok(_) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| "empty read".into());
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            out
        }));
    }
    barrier.wait();
    let start = Instant::now();
    let outs: Vec<ThreadOut> =
        handles.into_iter().map(|h| h.join().expect("reader thread panicked")).collect();
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat: Vec<u32> = Vec::with_capacity(outs.iter().map(|o| o.lat_ns.len()).sum());
    let mut r = WorkerResult {
        ops: 0,
        errors: 0,
        elapsed_s: elapsed,
        ops_per_s: 0.0,
        latency: Percentiles::default(),
        bytes: 0,
        first_error: None,
        memtotal: None,
    };
    for o in outs {
        r.ops += o.ops;
        r.errors += o.errors;
        lat.extend_from_slice(&o.lat_ns);
        if r.first_error.is_none() {
            r.first_error = o.first_error;
        }
        if r.bytes == 0 {
            r.bytes = o.bytes;
        }
        if r.memtotal.is_none() {
            if let Some(s) = o.sample {
                r.memtotal = String::from_utf8_lossy(&s)
                    .lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "));
            }
        }
    }
    lat.sort_unstable();
    r.ops_per_s = r.ops as f64 / elapsed.max(1e-9);
    r.latency = Percentiles::of_sorted(&lat);
    Ok(r)
}
