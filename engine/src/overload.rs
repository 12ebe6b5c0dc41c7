//! Overload protection: when the process's memory or the messages queued on a core pass their
//! high-water marks (`limits.overload_memory_bytes`, `limits.overload_queued_messages`), new
//! CONNECTs are refused with CONNACK 0x89 Server busy (3.x: return code 3, Server unavailable).
//! Connections already open are served as before, and a client resuming its own session on
//! that core is let in: reconnecting is how an offline session's queue drains.
//!
//! 0x89 rather than 0x97 Quota exceeded: the spec describes 0x89 as "the Server is busy, try
//! again later", which is what a broker under pressure means; 0x97 names a limit imposed on
//! the client, and retrying would not help it.
//!
//! Hysteresis: a mark is entered at the high-water value and left only below
//! `limits.overload_resume_percent` of it, so a value hovering at the mark does not flap. Each
//! change is logged once (a warning), never once per refused connection; refusals are counted
//! (`CoreStats::connections_refused_overload`).
//!
//! Sampling: every core reads the process's resident set (`/proc/self/statm`, one small read)
//! on its own timer ([`MEMORY_SAMPLE_INTERVAL`]) into its own state. The value is the same
//! for all cores; reading it on each keeps cores from sharing anything mutable, at the cost of
//! a few microseconds per core four times a second. The queued-message count is a running
//! counter ([`QueueGauge`]) that sessions update as their queues change: no scan.
//!
//! Where it is checked: see [`Overload::admit`] and `ARCHITECTURE.md`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use crate::message::CoreId;

/// How often each core samples the process's resident memory when
/// `limits.overload_memory_bytes` is set.
pub const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// What the overload checks need from the configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OverloadLimits {
    /// Resident memory of the process, bytes, at which new connections are refused (0: off).
    pub memory_bytes: u64,
    /// Messages queued on one core, all its sessions together, at which that core refuses new
    /// connections (0: off).
    pub queued_messages: u64,
    /// A mark is left below this percentage of it (1..=100).
    pub resume_percent: u8,
}

/// Why new connections are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The process's resident memory is over `limits.overload_memory_bytes`.
    Memory,
    /// This core's queued messages are over `limits.overload_queued_messages`.
    Queues,
}

/// A change of a [`Watermark`]'s state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The value reached the high-water mark.
    Entered,
    /// The value fell below the resume level.
    Left,
}

/// A high-water mark with hysteresis: over from `high` up, back under below `resume`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermark {
    high: u64,
    resume: u64,
    over: bool,
}

impl Watermark {
    /// A mark at `high` (0: off, never over) left below `resume_percent` % of it.
    pub fn new(high: u64, resume_percent: u8) -> Self {
        let percent = u64::from(resume_percent.clamp(1, 100));
        // At least 1 so that a mark of 1 can be left (at 0).
        let resume = (u128::from(high) * u128::from(percent) / 100) as u64;
        Self {
            high,
            resume: resume.max(1).min(high),
            over: false,
        }
    }

    /// Whether the mark is set at all.
    pub fn is_on(&self) -> bool {
        self.high > 0
    }

    /// Whether the value was over the mark when last observed.
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// The high-water value.
    pub fn high(&self) -> u64 {
        self.high
    }

    /// The value below which the mark is left.
    pub fn resume(&self) -> u64 {
        self.resume
    }

    /// Takes a new value; says whether the state changed.
    pub fn observe(&mut self, value: u64) -> Option<Change> {
        if !self.is_on() {
            return None;
        }
        if !self.over && value >= self.high {
            self.over = true;
            return Some(Change::Entered);
        }
        if self.over && value < self.resume {
            self.over = false;
            return Some(Change::Left);
        }
        None
    }
}

/// The number of messages queued in the sessions of one core, kept by the sessions themselves
/// as their queues change (shared by the core and its sessions on one thread: `Rc<Cell>`).
#[derive(Clone, Debug, Default)]
pub struct QueueGauge(Rc<Cell<usize>>);

impl QueueGauge {
    /// The current count.
    pub fn get(&self) -> usize {
        self.0.get()
    }

    /// `n` messages were queued.
    pub fn add(&self, n: usize) {
        self.0.set(self.0.get() + n);
    }

    /// `n` messages left a queue.
    pub fn sub(&self, n: usize) {
        debug_assert!(self.0.get() >= n, "queue gauge below zero");
        self.0.set(self.0.get().saturating_sub(n));
    }

