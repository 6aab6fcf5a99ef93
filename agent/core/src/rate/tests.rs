//! Rate tests: a table of (prev, last) pairs and what they give, plus properties.

use proptest::prelude::*;

use super::*;

/// `(cpu_ns, timestamp_ms, start_ms)` for brevity.
fn point(cpu_ns: u64, ms: i64, start_ms: Option<i64>) -> Cumulative {
    Cumulative {
        cpu_ns,
        timestamp: Timestamp::from_millis(ms),
        start_time: start_ms.map(Timestamp::from_millis),
    }
}

#[track_caller]
fn check(prev: Cumulative, last: Cumulative, expected: Result<(u64, u64)>) {
    let actual = cpu_rate(&prev, &last).map(|(nanocores, window)| (nanocores, window.as_nanos()));
    assert_eq!(actual, expected);
}

#[test]
fn reference_worked_example() {
    // Reference §2.5: web 812.44712 s → 815.212398 s over 15.204 s, node over 15.105 s.
    check(
        point(812_447_120_000, 1_717_243_195_318, Some(1_717_238_002_119)),
        point(815_212_398_000, 1_717_243_210_522, Some(1_717_238_002_119)),
        Ok((181_878_321, 15_204_000_000)),
    );
    check(
        point(48_211_903_177_000, 1_717_243_193_004, None),
        point(48_298_164_511_000, 1_717_243_208_109, None),
        Ok((5_710_780_139, 15_105_000_000)),
    );
}

#[test]
fn rate_table() {
    let start = Some(1_000);
    // Steady: one core for 10 s.
    check(
        point(0, 10_000, start),
        point(10_000_000_000, 20_000, start),
        Ok((1_000_000_000, 10_000_000_000)),
    );
    // Idle: no CPU used is zero nanocores, not an error.
    check(
        point(5, 10_000, start),
        point(5, 20_000, start),
        Ok((0, 10_000_000_000)),
    );
    // Truncation, not rounding: 2 ns over 3 s is 0.67 nanocores.
    check(
        point(0, 0, None),
        point(2, 3_000, None),
        Ok((0, 3_000_000_000)),
    );
    check(
        point(0, 0, None),
        point(1_999_999_999, 1_000, None),
        Ok((1_999_999_999, 1_000_000_000)),
    );
    // Counter decrease (reset without a visible restart, or a node reboot).
    check(
        point(10, 10_000, start),
        point(9, 20_000, start),
        Err(RateError::CounterDecreased {
            prev_ns: 10,
            last_ns: 9,
        }),
    );
    // Start time going backwards.
    check(
        point(1, 10_000, Some(2_000)),
        point(2, 20_000, Some(1_000)),
        Err(RateError::StartTimeDecreased {
            prev: Timestamp::from_millis(2_000),
            last: Timestamp::from_millis(1_000),
        }),
    );
    // A later start time (restart) is the caller's business: the counters still decide.
    check(
        point(1, 10_000, Some(1_000)),
        point(2, 20_000, Some(15_000)),
        Ok((0, 10_000_000_000)),
    );
    // Unknown start on either side is not compared.
    check(
        point(1, 10_000, Some(2_000)),
        point(1_000_000_001, 20_000, None),
        Ok((100_000_000, 10_000_000_000)),
    );
    // Equal and older timestamps have no window.
    check(
        point(1, 10_000, start),
        point(2, 10_000, start),
        Err(RateError::NotNewer {
            prev: Timestamp::from_millis(10_000),
            last: Timestamp::from_millis(10_000),
        }),
    );
    check(
        point(1, 20_000, start),
        point(2, 10_000, start),
        Err(RateError::NotNewer {
            prev: Timestamp::from_millis(20_000),
            last: Timestamp::from_millis(10_000),
        }),
    );
    // The fresh-container synthetic prev: zero CPU at the start time.
    check(
        point(0, 1_000, Some(1_000)),
        point(6_000_000_000, 13_000, Some(1_000)),
        Ok((500_000_000, 12_000_000_000)),
    );
    // Absurd inputs saturate instead of wrapping.
    check(
        Cumulative {
            cpu_ns: 0,
            timestamp: Timestamp(0),
            start_time: None,
        },
        Cumulative {
            cpu_ns: u64::MAX,
            timestamp: Timestamp(1),
            start_time: None,
        },
        Ok((u64::MAX, 1)),
    );
}

#[test]
fn errors_read_as_sentences() {
    assert_eq!(
        RateError::CounterDecreased {
            prev_ns: 10,
            last_ns: 9
        }
        .to_string(),
        "cumulative cpu decreased from 10 ns to 9 ns"
    );
}

proptest! {
    #[test]
    fn served_rate_is_bounded_and_window_positive(
        prev_cpu in any::<u64>(),
        step in any::<u64>(),
        prev_ts in any::<i64>(),
        window in 1i64..=i64::MAX,
    ) {
        let last_cpu = prev_cpu.saturating_add(step);
        let Some(last_ts) = prev_ts.checked_add(window) else { return Ok(()) };
        let prev = Cumulative { cpu_ns: prev_cpu, timestamp: Timestamp(prev_ts), start_time: None };
        let last = Cumulative { cpu_ns: last_cpu, timestamp: Timestamp(last_ts), start_time: None };
        let (nanocores, served_window) = cpu_rate(&prev, &last).unwrap();
        prop_assert!(served_window.as_nanos() > 0);
        prop_assert_eq!(served_window.as_nanos(), window as u64);
        // Never more than the counter step over the window (no wrap, no spike).
        let bound = u128::from(last_cpu - prev_cpu) * 1_000_000_000 / window as u128;
        prop_assert!(u128::from(nanocores) <= bound);
        prop_assert!(u128::from(nanocores) == bound || nanocores == u64::MAX);
    }

    #[test]
    fn decreasing_counter_or_time_never_gives_a_value(
        a in any::<u64>(), b in any::<u64>(), ta in any::<i64>(), tb in any::<i64>(),
    ) {
        let prev = Cumulative { cpu_ns: a, timestamp: Timestamp(ta), start_time: None };
        let last = Cumulative { cpu_ns: b, timestamp: Timestamp(tb), start_time: None };
        let result = cpu_rate(&prev, &last);
        prop_assert_eq!(result.is_ok(), b >= a && tb > ta);
    }
}
