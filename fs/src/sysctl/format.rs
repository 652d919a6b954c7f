//! How emulated entries take writes: the kernel's sysctl and module-parameter handlers,
//! byte for byte, as pure functions over the current value and the written bytes.
//!
//! Values are kept as the text the kernel prints, without the trailing newline
//! (`"4\t4\t1\t7"` for kernel.printk). A write gives a [`Written`]: the new value, if any
//! element was stored (the kernel stores the elements of a vector one by one, so an error
//! after the first leaves the earlier ones written), and what write(2) returns: the bytes
//! consumed or an errno.
//!
//! Mirrored from `kernel/sysctl.c` (6.x), with `sysctl_writes_strict` at its default (1):
//! - a write at a non-zero offset to a number is ignored and reported as consumed;
//! - leading white space (`isspace`: `\t\n\v\f\r`, space and 0xa0) is skipped; a number is
//!   `-`? then digits in C's base 0 (`0x1f` hex, `010` octal), at most 21 characters; what
//!   follows it must be a space, tab or newline; trailing white space is consumed;
//! - a vector stops at its length: the rest is not consumed (write(2) returns less, and
//!   the writer's retry at the new offset is ignored);
//! - an empty or all-blank write is EINVAL; out of range is EINVAL;
//! - at most `PAGE_SIZE - 1` bytes of one write are looked at.

/// An errno value.
pub type Errno = i32;

const PAGE_SIZE: usize = 4096;
/// The kernel's TMPBUFLEN for numbers: at most 21 characters of one number are read.
const TMPBUFLEN: usize = 22;

/// The outcome of one write(2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The new value, when anything was stored.
    pub value: Option<String>,
    /// What write(2) returns: bytes consumed, or an errno.
    pub result: Result<usize, Errno>,
}

impl Written {
    fn unchanged(result: Result<usize, Errno>) -> Written {
        Written { value: None, result }
    }
}

/// How an emulated entry parses writes (each names the kernel handler it mirrors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `proc_dointvec` / `proc_dointvec_minmax`: `len` ints, each within `min..=max`.
    Ints { len: usize, min: i64, max: i64 },
    /// As `Ints` with one element, but once the value is `lock` it cannot be lowered
    /// (Yama's ptrace_scope: 3 is final until reboot).
    IntLocked { min: i64, max: i64, lock: i64 },
    /// `proc_douintvec_minmax` and `proc_dou8vec_minmax`: one unsigned number.
    Uint { min: u64, max: u64 },
    /// `proc_doulongvec_minmax`: `len` unsigned longs within `min..=max`.
    Ulongs { len: usize, min: u64, max: u64 },
    /// `proc_dointvec_jiffies`: seconds, kept by the kernel as jiffies in an int, so at
    /// most `INT_MAX / HZ`.
    Jiffies,
    /// `proc_dostring` into `maxlen` bytes, then the name must be one of `names` (ENOENT
    /// otherwise; net.core.default_qdisc's `qdisc_set_default`).
    Name { maxlen: usize, names: &'static [&'static str] },
    /// A module parameter set with `kstrtouint(.., 0)` (sysfs, not sysctl): at least
    /// `min`, at most `max` (ENOMEM beyond, as the hash table allocation fails), rounded
    /// up to a multiple of `round` (nf_conntrack's hashsize).
    Param { min: u64, max: u64, round: u64 },
}

/// The file content of value `value`: the text and a newline.
pub fn render(value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 1);
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
    out
}

