//! docs/ecr-api.md shows the fixtures, not copies that could drift: every
//! example block names its fixture and equals it, and every request,
//! response and answer fixture is shown.

use std::collections::BTreeSet;
use std::path::Path;

const MARKER: &str = "<!-- fixture: ";

#[test]
fn the_documented_examples_are_the_fixtures() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(crate_dir.join("../../docs/ecr-api.md")).unwrap();
    let fixtures = crate_dir.join("tests/fixtures");
    let mut shown = BTreeSet::new();
    let mut rest = doc.as_str();
    while let Some(at) = rest.find(MARKER) {
        rest = &rest[at + MARKER.len()..];
        let (name, after) = rest.split_once(" -->\n").expect("a marker ends with -->");
        let after = after
            .strip_prefix("```json\n")
            .or_else(|| after.strip_prefix("```text\n"))
            .unwrap_or_else(|| panic!("{name}: no code block after the marker"));
        let (block, after) = after.split_once("\n```").expect("a closed code block");
        rest = after;
        let file =
            std::fs::read_to_string(fixtures.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        match serde_json::from_str::<serde_json::Value>(&file) {
            Ok(value) => {
                let shown_value: serde_json::Value = serde_json::from_str(block)
                    .unwrap_or_else(|e| panic!("{name}: the block is not JSON: {e}"));
                assert_eq!(shown_value, value, "{name}");
            }
            Err(_) => assert_eq!(block.trim_end(), file.trim_end(), "{name}"),
        }
        shown.insert(name.to_owned());
    }
    for dir in ["requests", "responses", "replies"] {
        for entry in std::fs::read_dir(fixtures.join(dir)).unwrap() {
            let name = format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy());
            let must_show = dir != "replies" || name.ends_with(".reply.json");
            assert!(
                !must_show || shown.contains(&name),
                "{name} is not in docs/ecr-api.md"
            );
        }
    }
}
