//! Rules read off the source and the docs.
//!
//! The layers: the pure core (what decides, and what it decides on: [`CORE`]) imports
//! no edge module ([`EDGES`]: settings, storage, the broker, processes, HTTP) and no
//! crate that does I/O or belongs to a process ([`IO_CRATES`]), not even through
//! another module; and no module of the library imports one that imports it back.
//! Reads `src/` the way a reader does: a module's imports are its `crate::…` and
//! `super::…` paths outside comments and its tests, resolved to the longest module
//! they name.
//!
//! No SQL is built from a runtime string, and every test docs/THREATS.md names exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `checks/device.rs` is `checks::device`, `checks/mod.rs` is `checks`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [one] if one == "lib" || one == "main" => None,
        _ => Some(parts.join("::")),
    }
}

/// Every `prefix` path in `code`, with the names of a `prefix{a, b::c}` group expanded.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        if code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let path = path.trim_end_matches(':').to_owned();
        let after = &rest[path.len()..];
        let group = match after.strip_prefix("::{") {
            Some(g) => Some(g),
            None if path.is_empty() => after.strip_prefix('{'),
            None => None,
        };
        match group {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                for name in group.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let name = name.split_whitespace().next().unwrap_or("");
                    out.push(if path.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{path}::{name}")
                    });
                }
            }
            None => out.push(path),
        }
    }
    out
}

/// The pure core: every decision that moves the ledger, and the data it decides on.
const CORE: [&str; 13] = [
    "ids", "record", "outcome", "rules", "checks", "stats", "points", "sampling", "decide", "case",
    "events", "review", "view",
];

/// The edges: settings, storage, the broker, the processes, HTTP, and the commands
/// that read and write folders.
const EDGES: [&str; 12] = [
    "settings",
    "store",
    "kafka",
    "objects",
    "pipeline",
    "web",
    "telemetry",
    "reference",
    "audit",
    "report",
    "submit",
    "dlq",
];

/// Crates that do I/O or belong to a process.
const IO_CRATES: [&str; 10] = [
    "sqlx",
    "rdkafka",
    "aws_sdk_s3",
    "aws_config",
    "aws_smithy_types",
    "reqwest",
    "axum",
    "tokio",
    "tower_sessions",
    "clap",
];

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// Every module's code outside comments and its tests, by module path.
fn sources(src: &Path) -> BTreeMap<String, (PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files
        .iter()
        .filter_map(|f| {
            let module = module_of(src, f)?;
            let text = std::fs::read_to_string(f).unwrap();
            let code: String = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or("")
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            Some((module, (f.clone(), code)))
        })
        .collect()
}

/// Where the core breaks its boundary: a core module that imports an edge module,
/// directly or through any other module (with the path), or names an I/O crate.
fn core_breaches(
    edges: &BTreeMap<String, BTreeSet<String>>,
    code: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for module in edges.keys().filter(|m| CORE.contains(&top(m))) {
        // Breadth first, so the path reported is a shortest one.
        let mut via: BTreeMap<String, String> = BTreeMap::new();
        let mut todo = std::collections::VecDeque::from([module.clone()]);
        while let Some(m) = todo.pop_front() {
            for n in edges.get(&m).into_iter().flatten() {
                if n != module && !via.contains_key(n) {
                    via.insert(n.clone(), m.clone());
                    todo.push_back(n.clone());
                }
            }
        }
        for (reached, _) in via.iter().filter(|(n, _)| EDGES.contains(&top(n))) {
            let mut path = vec![reached.clone()];
            while let Some(prev) = via.get(path.last().unwrap()) {
                if prev == module {
                    break;
                }
                path.push(prev.clone());
            }
            path.push(module.clone());
            path.reverse();
            out.push(format!("{module} reaches the edge: {}", path.join(" -> ")));
        }
        let text = code.get(module).map(String::as_str).unwrap_or("");
        for krate in IO_CRATES {
            let named = text.match_indices(&format!("{krate}::")).any(|(at, _)| {
                !text[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            });
            if named {
                out.push(format!("{module} names the crate {krate}"));
            }
        }
    }
    out
}

fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let sources = sources(src);
    let code: BTreeMap<String, String> = sources
        .iter()
        .map(|(m, (_, c))| (m.clone(), c.clone()))
        .collect();
    imports_of(&code, &sources)
}

