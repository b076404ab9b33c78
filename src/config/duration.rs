//! Human durations in the config: `500ms`, `3s`, `5m`, `1h`, `1d`, or a bare number of seconds
//! (parsed by the `humantime` crate).

use serde::{de, Deserialize, Deserializer};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// `humantime`'s units (`ms`, `s`, `m`, `h`, `d`, and combinations such as `1h 30m`), plus a
/// bare number meaning seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|source| DurationError {
        text: text.to_string(),
        source,
    })
}

/// A duration `humantime` does not read, as written.
#[derive(Debug, thiserror::Error)]
#[error("expected a duration like `3s`, `5m` or `1h`, found `{text}` ({source})")]
pub struct DurationError {
    text: String,
    source: humantime::DurationError,
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Seconds(u64),
            Text(String),
        }
        match Form::deserialize(d)
            .map_err(|_| de::Error::custom("expected a duration like `3s`, `5m` or `1h`"))?
        {
            Form::Seconds(s) => Ok(HumanDuration(Duration::from_secs(s))),
            Form::Text(t) => parse_duration(&t)
                .map(HumanDuration)
                .map_err(de::Error::custom),
        }
    }
}

/// Written back as the config reads it: whole seconds as `30s` (as Apache's and most
/// operators' numbers are), anything finer in milliseconds (`250ms`) or, below
/// that, nanoseconds: the value read back is the same.
impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            s.collect_str(&format_args!("{}s", d.as_secs()))
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            s.collect_str(&format_args!("{}ms", d.as_millis()))
        } else {
            s.collect_str(&format_args!("{}ns", d.as_nanos()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn units() {
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("3 parsecs").is_err());
    }
}
