//! Topic names and topic filters (spec 4.7), shared subscriptions (spec 4.8.2).
//!
//! The rules: levels are separated by `/`; `+` stands alone in a level and matches exactly one
//! level; `#` stands alone in the last level and matches its parent and any number of child
//! levels; neither matches a first level that begins with `$` [MQTT-4.7.2-1]. A topic name holds
//! no wildcard. Empty levels are legal.

use crate::DecodeError;

/// Prefix of a shared subscription: `$share/{group}/{filter}` (MQTT 5 4.8.2).
pub const SHARE_PREFIX: &str = "$share/";
/// Prefix of a queue subscription: `$queue/{filter}` (a shared subscription of the implicit group
/// named by [`QUEUE_GROUP`], as EMQX defines it).
pub const QUEUE_PREFIX: &str = "$queue/";
/// The group name a `$queue/` subscription belongs to.
pub const QUEUE_GROUP: &str = "$queue";

/// Checks a PUBLISH or will topic name: not empty [MQTT-4.7.3-1], no wildcard [MQTT-3.3.2-2].
#[inline]
pub fn validate_topic_name(topic: &str) -> Result<(), DecodeError> {
    if topic.is_empty() {
        return Err(DecodeError::EmptyTopicName);
    }
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(DecodeError::WildcardInTopicName);
    }
    Ok(())
}

/// Checks a plain topic filter: not empty [MQTT-4.7.3-1], `#` alone in the last level
/// [MQTT-4.7.1-1], `+` alone in its level [MQTT-4.7.1-2].
pub fn validate_filter(filter: &str) -> Result<(), DecodeError> {
    if filter.is_empty() {
        return Err(DecodeError::InvalidTopicFilter);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let multi = level.contains('#');
        let single = level.contains('+');
        if (multi && (level != "#" || levels.peek().is_some())) || (single && level != "+") {
            return Err(DecodeError::InvalidTopicFilter);
        }
    }
    Ok(())
}

/// A shared subscription, split into its group and its filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// The share name; [`QUEUE_GROUP`] for `$queue/` subscriptions.
    pub group: &'a str,
    /// The topic filter messages are matched against.
    pub filter: &'a str,
}

/// Splits `$share/{group}/{filter}` or `$queue/{filter}`. `Ok(None)` for a plain filter. The
/// share name must be non-empty and hold no `/`, `+` or `#`, and be followed by a non-empty
/// filter [MQTT-4.8.2-1], [MQTT-4.8.2-2]. The filter itself is not validated here.
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, DecodeError> {
    if let Some(rest) = filter.strip_prefix(SHARE_PREFIX) {
        let (group, inner) = rest
            .split_once('/')
            .ok_or(DecodeError::InvalidSharedSubscription)?;
        if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
            return Err(DecodeError::InvalidSharedSubscription);
        }
        return Ok(Some(SharedFilter {
            group,
            filter: inner,
        }));
    }
    if let Some(inner) = filter.strip_prefix(QUEUE_PREFIX) {
        if inner.is_empty() {
            return Err(DecodeError::InvalidSharedSubscription);
        }
        return Ok(Some(SharedFilter {
            group: QUEUE_GROUP,
            filter: inner,
        }));
    }
    Ok(None)
}

/// Checks a filter as it appears in SUBSCRIBE or UNSUBSCRIBE, shared or plain. Returns whether
/// it is a shared subscription.
pub fn validate_subscription_filter(filter: &str) -> Result<bool, DecodeError> {
    match parse_shared(filter)? {
        Some(shared) => validate_filter(shared.filter).map(|()| true),
        None => validate_filter(filter).map(|()| false),
    }
}

/// Whether a topic filter contains a wildcard.
pub fn has_wildcard(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

/// Whether `topic` (a valid topic name) matches `filter` (a valid plain filter).
pub fn matches(topic: &str, filter: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false; // [MQTT-4.7.2-1]
    }
    let mut t = topic.split('/');
    let mut f = filter.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_4_7_1_2_multi_level_examples() {
        for t in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert!(matches(t, "sport/tennis/player1/#"), "{t}");
        }
        assert!(matches("sport", "sport/#"));
        assert!(matches("sport/tennis/player1", "#"));
        assert!(validate_filter("sport/tennis#").is_err());
        assert!(validate_filter("sport/tennis/#/ranking").is_err());
    }

    #[test]
    fn spec_4_7_1_3_single_level_examples() {
        assert!(matches("sport/tennis/player1", "sport/tennis/+"));
        assert!(!matches("sport/tennis/player1/ranking", "sport/tennis/+"));
        assert!(!matches("sport", "sport/+"));
        assert!(matches("sport/", "sport/+"));
        assert!(matches("/finance", "+/+"));
        assert!(matches("/finance", "/+"));
        assert!(!matches("/finance", "+"));
        for ok in ["+", "+/tennis/#", "sport/+/player1"] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        assert!(validate_filter("sport+").is_err());
    }

    #[test]
    fn spec_4_7_2_dollar_topics() {
        assert!(!matches("$SYS/monitor/Clients", "#"));
        assert!(!matches("$SYS/monitor/Clients", "+/monitor/Clients"));
        assert!(matches("$SYS/monitor/Clients", "$SYS/#"));
        assert!(matches("$SYS/monitor/Clients", "$SYS/monitor/+"));
    }

    #[test]
    fn topic_names() {
        assert_eq!(validate_topic_name(""), Err(DecodeError::EmptyTopicName));
        assert_eq!(
            validate_topic_name("a/+"),
            Err(DecodeError::WildcardInTopicName)
        );
        assert_eq!(
            validate_topic_name("a/#"),
            Err(DecodeError::WildcardInTopicName)
        );
        assert!(validate_topic_name("/").is_ok());
        assert_eq!(validate_filter(""), Err(DecodeError::InvalidTopicFilter));
    }

    #[test]
    fn shared_subscriptions() {
        assert_eq!(
            parse_shared("$share/g1/a/+").unwrap(),
            Some(SharedFilter {
                group: "g1",
                filter: "a/+"
            })
        );
        assert_eq!(
            parse_shared("$queue/a/b").unwrap(),
            Some(SharedFilter {
                group: QUEUE_GROUP,
                filter: "a/b"
            })
        );
        assert_eq!(parse_shared("a/b").unwrap(), None);
        for bad in [
            "$share/",
            "$share//a",
            "$share/g",
            "$share/g/",
            "$share/g+/a",
            "$share/#/a",
            "$queue/",
        ] {
            assert_eq!(
                parse_shared(bad),
                Err(DecodeError::InvalidSharedSubscription),
                "{bad}"
            );
        }
        assert_eq!(validate_subscription_filter("$share/g/a/#"), Ok(true));
        assert_eq!(
            validate_subscription_filter("$share/g/a#"),
            Err(DecodeError::InvalidTopicFilter)
        );
        assert_eq!(validate_subscription_filter("$share"), Ok(false));
    }
}