/// The value of a file's content: without its trailing newline.
pub fn value_of(content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

impl Format {
    /// Applies write(2) of `input` at `offset` to `current`.
    pub fn write(&self, current: &str, input: &[u8], offset: u64) -> Written {
        match *self {
            Format::Ints { len, min, max } => {
                let mut values = ints_of(current, len);
                let conv = |neg: bool, v: u64| int_conv(neg, v).filter(|x| (min..=max).contains(x));
                vector_write(&mut values, input, offset, |neg, v| conv(neg, v).map(i128::from))
            }
            Format::IntLocked { min, max, lock } => {
                let mut values = ints_of(current, 1);
                let min = if values[0] == i128::from(lock) { lock } else { min };
                let conv = |neg: bool, v: u64| int_conv(neg, v).filter(|x| (min..=max).contains(x));
                vector_write(&mut values, input, offset, |neg, v| conv(neg, v).map(i128::from))
            }
            Format::Jiffies => {
                let mut values = ints_of(current, 1);
                let limit = i32::MAX as u64 / kernel_hz();
                let conv = |neg: bool, v: u64| {
                    (v <= limit).then(|| if neg { -i128::from(v) } else { i128::from(v) })
                };
                vector_write(&mut values, input, offset, conv)
            }
            Format::Ulongs { len, min, max } => {
                let mut values = ints_of(current, len);
                // Kept as i128, so unsigned longs above i64::MAX stay what they are.
                let conv =
                    |neg: bool, v: u64| (!neg && (min..=max).contains(&v)).then_some(i128::from(v));
                vector_write(&mut values, input, offset, conv)
            }
            Format::Uint { min, max } => uint_write(input, offset, min, max),
            Format::Name { maxlen, names } => name_write(current, input, offset, maxlen, names),
            Format::Param { min, max, round } => param_write(input, min, max, round),
        }
    }

    /// Whether the kernel would accept `value` as the whole of a write (for tests and
    /// documentation examples).
    pub fn accepts(&self, current: &str, value: &str) -> bool {
        self.write(current, value.as_bytes(), 0).result.is_ok()
    }
}

/// The kernel's HZ (CONFIG_HZ), for jiffies conversions, from the running kernel: measured
/// on its jiffies counter against its monotonic clock in /proc/timer_list (root only), else
/// `CONFIG_HZ` from `/boot/config-RELEASE`. When neither can be read, 1000, the highest HZ
/// kernels are built with: the jiffies bound (`INT_MAX / HZ`) is then the strictest, so a
/// write the kernel might refuse is refused, never accepted.
pub fn kernel_hz() -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        measured_hz().unwrap_or_else(|| {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            let config = std::fs::read_to_string(format!("/boot/config-{}", release.trim()))
                .unwrap_or_default();
            hz_from_config(&config).unwrap_or(1000)
        })
    })
}

/// The HZ values Linux can be configured with (kernel/Kconfig.hz).
const HZ_CHOICES: [u64; 4] = [100, 250, 300, 1000];

/// HZ measured on /proc/timer_list: two readings 200 ms apart (up to three tries).
fn measured_hz() -> Option<u64> {
    let sample = || timer_list_sample(&std::fs::read_to_string("/proc/timer_list").ok()?);
    (0..3).find_map(|_| {
        let first = sample()?;
        std::thread::sleep(std::time::Duration::from_millis(200));
        hz_from_samples(first, sample()?)
    })
}

/// `(now_ns, jiffies)` from /proc/timer_list: its `now at N nsecs` line (CLOCK_MONOTONIC)
/// and the first `jiffies: N` line.
pub fn timer_list_sample(text: &str) -> Option<(u64, u64)> {
    let mut lines = text.lines().map(str::trim);
    let now = lines
        .clone()
        .find_map(|l| l.strip_prefix("now at ")?.strip_suffix(" nsecs")?.parse().ok())?;
    let jiffies = lines.find_map(|l| l.strip_prefix("jiffies: ")?.trim().parse().ok())?;
    Some((now, jiffies))
}

/// The HZ choice that two `(now_ns, jiffies)` samples show: the jiffies per second between
/// them, which must lie within 8 % of one choice (the choices are at least 17 % apart).
pub fn hz_from_samples(a: (u64, u64), b: (u64, u64)) -> Option<u64> {
    let ns = b.0.checked_sub(a.0).filter(|&ns| ns >= 50_000_000)?;
    let ticks = b.1.checked_sub(a.1)?;
    let rate = ticks as f64 * 1e9 / ns as f64;
    HZ_CHOICES.into_iter().find(|&hz| (rate / hz as f64 - 1.0).abs() < 0.08)
}

/// `CONFIG_HZ=N` from a kernel config.
pub fn hz_from_config(config: &str) -> Option<u64> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ=")?.trim().parse().ok())
        .filter(|hz| *hz > 0)
}

