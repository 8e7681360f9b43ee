//! The storage contract, run against SQLite and PostgreSQL alike.

use hisa_server::store::{
    CompletionWrite, DataValueWrite, MetadataChange, ObjectWrite, OrgUnitWrite, PeriodRow, Store,
};
use hisa_tests::{fresh_store, on_both_stores, Backend};
use serde_json::json;
use time::macros::{date, datetime};

fn object(uid: &str, kind: &str, code: Option<&str>) -> ObjectWrite {
    ObjectWrite {
        uid: uid.into(),
        kind: kind.into(),
        code: code.map(str::to_string),
        name: Some(uid.into()),
        body: json!({"id": uid, "name": uid}),
        created: datetime!(2024-01-01 0:00 UTC),
        last_updated: datetime!(2024-01-01 0:00 UTC),
    }
}

fn org_unit(uid: &str, parent: Option<&str>, path: &str) -> OrgUnitWrite {
    OrgUnitWrite {
        uid: uid.into(),
        parent_uid: parent.map(str::to_string),
        path: path.into(),
        level: path.matches('/').count() as i32,
        opening_date: Some(date!(1990 - 01 - 01)),
        closed_date: None,
    }
}

/// A root with two districts, one facility each, one data element.
async fn tree(store: &dyn Store) {
    let change = MetadataChange {
        upserts: vec![
            object("OuRoot00001", "organisationUnits", None),
            object("OuDistA0001", "organisationUnits", None),
            object("OuDistB0001", "organisationUnits", None),
            object("OuFacA0001x", "organisationUnits", None),
            object("OuFacB0001x", "organisationUnits", None),
            object("DeCases0001", "dataElements", Some("CASES")),
            object("HllvX50cXC0", "categoryOptionCombos", None),
        ],
        org_units: vec![
            org_unit("OuRoot00001", None, "/OuRoot00001"),
            org_unit(
                "OuDistA0001",
                Some("OuRoot00001"),
                "/OuRoot00001/OuDistA0001",
            ),
            org_unit(
                "OuDistB0001",
                Some("OuRoot00001"),
                "/OuRoot00001/OuDistB0001",
            ),
            org_unit(
                "OuFacA0001x",
                Some("OuDistA0001"),
                "/OuRoot00001/OuDistA0001/OuFacA0001x",
            ),
            org_unit(
                "OuFacB0001x",
                Some("OuDistB0001"),
                "/OuRoot00001/OuDistB0001/OuFacB0001x",
            ),
        ],
        ..MetadataChange::default()
    };
    store.apply_metadata(&change).await.unwrap();
}

async fn ids(store: &dyn Store, uids: &[&str]) -> Vec<i64> {
    let found = store
        .object_ids(&uids.iter().map(|u| u.to_string()).collect::<Vec<_>>())
        .await
        .unwrap();
    uids.iter()
        .map(|u| found.iter().find(|(f, _)| f == u).unwrap().1)
        .collect()
}

async fn migrations_are_idempotent_and_versioned(backend: Backend) {
    let Some((store, _dir)) = fresh_store(backend).await else {
        return;
    };
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.metadata_version().await.unwrap(), 0);
    tree(&*store).await;
    assert_eq!(store.metadata_version().await.unwrap(), 1);
    let loaded = store.load_metadata().await.unwrap();
    assert_eq!(loaded.len(), 7);
}

async fn a_failed_change_writes_nothing(backend: Backend) {
    let Some((store, _dir)) = fresh_store(backend).await else {
        return;
    };
    store.migrate().await.unwrap();
    tree(&*store).await;
    // Two users with one username: the unique index refuses the second, and
    // the whole change, object rows included, rolls back.
    let mut change = MetadataChange {
        upserts: vec![
            object("UserA000001", "users", None),
            object("UserB000001", "users", None),
        ],
        ..MetadataChange::default()
    };
    for uid in ["UserA000001", "UserB000001"] {
        change
            .credentials
            .push(hisa_server::store::CredentialWrite {
                user_uid: uid.into(),
                username: "Same".into(),
                password_hash: Some("h".into()),
                disabled: false,
            });
    }
    assert!(store.apply_metadata(&change).await.is_err());
    assert_eq!(store.metadata_version().await.unwrap(), 1);
    assert_eq!(store.load_metadata().await.unwrap().len(), 7);
    assert!(store
        .credential_by_username("same")
        .await
        .unwrap()
        .is_none());
}

