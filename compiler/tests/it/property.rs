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
