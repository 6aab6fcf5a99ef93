//! A node table's samples, 16 bytes each where a [`Sample`] takes 32.
//!
//! The kubelet's timestamps are whole milliseconds, and so are the windows between them; a
//! container's working set is counted in whole memory pages; and a container's CPU rarely
//! reaches four cores. A sample is kept as its CPU in 32-bit nanocores, its memory in 4 KiB
//! pages (32 bits: up to 16 TiB), its timestamp in milliseconds from the table's base (a whole
//! millisecond, within ±24 days of the samples) and its window in milliseconds. A sample that
//! does not fit — 4.29 cores or more, memory off the 4 KiB page, a timestamp or window off the
//! millisecond, a window of 49 days or more, a timestamp too far from the base — is kept whole
//! in a side list, so every sample reads back exactly as written.

use crate::{Sample, Timestamp, Usage, Window};

const NANOS_PER_MS: i64 = 1_000_000;

/// Memory is kept in pages of this many bytes (log2).
const PAGE_SHIFT: u32 = 12;

/// `window_ms` of a sample kept whole in [`Samples::wide`].
const WIDE: u32 = u32::MAX;

/// See the module documentation.
#[derive(Clone, Debug, Default)]
pub(super) struct Samples {
    /// Nanoseconds since the epoch, a whole millisecond.
    base: i64,
    /// One per slot.
    packed: Vec<Packed>,
    /// (slot, sample) of the samples that do not fit, sorted by slot. Nearly always empty:
    /// a boxed slice, so that it costs 16 bytes and no allocation then.
    wide: Box<[(u32, Sample)]>,
}

#[derive(Clone, Copy, Debug)]
struct Packed {
    cpu_nanocores: u32,
    /// Memory in pages of `1 << PAGE_SHIFT` bytes.
    memory_pages: u32,
    /// Milliseconds from the base.
    offset_ms: i32,
    /// Milliseconds, or [`WIDE`].
    window_ms: u32,
}

