//! The systemd side of a scheduled fix: the calendar an instance's timer
//! fires on, and the drop-ins that give `defops-wasm-fix@NAME` its
//! schedule and its writable paths (the template units themselves ship with
//! the package and are never edited).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::instance::Instance;

/// Where drop-ins are written unless `--unit-dir` says otherwise.
pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";

/// The name of the drop-in file, in both units' `.d` directories.
const DROP_IN: &str = "defops-wasm.conf";

pub fn service(name: &str) -> String {
    format!("defops-wasm-fix@{name}.service")
}

pub fn timer(name: &str) -> String {
    format!("defops-wasm-fix@{name}.timer")
}

/// `--every DURATION` as an `OnCalendar=` expression: a period that divides
/// an hour or a day evenly, so the runs fall at the same times every day.
pub fn calendar_of_every(d: Duration) -> Result<String, String> {
    let secs = d.as_secs();
    let hint = "use a period that divides an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30min) or a day (1, 2, 3, 4, 6, 8 or 12h), 1d or 7d, or give --on-calendar";
    if d.subsec_nanos() != 0 || secs < 60 || !secs.is_multiple_of(60) {
        return Err(format!(
            "--every {}: a schedule runs at most every minute, in whole minutes; {hint}",
            crate::sandbox::humantime(d)
        ));
    }
    let minutes = secs / 60;
    Ok(match minutes {
        m if m < 60 && 60 % m == 0 => format!("*-*-* *:00/{m}:00"),
        60 => "*-*-* *:00:00".to_string(),
        m if m % 60 == 0 && m < 1440 && 1440 % m == 0 => format!("*-*-* 00/{}:00:00", m / 60),
        1440 => "*-*-* 00:00:00".to_string(),
        10_080 => "Mon *-*-* 00:00:00".to_string(),
        _ => {
            return Err(format!(
                "--every {} does not divide an hour or a day evenly; {hint}",
                crate::sandbox::humantime(d)
            ));
        }
    })
}

/// What an `OnCalendar=` value may hold: printable ASCII on one line (the
/// syntax itself is systemd's to judge, see [`check_calendar`]).
pub fn check_calendar_text(expr: &str) -> Result<(), String> {
    if expr.trim().is_empty() {
        return Err("the calendar expression is empty".into());
    }
    if !expr.bytes().all(|b| (0x20..0x7f).contains(&b)) || expr.contains('%') {
        return Err(format!(
            "{expr:?} holds a character a unit file cannot carry (control, non-ASCII or %)"
        ));
    }
    Ok(())
}

/// Checks a calendar expression with `systemd-analyze calendar` when it is
/// installed (it is the judge of the syntax); only the text when it is not.
pub fn check_calendar(expr: &str) -> Result<(), String> {
    check_calendar_text(expr)?;
    let out = match std::process::Command::new("systemd-analyze")
        .args(["calendar", "--iterations=1", expr])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(_) => return Ok(()),
    };
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(&out.stderr);
    let why = why.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    Err(format!(
        "--on-calendar {expr:?}: systemd does not accept it ({}); see `man systemd.time`",
        crate::escape::line(why.trim())
    ))
}

/// A path as a unit file's list setting takes it: refused when it holds
/// what would split or re-quote the list.
fn unit_path(p: &Path) -> Result<String, String> {
    let s = p
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8; a unit file cannot name it", shown(p)))?;
    if s.bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b"\"'\\%;".contains(&b))
    {
        return Err(format!(
            "{s:?} holds a space, a quote, a backslash, % or ; which a unit's ReadWritePaths= cannot carry as given; grant a directory whose path has none"
        ));
    }
    Ok(s.to_string())
}

/// Directories the service's sandbox hides or replaces: a grant or a fix
/// there would not be what the scheduled run sees.
const PRIVATE: [&str; 4] = ["/tmp", "/var/tmp", "/dev/shm", "/proc"];
/// Directories `ProtectHome=yes` hides; the drop-in makes them read-only
/// instead when an instance needs them.
const HOMES: [&str; 3] = ["/home", "/root", "/run/user"];

