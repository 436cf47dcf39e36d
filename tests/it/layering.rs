//! The layering, checked on the source text: SQL and rusqlite live below `src/store` only;
//! `store` knows nothing above it; `domain` is pure; actix stays in `http`. A change that
//! breaks a rule fails here, naming the file and line.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Lines of code (comments and doc comments aside) of every file below `src/`, by path
/// relative to `src/`.
fn code() -> Vec<(String, usize, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut out = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if !t.starts_with("//") {
                out.push((rel.clone(), i + 1, line.to_string()));
            }
        }
    }
    out
}

/// Where a file breaks a rule: `file:line: text`.
fn breaches(in_scope: impl Fn(&str) -> bool, bad: &[&str]) -> Vec<String> {
    code()
        .into_iter()
        .filter(|(f, _, _)| in_scope(f))
        .filter(|(_, _, l)| bad.iter().any(|b| l.contains(b)))
        .map(|(f, n, l)| format!("src/{f}:{n}: {}", l.trim()))
        .collect()
}

const SQL: &[&str] = &[
    "rusqlite",
    "SELECT ",
    "INSERT INTO",
    "UPDATE ",
    "DELETE FROM",
    "PRAGMA",
    "SAVEPOINT",
    "CREATE TABLE",
    "CREATE INDEX",
    "execute_batch",
    "query_row",
    ".prepare(",
];

#[test]
fn sql_and_rusqlite_appear_only_below_src_store() {
    // The binary's entry point names no SQL either; `alloc_journal` is process plumbing.
    let found = breaches(|f| !f.starts_with("store/"), SQL);
    assert!(
        found.is_empty(),
        "SQL outside src/store:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_store_knows_nothing_above_it() {
    let found = breaches(
        |f| f.starts_with("store/"),
        &[
            "crate::engine",
            "crate::http",
            "crate::metrics",
            "crate::tools",
            "actix",
        ],
    );
    assert!(found.is_empty(), "store reaching up:\n{}", found.join("\n"));
}

#[test]
fn the_domain_is_pure_and_the_engine_speaks_no_http() {
    let found = breaches(
        |f| f.starts_with("domain/"),
        &[
            "crate::store",
            "crate::engine",
            "crate::http",
            "actix",
            "std::fs",
            "std::net",
        ],
    );
    assert!(
        found.is_empty(),
        "domain with I/O or upper layers:\n{}",
        found.join("\n")
    );
    let found = breaches(
        |f| f.starts_with("engine/"),
        &["crate::http", "actix", "StatusCode"],
    );
    assert!(
        found.is_empty(),
        "engine speaking HTTP:\n{}",
        found.join("\n")
    );
}
