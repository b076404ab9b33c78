//! `{capture}` patterns shared by hosts (`desktop-{name}.hub.example.org`), path prefixes
//! (`/desktop/{name}/`) and the templates filled from them (`desktop-{name}`, resolver URLs).

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Capture(String),
}

/// Values captured by a match, in pattern order. Routes have one or two captures, so a
/// small vector beats a map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captures(Vec<(String, String)>);

impl Captures {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn push(&mut self, name: &str, value: &str) {
        self.0.push((name.to_string(), value.to_string()));
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len)
    }
    pub fn extend(&mut self, other: Captures) {
        self.0.extend(other.0)
    }
}

/// A string with `{name}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    raw: String,
    pieces: Vec<Piece>,
    /// Two captures or more: matching remembers failed states (see `matches`).
    several_captures: bool,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Why a host, a path prefix or a `{name}` template cannot be a route's pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("unclosed `{{` in `{raw}`")]
    Unclosed { raw: String },
    #[error("capture names are letters, digits and `_`; found `{{{name}}}` in `{raw}`")]
    CaptureName { name: String, raw: String },
    #[error("two captures must be separated by text in `{raw}`")]
    AdjacentCaptures { raw: String },
    #[error("unmatched `}}` in `{raw}`")]
    Unmatched { raw: String },
    #[error("expected a host name like `hub.example.org`, `*.hub.example.org` or `desktop-{{name}}.hub.example.org`, found `{raw}`")]
    NotAHost { raw: String },
    #[error("a wildcard host must look like `*.example.org`, found `{raw}`")]
    Wildcard { raw: String },
    #[error("`*` is only allowed as the first label of a host, found `{raw}`")]
    StarInside { raw: String },
    #[error("a path prefix starts with `/`, found `{raw}`")]
    NoLeadingSlash { raw: String },
    #[error("a path prefix has no query or fragment, found `{raw}`")]
    QueryInPath { raw: String },
}

impl Template {
    pub fn parse(raw: &str) -> Result<Template, PatternError> {
        let raw_owned = || raw.to_string();
        let mut pieces = Vec::new();
        let mut rest = raw;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| PatternError::Unclosed { raw: raw_owned() })?
                + open;
            let name = &rest[open + 1..close];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(PatternError::CaptureName {
                    name: name.to_string(),
                    raw: raw_owned(),
                });
            }
            if matches!(pieces.last(), Some(Piece::Capture(_))) {
                return Err(PatternError::AdjacentCaptures { raw: raw_owned() });
            }
            pieces.push(Piece::Capture(name.to_string()));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(PatternError::Unmatched { raw: raw_owned() });
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_string()));
        }
        let captures = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Capture(_)))
            .count();
        Ok(Template {
            raw: raw.to_string(),
            pieces,
            several_captures: captures > 1,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn has_captures(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Capture(_)))
    }

    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Capture(n) => Some(n.as_str()),
            Piece::Literal(_) => None,
        })
    }

    /// The first placeholder not among `captured` (what a route's host and path capture).
    pub fn uncaptured(&self, captured: &[String]) -> Option<&str> {
        self.capture_names()
            .find(|c| !captured.iter().any(|k| k == c))
    }

    /// Matches the whole of `text`; captures never contain `forbidden` and are never empty.
    pub fn matches(&self, text: &str, forbidden: char, captures: &mut Captures) -> bool {
        let mark = captures.0.len();
        // With two captures or more, remember the (pattern, text) suffixes that failed: plain
        // backtracking is exponential in the captures (a fuzzer found a pattern that took
        // minutes); one capture backtracks in linear time and needs no memory.
        let mut failed = self
            .several_captures
            .then(|| Failed::new(self.pieces.len(), text.len()));
        if match_pieces(&self.pieces, text, forbidden, captures, &mut failed) {
            true
        } else {
            captures.0.truncate(mark);
            false
        }
    }

    /// Fills the placeholders; `escape` is applied to each captured value.
    pub fn fill(&self, captures: &Captures, escape: impl Fn(&str) -> String) -> Option<String> {
        let mut out = String::with_capacity(self.raw.len() + 16);
        for p in &self.pieces {
            match p {
                Piece::Literal(l) => out.push_str(l),
                Piece::Capture(n) => out.push_str(&escape(captures.get(n)?)),
            }
        }
        Some(out)
    }
}

