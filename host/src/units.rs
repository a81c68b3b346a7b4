//! Durations and sizes as the operator writes them (`500ms`, `5m`, `64MiB`):
//! parsed with checked arithmetic, never zero, and never past a documented
//! maximum, so no input can wrap, panic or overflow an `Instant` later.

use std::time::Duration;

/// The longest `--timeout`: a fix that needs more than a day is not a fix.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// The longest age (`max-age` of dry-run-first, `check --warn-age`).
pub const MAX_AGE: Duration = Duration::from_secs(366 * 24 * 3600);
/// The most memory a fix may be given: a wasm32 guest addresses 4 GiB.
pub const MAX_MEMORY: u64 = 4 << 30;
/// The most a fix may print.
pub const MAX_OUTPUT: u64 = 1 << 30;

/// `500ms`, `60s`, `5m` (or `5min`), `1h`, `2d`, or plain seconds; more than zero and
/// at most `max`.
pub fn duration(s: &str, max: Duration) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let shown = crate::units::shown(s);
    if num.is_empty() {
        return Err(format!(
            "{shown} is not a duration like 500ms, 60s, 5m or 1h (a whole, positive number and a unit)"
        ));
    }
    let millis_per: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{shown}: unknown unit {:?}; use ms, s, m, h or d",
                crate::units::shown(unit)
            ));
        }
    };
    let too_long = || format!("{shown} is longer than the maximum of {}", human(max));
    // Digits only, so a parse error is an overflow.
    let n: u64 = num.parse().map_err(|_| too_long())?;
    let millis = n.checked_mul(millis_per).ok_or_else(too_long)?;
    let d = Duration::from_millis(millis);
    if d.is_zero() {
        return Err(format!("{shown}: the duration must be more than zero"));
    }
    if d > max {
        return Err(too_long());
    }
    Ok(d)
}

/// `1048576`, `64KiB`, `256MiB`, `1GiB` (also `K`, `M`, `G`, `KB`, `MB`,
/// `GB`, as powers of 1024); more than zero and at most `max`.
pub fn size(s: &str, max: u64) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let shown = shown(s);
    if num.is_empty() {
        return Err(format!(
            "{shown} is not a size like 64MiB or 1GiB (a whole, positive number and a unit)"
        ));
    }
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "{shown}: unknown unit {:?}; use KiB, MiB or GiB",
                crate::units::shown(unit)
            ));
        }
    };
    let too_large = || format!("{shown} is more than the maximum of {}", human_size(max));
    let n: u64 = num.parse().map_err(|_| too_large())?;
    let v = n.checked_mul(1u64 << shift).ok_or_else(too_large)?;
    if v == 0 {
        return Err(format!("{shown}: the size must be more than zero"));
    }
    if v > max {
        return Err(too_large());
    }
    Ok(v)
}

/// Operator input in a message: quoted, control characters escaped, and
/// cut when absurdly long.
fn shown(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{:?}…", &s[..i]),
        None => format!("{s:?}"),
    }
}

/// `24h`, `366d`, `90s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match () {
        _ if d.subsec_millis() != 0 || s == 0 => format!("{}ms", d.as_millis()),
        _ if s.is_multiple_of(86_400) && s > 86_400 => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

fn human_size(v: u64) -> String {
    match () {
        _ if v.is_multiple_of(1 << 30) => format!("{}GiB", v >> 30),
        _ if v.is_multiple_of(1 << 20) => format!("{}MiB", v >> 20),
        _ if v.is_multiple_of(1 << 10) => format!("{}KiB", v >> 10),
        _ => format!("{v} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_values() {
        assert_eq!(size("256MiB", MAX_MEMORY), Ok(256 << 20));
        assert_eq!(size("1g", MAX_MEMORY), Ok(1 << 30));
        assert_eq!(size("4096", MAX_MEMORY), Ok(4096));
        assert_eq!(size("4GiB", MAX_MEMORY), Ok(4 << 30));
        assert_eq!(
            duration("500ms", MAX_TIMEOUT),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(duration("2m", MAX_TIMEOUT), Ok(Duration::from_secs(120)));
        assert_eq!(duration("24h", MAX_TIMEOUT), Ok(MAX_TIMEOUT));
        assert_eq!(duration("366d", MAX_AGE), Ok(MAX_AGE));
    }

    #[test]
    fn absurd_values_are_refused_with_a_reason() {
        for (input, says) in [
            ("0", "more than zero"),
            ("0ms", "more than zero"),
            ("1ns", "unknown unit"),
            ("-5s", "not a duration"),
            ("1.5s", "unknown unit"),
            ("soon", "not a duration"),
            ("", "not a duration"),
            ("25h", "maximum of 24h"),
            ("99999999999999h", "maximum"),
            ("18446744073709551615s", "maximum"),
            ("18446744073709551616", "maximum"),
            ("99999999999999999999999999999999ms", "maximum"),
        ] {
            let e = duration(input, MAX_TIMEOUT).expect_err(input);
            assert!(e.contains(says), "{input}: {e}");
        }
        for (input, says) in [
            ("0", "more than zero"),
            ("12XB", "unknown unit"),
            ("-1MiB", "not a size"),
            ("5GiB", "maximum of 4GiB"),
            ("99999999999999GiB", "maximum"),
            ("18446744073709551615", "maximum"),
            ("18446744073709551616", "maximum"),
        ] {
            let e = size(input, MAX_MEMORY).expect_err(input);
            assert!(e.contains(says), "{input}: {e}");
        }
    }

    /// A seeded generator of inputs: digits of every length (around the
    /// u64 limits), units real and made up, signs, spaces, junk. Each parse
    /// returns a value within bounds or a one-line message; none panics.
    #[test]
    fn generated_inputs_parse_within_bounds_or_say_why() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let units = [
            "", "ms", "s", "m", "h", "d", "ns", "us", "k", "KiB", "MiB", "GiB", "GB", "b", "x",
            "é", "\u{0}", " s", "s ", "mss", "-",
        ];
        for _ in 0..20_000 {
            let mut s = String::new();
            match next() % 4 {
                0 => s.push('-'),
                1 => s.push(' '),
                _ => {}
            }
            let digits = (next() % 40) as usize;
            for _ in 0..digits {
                s.push(char::from(b'0' + (next() % 10) as u8));
            }
            if next() % 5 == 0 {
                s.push_str(&u64::MAX.to_string());
            }
            s.push_str(units[(next() % units.len() as u64) as usize]);
            if next() % 7 == 0 {
                s.push(char::from_u32((next() % 0x2000) as u32).unwrap_or('?'));
            }
            for max in [MAX_TIMEOUT, MAX_AGE] {
                match duration(&s, max) {
                    Ok(d) => assert!(!d.is_zero() && d <= max, "{s:?} gave {d:?}"),
                    Err(e) => assert!(!e.is_empty() && !e.contains('\n'), "{s:?}: {e:?}"),
                }
            }
            for max in [MAX_MEMORY, MAX_OUTPUT] {
                match size(&s, max) {
                    Ok(v) => assert!(v > 0 && v <= max, "{s:?} gave {v}"),
                    Err(e) => assert!(!e.is_empty() && !e.contains('\n'), "{s:?}: {e:?}"),
                }
            }
        }
    }
}