async fn data_values_upsert_by_key_and_scope_by_subtree(backend: Backend) {
    let Some((store, _dir)) = fresh_store(backend).await else {
        return;
    };
    store.migrate().await.unwrap();
    tree(&*store).await;
    let [de, coc, fac_a, fac_b] = ids(
        &*store,
        &["DeCases0001", "HllvX50cXC0", "OuFacA0001x", "OuFacB0001x"],
    )
    .await[..] else {
        unreachable!()
    };
    let periods = store
        .ensure_periods(&[PeriodRow {
            iso: "202401".into(),
            period_type: "Monthly".into(),
            start_date: date!(2024 - 01 - 01),
            end_date: date!(2024 - 01 - 31),
        }])
        .await
        .unwrap();
    // Asking again returns the same id, never a second row.
    let again = store
        .ensure_periods(&[PeriodRow {
            iso: "202401".into(),
            period_type: "Monthly".into(),
            start_date: date!(2024 - 01 - 01),
            end_date: date!(2024 - 01 - 31),
        }])
        .await
        .unwrap();
    assert_eq!(periods, again);
    let pe = periods[0].1;
    let value = |ou: i64, v: &str| DataValueWrite {
        data_element_id: de,
        period_id: pe,
        org_unit_id: ou,
        category_option_combo_id: coc,
        attribute_option_combo_id: coc,
        value: Some(v.into()),
        comment: None,
        follow_up: false,
        stored_by: Some("test".into()),
        created: datetime!(2024-02-01 0:00 UTC),
        last_updated: datetime!(2024-02-01 0:00 UTC),
        deleted: false,
    };
    store
        .put_data_values(&[value(fac_a, "1"), value(fac_b, "2")])
        .await
        .unwrap();
    store.put_data_values(&[value(fac_a, "5")]).await.unwrap();
    assert_eq!(
        store.data_counts().await.unwrap().data_values,
        2,
        "same key, one row"
    );
    let district_a = vec!["/OuRoot00001/OuDistA0001".to_string()];
    assert_eq!(
        store
            .count_data_values_in_subtrees(&district_a)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_data_values_in_subtrees(&["/OuRoot00001".to_string()])
            .await
            .unwrap(),
        2
    );
    // A unit whose path shares a prefix but is not below is not counted.
    assert_eq!(
        store
            .count_data_values_in_subtrees(&["/OuRoot0000".to_string()])
            .await
            .unwrap(),
        0
    );
    let [ds] = ids(&*store, &["DeCases0001"]).await[..] else {
        unreachable!()
    };
    let completion = CompletionWrite {
        data_set_id: ds,
        period_id: pe,
        org_unit_id: fac_a,
        attribute_option_combo_id: coc,
        completed_by: Some("test".into()),
        completed_at: datetime!(2024-02-02 0:00 UTC),
    };
    store
        .put_completions(std::slice::from_ref(&completion))
        .await
        .unwrap();
    store.put_completions(&[completion]).await.unwrap();
    assert_eq!(store.data_counts().await.unwrap().completions, 1);
}

async fn credentials_tokens_and_sessions(backend: Backend) {
    let Some((store, _dir)) = fresh_store(backend).await else {
        return;
    };
    store.migrate().await.unwrap();
    let change = MetadataChange {
        upserts: vec![object("UserA000001", "users", None)],
        credentials: vec![hisa_server::store::CredentialWrite {
            user_uid: "UserA000001".into(),
            username: "Amina".into(),
            password_hash: Some("hash1".into()),
            disabled: false,
        }],
        ..MetadataChange::default()
    };
    store.apply_metadata(&change).await.unwrap();
    let c = store
        .credential_by_username("amina")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.username, "Amina");
    assert_eq!(c.password_hash.as_deref(), Some("hash1"));
    // Re-importing the user without a password keeps the hash.
    let mut keep = change.clone();
    keep.credentials[0].password_hash = None;
    store.apply_metadata(&keep).await.unwrap();
    let c = store
        .credential_by_user_uid("UserA000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.password_hash.as_deref(), Some("hash1"));
    store.set_password("UserA000001", "hash2").await.unwrap();
    let c = store
        .credential_by_username("AMINA")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.password_hash.as_deref(), Some("hash2"));

    store
        .create_api_token("TokenA00001", "UserA000001", "tokenhash", None)
        .await
        .unwrap();
    let t = store.api_token_by_hash("tokenhash").await.unwrap().unwrap();
    assert_eq!(t.user_uid, "UserA000001");
    assert!(store.api_token_by_hash("other").await.unwrap().is_none());

    let session = hisa_server::store::SessionRecord {
        id_hash: "sessionhash".into(),
        user_uid: "UserA000001".into(),
        csrf_token: "csrf".into(),
        expires_at: datetime!(2099-01-01 0:00 UTC),
    };
    store.create_session(&session).await.unwrap();
    assert_eq!(
        store
            .session_by_hash("sessionhash")
            .await
            .unwrap()
            .unwrap()
            .csrf_token,
        "csrf"
    );
    store.delete_session("sessionhash").await.unwrap();
    assert!(store
        .session_by_hash("sessionhash")
        .await
        .unwrap()
        .is_none());

    // A deleted user's credentials stop working.
    store
        .apply_metadata(&MetadataChange {
            deletes: vec!["UserA000001".into()],
            ..MetadataChange::default()
        })
        .await
        .unwrap();
    assert!(store
        .credential_by_username("amina")
        .await
        .unwrap()
        .is_none());
    assert!(store
        .api_token_by_hash("tokenhash")
        .await
        .unwrap()
        .is_none());
}

on_both_stores!(
    migrations_are_idempotent_and_versioned,
    a_failed_change_writes_nothing,
    data_values_upsert_by_key_and_scope_by_subtree,
    credentials_tokens_and_sessions,
);
