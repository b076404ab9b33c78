//! Positions of YAML nodes, so semantic errors (an unknown upstream, a duplicate route, an
//! unreadable certificate) can name `FILE:LINE:COL` like the syntax errors serde_yaml reports.
//!
//! Paths look like `routes[2].upstream` or `upstreams.hub.servers[0]`.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

#[derive(Default)]
pub struct SpanIndex {
    positions: HashMap<String, Position>,
}

impl SpanIndex {
    pub fn parse(text: &str) -> SpanIndex {
        let mut builder = Builder::default();
        // Syntax errors are reported by serde_yaml with their own position; here a failed
        // parse only means fewer known positions.
        let _ = Parser::new_from_str(text).load(&mut builder, false);
        SpanIndex {
            positions: builder.positions,
        }
    }

    /// Position of the node at `path`, or of its closest known ancestor.
    pub fn find(&self, path: &str) -> Position {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => {
                    return self
                        .positions
                        .get("")
                        .copied()
                        .unwrap_or(Position { line: 1, column: 1 })
                }
            }
        }
    }
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<String, Position>,
}

impl Builder {
    /// The path of the node that starts now; for a mapping key, `None` (keys are not nodes).
    fn next_node_path(&mut self, scalar: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                None => {
                    *pending_key = Some(scalar.unwrap_or("?").to_string());
                    None
                }
                Some(key) => Some(if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                }),
            },
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
        }
    }

    fn record(&mut self, path: &str, mark: Marker) {
        self.positions.entry(path.to_string()).or_insert(Position {
            line: mark.line(),
            column: mark.col() + 1,
        });
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                let is_key = matches!(
                    self.stack.last(),
                    Some(Frame::Map {
                        pending_key: None,
                        ..
                    })
                );
                if is_key {
                    // A mapping is pointed at by its first key; a key with a non-scalar value
                    // (a nested block) is pointed at by the key itself.
                    if let Some(Frame::Map { path, .. }) = self.stack.last() {
                        let map_path = path.clone();
                        let key_path = if map_path.is_empty() {
                            value.clone()
                        } else {
                            format!("{map_path}.{value}")
                        };
                        self.record(&map_path, mark);
                        self.record(&key_path, mark);
                    }
                    self.next_node_path(Some(&value));
                } else if let Some(p) = self.next_node_path(Some(&value)) {
                    // Scalar values are pointed at exactly.
                    self.positions.insert(
                        p,
                        Position {
                            line: mark.line(),
                            column: mark.col() + 1,
                        },
                    );
                }
            }
            Event::Alias(_) => {
                if let Some(p) = self.next_node_path(None) {
                    self.record(&p, mark);
                }
            }
            Event::MappingStart(..) => {
                let p = self.next_node_path(None).unwrap_or_default();
                self.stack.push(Frame::Map {
                    path: p,
                    pending_key: None,
                });
            }
            Event::SequenceStart(..) => {
                let p = self.next_node_path(None).unwrap_or_default();
                self.record(&p, mark);
                self.stack.push(Frame::Seq { path: p, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_positions() {
        let idx = SpanIndex::parse("a:\n  - x: 1\n    y: [2, 3]\n");
        assert_eq!(idx.find("a[0].x"), Position { line: 2, column: 8 });
        assert_eq!(idx.find("a[0]"), Position { line: 2, column: 5 });
        assert_eq!(idx.find("a[0].nope"), Position { line: 2, column: 5 });
        assert_eq!(
            idx.find("a[0].y[1]"),
            Position {
                line: 3,
                column: 12
            }
        );
    }
}
