//! Kubernetes quantity strings, the way `resource.Quantity` canonicalises them: CPU nanocores as
//! DecimalSI at scale −9 (`"181878321n"`, `"50m"`, `"2"`), memory bytes as BinarySI
//! (`"241800Ki"`, `"1Gi"`, `"1k"` below 1024). Used by [`crate::encode`] for every usage value
//! and Table cell; the parsers exist for round-trip tests and for callers holding strings.
//!
//! Values above `i64::MAX` (which a Go `Quantity` cannot hold as an integer) are truncated to a
//! multiple of ten first, as metrics-server does when it stores them with scale +1.

/// Why a quantity string was refused by [`parse_cpu`] or [`parse_memory`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string is empty.
    #[error("quantity is empty")]
    Empty,
    /// The string does not follow the quantity grammar (`[+-]<digits>[.<digits>][suffix]`).
    #[error("quantity {input:?} does not match the quantity grammar")]
    Syntax {
        /// The refused input.
        input: String,
    },
    /// The suffix is not one of the SI, binary or exponent suffixes.
    #[error("quantity {input:?} has an unknown suffix {suffix:?}")]
    Suffix {
        /// The refused input.
        input: String,
        /// The unknown suffix.
        suffix: String,
    },
    /// The value is negative (usage never is).
    #[error("quantity {input:?} is negative")]
    Negative {
        /// The refused input.
        input: String,
    },
    /// The value does not fit in 64 bits of the target unit.
    #[error("quantity {input:?} is too large")]
    Overflow {
        /// The refused input.
        input: String,
    },
}

/// CPU nanocores as the canonical DecimalSI string (`0`, `1234567n`, `123u`, `50m`, `2500m`,
/// `1`, `3k`).
pub fn format_cpu(nanocores: u64) -> String {
    let mut out = Vec::with_capacity(24);
    write_cpu(&mut out, nanocores);
    into_string(out)
}

/// Memory bytes as the canonical BinarySI string (`12240Ki`, `50Mi`, `1Gi`, `1073741825`;
/// below 1024 the DecimalSI form: `512`, `1k`).
pub fn format_memory(bytes: u64) -> String {
    let mut out = Vec::with_capacity(24);
    write_memory(&mut out, bytes);
    into_string(out)
}

/// Parses a quantity into nanocores, rounding a finer value up to the next nanocore (as Go's
/// `ScaledValue(-9)` does).
pub fn parse_cpu(s: &str) -> Result<u64, QuantityError> {
    parse_scaled(s, 9)
}

/// Parses a quantity into bytes, rounding a fractional value up to the next byte (as Go's
/// `Value()` does).
pub fn parse_memory(s: &str) -> Result<u64, QuantityError> {
    parse_scaled(s, 0)
}

/// Appends [`format_cpu`] of `nanocores` to `out` without allocating.
pub(crate) fn write_cpu(out: &mut Vec<u8>, nanocores: u64) {
    write_decimal_si(out, fit_int64(nanocores), -9);
}

/// Appends [`format_memory`] of `bytes` to `out` without allocating.
pub(crate) fn write_memory(out: &mut Vec<u8>, bytes: u64) {
    let bytes = fit_int64(bytes);
    if bytes < 1024 {
        write_decimal_si(out, bytes, 0);
        return;
    }
    let mut mantissa = bytes;
    let mut power = 0;
    while mantissa.is_multiple_of(1024) {
        mantissa /= 1024;
        power += 1;
    }
    push_u64(out, mantissa);
    out.extend_from_slice(BINARY_SUFFIXES[power].as_bytes());
}

/// Appends the decimal digits of `v`.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

// === private helpers ===

/// Binary suffixes by power of 1024; `u64::MAX < 1024^7`.
const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];

/// A Go quantity holds an int64 mantissa: larger values lose their last digit.
fn fit_int64(v: u64) -> u64 {
    if v > i64::MAX as u64 { v / 10 * 10 } else { v }
}

/// `mantissa × 10^exponent` in canonical DecimalSI form; `exponent` is a multiple of 3.
fn write_decimal_si(out: &mut Vec<u8>, mantissa: u64, exponent: i32) {
    if mantissa == 0 {
        out.push(b'0');
        return;
    }
    let mut mantissa = mantissa;
    let mut exponent = exponent;
    while mantissa.is_multiple_of(10) {
        mantissa /= 10;
        exponent += 1;
    }
    // Back down to a multiple of three. Never overflows: every factor of ten put back was
    // stripped above, since the starting exponent was a multiple of three.
    while exponent.rem_euclid(3) != 0 {
        mantissa *= 10;
        exponent -= 1;
    }
    push_u64(out, mantissa);
    out.extend_from_slice(decimal_suffix(exponent).as_bytes());
}