fn imports_of(
    code: &BTreeMap<String, String>,
    sources: &BTreeMap<String, (PathBuf, String)>,
) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeMap<String, PathBuf> = sources
        .iter()
        .map(|(m, (f, _))| (m.clone(), f.clone()))
        .collect();
    let resolve = |path: &str| {
        let segs: Vec<&str> = path.split("::").collect();
        (1..=segs.len())
            .rev()
            .map(|i| segs[..i].join("::"))
            .find(|m| modules.contains_key(m))
    };
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let code = &code[module];
        let parent = {
            let mut p: Vec<&str> = module.split("::").collect();
            if !file.ends_with("mod.rs") {
                p.pop();
            }
            p.join("::")
        };
        let mut to = BTreeSet::new();
        for p in paths_after(code, "crate::") {
            to.extend(resolve(&p));
        }
        for p in paths_after(code, "super::") {
            let full = if parent.is_empty() {
                p
            } else {
                format!("{parent}::{p}")
            };
            to.extend(resolve(&full));
        }
        to.remove(module);
        edges.insert(module.clone(), to);
    }
    edges
}

/// Pairs of modules that import each other, directly or through others.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<(String, String)> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_owned()];
        while let Some(m) = todo.pop() {
            for n in edges.get(&m).into_iter().flatten() {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let mut out = Vec::new();
    for a in edges.keys() {
        for b in reach(a) {
            if a < &b && reach(&b).contains(a) {
                out.push((a.clone(), b));
            }
        }
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = imports(&src);
    assert!(edges.len() > 30, "read only {} modules", edges.len());
    // The reader sees what it must: the audit uses the case core and the report.
    assert!(edges["audit"].contains("case") && edges["audit"].contains("report"));
    assert_eq!(cycles(&edges), Vec::<(String, String)>::new());
}

#[test]
fn the_core_imports_no_edge_and_no_io_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let code: BTreeMap<String, String> = sources(&src)
        .into_iter()
        .map(|(m, (_, c))| (m, c))
        .collect();
    let edges = imports(&src);
    // Every core module and edge named is one the source has.
    for name in CORE.iter().chain(&EDGES) {
        assert!(edges.contains_key(*name), "no module {name}");
    }
    assert_eq!(core_breaches(&edges, &code), Vec::<String>::new());
}

/// What `lib.rs`'s module map says: every top-level module it links (`[`name`]`), and
/// those its core section links, from the section's heading to the next.
fn module_map(lib: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let links = |text: &str| -> BTreeSet<String> {
        text.split("[`")
            .skip(1)
            .filter_map(|s| s.split_once("`]").map(|(name, _)| name.to_owned()))
            .filter(|name| !name.contains("::"))
            .collect()
    };
    let doc: String = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let core = doc
        .split_once("## The core")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .unwrap_or("");
    (links(&doc), links(core))
}

/// `lib.rs` lists every module as it is, and names the core layer exactly as this test
/// enforces it: a module added, moved or dropped from the core must say so there too.
#[test]
fn lib_rs_maps_every_module_and_names_the_core() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect();
    assert!(declared.len() > 20, "{declared:?}");
    let (mapped, core) = module_map(&lib);
    let unmapped: Vec<_> = declared.difference(&mapped).collect();
    assert!(unmapped.is_empty(), "lib.rs's map misses {unmapped:?}");
    let want: BTreeSet<String> = CORE.iter().map(|m| (*m).to_owned()).collect();
    assert_eq!(core, want, "lib.rs's core section against CORE");
    // The reader reads what it must: a core section that names an edge is caught.
    let planted = "//! ## The core\n//! - [`ids`] and [`store`]\n//! ## Edges\n//! - [`web`]";
    let (all, core) = module_map(planted);
    assert_eq!(all.len(), 3);
    assert_eq!(core.into_iter().collect::<Vec<_>>(), ["ids", "store"]);
}

#[test]
fn the_boundary_check_finds_an_edge_import_a_path_to_one_and_an_io_crate() {
    let set = |xs: &[&str]| xs.iter().map(|x| (*x).to_owned()).collect::<BTreeSet<_>>();
    let mut edges = BTreeMap::new();
    edges.insert("sampling".to_owned(), set(&["settings"]));
    edges.insert("case".to_owned(), set(&["hashing"]));
    edges.insert("hashing".to_owned(), set(&["store::review"]));
    edges.insert("review::trail".to_owned(), set(&["ids"]));
    edges.insert("ids".to_owned(), set(&[]));
    edges.insert("settings".to_owned(), set(&[]));
    edges.insert("store::review".to_owned(), set(&["case"]));
    let code = BTreeMap::from([
        (
            "review::trail".to_owned(),
            "#[derive(clap::ValueEnum)] enum A {} fn f() { my_tokio::x(); }".to_owned(),
        ),
        ("ids".to_owned(), "fn f() {}".to_owned()),
    ]);
    let found = core_breaches(&edges, &code);
    assert_eq!(
        found,
        [
            "case reaches the edge: case -> hashing -> store::review",
            "review::trail names the crate clap",
            "sampling reaches the edge: sampling -> settings",
        ]
    );
}

