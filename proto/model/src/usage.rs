//! Usage numbers and the kubelet's time.
//!
//! A [`Sample`] is what the Metrics API serves for one node or container: usage computed by
//! the agent from two kubelet samples, the kubelet's timestamp of the newer one, and the window
//! between them.

use std::time::Duration;

/// Instantaneous usage: CPU as a rate in nanocores, memory as working-set bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// CPU in billionths of a core (averaged over the window).
    pub cpu_nanocores: u64,
    /// Memory working set in bytes, at the sample instant.
    pub memory_bytes: u64,
}

/// A point in time as nanoseconds since the Unix epoch. In kubepulse it is always a kubelet
/// sample time, never the time something was received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// From integer milliseconds since the epoch (the kubelet's exposition unit).
    pub fn from_millis(ms: i64) -> Self {
        Self(ms.saturating_mul(1_000_000))
    }

    /// Whole milliseconds since the epoch (truncated towards negative infinity).
    pub fn as_millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// Whole seconds since the epoch (truncated towards negative infinity), as the Metrics API
    /// prints timestamps.
    pub fn as_secs(self) -> i64 {
        self.0.div_euclid(1_000_000_000)
    }

    /// Nanoseconds since the epoch.
    pub fn as_nanos(self) -> i64 {
        self.0
    }

    /// `self - earlier`, or `None` if `earlier` is not strictly before `self`.
    pub fn since(self, earlier: Timestamp) -> Option<Window> {
        let d = self.0.checked_sub(earlier.0)?;
        (d > 0).then_some(Window(d as u64))
    }
}

/// The length of the interval a CPU rate was averaged over, in nanoseconds. Never zero for a
/// served sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window(pub u64);

impl Window {
    /// The window as a [`Duration`].
    pub fn as_duration(self) -> Duration {
        Duration::from_nanos(self.0)
    }

    /// Nanoseconds.
    pub fn as_nanos(self) -> u64 {
        self.0
    }
}

/// One served measurement: usage over `[timestamp - window, timestamp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sample {
    /// The usage.
    pub usage: Usage,
    /// The kubelet's timestamp of the newer of the two samples.
    pub timestamp: Timestamp,
    /// The time between the two kubelet samples.
    pub window: Window,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_round_trip_and_truncation() {
        let t = Timestamp::from_millis(1_717_243_195_318);
        assert_eq!(t.as_millis(), 1_717_243_195_318);
        assert_eq!(t.as_secs(), 1_717_243_195);
        assert_eq!(Timestamp(-1).as_secs(), -1);
    }

    #[test]
    fn since_requires_strict_order() {
        let a = Timestamp::from_millis(1000);
        let b = Timestamp::from_millis(16_204);
        assert_eq!(b.since(a), Some(Window(15_204_000_000)));
        assert_eq!(a.since(b), None);
        assert_eq!(a.since(a), None);
    }
}
