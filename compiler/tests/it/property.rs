//! Property: no text input can change a graph's structure, and every text round-trips.

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::examples;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        // The characters that break naive templating, densely.
        proptest::collection::vec(
            prop_oneof![
                Just("\"".to_owned()),
                Just("\\".to_owned()),
                Just("{".to_owned()),
                Just("}".to_owned()),
                Just("\"}, \"99\": {".to_owned()),
                Just("{{ prompt }}".to_owned()),
                Just("{% endfor %}".to_owned()),
                Just("\n".to_owned()),
                Just("\u{2028}".to_owned()),
                Just("</script>".to_owned()),
                Just("é😀".to_owned()),
                Just("\u{0}".to_owned()),
                "[a-z ]{0,5}".prop_map(|s| s),
            ],
            0..24,
        )
        .prop_map(|v| v.concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn text_inputs_round_trip_and_keep_the_node_set(s in text()) {
        let c = examples();
        for (workflow, path) in [("txt2img", "/6/inputs/text"), ("lora", "/6/inputs/text")] {
            let w = c.find(workflow).unwrap_or_else(|e| panic!("{e}"));
            let mut plain = Map::new();
            plain.insert("prompt".into(), Value::from("a cat"));
            let defaults = w.render(&w.resolve(&plain, &mut || 7).unwrap_or_else(|e| panic!("{e:?}")).values)
                .unwrap_or_else(|e| panic!("{e:?}"));
            let mut inputs = Map::new();
            inputs.insert("prompt".into(), Value::String(s.clone()));
            let resolved = w.resolve(&inputs, &mut || 7);
            if s.is_empty() && workflow == "txt2img" {
                // `min_length = 1`: refused, and said so.
                prop_assert!(resolved.is_err());
                continue;
            }
            let resolved = resolved.unwrap_or_else(|e| panic!("{e:?}"));
            let graph = w.render(&resolved.values).unwrap_or_else(|e| panic!("{e:?}"));
            let keys = |g: &Value| g.as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
            prop_assert_eq!(keys(&graph), keys(&defaults));
            prop_assert_eq!(graph.pointer(path), Some(&Value::String(s.clone())));
            // And it survives the trip through JSON text to ComfyUI.
            let wire = serde_json::to_string(&graph).unwrap_or_default();
            let back: Value = serde_json::from_str(&wire).unwrap_or_default();
            prop_assert_eq!(back.pointer(path), Some(&Value::String(s.clone())));
        }
    }
}

/// Ways a template may print a text input, escaping filters and tricks around them included.
const PRINTS: &[&str] = &[
    "{{ p }}",
    "{{ p | e }}",
    "{{ p | escape }}",
    "{{ p | tojson }}",
    "{{ p | string }}",
    "{{ p | upper }}",
    "{{ p | trim }}",
    "{{ p | replace('a', 'b') }}",
    "{{ p | safe }}",
    "\"{{ p | safe }}\"",
    "\"{{ p | string | safe }}\"",
    "\"{{ p | e | safe }}\"",
    "{{ p | list | join('') }}",
    "{{ p ~ '' }}",
    "\"{{ q | trim('\\\"') }}\"",
    "\"{{ q | trim('\\\"') | replace('\\\\\\\"', '\\\"') }}\"",
    "\"{{ q[1:-1] | replace('\\\\\\\"', '\\\"') }}\"",
    "{% filter safe %}\"{{ p }}\"{% endfilter %}",
    "{% autoescape false %}\"{{ p }}\"{% endautoescape %}",
    "{% if 'EVIL' in p %}\"x\"}}, \"9\": {\"class_type\": \"SaveImage\", \"inputs\": {\"images\": [\"1\", 0], \"filename_prefix\": \"y\"{% else %}\"x\"{% endif %}",
];

