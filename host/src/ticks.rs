//! The sandbox's clock: while a fix runs, its engine's epoch is advanced
//! every interval of the running thread's CPU time by a timer signal sent
//! to that thread, so running a fix makes no thread.
//!
//! A guest checks its engine's epoch at function entries and loop headers;
//! once the epoch passes the store's deadline, the guest yields to the
//! host, which then checks the run's deadline and the off-switch. Only
//! something outside the guest can move the epoch. A ticking thread did,
//! and cost a warm dry-run about 0.2 ms of its 2.5: made, started on a
//! core, woken and joined at the end. A POSIX timer is five system calls
//! (the thread's id and mask, then make, set and delete the timer).
//!
//! The timer (`timer_create` with `SIGEV_THREAD_ID`) sends a real-time
//! signal to this thread alone. Its handler reads this thread's engine (a
//! thread-local pointer, set only while the timer is armed) and adds one
//! to the engine's epoch: a thread-local load and an atomic add, both safe
//! in a signal handler, and neither touches `errno`.
//!
//! The timer runs on the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`),
//! not the wall clock, so that it never interrupts a system call: a signal
//! delivered while host code waits in one makes the call fail with `EINTR`
//! where the kernel cannot restart it, as on FUSE file systems that honour
//! interrupts (gcsfuse, rclone, JuiceFS), where every retry would be cut
//! off again by the next tick. A thread asleep in a system call uses no
//! CPU time, and the kernel checks a CPU-time timer only as the thread
//! returns to user space, after the call is done: where it expires them
//! from task work (`POSIX_CPU_TIMERS_TASK_WORK`, x86 since Linux 5.9).
//! Elsewhere (older kernels, other architectures) the tick interrupt can
//! fire a timer while the thread works in a system call, so a thread
//! ticks instead. A guest computing is what the epoch is for, and it uses
//! CPU time: it yields every 10 ms of it, later in wall time when the
//! process gets little CPU (a run's deadline and a pause wait for that
//! yield). Host calls run on the same thread, between yields, and check
//! the deadline and a pause themselves. The handler is installed with
//! `SA_RESTART` and `SA_ONSTACK` all the same.
//!
//! One tick more comes on the wall clock, just after the run's deadline
//! (a one-shot `CLOCK_MONOTONIC` timer), so a computing guest that gets
//! little CPU (a throttled cgroup, a starved host) yields when its
//! deadline passes, not up to 10 ms of its own CPU time later: under a
//! 1% CPU quota, that was a second or two past a 2 s deadline. This one
//! signal can cut off a system call of host code's; past the deadline,
//! host calls fail anyway.
//!
//! Where no timer can be had, a ticking thread (on the wall clock) does
//! the same work: the kernel is not one of the above, the signal has
//! another handler already (a program that embeds this one; a handler it
//! installs after the first timer is not seen), it is blocked on this
//! thread (it would never arrive), this thread has a timer armed already,
//! or the kernel refuses one.

use std::marker::PhantomData;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use crate::periodic::Periodic;

/// Advances an engine's epoch every interval until dropped.
pub struct Ticks(How);

/// Each held for its drop, which stops the ticks.
enum How {
    Signal { _timer: Timer },
    Thread { _thread: Periodic },
}

impl Ticks {
    /// Advances `engine`'s epoch every `every` of this thread's CPU time
    /// from now on (of the wall clock where a thread ticks), and once more
    /// just after `deadline` on the wall clock.
    pub fn start(engine: &Engine, every: Duration, deadline: Instant) -> Ticks {
        // A zero interval would disarm the timer, and no tick would come.
        assert!(!every.is_zero(), "the epoch's interval must not be zero");
        match Timer::arm(engine, every, deadline) {
            Some(timer) => Ticks(How::Signal { _timer: timer }),
            None => {
                let engine = engine.clone();
                Ticks(How::Thread {
                    _thread: Periodic::start(every, move || {
                        engine.increment_epoch();
                        true
                    }),
                })
            }
        }
    }

    /// Whether a timer signal does the ticking (else a thread).
    pub fn by_signal(&self) -> bool {
        matches!(self.0, How::Signal { .. })
    }
}

