//! Allocation-free number formatting into byte buffers, for the renderers' hot paths.

/// Appends the decimal digits of `v`.
pub fn push_u64(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; 20];
    let digits = digits(v, &mut buf);
    out.extend_from_slice(digits);
}

/// Appends `v` right-aligned in `width` columns (space-padded, like `%*lu`); wider
/// numbers are written in full.
pub fn push_u64_width(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = [0u8; 20];
    let digits = digits(v, &mut buf);
    out.resize(out.len() + width.saturating_sub(digits.len()), b' ');
    out.extend_from_slice(digits);
}

/// Appends hundredths as "%lu.%02lu" (e.g. 12345 -> "123.45").
pub fn push_centis(out: &mut Vec<u8>, centis: u64) {
    push_u64(out, centis / 100);
    out.push(b'.');
    let frac = centis % 100;
    out.push(b'0' + (frac / 10) as u8);
    out.push(b'0' + (frac % 10) as u8);
}

/// Number of decimal digits of `v`.
pub fn decimal_len(v: u64) -> usize {
    let mut buf = [0u8; 20];
    digits(v, &mut buf).len()
}

fn digits(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn numbers() {
        assert_eq!(s(|o| push_u64(o, 0)), "0");
        assert_eq!(s(|o| push_u64(o, u64::MAX)), u64::MAX.to_string());
        assert_eq!(s(|o| push_u64_width(o, 764, 8)), "     764");
        assert_eq!(s(|o| push_u64_width(o, 34359738367, 8)), "34359738367");
        assert_eq!(s(|o| push_u64_width(o, 0, 0)), "0");
        assert_eq!(s(|o| push_centis(o, 410333)), "4103.33");
        assert_eq!(s(|o| push_centis(o, 5)), "0.05");
        assert_eq!(
            s(|o| push_centis(o, u64::MAX)),
            format!("{}.{:02}", u64::MAX / 100, u64::MAX % 100)
        );
        assert_eq!(decimal_len(0), 1);
        assert_eq!(decimal_len(12345678), 8);
    }
}
