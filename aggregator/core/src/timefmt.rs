//! Time and duration strings of the Metrics API: `timestamp`/`creationTimestamp` as RFC 3339 in
//! UTC with whole seconds (`2024-06-01T12:00:10Z`, Go's `metav1.Time`), and `window` as Go's
//! `time.Duration` text (`15.204s`, `1m0s`, `999ns`, `1.5µs`). Pure: the instants are arguments,
//! no clock is read.

use kubepulse_model::Timestamp;

use crate::quantity::push_u64;

/// `ts` as RFC 3339 UTC with whole seconds, the sub-second part truncated towards −∞
/// (`2024-06-01T12:00:10Z`).
pub fn format_time(ts: Timestamp) -> String {
    let mut out = Vec::with_capacity(20);
    write_time(&mut out, ts);
    String::from_utf8(out).unwrap_or_default()
}

/// `nanos` as Go's `time.Duration.String()`: `0s`, `999ns`, `1.5µs` (U+00B5), `15.204ms`,
/// `15.204s`, `1m0s`, `1m30.5s`, `1h2m3s`, `12.318462912s`.
pub fn format_duration(nanos: u64) -> String {
    let mut out = Vec::with_capacity(24);
    write_duration(&mut out, nanos);
    String::from_utf8(out).unwrap_or_default()
}

/// Appends [`format_time`] of `ts` (always 20 bytes for the years an `i64` of nanoseconds
/// can reach).
pub(crate) fn write_time(out: &mut Vec<u8>, ts: Timestamp) {
    let secs = ts.as_secs();
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    push_padded(out, year as u64, 4);
    out.push(b'-');
    push_padded(out, u64::from(month), 2);
    out.push(b'-');
    push_padded(out, u64::from(day), 2);
    out.push(b'T');
    push_padded(out, (second_of_day / 3600) as u64, 2);
    out.push(b':');
    push_padded(out, (second_of_day / 60 % 60) as u64, 2);
    out.push(b':');
    push_padded(out, (second_of_day % 60) as u64, 2);
    out.push(b'Z');
}

/// Appends [`format_duration`] of `nanos`. Go's algorithm (`time.Duration.format`), run on an
/// unsigned value: windows are never negative.
pub(crate) fn write_duration(out: &mut Vec<u8>, nanos: u64) {
    // Built backwards like Go does, into a buffer large enough for u64::MAX.
    let mut buf = [0u8; 32];
    let mut w = buf.len();
    let mut u = nanos;
    if u < 1_000_000_000 {
        let prec;
        w -= 1;
        buf[w] = b's';
        w -= 1;
        if u == 0 {
            buf[w] = b'0';
            out.extend_from_slice(&buf[w..]);
            return;
        } else if u < 1_000 {
            prec = 0;
            buf[w] = b'n';
        } else if u < 1_000_000 {
            prec = 3;
            // U+00B5 MICRO SIGN, as Go prints it.
            w -= 1;
            buf[w..w + 2].copy_from_slice("\u{b5}".as_bytes());
        } else {
            prec = 6;
            buf[w] = b'm';
        }
        (w, u) = fmt_frac(&mut buf, w, u, prec);
        w = fmt_int(&mut buf, w, u);
    } else {
        w -= 1;
        buf[w] = b's';
        (w, u) = fmt_frac(&mut buf, w, u, 9);
        w = fmt_int(&mut buf, w, u % 60);
        u /= 60;
        if u > 0 {
            w -= 1;
            buf[w] = b'm';
            w = fmt_int(&mut buf, w, u % 60);
            u /= 60;
            if u > 0 {
                w -= 1;
                buf[w] = b'h';
                w = fmt_int(&mut buf, w, u);
            }
        }
    }
    out.extend_from_slice(&buf[w..]);
}

// === private helpers ===

/// Go's `fmtFrac`: writes the `prec` low decimal digits of `v` as a fraction before `buf[w]`,
/// omitting trailing zeros and the point itself when the fraction is zero. Returns the new
/// start and `v / 10^prec`.
fn fmt_frac(buf: &mut [u8], mut w: usize, mut v: u64, prec: u32) -> (usize, u64) {
    let mut print = false;
    for _ in 0..prec {
        let digit = v % 10;
        print = print || digit != 0;
        if print {
            w -= 1;
            buf[w] = b'0' + digit as u8;
        }
        v /= 10;
    }
    if print {
        w -= 1;
        buf[w] = b'.';
    }
    (w, v)
}

