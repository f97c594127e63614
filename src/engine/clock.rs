//! The open model's wait for an arrival's due time. The runtime's timer
//! counts whole milliseconds and rounds up, which would start most
//! arrivals up to a millisecond late. On Linux each engine thread has a
//! timerfd instead, armed to the nanosecond for the earliest waiting
//! arrival: the thread sleeps in its poll like any other wait. Waking an
//! idle thread takes tens of microseconds, so the timerfd is armed that
//! much early (the thread's own measure of how late its wake-ups are)
//! and the thread yields through the rest. Elsewhere, or when no timerfd
//! can be made, an arrival sleeps on the runtime's timer until shortly
//! before it is due and yields until then.

use std::time::{Duration, Instant};

/// Fallback: how long before its due time an arrival stops sleeping on
/// the runtime's timer and yields on the monotonic clock instead.
const YIELD_BEFORE: Duration = Duration::from_micros(1500);

/// Waits for due times on one engine thread. Build it inside that
/// thread's runtime and local task set.
pub(super) struct Clock {
    #[cfg(target_os = "linux")]
    timer: Option<linux::Timer>,
}

impl Clock {
    pub(super) fn new() -> Self {
        Self {
            #[cfg(target_os = "linux")]
            timer: linux::Timer::new(),
        }
    }

    /// Returns at `due`, or at once when it has passed.
    pub(super) async fn until(&self, due: Instant) {
        #[cfg(target_os = "linux")]
        if let Some(t) = &self.timer {
            return t.until(due).await;
        }
        if let Some(wake) = due.checked_sub(YIELD_BEFORE)
            && wake > Instant::now()
        {
            tokio::time::sleep_until(wake.into()).await;
        }
        // Yielding lets the thread's other tasks (requests in flight) run.
        while Instant::now() < due {
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::rc::Rc;
    use std::task::{Poll, Waker};
    use std::time::{Duration, Instant};

    use tokio::io::Interest;
    use tokio::io::unix::AsyncFd;

    /// The most the timerfd is armed ahead of a due time: a thread
    /// whose wake-ups run later than this is busy, not asleep, and
    /// yielding longer would not start its arrivals sooner.
    pub(super) const MAX_LEAD: Duration = Duration::from_micros(200);

    /// A timerfd and the arrivals waiting on it, earliest first. One task
    /// (started with the first wait) reads the timerfd, wakes the arrivals
    /// that are due and arms it for the next one, so a wait costs the
    /// thread one wake-up rather than a poll of every waiting arrival.
    pub(super) struct Timer(Rc<State>);

    struct State {
        fd: AsyncFd<OwnedFd>,
        /// Arrivals not woken yet, by due time (and a number, as two may
        /// share one).
        waiting: RefCell<BTreeMap<(Instant, u64), Waker>>,
        /// The due time the timerfd is armed for.
        armed: Cell<Option<Instant>>,
        /// When the timerfd is set to expire: `lead` before `armed`.
        expires: Cell<Option<Instant>>,
        /// How far ahead of a due time the timerfd is armed: how late
        /// the thread's wake-ups run when it is idle, up to `MAX_LEAD`.
        lead: Cell<Duration>,
        next_id: Cell<u64>,
        driving: Cell<bool>,
    }

    impl Timer {
        /// `None` when no timerfd can be made (the caller then falls
        /// back on the runtime's timer).
        pub(super) fn new() -> Option<Self> {
            // SAFETY: timerfd_create takes no pointers; a non-negative
            // result is a new descriptor that nothing else owns.
            let fd = unsafe {
                libc::timerfd_create(
                    libc::CLOCK_MONOTONIC,
                    libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
                )
            };
            if fd < 0 {
                return None;
            }
            // SAFETY: `fd` was just created and is owned by nothing else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: an `OwnedFd` keeps its descriptor open, unchanged,
            // for as long as the `AsyncFd` that owns it lives.
            let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE).ok()? };
            Some(Self(Rc::new(State {
                fd,
                waiting: RefCell::new(BTreeMap::new()),
                armed: Cell::new(None),
                expires: Cell::new(None),
                lead: Cell::new(Duration::ZERO),
                next_id: Cell::new(0),
                driving: Cell::new(false),
            })))
        }

        pub(super) async fn until(&self, due: Instant) {
            let st = &self.0;
            if Instant::now() >= due {
                return;
            }
            if !st.driving.replace(true) {
                tokio::task::spawn_local(drive(st.clone()));
            }
            let id = st.next_id.get();
            st.next_id.set(id.wrapping_add(1));
            let key = (due, id);
            // Leaves the queue however the wait ends: the run may drop it
            // when it stops.
            let _leave = Leave(st, key);
            std::future::poll_fn(|cx| {
                if Instant::now() >= due {
                    st.waiting.borrow_mut().remove(&key);
                    return Poll::Ready(());
                }
                {
                    let mut waiting = st.waiting.borrow_mut();
                    match waiting.get_mut(&key) {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        Some(w) => w.clone_from(cx.waker()),
                        None => {
                            waiting.insert(key, cx.waker().clone());
                        }
                    }
                }
                st.arm();
                Poll::Pending
            })
            .await;
        }
    }