thread_local! {
    /// The engine this thread's timer ticks, while it is armed.
    static ENGINE: AtomicPtr<Engine> = const { AtomicPtr::new(std::ptr::null_mut()) };
}

fn engine_here() -> *mut Engine {
    ENGINE.with(|e| e.load(Ordering::Relaxed))
}

fn set_engine_here(engine: *const Engine) {
    ENGINE.with(|e| e.store(engine.cast_mut(), Ordering::Relaxed));
}

/// The signal the timers send: one the C library leaves to programs.
fn signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

extern "C" fn tick(_: libc::c_int) {
    let engine = engine_here();
    if !engine.is_null() {
        // SAFETY: the pointer is set only while the `Timer` that owns the
        // engine is alive, on this thread, and cleared before it is
        // dropped; a handler that interrupts the drop runs before it goes
        // on. `increment_epoch` is one atomic add.
        unsafe { (*engine).increment_epoch() };
    }
}

/// Installs the handler, once per process. False when the signal had a
/// handler of someone else's.
fn handler_installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let sig = signal();
        // SAFETY: plain calls with structures owned here; the handler is
        // async-signal-safe (see `tick`).
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction != libc::SIG_DFL
            {
                return false;
            }
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = tick as extern "C" fn(libc::c_int) as libc::sighandler_t;
            new.sa_flags = libc::SA_RESTART | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            libc::sigaction(sig, &new, std::ptr::null_mut()) == 0
        }
    })
}

/// Whether this kernel fires a thread's CPU-time timers only as the thread
/// returns to user space: x86-64, Linux 5.9 or later.
fn timers_fire_outside_calls() -> bool {
    static KERNEL: OnceLock<bool> = OnceLock::new();
    *KERNEL.get_or_init(|| {
        cfg!(target_arch = "x86_64")
            && release_at_least(&rustix::system::uname().release().to_string_lossy(), (5, 9))
    })
}

/// Whether a kernel release (`uname -r`) is at least `major.minor`.
fn release_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut numbers = release.split(|c: char| !c.is_ascii_digit());
    let mut next = || numbers.next().and_then(|n| n.parse::<u32>().ok());
    matches!((next(), next()), (Some(a), Some(b)) if (a, b) >= (major, minor))
}

/// Whether the signal is blocked on this thread (then it never arrives).
fn blocked_here() -> bool {
    // SAFETY: reads this thread's mask into a set owned here.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set) != 0
            || libc::sigismember(&set, signal()) != 0
    }
}

/// How long after a run's deadline its wall-clock tick comes: enough for
/// the async runtime's timer (whole milliseconds, rounded up) to have
/// expired when the guest yields to it.
const PAST_DEADLINE: Duration = Duration::from_millis(3);

/// POSIX timers that signal this thread, and the engine they tick.
struct Timer {
    /// Every interval of CPU time.
    id: libc::timer_t,
    /// Once, just past the deadline, on the wall clock.
    deadline: libc::timer_t,
    /// Kept here, boxed: the thread-local points at it.
    _engine: Box<Engine>,
    /// Dropped on the thread that armed it, whose thread-local it clears.
    _here: PhantomData<*const ()>,
}