/// The elements of a vector value (missing or unreadable ones are 0), wide enough for both
/// C ints and unsigned longs.
fn ints_of(current: &str, len: usize) -> Vec<i128> {
    let mut parts = current.split_ascii_whitespace();
    (0..len.max(1)).map(|_| parts.next().and_then(|p| p.parse().ok()).unwrap_or(0)).collect()
}

fn join(values: &[i128]) -> String {
    values.iter().map(i128::to_string).collect::<Vec<_>>().join("\t")
}

/// `do_proc_dointvec_conv`: a C int.
fn int_conv(neg: bool, v: u64) -> Option<i64> {
    if neg {
        (v <= i32::MAX as u64 + 1).then(|| -(v as i64))
    } else {
        (v <= i32::MAX as u64).then_some(v as i64)
    }
}

/// `isspace` of the kernel's ctype table.
fn is_space(c: u8) -> bool {
    matches!(c, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0xa0)
}

/// What may follow a number: `proc_wspace_sep`.
fn is_separator(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n')
}

fn skip_spaces(buf: &mut &[u8]) {
    while let [c, rest @ ..] = *buf {
        if !is_space(*c) {
            break;
        }
        *buf = rest;
    }
}

/// `_parse_integer_fixup_radix` with base 0: the base, and how many prefix bytes to skip.
fn radix(s: &[u8]) -> (u64, usize) {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    if at(0) != b'0' {
        return (10, 0);
    }
    if at(1).eq_ignore_ascii_case(&b'x') && at(2).is_ascii_hexdigit() {
        (16, 2)
    } else {
        (8, 0)
    }
}

/// `_parse_integer`: digits of `base` from the start of `s`: (value, digits read,
/// overflowed).
fn parse_integer(s: &[u8], base: u64) -> (u64, usize, bool) {
    let (mut value, mut overflow, mut n) = (0u64, false, 0);
    for &c in s {
        let digit = match c {
            b'0'..=b'9' => u64::from(c - b'0'),
            b'a'..=b'f' => u64::from(c - b'a' + 10),
            b'A'..=b'F' => u64::from(c - b'A' + 10),
            _ => break,
        };
        if digit >= base {
            break;
        }
        match value.checked_mul(base).and_then(|v| v.checked_add(digit)) {
            Some(v) => value = v,
            None => {
                overflow = true;
                value = value.wrapping_mul(base).wrapping_add(digit);
            }
        }
        n += 1;
    }
    (value, n, overflow)
}

/// `proc_get_long`: one number at the start of `buf` (advanced past it): (negative, value).
fn get_long(buf: &mut &[u8]) -> Result<(bool, u64), Errno> {
    let size = buf.len();
    if size == 0 {
        return Err(libc::EINVAL);
    }
    // The kernel copies at most TMPBUFLEN - 1 bytes and NUL-terminates them.
    let tmp = &buf[..size.min(TMPBUFLEN - 1)];
    let mut p = 0;
    let neg = tmp[0] == b'-' && size > 1;
    if neg {
        p = 1;
    }
    if !tmp.get(p).is_some_and(u8::is_ascii_digit) {
        return Err(libc::EINVAL);
    }
    let (base, skip) = radix(&tmp[p..]);
    p += skip;
    let (value, digits, overflow) = parse_integer(&tmp[p..], base);
    if overflow {
        return Err(libc::EINVAL);
    }
    let len = p + digits;
    if len == TMPBUFLEN - 1 {
        return Err(libc::EINVAL);
    }
    if len < size && !is_separator(buf[len]) {
        return Err(libc::EINVAL);
    }
    *buf = &buf[len..];
    Ok((neg, value))
}

