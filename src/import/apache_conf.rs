//! Apache 2.4 configuration as a tree: directives and sections with the file and line each
//! came from. `Include`/`IncludeOptional` are followed (relative to `ServerRoot`, with `*`
//! in the last component), `Define`/`${VAR}` substituted, `<IfModule>` and `<IfDefine>`
//! resolved (every module counts as loaded), continuation lines joined. What does not parse
//! is an error at `FILE:LINE`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Clone, Debug)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    /// The line as written (continuations joined), for comments in the output.
    pub text: String,
    pub at: Origin,
}

impl Directive {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    pub fn arg(&self, i: usize) -> &str {
        self.args.get(i).map_or("", String::as_str)
    }
}

#[derive(Clone, Debug)]
pub struct Section {
    pub name: String,
    /// Everything between the name and `>`, unsplit (`<If "%{HTTP_HOST} =~ /x/">`).
    pub args: String,
    pub children: Vec<Node>,
    pub at: Origin,
}

impl Section {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

#[derive(Clone, Debug)]
pub enum Node {
    Directive(Directive),
    Section(Section),
}

/// Sections a hub's vhosts use; any other `<Name>` is an error, not a silent drop.
const KNOWN_SECTIONS: [&str; 17] = [
    "VirtualHost",
    "IfModule",
    "IfDefine",
    "IfVersion",
    "If",
    "ElseIf",
    "Else",
    "Location",
    "LocationMatch",
    "Directory",
    "DirectoryMatch",
    "Files",
    "FilesMatch",
    "Proxy",
    "ProxyMatch",
    "Limit",
    "LimitExcept",
];

pub struct Parser {
    defines: HashMap<String, String>,
    server_root: Option<PathBuf>,
    /// Files being read, to refuse an Include loop.
    reading: Vec<PathBuf>,
}

/// Why the Apache files cannot be read: each names the `FILE:LINE` it is about.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{path}:1: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: cannot read included {path}: {source}")]
    ReadIncluded {
        at: Origin,
        path: PathBuf,
        source: std::io::Error,
    },
    /// `at` is the `Include` that reads `path` again (empty for a file given twice).
    #[error("{at}: includes {path} again (an Include loop)")]
    IncludeLoop { at: String, path: PathBuf },
    #[error("{at}: Include {path}: no such file")]
    NoSuchInclude { at: Origin, path: PathBuf },
    #[error("{at}: </{name}> closes <{open}> opened at {open_at}")]
    ClosesAnother {
        at: Origin,
        name: String,
        open: String,
        open_at: Origin,
    },
    #[error("{at}: </{name}> closes nothing")]
    ClosesNothing { at: Origin, name: String },
    #[error("{at}: <{open}> is not closed")]
    NotClosed { at: Origin, open: String },
    #[error("{at}: a section line ends with `>`: {text}")]
    SectionLine { at: Origin, text: String },
    #[error("{at}: unknown section <{name}>")]
    UnknownSection { at: Origin, name: String },
    #[error("{at}: unclosed {quote} quote in: {text}")]
    UnclosedQuote {
        at: Origin,
        quote: char,
        text: String,
    },
}

pub fn parse_files(files: &[PathBuf]) -> Result<Vec<Node>, ParseError> {
    let mut p = Parser {
        defines: HashMap::new(),
        server_root: None,
        reading: Vec::new(),
    };
    let mut nodes = Vec::new();
    for f in files {
        nodes.extend(p.file(f, None)?);
    }
    Ok(nodes)
}

struct Line {
    text: String,
    line: usize,
}

impl Parser {
    fn file(&mut self, path: &Path, included_at: Option<&Origin>) -> Result<Vec<Node>, ParseError> {
        let text = std::fs::read_to_string(path).map_err(|source| match included_at {
            Some(at) => ParseError::ReadIncluded {
                at: at.clone(),
                path: path.to_path_buf(),
                source,
            },
            None => ParseError::Read {
                path: path.to_path_buf(),
                source,
            },
        })?;
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if self.reading.contains(&canonical) {
            return Err(ParseError::IncludeLoop {
                at: included_at.map_or(String::new(), ToString::to_string),
                path: path.to_path_buf(),
            });
        }
        self.reading.push(canonical);
        let name = path.display().to_string();
        let lines = logical_lines(&text);
        let mut pos = 0;
        let nodes = self.block(&name, &lines, &mut pos, None)?;
        self.reading.pop();
        Ok(nodes)
    }

