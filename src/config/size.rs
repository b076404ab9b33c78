//! Sizes and rates in the config: `1MiB`, `512KiB`, `8MiB/s`, `20Mbit/s`, or a bare number of
//! bytes (bytes per second for a rate). Checked by the validator, which reports a bad value at
//! its `FILE:LINE:COL`.

use serde::Deserialize;

/// A size or rate as written: a number or a text with a unit.
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

const BYTE_UNITS: [(&str, f64); 7] = [
    ("B", 1.0),
    ("KB", 1e3),
    ("KiB", 1024.0),
    ("MB", 1e6),
    ("MiB", 1024.0 * 1024.0),
    ("GB", 1e9),
    ("GiB", 1024.0 * 1024.0 * 1024.0),
];
/// Uplinks are sold in bits per second.
const BIT_UNITS: [(&str, f64); 4] = [
    ("bit", 1.0 / 8.0),
    ("kbit", 1e3 / 8.0),
    ("Mbit", 1e6 / 8.0),
    ("Gbit", 1e9 / 8.0),
];

fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let value: f64 = t[..split].parse().ok()?;
    Some((value, t[split..].trim()))
}

/// A size or rate that does not read, as written.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("expected a size such as `1MiB`, `512KiB` or a number of bytes, found `{found}`")]
    Size { found: String },
    #[error("expected a rate such as `8MiB/s`, `20Mbit/s`, a number of bytes per second or `none`, found `{found}`")]
    Rate { found: String },
}

/// Bytes, from `1MiB`, `64KiB`, `1000` or `1000B`.
pub fn parse_size(raw: &RawSize) -> Result<u64, SizeError> {
    let expected = |found: &str| SizeError::Size {
        found: found.to_string(),
    };
    match raw {
        RawSize::Bytes(n) => Ok(*n),
        RawSize::Text(t) => {
            let (value, unit) = number_and_unit(t).ok_or_else(|| expected(t))?;
            let unit = if unit.is_empty() { "B" } else { unit };
            let factor = BYTE_UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, f)| *f)
                .ok_or_else(|| expected(t))?;
            Ok((value * factor).round() as u64)
        }
    }
}

/// Bytes per second, from `8MiB/s`, `20Mbit/s` or a number of bytes per second; `none` is None.
pub fn parse_rate(raw: &RawSize) -> Result<Option<u64>, SizeError> {
    let expected = |found: &str| SizeError::Rate {
        found: found.to_string(),
    };
    match raw {
        RawSize::Bytes(n) => Ok(Some(*n)),
        RawSize::Text(t) if t.trim() == "none" => Ok(None),
        RawSize::Text(t) => {
            let (value, unit) = number_and_unit(t).ok_or_else(|| expected(t))?;
            let unit = unit.strip_suffix("/s").ok_or_else(|| expected(t))?.trim();
            let factor = BYTE_UNITS
                .iter()
                .chain(BIT_UNITS.iter())
                .find(|(u, _)| *u == unit)
                .map(|(_, f)| *f)
                .ok_or_else(|| expected(t))?;
            Ok(Some((value * factor).round() as u64))
        }
    }
}

/// Written back in the form it was read: a number stays a number, a text (`8MiB/s`) a text.
impl serde::Serialize for RawSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RawSize::Bytes(n) => s.serialize_u64(*n),
            RawSize::Text(t) => s.serialize_str(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> RawSize {
        RawSize::Text(s.into())
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&text("1MiB")), Ok(1 << 20));
        assert_eq!(parse_size(&text("64 KiB")), Ok(64 << 10));
        assert_eq!(parse_size(&text("1.5MB")), Ok(1_500_000));
        assert_eq!(parse_size(&text("4096")), Ok(4096));
        assert_eq!(parse_size(&RawSize::Bytes(7)), Ok(7));
        assert!(parse_size(&text("1 parsec"))
            .unwrap_err()
            .to_string()
            .contains("found `1 parsec`"));
        assert!(parse_size(&text("MiB")).is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate(&text("8MiB/s")), Ok(Some(8 << 20)));
        assert_eq!(parse_rate(&text("20Mbit/s")), Ok(Some(2_500_000)));
        assert_eq!(parse_rate(&text("500 KB/s")), Ok(Some(500_000)));
        assert_eq!(parse_rate(&RawSize::Bytes(1000)), Ok(Some(1000)));
        assert_eq!(parse_rate(&text("none")), Ok(None));
        assert!(parse_rate(&text("8MiB"))
            .unwrap_err()
            .to_string()
            .contains("`8MiB`"));
        assert!(parse_rate(&text("fast")).is_err());
    }
}
