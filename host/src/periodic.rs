//! A thread that does something every so often while a run goes on: the
//! pause watcher of a real run, and the sandbox's epoch ticker where no
//! timer signal can be had ([`crate::ticks`]).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// Calls its function every interval until the function returns `false`
/// or this is dropped. Dropping wakes the thread at once and waits for it
/// to end (never for the rest of an interval): a thread still alive when
/// the process exits costs the exit far more (on a 2-core VM, 0.5 ms of a
/// 4 ms dry-run) than the wait for one just woken.
pub struct Periodic {
    /// Dropped to stop the thread (its receiver then sees the hang-up).
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Periodic {
    /// Calls `tick` at once, then every `every`.
    pub fn start(every: Duration, mut tick: impl FnMut() -> bool + Send + 'static) -> Periodic {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while tick() {
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        });
        Periodic {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // A tick that panicked has said so on stderr already.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    #[test]
    fn ticks_until_dropped_and_the_drop_waits_for_the_thread_not_the_interval() {
        let ticks = Arc::new(AtomicU32::new(0));
        let seen = ticks.clone();
        let p = Periodic::start(Duration::from_secs(3600), move || {
            seen.fetch_add(1, Ordering::Relaxed);
            true
        });
        // The first tick comes at once.
        let waiting = Instant::now();
        while ticks.load(Ordering::Relaxed) == 0 {
            assert!(waiting.elapsed() < Duration::from_secs(30));
            std::thread::yield_now();
        }
        // An hour's interval: the drop returns only once the thread has
        // ended (its function, holding `seen`, dropped with it), and so
        // only if the drop woke it.
        drop(p);
        assert_eq!(Arc::strong_count(&ticks), 1, "the thread outlived the drop");
        // Woken, it ended without another tick.
        assert_eq!(ticks.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_tick_returning_false_ends_the_thread() {
        let ticks = Arc::new(AtomicU32::new(0));
        let seen = ticks.clone();
        let p = Periodic::start(Duration::from_millis(1), move || {
            seen.fetch_add(1, Ordering::Relaxed) < 2
        });
        let waiting = Instant::now();
        while ticks.load(Ordering::Relaxed) < 3 {
            assert!(waiting.elapsed() < Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(p);
        assert_eq!(ticks.load(Ordering::Relaxed), 3);
    }
}
