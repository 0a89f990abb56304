//! A bound on what one jq program may allocate on one item (`memory_limit_mb`).
//!
//! jaq has no allocation limit and cannot be interrupted, and `[range(1e9)]` takes the
//! whole process down in seconds. No crate bounds the allocations of one computation on
//! one thread, so this is hand-written, and small: the binary installs [`Budgeted`] as its
//! global allocator (the system allocator, plus a count kept per thread), and
//! [`run_bounded`] runs a program on a blocking thread that counts what it allocates less
//! what it frees. Past the limit, that thread's next allocation never returns: it
//! signals the waiting item, which fails for good with the reason, and then sleeps for the
//! rest of the process's life. Its memory (at most the limit) is never freed, but never
//! grows either; an allocator may not unwind, so stopping the thread is the one safe way
//! to take the allocation away from the program.
//!
//! Without [`Budgeted`] installed (a library user's binary), the time limit still holds
//! and the memory limit is not enforced; [`installed`] says which.

use crate::invalid::Invalid;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// The system allocator, counting per thread for [`run_bounded`].
pub struct Budgeted;

thread_local! {
    // Const-initialised and without destructors: read without allocating, as an
    // allocator must.
    static BUDGET: Budget = const {
        Budget { limit: Cell::new(0), used: Cell::new(0), trip: Cell::new(std::ptr::null()) }
    };
}

/// A thread's count: `limit` 0 when it runs no bounded program.
struct Budget {
    limit: Cell<usize>,
    used: Cell<usize>,
    trip: Cell<*const Trip>,
}

/// What the waiting item watches: set, and notified, by the thread that went over.
#[derive(Default)]
struct Trip {
    notify: Notify,
}

/// Whether the process counts allocations (its binary installed [`Budgeted`]): a probe
/// allocation on this thread, counted or not. (Not a flag set by every allocation: that
/// would be one shared cache line written by every thread.)
pub fn installed() -> bool {
    BUDGET.with(|b| {
        let (limit, used) = (b.limit.replace(usize::MAX), b.used.replace(0));
        let probe = std::hint::black_box(vec![0u8; 64]);
        let counted = b.used.get() > 0;
        drop(probe);
        b.limit.set(limit);
        b.used.set(used);
        counted
    })
}

fn charge(grown: usize, freed: usize) {
    let _ = BUDGET.try_with(|b| {
        let max = b.limit.get();
        if max == 0 {
            return;
        }
        let used = b.used.get().saturating_add(grown).saturating_sub(freed);
        b.used.set(used);
        if used <= max {
            return;
        }
        // Over: count no more (what follows may allocate), tell the item, and stop here.
        b.limit.set(0);
        let trip = b.trip.get();
        if !trip.is_null() {
            // SAFETY: `run_bounded`'s closure holds an `Arc` of the trip for as long as
            // the thread runs the program, and it never returns from here.
            unsafe { (*trip).notify.notify_one() };
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    });
}

// SAFETY: every call is passed to the system allocator unchanged; `charge` only counts.
unsafe impl GlobalAlloc for Budgeted {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size(), 0);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size(), 0);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        charge(0, layout.size());
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        charge(new_size.saturating_sub(layout.size()), layout.size().saturating_sub(new_size));
        System.realloc(ptr, layout, new_size)
    }
}

/// How long, and how much, a program may take on one item.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub time: Duration,
    pub memory_bytes: usize,
}

impl Limits {
    pub fn new(time_limit_secs: u64, memory_limit_mb: u64) -> Limits {
        let memory_bytes = usize::try_from(memory_limit_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        Limits { time: Duration::from_secs(time_limit_secs), memory_bytes }
    }
}

/// `work` on a blocking thread, within `limits`: its result, or why it was given up
/// (for good: the same item would meet the same limit).
pub(crate) async fn run_bounded<T: Send + 'static, E: Into<Invalid> + Send + 'static>(
    limits: Limits,
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, Invalid> {
    let trip = Arc::new(Trip::default());
    let held = trip.clone();
    let task = tokio::task::spawn_blocking(move || {
        BUDGET.with(|b| {
            b.trip.set(Arc::as_ptr(&held));
            b.used.set(0);
            b.limit.set(limits.memory_bytes);
        });
        let result = work().map_err(Into::into);
        BUDGET.with(|b| {
            b.limit.set(0);
            b.trip.set(std::ptr::null());
        });
        drop(held);
        result
    });
    tokio::select! {
        done = task => done.unwrap_or_else(|_| Err("internal error: the program panicked".into())),
        () = trip.notify.notified() => Err(Invalid(format!(
            "the program allocated more than memory_limit_mb ({} MiB) on this item and was given up",
            limits.memory_bytes / (1024 * 1024)
        ))),
        () = tokio::time::sleep(limits.time) => Err(Invalid(format!(
            "the program ran past time_limit_secs ({} s) on this item and was given up",
            limits.time.as_secs()
        ))),
    }
}

/// The default `memory_limit_mb` of the kinds that run jq programs: 1 GiB, sixteen times
/// the default `max_bytes` (a document parsed is several times its text, and jaq holds a
/// copy), so a program on any document the node accepts fits, while one that builds
/// without end stops well before a pod's memory. A node's worst case is its concurrency
/// times this.
pub(crate) fn default_memory_limit() -> u64 {
    1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOC: Budgeted = Budgeted;

    #[test]
    fn a_program_that_allocates_without_end_is_given_up_at_its_limit() {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_time().build().unwrap();
        let limits = Limits::new(3600, 16);
        let run = |code: &str| {
            let program = crate::map::jq::Program::compile(code).unwrap();
            let null = serde_json::Value::Null;
            rt.block_on(run_bounded(limits, move || program.run(&null, &null)))
        };
        let r = run("[range(1e9)] | length");
        assert!(r.unwrap_err().0.contains("memory_limit_mb (16 MiB)"));
        assert!(installed());
        // Within its limit, a program on a small range gives its answer.
        assert_eq!(run("[range(1000)] | length").unwrap(), serde_json::json!(1000));
        // The given-up thread sleeps on: the runtime must not wait for it.
        rt.shutdown_background();
    }
}