    /// Whether two gauges are the same counter.
    pub fn same(&self, other: &QueueGauge) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

/// The overload state of one core.
#[derive(Debug)]
pub struct Overload {
    core: CoreId,
    memory: Watermark,
    queues: Watermark,
    /// The latest resident-memory sample, bytes (0: none yet).
    rss_bytes: u64,
    /// Messages queued in this core's sessions.
    queued: QueueGauge,
}

impl Overload {
    /// The state of core `core`, nothing sampled yet.
    pub fn new(core: CoreId, limits: OverloadLimits) -> Self {
        Self {
            core,
            memory: Watermark::new(limits.memory_bytes, limits.resume_percent),
            queues: Watermark::new(limits.queued_messages, limits.resume_percent),
            rss_bytes: 0,
            queued: QueueGauge::default(),
        }
    }

    /// Whether the memory mark is set (and the core must sample memory).
    pub fn samples_memory(&self) -> bool {
        self.memory.is_on()
    }

    /// The counter the core's sessions keep their queue lengths in.
    pub fn gauge(&self) -> &QueueGauge {
        &self.queued
    }

    /// Messages queued in this core's sessions.
    pub fn queued(&self) -> u64 {
        self.queued.get() as u64
    }

    /// Whether either mark is over (as last observed).
    pub fn is_over(&self) -> bool {
        self.memory.is_over() || self.queues.is_over()
    }

    /// Takes a resident-memory sample; logs when the core enters or leaves memory overload.
    pub fn sample_memory(&mut self, rss_bytes: u64) {
        self.rss_bytes = rss_bytes;
        let change = self.memory.observe(rss_bytes);
        self.log(change, Cause::Memory, rss_bytes);
    }

    /// Looks at the queued-message count; logs when the core enters or leaves queue overload.
    /// Called before every admission decision and once per tick.
    pub fn observe_queues(&mut self) {
        let queued = self.queued();
        let change = self.queues.observe(queued);
        self.log(change, Cause::Queues, queued);
    }

    fn log(&self, change: Option<Change>, cause: Cause, value: u64) {
        let (mark, key) = match cause {
            Cause::Memory => (&self.memory, "limits.overload_memory_bytes"),
            Cause::Queues => (&self.queues, "limits.overload_queued_messages"),
        };
        match change {
            Some(Change::Entered) => tracing::warn!(
                core = self.core,
                ?cause,
                value,
                high = mark.high(),
                "overload: this core refuses new connections (CONNACK 0x89; 3.x: 3) until the \
                 value falls below {} ({key}, limits.overload_resume_percent)",
                mark.resume()
            ),
            Some(Change::Left) => tracing::warn!(
                core = self.core,
                ?cause,
                value,
                resume = mark.resume(),
                "overload over: accepting new connections again ({key})"
            ),
            None => {}
        }
    }

