//! Criterion micro-benchmarks of the sysvisor-fs view parsers and renderers, on the host
//! files of fs/tests/fixtures/host/vm2/ (`cargo bench -p sysvisor-bench`).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::path::Path;
use sysvisor_fs::cgroup::{CpuUsage, DeviceIo, IoStats, MemoryInfo, MemoryStat};
use sysvisor_fs::loadavg::CgroupLoad;
use sysvisor_fs::views::{cpu_online, cpuinfo, diskstats, loadavg, meminfo, stat, swaps, uptime};

fn fixture(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fs/tests/fixtures/host/vm2").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// A cgroup limited to 256 MiB with some usage, as a container would have.
fn memory() -> MemoryInfo {
    MemoryInfo {
        limit: Some(256 << 20),
        usage: 100 << 20,
        swap_limit: Some(0),
        swap_usage: 0,
        stat: MemoryStat {
            anon: 40 << 20,
            file: 50 << 20,
            shmem: 1 << 20,
            mapped_file: 10 << 20,
            active_anon: 30 << 20,
            inactive_anon: 10 << 20,
            active_file: 30 << 20,
            inactive_file: 20 << 20,
            slab_reclaimable: 2 << 20,
            slab_unreclaimable: 1 << 20,
            kernel_stack: 256 << 10,
            pagetables: 512 << 10,
            ..MemoryStat::default()
        },
    }
}

fn bench_views(c: &mut Criterion) {
    let text = fixture("proc/meminfo");
    let mem = memory();
    c.bench_function("meminfo/parse", |b| b.iter(|| meminfo::parse(black_box(&text)).unwrap()));
    let host = meminfo::parse(&text).unwrap();
    c.bench_function("meminfo/render", |b| {
        b.iter(|| meminfo::render(black_box(&host), Some(&mem)))
    });

    let text = fixture("proc/cpuinfo");
    c.bench_function("cpuinfo/parse", |b| b.iter(|| cpuinfo::parse(black_box(&text)).unwrap()));
    let host = cpuinfo::parse(&text).unwrap();
    c.bench_function("cpuinfo/render_1cpu", |b| b.iter(|| cpuinfo::render(black_box(&host), &[0])));

    let text = fixture("proc/stat");
    c.bench_function("stat/parse", |b| b.iter(|| stat::parse(black_box(&text)).unwrap()));
    let host = stat::parse(&text).unwrap();
    let usage = CpuUsage { user_ns: 123_456_789_000, system_ns: 23_456_789_000, per_cpu: None };
    let inputs =
        stat::StatInputs { visible: &[0], usage: Some(&usage), per_cpu: false, clock_ticks: 100 };
    c.bench_function("stat/render_1cpu", |b| b.iter(|| stat::render(black_box(&host), &inputs)));

    let text = fixture("proc/uptime");
    c.bench_function("uptime/parse", |b| b.iter(|| uptime::parse(black_box(&text)).unwrap()));
    let host = uptime::parse(&text).unwrap();
    let inputs = uptime::UptimeInputs {
        ns_init_start_ticks: 1000,
        clock_ticks: 100,
        visible_cpus: 1,
        cpu_usage_ns: Some(5_000_000_000),
    };
    c.bench_function("uptime/render", |b| b.iter(|| uptime::render(black_box(&host), &inputs)));

    let text = fixture("proc/loadavg");
    c.bench_function("loadavg/parse", |b| b.iter(|| loadavg::parse(black_box(&text)).unwrap()));
    let host = loadavg::parse(&text).unwrap();
    let load = CgroupLoad { avg: [1024, 512, 256], running: 1, total: 12 };
    c.bench_function("loadavg/render", |b| {
        b.iter(|| loadavg::render(black_box(&host), Some(&load)))
    });

    let text = fixture("proc/swaps");
    c.bench_function("swaps/parse", |b| b.iter(|| swaps::parse(black_box(&text)).unwrap()));
    let host = swaps::parse(&text).unwrap();
    c.bench_function("swaps/render", |b| b.iter(|| swaps::render(black_box(&host), Some(&mem))));

    let text = fixture("proc/diskstats");
    c.bench_function("diskstats/parse", |b| b.iter(|| diskstats::parse(black_box(&text)).unwrap()));
    let (major, minor) = text
        .lines()
        .next()
        .and_then(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .unwrap_or((8, 0));
    let io = IoStats {
        devices: vec![DeviceIo {
            major,
            minor,
            read_ios: 1000,
            write_ios: 2000,
            read_bytes: 4 << 20,
            write_bytes: 8 << 20,
            ..DeviceIo::default()
        }],
    };
    c.bench_function("diskstats/render", |b| {
        b.iter(|| diskstats::render(black_box(&text), Some(&io)).unwrap())
    });

    c.bench_function("cpu_online/render", |b| b.iter(|| cpu_online::render(black_box(2))));
}

criterion_group!(benches, bench_views);
criterion_main!(benches);