    #[cfg(test)]
    impl Timer {
        pub(super) fn is_idle(&self) -> bool {
            self.0.waiting.borrow().is_empty()
        }

        pub(super) fn lead(&self) -> Duration {
            self.0.lead.get()
        }
    }

    struct Leave<'a>(&'a State, (Instant, u64));

    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.waiting.borrow_mut().remove(&self.1);
        }
    }

    impl State {
        /// Arms the timerfd for the earliest waiting arrival, unless it is
        /// armed for it already.
        fn arm(&self) {
            let Some(&(due, _)) = self.waiting.borrow().keys().next() else {
                return;
            };
            if self.armed.get() == Some(due) {
                return;
            }
            // A relative time: an `Instant` reads the monotonic clock but
            // cannot be turned into its timespec. Zero would disarm, so a
            // time already past gets a nanosecond.
            let now = Instant::now();
            let ns = due
                .saturating_duration_since(now)
                .saturating_sub(self.lead.get())
                .as_nanos()
                .max(1);
            let spec = libc::itimerspec {
                it_interval: libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: libc::timespec {
                    tv_sec: (ns / 1_000_000_000) as libc::time_t,
                    tv_nsec: (ns % 1_000_000_000) as libc::c_long,
                },
            };
            // SAFETY: the descriptor is a live timerfd and `spec` a valid
            // itimerspec; the old value is not asked for.
            let r = unsafe {
                libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut())
            };
            if r == 0 {
                self.armed.set(Some(due));
                self.expires
                    .set(Some(now + Duration::from_nanos(ns as u64)));
            }
        }

        /// Folds how late this wake-up ran into `lead`: at once halfway
        /// down, a sixteenth of the way up. A wake-up that also waited
        /// for the thread's other tasks runs later than an idle one, and
        /// should not make the thread yield longer.
        fn woke(&self, now: Instant) {
            // Re-armed for later since it expired: that expiry is still
            // to come.
            let Some(expired) = self.expires.get().filter(|&e| e <= now) else {
                return;
            };
            self.expires.set(None);
            let late = (now - expired).min(MAX_LEAD);
            let lead = self.lead.get();
            self.lead.set(if late < lead {
                (lead + late) / 2
            } else {
                (lead * 15 + late) / 16
            });
        }

        /// The earliest waiting due time.
        fn next_due(&self) -> Option<Instant> {
            self.waiting.borrow().keys().next().map(|&(due, _)| due)
        }

        /// Wakes (and takes out of the queue) every arrival that is due.
        fn wake_due(&self) {
            let now = Instant::now();
            let due = {
                let mut waiting = self.waiting.borrow_mut();
                let later = waiting.split_off(&(now, u64::MAX));
                std::mem::replace(&mut *waiting, later)
            };
            // The arrival the timerfd was armed for is woken: its expiry
            // (which may still come) measures nothing.
            if self.armed.get().is_some_and(|a| a <= now) {
                self.armed.set(None);
                self.expires.set(None);
            }
            for w in due.into_values() {
                w.wake();
            }
        }
    }

    /// Reads the timerfd's expirations for as long as the thread runs.
    async fn drive(st: Rc<State>) {
        loop {
            let Ok(mut ready) = st.fd.readable().await else {
                return;
            };
            let read = ready.try_io(|fd| {
                let mut count = [0u8; 8];
                // SAFETY: reads at most 8 bytes into `count`.
                let n = unsafe { libc::read(fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            // Not expired (readiness is cleared then) or a read error:
            // wait for the next expiration.
            if !matches!(read, Ok(Ok(()))) {
                continue;
            }
            st.armed.set(None);
            st.woke(Instant::now());
            st.wake_due();
            // Arrivals due within the lead would wake late on the
            // timerfd: yield, so requests in flight go on, until they are
            // due. Arrivals closer together than the lead would keep the
            // thread yielding for good: after twice the most lead, it
            // goes back to the timerfd, which also measures the lead anew.
            let spin_until = Instant::now() + 2 * MAX_LEAD;
            while st.next_due().is_some_and(|due| {
                let now = Instant::now();
                due <= now + st.lead.get() && now < spin_until
            }) {
                tokio::task::yield_now().await;
                st.wake_due();
            }
            st.arm();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;

    fn on_thread<T>(f: impl std::future::Future<Output = T>) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f)
    }

    /// Waits end at, never before, their due time, in due order however
    /// they were started.
    #[test]
    fn waits_end_on_time_in_order() {
        on_thread(async {
            let clock = Rc::new(Clock::new());
            #[cfg(target_os = "linux")]
            assert!(clock.timer.is_some(), "no timerfd");
            let t0 = Instant::now() + Duration::from_millis(5);
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut set = tokio::task::JoinSet::new();
            for i in (0..40u64).rev() {
                let (clock, order) = (clock.clone(), order.clone());
                let due = t0 + Duration::from_micros(250 * i);
                set.spawn_local(async move {
                    clock.until(due).await;
                    order.borrow_mut().push(i);
                    Instant::now().checked_duration_since(due)
                });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap().expect("a wait ended before its due time");
            }
            assert_eq!(*order.borrow(), (0..40).collect::<Vec<_>>());
        });
    }

    /// Waits one after another, each armed early by what the wake-ups
    /// before it learnt: none ends early, and the lead stays bounded.
    #[test]
    fn waits_armed_early_still_end_at_their_due_time() {
        on_thread(async {
            let clock = Rc::new(Clock::new());
            for _ in 0..100 {
                let due = Instant::now() + Duration::from_micros(300);
                // A task of its own, as the engine's arrivals are.
                let c = clock.clone();
                tokio::task::spawn_local(async move { c.until(due).await })
                    .await
                    .unwrap();
                assert!(Instant::now() >= due, "a wait ended before its due time");
            }
            #[cfg(target_os = "linux")]
            {
                let timer = clock.timer.as_ref().unwrap();
                // Every wake-up runs after its expiry: the lead learnt
                // how long after.
                assert!(timer.lead() > Duration::ZERO);
                assert!(timer.lead() <= linux::MAX_LEAD);
                assert!(timer.is_idle());
            }
        });
    }

    /// A wait dropped before its due time leaves the queue, and the
    /// waits after it still end.
    #[test]
    fn dropped_waits_leave_the_queue() {
        on_thread(async {
            let clock = Rc::new(Clock::new());
            let soon = Instant::now() + Duration::from_millis(50);
            let early = tokio::time::timeout(
                Duration::from_millis(1),
                clock.until(soon - Duration::from_millis(10)),
            );
            assert!(early.await.is_err(), "the wait ended early");
            clock.until(soon).await;
            assert!(Instant::now() >= soon);
            #[cfg(target_os = "linux")]
            assert!(clock.timer.as_ref().unwrap().is_idle());
        });
    }
}
