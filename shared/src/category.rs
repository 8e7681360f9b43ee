//! The category model's combinatorics: which category option combos a
//! category combo must have.
//!
//! A data value is keyed by a category option combo (COC), so COC UIDs must
//! never change once data refers to them. DHIS2 exports carry their COCs and
//! the importer keeps those UIDs; where a payload has none, Hisa derives UIDs
//! from the combo and its options, so every Hisa server derives the same ones.

use crate::metadata::defaults;
use crate::uid::Uid;

/// One required combination: option UIDs in category order, and DHIS2's
/// display name (option names joined with ", ").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combination {
    pub option_ids: Vec<String>,
    pub name: String,
}

impl Combination {
    /// Options as a set, for matching a COC whose options are listed in another order.
    pub fn key(&self) -> Vec<String> {
        let mut key = self.option_ids.clone();
        key.sort();
        key
    }
}

/// The cartesian product of the categories' options, first category
/// varying slowest, as DHIS2 orders them.
///
/// `categories` holds, per category in the combo's order, its options as
/// `(uid, name)` in the category's order.
pub fn combinations(categories: &[Vec<(String, String)>]) -> Vec<Combination> {
    let mut out = vec![Combination {
        option_ids: vec![],
        name: String::new(),
    }];
    for options in categories {
        let mut next = Vec::with_capacity(out.len() * options.len());
        for partial in &out {
            for (id, name) in options {
                let mut option_ids = partial.option_ids.clone();
                option_ids.push(id.clone());
                let name = if partial.name.is_empty() {
                    name.clone()
                } else {
                    format!("{}, {}", partial.name, name)
                };
                next.push(Combination { option_ids, name });
            }
        }
        out = next;
    }
    if categories.is_empty() {
        return vec![];
    }
    out
}

/// The UID Hisa gives a generated COC: stable across servers and imports.
pub fn derived_coc_uid(combo_id: &str, combination: &Combination) -> String {
    if combo_id == defaults::CATEGORY_COMBO {
        return defaults::CATEGORY_OPTION_COMBO.to_string();
    }
    Uid::derive(&format!("coc:{}:{}", combo_id, combination.key().join(","))).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opts(prefix: &str, n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("{prefix}{i}"), format!("{prefix} {i}")))
            .collect()
    }

    #[test]
    fn age_by_sex() {
        let combos = combinations(&[opts("age", 3), opts("sex", 2)]);
        assert_eq!(combos.len(), 6);
        assert_eq!(combos[0].name, "age 0, sex 0");
        assert_eq!(combos[1].name, "age 0, sex 1");
        assert_eq!(combos[5].option_ids, ["age2", "sex1"]);
    }

    #[test]
    fn default_combo_gets_default_coc() {
        let c = combinations(&[vec![(defaults::CATEGORY_OPTION.into(), "default".into())]]);
        assert_eq!(
            derived_coc_uid(defaults::CATEGORY_COMBO, &c[0]),
            defaults::CATEGORY_OPTION_COMBO
        );
    }

    proptest! {
        #[test]
        fn product_size_and_uniqueness(sizes in proptest::collection::vec(1usize..5, 1..4)) {
            let cats: Vec<_> = sizes.iter().enumerate().map(|(i, n)| opts(&format!("c{i}o"), *n)).collect();
            let combos = combinations(&cats);
            prop_assert_eq!(combos.len(), sizes.iter().product::<usize>());
            let mut uids: Vec<_> = combos.iter().map(|c| derived_coc_uid("comboUid001", c)).collect();
            uids.sort();
            uids.dedup();
            prop_assert_eq!(uids.len(), combos.len());
        }
    }
}
