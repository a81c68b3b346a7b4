//! Work on several cores at once, each helper thread started on another
//! core than the one that starts it.
//!
//! On a small VM the kernel often queues a new thread on its parent's core
//! and leaves it there, sharing that core, for milliseconds while another
//! idles: two halves of a job then take as long as the whole, or longer.
//! `std::thread` cannot say where a thread starts, so the helpers here are
//! POSIX threads made with an affinity of every core the calling thread
//! may use but the one it is on. Once running, a helper takes the calling
//! thread's mask back, so the scheduler stays free to balance a loaded
//! machine.
//!
//! A helper's stack is 2 MiB, std's default for its threads (the work
//! given here is loops over buffers, never deep recursion); unlike a std
//! thread, an overflow of it ends the process with SIGSEGV and no message.

use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

/// A helper's stack (std's default for its threads).
const STACK: usize = 2 << 20;

/// `work(0)` on this thread and `work(1)` .. `work(n - 1)` on helper
/// threads, at once; the results in order (none when `n` is 0). A panic
/// in any is resumed here once all have ended. A helper that cannot be had
/// runs here, after.
pub fn on_cores<R: Send>(n: usize, work: impl Fn(usize) -> R + Sync) -> Vec<R> {
    placed(n, work).0
}

/// A slot goes to another thread by pointer, out of the compiler's sight:
/// what it holds must be able to.
const _: fn() = || {
    fn sendable<T: Send>() {}
    sendable::<Slot<'_, ()>>();
};

/// [`on_cores`], the core each helper started on, and the core they were
/// kept off (the caller's when they were made).
fn placed<R: Send>(
    n: usize,
    work: impl Fn(usize) -> R + Sync,
) -> (Vec<R>, Vec<Option<usize>>, Option<usize>) {
    if n <= 1 {
        return ((0..n).map(&work).collect(), Vec::new(), None);
    }
    let work: &(dyn Fn(usize) -> R + Sync) = &work;
    let masks = Masks::here();
    // Every slot is made before any helper starts: the vector never moves.
    let mut slots: Vec<Slot<'_, R>> = (1..n)
        .map(|index| Slot {
            work,
            index,
            all: masks.all,
            began_on: None,
            out: None,
        })
        .collect();
    let mut helpers = Helpers(Vec::with_capacity(n - 1));
    let base = slots.as_mut_ptr();
    for i in 0..slots.len() {
        // SAFETY: the slot outlives the helper (`helpers` joins every one
        // before `slots` can be dropped, on a panic too), and this thread
        // does not touch it until then.
        if let Some(thread) = unsafe { spawn(base.add(i), masks.away.as_ref()) } {
            helpers.0.push((i, thread));
        }
    }
    let started: Vec<usize> = helpers.0.iter().map(|(i, _)| *i).collect();
    let here = catch_unwind(AssertUnwindSafe(|| work(0)));
    drop(helpers);
    let mut out = Vec::with_capacity(n);
    let mut panicked = None;
    match here {
        Ok(r) => out.push(r),
        Err(p) => panicked = Some(p),
    }
    for (i, slot) in slots.iter_mut().enumerate() {
        let result = match started.contains(&i) {
            true => slot
                .out
                .take()
                .unwrap_or_else(|| Err(Box::new("a helper did not report"))),
            false => catch_unwind(AssertUnwindSafe(|| (slot.work)(slot.index))),
        };
        match result {
            Ok(r) => out.push(r),
            Err(p) => {
                panicked.get_or_insert(p);
            }
        }
    }
    if let Some(p) = panicked {
        resume_unwind(p);
    }
    (out, slots.iter().map(|s| s.began_on).collect(), masks.cpu)
}

/// What one helper runs and where its result goes.
struct Slot<'a, R> {
    work: &'a (dyn Fn(usize) -> R + Sync),
    index: usize,
    /// The calling thread's mask, taken back once the helper runs.
    all: Option<libc::cpu_set_t>,
    /// The core the helper started on.
    began_on: Option<usize>,
    out: Option<std::thread::Result<R>>,
}

/// The helpers started, joined when dropped.
struct Helpers(Vec<(usize, libc::pthread_t)>);

impl Drop for Helpers {
    fn drop(&mut self) {
        for (_, thread) in self.0.drain(..) {
            // SAFETY: a thread this made, joinable, joined once.
            let joined = unsafe { libc::pthread_join(thread, std::ptr::null_mut()) };
            if joined != 0 {
                // The helper may still be using the caller's data: going
                // on could free it under the helper.
                std::process::abort();
            }
        }
    }
}

/// The calling thread's mask, the same without the core it is on (`None`
/// when there is no other core, or the masks cannot be read), and that core.
struct Masks {
    all: Option<libc::cpu_set_t>,
    away: Option<libc::cpu_set_t>,
    cpu: Option<usize>,
}

