//! Human-readable byte and time formatting for placement reports.

/// Format a byte count with a binary unit: `512 B`, `412 MiB`, `1.2 GiB`.
pub fn fmt_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.0} KiB", b / KIB)
    } else if b < KIB * KIB * KIB {
        format!("{:.0} MiB", b / (KIB * KIB))
    } else {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    }
}

/// Format a duration in seconds as `850 µs`, `12.3 ms` or `1.25 s`.
pub fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        "∞".to_string()
    } else if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_bytes(100), "100 B");
        assert_eq!(fmt_bytes(412 << 20), "412 MiB");
        assert_eq!(fmt_bytes((1u64 << 30) * 6 / 5), "1.2 GiB");
        assert_eq!(fmt_secs(0.0123), "12.3 ms");
    }
}
