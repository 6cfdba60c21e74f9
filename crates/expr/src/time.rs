//! Pure time helpers: RFC 3339 formatting and parsing of UTC timestamps, Go duration strings
//! (`1m30s`, used by `suspend.duration`, `backoff.duration`, `timeout`), and Go layout formatting
//! for `sprig.date`.

/// Days since 1970-01-01 to (year, month, day). Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Broken-down UTC time.
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    weekday: u32,
}

fn civil(unix_secs: i64) -> Civil {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: (secs / 3600) as u32,
        minute: (secs / 60 % 60) as u32,
        second: (secs % 60) as u32,
        // 1970-01-01 was a Thursday (4).
        weekday: (days + 4).rem_euclid(7) as u32,
    }
}

/// Formats unix milliseconds as RFC 3339 UTC with second precision, as Kubernetes does
/// (`2026-11-28T14:41:22Z`).
pub fn rfc3339(unix_millis: i64) -> String {
    let c = civil(unix_millis.div_euclid(1000));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Parses an RFC 3339 timestamp (`Z` or `+hh:mm` offset, optional fraction) to unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Formats an RFC 3339 timestamp with a Go reference-time layout (`2006-01-02 15:04:05`).
pub fn format_go_layout(layout: &str, ts: &str) -> Option<String> {
    let c = civil(parse_rfc3339(ts)?);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    // Longest tokens first so that `2006` wins over `2` and `January` over `Jan`.
    let tokens: [(&str, String); 16] = [
        ("January", MONTHS[c.month as usize - 1].into()),
        ("Monday", DAYS[c.weekday as usize].into()),
        ("2006", format!("{:04}", c.year)),
        ("Jan", MONTHS[c.month as usize - 1][..3].into()),
        ("Mon", DAYS[c.weekday as usize][..3].into()),
        ("MST", "UTC".into()),
        ("01", format!("{:02}", c.month)),
        ("02", format!("{:02}", c.day)),
        ("15", format!("{:02}", c.hour)),
        ("03", format!("{:02}", (c.hour + 11) % 12 + 1)),
        ("04", format!("{:02}", c.minute)),
        ("05", format!("{:02}", c.second)),
        ("06", format!("{:02}", c.year % 100)),
        ("PM", if c.hour >= 12 { "PM" } else { "AM" }.into()),
        ("Z07:00", "Z".into()),
        ("-07:00", "+00:00".into()),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (tok, val) in &tokens {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(val);
                rest = r;
                continue 'outer;
            }
        }
        let ch = rest.chars().next()?;
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    Some(out)
}

/// Parses a Go duration (`300ms`, `1.5h`, `2m30s`) or a bare number of seconds into milliseconds.
pub fn parse_duration_millis(s: &str) -> Option<i64> {
    let ms = parse_duration_f64(s)?;
    // Longer than any deadline means nothing here, and near i64::MAX it would overflow
    // the `now + duration` it is added to.
    (ms.is_finite() && ms.abs() <= MAX_DURATION_MS as f64).then_some(ms as i64)
}

/// The longest duration accepted anywhere (timeouts, deadlines, suspends, `@every`): 100
/// years, in milliseconds.
pub const MAX_DURATION_MS: i64 = 100 * 365 * 86_400_000;

fn parse_duration_f64(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Some(secs * 1000.0);
    }
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_alphabetic() || *b == 0xc2 || *b == 0xb5)
            .count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms = match unit {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            // Argo also accepts days in suspend durations.
            "d" => 86_400_000.0,
            _ => return None,
        };
        total += value * ms;
    }
    Some(if neg { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_beyond_a_century_are_refused() {
        assert_eq!(parse_duration_millis("1h"), Some(3_600_000));
        for huge in ["99999999999999999h", "1e300", "-1e300", "NaN", "inf"] {
            assert_eq!(parse_duration_millis(huge), None, "{huge}");
        }
    }

    #[test]
    fn time_round_trip() {
        let ms = 1_795_876_882_000; // 2026-11-28T14:41:22Z
        assert_eq!(rfc3339(ms), "2026-11-28T14:41:22Z");
        assert_eq!(parse_rfc3339("2026-11-28T14:41:22Z"), Some(ms / 1000));
        assert_eq!(
            parse_rfc3339("2026-11-28T15:41:22.5+01:00"),
            Some(ms / 1000)
        );
        assert_eq!(
            format_go_layout("2006", "2026-11-28T14:41:22Z").as_deref(),
            Some("2026")
        );
        assert_eq!(
            format_go_layout("Mon Jan 02 15:04:05", "2026-11-28T14:41:22Z").as_deref(),
            Some("Sat Nov 28 14:41:22")
        );
    }

    #[test]
    fn durations() {
        for (s, want) in [
            ("10", Some(10_000)),
            ("1m30s", Some(90_000)),
            ("300ms", Some(300)),
            ("2h", Some(7_200_000)),
            ("1.5s", Some(1500)),
            ("x", None),
            ("5 minutes", None),
        ] {
            assert_eq!(parse_duration_millis(s), want, "{s}");
        }
    }
}
