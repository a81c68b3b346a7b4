//! A thread that does something every so often while a run goes on: the
//! epoch ticker of the sandbox, the pause watcher of a real run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Calls its function every interval until the function returns `false`
/// or this is dropped (which wakes the thread and waits for it: a run's
/// end never waits out an interval).
pub struct Periodic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Periodic {
    /// Calls `tick` at once, then every `every`.
    pub fn start(every: Duration, mut tick: impl FnMut() -> bool + Send + 'static) -> Periodic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) && tick() {
                let next = Instant::now() + every;
                while !flag.load(Ordering::Relaxed) {
                    match next.checked_duration_since(Instant::now()) {
                        Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                        _ => break,
                    }
                }
            }
        });
        Periodic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_a_drop_does_not_wait_out_the_interval() {
        let ticks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = ticks.clone();
        let p = Periodic::start(Duration::from_millis(1), move || {
            seen.fetch_add(1, Ordering::SeqCst) < 2
        });
        while ticks.load(Ordering::SeqCst) < 3 {
            std::thread::yield_now();
        }
        drop(p);
        assert_eq!(ticks.load(Ordering::SeqCst), 3);
        // An hour's interval: the drop returns at once.
        drop(Periodic::start(Duration::from_secs(3600), || true));
    }
}