fn decimal_suffix(exponent: i32) -> &'static str {
    match exponent {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        0 => "",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        // A u64 of nanocores or bytes stays below 10^20, so 18 is the largest exponent.
        _ => "E",
    }
}

fn into_string(bytes: Vec<u8>) -> String {
    // Only ASCII digits and suffixes were written.
    String::from_utf8(bytes).unwrap_or_default()
}

/// Parses `s` and returns its value × 10^`unit_exp`, rounded up, as a u64.
fn parse_scaled(s: &str, unit_exp: i32) -> Result<u64, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let syntax = || QuantityError::Syntax {
        input: s.to_owned(),
    };
    let bytes = s.as_bytes();
    let mut pos = 0;
    let negative = match bytes[0] {
        b'-' => {
            pos = 1;
            true
        }
        b'+' => {
            pos = 1;
            false
        }
        _ => false,
    };
    let int_start = pos;
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    let int_digits = &s[int_start..pos];
    let mut frac_digits = "";
    if pos < bytes.len() && bytes[pos] == b'.' {
        pos += 1;
        let frac_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        frac_digits = &s[frac_start..pos];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(syntax());
    }
    let suffix = &s[pos..];
    let (suffix_exp10, binary_power) = parse_suffix(suffix).ok_or_else(|| {
        if suffix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            QuantityError::Suffix {
                input: s.to_owned(),
                suffix: suffix.to_owned(),
            }
        } else {
            syntax()
        }
    })?;

    // value = digits × 10^(exp10) × 1024^binary_power
    let digits = format!("{int_digits}{frac_digits}");
    let digits = digits.trim_start_matches('0');
    let overflow = || QuantityError::Overflow {
        input: s.to_owned(),
    };
    if digits.is_empty() {
        return Ok(0);
    }
    if negative {
        return Err(QuantityError::Negative {
            input: s.to_owned(),
        });
    }
    let exp10 = i64::from(suffix_exp10) + i64::from(unit_exp) - frac_digits.len() as i64;
    // More than 39 significant digits cannot fit a u128, whatever follows.
    if digits.len() > 39 {
        return Err(overflow());
    }
    let mut value: u128 = digits.parse().map_err(|_| overflow())?;
    for _ in 0..binary_power {
        value = value.checked_mul(1024).ok_or_else(overflow)?;
    }
    if exp10 >= 0 {
        for _ in 0..exp10 {
            value = value.checked_mul(10).ok_or_else(overflow)?;
            if value > u128::from(u64::MAX) {
                return Err(overflow());
            }
        }
    } else if -exp10 > 38 {
        // A positive value far below one unit rounds up to one.
        value = 1;
    } else {
        let divisor = 10u128.pow((-exp10) as u32);
        value = value.div_ceil(divisor);
    }
    u64::try_from(value).map_err(|_| overflow())
}

