//! How many items a node works on at once: a fixed number, or, for the kinds whose work
//! is waiting on requests (`fetch`, `put`, `delete`, `stamp`), a limit that adapts.
//!
//! The adaptive limit is Vector's adaptive request concurrency (`src/sinks/util/
//! adaptive_concurrency/`), fed with what a node's permit sees: the time an item held it
//! (its requests' round trips, and any wait for the next node, which is back pressure
//! too), and whether the node retried or failed for a transient reason while it was held
//! (`503 SlowDown`, `429`, timeouts, resets). Once per window (the time items took on
//! average), the window's mean time is compared with the past windows' (an exponentially
//! weighted mean and deviation, `EWMA_ALPHA`):
//! - first, TCP's slow start (Vector starts at 1 and adds 1 a window, which takes a run
//!   of a few seconds nowhere near what a far store needs): the limit doubles at each
//!   window in which it was reached, until something is retried or items take more than
//!   `SLOW_START_EXIT` times the fastest window's time (HyStart's delay exit: the store,
//!   or this machine, is loaded); then nine tenths of it, and Vector's rules:
//! - the limit was reached, nothing was retried, and items took no longer than the past
//!   mean: one more;
//! - something was retried, or items took longer than the past mean by more than
//!   `DEVIATION_SCALE` deviations (or a tenth of the mean, whichever is more, so that a
//!   link whose times hardly vary is not read as loaded at every window's noise): nine
//!   tenths (`DECREASE`) of the limit, never below 1.
//!
//! The limit starts at `defaults.concurrency` and stays within 1 and
//! `defaults.max_concurrency`. Hand-written rather than taken from a crate: Vector's is
//! inside its sinks' tower layers, and what is needed here is one mutex-guarded state
//! beside a semaphore, on tokio's clock so that tests with paused time drive it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::run::stats::NodeStats;
use crate::spec::Concurrency;

/// The weight of the newest window in the past mean and deviation (Vector's default).
const EWMA_ALPHA: f64 = 0.4;
/// How many deviations over the past mean read as loaded (Vector's default).
const DEVIATION_SCALE: f64 = 2.5;
/// The share of the limit kept on a decrease (Vector's default).
const DECREASE: f64 = 0.9;
/// The least rise over the past mean, as a share of it, read as loaded.
const MIN_RISE: f64 = 0.1;
/// Slow start ends when a window's items take this many times the fastest window's.
const SLOW_START_EXIT: f64 = 1.5;

/// A node's permits: at most `current` items at once.
#[derive(Debug)]
pub(crate) struct Limit {
    permits: Arc<Semaphore>,
    /// Permits to forget as they come back: a decrease below what is in flight.
    debt: AtomicUsize,
    adaptive: Option<Mutex<Controller>>,
    /// The node's counters: its retries (`Context::retried`: a retry in a window is back
    /// pressure), and where the limit is and has been (for progress, report and metrics).
    stats: Arc<NodeStats>,
}

/// One item's permit. [`Permit::done`] gives its time to the controller; dropped without
/// it (an abandoned item), it only gives the permit back.
#[derive(Debug)]
pub(crate) struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    limit: Arc<Limit>,
    since: Instant,
    /// It has an item: it is in flight.
    started: bool,
    /// Its time was given to the controller.
    counted: bool,
}

#[derive(Debug)]
struct Controller {
    max: usize,
    in_flight: usize,
    /// The limit was reached in this window: there is evidence for more.
    reached: bool,
    /// An item failed for a transient reason in this window.
    failed: bool,
    retries_at_start: u64,
    /// This window's times: sum and count (whole nanoseconds, so that equal times give
    /// an equal mean).
    sum: Duration,
    count: u32,
    /// The past windows' mean and variance, once there is one.
    past: Option<(f64, f64)>,
    ends: Instant,
    slow_start: bool,
    /// The lowest window mean so far (seconds): items' time without load.
    fastest: f64,
}

impl Limit {
    pub(crate) fn new(concurrency: Concurrency, stats: Arc<NodeStats>) -> Arc<Limit> {
        let start = concurrency.start().max(1);
        let adaptive = match concurrency {
            Concurrency::Fixed(_) => None,
            Concurrency::Adaptive { max, .. } => Some(Mutex::new(Controller {
                max: max.max(start),
                in_flight: 0,
                reached: false,
                failed: false,
                retries_at_start: stats.retries.load(Ordering::Relaxed),
                sum: Duration::ZERO,
                count: 0,
                past: None,
                ends: Instant::now(),
                slow_start: true,
                fastest: f64::MAX,
            })),
        };
        stats.adaptive.store(adaptive.is_some(), Ordering::Relaxed);
        let start_u64 = start as u64;
        for at in [&stats.limit, &stats.limit_lowest, &stats.limit_highest] {
            at.store(start_u64, Ordering::Relaxed);
        }
        let permits = Arc::new(Semaphore::new(start));
        Arc::new(Limit { permits, debt: AtomicUsize::new(0), adaptive, stats })
    }