impl Samples {
    /// Room for `n` samples. The base is taken from the first one pushed (the others of a
    /// node are near it).
    pub(super) fn with_capacity(n: usize) -> Self {
        Self {
            base: 0,
            packed: Vec::with_capacity(n),
            wide: Box::default(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.packed.len()
    }

    /// The sample in `slot` (in range).
    pub(super) fn get(&self, slot: usize) -> Sample {
        let p = self.packed[slot];
        if p.window_ms == WIDE {
            let i = self.wide_index(slot);
            return self.wide[i.expect("a sample marked whole is in the side list")].1;
        }
        Sample {
            usage: Usage {
                cpu_nanocores: u64::from(p.cpu_nanocores),
                memory_bytes: u64::from(p.memory_pages) << PAGE_SHIFT,
            },
            timestamp: Timestamp(self.base + i64::from(p.offset_ms) * NANOS_PER_MS),
            window: Window(u64::from(p.window_ms) * NANOS_PER_MS as u64),
        }
    }

    /// Every sample, by slot.
    pub(super) fn iter(&self) -> impl ExactSizeIterator<Item = Sample> + Clone + '_ {
        (0..self.len()).map(|slot| self.get(slot))
    }

    /// Appends a sample (the next slot's).
    pub(super) fn push(&mut self, s: Sample) {
        if self.packed.is_empty() {
            self.base = whole_ms(s.timestamp.0);
        }
        self.packed.push(Packed::WHOLE);
        self.set(self.packed.len() - 1, s);
    }

    /// Writes `s` to `slot` (in range).
    #[inline(always)]
    pub(super) fn set(&mut self, slot: usize, s: Sample) {
        // no sample kept whole: the one replaced is not, and need not be looked at
        if self.wide.is_empty()
            && let Some(p) = pack(self.base, &s)
        {
            self.packed[slot] = p;
            return;
        }
        self.set_rare(slot, s);
    }

    /// [`Samples::set`] when the sample or the one it replaces is kept whole.
    #[cold]
    #[inline(never)]
    fn set_rare(&mut self, slot: usize, s: Sample) {
        let was_wide = self.packed[slot].window_ms == WIDE;
        match pack(self.base, &s) {
            Some(p) => {
                self.packed[slot] = p;
                if was_wide && let Ok(i) = self.wide_index(slot) {
                    let mut wide = std::mem::take(&mut self.wide).into_vec();
                    wide.remove(i);
                    self.wide = wide.into_boxed_slice();
                }
            }
            None => {
                self.packed[slot] = Packed::WHOLE;
                match self.wide_index(slot) {
                    Ok(i) => self.wide[i].1 = s,
                    // a node holds far fewer than 2^32 containers (the agent bounds a read)
                    Err(i) => {
                        let mut wide = std::mem::take(&mut self.wide).into_vec();
                        wide.insert(i, (slot as u32, s));
                        self.wide = wide.into_boxed_slice();
                    }
                }
            }
        }
    }

    /// Moves the base near `s`'s timestamp when `s` fits everything but the distance from
    /// the base (the node's samples have moved on by weeks): called once before writing a
    /// message's samples, so a message costs at most one pass over the table for this.
    pub(super) fn follow(&mut self, s: &Sample) {
        let at = s.timestamp.0;
        if pack(self.base, s).is_some() || pack(whole_ms(at), s).is_none() {
            return;
        }
        let samples: Vec<Sample> = self.iter().collect();
        self.base = whole_ms(at);
        self.wide = Box::default();
        for (slot, s) in samples.into_iter().enumerate() {
            self.set(slot, s);
        }
    }

    fn wide_index(&self, slot: usize) -> Result<usize, usize> {
        self.wide.binary_search_by_key(&slot, |(k, _)| *k as usize)
    }
}

/// A whole millisecond next to `t`: the one before, or the one after where that is before
/// `i64::MIN`.
fn whole_ms(t: i64) -> i64 {
    let below = t.rem_euclid(NANOS_PER_MS);
    t.checked_sub(below)
        .unwrap_or_else(|| t + (NANOS_PER_MS - below))
}

impl Packed {
    /// The mark of a sample kept whole.
    const WHOLE: Packed = Packed {
        cpu_nanocores: 0,
        memory_pages: 0,
        offset_ms: 0,
        window_ms: WIDE,
    };
}

/// `s` in 16 bytes around `base`, if it fits.
#[inline(always)]
fn pack(base: i64, s: &Sample) -> Option<Packed> {
    let offset = s.timestamp.0.checked_sub(base)?;
    let window = i64::try_from(s.window.0).ok()?;
    let memory = s.usage.memory_bytes;
    if offset % NANOS_PER_MS != 0
        || window % NANOS_PER_MS != 0
        || memory & ((1 << PAGE_SHIFT) - 1) != 0
    {
        return None;
    }
    Some(Packed {
        cpu_nanocores: u32::try_from(s.usage.cpu_nanocores).ok()?,
        memory_pages: u32::try_from(memory >> PAGE_SHIFT).ok()?,
        offset_ms: i32::try_from(offset / NANOS_PER_MS).ok()?,
        window_ms: u32::try_from(window / NANOS_PER_MS)
            .ok()
            .filter(|w| *w != WIDE)?,
    })
}

impl PartialEq for Samples {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Samples {}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A sample whose usage fits (it varies with the timestamp and the window).
    fn sample(ts: i64, window: u64) -> Sample {
        Sample {
            usage: Usage {
                cpu_nanocores: ts.rem_euclid(1 << 31) as u64 ^ 0x55,
                memory_bytes: ((window % (1 << 20)) ^ 0xaa) << PAGE_SHIFT,
            },
            timestamp: Timestamp(ts),
            window: Window(window),
        }
    }

    fn using(cpu_nanocores: u64, memory_bytes: u64) -> Sample {
        Sample {
            usage: Usage {
                cpu_nanocores,
                memory_bytes,
            },
            ..sample(NOW, 15_000 * MS as u64)
        }
    }

    const MS: i64 = NANOS_PER_MS;
    const NOW: i64 = 1_717_243_195_318 * MS;

    #[test]
    fn kubelet_samples_fit_in_16_bytes() {
        assert_eq!(std::mem::size_of::<Packed>(), 16);
        assert_eq!(std::mem::size_of::<Samples>(), 48);
        let mut s = Samples::with_capacity(2);
        s.push(sample(NOW + 15_204 * MS, 15_204 * MS as u64));
        s.push(sample(NOW - 3 * MS, 14_999 * MS as u64));
        assert!(s.wide.is_empty());
        assert_eq!(s.get(0), sample(NOW + 15_204 * MS, 15_204 * MS as u64));
        assert_eq!(s.get(1), sample(NOW - 3 * MS, 14_999 * MS as u64));
    }

