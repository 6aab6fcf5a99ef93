use proptest::prelude::*;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_bucket_allows_its_burst_then_its_rate() {
    let mut bucket = TokenBucket::new(10, 3, ms(0));
    for _ in 0..3 {
        assert_eq!(bucket.take(ms(0)), Ok(()));
    }
    // empty: the next token is 100 ms away
    assert_eq!(bucket.take(ms(0)), Err(ms(100)));
    assert_eq!(bucket.take(ms(40)), Err(ms(60)));
    assert_eq!(bucket.take(ms(100)), Ok(()));
    assert_eq!(bucket.take(ms(100)), Err(ms(100)));
    // a long pause refills only up to the burst
    assert_eq!(bucket.available(ms(60_000)), 3);
}

#[test]
fn a_bucket_ignores_time_going_backwards() {
    let mut bucket = TokenBucket::new(1, 1, ms(5_000));
    assert_eq!(bucket.take(ms(5_000)), Ok(()));
    assert_eq!(bucket.take(ms(1_000)), Err(ms(1_000)));
    assert_eq!(bucket.take(ms(6_000)), Ok(()));
}

#[test]
fn zero_settings_mean_one() {
    let mut bucket = TokenBucket::new(0, 0, ms(0));
    assert_eq!(bucket.take(ms(0)), Ok(()));
    assert_eq!(bucket.take(ms(0)), Err(ms(1_000)));
}

proptest! {
    /// Over any schedule of attempts, what a bucket lets through in [0, t] is at most
    /// burst + rate × t, and a refused attempt is told a wait that is then enough.
    #[test]
    fn a_bucket_never_exceeds_burst_plus_rate(
        per_second in 1u32..1_000,
        burst in 1u32..100,
        steps in prop::collection::vec(0u64..50_000_000, 1..300),
    ) {
        let mut bucket = TokenBucket::new(per_second, burst, Duration::ZERO);
        let mut now = Duration::ZERO;
        let mut taken = 0u64;
        for step in steps {
            now += Duration::from_nanos(step);
            match bucket.take(now) {
                Ok(()) => taken += 1,
                Err(wait) => {
                    prop_assert!(!wait.is_zero());
                    prop_assert_eq!(bucket.clone().take(now + wait), Ok(()));
                }
            }
            let allowed = u128::from(burst) + now.as_nanos() * u128::from(per_second) / 1_000_000_000;
            prop_assert!(u128::from(taken) <= allowed, "{} taken by {:?}, {} allowed", taken, now, allowed);
        }
    }
}

fn node(name: &str) -> NodeName {
    NodeName::new(name).unwrap()
}

#[test]
fn streams_are_bounded_per_node_and_in_total() {
    let mut counts = StreamCounts::new(StreamLimits {
        per_node: 2,
        total: 3,
    });
    let (a, b, c) = (node("a"), node("b"), node("c"));
    assert_eq!(counts.open(&a), Ok(()));
    assert_eq!(counts.open(&a), Ok(()));
    let refused = counts.open(&a).unwrap_err();
    assert_eq!(refused.reason(), "max_streams_per_node");
    assert_eq!(
        refused.to_string(),
        "node a already has 2 open streams (--max-streams-per-node); retry after the old ones close"
    );
    assert_eq!(counts.open(&b), Ok(()));
    let refused = counts.open(&c).unwrap_err();
    assert_eq!(refused, StreamRefusal::TooMany { limit: 3 });
    assert_eq!(refused.reason(), "max_streams");
    assert_eq!(counts.total(), 3);
    counts.close(&a);
    assert_eq!(counts.of_node(&a), 1);
    assert_eq!(counts.open(&c), Ok(()));
    for n in [&a, &b, &c] {
        counts.close(n);
    }
    assert_eq!((counts.total(), counts.of_node(&a)), (0, 0));
    // a close without an open changes nothing
    counts.close(&a);
    assert_eq!(counts.total(), 0);
}

#[test]
fn cache_entries_expire_and_the_size_is_bounded() {
    let mut cache = TtlCache::new(3);
    cache.insert("a", 1, ms(1_000), ms(0));
    assert_eq!(cache.get(&"a", ms(999)), Some(&1));
    assert_eq!(cache.get(&"a", ms(1_000)), None);
    cache.insert("zero", 0, Duration::ZERO, ms(0));
    assert_eq!(cache.get(&"zero", ms(0)), None);
    // full: the expired entry goes first
    cache.insert("b", 2, ms(5_000), ms(0));
    cache.insert("c", 3, ms(3_000), ms(0));
    cache.insert("d", 4, ms(9_000), ms(2_000));
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.get(&"a", ms(2_000)), None);
    // still full: the one closest to expiring goes
    cache.insert("e", 5, ms(9_000), ms(2_000));
    assert_eq!(cache.len(), 3);
    assert_eq!(cache.get(&"c", ms(2_000)), None);
    for (k, v) in [("b", 2), ("d", 4), ("e", 5)] {
        assert_eq!(cache.get(&k, ms(2_000)), Some(&v));
    }
    // replacing a key never evicts another
    cache.insert("e", 6, ms(9_000), ms(2_000));
    assert_eq!((cache.len(), cache.get(&"e", ms(2_000))), (3, Some(&6)));
}