    /// Waits for a free permit; `None` once the semaphore is closed. The permit counts
    /// from [`Permit::start`], once it has an item.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Option<Permit> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        Some(Permit {
            permit: Some(permit),
            limit: self.clone(),
            since: Instant::now(),
            started: false,
            counted: false,
        })
    }

    /// Moves the limit to `to`: permits added, or forgotten (those in flight as they come
    /// back).
    fn set(&self, to: usize) {
        let now = self.stats.limit.swap(to as u64, Ordering::Relaxed) as usize;
        if to > now {
            let mut more = to - now;
            // Debt first: permits not yet forgotten need not be.
            while more > 0 && self.debt.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1)).is_ok()
            {
                more -= 1;
            }
            self.permits.add_permits(more);
        } else if to < now {
            let forgotten = self.permits.forget_permits(now - to);
            self.debt.fetch_add(now - to - forgotten, Ordering::Relaxed);
        }
        self.stats.limit_lowest.fetch_min(to as u64, Ordering::Relaxed);
        self.stats.limit_highest.fetch_max(to as u64, Ordering::Relaxed);
    }
}

impl Permit {
    /// The permit's item arrived: its time starts, and it counts as in flight (all permits
    /// in flight: the limit was reached).
    pub(crate) fn start(&mut self) {
        self.since = Instant::now();
        self.started = true;
        if let Some(c) = &self.limit.adaptive {
            // A panic elsewhere while it was held leaves plain counters: go on with them.
            let mut c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            c.in_flight += 1;
            c.reached |= c.in_flight as u64 >= self.limit.stats.limit.load(Ordering::Relaxed);
        }
    }