impl Masks {
    fn here() -> Masks {
        // SAFETY: plain calls on a zeroed set of the size given.
        unsafe {
            let mut all: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut all) != 0 {
                return Masks {
                    all: None,
                    away: None,
                    cpu: None,
                };
            }
            let mut away = all;
            let cpu = usize::try_from(libc::sched_getcpu()).ok();
            if let Some(cpu) = cpu {
                libc::CPU_CLR(cpu, &mut away);
            }
            Masks {
                all: Some(all),
                away: (libc::CPU_COUNT(&away) > 0).then_some(away),
                cpu,
            }
        }
    }
}

/// Starts a helper running `slot`, on a core in `away` when given.
///
/// # Safety
/// `slot` must stay valid, and untouched by anyone else, until the helper
/// is joined.
unsafe fn spawn<R: Send>(
    slot: *mut Slot<'_, R>,
    away: Option<&libc::cpu_set_t>,
) -> Option<libc::pthread_t> {
    extern "C" fn start<R: Send>(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `spawn`'s caller keeps the slot valid and to this helper
        // alone until it is joined.
        let slot = unsafe { &mut *arg.cast::<Slot<'_, R>>() };
        // SAFETY: a plain call.
        slot.began_on = usize::try_from(unsafe { libc::sched_getcpu() }).ok();
        if let Some(all) = &slot.all {
            // SAFETY: a set of the size given.
            unsafe {
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), all);
            }
        }
        let (work, index) = (slot.work, slot.index);
        slot.out = Some(catch_unwind(AssertUnwindSafe(|| work(index))));
        std::ptr::null_mut()
    }
    let create = |away: Option<&libc::cpu_set_t>| {
        // SAFETY: the attribute is initialised before use and destroyed
        // after; the thread gets `slot` as its argument, valid as the
        // caller promised (a failed create never runs it).
        unsafe {
            let mut attr = MaybeUninit::<libc::pthread_attr_t>::uninit();
            if libc::pthread_attr_init(attr.as_mut_ptr()) != 0 {
                return None;
            }
            let attr = attr.as_mut_ptr();
            libc::pthread_attr_setstacksize(attr, STACK);
            if let Some(away) = away {
                libc::pthread_attr_setaffinity_np(attr, size_of::<libc::cpu_set_t>(), away);
            }
            let mut thread = MaybeUninit::<libc::pthread_t>::uninit();
            let made = libc::pthread_create(thread.as_mut_ptr(), attr, start::<R>, slot.cast());
            libc::pthread_attr_destroy(attr);
            (made == 0).then(|| thread.assume_init())
        }
    };
    // A mask the kernel refuses (the cores changed since it was read) is
    // no reason to lose the helper: it is made again without one.
    create(away).or_else(|| away.and_then(|_| create(None)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Every index runs once, the results come back in order, borrowed
    /// data is shared, and each helper starts off the core its caller was
    /// on when it made them, with the caller's mask back (when there is
    /// another core).
    #[test]
    fn work_runs_once_per_index_in_order_on_other_cores() {
        let calls = AtomicUsize::new(0);
        let mask = || {
            // SAFETY: plain calls on a zeroed set of the size given.
            unsafe {
                let mut mask: libc::cpu_set_t = std::mem::zeroed();
                assert_eq!(
                    libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut mask),
                    0
                );
                mask
            }
        };
        let all = mask();
        for n in 0..5 {
            let (out, began_on, kept_off) = placed(n, |i| {
                calls.fetch_add(1, Ordering::Relaxed);
                // SAFETY: sets of the size they are.
                (i, unsafe { libc::CPU_EQUAL(&mask(), &all) })
            });
            let indices: Vec<usize> = out.iter().map(|(i, _)| *i).collect();
            assert_eq!(indices, (0..n).collect::<Vec<_>>());
            assert!(
                out.iter().all(|(_, same)| *same),
                "a helper kept a narrowed mask"
            );
            assert_eq!(began_on.len(), n.saturating_sub(1));
            // SAFETY: a set of the size it is.
            if n > 1 && unsafe { libc::CPU_COUNT(&all) } > 1 {
                assert!(kept_off.is_some());
                assert!(
                    began_on.iter().all(|c| c.is_some() && *c != kept_off),
                    "a helper started on its caller's core {kept_off:?}: {began_on:?}"
                );
            }
        }
        assert_eq!(
            calls.load(Ordering::Relaxed),
            1 + 2 + 3 + 4,
            "work ran once per index"
        );
    }

    /// A panic on a helper or here reaches the caller, after every helper
    /// has ended.
    #[test]
    fn a_panic_anywhere_is_resumed_after_all_end() {
        let ended = AtomicUsize::new(0);
        for bad in 0..3 {
            ended.store(0, Ordering::Relaxed);
            let caught = catch_unwind(AssertUnwindSafe(|| {
                on_cores(3, |i| {
                    if i == bad {
                        panic!("index {i}");
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    ended.fetch_add(1, Ordering::Relaxed);
                })
            }));
            assert!(caught.is_err(), "the panic at {bad} was lost");
            assert_eq!(
                ended.load(Ordering::Relaxed),
                2,
                "returned before the others ended"
            );
        }
    }
}
