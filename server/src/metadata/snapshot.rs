//! The in-memory metadata snapshot every request reads from.
//!
//! Metadata is small next to data (a national DHIS2 has tens of thousands of
//! org units and a few thousand other objects) and read on every request, so
//! each instance holds all of it in memory, immutable, behind an `Arc`. A
//! metadata change writes the database, bumps `metadata_version`, and every
//! instance rebuilds its snapshot when it sees a newer version.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use hisa_shared::metadata::parse_date;
use hisa_shared::schema::reference_id;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::Date;

use crate::query::Resolver;
use crate::store::StoredObject;

#[derive(Debug)]
pub struct Object {
    pub id: i64,
    pub kind: String,
    pub body: Value,
}

/// An org unit's place in the tree, as derived from the stored bodies.
#[derive(Debug, Clone)]
pub struct TreeNode {
    pub id: i64,
    pub parent: Option<String>,
    pub path: String,
    pub level: u32,
    pub opening_date: Option<Date>,
    pub closed_date: Option<Date>,
}

#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: i64,
    objects: HashMap<String, Arc<Object>>,
    by_kind: BTreeMap<String, Vec<String>>,
    tree: HashMap<String, TreeNode>,
    children: HashMap<String, Vec<String>>,
    codes: HashMap<(String, String), String>,
    names: HashMap<(String, String), String>,
    usernames: HashMap<String, String>,
    uids_by_id: HashMap<i64, String>,
    /// Data entry rules derived from the metadata, built on first use.
    data_index: std::sync::OnceLock<crate::data::index::DataIndex>,
}

