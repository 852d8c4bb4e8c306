//! The layering that `src/lib.rs` states holds: every module's `crate::` imports point down the
//! list of modules in `lib.rs`'s doc comment (a module may use its own submodules, and a
//! submodule its parent), never up. Test modules are not counted.

use std::fs;
use std::path::Path;

/// The top-level modules in the order `lib.rs` lists them, top first.
fn layers() -> Vec<String> {
    let lib = fs::read_to_string("src/lib.rs").unwrap();
    lib.lines()
        .filter_map(|line| line.strip_prefix("//! - "))
        // A public module is a link (`[`name`]`), a crate-private one plain code.
        .filter_map(|rest| rest.trim_start_matches('[').strip_prefix('`'))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a source file's non-test code names through `crate::`.
fn imported_modules(code: &str) -> Vec<String> {
    let code = code.split("#[cfg(test)]").next().unwrap_or(code);
    let mut found = Vec::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !found.contains(&name) {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn dependencies_point_down_the_list_in_lib_rs() {
    let layers = layers();
    assert!(layers.len() > 10, "lib.rs lists its modules: {layers:?}");
    let rank = |module: &str| layers.iter().position(|m| m == module);
    let mut files = Vec::new();
    sources(Path::new("src"), &mut files);
    let mut violations = Vec::new();
    for file in files {
        let relative = file.strip_prefix("src").unwrap();
        let Some(top) = relative.iter().next().and_then(|c| c.to_str()) else {
            continue;
        };
        let module = top.trim_end_matches(".rs");
        if matches!(module, "lib" | "main") {
            continue;
        }
        let own = rank(module).unwrap_or_else(|| panic!("{module} is not listed in lib.rs"));
        for imported in imported_modules(&fs::read_to_string(&file).unwrap()) {
            let Some(theirs) = rank(&imported) else {
                panic!(
                    "{} imports crate::{imported}, not listed in lib.rs",
                    file.display()
                );
            };
            if theirs < own {
                violations.push(format!("{} -> {imported}", file.display()));
            }
        }
    }
    assert!(violations.is_empty(), "imports pointing up: {violations:?}");
}
