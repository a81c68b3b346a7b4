//! Change windows: when real runs may start, in a named time zone.
//!
//! `allow` entries are `DAYS HH:MM-HH:MM` (`Mon-Fri 09:00-16:00`,
//! `Sat,Sun 10:00-12:00`, `daily 22:00-06:00`; an end before the start runs
//! past midnight, `24:00` is the end of the day). Holidays are whole dates;
//! freezes run `from` (a date, or a date and time) `to` (a date, inclusive,
//! or a date and time, exclusive). Freezes and holidays win over `allow`; no
//! `allow` entry means any time outside them.

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// When real runs are allowed.
#[derive(Debug, Clone)]
pub struct Window {
    zone_name: String,
    zone: TimeZone,
    allow: Vec<Allow>,
    closed: Vec<Closed>,
}

#[derive(Debug, Clone)]
struct Allow {
    text: String,
    /// Bit `n` set: allowed on the day `n` days from Monday.
    days: u8,
    /// Minutes since midnight; `end <= start` runs past midnight.
    start: u16,
    end: u16,
}

#[derive(Debug, Clone)]
struct Closed {
    from: DateTime,
    /// Exclusive.
    until: DateTime,
    why: String,
}

/// What the window says at one moment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WindowNow {
    pub open: bool,
    /// Why: the entry that allows it, or the freeze, holiday or missing
    /// entry that does not.
    pub why: String,
    /// The local time looked at, with its zone.
    pub local: String,
    /// When that changes (within the next two weeks), local time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day_index(s: &str) -> Result<u8, String> {
    const FULL: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let lower = s.to_ascii_lowercase();
    (0..7)
        .find(|&i| lower == DAYS[i] || lower == FULL[i])
        .map(|i| i as u8)
        .ok_or_else(|| format!("{s:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
}

fn weekday_index(w: Weekday) -> u8 {
    (w.to_monday_zero_offset()) as u8
}

fn parse_days(s: &str) -> Result<u8, String> {
    if s.eq_ignore_ascii_case("daily") {
        return Ok(0x7f);
    }
    let mut bits = 0u8;
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (day_index(a)?, day_index(b)?);
                let mut d = a;
                loop {
                    bits |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => bits |= 1 << day_index(part)?,
        }
    }
    Ok(bits)
}

