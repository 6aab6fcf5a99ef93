//! Stage 2 of the agent, the arithmetic: CPU usage from two cumulative samples (reference §2.5).
//!
//! `nanocores = trunc(Δcpu_ns / window_seconds)`, computed exactly as
//! `Δcpu_ns × 10^9 / window_ns` in 128-bit integers. metrics-server divides in float64; the two
//! agree except where float rounding crosses an integer, where this one is the exact answer
//! (deliberate, at most one nanocore apart). A result above `u64::MAX` (only possible with a
//! window of well under a millisecond) saturates.

use kubepulse_model::{Timestamp, Window};

/// One cumulative CPU sample of a node or a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cumulative {
    /// CPU time used since start, in nanoseconds.
    pub cpu_ns: u64,
    /// The kubelet's sample time.
    pub timestamp: Timestamp,
    /// When the container started, if known (never for a node).
    pub start_time: Option<Timestamp>,
}

/// Why two samples give no rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// The counter went down without a known restart (a reset, or a node reboot).
    #[error("cumulative cpu decreased from {prev_ns} ns to {last_ns} ns")]
    CounterDecreased {
        /// The earlier counter value.
        prev_ns: u64,
        /// The later counter value.
        last_ns: u64,
    },
    /// The later sample claims an earlier container start.
    #[error("start time decreased from {prev:?} to {last:?}")]
    StartTimeDecreased {
        /// The earlier sample's start time.
        prev: Timestamp,
        /// The later sample's start time.
        last: Timestamp,
    },
    /// The later sample is not strictly newer, so there is no window.
    #[error("sample at {last:?} is not newer than the one at {prev:?}")]
    NotNewer {
        /// The earlier sample's time.
        prev: Timestamp,
        /// The later sample's time.
        last: Timestamp,
    },
}

/// A `Result` whose error is a [`RateError`].
pub type Result<T, E = RateError> = std::result::Result<T, E>;

/// CPU usage in nanocores between `prev` and `last`, and the window it is averaged over.
pub fn cpu_rate(prev: &Cumulative, last: &Cumulative) -> Result<(u64, Window)> {
    // In i128 so that even absurd timestamps (a window longer than i64::MAX) cannot overflow.
    let window_ns = i128::from(last.timestamp.as_nanos()) - i128::from(prev.timestamp.as_nanos());
    let window = u64::try_from(window_ns)
        .ok()
        .filter(|&nanos| nanos > 0)
        .map(Window)
        .ok_or(RateError::NotNewer {
            prev: prev.timestamp,
            last: last.timestamp,
        })?;
    if let (Some(prev_start), Some(last_start)) = (prev.start_time, last.start_time)
        && last_start < prev_start
    {
        return Err(RateError::StartTimeDecreased {
            prev: prev_start,
            last: last_start,
        });
    }
    let delta_ns = last
        .cpu_ns
        .checked_sub(prev.cpu_ns)
        .ok_or(RateError::CounterDecreased {
            prev_ns: prev.cpu_ns,
            last_ns: last.cpu_ns,
        })?;
    let nanocores = u128::from(delta_ns) * 1_000_000_000 / u128::from(window.as_nanos());
    Ok((u64::try_from(nanocores).unwrap_or(u64::MAX), window))
}

#[cfg(test)]
mod tests;