/// `__do_proc_dointvec` / `__do_proc_doulongvec_minmax` for writes: fills `values` from
/// the input with `conv` (None = EINVAL).
fn vector_write(
    values: &mut [i128],
    input: &[u8],
    offset: u64,
    conv: impl Fn(bool, u64) -> Option<i128>,
) -> Written {
    let count = input.len();
    if offset != 0 {
        return Written::unchanged(Ok(count)); // proc_first_pos_non_zero_ignore
    }
    let mut buf = &input[..count.min(PAGE_SIZE - 1)];
    let (mut first, mut err, mut stored) = (true, None, false);
    for slot in values.iter_mut() {
        if buf.is_empty() {
            break;
        }
        skip_spaces(&mut buf);
        if buf.is_empty() {
            break;
        }
        match get_long(&mut buf).ok().and_then(|(neg, v)| conv(neg, v)) {
            Some(x) => {
                *slot = x;
                stored = true;
            }
            None => {
                err = Some(libc::EINVAL);
                break;
            }
        }
        first = false;
    }
    let value = stored.then(|| join(values));
    if err.is_none() && !buf.is_empty() {
        skip_spaces(&mut buf);
    }
    if first {
        return Written { value, result: Err(err.unwrap_or(libc::EINVAL)) };
    }
    match err {
        Some(e) => Written { value, result: Err(e) },
        None => Written { value, result: Ok(count - buf.len()) },
    }
}

/// `do_proc_douintvec_w` with `do_proc_douintvec_minmax_conv`.
fn uint_write(input: &[u8], offset: u64, min: u64, max: u64) -> Written {
    let count = input.len();
    if offset != 0 {
        return Written::unchanged(Ok(count));
    }
    let mut buf = &input[..count.min(PAGE_SIZE - 1)];
    skip_spaces(&mut buf);
    if buf.is_empty() {
        return Written::unchanged(Err(libc::EINVAL));
    }
    match get_long(&mut buf) {
        Ok((false, v)) if v <= u64::from(u32::MAX) && (min..=max).contains(&v) => {
            Written { value: Some(v.to_string()), result: Ok(count) }
        }
        _ => Written::unchanged(Err(libc::EINVAL)),
    }
}

/// `_proc_do_string` (strict) into a `maxlen` buffer, then the name check.
fn name_write(current: &str, input: &[u8], offset: u64, maxlen: usize, names: &[&str]) -> Written {
    let count = input.len();
    let mut data: Vec<u8> = current.as_bytes().to_vec();
    data.truncate(maxlen.saturating_sub(1));
    let Ok(start) = usize::try_from(offset) else {
        return Written::unchanged(Ok(count));
    };
    if start > data.len() {
        return Written::unchanged(Ok(count));
    }
    data.truncate(start);
    for &c in input {
        if c == 0 || c == b'\n' || data.len() >= maxlen.saturating_sub(1) {
            break;
        }
        data.push(c);
    }
    let name = String::from_utf8_lossy(&data).into_owned();
    if names.contains(&name.as_str()) {
        Written { value: Some(name), result: Ok(count) }
    } else {
        Written::unchanged(Err(libc::ENOENT))
    }
}