/// `(power of ten, power of 1024)` for a suffix, or `None` if it is not one.
fn parse_suffix(suffix: &str) -> Option<(i32, u32)> {
    Some(match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        _ => {
            let rest = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Anything beyond ±1000 is far outside 64 bits either way.
            let exp: i32 = rest.parse().ok().filter(|e: &i32| e.abs() <= 1000)?;
            (exp, 0)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_cpu(nanocores: u64, expected: &str) {
        assert_eq!(format_cpu(nanocores), expected, "format_cpu({nanocores})");
    }

    fn check_memory(bytes: u64, expected: &str) {
        assert_eq!(format_memory(bytes), expected, "format_memory({bytes})");
    }

    #[test]
    fn cpu_reference_examples() {
        check_cpu(0, "0");
        check_cpu(1_234_567, "1234567n");
        check_cpu(123_000, "123u");
        check_cpu(50_000_000, "50m");
        check_cpu(2_500_000_000, "2500m");
        check_cpu(1_000_000_000, "1");
        check_cpu(3_000_000_000_000, "3k");
        check_cpu(181_878_321, "181878321n");
        check_cpu(5_710_780_139, "5710780139n");
        check_cpu(1_843_412, "1843412n");
        check_cpu(183_721_733, "183721733n");
    }

    #[test]
    fn cpu_exponent_rounding() {
        check_cpu(1, "1n");
        check_cpu(10, "10n");
        check_cpu(100, "100n");
        check_cpu(1_000, "1u");
        check_cpu(10_000, "10u");
        check_cpu(1_500_000_000, "1500m");
        check_cpu(2_000_000_000, "2");
        check_cpu(20_000_000_000, "20");
        check_cpu(1_000_000_000_000_000, "1M");
        check_cpu(u64::MAX, "18446744073709551610n");
        check_cpu(i64::MAX as u64, "9223372036854775807n");
        check_cpu(i64::MAX as u64 + 3, "9223372036854775810n");
    }

    #[test]
    fn memory_reference_examples() {
        check_memory(0, "0");
        check_memory(12_533_760, "12240Ki");
        check_memory(52_428_800, "50Mi");
        check_memory(1_073_741_824, "1Gi");
        check_memory(1_073_741_825, "1073741825");
        check_memory(1000, "1k");
        check_memory(512, "512");
        check_memory(247_603_200, "241800Ki");
        check_memory(3_219_374_080, "3143920Ki");
        check_memory(495_616, "484Ki");
    }

    #[test]
    fn memory_edges() {
        check_memory(1, "1");
        check_memory(1023, "1023");
        check_memory(1020, "1020");
        check_memory(500, "500");
        check_memory(1024, "1Ki");
        check_memory(1025, "1025");
        check_memory(1536, "1536");
        check_memory(1 << 40, "1Ti");
        check_memory(1 << 50, "1Pi");
        check_memory(1 << 60, "1Ei");
        check_memory(3 << 60, "3Ei");
        check_memory(u64::MAX, "18446744073709551610");
    }

    #[test]
    fn parse_examples() {
        assert_eq!(parse_cpu("0"), Ok(0));
        assert_eq!(parse_cpu("250m"), Ok(250_000_000));
        assert_eq!(parse_cpu("1.5"), Ok(1_500_000_000));
        assert_eq!(parse_cpu("+2"), Ok(2_000_000_000));
        assert_eq!(parse_cpu("1234567n"), Ok(1_234_567));
        assert_eq!(parse_cpu("0.5n"), Ok(1));
        assert_eq!(parse_cpu("1e3"), Ok(1_000_000_000_000));
        assert_eq!(parse_cpu("1E-9"), Ok(1));
        assert_eq!(parse_cpu("-0"), Ok(0));
        assert_eq!(parse_cpu(".5"), Ok(500_000_000));
        assert_eq!(parse_cpu("5."), Ok(5_000_000_000));
        assert_eq!(parse_cpu("1e-100"), Ok(1));
        assert_eq!(parse_memory("1Ki"), Ok(1024));
        assert_eq!(parse_memory("1k"), Ok(1000));
        assert_eq!(parse_memory("1.5Gi"), Ok(1_610_612_736));
        assert_eq!(parse_memory("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(parse_memory("0.1"), Ok(1));
        assert_eq!(
            parse_memory("16Ei"),
            Err(QuantityError::Overflow {
                input: "16Ei".into()
            })
        );
    }

    #[test]
    fn parse_errors() {
        assert_eq!(parse_cpu(""), Err(QuantityError::Empty));
        assert!(matches!(parse_cpu("m"), Err(QuantityError::Syntax { .. })));
        assert!(matches!(parse_cpu("."), Err(QuantityError::Syntax { .. })));
        assert!(matches!(
            parse_cpu("1 m"),
            Err(QuantityError::Syntax { .. })
        ));
        assert!(matches!(parse_cpu("1x"), Err(QuantityError::Suffix { .. })));
        assert!(matches!(
            parse_cpu("1Ki5"),
            Err(QuantityError::Suffix { .. })
        ));
        assert!(matches!(parse_cpu("1e"), Err(QuantityError::Suffix { .. })));
        assert!(matches!(
            parse_cpu("-1"),
            Err(QuantityError::Negative { .. })
        ));
        assert!(matches!(
            parse_cpu("20G"),
            Err(QuantityError::Overflow { .. })
        ));
        assert!(matches!(
            parse_memory("1e1000"),
            Err(QuantityError::Overflow { .. })
        ));
        assert_eq!(
            parse_cpu("1x").unwrap_err().to_string(),
            r#"quantity "1x" has an unknown suffix "x""#
        );
    }

    proptest! {
        #[test]
        fn cpu_round_trip(x in 0..=i64::MAX as u64) {
            prop_assert_eq!(parse_cpu(&format_cpu(x)), Ok(x));
        }

        #[test]
        fn memory_round_trip(x in 0..=i64::MAX as u64) {
            prop_assert_eq!(parse_memory(&format_memory(x)), Ok(x));
        }

        #[test]
        fn round_numbers_round_trip(m in 0u64..100_000, e in 0u32..14) {
            let x = m * 10u64.pow(e);
            prop_assert_eq!(parse_cpu(&format_cpu(x)), Ok(x));
            prop_assert_eq!(parse_memory(&format_memory(x)), Ok(x));
            let b = m << (e * 3).min(40);
            prop_assert_eq!(parse_memory(&format_memory(b)), Ok(b));
        }

        #[test]
        fn beyond_int64_keeps_all_but_the_last_digit(x in (i64::MAX as u64 + 1)..=u64::MAX) {
            prop_assert_eq!(parse_cpu(&format_cpu(x)), Ok(x / 10 * 10));
            prop_assert_eq!(parse_memory(&format_memory(x)), Ok(x / 10 * 10));
        }
    }
}
