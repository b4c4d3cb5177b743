//! Shared helpers for the vector tests: load a vector file from
//! `tests/vectors/` and decode hex.
#![allow(dead_code)]

use std::path::Path;

pub fn vectors(name: &str) -> toml::Table {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn s<'a>(t: &'a toml::Value, key: &str) -> &'a str {
    t.get(key)
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| panic!("missing string {key}"))
}

pub fn h(t: &toml::Value, key: &str) -> Vec<u8> {
    hex::decode(s(t, key)).unwrap_or_else(|e| panic!("{key}: {e}"))
}

pub fn arr<'a>(t: &'a toml::Value, key: &str) -> &'a Vec<toml::Value> {
    t.get(key)
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("missing array {key}"))
}

pub fn upper(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}