    /// The item is done with this node; `transient_failure` if it failed for a reason that
    /// may pass (back pressure).
    pub(crate) fn done(mut self, transient_failure: bool) {
        let (Some(c), true) = (&self.limit.adaptive, self.started) else { return };
        let took = self.since.elapsed();
        let retries = self.limit.stats.retries.load(Ordering::Relaxed);
        let to = {
            let mut c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            c.in_flight -= 1;
            c.failed |= transient_failure;
            c.sum += took;
            c.count += 1;
            c.window_end(self.limit.stats.limit.load(Ordering::Relaxed) as usize, retries)
        };
        self.counted = true;
        if let Some(to) = to {
            self.limit.set(to);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let (Some(c), true, false) = (&self.limit.adaptive, self.started, self.counted) {
            // An item abandoned (or a panic): no time to learn from, one fewer in flight.
            let mut c = c.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        let Some(permit) = self.permit.take() else { return };
        match self.limit.debt.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| d.checked_sub(1)) {
            Ok(_) => permit.forget(),
            Err(_) => drop(permit),
        }
    }
}

impl Controller {
    /// At a window's end, the new limit (if it changes) and a new window.
    fn window_end(&mut self, limit: usize, retries: u64) -> Option<usize> {
        let now = Instant::now();
        if now < self.ends || self.count == 0 {
            return None;
        }
        let mean = (self.sum / self.count).as_secs_f64();
        let back_pressure = self.failed || retries > self.retries_at_start;
        let mut to = limit;
        let decreased = ((limit as f64 * DECREASE) as usize).max(1);
        match self.past {
            None => {}
            Some(_) if self.slow_start => {
                if back_pressure || mean > self.fastest * SLOW_START_EXIT {
                    (to, self.slow_start) = (decreased, false);
                } else if self.reached {
                    to = (limit * 2).min(self.max);
                }
            }
            Some((past, variance)) => {
                let loaded = mean > past + (DEVIATION_SCALE * variance.sqrt()).max(MIN_RISE * past);
                if self.reached && !back_pressure && mean <= past {
                    to = (limit + 1).min(self.max);
                } else if back_pressure || loaded {
                    to = decreased;
                }
            }
        }
        self.fastest = self.fastest.min(mean);
        let (past, variance) = match self.past {
            None => (mean, 0.0),
            Some((past, variance)) => {
                let diff = mean - past;
                let step = EWMA_ALPHA * diff;
                (past + step, (1.0 - EWMA_ALPHA) * (variance + diff * step))
            }
        };
        self.past = Some((past, variance));
        self.ends = now + Duration::from_secs_f64(past.max(0.001));
        (self.sum, self.count, self.reached, self.failed, self.retries_at_start) =
            (Duration::ZERO, 0, false, false, retries);
        (to != limit).then_some(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    /// A simulated store: an item takes `base`, or longer in proportion once more than
    /// `capacity` are in service (a queue); with `refuse_over`, an attempt made while that
    /// many are in service is answered "slow down": retried after 50 ms, still holding
    /// its permit, as the nodes' retries do. Returns the limit at the end, its range, the
    /// virtual time the items took and the refusals in each half of them.
    async fn drive(concurrency: Concurrency, items: usize, base: Duration, capacity: usize, refuse_over: usize) -> Run {
        let stats = Arc::new(NodeStats::default());
        let limit = Limit::new(concurrency, stats.clone());
        let retries = stats.retries.clone();
        let in_service = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..items {
            let mut permit = limit.acquire().await.unwrap();
            permit.start();
            let (in_service, retries, refused) = (in_service.clone(), retries.clone(), refused.clone());
            tasks.spawn(async move {
                loop {
                    let now = in_service.fetch_add(1, Ordering::SeqCst) + 1;
                    if now > refuse_over {
                        in_service.fetch_sub(1, Ordering::SeqCst);
                        refused[n * 2 / items].fetch_add(1, Ordering::SeqCst);
                        retries.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    tokio::time::sleep(base.mul_f64((now as f64 / capacity as f64).max(1.0))).await;
                    in_service.fetch_sub(1, Ordering::SeqCst);
                    break;
                }
                permit.done(false);
            });
        }
        while tasks.join_next().await.is_some() {}
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::SeqCst) as usize;
        let range = (load(&stats.limit_lowest), load(&stats.limit_highest));
        let refused = [refused[0].load(Ordering::SeqCst), refused[1].load(Ordering::SeqCst)];
        Run { end: load(&stats.limit), range, took: started.elapsed(), refused }
    }

    #[derive(Debug)]
    struct Run {
        end: usize,
        range: (usize, usize),
        took: Duration,
        refused: [u64; 2],
    }

    const ADAPTIVE: Concurrency = Concurrency::Adaptive { start: 8, max: 256 };

    #[tokio::test(start_paused = true)]
    async fn a_far_store_that_is_never_loaded_is_given_the_most_concurrency() {
        let base = Duration::from_millis(60);
        let run = drive(ADAPTIVE, 20_000, base, usize::MAX, usize::MAX).await;
        assert_eq!(run.range, (8, 256), "{run:?}");
        // At a fixed 8, 20,000 items of 60 ms take 150 s; at 256, 4.7 s. Slow start reaches
        // 256 in five doublings, then the limit stays: within twice the ideal.
        assert!(run.took < base * 20_000 / 256 * 2, "{run:?}");
        let fixed = drive(Concurrency::Fixed(8), 2_000, base, usize::MAX, usize::MAX).await;
        assert_eq!((fixed.range, fixed.end), ((8, 8), 8), "{fixed:?}");
        assert_eq!(fixed.took, base * 2_000 / 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_at_its_capacity_is_kept_busy() {
        // 32 in service at once, 10 ms each: at most 3,200 items a second, whatever the
        // concurrency beyond 32 (more only queue). 10,000 items: at least 3.1 s.
        let base = Duration::from_millis(10);
        let run = drive(ADAPTIVE, 10_000, base, 32, usize::MAX).await;
        let best = base * 10_000 / 32;
        assert!(run.took < best.mul_f64(1.1), "within 10% of the server's capacity: {run:?}");
        assert!(run.range.1 >= 32, "{run:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_answers_slow_down_is_given_less_until_it_stops() {
        // Refused while more than 24 are in service (slow start alone would go to 256): at
        // most 24 x 50 items a second, 10,000 items in 8.3 s at best. The limit probes
        // past 24 now and then (one more a window) and falls back at each refusal.
        let base = Duration::from_millis(20);
        let run = drive(ADAPTIVE, 10_000, base, usize::MAX, 24).await;
        assert!(run.refused[0] > 0, "the store was never pushed past its limit: {run:?}");
        assert!(run.refused[0] + run.refused[1] < 10_000 / 100, "under 1% of attempts refused: {run:?}");
        assert!(run.end <= 24 + 3, "{run:?}");
        assert!(run.took < (base * 10_000 / 24).mul_f64(1.1), "within 10% of the store's limit: {run:?}");
        // A fixed 64 has 40 refused at every round: for a fifth of the items, many more.
        let fixed = drive(Concurrency::Fixed(64), 2_000, base, usize::MAX, 24).await;
        assert!(fixed.refused[0] + fixed.refused[1] > 10 * (run.refused[0] + run.refused[1]), "{fixed:?} {run:?}");
    }
}
