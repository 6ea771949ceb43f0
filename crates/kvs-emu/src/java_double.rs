//! Timestamps in JSON answers as the service writes them: epoch seconds in Java's
//! `Double.toString` notation, `1.577156926042E9` (kvs-protocol.md §1). A client's JSON reader
//! must take the exponent form, so the emulator sends exactly that rather than serde_json's
//! `1577156926.042`.

/// `ms` epoch milliseconds as Java prints the double `ms / 1000`: plain decimals with at least
/// one fraction digit from 10⁻³ up to 10⁷, the shortest digits with an `E` exponent outside that.
pub fn seconds(ms: i64) -> String {
    java(ms as f64 / 1000.0)
}

fn java(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 || (1e-3..1e7).contains(&magnitude) {
        let plain = value.to_string();
        return if plain.contains('.') {
            plain
        } else {
            format!("{plain}.0")
        };
    }
    // Rust's `{:e}` already has the shortest digits that read back to the same double.
    let scientific = format!("{value:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    if mantissa.contains('.') {
        format!("{mantissa}E{exponent}")
    } else {
        format!("{mantissa}.0E{exponent}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_the_service() {
        // Values from real ListFragments and DescribeStream answers.
        assert_eq!(seconds(1_577_156_926_042), "1.577156926042E9");
        assert_eq!(seconds(1_720_751_492_346), "1.720751492346E9");
        assert_eq!(seconds(1_577_156_962_110), "1.57715696211E9");
        assert_eq!(seconds(1_700_000_000_000), "1.7E9");
        assert_eq!(seconds(10_000_000_000), "1.0E7");
    }

    #[test]
    fn small_values_are_plain() {
        assert_eq!(seconds(0), "0.0");
        assert_eq!(seconds(5000), "5.0");
        assert_eq!(seconds(7), "0.007");
        assert_eq!(seconds(1), "0.001");
        assert_eq!(seconds(9_999_999_500), "9999999.5");
        assert_eq!(seconds(-1500), "-1.5");
        assert_eq!(java(0.0001), "1.0E-4");
    }

    #[test]
    fn the_text_reads_back_to_the_same_milliseconds() {
        for ms in [1_511_852_109_126_i64, 1_511_852_108_513, 1_700_000_002_150] {
            let back: f64 = seconds(ms).parse().unwrap();
            assert_eq!((back * 1000.0).round() as i64, ms);
        }
    }
}
