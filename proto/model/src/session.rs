//! Stream session rules: an agent epoch names one run of an agent process; sequence numbers
//! order the reports of one stream (the snapshot is 0, each delta adds one).

/// One run of an agent: a new process (or a new stream after a reconnect) picks a new epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

/// A report's position in its stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u64);

impl Seq {
    /// The sequence number the next report must carry.
    pub fn next(self) -> Seq {
        Seq(self.0.wrapping_add(1))
    }

    /// True when `received` is not the report that follows `self`: the receiver must ask for
    /// a resync.
    pub fn is_gap(self, received: Seq) -> bool {
        received != self.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps() {
        assert!(!Seq(4).is_gap(Seq(5)));
        assert!(Seq(4).is_gap(Seq(6)));
        assert!(Seq(4).is_gap(Seq(4)));
        assert!(!Seq(u64::MAX).is_gap(Seq(0)));
    }
}
