//! The architecture stays layered: every `crate::` import points down the declared layer
//! order below (or within its own folder), and no file imports its way back to itself.
//!
//! Every `crate::a::b::...` path (and `super::...`) in a file is resolved to the deepest
//! source file it names; `mod x;` declarations are containment, not imports. A circle, such
//! as config building domain types that import config's types back, fails with its files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file: `src/hub/admin.rs` -> [hub, admin]; `mod.rs` and
/// `lib.rs` name their folder.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Paths like `crate::control::admin_api::AdminApi` or `super::pattern::Captures` in `text`,
/// with `use crate::{a, b::c}` groups expanded one level.
fn paths_in(text: &str, module: &[String]) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    for start in ["crate::", "super::"] {
        let mut rest = code.as_str();
        while let Some(i) = rest.find(start) {
            let before = rest[..i].chars().last();
            rest = &rest[i + start.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let base: Vec<String> = if start == "crate::" {
                Vec::new()
            } else {
                // `super::*` is an inline test module's own file; other `super::` paths
                // name the parent module.
                if rest.starts_with('*') {
                    continue;
                }
                module[..module.len().saturating_sub(1)].to_vec()
            };
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let mut p = base.clone();
                    p.extend(segments(item.trim()));
                    out.push(p);
                }
                continue;
            }
            let mut p = base;
            p.extend(segments(rest));
            out.push(p);
        }
    }
    out
}

fn segments(text: &str) -> Vec<String> {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    text[..end]
        .split("::")
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn no_import_circle_among_source_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .filter(|f| !f.ends_with("main.rs"))
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let name = |f: &Path| f.strip_prefix(&src).unwrap().display().to_string();

    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        // `mod tests;` files are the module's own insides.
        let from = name(file);
        let own = edges.entry(from.clone()).or_default();
        for path in paths_in(&text, &module) {
            let target = (1..=path.len())
                .rev()
                .find_map(|n| modules.get(&path[..n]))
                .map(|f| name(f));
            if let Some(t) = target {
                let lib = t == "lib.rs";
                let test_of = t.ends_with("mod.rs") && from.ends_with("tests.rs");
                if t != from && !lib && !test_of {
                    own.insert(t);
                }
            }
        }
    }

    // Depth-first search for a back edge, reporting the circle it closes.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        circles: &mut Vec<Vec<String>>,
    ) {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                0 => visit(next, edges, state, stack, circles),
                1 => {
                    let at = stack.iter().position(|s| s == next).unwrap();
                    let mut circle = stack[at..].to_vec();
                    circle.push(next.clone());
                    circles.push(circle);
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    let mut circles = Vec::new();
    for node in edges.keys() {
        if state.get(node).copied().unwrap_or(0) == 0 {
            visit(node, &edges, &mut state, &mut Vec::new(), &mut circles);
        }
    }
    let report: Vec<String> = circles.iter().map(|c| c.join(" -> ")).collect();
    assert!(
        report.is_empty(),
        "import circles among src/ files:\n{}",
        report.join("\n")
    );
}

/// The layers of src/, lowest first. A folder may import its own files and any folder before
/// it; `config` is plain data (it sees only value types below it), `runtime` assembles the
/// running objects above the data plane (`edge`, `hub`), `control` drives them.
const LAYERS: [&str; 14] = [
    "support",   // secrets, the single-flight cache, plain responses
    "telemetry", // metrics, access log, open sessions, activity clocks
    "upstream",  // peers, TLS toward desktops, balancing, health checks
    "routing",   // the route table and matching; what a match asks of others, as traits
    "config",    // YAML -> the validated, plain model
    "import",    // other servers' configurations -> deskgate YAML text
    "tls",       // listener certificates by SNI, ACME challenge answers
    "acme",      // certificates from an ACME CA
    "edge",      // the Pingora ProxyHttp phases and what they call
    "hub",       // access checks, resolvers, runtime routes, Redis store, `deskgate chp`
    "runtime",   // a validated config -> the running objects (start-up and reload)
    "control",   // the admin API and page, reload
    "server",    // the Pingora server wired from a runtime
    "demo",      // the embedded demo and its desktop
];

#[test]
fn imports_point_down_the_declared_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let rank = |folder: &str| LAYERS.iter().position(|l| *l == folder);
    let mut upward = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some(own) = module.first() else {
            continue; // lib.rs
        };
        if file.ends_with("main.rs") {
            continue; // the binary: above every layer
        }
        let own_rank =
            rank(own).unwrap_or_else(|| panic!("src/{own} is in no layer: add it to LAYERS"));
        let text = std::fs::read_to_string(file).unwrap();
        for path in paths_in(&text, &module) {
            let Some(target) = path.first() else { continue };
            if let Some(r) = rank(target) {
                if r > own_rank {
                    upward.push(format!(
                        "{} imports crate::{} ({target} is above {own})",
                        file.strip_prefix(&src).unwrap().display(),
                        path.join("::"),
                    ));
                }
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(
        upward.is_empty(),
        "imports running up the layers ({}):\n{}",
        LAYERS.join(" < "),
        upward.join("\n")
    );
}

/// Only the edge answers requests: the layers it calls (the hub's access checks and resolvers
/// included) return what they decided, and the edge writes the response.
#[test]
fn only_the_edge_writes_responses() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut outside: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(src.join("edge")))
        .filter(|f| {
            let module = module_of(&src, f);
            let text = std::fs::read_to_string(f).unwrap();
            paths_in(&text, &module)
                .iter()
                .any(|p| p.starts_with(&["edge".to_string(), "respond".to_string()]))
        })
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    outside.sort();
    assert!(
        outside.is_empty(),
        "files outside src/edge/ import edge::respond:\n{}",
        outside.join("\n")
    );
}
