//! Snapshot tests of rendered diagnostics, one fixture per kind of problem.
//!
//! Each `tests/fixtures/diagnostics/NAME.toml` is a workflow definition; the graph files it
//! names sit beside it (shared between cases). The definition is compiled alone in a
//! repository with the real node catalogue, and the snapshot is everything a person would see.
//! The expected code is the fixture's name up to the first `.` or `@`, so a fixture that stops
//! producing its own kind of diagnostic fails even before its snapshot is compared.

use std::path::Path;

use crate::{compile_mem, rendered, repo};

fn case(path: &Path) -> String {
    let dir = path.parent().unwrap_or_else(|| panic!("{path:?}"));
    let mut loader = repo();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{e}")) {
        let p = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let is_definition = p.extension().is_some_and(|e| e == "toml");
        if is_definition && p != path {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if name.ends_with(".tmpl") {
            loader.insert(
                format!("templates/{}", name.trim_end_matches(".tmpl")),
                text,
            );
        } else {
            loader.insert(format!("workflows/{name}"), text);
        }
    }
    let c = compile_mem(loader);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let code = stem.split(['.', '@']).next().unwrap_or_default();
    assert!(
        c.diagnostics.iter().any(|d| d.code.as_str() == code) || code == "clean",
        "fixture `{stem}` should produce a `{code}` diagnostic; got:\n{}",
        rendered(&c)
    );
    if code == "clean" {
        assert!(
            c.diagnostics.is_empty(),
            "fixture `{stem}` should be clean; got:\n{}",
            rendered(&c)
        );
    }
    rendered(&c)
}

#[test]
fn diagnostics() {
    insta::glob!(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/diagnostics"),
        "*.toml",
        |path| {
            insta::assert_snapshot!(case(path));
        }
    );
}

#[test]
fn every_code_has_a_fixture() {
    let dir = crate::repo_root().join("compiler/tests/fixtures/diagnostics");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    // Kinds that need a broken repository rather than a broken definition are tested in
    // `cli` and `corpus`; job-input errors in `build`.
    let elsewhere = ["io", "duplicate-workflow", "catalogue-invalid", "job-input"];
    let missing: Vec<&str> = comfyc::Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !elsewhere.contains(c))
        .filter(|c| !names.iter().any(|n| n.split(['.', '@']).next() == Some(*c)))
        .collect();
    assert!(missing.is_empty(), "no fixture for: {missing:?}");
}