#[test]
fn the_reader_finds_a_cycle_when_there_is_one() {
    let mut edges = BTreeMap::new();
    let set = |xs: &[&str]| xs.iter().map(|x| (*x).to_owned()).collect::<BTreeSet<_>>();
    edges.insert("audit".to_owned(), set(&["report", "case"]));
    edges.insert("report".to_owned(), set(&["checks"]));
    edges.insert("checks".to_owned(), set(&["audit"]));
    edges.insert("case".to_owned(), set(&[]));
    let found = cycles(&edges);
    assert!(
        found.contains(&("audit".to_owned(), "report".to_owned())),
        "{found:?}"
    );
    assert!(!found.iter().any(|(a, b)| a == "case" || b == "case"));
    assert_eq!(
        paths_after("use crate::{audit::Folder, report};", "crate::"),
        ["audit::Folder", "report"]
    );
    assert_eq!(
        paths_after("x(crate::case::{self, History}); notcrate::y", "crate::"),
        ["case::self", "case::History"]
    );
}

/// The ways past sqlx 0.9's `SqlSafeStr`, which takes only a `&'static str` as SQL text:
/// a string asserted safe, a leaked one, raw or built SQL.
const SQL_ESCAPES: [&str; 6] = [
    "AssertSqlSafe",
    "raw_sql",
    "QueryBuilder",
    "SqlStr",
    "Box::leak",
    ".leak()",
];

/// Where a source text uses one of [`SQL_ESCAPES`]: `file:line: text`.
fn sql_escapes(file: &str, text: &str) -> Vec<String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter(|(_, l)| SQL_ESCAPES.iter().any(|e| l.contains(e)))
        .map(|(i, l)| format!("{file}:{}: {}", i + 1, l.trim()))
        .collect()
}

/// Every query the library and the workers send is a literal (made with `concat!` where
/// it is long) with its values bound: nothing a miner or a staff member sends can become
/// SQL. The compiler holds `sqlx::query` to `&'static str`; this holds the code to the
/// compiler's way.
#[test]
fn no_sql_is_built_from_a_runtime_string() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("workers"), &mut files);
    assert!(files.len() > 20, "{} files", files.len());
    // The files that talk to the database (a leaked font in the plotting code is no
    // SQL).
    let found: Vec<String> = files
        .iter()
        .map(|f| (f, std::fs::read_to_string(f).unwrap()))
        .filter(|(_, text)| text.contains("sqlx"))
        .flat_map(|(f, text)| sql_escapes(&f.display().to_string(), &text))
        .collect();
    assert!(found.is_empty(), "SQL built at run time: {found:#?}");
    // The scan finds what it looks for.
    let planted = "let q = sqlx::query(sqlx::AssertSqlSafe(format!(\"SELECT {x}\")));";
    assert!(
        files
            .iter()
            .filter(|f| std::fs::read_to_string(f).unwrap().contains("sqlx"))
            .count()
            >= 2
    );
    assert_eq!(sql_escapes("planted.rs", planted).len(), 1);
}

/// Every test docs/THREATS.md names as a defence's proof (`tests/x.rs::name`,
/// `src/…/x.rs::name`) is a test function in that file: a renamed or deleted test
/// cannot leave the threat model pointing at nothing.
#[test]
fn every_test_threats_md_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/THREATS.md")).unwrap();
    let mut named = BTreeSet::new();
    for piece in doc.split('`') {
        let Some((file, test)) = piece.split_once("::") else {
            continue;
        };
        if (file.starts_with("tests/") || file.starts_with("src/"))
            && file.ends_with(".rs")
            && test
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            named.insert((file.to_owned(), test.to_owned()));
        }
    }
    assert!(named.len() >= 60, "only {} tests named", named.len());
    let mut missing = Vec::new();
    for (file, test) in &named {
        let text = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        let defined = text
            .match_indices(&format!("fn {test}("))
            .any(|(at, _)| text[..at].rsplit('\n').take(4).any(|l| l.contains("test")));
        if !defined {
            missing.push(format!("{file}::{test}"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/THREATS.md names tests that do not exist: {missing:#?}"
    );
}