/// `kstrtouint(val, 0)` then `nf_conntrack_hash_resize`'s checks.
fn param_write(input: &[u8], min: u64, max: u64, round: u64) -> Written {
    let count = input.len();
    // kernfs hands over a NUL-terminated copy: a NUL ends the string.
    let end = input.iter().position(|&c| c == 0).unwrap_or(count);
    let mut s = &input[..end];
    if let [b'+', rest @ ..] = s {
        s = rest;
    }
    let (base, skip) = radix(s);
    let (value, digits, overflow) = parse_integer(&s[skip..], base);
    if overflow {
        return Written::unchanged(Err(libc::ERANGE));
    }
    if digits == 0 {
        return Written::unchanged(Err(libc::EINVAL));
    }
    let mut rest = &s[skip + digits..];
    if let [b'\n', tail @ ..] = rest {
        rest = tail;
    }
    if !rest.is_empty() {
        return Written::unchanged(Err(libc::EINVAL));
    }
    if value > u64::from(u32::MAX) {
        return Written::unchanged(Err(libc::ERANGE));
    }
    if value < min {
        return Written::unchanged(Err(libc::EINVAL));
    }
    if value > max {
        return Written::unchanged(Err(libc::ENOMEM));
    }
    let value = value.div_ceil(round.max(1)) * round.max(1);
    Written { value: Some(value.to_string()), result: Ok(count) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOMAXCONN: Format = Format::Ints { len: 1, min: 0, max: i32::MAX as i64 };
    const ANY_INT: Format = Format::Ints { len: 1, min: i32::MIN as i64, max: i32::MAX as i64 };

    fn w(format: Format, current: &str, input: &[u8]) -> (Option<String>, Result<usize, Errno>) {
        let written = format.write(current, input, 0);
        (written.value, written.result)
    }

    /// Every case below was checked against 6.18's /proc/sys/net/core/somaxconn
    /// (`proc_dointvec_minmax`, min 0) in a fresh network namespace.
    #[test]
    fn ints_parse_like_proc_dointvec_minmax() {
        type Case<'a> = (&'a [u8], Option<&'a str>, Result<usize, Errno>);
        let cases: &[Case] = &[
            (b"7", Some("7"), Ok(1)),
            (b"0x10", Some("16"), Ok(4)),
            (b"0X1f", Some("31"), Ok(4)),
            (b"010", Some("8"), Ok(3)),
            (b"08", None, Err(libc::EINVAL)),
            (b" 5", Some("5"), Ok(2)),
            (b"\x0b9", Some("9"), Ok(2)),
            (b"5x", None, Err(libc::EINVAL)),
            (b"9\x0b", None, Err(libc::EINVAL)),
            (b"\n", None, Err(libc::EINVAL)),
            (b"", None, Err(libc::EINVAL)),
            (b"-1", None, Err(libc::EINVAL)),
            (b"+5", None, Err(libc::EINVAL)),
            (b"2147483647", Some("2147483647"), Ok(10)),
            (b"2147483648", None, Err(libc::EINVAL)),
            (b"99999999999999999999999", None, Err(libc::EINVAL)),
            (b"1234567890123456789012", None, Err(libc::EINVAL)),
            (b"00000000000000000001", Some("1"), Ok(20)),
            (b"0000000000000000000001", None, Err(libc::EINVAL)),
            (b"1 2", Some("1"), Ok(2)),
            (b"3\t", Some("3"), Ok(2)),
            (b"4\n\n", Some("4"), Ok(3)),
            (b"0x", None, Err(libc::EINVAL)),
            (b"-", None, Err(libc::EINVAL)),
        ];
        for (input, value, result) in cases {
            let got = w(SOMAXCONN, "4096", input);
            assert_eq!(
                got,
                (value.map(str::to_string), *result),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn writes_at_an_offset_are_ignored() {
        let written = SOMAXCONN.write("4096", b"garbage", 3);
        assert_eq!(written, Written { value: None, result: Ok(7) });
        assert_eq!(Format::Uint { min: 0, max: 1 }.write("0", b"x", 1).result, Ok(1));
    }

    #[test]
    fn negative_ints_reach_int_min() {
        assert_eq!(w(ANY_INT, "0", b"-2147483648"), (Some("-2147483648".into()), Ok(11)));
        assert_eq!(w(ANY_INT, "0", b"-2147483649").1, Err(libc::EINVAL));
        assert_eq!(w(ANY_INT, "0", b"-0"), (Some("0".into()), Ok(2)));
        let bounded = Format::Ints { len: 1, min: 0, max: 2 };
        assert_eq!(w(bounded, "0", b"2\n"), (Some("2".into()), Ok(2)));
        assert_eq!(w(bounded, "0", b"3\n"), (None, Err(libc::EINVAL)));
    }

    #[test]
    fn vectors_fill_in_order_and_keep_the_rest() {
        let printk = Format::Ints { len: 4, min: i32::MIN as i64, max: i32::MAX as i64 };
        assert_eq!(w(printk, "4\t4\t1\t7", b"3\n"), (Some("3\t4\t1\t7".into()), Ok(2)));
        assert_eq!(w(printk, "4\t4\t1\t7", b"1 2 3 4 5\n"), (Some("1\t2\t3\t4".into()), Ok(8)));
        // An error after the first element: the earlier ones stay written.
        assert_eq!(w(printk, "4\t4\t1\t7", b"5 x"), (Some("5\t4\t1\t7".into()), Err(libc::EINVAL)));
        // ping_group_range-style vectors of two.
        let pair = Format::Ints { len: 2, min: 0, max: i32::MAX as i64 };
        assert_eq!(w(pair, "1\t0", b"0 65535\n"), (Some("0\t65535".into()), Ok(8)));
    }

    #[test]
    fn unsigned_formats() {
        let be_liberal = Format::Uint { min: 0, max: 1 };
        assert_eq!(w(be_liberal, "0", b"1\n"), (Some("1".into()), Ok(2)));
        assert_eq!(w(be_liberal, "0", b"2\n").1, Err(libc::EINVAL));
        assert_eq!(w(be_liberal, "0", b"-1\n").1, Err(libc::EINVAL));
        assert_eq!(w(be_liberal, "0", b"  \n").1, Err(libc::EINVAL));
        // douintvec consumes everything, even what follows the number.
        assert_eq!(w(be_liberal, "0", b"1 junk"), (Some("1".into()), Ok(6)));
        let file_max = Format::Ulongs { len: 1, min: 0, max: i64::MAX as u64 };
        assert_eq!(w(file_max, "10", b"9223372036854775807"), (Some(i64::MAX.to_string()), Ok(19)));
        assert_eq!(w(file_max, "10", b"-1").1, Err(libc::EINVAL));
        assert_eq!(w(file_max, "10", b"9223372036854775808").1, Err(libc::EINVAL));
        // Without bounds every unsigned long is taken, above LONG_MAX too (mmap_min_addr).
        let any_ulong = Format::Ulongs { len: 1, min: 0, max: u64::MAX };
        let top = u64::MAX.to_string();
        assert_eq!(w(any_ulong, "65536", top.as_bytes()), (Some(top.clone()), Ok(20)));
        assert_eq!(w(any_ulong, &top, b"1 2"), (Some("1".into()), Ok(2)));
    }

    #[test]
    fn jiffies_are_bounded_by_hz() {
        let limit = i32::MAX as u64 / kernel_hz();
        let ok = format!("{limit}");
        let too_big = format!("{}", limit + 1);
        assert_eq!(w(Format::Jiffies, "600", ok.as_bytes()).0, Some(ok.clone()));
        assert_eq!(w(Format::Jiffies, "600", too_big.as_bytes()).1, Err(libc::EINVAL));
        assert_eq!(w(Format::Jiffies, "600", b"-5").0, Some("-5".into()));
        assert_eq!(hz_from_config("# x\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"), Some(250));
        assert_eq!(hz_from_config("CONFIG_HZ=0"), None);
    }

    #[test]
    fn hz_is_measured_from_timer_list_samples() {
        let text = "Timer List Version: v0.10\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 708118879431 nsecs\n\ncpu: 0\n clock 0:\njiffies: 4295069262\njiffies: 4295069263\n";
        assert_eq!(timer_list_sample(text), Some((708_118_879_431, 4_295_069_262)));
        assert_eq!(timer_list_sample("jiffies: 1\n"), None);
        let t0 = (1_000_000_000, 4_294_000_000);
        // 200 ms: 50 ticks at 250 Hz, 60 at 300, 20 at 100, 200 at 1000; a tick either way.
        for (ticks, hz) in [(50, 250), (51, 250), (49, 250), (60, 300), (20, 100), (200, 1000)] {
            let t1 = (t0.0 + 200_000_000, t0.1 + ticks);
            assert_eq!(hz_from_samples(t0, t1), Some(hz), "{ticks} ticks");
        }
        // Between choices, backwards or too short: no answer rather than a guess.
        assert_eq!(hz_from_samples(t0, (t0.0 + 200_000_000, t0.1 + 55)), None);
        assert_eq!(hz_from_samples(t0, (t0.0 - 1, t0.1 + 50)), None);
        assert_eq!(hz_from_samples(t0, (t0.0 + 1_000_000, t0.1)), None);
    }

    /// Where the kernel's config is readable (/proc/config.gz, `zcat`), the measured HZ is
    /// its CONFIG_HZ.
    #[test]
    fn measured_hz_is_the_kernels() {
        let Some(hz) = measured_hz() else {
            sysvisor_skip::required("/proc/timer_list is not readable (not root)");
            return;
        };
        let config = std::process::Command::new("zcat").arg("/proc/config.gz").output();
        match config.ok().filter(|o| o.status.success()) {
            Some(out) => {
                let config = String::from_utf8_lossy(&out.stdout);
                assert_eq!(Some(hz), hz_from_config(&config), "measured {hz}");
            }
            None => assert!(HZ_CHOICES.contains(&hz)),
        }
        assert_eq!(kernel_hz(), hz);
    }

    #[test]
    fn locked_values_stay() {
        let yama = Format::IntLocked { min: 0, max: 3, lock: 3 };
        assert_eq!(w(yama, "1", b"3"), (Some("3".into()), Ok(1)));
        assert_eq!(w(yama, "1", b"0"), (Some("0".into()), Ok(1)));
        assert_eq!(w(yama, "3", b"1").1, Err(libc::EINVAL));
        assert_eq!(w(yama, "3", b"3").0, Some("3".into()));
        assert_eq!(w(yama, "1", b"4").1, Err(libc::EINVAL));
    }

    #[test]
    fn names_are_strings_checked_against_a_list() {
        let qdisc = Format::Name { maxlen: 16, names: &["fq", "fq_codel", "pfifo_fast"] };
        assert_eq!(w(qdisc, "pfifo_fast", b"fq_codel\n"), (Some("fq_codel".into()), Ok(9)));
        assert_eq!(w(qdisc, "pfifo_fast", b"fq\nignored"), (Some("fq".into()), Ok(10)));
        assert_eq!(w(qdisc, "pfifo_fast", b"bogus\n"), (None, Err(libc::ENOENT)));
        assert_eq!(w(qdisc, "pfifo_fast", b"\n"), (None, Err(libc::ENOENT)));
        // Longer than the buffer: cut to 15 bytes, then looked up.
        assert_eq!(w(qdisc, "fq", b"fq_codelxxxxxxxxxxxxx").1, Err(libc::ENOENT));
        // A continued write appends at its offset.
        assert_eq!(qdisc.write("fq", b"_codel", 2).value, Some("fq_codel".into()));
        assert_eq!(qdisc.write("fq", b"x", 5).result, Ok(1));
    }

    #[test]
    fn module_parameters_parse_like_kstrtouint() {
        let hashsize = Format::Param { min: 1, max: u32::MAX as u64 / 8, round: 512 };
        assert_eq!(w(hashsize, "262144", b"1024\n"), (Some("1024".into()), Ok(5)));
        assert_eq!(w(hashsize, "262144", b"1000"), (Some("1024".into()), Ok(4)));
        assert_eq!(w(hashsize, "262144", b"+0x200"), (Some("512".into()), Ok(6)));
        assert_eq!(w(hashsize, "262144", b"0").1, Err(libc::EINVAL));
        assert_eq!(w(hashsize, "262144", b" 5").1, Err(libc::EINVAL));
        assert_eq!(w(hashsize, "262144", b"5 ").1, Err(libc::EINVAL));
        assert_eq!(w(hashsize, "262144", b"5\n\n").1, Err(libc::EINVAL));
        assert_eq!(w(hashsize, "262144", b"").1, Err(libc::EINVAL));
        assert_eq!(w(hashsize, "262144", b"4294967296").1, Err(libc::ERANGE));
        assert_eq!(w(hashsize, "262144", b"99999999999999999999999").1, Err(libc::ERANGE));
        assert_eq!(w(hashsize, "262144", b"536870912").1, Err(libc::ENOMEM));
        assert_eq!(w(hashsize, "262144", b"7\0junk"), (Some("512".into()), Ok(6)));
    }

    #[test]
    fn rendering_adds_the_newline() {
        assert_eq!(render("4\t4\t1\t7"), b"4\t4\t1\t7\n");
        assert_eq!(value_of(b"10\n"), "10");
        assert_eq!(value_of(b"10"), "10");
        assert!(SOMAXCONN.accepts("1", "5\n"));
        assert!(!SOMAXCONN.accepts("1", "x"));
    }
}
