//! The floors of `src/lib.rs`, checked: every `crate::<module>` a source file names (outside
//! comments) must be on a floor below its own, or on the same floor where the plan allows it.
//! A new module must be placed on a floor here before it builds a test run green.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom to top; a module may import every module on a lower floor.
const FLOORS: &[&[&str]] = &[
    &["base"],
    &["store", "storage", "limits", "telemetry"],
    &["events"],
    &["accounts", "providers", "ledger", "uploads"],
    &["keypool"],
    &["jobs", "webhooks"],
    &["sessions", "photo", "mj_tasks"],
    &["config"],
    &["app"],
    &["api", "error"],
    &["server", "testing"],
    &["cli"],
];

/// Imports between modules of one floor that the plan allows (importer, imported).
const SAME_FLOOR: &[(&str, &str)] = &[
    ("api", "error"),
    ("error", "api"),
    // The ledger makes Midjourney app keys through the tenant keys of `accounts`.
    ("ledger", "accounts"),
];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|floor| floor.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/jobs/worker.rs` -> `jobs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

/// Every `crate::name` on a line that is not a comment.
fn imported_modules(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let code = code.split(" //").next().unwrap_or(code);
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

#[test]
fn every_import_points_down_the_floors() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        if matches!(module.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let Some(own) = floor_of(&module) else {
            problems.push(format!("{module}: not on any floor of tests/layout.rs"));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read file");
        for imported in imported_modules(&text) {
            if imported == module {
                continue;
            }
            let Some(theirs) = floor_of(&imported) else {
                problems.push(format!("{}: imports unknown `{imported}`", file.display()));
                continue;
            };
            let allowed = theirs < own
                || (theirs == own && SAME_FLOOR.contains(&(module.as_str(), imported.as_str())));
            if !allowed {
                problems.push(format!(
                    "{}: `{module}` (floor {own}) imports `{imported}` (floor {theirs})",
                    file.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports against the floors:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_imports_and_skips_comments() {
    let text = "use crate::store::Store;\n// crate::app is only named here\nlet x = crate::base::clock::now_millis(); // crate::cli\n";
    let found: Vec<_> = imported_modules(text).into_iter().collect();
    assert_eq!(found, ["base", "store"]);
}
