//! ACL files in Mosquitto's syntax:
//!
//! ```text
//! # comment
//! topic read public/#            lines before any `user` line: anonymous clients
//! user alice                     starts alice's block (to the next `user` line)
//! topic readwrite alice/#        read, write, readwrite (the default) or deny
//! topic deny alice/secret/#
//! pattern write devices/%c/up    every client; %c = client id, %u = user name
//! ```
//!
//! Semantics (Mosquitto's, with one rule made explicit): a client may read (write) a topic when
//! a `read`/`readwrite` (`write`/`readwrite`) line of its block or a pattern matches the topic
//! and no `deny` line of its block or pattern matches it: **deny wins**. Anything not granted
//! is denied. A wildcard rule never matches a topic starting with `$`, as in MQTT, so `$SYS`
//! needs its own lines. Patterns with `%u` do not apply to clients without a user name. A
//! client whose user name or client id contains `+` or `#` gets no pattern lines at all
//! (Mosquitto refuses such clients pattern access for the same reason: they could widen it).
//!
//! A subscription filter is granted when every topic it can match is readable: `a/#` readable
//! grants `a/b/+`, but `#` is refused if anything under it is not readable. This is decided
//! exactly (`covers`), within a work budget; past the budget it is refused.

use std::collections::HashMap;
use std::path::Path;

use ringmq_codec::topic;

use super::passwd::LineError;

/// What a line grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Subscribe and receive.
    Read,
    /// Publish.
    Write,
    /// Both.
    ReadWrite,
    /// Neither, and it wins over grants.
    Deny,
}

