//! A thread that does something every so often while a run goes on: the
//! epoch ticker of the sandbox, the pause watcher of a real run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Calls its function every interval until the function returns `false`
/// or this is dropped (which waits for the thread).
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
                std::thread::sleep(every);
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
            let _ = t.join();
        }
    }
}
