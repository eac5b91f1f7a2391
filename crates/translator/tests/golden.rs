//! Golden tests: every fixture under `tests/fixtures/golden/` is translated with both router
//! flavors; the document, problems and plugin requests are compared with the committed
//! snapshots, and the document must load with the configuration model. Each case is also
//! translated from its documents in reverse order, which must give the same bytes, and the
//! typed document must serialize like its `serde_json::Value` form.

mod common;

use silverback_config::RouterFlavor;
use silverback_translator::{Objects, translate, translate_typed};

fn render(t: &silverback_translator::Translation) -> String {
    let mut s = String::from("# problems\n");
    for p in &t.problems {
        s.push_str(&format!("- {p}\n"));
    }
    s.push_str("# plugins\n");
    for p in &t.plugins {
        s.push_str(&format!(
            "- {} {} {}: {}\n",
            p.object,
            p.entity_type,
            p.entity_name,
            p.plugins.join(",")
        ));
    }
    s.push_str("# configured\n");
    for o in &t.configured {
        s.push_str(&format!("- {o}\n"));
    }
    s.push_str("# config\n");
    s.push_str(&t.to_yaml());
    s
}

#[test]
fn golden() {
    // Snapshots are found from the manifest directory of this run, not the one compiled in
    // (a test binary reused from a build cache shared with another checkout carries that
    // checkout's path).
    let mut settings = insta::Settings::clone_current();
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    settings.set_snapshot_path(std::path::Path::new(&manifest).join("tests/snapshots"));
    let _guard = settings.bind_to_scope();
    let dir = common::fixtures().join("golden");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "only {} golden cases", cases.len());
    for path in cases {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let expanded = common::expand(&text);
        let objects = Objects::from_yaml_documents(expanded.as_bytes())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // the same documents in reverse order
        let mut docs: Vec<&str> = expanded.split("\n---\n").collect();
        docs.reverse();
        let reversed = Objects::from_yaml_documents(docs.join("\n---\n").as_bytes()).unwrap();
        for flavor in [
            RouterFlavor::TraditionalCompatible,
            RouterFlavor::Expressions,
        ] {
            let opts = common::options(&text, flavor);
            let t = translate(&objects, &opts);
            common::assert_loads(&t, flavor);
            // the typed document serializes to the bytes of its `Value` form
            let typed = translate_typed(&objects, &opts);
            assert_eq!(
                typed.to_json(),
                t.to_json(),
                "{name}: typed document and Value differ"
            );
            assert_eq!(
                typed.to_yaml(),
                t.to_yaml(),
                "{name}: typed document and Value differ in YAML"
            );
            assert_eq!(
                typed.document.is_empty(),
                t.config.as_object().is_none_or(|o| o.len() <= 1)
            );
            assert_eq!(
                (&typed.problems, &typed.plugins, &typed.configured),
                (&t.problems, &t.plugins, &t.configured)
            );
            let again = translate(&reversed, &opts);
            assert_eq!(
                t.to_json(),
                again.to_json(),
                "{name}: order changes the output"
            );
            assert_eq!(
                t.problems, again.problems,
                "{name}: order changes the problems"
            );
            let snap = format!("{name}@{}", flavor.as_str());
            insta::assert_snapshot!(snap, render(&t));
        }
    }
}
