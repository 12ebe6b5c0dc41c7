//! `topic::matches` against a naive recursive matcher. Input: a topic name, a NUL byte, a topic
//! filter (both UTF-8). Compared only when both validate; the shared subscription parser must
//! not panic on the filter either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmq_codec::topic;

/// The topic matching of MQTT 4.7, level by level.
fn reference_matches(topic: &str, filter: &str) -> bool {
    fn levels(topic: &[&str], filter: &[&str]) -> bool {
        match (filter.split_first(), topic.split_first()) {
            (None, None) => true,
            // `#` is the last level and matches its parent and any number of children.
            (Some((&"#", _)), _) => true,
            (Some((&"+", f)), Some((_, t))) => levels(t, f),
            (Some((fl, f)), Some((tl, t))) => fl == tl && levels(t, f),
            _ => false,
        }
    }
    let t: Vec<&str> = topic.split('/').collect();
    let f: Vec<&str> = filter.split('/').collect();
    // Wildcards in the first level never match a first level that begins with `$`.
    if t[0].starts_with('$') && (f[0] == "+" || f[0] == "#") {
        return false;
    }
    levels(&t, &f)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((name, filter)) = text.split_once('\0') else {
        return;
    };
    let _ = topic::validate_subscription_filter(filter);
    if filter.contains('\0')
        || topic::validate_topic_name(name).is_err()
        || topic::validate_filter(filter).is_err()
    {
        return;
    }
    assert_eq!(
        topic::matches(name, filter),
        reference_matches(name, filter),
        "topic {name:?} vs filter {filter:?}"
    );
});
