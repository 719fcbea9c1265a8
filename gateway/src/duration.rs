//! The one duration grammar of the project: Kubernetes-style strings (`90s`, `30m`, `1h`,
//! `24h`, `1h30m`, `500ms`, `7d`) in the CRDs and on the command line, parsed by the
//! `humantime` crate. Only the units `ms`, `s`, `m`, `h` and `d` are taken: humantime also
//! knows months and years, which have no fixed length and no place in a timeout.

use std::time::Duration;

/// Parses a duration; a bare number (no unit) is refused, as Kubernetes does.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Some(u) = s
        .chars()
        .find(|c| c.is_alphabetic() && !matches!(c, 'm' | 's' | 'h' | 'd'))
    {
        return Err(format!(
            "invalid duration {s:?}: unknown unit {u:?} (use ms, s, m, h or d)"
        ));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (expected e.g. 90s, 30m, 1h)"))
}

/// Parses a duration of whole seconds, as the CRDs hold them.
pub fn seconds(s: &str) -> Result<u64, String> {
    let d = parse(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("invalid duration {s:?}: use whole seconds"));
    }
    Ok(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_style_durations() {
        assert_eq!(seconds("90s"), Ok(90));
        assert_eq!(seconds("1h30m"), Ok(5400));
        assert_eq!(seconds("24h"), Ok(86_400));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0ms"), Ok(Duration::ZERO));
        assert!(seconds("10").is_err());
        assert!(seconds("1y").is_err());
        assert!(seconds("1M").is_err());
        assert!(seconds("").is_err());
        assert!(seconds("1500ms").is_err());
    }
}