    /// Whether a CONNECT may go on, decided on the core that runs this check.
    ///
    /// - `home_here`: this core is the session's home core. It knows its queues and whether
    ///   the CONNECT resumes a session. On another core (the accepting core, before the
    ///   handoff) only the memory mark is known, and only a CONNECT that cannot resume a
    ///   session (Clean Start 1) is refused there: that is the cheapest refusal, before any
    ///   authentication or mesh message. The others are decided on the home core.
    /// - `resumes`: Clean Start 0 and a session of that client id exists here. Such a client
    ///   is let in whatever the marks say: it drains its own queue, which is what ends a queue
    ///   overload, and the memory it holds was already spent.
    pub fn admit(
        &mut self,
        home_here: bool,
        clean_start: bool,
        resumes: bool,
    ) -> Result<(), Cause> {
        if !home_here {
            return if self.memory.is_over() && clean_start {
                Err(Cause::Memory)
            } else {
                Ok(())
            };
        }
        self.observe_queues();
        if resumes {
            return Ok(());
        }
        if self.memory.is_over() {
            return Err(Cause::Memory);
        }
        if self.queues.is_over() {
            return Err(Cause::Queues);
        }
        Ok(())
    }
}

/// The process's resident set from `/proc/self/statm` (one small read; `None` where there is
/// no procfs).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(u64::try_from(page).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(memory_bytes: u64, queued_messages: u64) -> OverloadLimits {
        OverloadLimits {
            memory_bytes,
            queued_messages,
            resume_percent: 90,
        }
    }

    #[test]
    fn a_mark_is_entered_at_high_and_left_below_resume() {
        let mut m = Watermark::new(100, 90);
        assert_eq!(m.resume(), 90);
        assert_eq!(m.observe(99), None);
        assert!(!m.is_over());
        assert_eq!(m.observe(100), Some(Change::Entered));
        assert!(m.is_over());
        // Between the two levels nothing changes, whichever way the value moves.
        for v in [150, 95, 90, 99, 100, 91] {
            assert_eq!(m.observe(v), None, "{v}");
            assert!(m.is_over());
        }
        assert_eq!(m.observe(89), Some(Change::Left));
        assert!(!m.is_over());
        for v in [0, 50, 90, 99] {
            assert_eq!(m.observe(v), None, "{v}");
            assert!(!m.is_over());
        }
        assert_eq!(m.observe(u64::MAX), Some(Change::Entered));
    }

    #[test]
    fn an_unset_mark_is_never_over() {
        let mut m = Watermark::new(0, 90);
        assert!(!m.is_on());
        for v in [0, 1, u64::MAX] {
            assert_eq!(m.observe(v), None);
            assert!(!m.is_over());
        }
    }

    #[test]
    fn edge_values_of_marks_and_percentages() {
        // A mark of 1 is left at 0; 100 % means no hysteresis; huge marks do not overflow.
        let mut one = Watermark::new(1, 90);
        assert_eq!(one.resume(), 1);
        assert_eq!(one.observe(1), Some(Change::Entered));
        assert_eq!(one.observe(0), Some(Change::Left));
        let mut flat = Watermark::new(10, 100);
        assert_eq!(flat.observe(10), Some(Change::Entered));
        assert_eq!(flat.observe(9), Some(Change::Left));
        let big = Watermark::new(u64::MAX, 90);
        assert_eq!(big.resume(), (u128::from(u64::MAX) * 90 / 100) as u64);
        assert_eq!(Watermark::new(1000, 1).resume(), 10);
    }

    #[test]
    fn the_gauge_is_shared_by_its_clones() {
        let g = QueueGauge::default();
        let h = g.clone();
        g.add(3);
        h.sub(1);
        assert_eq!(g.get(), 2);
        assert!(g.same(&h));
        assert!(!g.same(&QueueGauge::default()));
    }

    #[test]
    fn queues_over_the_mark_refuse_new_sessions_but_not_resumes() {
        let mut o = Overload::new(0, limits(0, 10));
        o.gauge().add(9);
        assert_eq!(o.admit(true, true, false), Ok(()));
        o.gauge().add(1);
        assert_eq!(o.admit(true, true, false), Err(Cause::Queues));
        assert_eq!(o.admit(true, false, false), Err(Cause::Queues));
        assert_eq!(o.admit(true, false, true), Ok(()), "a resume drains");
        // Another core does not know this core's queues: it lets the CONNECT travel.
        assert_eq!(o.admit(false, true, false), Ok(()));
        // Hysteresis: 9 is still over, 8 is under 90 % of 10.
        o.gauge().sub(1);
        assert_eq!(o.admit(true, true, false), Err(Cause::Queues));
        o.gauge().sub(1);
        assert_eq!(o.admit(true, true, false), Ok(()));
        assert!(!o.is_over());
    }

    #[test]
    fn memory_over_the_mark_refuses_clean_starts_early_and_the_rest_at_home() {
        let mut o = Overload::new(1, limits(1000, 0));
        assert!(o.samples_memory());
        o.sample_memory(999);
        assert_eq!(o.admit(false, true, false), Ok(()));
        assert_eq!(o.admit(true, true, false), Ok(()));
        o.sample_memory(1000);
        assert!(o.is_over());
        // On the accepting core: Clean Start 1 is refused at once, Clean Start 0 may resume.
        assert_eq!(o.admit(false, true, false), Err(Cause::Memory));
        assert_eq!(o.admit(false, false, false), Ok(()));
        // On the home core: only a resume gets in.
        assert_eq!(o.admit(true, false, false), Err(Cause::Memory));
        assert_eq!(o.admit(true, true, false), Err(Cause::Memory));
        assert_eq!(o.admit(true, false, true), Ok(()));
        o.sample_memory(900);
        assert!(o.is_over(), "900 is not below 90 % of 1000");
        o.sample_memory(899);
        assert!(!o.is_over());
        assert_eq!(o.admit(false, true, false), Ok(()));
        assert_eq!(o.admit(true, true, false), Ok(()));
    }

    #[test]
    fn both_marks_off_admit_everything() {
        let mut o = Overload::new(0, limits(0, 0));
        assert!(!o.samples_memory());
        o.sample_memory(u64::MAX);
        o.gauge().add(usize::MAX / 2);
        for (home, clean, resumes) in [(true, true, false), (false, true, false)] {
            assert_eq!(o.admit(home, clean, resumes), Ok(()));
        }
    }

    #[test]
    fn the_resident_set_is_read() {
        let rss = resident_bytes().expect("procfs on Linux");
        assert!(rss > 0);
    }
}