    /// Reads nodes until `</closing>` (or the end of the file when `closing` is None).
    fn block(
        &mut self,
        file: &str,
        lines: &[Line],
        pos: &mut usize,
        closing: Option<(&str, &Origin)>,
    ) -> Result<Vec<Node>, ParseError> {
        let mut nodes = Vec::new();
        while *pos < lines.len() {
            let l = &lines[*pos];
            *pos += 1;
            let at = Origin {
                file: file.to_string(),
                line: l.line,
            };
            let text = self.substitute(&l.text);
            if let Some(rest) = text.strip_prefix("</") {
                let name = rest.trim_end_matches('>').trim().to_string();
                return match closing {
                    Some((open, _)) if open.eq_ignore_ascii_case(&name) => Ok(nodes),
                    Some((open, open_at)) => Err(ParseError::ClosesAnother {
                        at,
                        name,
                        open: open.to_string(),
                        open_at: open_at.clone(),
                    }),
                    None => Err(ParseError::ClosesNothing { at, name }),
                };
            }
            if let Some(rest) = text.strip_prefix('<') {
                let Some(inner) = rest.trim_end().strip_suffix('>') else {
                    return Err(ParseError::SectionLine { at, text });
                };
                let (name, args) = match inner.find(char::is_whitespace) {
                    Some(i) => (&inner[..i], inner[i..].trim()),
                    None => (inner, ""),
                };
                if !KNOWN_SECTIONS.iter().any(|k| k.eq_ignore_ascii_case(name)) {
                    return Err(ParseError::UnknownSection {
                        at,
                        name: name.to_string(),
                    });
                }
                let children = self.block(file, lines, pos, Some((name, &at)))?;
                let section = Section {
                    name: name.to_string(),
                    args: args.to_string(),
                    children,
                    at,
                };
                nodes.extend(self.resolve_conditional(section));
                continue;
            }
            let args = split_args(&text).map_err(|quote| ParseError::UnclosedQuote {
                at: at.clone(),
                quote,
                text: text.clone(),
            })?;
            let Some((name, args)) = args.split_first() else {
                continue;
            };
            let d = Directive {
                name: name.clone(),
                args: args.to_vec(),
                text: shown_text(name, args, &text),
                at,
            };
            if d.is("Define") {
                if let Some(var) = d.args.first() {
                    self.defines.insert(var.clone(), d.arg(1).to_string());
                }
            } else if d.is("UnDefine") {
                self.defines.remove(d.arg(0));
            } else if d.is("ServerRoot") {
                self.server_root = Some(PathBuf::from(d.arg(0)));
                nodes.push(Node::Directive(d));
            } else if d.is("Include") || d.is("IncludeOptional") {
                nodes.extend(self.include(&d)?);
            } else {
                nodes.push(Node::Directive(d));
            }
        }
        match closing {
            Some((open, open_at)) => Err(ParseError::NotClosed {
                at: open_at.clone(),
                open: open.to_string(),
            }),
            None => Ok(nodes),
        }
    }

    /// `<IfModule>` keeps its contents (every module counts as loaded) unless negated;
    /// `<IfDefine>` follows `Define`; other sections stay.
    fn resolve_conditional(&self, s: Section) -> Vec<Node> {
        let arg = s.args.trim();
        if s.is("IfModule") || s.is("IfVersion") {
            return if arg.starts_with('!') {
                Vec::new()
            } else {
                s.children
            };
        }
        if s.is("IfDefine") {
            let (negated, name) = match arg.strip_prefix('!') {
                Some(n) => (true, n),
                None => (false, arg),
            };
            return if self.defines.contains_key(name) != negated {
                s.children
            } else {
                Vec::new()
            };
        }
        vec![Node::Section(s)]
    }