/// The states known to fail, keyed by what is left of the pattern and of the text (both are
/// suffixes, so their lengths name them).
struct Failed {
    text_len: usize,
    seen: Vec<bool>,
}

impl Failed {
    fn new(pieces: usize, text_len: usize) -> Failed {
        Failed {
            text_len,
            seen: vec![false; (pieces + 1) * (text_len + 1)],
        }
    }

    fn slot(&self, pieces: &[Piece], text: &str) -> usize {
        pieces.len() * (self.text_len + 1) + text.len()
    }
}

fn match_pieces(
    pieces: &[Piece],
    text: &str,
    forbidden: char,
    caps: &mut Captures,
    failed: &mut Option<Failed>,
) -> bool {
    if let Some(f) = failed {
        if f.seen[f.slot(pieces, text)] {
            return false;
        }
    }
    let found = match pieces.split_first() {
        None => text.is_empty(),
        Some((Piece::Literal(l), rest)) => {
            text.len() >= l.len()
                && text.as_bytes()[..l.len()].eq_ignore_ascii_case(l.as_bytes())
                && match_pieces(rest, &text[l.len()..], forbidden, caps, failed)
        }
        Some((Piece::Capture(name), rest)) => {
            let limit = text.find(forbidden).unwrap_or(text.len());
            // Shortest capture first: with literals between captures this finds the match
            // a reader expects (`{user}-{type}` on `alice-xfce-2` gives user=alice).
            let mut found = false;
            for end in (1..=limit).filter(|&e| text.is_char_boundary(e)) {
                let mark = caps.0.len();
                caps.push(name, &text[..end]);
                if match_pieces(rest, &text[end..], forbidden, caps, failed) {
                    found = true;
                    break;
                }
                caps.0.truncate(mark);
            }
            found
        }
    };
    if !found {
        if let Some(f) = failed {
            let slot = f.slot(pieces, text);
            f.seen[slot] = true;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_captures_match_in_polynomial_time() {
        // Exponential with plain backtracking: 12 captures over 200 characters that cannot
        // match (the last literal is missing).
        let pattern = "{a}-{b}-{c}-{d}-{e}-{f}-{g}-{h}-{i}-{j}-{k}-{l}.end";
        let t = Template::parse(pattern).unwrap();
        let text = "x-".repeat(100);
        let mut c = Captures::default();
        assert!(!t.matches(&text, '/', &mut c));
        assert!(c.is_empty());
        let ok = format!("{}x.end", "x-".repeat(11));
        assert!(t.matches(&ok, '/', &mut c));
        assert_eq!(c.get("a"), Some("x"));
        assert_eq!(c.get("l"), Some("x"));
    }

    #[test]
    fn host_capture() {
        let t = Template::parse("desktop-{name}.hub.example.org").unwrap();
        let mut c = Captures::default();
        assert!(t.matches("desktop-alice.hub.example.org", '.', &mut c));
        assert_eq!(c.get("name"), Some("alice"));
        let mut c = Captures::default();
        assert!(!t.matches("desktop-a.b.hub.example.org", '.', &mut c));
        assert!(c.is_empty());
        assert!(!t.matches("desktop-.hub.example.org", '.', &mut c));
    }

    #[test]
    fn fill_and_errors() {
        let t = Template::parse("desktop-{name}").unwrap();
        let mut c = Captures::default();
        c.push("name", "bob");
        assert_eq!(t.fill(&c, |s| s.to_string()).unwrap(), "desktop-bob");
        assert!(Template::parse("a{b").is_err());
        assert!(Template::parse("{a}{b}").is_err());
        assert!(Template::parse("{a b}").is_err());
    }
}