impl Timer {
    fn arm(engine: &Engine, every: Duration, deadline: Instant) -> Option<Timer> {
        if !timers_fire_outside_calls()
            || !handler_installed()
            || blocked_here()
            || !engine_here().is_null()
        {
            return None;
        }
        let engine = Box::new(engine.clone());
        set_engine_here(&*engine);
        let interval = timespec(every);
        let past = timespec(deadline.saturating_duration_since(Instant::now()) + PAST_DEADLINE);
        let zero = timespec(Duration::ZERO);
        let made = one_timer(libc::CLOCK_THREAD_CPUTIME_ID, interval, interval).and_then(|id| {
            match one_timer(libc::CLOCK_MONOTONIC, past, zero) {
                Some(deadline) => Some((id, deadline)),
                None => {
                    // SAFETY: the timer just made, deleted once.
                    unsafe { libc::timer_delete(id) };
                    None
                }
            }
        });
        let Some((id, deadline)) = made else {
            set_engine_here(std::ptr::null());
            return None;
        };
        Some(Timer {
            id,
            deadline,
            _engine: engine,
            _here: PhantomData,
        })
    }
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// A timer on `clock` that signals this thread after `value`, then every
/// `interval` (never if zero).
fn one_timer(
    clock: libc::clockid_t,
    value: libc::timespec,
    interval: libc::timespec,
) -> Option<libc::timer_t> {
    // SAFETY: plain calls with structures owned here. The timer signals
    // this thread only (`SIGEV_THREAD_ID`); it is deleted in `Timer`'s
    // `drop`, on this thread (`Timer` is not `Send`), or here.
    unsafe {
        let mut event: libc::sigevent = std::mem::zeroed();
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = signal();
        event.sigev_notify_thread_id = libc::gettid();
        let mut id: libc::timer_t = std::mem::zeroed();
        if libc::timer_create(clock, &mut event, &mut id) != 0 {
            return None;
        }
        let spec = libc::itimerspec {
            it_interval: interval,
            it_value: value,
        };
        if libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) != 0 {
            libc::timer_delete(id);
            return None;
        }
        Some(id)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: the timers made in `arm`, each deleted once. A signal
        // already on its way is handled before the next line runs, or
        // finds the pointer cleared.
        unsafe {
            libc::timer_delete(self.id);
            libc::timer_delete(self.deadline);
        }
        set_engine_here(std::ptr::null());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;
    use wasmtime::{Config, Instance, Module, Store};

    /// `(module (func (export "f") (loop (br 0))))`
    const SPIN: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
        0x03, 0x02, 0x01, 0x00, // func 0: type 0
        0x07, 0x05, 0x01, 0x01, b'f', 0x00, 0x00, // export "f"
        0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop br 0
    ];

    /// Whether this test process can have timers: the signal neither
    /// ignored nor handled by its parent's choice, nor blocked (a harness
    /// may start tests so). Where not, the signal's own checks are skipped.
    fn timers_here() -> bool {
        let here = handler_installed() && !blocked_here();
        if !here {
            eprintln!(
                "skipped: signal {} is ignored, handled or blocked here",
                signal()
            );
        }
        here
    }

    /// A deadline no test reaches.
    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    fn new_engine() -> Engine {
        let mut config = Config::new();
        config.epoch_interruption(true);
        Engine::new(&config).unwrap()
    }

