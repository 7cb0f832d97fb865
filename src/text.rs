//! Text for messages: long values cut short, byte counts in units people read.

/// At most `max` characters of `s`, with `...` when cut.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let head: String = s.chars().take(max).collect();
        format!("{head}... ({} characters)", s.chars().count())
    }
}

/// A byte count shown with a binary unit (`1.5 GiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
        let mut x = self.0 as f64;
        let mut unit = 0;
        while x >= 1024.0 && unit + 1 < UNITS.len() {
            x /= 1024.0;
            unit += 1;
        }
        match unit {
            0 => write!(f, "{} bytes", self.0),
            _ => write!(f, "{x:.1} {}", UNITS[unit]),
        }
    }
}

/// `1048576` -> `1 MB`, `268435456` -> `256 MB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const MB: u64 = 1024 * 1024;
    if n >= MB && n.is_multiple_of(MB) {
        format!("{} MB", n / MB)
    } else {
        Bytes(n).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(Bytes(512).to_string(), "512 bytes");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Bytes(3 << 30).to_string(), "3.0 GiB");
    }

    #[test]
    fn whole_megabytes_read_as_such() {
        assert_eq!(human_bytes(1 << 20), "1 MB");
        assert_eq!(human_bytes(256 << 20), "256 MB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn long_values_are_cut_and_counted() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcdef", 3), "abc... (6 characters)");
    }
}
