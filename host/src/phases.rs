//! Where a command's time goes: named phases, each the time since the one
//! before it. `-vv` prints them (one line each, on stderr) and the JSON
//! summary carries them as `timings_ms`.

use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{Map, Value, json};

static MAIN: OnceLock<Instant> = OnceLock::new();

/// Called first thing in `main`: phases then count from there, so the
/// command line's parsing shows as a phase of its own.
pub fn main_started() {
    let _ = MAIN.set(Instant::now());
}

/// When `main` started (now, if it never said).
pub fn process_start() -> Instant {
    *MAIN.get_or_init(Instant::now)
}

/// A stopwatch with a lap per phase.
pub struct Phases {
    started: Instant,
    last: Instant,
    laps: Vec<(&'static str, f64)>,
}

impl Phases {
    /// Starts timing at `started` (the command's start).
    pub fn since(started: Instant) -> Phases {
        Phases {
            started,
            last: started,
            laps: Vec::new(),
        }
    }

    /// Ends the phase `name`: the time since the previous one ended. A name
    /// used twice adds up.
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        let ms = (now - self.last).as_secs_f64() * 1e3;
        self.last = now;
        match self.laps.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += ms,
            None => self.laps.push((name, ms)),
        }
    }

    /// Milliseconds spent in `name` so far.
    pub fn ms(&self, name: &str) -> f64 {
        self.laps
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0.0, |(_, ms)| *ms)
    }

    /// Every phase in milliseconds, in order, and `total`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        for (name, ms) in &self.laps {
            m.insert((*name).to_string(), json!(round(*ms)));
        }
        m.insert(
            "total".into(),
            json!(round(self.started.elapsed().as_secs_f64() * 1e3)),
        );
        Value::Object(m)
    }

    /// One debug line per phase (shown by `-vv`), the largest marked.
    pub fn log(&self, what: &str) {
        let largest = self
            .laps
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(n, _)| *n);
        for (name, ms) in &self.laps {
            let mark = if Some(*name) == largest {
                " (largest)"
            } else {
                ""
            };
            tracing::debug!("{what} phase {name}: {ms:.3} ms{mark}");
        }
        tracing::debug!(
            "{what} total in process: {:.3} ms",
            self.started.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// Three decimals are enough for a millisecond figure.
fn round(ms: f64) -> f64 {
    (ms * 1e3).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_and_repeat_names_accumulate() {
        let mut p = Phases::since(Instant::now());
        std::thread::sleep(std::time::Duration::from_millis(2));
        p.lap("a");
        p.lap("b");
        std::thread::sleep(std::time::Duration::from_millis(2));
        p.lap("a");
        assert!(p.ms("a") >= 4.0, "{}", p.ms("a"));
        let j = p.to_json();
        let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "b", "total"]);
        assert!(j["total"].as_f64().unwrap() >= p.ms("a") + p.ms("b"));
    }
}
