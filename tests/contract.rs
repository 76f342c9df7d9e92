//! The contract's own examples: every file under `protocol/examples/valid/<schema>/`
//! satisfies that schema and every file under `protocol/examples/invalid/<schema>/`
//! fails it, as compiled by the server (the same files the server validates with).

use std::path::{Path, PathBuf};

use ssehub::schema::{SchemaKind, Schemas};

fn examples(validity: &str, kind: SchemaKind) -> Vec<PathBuf> {
    let stem = kind.file_name().trim_end_matches(".schema.json");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("protocol/examples")
        .join(validity)
        .join(stem);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_schema_has_valid_and_invalid_examples_that_behave() {
    let schemas = Schemas::load().expect("schemas compile");
    for kind in SchemaKind::all() {
        let valid = examples("valid", kind);
        let invalid = examples("invalid", kind);
        assert!(
            !valid.is_empty() && !invalid.is_empty(),
            "{kind:?} needs examples of both kinds"
        );
        for path in valid {
            if let Err(violations) = schemas.validate(kind, &load(&path)) {
                panic!("{} should be valid: {violations:?}", path.display());
            }
        }
        for path in invalid {
            assert!(
                schemas.validate(kind, &load(&path)).is_err(),
                "{} should be invalid",
                path.display()
            );
        }
    }
}
