//! Generators of topic names and filters shared by the property tests of the subscription trie
//! and the retained store (compared there against `ringmq_codec::topic::matches`).

use proptest::prelude::*;

/// A level name: from `a`, `b`, `$x` and the empty level; if `wide`, mostly from 24 more
/// names, so that nodes have enough children to go from vector to map and back.
pub(crate) fn level(wide: bool) -> BoxedStrategy<String> {
    let small = prop_oneof![Just("a"), Just("b"), Just("$x"), Just("")].prop_map(str::to_owned);
    if wide {
        prop_oneof![1 => small, 3 => (0..24u8).prop_map(|i| format!("n{i}"))].boxed()
    } else {
        small.boxed()
    }
}

/// Wide names come in shallow topics and filters, the small alphabet in deeper ones.
pub(crate) fn max_levels(wide: bool) -> usize {
    if wide {
        3
    } else {
        5
    }
}

pub(crate) fn topic(wide: bool) -> impl Strategy<Value = String> {
    prop::collection::vec(level(wide), 1..max_levels(wide))
        .prop_map(|levels| levels.join("/"))
        .prop_filter("non-empty", |t| !t.is_empty())
}

pub(crate) fn filter(wide: bool) -> impl Strategy<Value = String> {
    let inner = prop_oneof![4 => level(wide), 1 => Just("+".to_owned())];
    let last = prop_oneof![
        4 => level(wide),
        1 => Just("+".to_owned()),
        1 => Just("#".to_owned())
    ];
    (prop::collection::vec(inner, 0..max_levels(wide) - 1), last)
        .prop_map(|(mut levels, last)| {
            levels.push(last);
            levels.join("/")
        })
        .prop_filter("non-empty", |f| !f.is_empty())
}