fn shown(p: &Path) -> String {
    crate::escape::line(&p.display().to_string()).into_owned()
}

fn under(p: &Path, dirs: &[&str]) -> bool {
    dirs.iter().any(|d| p.starts_with(d))
}

/// The service drop-in of an instance: its read-write paths (the kernel
/// enforces the grants too) and, when it needs a home directory, that home
/// read-only.
pub fn service_drop_in(name: &str, inst: &Instance) -> Result<String, String> {
    let mut all: Vec<&Path> = vec![inst.fix.as_path()];
    all.extend(inst.allow.iter().map(PathBuf::as_path));
    all.extend(inst.allow_ro.iter().map(PathBuf::as_path));
    all.extend(inst.allow_log.iter().map(Path::new));
    for p in &all {
        if under(p, &PRIVATE) {
            return Err(format!(
                "{} is under a directory the scheduled service gets its own private copy of ({}); put it elsewhere (fixes: /usr/local/share/defops-wasm/fixes)",
                shown(p),
                PRIVATE.join(", ")
            ));
        }
    }
    let mut text = format!(
        "# Written by `defops-wasm schedule add {name}`; `defops-wasm schedule remove {name}` deletes it.\n[Service]\n"
    );
    for p in &inst.allow {
        text.push_str(&format!("ReadWritePaths={}\n", unit_path(p)?));
    }
    for p in &inst.allow_ro {
        unit_path(p)?;
    }
    if all.iter().any(|p| under(p, &HOMES)) {
        text.push_str("ProtectHome=read-only\n");
    }
    Ok(text)
}

/// The timer drop-in of an instance: its calendar, replacing the
/// template's.
pub fn timer_drop_in(name: &str, inst: &Instance) -> String {
    format!(
        "# Written by `defops-wasm schedule add {name}`; `defops-wasm schedule remove {name}` deletes it.\n[Timer]\nOnCalendar=\nOnCalendar={}\n",
        inst.on_calendar
    )
}

/// The drop-in files of an instance.
pub fn drop_ins(unit_dir: &Path, name: &str) -> [PathBuf; 2] {
    [
        unit_dir.join(format!("{}.d", service(name))).join(DROP_IN),
        unit_dir.join(format!("{}.d", timer(name))).join(DROP_IN),
    ]
}

/// Whether the instance's timer is enabled (`systemctl enable` made its
/// link in `timers.target.wants`).
pub fn timer_enabled(unit_dir: &Path, name: &str) -> bool {
    unit_dir
        .join("timers.target.wants")
        .join(timer(name))
        .symlink_metadata()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_maps_to_a_calendar_or_says_why_not() {
        let m = |n: u64| calendar_of_every(Duration::from_secs(n * 60));
        assert_eq!(m(15).unwrap(), "*-*-* *:00/15:00");
        assert_eq!(m(1).unwrap(), "*-*-* *:00/1:00");
        assert_eq!(m(60).unwrap(), "*-*-* *:00:00");
        assert_eq!(m(360).unwrap(), "*-*-* 00/6:00:00");
        assert_eq!(m(1440).unwrap(), "*-*-* 00:00:00");
        assert_eq!(m(10_080).unwrap(), "Mon *-*-* 00:00:00");
        for bad in [7, 45, 90, 300 * 60] {
            assert!(m(bad).unwrap_err().contains("--on-calendar"), "{bad}");
        }
        assert!(calendar_of_every(Duration::from_secs(30)).is_err());
        assert!(calendar_of_every(Duration::from_millis(60_500)).is_err());
    }

    #[test]
    fn unit_paths_refuse_what_would_split_a_list() {
        assert!(unit_path(Path::new("/var/lib/app")).is_ok());
        for bad in ["/var/lib/my app", "/a\"b", "/a%b", "/a\\b", "/a;b", "/a\nb"] {
            assert!(unit_path(Path::new(bad)).is_err(), "{bad}");
        }
    }
}