impl Snapshot {
    pub fn build(version: i64, stored: Vec<StoredObject>) -> Snapshot {
        let mut snap = Snapshot {
            version,
            ..Snapshot::default()
        };
        let mut pending = Vec::with_capacity(stored.len());
        for o in stored {
            snap.by_kind
                .entry(o.kind.clone())
                .or_default()
                .push(o.uid.clone());
            if let Some(code) = o.body.get("code").and_then(Value::as_str) {
                snap.codes
                    .insert((o.kind.clone(), code.to_string()), o.uid.clone());
            }
            if let Some(name) = o.body.get("name").and_then(Value::as_str) {
                snap.names
                    .insert((o.kind.clone(), name.to_string()), o.uid.clone());
            }
            snap.uids_by_id.insert(o.id, o.uid.clone());
            if o.kind == "users" {
                if let Some(name) = o.body.get("username").and_then(Value::as_str) {
                    snap.usernames.insert(name.to_lowercase(), o.uid.clone());
                }
            }
            if o.kind == "organisationUnits" {
                let node = TreeNode {
                    id: o.id,
                    parent: o
                        .body
                        .get("parent")
                        .and_then(reference_id)
                        .map(str::to_string),
                    path: o
                        .body
                        .get("path")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    level: o.body.get("level").and_then(Value::as_u64).unwrap_or(1) as u32,
                    opening_date: o
                        .body
                        .get("openingDate")
                        .and_then(Value::as_str)
                        .and_then(parse_date),
                    closed_date: o
                        .body
                        .get("closedDate")
                        .and_then(Value::as_str)
                        .and_then(parse_date),
                };
                if let Some(parent) = &node.parent {
                    snap.children
                        .entry(parent.clone())
                        .or_default()
                        .push(o.uid.clone());
                }
                snap.tree.insert(o.uid.clone(), node);
            }
            pending.push(o);
        }
        // Read-only tree fields DHIS2 serves on org units; computed here, never stored.
        for o in pending.iter_mut() {
            if o.kind != "organisationUnits" {
                continue;
            }
            let children = snap.children.get(&o.uid).cloned().unwrap_or_default();
            let path = snap
                .tree
                .get(&o.uid)
                .map(|n| n.path.clone())
                .unwrap_or_default();
            if let Value::Object(map) = &mut o.body {
                map.insert("leaf".into(), Value::Bool(children.is_empty()));
                map.insert(
                    "children".into(),
                    Value::Array(
                        children
                            .iter()
                            .map(|c| serde_json::json!({"id": c}))
                            .collect(),
                    ),
                );
                let ancestors: Vec<Value> = path
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != o.uid)
                    .map(|a| serde_json::json!({"id": a}))
                    .collect();
                map.insert("ancestors".into(), Value::Array(ancestors));
            }
        }
        for o in pending {
            snap.objects.insert(
                o.uid,
                Arc::new(Object {
                    id: o.id,
                    kind: o.kind,
                    body: o.body,
                }),
            );
        }
        snap
    }

    pub fn get(&self, uid: &str) -> Option<&Arc<Object>> {
        self.objects.get(uid)
    }

    /// The object with this UID if it is of this kind.
    pub fn get_of(&self, kind: &str, uid: &str) -> Option<&Value> {
        self.objects
            .get(uid)
            .filter(|o| o.kind == kind)
            .map(|o| &o.body)
    }

    /// A typed view of an object; `None` when absent or not of that shape.
    pub fn typed<T: DeserializeOwned>(&self, kind: &str, uid: &str) -> Option<T> {
        self.get_of(kind, uid)
            .and_then(|b| serde_json::from_value(b.clone()).ok())
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.by_kind.keys().map(String::as_str)
    }

    /// Objects of one kind, in the order they were first stored.
    pub fn all_of<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Value> + 'a {
        self.by_kind
            .get(kind)
            .into_iter()
            .flatten()
            .filter_map(|uid| self.objects.get(uid))
            .map(|o| &o.body)
    }

    pub fn count_of(&self, kind: &str) -> usize {
        self.by_kind.get(kind).map_or(0, Vec::len)
    }

    pub fn uid_by_code(&self, kind: &str, code: &str) -> Option<&str> {
        self.codes
            .get(&(kind.to_string(), code.to_string()))
            .map(String::as_str)
    }

    pub fn uid_by_name(&self, kind: &str, name: &str) -> Option<&str> {
        self.names
            .get(&(kind.to_string(), name.to_string()))
            .map(String::as_str)
    }

    /// The UID of the object with this internal id.
    pub fn uid_of(&self, id: i64) -> Option<&str> {
        self.uids_by_id.get(&id).map(String::as_str)
    }

    pub fn data_index(&self) -> &crate::data::index::DataIndex {
        self.data_index
            .get_or_init(|| crate::data::index::DataIndex::build(self))
    }

    pub fn user_uid_by_username(&self, username: &str) -> Option<&str> {
        self.usernames
            .get(&username.to_lowercase())
            .map(String::as_str)
    }

    pub fn org_unit(&self, uid: &str) -> Option<&TreeNode> {
        self.tree.get(uid)
    }

    pub fn org_units(&self) -> impl Iterator<Item = (&String, &TreeNode)> {
        self.tree.iter()
    }

    pub fn children_of(&self, uid: &str) -> &[String] {
        self.children.get(uid).map_or(&[], Vec::as_slice)
    }

    /// Whether `uid` lies in the subtree rooted at any of `roots` (inclusive).
    pub fn within_any(&self, uid: &str, roots: &[String]) -> bool {
        let Some(node) = self.tree.get(uid) else {
            return false;
        };
        roots.iter().any(|root| {
            self.tree
                .get(root)
                .is_some_and(|r| is_path_within(&node.path, &r.path))
        })
    }
}

/// `path` equals `root` or descends from it. UIDs have a fixed length, so a
/// prefix that ends at a `/` boundary is an ancestor.
pub fn is_path_within(path: &str, root: &str) -> bool {
    path == root
        || (path.len() > root.len()
            && path.starts_with(root)
            && path.as_bytes()[root.len()] == b'/')
}

impl Resolver for Snapshot {
    fn resolve(&self, uid: &str) -> Option<Cow<'_, Value>> {
        self.objects.get(uid).map(|o| Cow::Borrowed(&o.body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_containment() {
        assert!(is_path_within("/a/b", "/a"));
        assert!(is_path_within("/a", "/a"));
        assert!(!is_path_within("/ab", "/a"));
        assert!(!is_path_within("/a", "/a/b"));
    }
}