/// Go's `fmtInt`: writes `v` in decimal before `buf[w]`, returns the new start.
fn fmt_int(buf: &mut [u8], mut w: usize, mut v: u64) -> usize {
    if v == 0 {
        w -= 1;
        buf[w] = b'0';
        return w;
    }
    while v > 0 {
        w -= 1;
        buf[w] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    w
}

fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let start = out.len();
    push_u64(out, v);
    let len = out.len() - start;
    if len < width {
        out.splice(start..start, std::iter::repeat_n(b'0', width - len));
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day): Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_time(nanos: i64, expected: &str) {
        assert_eq!(
            format_time(Timestamp(nanos)),
            expected,
            "format_time({nanos})"
        );
    }

    fn check_duration(nanos: u64, expected: &str) {
        assert_eq!(format_duration(nanos), expected, "format_duration({nanos})");
    }

    #[test]
    fn times() {
        check_time(0, "1970-01-01T00:00:00Z");
        // Reference 2.5: kubelet sample at …210522 ms.
        check_time(1_717_243_210_522_000_000, "2024-06-01T12:00:10Z");
        check_time(1_717_243_208_999_999_999, "2024-06-01T12:00:08Z");
        check_time(1_709_164_800_000_000_000, "2024-02-29T00:00:00Z");
        check_time(951_782_400_000_000_000, "2000-02-29T00:00:00Z");
        check_time(4_102_444_799_000_000_000, "2099-12-31T23:59:59Z");
        check_time(1_677_818_274_000_000_000, "2023-03-03T04:37:54Z");
        // Truncation is towards −∞, also before the epoch.
        check_time(-1, "1969-12-31T23:59:59Z");
        check_time(-1_000_000_000, "1969-12-31T23:59:59Z");
        check_time(-1_000_000_001, "1969-12-31T23:59:58Z");
        check_time(i64::MIN, "1677-09-21T00:12:43Z");
        check_time(i64::MAX, "2262-04-11T23:47:16Z");
    }

    #[test]
    fn durations_from_the_reference() {
        check_duration(0, "0s");
        check_duration(999, "999ns");
        check_duration(1_500, "1.5\u{b5}s");
        check_duration(15_204_000, "15.204ms");
        check_duration(15_204_000_000, "15.204s");
        check_duration(60_000_000_000, "1m0s");
        check_duration(90_500_000_000, "1m30.5s");
        check_duration(3_723_000_000_000, "1h2m3s");
        check_duration(12_318_462_912, "12.318462912s");
        check_duration(15_105_000_000, "15.105s");
        check_duration(300_000_000_000, "5m0s");
        check_duration(30_000_000_000, "30s");
    }

    #[test]
    fn durations_at_unit_edges() {
        check_duration(1, "1ns");
        check_duration(1_000, "1\u{b5}s");
        check_duration(1_001, "1.001\u{b5}s");
        check_duration(999_999, "999.999\u{b5}s");
        check_duration(1_000_000, "1ms");
        check_duration(999_999_999, "999.999999ms");
        check_duration(1_000_000_000, "1s");
        check_duration(1_000_000_001, "1.000000001s");
        check_duration(3_600_000_000_000, "1h0m0s");
        check_duration(86_400_000_000_000, "24h0m0s");
        check_duration(i64::MAX as u64, "2562047h47m16.854775807s");
        check_duration(u64::MAX, "5124095h34m33.709551615s");
    }

    /// Go's `time.ParseDuration`, in integer arithmetic (exact where Go's float step is).
    fn parse_go_duration(s: &str) -> Option<u64> {
        let mut rest = s;
        if rest == "0" {
            return Some(0);
        }
        if rest.is_empty() {
            return None;
        }
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let int_part = &rest[..int_len];
            rest = &rest[int_len..];
            let mut frac_part = "";
            if let Some(after_dot) = rest.strip_prefix('.') {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                frac_part = &after_dot[..frac_len];
                rest = &after_dot[frac_len..];
            }
            if int_part.is_empty() && frac_part.is_empty() {
                return None;
            }
            let unit_len = rest
                .char_indices()
                .find(|(_, c)| *c == '.' || c.is_ascii_digit())
                .map_or(rest.len(), |(i, _)| i);
            let unit: u128 = match &rest[..unit_len] {
                "ns" => 1,
                "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                _ => return None,
            };
            rest = &rest[unit_len..];
            let int_value: u128 = if int_part.is_empty() {
                0
            } else {
                int_part.parse().ok()?
            };
            total += int_value * unit;
            if !frac_part.is_empty() {
                let frac: u128 = frac_part.parse().ok()?;
                let scale = 10u128.pow(frac_part.len() as u32);
                total += frac * unit / scale;
            }
        }
        u64::try_from(total).ok()
    }

    #[test]
    fn the_test_parser_reads_go_spellings() {
        assert_eq!(parse_go_duration("1h2m3s"), Some(3_723_000_000_000));
        assert_eq!(parse_go_duration("1.5\u{3bc}s"), Some(1_500));
        assert_eq!(parse_go_duration("2us"), Some(2_000));
        assert_eq!(parse_go_duration("1m"), Some(60_000_000_000));
        assert_eq!(parse_go_duration(".5s"), Some(500_000_000));
        assert_eq!(parse_go_duration("1"), None);
        assert_eq!(parse_go_duration("s"), None);
    }

    proptest! {
        #[test]
        fn durations_parse_back_under_go_rules(nanos in any::<u64>()) {
            prop_assert_eq!(parse_go_duration(&format_duration(nanos)), Some(nanos));
        }

        #[test]
        fn kubelet_windows_parse_back(millis in 0u64..10_000_000) {
            let nanos = millis * 1_000_000;
            prop_assert_eq!(parse_go_duration(&format_duration(nanos)), Some(nanos));
        }

        #[test]
        fn times_are_whole_seconds_and_ordered(a in any::<i64>(), b in any::<i64>()) {
            let (ta, tb) = (format_time(Timestamp(a)), format_time(Timestamp(b)));
            prop_assert_eq!(ta.len(), 20);
            // Fixed-width text sorts like the instants it names, at second resolution.
            prop_assert_eq!(ta.cmp(&tb), Timestamp(a).as_secs().cmp(&Timestamp(b).as_secs()));
        }

        #[test]
        fn time_fields_round_trip(secs in -9_223_372_036i64..9_223_372_036) {
            let text = format_time(Timestamp(secs * 1_000_000_000));
            let year: i64 = text[0..4].parse().unwrap();
            let month: u32 = text[5..7].parse().unwrap();
            let day: u32 = text[8..10].parse().unwrap();
            let hms: i64 = text[11..13].parse::<i64>().unwrap() * 3600
                + text[14..16].parse::<i64>().unwrap() * 60
                + text[17..19].parse::<i64>().unwrap();
            prop_assert_eq!(days_from_civil(year, month, day) * 86_400 + hms, secs);
        }
    }

    /// The inverse of `civil_from_days` (Hinnant's `days_from_civil`).
    fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}
