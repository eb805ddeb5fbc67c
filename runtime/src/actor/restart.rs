//! Restart policies of supervised actors and the pure bookkeeping that applies them: which stop
//! reasons call for a restart, how many restarts fit in a time window, and how long to wait
//! before the next one.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::lifecycle::StopReason;

/// When a supervised actor is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Never: the first stop, for whatever reason, ends supervision.
    Never,
    /// When the actor did not stop by its own or a caller's decision: its handler panicked, its
    /// node shut down or went down, or its node no longer knows it. A normal stop
    /// ([`StopReason::Stopped`]) ends supervision.
    OnFailure,
    /// Whenever the actor stops, normal stops included.
    Always,
}

impl Restart {
    /// Whether an actor that stopped for `reason` is restarted under this policy.
    pub fn applies(self, reason: &StopReason) -> bool {
        match self {
            Restart::Never => false,
            Restart::OnFailure => !matches!(reason, StopReason::Stopped),
            Restart::Always => true,
        }
    }
}

/// Exponential delay before each restart: `initial * factor^k`, at most `max`, where `k` is the
/// number of restarts already made inside the policy's window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first restart in a window.
    pub initial: Duration,
    /// Growth per restart already made in the window (1.0 = constant delay).
    pub factor: f64,
    /// Longest delay.
    pub max: Duration,
}

impl Backoff {
    /// No delay at all.
    pub const NONE: Backoff = Backoff {
        initial: Duration::ZERO,
        factor: 1.0,
        max: Duration::ZERO,
    };

    /// The delay after `k` restarts in the window.
    pub fn delay(&self, k: u32) -> Duration {
        let exp = i32::try_from(k).unwrap_or(i32::MAX);
        let d = self.initial.as_secs_f64() * self.factor.max(1.0).powi(exp);
        Duration::from_secs_f64(d.min(self.max.as_secs_f64()).max(0.0))
    }
}

impl Default for Backoff {
    /// 100 ms, doubling, at most 5 s.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(5),
        }
    }
}

/// A supervised actor's restart policy: when to restart, how often at most, with what delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    /// Which stops are followed by a restart.
    pub restart: Restart,
    /// At most this many restarts (attempts, failed re-spawns included) within `within`; one
    /// more and the supervisor gives up.
    pub max_restarts: u32,
    /// The sliding window of `max_restarts`.
    pub within: Duration,
    /// The delay before each restart.
    pub backoff: Backoff,
}

impl RestartPolicy {
    /// A policy with `restart`, at most 3 restarts per 60 s and the default backoff.
    pub fn new(restart: Restart) -> Self {
        RestartPolicy {
            restart,
            max_restarts: 3,
            within: Duration::from_secs(60),
            backoff: Backoff::default(),
        }
    }

    /// [`Restart::Never`].
    pub fn never() -> Self {
        Self::new(Restart::Never)
    }

    /// [`Restart::OnFailure`].
    pub fn on_failure() -> Self {
        Self::new(Restart::OnFailure)
    }

    /// [`Restart::Always`].
    pub fn always() -> Self {
        Self::new(Restart::Always)
    }

    /// At most `max` restarts within `within`.
    pub fn max_restarts(mut self, max: u32, within: Duration) -> Self {
        self.max_restarts = max;
        self.within = within;
        self
    }

    /// The delay before each restart.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// The restarts made recently under one policy.
#[derive(Debug, Clone)]
pub(crate) struct RestartBudget {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
}

impl RestartBudget {
    pub(crate) fn new(policy: RestartPolicy) -> Self {
        RestartBudget {
            policy,
            recent: VecDeque::new(),
        }
    }

    /// Books a restart at `now`: the delay to wait before it, or `None` when the window already
    /// holds `max_restarts` restarts (give up).
    pub(crate) fn next(&mut self, now: Instant) -> Option<Duration> {
        while let Some(&t) = self.recent.front() {
            if now.duration_since(t) >= self.policy.within {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        let k = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        if k >= self.policy.max_restarts {
            return None;
        }
        self.recent.push_back(now);
        Some(self.policy.backoff.delay(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_stops_restart() {
        let all = [
            StopReason::Stopped,
            StopReason::Panicked("x".into()),
            StopReason::Shutdown,
            StopReason::NodeDown,
            StopReason::NotFound,
        ];
        for r in &all {
            assert!(!Restart::Never.applies(r), "{r:?}");
            assert!(Restart::Always.applies(r), "{r:?}");
            assert_eq!(
                Restart::OnFailure.applies(r),
                *r != StopReason::Stopped,
                "{r:?}"
            );
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_millis(350),
        };
        let ms = |k| b.delay(k).as_millis();
        assert_eq!((ms(0), ms(1), ms(2), ms(3)), (100, 200, 350, 350));
        assert_eq!(Backoff::NONE.delay(7), Duration::ZERO);
    }

    #[test]
    fn the_window_bounds_restarts_and_forgets_old_ones() {
        let policy = RestartPolicy::always()
            .max_restarts(2, Duration::from_secs(10))
            .backoff(Backoff {
                initial: Duration::from_millis(10),
                factor: 3.0,
                max: Duration::from_secs(1),
            });
        let mut b = RestartBudget::new(policy);
        let t0 = Instant::now();
        assert_eq!(b.next(t0), Some(Duration::from_millis(10)));
        assert_eq!(
            b.next(t0 + Duration::from_secs(1)),
            Some(Duration::from_millis(30))
        );
        assert_eq!(
            b.next(t0 + Duration::from_secs(2)),
            None,
            "third restart in 10 s"
        );
        // 10 s after the first restart it has left the window: one more fits.
        assert_eq!(
            b.next(t0 + Duration::from_secs(10)),
            Some(Duration::from_millis(30))
        );
        assert_eq!(b.next(t0 + Duration::from_secs(10)), None);
    }
}
