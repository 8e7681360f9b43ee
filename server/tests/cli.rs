//! The `hisa-server` binary as an operator runs it.

use std::process::Command;

fn package(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/dhis2-packages")
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

#[test]
fn import_and_export_data_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data.db");
    let bin = env!("CARGO_BIN_EXE_hisa-server");
    let run = |args: &[&str]| {
        let out = Command::new(bin)
            .args(["--database", db.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let metadata = dir.path().join("metadata.json");
    std::fs::write(
        &metadata,
        serde_json::json!({
            "organisationUnits": [{"id": "OuRoot00001", "name": "Root", "shortName": "Root", "openingDate": "1990-01-01"}],
            "dataElements": [{"id": "DeCases0001", "name": "Cases", "shortName": "Cases", "valueType": "INTEGER",
                "domainType": "AGGREGATE", "aggregationType": "SUM", "zeroIsSignificant": true}],
            "dataSets": [{"id": "DsYearly001", "name": "Yearly", "shortName": "Yearly", "periodType": "Yearly",
                "dataSetElements": [{"dataElement": {"id": "DeCases0001"}}], "organisationUnits": [{"id": "OuRoot00001"}]}]
        })
        .to_string(),
    )
    .unwrap();
    let (ok, _, err) = run(&["import-metadata", metadata.to_str().unwrap()]);
    assert!(ok, "{err}");

    let csv = dir.path().join("values.csv");
    std::fs::write(
        &csv,
        "dataelement,period,orgunit,categoryoptioncombo,attributeoptioncombo,value\n\
         DeCases0001,2020,OuRoot00001,,,5\nDeCases0001,2021,OuRoot00001,,,7\nDeCases0001,2022,OuRoot00001,,,x\n",
    )
    .unwrap();
    let (ok, out, err) = run(&["import-data", csv.to_str().unwrap()]);
    assert!(ok, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["importCount"]["imported"], 2);
    assert_eq!(summary["conflicts"][0]["errorCode"], "E7619");

    let (ok, out, err) = run(&[
        "export-data",
        "--data-set",
        "DsYearly001",
        "--start-date",
        "2019-01-01",
        "--end-date",
        "2023-12-31",
        "--org-unit",
        "OuRoot00001",
        "--format",
        "csv",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.contains("DeCases0001,2021,OuRoot00001,HllvX50cXC0,HllvX50cXC0,7,cli"));
}

#[test]
fn sms_decode_explains_a_message_without_applying_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sms.db");
    let bin = env!("CARGO_BIN_EXE_hisa-server");
    let run = |args: &[&str]| {
        Command::new(bin)
            .args(["--database", db.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let metadata = serde_json::json!({
        "organisationUnits": [{"id": "OuFacA10001", "name": "Facility A1", "shortName": "A1", "openingDate": "1990-01-01"}],
        "dataElements": [{"id": "DeDeaths001", "name": "Deaths", "shortName": "Deaths", "valueType": "INTEGER",
                          "domainType": "AGGREGATE", "aggregationType": "SUM"}],
        "dataSets": [{"id": "DsMonth0001", "name": "Monthly", "shortName": "Monthly", "periodType": "Monthly",
                      "dataSetElements": [{"dataElement": {"id": "DeDeaths001"}}], "organisationUnits": [{"id": "OuFacA10001"}]}],
        "smsCommands": [{"id": "SmsCmdVisit", "name": "visit", "parserType": "KEY_VALUE_PARSER",
                         "dataset": {"id": "DsMonth0001"}, "smsCodes": [{"code": "d", "dataElement": {"id": "DeDeaths001"}}]}],
        "userRoles": [{"id": "RoleRepo001", "name": "Reporter", "authorities": ["F_DATAVALUE_ADD"]}],
        "users": [{"id": "UserRepA101", "username": "rep.a1", "password": "Reporter123!", "firstName": "R", "surname": "A",
                   "phoneNumber": "+255700000001", "userRoles": [{"id": "RoleRepo001"}], "organisationUnits": [{"id": "OuFacA10001"}]}]
    });
    let file = dir.path().join("metadata.json");
    std::fs::write(&file, metadata.to_string()).unwrap();
    let out = run(&["import-metadata", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run(&[
        "sms",
        "decode",
        "visit d=3",
        "--sender",
        "0700000001",
        "--sms-country-code",
        "255",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decoded["format"], "COMMAND");
    assert_eq!(decoded["outcome"], "ACCEPTED", "{decoded}");
    assert_eq!(decoded["user"], "UserRepA101");
    assert_eq!(decoded["decoded"]["resolved"]["dataSet"], "DsMonth0001");
    assert_eq!(decoded["decoded"]["resolved"]["values"][0]["value"], "3");

    // A damaged DHIS2 submission: rejected, with the reply the phone would get.
    let out = run(&["sms", "decode", "fQIAAAAAASDCu3TggmFZA2zb3NTWJeogv5WNfIrO"]);
    assert!(out.status.success());
    let decoded: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decoded["format"], "DHIS2");
    assert_eq!(decoded["outcome"], "REJECTED");
    assert!(
        decoded["reply"].as_str().unwrap().starts_with("-1:"),
        "{decoded}"
    );

    // Nothing was applied.
    let out = run(&[
        "export-data",
        "--data-set",
        "DsMonth0001",
        "--org-unit",
        "OuFacA10001",
        "--start-date",
        "2000-01-01",
        "--end-date",
        "2100-01-01",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        exported["dataValues"]
            .as_array()
            .is_none_or(|v| v.is_empty()),
        "{exported}"
    );
}