fn parse_clock(s: &str) -> Result<u16, String> {
    let bad = || format!("{s:?} is not a time like 09:00 or 24:00");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// A date (the start of that day) or a date and time.
fn parse_moment(s: &str) -> Result<(DateTime, bool), String> {
    // (A `Date` parses from a date and time too, dropping the time.)
    if s.len() == 10
        && let Ok(d) = s.parse::<Date>()
    {
        return Ok((d.at(0, 0, 0, 0), true));
    }
    s.parse::<DateTime>().map(|dt| (dt, false)).map_err(|_| {
        format!("{s:?} is not a date (2026-12-24) or a date and time (2026-12-24 18:00)")
    })
}

impl Window {
    /// A window in the named IANA time zone (`Europe/Berlin`, `UTC`) that
    /// allows any time until entries are added.
    pub fn new(zone: &str) -> Result<Window, String> {
        let tz = TimeZone::get(zone)
            .map_err(|_| format!("{zone:?} is not a time zone name (like Europe/Berlin or UTC)"))?;
        Ok(Window {
            zone_name: zone.to_string(),
            zone: tz,
            allow: Vec::new(),
            closed: Vec::new(),
        })
    }

    /// Adds an `allow` entry: `DAYS HH:MM-HH:MM`.
    pub fn allow(&mut self, spec: &str) -> Result<(), String> {
        let bad_shape = || format!("{spec:?} is not like \"Mon-Fri 09:00-16:00\"");
        let (days, times) = spec.trim().split_once(' ').ok_or_else(bad_shape)?;
        let (start, end) = times.trim().split_once('-').ok_or_else(bad_shape)?;
        let (start, end) = (parse_clock(start)?, parse_clock(end)?);
        if start == end {
            return Err(format!("{spec:?} starts and ends at the same time"));
        }
        if start == 24 * 60 {
            return Err(format!("{spec:?} starts at 24:00; use 00:00"));
        }
        self.allow.push(Allow {
            text: spec.trim().to_string(),
            days: parse_days(days.trim())?,
            start,
            end: if end == 24 * 60 { 0 } else { end },
        });
        Ok(())
    }

    /// Adds a holiday: a whole date.
    pub fn holiday(&mut self, date: &str) -> Result<(), String> {
        let d: Date = Some(date)
            .filter(|d| d.len() == 10)
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| format!("{date:?} is not a date like 2026-12-24"))?;
        let next = d.tomorrow().map_err(|e| e.to_string())?;
        self.closed.push(Closed {
            from: d.at(0, 0, 0, 0),
            until: next.at(0, 0, 0, 0),
            why: format!("holiday {d}"),
        });
        Ok(())
    }

    /// Adds a freeze from `from` to `to` (a date: through its end).
    pub fn freeze(&mut self, from: &str, to: &str, reason: Option<&str>) -> Result<(), String> {
        let (start, _) = parse_moment(from)?;
        let (mut until, whole_day) = parse_moment(to)?;
        if whole_day {
            until = until
                .date()
                .tomorrow()
                .map_err(|e| e.to_string())?
                .at(0, 0, 0, 0);
        }
        if until <= start {
            return Err(format!("it ends ({to}) before it starts ({from})"));
        }
        self.closed.push(Closed {
            from: start,
            until,
            why: format!(
                "freeze {from} to {to}{}",
                reason.map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        });
        Ok(())
    }

    /// The time zone's name.
    pub fn zone(&self) -> &str {
        &self.zone_name
    }

    fn verdict(&self, z: &Zoned) -> (bool, String) {
        let local = z.datetime();
        if let Some(c) = self
            .closed
            .iter()
            .find(|c| c.from <= local && local < c.until)
        {
            return (false, c.why.clone());
        }
        if self.allow.is_empty() {
            return (true, "no allow entry limits the time".into());
        }
        let day = weekday_index(z.weekday());
        let yesterday = (day + 6) % 7;
        let minute = z.hour() as u16 * 60 + z.minute() as u16;
        for a in &self.allow {
            let on = |d: u8| a.days & (1 << d) != 0;
            let inside = if a.start < a.end {
                on(day) && a.start <= minute && minute < a.end
            } else {
                (on(day) && minute >= a.start) || (on(yesterday) && minute < a.end)
            };
            if inside {
                return (true, format!("allowed by {:?}", a.text));
            }
        }
        let all: Vec<_> = self.allow.iter().map(|a| format!("{:?}", a.text)).collect();
        (false, format!("outside {}", all.join(", ")))
    }

    /// What the window says at `at`, and until when.
    pub fn at(&self, at: Timestamp) -> WindowNow {
        let z = at.to_zoned(self.zone.clone());
        let (open, why) = self.verdict(&z);
        // The next change, minute by minute, for two weeks at most.
        let mut t = z.clone();
        let mut until = None;
        for _ in 0..14 * 24 * 60 {
            t = match t.checked_add(1.minute()) {
                Ok(t) => t,
                Err(_) => break,
            };
            if self.verdict(&t).0 != open {
                until = Some(t.strftime("%Y-%m-%d %H:%M %Z").to_string());
                break;
            }
        }
        WindowNow {
            open,
            why,
            local: z.strftime("%Y-%m-%d %H:%M %Z (%a)").to_string(),
            until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(w: &Window, local: &str) -> WindowNow {
        let dt: DateTime = local.parse().unwrap();
        w.at(dt.to_zoned(w.zone.clone()).unwrap().timestamp())
    }

    #[test]
    fn weekdays_office_hours() {
        let mut w = Window::new("Europe/Berlin").unwrap();
        w.allow("Mon-Fri 09:00-16:00").unwrap();
        // 2026-11-25 is a Wednesday.
        assert!(at(&w, "2026-11-25 09:00").open);
        assert!(at(&w, "2026-11-25 15:59").open);
        assert!(!at(&w, "2026-11-25 16:00").open);
        assert!(!at(&w, "2026-11-25 08:59").open);
        assert!(!at(&w, "2026-11-28 10:00").open, "Saturday");
        let now = at(&w, "2026-11-25 15:00");
        assert_eq!(now.until.as_deref(), Some("2026-11-25 16:00 CET"));
        let closed = at(&w, "2026-11-27 17:00");
        assert_eq!(closed.until.as_deref(), Some("2026-11-30 09:00 CET"));
        assert!(closed.why.contains("outside"), "{}", closed.why);
    }

    #[test]
    fn overnight_and_lists() {
        let mut w = Window::new("UTC").unwrap();
        w.allow("Fri,Sat 22:00-06:00").unwrap();
        assert!(at(&w, "2026-11-27 23:00").open, "Friday night");
        assert!(at(&w, "2026-11-28 05:59").open, "Saturday early");
        assert!(
            at(&w, "2026-11-29 05:00").open,
            "Sunday early, from Saturday"
        );
        assert!(!at(&w, "2026-11-30 05:00").open, "Monday early");
        assert!(!at(&w, "2026-11-27 21:59").open);
        let mut d = Window::new("UTC").unwrap();
        d.allow("daily 00:00-24:00").unwrap();
        assert!(at(&d, "2026-11-29 23:59").open);
        let mut r = Window::new("UTC").unwrap();
        r.allow("Sat-Mon 10:00-11:00").unwrap();
        assert!(
            at(&r, "2026-11-29 10:30").open,
            "Sunday, in a range that wraps"
        );
        assert!(!at(&r, "2026-11-25 10:30").open, "Wednesday");
    }

    #[test]
    fn holidays_and_freezes_win() {
        let mut w = Window::new("America/New_York").unwrap();
        w.allow("Mon-Fri 09:00-16:00").unwrap();
        w.holiday("2026-11-26").unwrap();
        w.freeze("2026-12-18 12:00", "2027-01-04", Some("year end"))
            .unwrap();
        let h = at(&w, "2026-11-26 10:00");
        assert!(!h.open);
        assert_eq!(h.why, "holiday 2026-11-26");
        assert!(at(&w, "2026-12-18 11:59").open);
        let f = at(&w, "2026-12-18 12:00");
        assert!(!f.open);
        assert!(f.why.contains("year end"), "{}", f.why);
        assert!(!at(&w, "2027-01-04 10:00").open, "the last day is included");
        assert!(at(&w, "2027-01-05 10:00").open);
        let mut any = Window::new("UTC").unwrap();
        any.holiday("2026-12-25").unwrap();
        assert!(at(&any, "2026-12-24 23:59").open);
        assert!(!at(&any, "2026-12-25 00:00").open);
    }

    #[test]
    fn bad_entries() {
        let mut w = Window::new("UTC").unwrap();
        for bad in [
            "Mon-Fri",
            "Mon-Fri 9:00-16:00",
            "Mon-Fri 09:00-09:00",
            "Fun 09:00-10:00",
            "Mon-Fri 09:00-25:00",
            "Mon 24:00-01:00",
            "Mon 09:60-10:00",
        ] {
            assert!(w.allow(bad).is_err(), "{bad}");
        }
        assert!(w.holiday("2026-02-30").is_err());
        assert!(w.holiday("2026-12-24 10:00").is_err());
        assert!(w.freeze("2026-12-20", "2026-12-19", None).is_err());
        assert!(w.freeze("next week", "2026-12-19", None).is_err());
        assert!(Window::new("Not/AZone").is_err());
        assert!(w.allow("Monday-Friday 09:00-16:00").is_ok());
    }
}