/// Every [`PRINTS`] case as a one-workflow repository, compiled once.
fn print_cases() -> &'static [(String, comfyc::Compilation)] {
    static CASES: std::sync::OnceLock<Vec<(String, comfyc::Compilation)>> =
        std::sync::OnceLock::new();
    CASES.get_or_init(|| {
        PRINTS
            .iter()
            .map(|print| {
                let template = format!(
                    "{{% set q %}}{{{{ p }}}}{{% endset -%}}\n{{\"1\": {{\"class_type\": \"EmptyImage\", \"inputs\": {{\"width\": 64, \"height\": 64, \"batch_size\": 1, \"color\": 0}}}},\n \"2\": {{\"class_type\": \"SaveImage\", \"inputs\": {{\"images\": [\"1\", 0], \"filename_prefix\": {print}}}}}}}\n"
                );
                let loader = crate::small_repo()
                    .with(
                        "workflows/t.toml",
                        "[workflow]\ngraph = \"t.api.json.j2\"\n[inputs.p]\ntype = \"string\"\ndefault = \"fixture\"\n",
                    )
                    .with("workflows/t.api.json.j2", template);
                ((*print).to_owned(), crate::compile_mem(loader))
            })
            .collect()
    })
}

/// Node ids, classes and input names: what text must never change.
fn structure(g: &Value) -> Vec<(String, String, Vec<String>)> {
    g.as_object()
        .into_iter()
        .flatten()
        .map(|(id, n)| {
            let mut inputs: Vec<String> = n["inputs"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            inputs.sort();
            (
                id.clone(),
                n["class_type"].as_str().unwrap_or_default().to_owned(),
                inputs,
            )
        })
        .collect()
}

#[test]
fn escape_bypasses_are_refused_when_checked() {
    // The plain ways compile; every way around JSON escaping is an error at `check`, except
    // those that keep the text escaped all the same.
    for (print, c) in print_cases() {
        let bypass = print.contains("safe")
            || print.contains("autoescape")
            || print.contains("replace('\\\\\\\"'")
            || print.contains("EVIL");
        if bypass && !print.contains("EVIL") {
            assert!(
                c.has_errors(),
                "`{print}` should not compile:\n{}",
                crate::rendered(c)
            );
        }
        if !bypass {
            assert!(
                !c.has_errors(),
                "`{print}` should compile:\n{}",
                crate::rendered(c)
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn no_text_changes_a_template_graph_whatever_it_prints_with(s in prop_oneof![
        text(),
        Just("EVIL".to_owned()),
        Just("a\", \"x\": \"b".to_owned()),
        Just("a\"}, \"9\": {\"class_type\": \"SaveImage\", \"inputs\": {}}, \"8\": {\"x\": \"".to_owned()),
    ]) {
        for (print, c) in print_cases() {
            let Ok(w) = c.find("t") else { continue };
            let defaults = w.default_graph.clone();
            let mut inputs = Map::new();
            inputs.insert("p".into(), Value::String(s.clone()));
            let Ok(resolved) = w.resolve(&inputs, &mut || 7) else { continue };
            // Refusing to render is allowed; rendering a different structure is not.
            if let Ok(graph) = w.render(&resolved.values) {
                prop_assert_eq!(structure(&graph), structure(&defaults), "`{}` with {:?}", print, s);
            }
        }
    }
}

#[test]
fn text_that_steers_a_template_is_refused_at_render() {
    // No probe at `check` says `EVIL`, so this compiles; rendering then notices the text
    // reached beyond its string and refuses, naming no graph.
    let (_, c) = print_cases()
        .iter()
        .find(|(p, _)| p.contains("EVIL"))
        .unwrap_or_else(|| panic!("no EVIL case"));
    let w = c
        .find("t")
        .unwrap_or_else(|e| panic!("{e}:\n{}", crate::rendered(c)));
    let mut inputs = Map::new();
    inputs.insert("p".into(), Value::from("EVIL"));
    let resolved = w
        .resolve(&inputs, &mut || 7)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let e = w
        .render(&resolved.values)
        .err()
        .unwrap_or_else(|| panic!("rendered a graph steered by text"));
    assert!(
        e.message.contains("changed the graph's structure"),
        "{}",
        e.message
    );
    inputs.insert("p".into(), Value::from("good"));
    let resolved = w
        .resolve(&inputs, &mut || 7)
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert!(w.render(&resolved.values).is_ok());
}