    #[test]
    fn what_does_not_fit_is_kept_whole() {
        let day = 86_400_000 * MS;
        let cases = [
            sample(NOW + 1, 15_000 * MS as u64), // timestamp off the millisecond
            sample(NOW, 15_000 * MS as u64 + 1), // window off the millisecond
            sample(NOW, 50 * day as u64),        // window of 50 days
            sample(NOW + 30 * day, 15 * MS as u64), // 30 days from the base
            sample(i64::MIN, 15 * MS as u64),    // far before
            sample(i64::MAX, 15 * MS as u64),    // far after
            sample(NOW, u64::MAX),               // the widest window
            sample(NOW, u64::from(WIDE) * MS as u64), // the marker's window
            using(1 << 32, 4096),                // 4.29 cores
            using(u64::MAX, 4096),
            using(1, 4097),    // off the page
            using(1, 1 << 44), // 16 TiB
            using(1, u64::MAX),
        ];
        let mut s = Samples::with_capacity(cases.len());
        for c in cases {
            s.push(c);
        }
        assert_eq!(s.wide.len(), cases.len());
        assert!(s.iter().eq(cases));
        // written over with samples that fit: the side list empties
        for slot in 0..cases.len() {
            s.set(slot, sample(NOW, 15_000 * MS as u64));
        }
        assert!(s.wide.is_empty());
        assert!(s.iter().all(|x| x == sample(NOW, 15_000 * MS as u64)));
    }

    #[test]
    fn the_base_follows_samples_weeks_later() {
        let day = 86_400_000 * MS;
        let mut s = Samples::with_capacity(2);
        s.push(sample(NOW, 15_000 * MS as u64));
        s.push(sample(NOW + MS, 15_000 * MS as u64));
        let later = sample(NOW + 40 * day, 15_000 * MS as u64);
        s.follow(&later);
        s.set(0, later);
        // the other one is now 40 days from the base: kept whole, read back the same
        assert_eq!(s.wide.len(), 1);
        assert_eq!(s.get(0), later);
        assert_eq!(s.get(1), sample(NOW + MS, 15_000 * MS as u64));
        s.set(1, later);
        assert!(s.wide.is_empty());
        // the ends of time: the base moves next to them, without overflow
        for t in [i64::MIN, i64::MAX, i64::MIN + 1] {
            let s0 = sample(t, 15 * MS as u64);
            s.follow(&s0);
            s.set(0, s0);
            assert_eq!(s.get(0), s0);
            assert_eq!(s.base % MS, 0);
        }
        s.set(0, later);
        s.set(1, later);
        let mut first = Samples::with_capacity(1);
        first.push(sample(i64::MIN, 15 * MS as u64));
        assert_eq!(first.base % MS, 0);
        // a sample that cannot fit anywhere moves nothing
        let base = s.base;
        s.follow(&sample(NOW + 1, 15_000 * MS as u64));
        assert_eq!(s.base, base);
    }

    fn arb_sample() -> impl Strategy<Value = Sample> {
        let ts = prop_oneof![
            (-100_000i64..100_000).prop_map(|ms| NOW + ms * MS),
            (-100i64..100).prop_map(|d| NOW + d * 86_400_000 * MS),
            any::<i64>(),
        ];
        let window = prop_oneof![(1u64..100_000).prop_map(|ms| ms * MS as u64), any::<u64>(),];
        let cpu = prop_oneof![0u64..1 << 33, any::<u64>()];
        let memory = prop_oneof![
            (0u64..1 << 33).prop_map(|pages| pages << PAGE_SHIFT),
            0u64..1 << 40,
            any::<u64>(),
        ];
        (ts, window, cpu, memory).prop_map(|(ts, window, cpu, mem)| Sample {
            usage: Usage {
                cpu_nanocores: cpu,
                memory_bytes: mem,
            },
            timestamp: Timestamp(ts),
            window: Window(window),
        })
    }

    proptest! {
        /// Whatever is written, in whatever order, with or without the base following, reads
        /// back as a plain vector of samples would.
        #[test]
        fn reads_back_what_was_written(
            first in prop::collection::vec(arb_sample(), 1..20),
            writes in prop::collection::vec((any::<prop::sample::Index>(), arb_sample(), any::<bool>()), 0..60),
        ) {
            let mut s = Samples::with_capacity(first.len());
            let mut plain = Vec::new();
            for x in &first {
                s.push(*x);
                plain.push(*x);
            }
            for (slot, x, follow) in writes {
                let slot = slot.index(plain.len());
                if follow {
                    s.follow(&x);
                }
                s.set(slot, x);
                plain[slot] = x;
                prop_assert!(s.iter().eq(plain.iter().copied()));
                prop_assert!(s.wide.windows(2).all(|w| w[0].0 < w[1].0));
            }
        }
    }
}