impl Access {
    fn reads(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }
    fn writes(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    filter: Box<str>,
}

/// A parsed ACL file.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<Box<str>, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// Calls of the coverage search allowed for one subscription check.
pub const COVER_BUDGET: u32 = 20_000;

impl Acl {
    /// Parses the text of a file; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Acl, LineError> {
        let mut acl = Acl::default();
        let mut user: Option<Box<str>> = None;
        for (i, raw) in text.split('\n').enumerate() {
            let err = |message: String| LineError {
                file: file.to_owned(),
                line: i + 1,
                message,
            };
            let line = raw.trim_end_matches(['\r', ' ', '\t']).trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = match line.split_once([' ', '\t']) {
                Some((k, r)) => (k, r.trim_start()),
                None => (line, ""),
            };
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(err("`user` needs a user name".into()));
                    }
                    user = Some(rest.into());
                    acl.users.entry(rest.into()).or_default();
                }
                "topic" | "pattern" => {
                    // As Mosquitto: with two words or more the first is the access type;
                    // a single word is the filter, read and write.
                    let (access, filter) = match rest.split_once([' ', '\t']) {
                        Some((a, f)) => match access_of(a) {
                            Some(access) => (access, f.trim_start()),
                            None => {
                                return Err(err(format!(
                                    "invalid access type {a:?} (expected read, write, \
                                     readwrite or deny)"
                                )))
                            }
                        },
                        None => match access_of(rest) {
                            Some(_) => {
                                return Err(err(format!(
                                    "`{keyword} {rest}` needs a topic filter after `{rest}`"
                                )))
                            }
                            None => (Access::ReadWrite, rest),
                        },
                    };
                    if filter.is_empty() {
                        return Err(err(format!(
                            "`{keyword}` needs a topic filter: {keyword} [read|write|readwrite|deny] FILTER"
                        )));
                    }
                    if let Err(e) = topic::validate_filter(filter) {
                        return Err(err(format!("invalid topic filter {filter:?}: {e}")));
                    }
                    if keyword == "topic" && (filter.contains("%c") || filter.contains("%u")) {
                        // Mosquitto substitutes only in `pattern` lines; say so rather than
                        // silently match the literal text.
                        return Err(err(format!(
                            "%c and %u are substituted only in `pattern` lines, not in `topic` \
                             ({filter:?})"
                        )));
                    }
                    let rule = Rule {
                        access,
                        filter: filter.into(),
                    };
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else {
                        match &user {
                            Some(u) => acl.users.entry(u.clone()).or_default().push(rule),
                            None => acl.anonymous.push(rule),
                        }
                    }
                }
                other => {
                    return Err(err(format!(
                        "unknown keyword {other:?} (expected user, topic or pattern)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    /// Reads and parses a file of at most `max_bytes`.
    pub fn load(path: &Path, max_bytes: u64) -> Result<Acl, LineError> {
        let text = super::read_bounded(path, max_bytes)?;
        Acl::parse(&text, &path.display().to_string())
    }

    /// Lines in the file (rules of every kind).
    pub fn rule_count(&self) -> usize {
        self.anonymous.len()
            + self.patterns.len()
            + self.users.values().map(Vec::len).sum::<usize>()
    }

    /// The rules that apply to one client.
    pub fn rules_for(&self, username: Option<&str>, client_id: &str) -> ClientRules {
        let mut r = ClientRules::default();
        let own = match username {
            Some(u) => self.users.get(u).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.anonymous,
        };
        for rule in own {
            r.add(rule.access, rule.filter.clone());
        }
        let dangerous = |s: &str| s.contains(['+', '#']);
        if !self.patterns.is_empty() {
            if username.is_some_and(dangerous) || dangerous(client_id) {
                tracing::info!(
                    client_id,
                    username,
                    "ACL patterns not applied: the user name or client id contains + or #"
                );
                return r;
            }
            for p in &self.patterns {
                if p.filter.contains("%u") && username.is_none() {
                    continue;
                }
                let f = p
                    .filter
                    .replace("%c", client_id)
                    .replace("%u", username.unwrap_or(""));
                if topic::validate_filter(&f).is_ok() {
                    r.add(p.access, f.into());
                }
            }
        }
        r
    }
}

fn access_of(word: &str) -> Option<Access> {
    Some(match word {
        "read" => Access::Read,
        "write" => Access::Write,
        "readwrite" => Access::ReadWrite,
        "deny" => Access::Deny,
        _ => return None,
    })
}

/// The rules of one client, substituted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRules {
    read: Vec<Box<str>>,
    write: Vec<Box<str>>,
    deny: Vec<Box<str>>,
}

impl ClientRules {
    fn add(&mut self, access: Access, filter: Box<str>) {
        if access == Access::Deny {
            self.deny.push(filter);
            return;
        }
        if access.reads() {
            self.read.push(filter.clone());
        }
        if access.writes() {
            self.write.push(filter);
        }
    }

    fn denied(&self, topic_name: &str) -> bool {
        self.deny.iter().any(|d| topic::matches(topic_name, d))
    }

    /// Whether the client may receive a message on `topic_name`.
    pub fn can_read(&self, topic_name: &str) -> bool {
        !self.denied(topic_name) && self.read.iter().any(|f| topic::matches(topic_name, f))
    }

    /// Whether the client may publish to `topic_name`.
    pub fn can_write(&self, topic_name: &str) -> bool {
        !self.denied(topic_name) && self.write.iter().any(|f| topic::matches(topic_name, f))
    }

    /// Whether the client may subscribe to `filter` (a valid plain filter): every topic it can
    /// match must be readable.
    pub fn can_subscribe(&self, filter: &str) -> bool {
        let s = root_levels(filter);
        if self.deny.iter().any(|d| overlap(&s, &root_levels(d), true)) {
            return false;
        }
        let rules: Vec<Vec<&str>> = self.read.iter().map(|f| root_levels(f)).collect();
        let refs: Vec<&[&str]> = rules.iter().map(Vec::as_slice).collect();
        let mut budget = COVER_BUDGET;
        covers(&s, &refs, true, &mut budget)
    }
}

/// The levels of a filter, with a lone `#` written `+/#` (the same topics: a topic has at least
/// one level), so that `#` never stands at the root in the searches below.
fn root_levels(filter: &str) -> Vec<&str> {
    if filter == "#" {
        vec!["+", "#"]
    } else {
        filter.split('/').collect()
    }
}

fn is_dollar(level: &str) -> bool {
    level.starts_with('$')
}

/// Whether some topic matches both filters (given as remaining levels; `#` matches zero or more
/// levels). At the root, wildcards do not match `$` levels.
pub(crate) fn overlap(a: &[&str], b: &[&str], root: bool) -> bool {
    match (a.first(), b.first()) {
        (Some(&"#"), _) | (_, Some(&"#")) => true,
        (None, None) => true,
        (None, _) | (_, None) => false,
        (Some(&x), Some(&y)) => {
            let level_ok = match (x, y) {
                ("+", "+") => true,
                ("+", l) | (l, "+") => !(root && is_dollar(l)),
                (l1, l2) => l1 == l2,
            };
            level_ok && overlap(&a[1..], &b[1..], false)
        }
    }
}

/// The rules that still apply after one more topic level: `Some(v)` a literal level `v`,
/// `None` a level equal to no literal in any rule.
fn advance<'a>(rules: &[&'a [&'a str]], v: Option<&str>, root: bool) -> Vec<&'a [&'a str]> {
    rules
        .iter()
        .filter_map(|r| match r.first() {
            None => None,
            Some(&"#") => Some(*r),
            Some(&"+") => {
                if root && v.is_some_and(is_dollar) {
                    None
                } else {
                    Some(&r[1..])
                }
            }
            Some(l) => (Some(*l) == v).then(|| &r[1..]),
        })
        .collect()
}

/// The level values worth trying where the subscription has a wildcard: every literal the rules
/// have at this position, and one value equal to none of them.
fn candidates<'a>(rules: &[&'a [&'a str]], root: bool) -> Vec<Option<&'a str>> {
    let mut out: Vec<Option<&str>> = vec![None];
    for r in rules {
        if let Some(&l) = r.first() {
            if l != "+" && l != "#" && !(root && is_dollar(l)) && !out.contains(&Some(l)) {
                out.push(Some(l));
            }
        }
    }
    out
}

/// Whether every topic matched by `s` (remaining levels) is matched by one of `rules`.
/// Exact: a wildcard level of `s` can only be told apart by the literals of the rules at that
/// position, so trying each of them plus one fresh value decides it. Returns false when the
/// budget runs out.
pub(crate) fn covers(s: &[&str], rules: &[&[&str]], root: bool, budget: &mut u32) -> bool {
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    if !root && rules.iter().any(|r| *r == ["#"]) {
        return true;
    }
    match s.first() {
        None => rules.iter().any(|r| r.is_empty()),
        Some(&"#") => {
            // Zero more levels, and any level followed by `#` again.
            rules.iter().any(|r| r.is_empty())
                && candidates(rules, root)
                    .into_iter()
                    .all(|v| covers(s, &advance(rules, v, root), false, budget))
        }
        Some(&"+") => candidates(rules, root)
            .into_iter()
            .all(|v| covers(&s[1..], &advance(rules, v, root), false, budget)),
        Some(&l) => covers(&s[1..], &advance(rules, Some(l), root), false, budget),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# anonymous clients
topic read public/#
topic deny public/private/#

user alice
topic alice/#
topic read shared/+/status
topic deny alice/secret

user bob smith
topic write telemetry/bob

pattern readwrite devices/%c/#
pattern read users/%u/inbox
pattern deny devices/%c/locked
topic read $SYS/broker/#
";

    fn acl() -> Acl {
        Acl::parse(FILE, "acl").unwrap()
    }

    #[test]
    fn anonymous_section_and_patterns() {
        let r = acl().rules_for(None, "dev1");
        assert!(r.can_read("public/news"));
        assert!(!r.can_write("public/news"));
        assert!(!r.can_read("public/private/x"), "deny wins");
        assert!(r.can_read("devices/dev1/temp") && r.can_write("devices/dev1/temp"));
        assert!(!r.can_read("devices/dev2/temp"));
        assert!(!r.can_write("devices/dev1/locked"), "deny pattern");
        assert!(
            !r.can_read("users//inbox"),
            "%u patterns skip anonymous clients"
        );
        assert!(!r.can_read("alice/x"));
        // The `topic` line after `user bob smith` belongs to bob, not to anonymous clients.
        assert!(!r.can_read("$SYS/broker/uptime"));
    }

    #[test]
    fn user_blocks() {
        let a = acl();
        let alice = a.rules_for(Some("alice"), "c1");
        assert!(alice.can_read("alice/x") && alice.can_write("alice/x/y"));
        assert!(!alice.can_write("alice/secret"));
        assert!(alice.can_read("shared/k/status") && !alice.can_write("shared/k/status"));
        assert!(
            !alice.can_read("public/news"),
            "the anonymous block is not alice's"
        );
        assert!(alice.can_read("users/alice/inbox"));
        assert!(!alice.can_read("users/bob/inbox"));
        assert!(alice.can_write("devices/c1/x"));
        let bob = a.rules_for(Some("bob smith"), "c2");
        assert!(bob.can_write("telemetry/bob") && !bob.can_read("telemetry/bob"));
        assert!(bob.can_read("$SYS/broker/uptime"));
        assert!(bob.can_subscribe("$SYS/broker/#"));
        // A user without a block gets the patterns only.
        let carol = a.rules_for(Some("carol"), "c3");
        assert!(carol.can_read("users/carol/inbox"));
        assert!(!carol.can_read("public/x"));
    }

    #[test]
    fn dangerous_names_get_no_patterns() {
        let a = acl();
        assert!(!a.rules_for(Some("x"), "dev/#").can_read("devices/dev/#/a"));
        assert!(!a.rules_for(Some("+"), "c").can_read("users/+/inbox"));
        assert!(!a.rules_for(Some("#"), "c").can_subscribe("users/#"));
        // Their own block still applies.
        let text = "user a+b\ntopic t\npattern read p/%u\n";
        let r = Acl::parse(text, "f").unwrap().rules_for(Some("a+b"), "c");
        assert!(r.can_read("t") && !r.can_read("p/a+b"));
    }

    #[test]
    fn subscriptions_must_be_covered() {
        let a = acl();
        let alice = a.rules_for(Some("alice"), "c1");
        assert!(alice.can_subscribe("alice/x/+"));
        assert!(alice.can_subscribe("shared/+/status"));
        assert!(alice.can_subscribe("shared/x/status"));
        assert!(!alice.can_subscribe("shared/#"));
        assert!(!alice.can_subscribe("alice/#"), "alice/secret is denied");
        assert!(!alice.can_subscribe("alice/+"), "alice/secret is denied");
        assert!(alice.can_subscribe("alice/+/+"));
        assert!(!alice.can_subscribe("#"));
        assert!(!alice.can_subscribe("+/x"));
        let anon = a.rules_for(None, "d");
        assert!(anon.can_subscribe("public/news/#"));
        assert!(!anon.can_subscribe("public/#"));
        assert!(anon.can_subscribe("devices/d/x/#"));
        assert!(
            !anon.can_subscribe("devices/d/+"),
            "devices/d/locked is denied"
        );
        assert!(
            !anon.can_subscribe("devices/d/#"),
            "devices/d/locked is denied"
        );
    }

    #[test]
    fn wildcards_do_not_reach_dollar_topics() {
        let r = Acl::parse("topic #\n", "f").unwrap().rules_for(None, "c");
        assert!(r.can_read("a/b") && r.can_write("x"));
        assert!(!r.can_read("$SYS/broker/uptime"));
        assert!(r.can_subscribe("#"));
        assert!(r.can_subscribe("+/a"));
        assert!(!r.can_subscribe("$SYS/#"));
        let r = Acl::parse("topic +/#\ntopic $SYS/#\n", "f")
            .unwrap()
            .rules_for(None, "c");
        assert!(r.can_subscribe("#") && r.can_subscribe("$SYS/x"));
        // Deny `#` does not deny $ topics either.
        let r = Acl::parse("topic $SYS/#\ntopic deny #\n", "f")
            .unwrap()
            .rules_for(None, "c");
        assert!(r.can_read("$SYS/x") && r.can_subscribe("$SYS/+"));
    }

    #[test]
    fn covering_needs_a_union_sometimes() {
        let r = Acl::parse("topic read a\ntopic read a/+/#\n", "f")
            .unwrap()
            .rules_for(None, "c");
        assert!(r.can_subscribe("a/#"));
        let r = Acl::parse("topic read a/+/#\n", "f")
            .unwrap()
            .rules_for(None, "c");
        assert!(!r.can_subscribe("a/#"), "a itself is not readable");
        assert!(r.can_subscribe("a/+"));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (bad, needle) in [
            ("user", "user name"),
            ("user   ", "user name"),
            ("topic", "topic filter"),
            ("topic read", "needs a topic filter"),
            ("topic readonly a/b", "invalid access type"),
            ("topic a b", "invalid access type"),
            ("topic read a/#/b", "invalid topic filter"),
            ("topic write a+", "invalid topic filter"),
            ("pattern deny", "needs a topic filter"),
            ("topic read a/%c", "pattern"),
            ("subscribe a", "unknown keyword"),
            ("topicread a", "unknown keyword"),
        ] {
            let text = format!("# c\ntopic a\n{bad}\n");
            let e = Acl::parse(&text, "etc/acl").unwrap_err();
            assert_eq!(e.line, 3, "{bad}: {e}");
            let shown = e.to_string();
            assert!(shown.starts_with("etc/acl:3: "), "{shown}");
            assert!(shown.contains(needle), "{bad}: {shown}");
        }
        // A topic filter may hold spaces; tabs separate like spaces; CRLF is fine.
        let r = Acl::parse("topic read a b/c\r\n\ttopic\twrite x\n", "f")
            .unwrap()
            .rules_for(None, "c");
        assert!(r.can_read("a b/c") && r.can_write("x"));
    }

    #[test]
    fn hostile_input_never_panics() {
        for text in [
            "\u{0}",
            "topic \u{0}",
            "user \n topic +",
            "pattern %",
            "topic %c%u",
            "topic  ",
        ] {
            if let Ok(a) = Acl::parse(text, "f") {
                let r = a.rules_for(Some("%u"), "%c");
                let _ = r.can_subscribe("#");
            }
        }
    }

    #[test]
    fn the_budget_bounds_the_search() {
        // Many literals at many wildcard levels: refused within the budget, no hang.
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!("topic read {i}/{i}/{i}/{i}/{i}/{i}\n"));
        }
        text.push_str("topic read +/+/+/+/+/x\n");
        let r = Acl::parse(&text, "f").unwrap().rules_for(None, "c");
        assert!(!r.can_subscribe("+/+/+/+/+/+"));
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        const LEVELS: [&str; 4] = ["a", "b", "$s", "+"];

        fn filter() -> impl Strategy<Value = String> {
            (
                proptest::collection::vec(proptest::sample::select(&LEVELS[..]), 1..=3),
                any::<bool>(),
            )
                .prop_map(|(levels, hash)| {
                    let mut f = levels.join("/");
                    if hash {
                        f.push_str("/#");
                    }
                    f
                })
                .boxed()
                .prop_union(Just("#".to_owned()).boxed())
        }

        /// Every topic of 1 to 5 levels over a, b, $s and a value no filter uses.
        fn topics() -> Vec<String> {
            let values = ["a", "b", "$s", "z"];
            let mut out: Vec<Vec<&str>> = vec![vec![]];
            let mut all = Vec::new();
            for _ in 0..5 {
                out = out
                    .iter()
                    .flat_map(|t| {
                        values.iter().map(move |v| {
                            let mut t = t.clone();
                            t.push(*v);
                            t
                        })
                    })
                    .collect();
                all.extend(out.iter().map(|t| t.join("/")));
            }
            all
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(400))]
            #[test]
            fn subscription_check_matches_brute_force(
                sub in filter(),
                rules in proptest::collection::vec((filter(), 0..4u8), 0..4),
            ) {
                let mut text = String::new();
                for (f, a) in &rules {
                    let a = ["read", "write", "readwrite", "deny"][usize::from(*a)];
                    text.push_str(&format!("topic {a} {f}\n"));
                }
                let r = Acl::parse(&text, "p").unwrap().rules_for(None, "c");
                let brute = topics()
                    .iter()
                    .filter(|t| topic::matches(t, &sub))
                    .all(|t| r.can_read(t));
                prop_assert_eq!(r.can_subscribe(&sub), brute, "sub {} rules {:?}", sub, text);
            }
        }
    }
}