    fn include(&mut self, d: &Directive) -> Result<Vec<Node>, ParseError> {
        let optional = d.is("IncludeOptional");
        let raw = PathBuf::from(d.arg(0));
        let path = if raw.is_absolute() {
            raw
        } else {
            let root = self.server_root.clone().unwrap_or_else(|| {
                Path::new(&d.at.file)
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
            });
            root.join(raw)
        };
        let files = expand(&path);
        if files.is_empty() && !optional {
            return Err(ParseError::NoSuchInclude {
                at: d.at.clone(),
                path,
            });
        }
        let mut nodes = Vec::new();
        for f in files {
            nodes.extend(self.file(&f, Some(&d.at))?);
        }
        Ok(nodes)
    }

    /// `${VAR}` of a `Define`d name; other `${...}` (RewriteMap lookups) stay.
    fn substitute(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            match after.find('}') {
                Some(end) if self.defines.contains_key(&after[..end]) => {
                    out.push_str(&self.defines[&after[..end]]);
                    rest = &after[end + 1..];
                }
                _ => {
                    out.push_str("${");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Lines with continuations (`\` at the end) joined, comments and blanks dropped.
fn logical_lines(text: &str) -> Vec<Line> {
    let mut out = Vec::new();
    let mut pending: Option<Line> = None;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        let (piece, continues) = match trimmed.strip_suffix('\\') {
            Some(p) => (p.trim_end(), true),
            None => (trimmed, false),
        };
        let line = match pending.take() {
            Some(mut p) => {
                p.text.push(' ');
                p.text.push_str(piece);
                p
            }
            None => Line {
                text: piece.to_string(),
                line: i + 1,
            },
        };
        if continues {
            pending = Some(line);
        } else if !line.text.is_empty() && !line.text.starts_with('#') {
            out.push(line);
        }
    }
    if let Some(p) = pending {
        out.push(p);
    }
    out
}

/// Apache's argument splitting: whitespace-separated, `"..."` and `'...'` quoted with `\`
/// escapes. Err: the quote left open.
fn split_args(text: &str) -> Result<Vec<String>, char> {
    let mut args = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut arg = String::new();
        if c == '"' || c == '\'' {
            chars.next();
            let mut closed = false;
            while let Some(ch) = chars.next() {
                if ch == '\\' {
                    if let Some(&next) = chars.peek() {
                        if next == c || next == '\\' {
                            arg.push(next);
                            chars.next();
                            continue;
                        }
                    }
                    arg.push(ch);
                } else if ch == c {
                    closed = true;
                    break;
                } else {
                    arg.push(ch);
                }
            }
            if !closed {
                return Err(c);
            }
        } else {
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                arg.push(ch);
                chars.next();
            }
        }
        args.push(arg);
    }
    Ok(args)
}

/// A path with `*`/`?` in its last component, as the files it names (sorted), or itself.
fn expand(path: &Path) -> Vec<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            return files;
        }
        return if path.exists() {
            vec![path.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| wildcard(&name, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// `*` and `?` as in a shell; also used for `ServerAlias desktop-*.hub.example.org`.
pub fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether a header carries a credential: its value must never be shown (comments, reports).
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "x-api-key"
    ) || n.ends_with("token")
        || n.ends_with("key")
        || n.ends_with("secret")
        || n.contains("password")
}

/// A URL's `user:password@` (or `token@`), if any: `http://u:p@h/` -> `Some("u:p")`.
pub fn userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority.rfind('@').map(|i| &authority[..i])
}

/// The line as it may be shown: the value of a credential-carrying header (`RequestHeader set
/// Authorization "Basic ..."`, `Header ... X-Api-Key ...`), any `Basic`/`Bearer` value and a URL's
/// `user:password@` replaced by `...`. Conversion reads `args`; only this text is ever printed.
fn shown_text(name: &str, args: &[String], text: &str) -> String {
    let header_directive =
        name.eq_ignore_ascii_case("RequestHeader") || name.eq_ignore_ascii_case("Header");
    // `Header [always|onsuccess] action NAME ...`: the header name follows the action.
    let name_at = args
        .iter()
        .position(|a| !matches!(a.to_ascii_lowercase().as_str(), "always" | "onsuccess"))
        .map(|i| i + 1);
    let secret_header = header_directive
        && name_at
            .and_then(|i| args.get(i))
            .is_some_and(|h| is_secret_header(h));
    let mut changed = false;
    let shown: Vec<String> = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let lower = a.to_ascii_lowercase();
            let credential = lower.starts_with("basic ") || lower.starts_with("bearer ");
            if (secret_header && name_at.is_some_and(|n| i > n)) || credential {
                changed = true;
                return "...".to_string();
            }
            let mut a = a.clone();
            while let Some(info) = userinfo(&a).filter(|i| *i != "...") {
                let info = info.to_string();
                a = a.replacen(&format!("{info}@"), "...@", 1);
                changed = true;
            }
            a
        })
        .collect();
    if !changed {
        return text.to_string();
    }
    std::iter::once(name.to_string())
        .chain(shown.into_iter().map(|a| {
            if a.contains(char::is_whitespace) || a.is_empty() {
                format!("\"{a}\"")
            } else {
                a
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Node>, String> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("site.conf");
        std::fs::write(&f, text).unwrap();
        parse_files(&[f]).map_err(|e| {
            e.to_string()
                .replace(&dir.path().display().to_string(), "DIR")
        })
    }

    #[test]
    fn sections_continuations_defines_and_quotes() {
        let nodes = parse(
            "Define HUB hub:5020\n<IfModule mod_ssl.c>\n<VirtualHost *:443>\n  ServerName hub.test\n  ProxyPass / \\\n    http://${HUB}/ upgrade=websocket\n  RequestHeader set X-A \"two words\"\n</VirtualHost>\n</IfModule>\n<IfModule !mod_ssl.c>\nListen 80\n</IfModule>\n",
        )
        .unwrap();
        assert_eq!(nodes.len(), 1);
        let Node::Section(vh) = &nodes[0] else {
            panic!()
        };
        assert_eq!(
            (vh.name.as_str(), vh.args.as_str(), vh.at.line),
            ("VirtualHost", "*:443", 3)
        );
        let Node::Directive(pp) = &vh.children[1] else {
            panic!()
        };
        assert_eq!(pp.args, ["/", "http://hub:5020/", "upgrade=websocket"]);
        assert_eq!(pp.at.line, 5);
        let Node::Directive(rh) = &vh.children[2] else {
            panic!()
        };
        assert_eq!(rh.args, ["set", "X-A", "two words"]);
    }

    #[test]
    fn bad_input_names_file_and_line() {
        let e = parse("<VirtualHost *:80>\n  ServerName a\n").unwrap_err();
        assert_eq!(e, "DIR/site.conf:1: <VirtualHost> is not closed");
        let e = parse("<Frobnicate x>\n</Frobnicate>\n").unwrap_err();
        assert_eq!(e, "DIR/site.conf:1: unknown section <Frobnicate>");
        let e = parse("<VirtualHost *:80>\n</Location>\n").unwrap_err();
        assert!(
            e.starts_with("DIR/site.conf:2: </Location> closes <VirtualHost>"),
            "{e}"
        );
    }

    #[test]
    fn includes_follow_server_root_and_wildcards() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sites")).unwrap();
        std::fs::write(dir.path().join("sites/a.conf"), "ServerAdmin a@x\n").unwrap();
        std::fs::write(dir.path().join("sites/b.conf"), "ServerAdmin b@x\n").unwrap();
        let main = dir.path().join("apache2.conf");
        std::fs::write(
            &main,
            format!(
                "ServerRoot {}\nInclude sites/*.conf\nIncludeOptional missing/*.conf\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let nodes = parse_files(&[main]).unwrap();
        let admins: Vec<_> = nodes
            .iter()
            .filter_map(|n| match n {
                Node::Directive(d) if d.is("ServerAdmin") => Some(d.arg(0).to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(admins, ["a@x", "b@x"]);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("desktop-*.hub.test", "desktop-alice.hub.test"));
        assert!(!wildcard("desktop-*.hub.test", "hub.test"));
        assert!(wildcard("*.conf", "a.conf"));
    }
}
