//! YAML for people: a document serialized by serde_yaml (so it says exactly what the config
//! types say), with comments placed above the items they explain.
//!
//! serde_yaml writes no comments. Each commented item is serialized on its own as well; its
//! text is then found, indented, in the whole document (in document order, each after the
//! previous one's first line, so an item inside another is found inside it) and its comments
//! go above it at its indentation. Comments only ever add whole lines, so the document means
//! what serde_yaml wrote; `write` checks that by reading it back (and refuses otherwise).

use serde::Serialize;
use std::collections::BTreeMap;

/// An item of the document and the comments that go above it.
pub struct Anchor {
    /// The item as serde_yaml writes it on its own (`- a: 1\n  b: 2` or `key: value`).
    lines: Vec<String>,
    /// A map entry (`key: ...`): a `- ` line at its indentation after it is still its value.
    entry: bool,
    comments: Vec<String>,
}

impl Anchor {
    /// An element of a sequence (a listener, a route, a certificate, a removed header).
    pub fn item<T: Serialize>(
        item: &T,
        comments: Vec<String>,
    ) -> Result<Anchor, serde_yaml::Error> {
        Ok(Anchor {
            lines: lines_of(&serde_yaml::to_string(&[item])?),
            entry: false,
            comments,
        })
    }

    /// Entries of a mapping, as a struct with only them set writes them (a timeout, the
    /// `remove:` list): the field names come from the type, not from the caller.
    pub fn fields<T: Serialize>(
        part: &T,
        comments: Vec<String>,
    ) -> Result<Anchor, serde_yaml::Error> {
        Ok(Anchor {
            lines: lines_of(&serde_yaml::to_string(part)?),
            entry: true,
            comments,
        })
    }

    /// An entry of a mapping keyed by data (an upstream by name, an added header).
    pub fn entry<V: Serialize>(
        key: &str,
        value: &V,
        comments: Vec<String>,
    ) -> Result<Anchor, serde_yaml::Error> {
        Ok(Anchor {
            lines: lines_of(&serde_yaml::to_string(&BTreeMap::from([(key, value)]))?),
            entry: true,
            comments,
        })
    }
}

fn lines_of(text: &str) -> Vec<String> {
    text.lines().map(str::to_string).collect()
}

/// `doc` as YAML: `header` as comment lines at the top (an empty one is a bare `#`), a blank
/// line before each top-level key, and each anchor's comments above its item. Anchors must
/// come in document order.
pub fn write<T: Serialize>(
    doc: &T,
    header: &[String],
    anchors: &[Anchor],
) -> Result<String, serde_yaml::Error> {
    let plain = serde_yaml::to_string(doc)?;
    let lines: Vec<&str> = plain.lines().collect();
    let mut above: Vec<Vec<String>> = vec![Vec::new(); lines.len()];
    let mut lost = Vec::new();
    let mut from = 0;
    for a in anchors.iter().filter(|a| !a.comments.is_empty()) {
        match find(&lines, from, a) {
            Some((at, indent)) => {
                above[at].extend(a.comments.iter().map(|c| comment(indent, c)));
                from = at + 1;
            }
            // Not expected (every anchor is serialized from the same values); the comments
            // still reach the operator, at the top.
            None => lost.extend(a.comments.iter().map(|c| comment(0, c))),
        }
    }
    let mut out = String::new();
    for h in header {
        out.push_str(&comment(0, h));
        out.push('\n');
    }
    for l in &lost {
        out.push_str(l);
        out.push('\n');
    }
    for (line, comments) in lines.iter().zip(above) {
        if indent_of(line) == 0 && !line.starts_with("- ") && !out.is_empty() {
            out.push('\n');
        }
        for c in comments {
            out.push_str(&c);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    // A comment line inside a block scalar would be text, not a comment: never written.
    let read_back: serde_yaml::Value = serde_yaml::from_str(&out)?;
    if read_back != serde_yaml::from_str::<serde_yaml::Value>(&plain)? {
        return Err(serde::de::Error::custom(
            "the comments changed what the YAML says",
        ));
    }
    Ok(out)
}

fn comment(indent: usize, text: &str) -> String {
    let pad = " ".repeat(indent);
    if text.is_empty() {
        format!("{pad}#")
    } else {
        format!("{pad}# {text}")
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// The first line at or after `from` where the anchor's whole item stands (every line at one
/// indentation, and the next line no longer part of it), with that indentation.
fn find(lines: &[&str], from: usize, a: &Anchor) -> Option<(usize, usize)> {
    let first = a.lines.first()?;
    (from..lines.len()).find_map(|at| {
        let indent = lines[at].strip_suffix(first.as_str())?.len();
        let pad = " ".repeat(indent);
        if lines[at] != format!("{pad}{first}") {
            return None;
        }
        let all = a.lines.iter().enumerate().all(|(i, l)| {
            lines
                .get(at + i)
                .is_some_and(|got| got.strip_prefix(&pad) == Some(l.as_str()))
        });
        let ends = lines.get(at + a.lines.len()).is_none_or(|next| {
            indent_of(next) < indent
                || (indent_of(next) == indent && !(a.entry && next[indent..].starts_with("- ")))
        });
        (all && ends).then_some((at, indent))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Item {
        name: String,
        tags: Vec<String>,
    }

    #[derive(Serialize)]
    struct Doc {
        items: Vec<Item>,
        limits: BTreeMap<String, u32>,
    }

    fn item(name: &str) -> Item {
        Item {
            name: name.into(),
            tags: vec!["t".into()],
        }
    }

    #[test]
    fn comments_go_above_their_items_and_the_yaml_is_unchanged() {
        let doc = Doc {
            // The same text twice: each comment must go above its own item.
            items: vec![item("a"), item("a"), item("b")],
            limits: BTreeMap::from([("x".to_string(), 1), ("y".to_string(), 2)]),
        };
        let anchors = [
            Anchor::item(&doc.items[0], vec!["first".into()]).unwrap(),
            Anchor::item(&doc.items[1], vec!["second".into()]).unwrap(),
            Anchor::item(&doc.items[2], vec!["third".into(), "".into()]).unwrap(),
            Anchor::entry("y", &2, vec!["why y".into()]).unwrap(),
        ];
        let text = write(&doc, &["top".into(), "".into()], &anchors).unwrap();
        assert_eq!(
            text,
            "# top\n#\n\nitems:\n# first\n- name: a\n  tags:\n  - t\n# second\n- name: a\n  tags:\n  - t\n\
             # third\n#\n- name: b\n  tags:\n  - t\n\nlimits:\n  x: 1\n  # why y\n  y: 2\n"
        );
    }

    #[test]
    fn a_comment_that_would_land_inside_a_text_is_refused() {
        // An item's own text inside a multi-line string: a comment there would be content.
        let doc = Doc {
            items: vec![item("a\n- name: b\n  tags:\n  - t"), item("b")],
            limits: BTreeMap::new(),
        };
        let anchors = [Anchor::item(&doc.items[1], vec!["b".into()]).unwrap()];
        let e = write(&doc, &[], &anchors).unwrap_err();
        assert!(
            e.to_string()
                .contains("the comments changed what the YAML says"),
            "{e}"
        );
    }

    #[test]
    fn an_item_is_not_found_in_a_longer_one() {
        let lines = [
            "- name: a",
            "  tags:",
            "  - t",
            "  more: 1",
            "- name: a",
            "  tags:",
            "  - t",
        ];
        let a = Anchor::item(&item("a"), vec!["c".into()]).unwrap();
        assert_eq!(find(&lines, 0, &a), Some((4, 0)));
    }
}
