//! No panic on any input: every real workflow of the corpus, broken TOML, truncated and
//! garbled example files. Each bad input must come back as error diagnostics.

use std::path::PathBuf;

use crate::{compile_mem, examples, repo_root, shared, small_repo as repo};

fn corpus_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["corpus/workflows", "corpus/era-0.3.64/workflows"] {
        for e in std::fs::read_dir(shared().join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .flatten()
        {
            files.push(e.path());
        }
    }
    files.sort();
    files
}

#[test]
fn every_corpus_workflow_is_reported_not_crashed_on() {
    let files = corpus_files();
    assert!(files.len() >= 600, "corpus has {} files", files.len());
    let (small, _) = comfyc::catalogue::Catalogue::from_json(crate::small_catalogue_text())
        .unwrap_or_else(|e| panic!("{e}"));
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // As a graph: UI-format files are converted; with the small catalogue most name
        // node types it lacks, and each such type is an error pointing into the file.
        let c = compile_mem(
            repo()
                .with("workflows/w.toml", "[workflow]\ngraph = \"w.json\"\n")
                .with("workflows/w.json", text.clone()),
        );
        let named: std::collections::BTreeSet<String> = c
            .diagnostics
            .iter()
            .filter(|d| d.code == comfyc::Code::UnknownClass)
            .filter_map(|d| d.message.split('`').nth(1).map(str::to_owned))
            .collect();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(
            named,
            crate::ui::expected_missing(&doc, &small),
            "{}",
            path.display()
        );
        for d in &c.diagnostics {
            assert!(!d.labels.is_empty(), "{}: {d:?}", path.display());
        }
        // As a definition, and as a catalogue: nonsense in the wrong place is an error.
        let c = compile_mem(repo().with("workflows/w.toml", text.clone()));
        assert!(c.has_errors(), "{}", path.display());
        let c = compile_mem(
            repo()
                .with("nodes/object_info.json", text)
                .with("workflows/w.toml", "[workflow]\ngraph = \"w.json\"\n"),
        );
        assert!(!c.diagnostics.is_empty(), "{}", path.display());
    }
}

const BROKEN_TOML: &[&str] = &[
    "",
    "[workflow",
    "[workflow]\n",
    "[workflow]\ngraph = 5\n",
    "[workflow]\ngraph = \"g.json\"\ngraph = \"h.json\"\n",
    "[workflow]\ngraph = \"g.json\"\n[inputs.a]\nto = 5\n",
    "[workflow]\ngraph = \"g.json\"\n[inputs.a]\nto = [\"1.width\", 7]\n",
    "[workflow]\ngraph = \"g.json\"\n[inputs.a]\nto = {x = 1}\n",
    "[workflow]\ngraph = \"g.json\"\n[inputs.a]\ntype = \"colour\"\n",
    "[workflow]\ngraph = \"g.json\"\n[inputs.a]\nmin = \"low\"\n",
    "[workflow]\ngraph = \"g.json\"\n[inputs]\na = 5\n",
    "[workflow]\ngraph = \"../../etc/passwd\"\n",
    "[workflow]\ngraph = \"/etc/passwd\"\n",
    "[workflow]\ngraph = \"g.json\"\nname = \"../escape\"\n",
    "[workflow]\ngraph = \"g.json\"\n[outputs.x]\nfrom = 9\n",
    "[workflow]\ngraph = \"g.json\"\n[inputs.a]\nto = \"1.width\"\ndefault = 1979-05-27T07:32:00Z\n",
    "[workflow]\ngraph = \"g.json\"\n[inputs.a]\nto = \"1.width\"\nmin = 9223372036854775807\nmax = -9223372036854775808\n",
    "[workflow]\ngraph = \"g.json\"\n[inputs.a]\ntype = \"string\"\npattern = \"([\"\nto = \"1.width\"\n",
    "[workflow]\r\ngraph = \"g.json\"\r\n[inputs.é]\r\nto = \"1.wïdth\"\r\n",
    "[[workflow]]\ngraph = \"g.json\"\n",
    "workflow = \"txt2img\"\n[inputs]\nprompt = \"a job file, not a definition\"\n",
];

#[test]
fn broken_definitions_are_errors_with_locations() {
    let graph = std::fs::read_to_string(
        repo_root().join("compiler/tests/fixtures/diagnostics/graph-ok.api.json"),
    )
    .unwrap_or_default();
    for (i, text) in BROKEN_TOML.iter().enumerate() {
        let c = compile_mem(
            repo()
                .with("workflows/w.toml", *text)
                .with("workflows/g.json", graph.clone()),
        );
        assert!(c.has_errors(), "case {i} should fail: {text:?}");
        let rendered = crate::rendered(&c);
        assert!(rendered.contains("error["), "case {i}: {rendered}");
    }
    // A byte-order mark is not an error.
    let c = compile_mem(
        repo()
            .with(
                "workflows/w.toml",
                "\u{feff}[workflow]\ngraph = \"g.json\"\n",
            )
            .with("workflows/g.json", graph.clone()),
    );
    assert!(!c.has_errors(), "{}", crate::rendered(&c));
    // Deep nesting and very long lines.
    let deep = format!(
        "[workflow]\ngraph = \"g.json\"\n[inputs.a]\ndefault = {}1{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let c = compile_mem(
        repo()
            .with("workflows/w.toml", deep)
            .with("workflows/g.json", graph.clone()),
    );
    assert!(c.has_errors());
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let c = compile_mem(
        repo()
            .with("workflows/w.toml", "[workflow]\ngraph = \"g.json\"\n")
            .with("workflows/g.json", deep_json),
    );
    assert!(c.has_errors());
}

#[test]
fn truncated_and_garbled_examples_never_panic() {
    let root = repo_root().join("examples/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let step = (text.len() / 40).max(1);
        for cut in (0..text.len()).step_by(step) {
            if !text.is_char_boundary(cut) {
                continue;
            }
            for variant in [
                text[..cut].to_owned(),
                format!("{}\u{0}\"}}{{]{}", &text[..cut], &text[cut..]),
            ] {
                let mut loader = repo();
                for other in &files {
                    let n = other
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let t = if n == name {
                        variant.clone()
                    } else {
                        std::fs::read_to_string(other).unwrap_or_default()
                    };
                    loader.insert(format!("workflows/{n}"), t);
                }
                let c = compile_mem(loader);
                let _ = crate::rendered(&c);
                for d in &c.diagnostics {
                    let _ = comfyc::diagnostic::to_json(d, &c.sources);
                }
            }
        }
    }
    assert!(!examples().has_errors());
}
