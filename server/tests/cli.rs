//! The `hisa-server` binary as an operator runs it.

use std::process::Command;

fn package(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/dhis2-packages")
        .join(name)
}

#[test]
fn migrate_then_import_a_real_package() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");
    let bin = env!("CARGO_BIN_EXE_hisa-server");
    let out = Command::new(bin)
        .args(["--database", db.to_str().unwrap(), "migrate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));

    let out = Command::new(bin)
        .args(["--database", db.to_str().unwrap(), "import-metadata"])
        .arg(package("TB_AGG-complete-2.41.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "OK");
    assert_eq!(report["stats"]["ignored"], 0);

    // A file that is not JSON: a clear message and a failing exit status.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"dataElements\": [").unwrap();
    let out = Command::new(bin)
        .args(["--database", db.to_str().unwrap(), "import-metadata"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
}
