//! The acceptance data: every pack of the StackStorm corpus loads, with the counts on disk.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

fn yaml_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect()
}

#[test]
fn every_corpus_pack_loads_with_the_counts_on_disk() {
    let Some(corpus) = corpus() else {
        eprintln!("\n*** SKIPPED: no corpus at ../shared/corpus and $PACKD_CORPUS unset ***\n");
        return;
    };
    let st2 = corpus.join("st2");
    let out = run(&["pack", "validate", "--json", &st2.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let v: Value = serde_json::from_str(&stdout(&out)).expect("json");
    let packs = v["packs"].as_array().expect("packs");
    assert_eq!(packs.len(), 18);
    assert_eq!(v["errors"], 0, "{}", serde_json::to_string_pretty(&v["diagnostics"]).unwrap());
    for p in packs {
        let name = p["ref"].as_str().expect("every pack loads");
        let dir = Path::new(p["dir"].as_str().unwrap());
        let actions = yaml_files(&dir.join("actions")).len();
        let sensor_files = yaml_files(&dir.join("sensors"));
        let mut triggers = yaml_files(&dir.join("triggers")).len();
        for s in &sensor_files {
            let text = fs::read_to_string(s).unwrap();
            let doc: Value = serde_saphyr::from_str(&text).unwrap();
            triggers += doc["trigger_types"].as_array().map_or(0, Vec::len);
        }
        let expect = serde_json::json!({
            "actions": actions,
            "sensors": sensor_files.len(),
            "triggers": triggers,
            "rules": yaml_files(&dir.join("rules")).len(),
            "aliases": yaml_files(&dir.join("aliases")).len(),
            "policies": yaml_files(&dir.join("policies")).len(),
        });
        assert_eq!(p["counts"], expect, "pack {name}");
    }
    let total: u64 = packs.iter().map(|p| p["counts"]["actions"].as_u64().unwrap()).sum();
    assert_eq!(total, 4188);
}

#[test]
fn the_three_files_stackstorm_rejects_load_with_one_warning_each() {
    let Some(corpus) = corpus() else {
        eprintln!("\n*** SKIPPED: no corpus ***\n");
        return;
    };
    let out = run(&["pack", "validate", "--json", &corpus.join("st2").to_string_lossy()]);
    let v: Value = serde_json::from_str(&stdout(&out)).expect("json");
    let diags = v["diagnostics"].as_array().unwrap();
    for (file, key) in [
        ("aws/config.schema.yaml", "roles"),
        ("napalm/config.schema.yaml", "$ref"),
        ("pagerduty/actions/escalation_policy.create.yaml", "item"),
    ] {
        let hits: Vec<&Value> = diags.iter().filter(|d| d["file"].as_str().unwrap().ends_with(file)).collect();
        assert_eq!(hits.len(), 1, "{file}: {hits:?}");
        let d = hits[0];
        assert_eq!(d["severity"], "warning");
        assert!(d["field"].as_str().unwrap().ends_with(key), "{d}");
        assert!(d["message"].as_str().unwrap().contains("unknown key"), "{d}");
        assert!(d["line"].as_u64().is_some(), "{d}");
    }
    // The only other warnings are the two st2 example chains that jump to a missing task on
    // purpose (st2 registers them and fails them at run time).
    let others: Vec<&Value> = diags
        .iter()
        .filter(|d| !d["file"].as_str().unwrap().contains("config.schema.yaml"))
        .filter(|d| !d["file"].as_str().unwrap().contains("escalation_policy.create"))
        .collect();
    assert_eq!(others.len(), 2, "{others:?}");
    assert!(others.iter().all(|d| d["file"].as_str().unwrap().contains("echochain_")));
}

#[test]
fn the_shipped_packs_validate_cleanly() {
    let packs = Path::new(env!("CARGO_MANIFEST_DIR")).join("packs");
    let examples = packs.join("examples");
    let out = run(&["pack", "validate", &packs.to_string_lossy(), &examples.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("0 errors, 0 warnings"), "{}", stdout(&out));
    let out =
        run(&["pack", "list", "--json", "--packs", &packs.to_string_lossy(), "--packs", &examples.to_string_lossy()]);
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let dialects: Vec<&str> = v.as_array().unwrap().iter().map(|p| p["dialect"].as_str().unwrap()).collect();
    assert!(dialects.contains(&"stackstorm") && dialects.contains(&"attune"), "{dialects:?}");
}
