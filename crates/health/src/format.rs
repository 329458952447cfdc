//! Figures as people read them in a finding's message ("45 s", "12 min", "1.5 GiB").
use std::time::Duration;

/// "0.5 s", "45 s", "95 s", "12 min 5 s", "2 h 3 min" (seconds up to 2 minutes, where
/// thresholds such as 30 s and 60 s live).
pub fn duration(d: Duration) -> String {
    secs(d.as_secs_f64())
}

pub fn secs(s: f64) -> String {
    if s < 10.0 {
        let text = format!("{s:.1}");
        let text = text.strip_suffix(".0").unwrap_or(&text);
        format!("{text} s")
    } else if s < 120.0 {
        format!("{} s", s.floor() as u64)
    } else if s < 3600.0 {
        let whole = s.floor() as u64;
        match whole % 60 {
            0 => format!("{} min", whole / 60),
            rest => format!("{} min {rest} s", whole / 60),
        }
    } else {
        let minutes = (s / 60.0).floor() as u64;
        match minutes % 60 {
            0 => format!("{} h", minutes / 60),
            rest => format!("{} h {rest} min", minutes / 60),
        }
    }
}

/// "512 B", "1.5 KiB", "2 GiB".
pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = b;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    number(value, UNITS[unit])
}

/// "80 %", "79.9 %".
pub fn percent(p: f64) -> String {
    number(p, "%")
}

/// A figure with at most one decimal, none when it is whole.
pub fn number(v: f64, unit: &str) -> String {
    let text = format!("{v:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    if unit.is_empty() {
        text.to_string()
    } else {
        format!("{text} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_naturally() {
        assert_eq!(secs(0.5), "0.5 s");
        assert_eq!(secs(2.0), "2 s");
        assert_eq!(secs(45.7), "45 s");
        assert_eq!(secs(95.0), "95 s");
        assert_eq!(secs(725.0), "12 min 5 s");
        assert_eq!(secs(600.0), "10 min");
        assert_eq!(secs(7380.0), "2 h 3 min");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(2.0 * 1024.0 * 1024.0 * 1024.0), "2 GiB");
        assert_eq!(percent(79.94), "79.9 %");
        assert_eq!(percent(80.0), "80 %");
    }
}