    /// Runs a guest that loops forever with an epoch deadline one tick
    /// away, while `ticks` runs: it ends only if the ticks reach it. A
    /// watchdog moves the epoch after 20 seconds so a failure cannot hang.
    fn spin_until_ticked(engine: &Engine, ticks: impl FnOnce() -> Ticks) -> (Duration, bool) {
        let module = Module::new(engine, SPIN).unwrap();
        let mut store = Store::new(engine, ());
        store.set_epoch_deadline(1);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let f = instance.get_typed_func::<(), ()>(&mut store, "f").unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let rescued = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let (engine, done, rescued) = (engine.clone(), done.clone(), rescued.clone());
            std::thread::spawn(move || {
                let since = Instant::now();
                while !done.load(Ordering::Relaxed) {
                    if since.elapsed() > Duration::from_secs(20) {
                        rescued.store(true, Ordering::Relaxed);
                        engine.increment_epoch();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let ticks = ticks();
        let started = Instant::now();
        let trap = f.call(&mut store, ()).unwrap_err();
        let took = started.elapsed();
        drop(ticks);
        done.store(true, Ordering::Relaxed);
        watchdog.join().unwrap();
        assert_eq!(
            trap.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::Interrupt)
        );
        (took, !rescued.load(Ordering::Relaxed))
    }

    #[test]
    fn the_signal_reaches_a_guest_that_never_yields() {
        if !timers_here() {
            return;
        }
        let engine = new_engine();
        let mut by_signal = false;
        let (took, ticked) = spin_until_ticked(&engine, || {
            let t = Ticks::start(&engine, Duration::from_millis(10), far());
            by_signal = t.by_signal();
            t
        });
        assert!(by_signal, "no timer: the thread ticked");
        assert!(ticked, "the guest ran on until the watchdog ({took:?})");
        // Disarmed: this thread may arm a timer again.
        assert!(engine_here().is_null());
        let again = Ticks::start(&engine, Duration::from_millis(10), far());
        assert!(again.by_signal());
    }

    /// A guest that gets no CPU time to speak of still yields when its
    /// deadline passes: ticks an hour of CPU time apart, a deadline 50 ms
    /// away, and the guest stops long before the watchdog.
    #[test]
    fn a_tick_comes_just_past_the_deadline_on_the_wall_clock() {
        if !timers_here() {
            return;
        }
        let engine = new_engine();
        let (took, ticked) = spin_until_ticked(&engine, || {
            let deadline = Instant::now() + Duration::from_millis(50);
            let t = Ticks::start(&engine, Duration::from_secs(3600), deadline);
            assert!(t.by_signal(), "no timer: the thread ticked");
            t
        });
        assert!(ticked, "the guest ran on until the watchdog ({took:?})");
        assert!(
            took >= Duration::from_millis(50),
            "ticked before the deadline ({took:?})"
        );
    }

    #[test]
    fn each_thread_ticks_its_own_engine() {
        // Two guests spin at once, each on its own thread with its own
        // engine and timer: each is stopped by its own ticks.
        if !timers_here() {
            return;
        }
        let threads: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(|| {
                    let engine = new_engine();
                    let (took, ticked) = spin_until_ticked(&engine, || {
                        let t = Ticks::start(&engine, Duration::from_millis(10), far());
                        assert!(t.by_signal(), "no timer: the thread ticked");
                        t
                    });
                    assert!(ticked, "the guest ran on until the watchdog ({took:?})");
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn a_thread_ticks_where_the_signal_cannot_arrive() {
        if !timers_here() {
            return;
        }
        let engine = new_engine();
        // A second timer on one thread, and a thread that blocks the
        // signal: both tick by thread, and still stop the guest.
        let first = Ticks::start(&engine, Duration::from_secs(3600), far());
        assert!(first.by_signal());
        let (_, ticked) = spin_until_ticked(&engine, || {
            let t = Ticks::start(&engine, Duration::from_millis(10), far());
            assert!(!t.by_signal());
            t
        });
        assert!(ticked);
        drop(first);
        std::thread::spawn(|| {
            // SAFETY: blocks the signal on this test thread only.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, signal());
                assert_eq!(
                    libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
                    0
                );
            }
            let engine = new_engine();
            let (_, ticked) = spin_until_ticked(&engine, || {
                let t = Ticks::start(&engine, Duration::from_millis(10), far());
                assert!(!t.by_signal());
                t
            });
            assert!(ticked);
        })
        .join()
        .unwrap();
    }

    /// A tick never cuts off a system call, so none fails with `EINTR`
    /// (some, on FUSE file systems, would fail at every retry): with ticks
    /// every millisecond of CPU time, the thread computes for a few of
    /// them, then sleeps in `nanosleep`, which the kernel never restarts
    /// after a handler. A wall-clock timer cuts every one of these sleeps
    /// short.
    #[test]
    fn a_tick_never_interrupts_a_system_call() {
        if !timers_here() {
            return;
        }
        let engine = new_engine();
        let ticks = Ticks::start(&engine, Duration::from_millis(1), far());
        assert!(ticks.by_signal());
        for _ in 0..20 {
            let computing = Instant::now();
            let mut x = 0u64;
            while computing.elapsed() < Duration::from_millis(3) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            let nap = libc::timespec {
                tv_sec: 0,
                tv_nsec: 5_000_000,
            };
            // SAFETY: a plain call with a structure owned here.
            let slept = unsafe { libc::nanosleep(&nap, std::ptr::null_mut()) };
            assert_eq!(
                slept,
                0,
                "the sleep was cut off: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        for (release, at_least) in [
            ("6.18.44", true),
            ("5.9.0", true),
            ("5.11.0-rc1", true),
            ("5.10.0-28-amd64", true),
            ("10.0", true),
            ("5.8.18-1-default", false),
            ("4.18.0-553.el8_10.x86_64", false),
            ("3", false),
            ("", false),
            ("linux", false),
        ] {
            assert_eq!(release_at_least(release, (5, 9)), at_least, "{release}");
        }
    }
}
