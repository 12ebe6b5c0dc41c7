//! The retained message store: one message per topic name, found by topic filter.
//!
//! A trie by topic level whose children are ordered, so that every walk is in
//! [topic order](topic_order) and deterministic: a node keeps up to [`CHILDREN_FEW_MAX`] children
//! in a sorted vector (most nodes have one child, and a `BTreeMap` allocates eleven slots for it)
//! and more in a `BTreeMap`. That order also lets a wildcard SUBSCRIBE against a huge store be
//! served in slices: [`RetainedStore::scan`] visits a bounded number of messages and returns
//! where to resume, without revisiting or skipping any message.
//!
//! Pure and core-local: no I/O, no locks. Nothing recurses, so a topic of 65,535 levels cannot
//! exhaust the stack, not even when the store is dropped.

use std::cmp::Ordering;
use std::collections::btree_map::{self, BTreeMap};
use std::mem;
use std::ops::Bound;
use std::slice;

/// Up to this many children of a node are kept in a sorted vector; more go to a `BTreeMap`.
pub const CHILDREN_FEW_MAX: usize = 16;
/// A map of children that shrinks below this size goes back to a vector.
const CHILDREN_FEW_MIN: usize = 8;

/// The order in which the store visits topics: level by level, each level compared bytewise,
/// a topic before the topics below it (`a` < `a/b` < `a/b/c` < `a-c` < `b`). The same as
/// comparing bytewise with `/` sorting before every other byte.
pub fn topic_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// The children of a node, ordered by level name.
enum Children<V> {
    /// Few children: a vector sorted by level, with no spare room.
    Few(Vec<(Box<str>, Node<V>)>),
    /// Many children. Boxed so that `Children` stays 24 bytes rather than 32.
    #[allow(clippy::box_collection)]
    Many(Box<BTreeMap<Box<str>, Node<V>>>),
}

/// An iterator over a range of [`Children`], in order.
enum ChildIter<'a, V> {
    Few(slice::Iter<'a, (Box<str>, Node<V>)>),
    Many(btree_map::Range<'a, Box<str>, Node<V>>),
}

impl<V> Clone for ChildIter<'_, V> {
    fn clone(&self) -> Self {
        match self {
            ChildIter::Few(it) => ChildIter::Few(it.clone()),
            ChildIter::Many(it) => ChildIter::Many(it.clone()),
        }
    }
}

impl<'a, V> Iterator for ChildIter<'a, V> {
    type Item = (&'a str, &'a Node<V>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ChildIter::Few(it) => it.next().map(|(k, n)| (&**k, n)),
            ChildIter::Many(it) => it.next().map(|(k, n)| (&**k, n)),
        }
    }
}

impl<V> Children<V> {
    fn len(&self) -> usize {
        match self {
            Children::Few(v) => v.len(),
            Children::Many(m) => m.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn find(v: &[(Box<str>, Node<V>)], level: &str) -> Result<usize, usize> {
        v.binary_search_by(|(k, _)| (**k).cmp(level))
    }

    #[inline]
    fn get(&self, level: &str) -> Option<&Node<V>> {
        match self {
            Children::Few(v) => Self::find(v, level).ok().map(|i| &v[i].1),
            Children::Many(m) => m.get(level),
        }
    }

    fn get_mut(&mut self, level: &str) -> Option<&mut Node<V>> {
        match self {
            Children::Few(v) => Self::find(v, level).ok().map(|i| &mut v[i].1),
            Children::Many(m) => m.get_mut(level),
        }
    }

    fn get_or_insert(&mut self, level: &str) -> &mut Node<V> {
        if let Children::Few(v) = self {
            if v.len() >= CHILDREN_FEW_MAX && Self::find(v, level).is_err() {
                let map: BTreeMap<Box<str>, Node<V>> = mem::take(v).into_iter().collect();
                *self = Children::Many(Box::new(map));
            }
        }
        match self {
            Children::Few(v) => {
                let i = match Self::find(v, level) {
                    Ok(i) => i,
                    Err(i) => {
                        v.reserve_exact(1);
                        v.insert(i, (level.into(), Node::default()));
                        i
                    }
                };
                &mut v[i].1
            }
            Children::Many(m) => {
                // Two lookups rather than `entry`, which would allocate the key on every hit.
                if !m.contains_key(level) {
                    m.insert(level.into(), Node::default());
                }
                m.get_mut(level).expect("inserted above")
            }
        }
    }

    fn remove(&mut self, level: &str) -> Option<Node<V>> {
        match self {
            Children::Few(v) => {
                let i = Self::find(v, level).ok()?;
                let (_, node) = v.remove(i);
                if v.len() * 2 <= v.capacity() {
                    v.shrink_to_fit();
                }
                Some(node)
            }
            Children::Many(m) => {
                let node = m.remove(level)?;
                if m.len() < CHILDREN_FEW_MIN {
                    let few: Vec<(Box<str>, Node<V>)> = mem::take(&mut **m).into_iter().collect();
                    *self = Children::Few(few);
                }
                Some(node)
            }
        }
    }

    /// The children from `lower` (a bound on the level name) to `upper`, in order.
    fn range<'a>(&'a self, lower: Bound<&str>, upper: Bound<&str>) -> ChildIter<'a, V> {
        match self {
            Children::Few(v) => {
                let start = match lower {
                    Bound::Unbounded => 0,
                    Bound::Included(l) => v.partition_point(|(k, _)| **k < *l),
                    Bound::Excluded(l) => v.partition_point(|(k, _)| **k <= *l),
                };
                let end = match upper {
                    Bound::Unbounded => v.len(),
                    Bound::Included(u) => v.partition_point(|(k, _)| **k <= *u),
                    Bound::Excluded(u) => v.partition_point(|(k, _)| **k < *u),
                };
                ChildIter::Few(v[start..end.max(start)].iter())
            }
            Children::Many(m) => ChildIter::Many(m.range::<str, _>((lower, upper))),
        }
    }

    /// Moves the children out, into `out`.
    fn take_all(&mut self, out: &mut Vec<Node<V>>) {
        match mem::replace(self, Children::Few(Vec::new())) {
            Children::Few(v) => out.extend(v.into_iter().map(|(_, n)| n)),
            Children::Many(m) => out.extend(m.into_values()),
        }
    }
}

/// One level of the trie.
struct Node<V> {
    children: Children<V>,
    value: Option<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            children: Children::Few(Vec::new()),
            value: None,
        }
    }
}

impl<V> Node<V> {
    #[cfg(test)]
    fn count_nodes(&self) -> usize {
        let mut stack = vec![self];
        let mut count = 0;
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(
                node.children
                    .range(Bound::Unbounded, Bound::Unbounded)
                    .map(|(_, n)| n),
            );
        }
        count
    }
}

impl<V> Drop for Node<V> {
    /// Drops the subtree without recursion: a topic may have tens of thousands of levels.
    fn drop(&mut self) {
        if self.children.is_empty() {
            return;
        }
        let mut pending = Vec::new();
        self.children.take_all(&mut pending);
        while let Some(mut node) = pending.pop() {
            if !node.children.is_empty() {
                node.children.take_all(&mut pending);
            }
        }
    }
}

/// The level of `s` that starts at byte `pos`, and where the next one starts (`s.len() + 1`
/// when there is none); `None` when `pos` is past the last level.
#[inline]
fn level_at(s: &str, pos: usize) -> Option<(&str, usize)> {
    let rest = s.get(pos..)?;
    Some(match rest.find('/') {
        Some(i) => (&rest[..i], pos + i + 1),
        None => (rest, s.len() + 1),
    })
}

/// Where a node stands against the filter: the byte position of the filter level its children
/// must match, and whether a `#` above it already matched everything below.
#[derive(Clone, Copy)]
struct Mode {
    fpos: usize,
    hash: bool,
}

/// A walk of the trie in topic order for one filter.
struct Walk<'a, 'f, V> {
    filter: &'f str,
    /// The topic of the node last entered.
    topic: String,
    stack: Vec<Frame<'a, V>>,
}

/// The children of one node still to visit.
struct Frame<'a, V> {
    children: ChildIter<'a, V>,
    /// Length of the topic of the node the children belong to.
    base: usize,
    /// Whether that node is the root: its children take no leading `/`, and `+` or `#` does
    /// not match a first level that begins with `$` [MQTT-4.7.2-1].
    root: bool,
    mode: Mode,
}

impl<'a, 'f, V> Walk<'a, 'f, V> {
    /// The mode of the child `level` of a node in `mode`, `None` if no topic at or below the
    /// child matches the filter.
    fn child_mode(&self, mode: Mode, root: bool, level: &str) -> Option<Mode> {
        if mode.hash {
            return Some(mode);
        }
        let (want, next) = level_at(self.filter, mode.fpos)?;
        let wildcard_ok = !(root && level.starts_with('$'));
        match want {
            "#" if wildcard_ok => Some(Mode {
                fpos: next,
                hash: true,
            }),
            "+" if wildcard_ok => Some(Mode {
                fpos: next,
                hash: false,
            }),
            "#" | "+" => None,
            _ if want == level => Some(Mode {
                fpos: next,
                hash: false,
            }),
            _ => None,
        }
    }

    /// Whether the topic of a node in `mode` matches the filter.
    fn matches(&self, mode: Mode) -> bool {
        mode.hash
            || match level_at(self.filter, mode.fpos) {
                None => true,
                // `a/#` matches `a`.
                Some((level, _)) => level == "#",
            }
    }

    /// Pushes the children of `node` (in `mode`) that may lead to a match, those after `after`
    /// only if given.
    fn push_children(&mut self, node: &'a Node<V>, mode: Mode, root: bool, after: Option<&str>) {
        if node.children.is_empty() {
            return;
        }
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let children = if mode.hash {
            node.children.range(lower, Bound::Unbounded)
        } else {
            let Some((want, _)) = level_at(self.filter, mode.fpos) else {
                return;
            };
            if want == "#" || want == "+" {
                node.children.range(lower, Bound::Unbounded)
            } else if after.is_none_or(|after| want > after) {
                node.children
                    .range(Bound::Included(want), Bound::Included(want))
            } else {
                return;
            }
        };
        self.stack.push(Frame {
            children,
            base: self.topic.len(),
            root,
            mode,
        });
    }

    /// Appends `level` to the topic of a node (the root if `root`).
    fn enter(&mut self, base: usize, root: bool, level: &str) {
        self.topic.truncate(base);
        if !root {
            self.topic.push('/');
        }
        self.topic.push_str(level);
    }

    /// Sets up the walk to continue strictly after the topic `after`: the children of every
    /// node on its path that come after it, deepest last so that they are visited first.
    fn resume(&mut self, root: &'a Node<V>, after: &str) {
        let mut node = root;
        let mut mode = Mode {
            fpos: 0,
            hash: false,
        };
        let mut is_root = true;
        for level in after.split('/') {
            self.push_children(node, mode, is_root, Some(level));
            let Some(child_mode) = self.child_mode(mode, is_root, level) else {
                return;
            };
            let Some(child) = node.children.get(level) else {
                return;
            };
            let base = self.topic.len();
            self.enter(base, is_root, level);
            (node, mode, is_root) = (child, child_mode, false);
        }
        // The topics below `after` come right after it.
        self.push_children(node, mode, false, None);
    }

    /// Visits up to `budget` matching messages. Returns whether the walk may have more.
    fn run(&mut self, budget: usize, f: &mut impl FnMut(&str, &V)) -> bool {
        let mut visited = 0;
        while let Some(frame) = self.stack.last_mut() {
            let Some((level, child)) = frame.children.next() else {
                self.stack.pop();
                continue;
            };
            let (base, root, mode) = (frame.base, frame.root, frame.mode);
            let Some(child_mode) = self.child_mode(mode, root, level) else {
                continue;
            };
            self.enter(base, root, level);
            // Pre-order: the children come after the node itself, so push them before the
            // budget may stop the walk at the node.
            self.push_children(child, child_mode, false, None);
            if let Some(value) = &child.value {
                if self.matches(child_mode) {
                    f(&self.topic, value);
                    visited += 1;
                    if visited >= budget {
                        // Say "done" rather than "may have more" when nothing is left.
                        while let Some(frame) = self.stack.last() {
                            if frame.children.clone().next().is_some() {
                                return true;
                            }
                            self.stack.pop();
                        }
                        return false;
                    }
                }
            }
        }
        false
    }
}

/// Retained messages by topic name, one `V` per topic.
pub struct RetainedStore<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for RetainedStore<V> {
    fn default() -> Self {
        RetainedStore {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<V> std::fmt::Debug for RetainedStore<V> {
    /// The count only: a derived walk of the trie would recurse once per level.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetainedStore")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl<V> RetainedStore<V> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the store holds no message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Retains `value` for `topic`, a valid topic name (checked in debug builds only), and
    /// returns the message it replaces.
    pub fn set(&mut self, topic: &str, value: V) -> Option<V> {
        debug_assert!(
            ringmq_codec::topic::validate_topic_name(topic).is_ok(),
            "invalid topic name {topic:?}"
        );
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_or_insert(level);
        }
        let old = node.value.replace(value);
        self.len += usize::from(old.is_none());
        old
    }

    /// The message retained for `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.value.as_ref()
    }

    /// Removes the message retained for `topic` and returns it. Nodes left without message and
    /// children are freed, so memory follows the live messages.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_mut(level)?;
        }
        let old = node.value.take()?;
        self.len -= 1;
        if node.children.is_empty() {
            self.prune(topic);
        }
        Some(old)
    }

    /// Frees the nodes at the end of `topic` that hold no message and lead to no other node.
    /// Two passes down the path, no recursion: the first finds the topmost such node, the second
    /// detaches it from its parent.
    fn prune(&mut self, topic: &str) {
        let mut cut = None;
        {
            let mut levels = topic.split('/').peekable();
            let mut node = &self.root;
            let mut depth = 0usize;
            while let Some(level) = levels.next() {
                let Some(child) = node.children.get(level) else {
                    return;
                };
                node = child;
                let useless = node.value.is_none()
                    && node.children.len() == usize::from(levels.peek().is_some());
                if !useless {
                    cut = None;
                } else if cut.is_none() {
                    cut = Some(depth);
                }
                depth += 1;
            }
        }
        let Some(cut) = cut else { return };
        let mut levels = topic.split('/');
        let mut parent = &mut self.root;
        for _ in 0..cut {
            let Some(child) = levels.next().and_then(|l| parent.children.get_mut(l)) else {
                return;
            };
            parent = child;
        }
        if let Some(level) = levels.next() {
            parent.children.remove(level);
        }
    }

    /// Calls `f` with every retained message whose topic matches `filter`, a valid plain filter
    /// (checked in debug builds only), in [`topic_order`]. A `+` or `#` in the first level does
    /// not match a topic that begins with `$` [MQTT-4.7.2-1].
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&str, &V)) {
        debug_assert!(
            ringmq_codec::topic::validate_filter(filter).is_ok(),
            "invalid filter {filter:?}"
        );
        if !ringmq_codec::topic::has_wildcard(filter) {
            if let Some(value) = self.get(filter) {
                f(filter, value);
            }
            return;
        }
        self.scan(filter, None, usize::MAX, f);
    }

    /// Visits, in [`topic_order`], at most `budget` messages whose topic matches `filter` and
    /// comes strictly after `after` (from the first if `None`). Returns the topic of the last
    /// message visited if more may remain, to pass as `after` to the next call; `None` when the
    /// walk is done. A budget of 0 counts as 1, so that every call makes progress.
    ///
    /// Slices cover exactly what one [`for_each_match`](Self::for_each_match) would visit,
    /// each message once, as long as the store does not change in between; if it does, every
    /// message present throughout is still visited exactly once. The work of a call is its
    /// budget plus the non-matching nodes it passes over, and the depth of `after`.
    pub fn scan(
        &self,
        filter: &str,
        after: Option<&str>,
        budget: usize,
        mut f: impl FnMut(&str, &V),
    ) -> Option<String> {
        debug_assert!(
            ringmq_codec::topic::validate_filter(filter).is_ok(),
            "invalid filter {filter:?}"
        );
        let mut walk = Walk {
            filter,
            topic: String::new(),
            stack: Vec::new(),
        };
        match after {
            None => walk.push_children(
                &self.root,
                Mode {
                    fpos: 0,
                    hash: false,
                },
                true,
                None,
            ),
            Some(after) => walk.resume(&self.root, after),
        }
        walk.run(budget.max(1), &mut f).then_some(walk.topic)
    }

    /// Number of nodes, the root excluded.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.root.count_nodes() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringmq_codec::topic::matches;
    use std::collections::BTreeSet;

    fn store_of(topics: &[&str]) -> RetainedStore<String> {
        let mut store = RetainedStore::new();
        for t in topics {
            assert_eq!(store.set(t, format!("v:{t}")), None);
        }
        store
    }

    fn all<V>(store: &RetainedStore<V>, filter: &str) -> Vec<String> {
        let mut out = Vec::new();
        store.for_each_match(filter, |t, _| out.push(t.to_owned()));
        out
    }

    /// The whole walk in slices of `budget`, checking that every value is the topic's.
    fn sliced(store: &RetainedStore<String>, filter: &str, budget: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let before = out.len();
            let next = store.scan(filter, after.as_deref(), budget, |t, v| {
                assert_eq!(*v, format!("v:{t}"));
                out.push(t.to_owned());
            });
            assert!(out.len() - before <= budget.max(1));
            assert!(out.len() <= store.len(), "revisits");
            let Some(next) = next else { break };
            assert_eq!(out.last(), Some(&next));
            if let Some(prev) = &after {
                assert_eq!(topic_order(prev, &next), Ordering::Less, "no progress");
            }
            after = Some(next);
        }
        out
    }

    const SPEC_TOPICS: [&str; 9] = [
        "sport",
        "sport/",
        "sport/tennis",
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "/finance",
        "$SYS/monitor/Clients",
        "$SYS",
    ];

    #[test]
    fn spec_4_7_1_2_multi_level_wildcard() {
        let store = store_of(&SPEC_TOPICS);
        assert_eq!(
            all(&store, "sport/tennis/player1/#"),
            [
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon"
            ]
        );
        assert_eq!(
            all(&store, "sport/#"),
            [
                "sport",
                "sport/",
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon"
            ]
        );
        let mut everything = all(&store, "sport/#");
        everything.insert(0, "/finance".into());
        assert_eq!(all(&store, "#"), everything);
    }

    #[test]
    fn spec_4_7_1_3_single_level_wildcard() {
        let store = store_of(&SPEC_TOPICS);
        assert_eq!(all(&store, "sport/tennis/+"), ["sport/tennis/player1"]);
        assert_eq!(all(&store, "sport/+"), ["sport/", "sport/tennis"]);
        assert_eq!(all(&store, "+/+"), ["/finance", "sport/", "sport/tennis"]);
        assert_eq!(all(&store, "/+"), ["/finance"]);
        assert_eq!(all(&store, "+"), ["sport"]);
        assert_eq!(
            all(&store, "+/tennis/#"),
            [
                "sport/tennis",
                "sport/tennis/player1",
                "sport/tennis/player1/ranking",
                "sport/tennis/player1/score/wimbledon"
            ]
        );
        assert_eq!(all(&store, "sport/+/player1"), ["sport/tennis/player1"]);
    }

    #[test]
    fn spec_4_7_2_dollar_topics() {
        let store = store_of(&SPEC_TOPICS);
        assert!(!all(&store, "#").iter().any(|t| t.starts_with('$')));
        assert!(all(&store, "+/monitor/Clients").is_empty());
        assert!(all(&store, "+").iter().all(|t| !t.starts_with('$')));
        assert_eq!(all(&store, "$SYS/#"), ["$SYS", "$SYS/monitor/Clients"]);
        assert_eq!(all(&store, "$SYS/monitor/+"), ["$SYS/monitor/Clients"]);
        assert_eq!(
            all(&store, "$SYS/monitor/Clients"),
            ["$SYS/monitor/Clients"]
        );
        // `$` only matters in the first level.
        let store = store_of(&["a/$SYS", "$"]);
        assert_eq!(all(&store, "+/+"), ["a/$SYS"]);
        assert_eq!(all(&store, "#"), ["a/$SYS"]);
        assert_eq!(all(&store, "$"), ["$"]);
    }

    #[test]
    fn empty_levels_round_trip_in_topic_order() {
        let topics = [
            "b", "a-c", "a/b/c", "a", "a/b", "/a", "a//b", "a/", "/", "//", "a/b/", "a///",
        ];
        let store = store_of(&topics);
        let mut want: Vec<&str> = topics.to_vec();
        want.sort_by(|a, b| topic_order(a, b));
        assert_eq!(
            want,
            ["/", "//", "/a", "a", "a/", "a///", "a//b", "a/b", "a/b/", "a/b/c", "a-c", "b"]
        );
        assert_eq!(all(&store, "#"), want);
        for t in topics {
            assert_eq!(store.get(t), Some(&format!("v:{t}")));
            assert_eq!(all(&store, t), [t]);
        }
        assert_eq!(all(&store, "+/"), ["/", "a/"]);
        assert_eq!(
            all(&store, "a/+/#"),
            ["a/", "a///", "a//b", "a/b", "a/b/", "a/b/c"]
        );
        assert_eq!(store.get("a//"), None);
        assert_eq!(store.get("c"), None);
    }

    #[test]
    fn set_replace_get_remove_and_prune() {
        let mut store = RetainedStore::new();
        assert!(store.is_empty());
        assert_eq!(store.set("a/b/c", 1), None);
        assert_eq!(store.set("a/b/c", 2), Some(1));
        assert_eq!(store.set("a", 3), None);
        assert_eq!(store.set("a/x/y/z", 4), None);
        assert_eq!(store.len(), 3);
        // a, a/b, a/b/c, a/x, a/x/y, a/x/y/z
        assert_eq!(store.node_count(), 6);
        assert_eq!(store.get("a/b"), None);
        assert_eq!(store.remove("a/b"), None);
        assert_eq!(store.remove("a/b/c/d"), None);
        assert_eq!(store.remove("a/x/y/z"), Some(4));
        assert_eq!(store.node_count(), 3);
        assert_eq!(store.remove("a"), Some(3));
        // `a` stays: it leads to a/b/c.
        assert_eq!(store.node_count(), 3);
        assert_eq!(store.remove("a/b/c"), Some(2));
        assert_eq!(store.node_count(), 0);
        assert!(store.is_empty());
        assert_eq!(store.remove("a/b/c"), None);
    }

    #[test]
    fn churn_does_not_grow_the_store() {
        let mut store = RetainedStore::new();
        store.set("keep", 0);
        for round in 0..20 {
            for i in 0..200 {
                store.set(&format!("t/{round}/{i}/x"), i);
            }
            for i in 0..200 {
                assert_eq!(store.remove(&format!("t/{round}/{i}/x")), Some(i));
            }
            assert_eq!(store.node_count(), 1);
        }
        assert_eq!(store.len(), 1);
    }

    fn big_store() -> RetainedStore<String> {
        let mut store = RetainedStore::new();
        for i in 0..40 {
            for j in 0..40 {
                store.set(&format!("dev/{i}/s{j}"), format!("v:dev/{i}/s{j}"));
                if j % 3 == 0 {
                    store.set(&format!("dev/{i}/s{j}/cfg"), format!("v:dev/{i}/s{j}/cfg"));
                }
            }
            store.set(&format!("$SYS/{i}"), format!("v:$SYS/{i}"));
            store.set(&format!("dev/{i}"), format!("v:dev/{i}"));
        }
        store.set("/", "v:/".into());
        store
    }

    #[test]
    fn scan_in_slices_equals_for_each_match() {
        let store = big_store();
        for filter in [
            "#",
            "dev/#",
            "dev/+",
            "dev/+/+",
            "dev/+/s3/#",
            "+/+/+/cfg",
            "$SYS/+",
            "$SYS/#",
            "dev/7/s9",
            "+/#",
            "nothing/#",
        ] {
            let whole = all(&store, filter);
            let mut sorted = whole.clone();
            sorted.sort_by(|a, b| topic_order(a, b));
            assert_eq!(whole, sorted, "{filter}");
            for budget in [0, 1, 7, 1000] {
                assert_eq!(
                    sliced(&store, filter, budget),
                    whole,
                    "{filter} by {budget}"
                );
            }
        }
        assert_eq!(all(&store, "#").len(), 40 * (40 + 14 + 1) + 1);
    }

    #[test]
    fn scan_survives_changes_between_slices() {
        let mut store = big_store();
        let filter = "dev/#";
        let before = all(&store, filter);
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut removed = BTreeSet::new();
        let mut added = BTreeSet::new();
        let mut round = 0;
        loop {
            after = store.scan(filter, after.as_deref(), 5, |t, _| seen.push(t.to_owned()));
            assert!(seen.len() <= before.len() + added.len(), "revisits");
            let Some(last) = &after else { break };
            // Remove the resume point itself and a later topic; add topics here and there.
            let last = last.clone();
            store.remove(&last);
            removed.insert(last);
            if let Some(later) = before.get(seen.len() * 2) {
                if store.remove(later).is_some() {
                    removed.insert(later.clone());
                }
            }
            let new = format!("dev/{round}/new");
            store.set(&new, format!("v:{new}"));
            added.insert(new);
            round += 1;
        }
        // Every message present throughout is seen exactly once, in order.
        let seen_set: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(seen_set.len(), seen.len(), "revisited");
        let mut sorted = seen.clone();
        sorted.sort_by(|a, b| topic_order(a, b));
        assert_eq!(seen, sorted);
        for t in &before {
            assert!(seen_set.contains(t) || removed.contains(t), "skipped {t}");
        }
    }

    #[test]
    fn scan_after_any_topic() {
        let store = store_of(&["a", "a/b", "a/b/c", "a/c", "b", "b/x"]);
        let scan_all = |after: &str| {
            let mut out = Vec::new();
            assert_eq!(
                store.scan("#", Some(after), 100, |t, _| out.push(t.to_owned())),
                None
            );
            out
        };
        assert_eq!(scan_all("a"), ["a/b", "a/b/c", "a/c", "b", "b/x"]);
        assert_eq!(scan_all("a/b"), ["a/b/c", "a/c", "b", "b/x"]);
        // Absent topics resume at the right place too.
        assert_eq!(scan_all("a/a/z"), ["a/b", "a/b/c", "a/c", "b", "b/x"]);
        assert_eq!(scan_all("a/bb"), ["a/c", "b", "b/x"]);
        assert_eq!(scan_all("a-"), ["b", "b/x"]);
        assert_eq!(scan_all("b/x"), Vec::<String>::new());
        assert_eq!(scan_all("c"), Vec::<String>::new());
        assert_eq!(scan_all(""), ["a", "a/b", "a/b/c", "a/c", "b", "b/x"]);
    }

    #[test]
    fn deep_topics_do_not_overflow_the_stack() {
        let run = || {
            // 65,535 bytes: 32,768 levels, and 65,536 empty levels.
            let deep = vec!["a"; 32_768].join("/");
            let slashes = "/".repeat(65_535);
            let mut store = RetainedStore::new();
            store.set(&deep, 1);
            store.set(&slashes, 2);
            store.set(&deep[..deep.len() - 2], 3);
            assert_eq!(store.get(&deep), Some(&1));
            let mut got = Vec::new();
            store.for_each_match("#", |t, v| got.push((t.len(), *v)));
            assert_eq!(got, [(65_535, 2), (65_533, 3), (65_535, 1)]);
            let mut got = Vec::new();
            let next = store.scan("#", Some(&deep[..deep.len() - 2]), 1, |t, v| {
                got.push((t.len(), *v))
            });
            assert_eq!(got, [(65_535, 1)]);
            assert_eq!(next, None);
            assert_eq!(store.remove(&deep), Some(1));
            drop(store);
        };
        // A small stack: a recursive walk or drop would overflow it.
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(run)
            .unwrap()
            .join()
            .unwrap();
    }

    // Property tests against a naive reference built on `ringmq_codec::topic::matches`.

    use crate::test_strategies::{filter, topic};

    #[derive(Clone, Debug)]
    enum Op {
        Set(usize, u8),
        Remove(usize),
    }

    fn expected_nodes<'a>(topics: impl Iterator<Item = &'a String>) -> usize {
        let mut paths = BTreeSet::new();
        for t in topics {
            let levels: Vec<&str> = t.split('/').collect();
            for i in 1..=levels.len() {
                paths.insert(levels[..i].to_vec());
            }
        }
        paths.len()
    }

    fn check(
        store: &RetainedStore<String>,
        model: &std::collections::BTreeMap<String, String>,
        topics: &[String],
        filters: &[String],
        budget: usize,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(store.len(), model.len());
        prop_assert_eq!(store.is_empty(), model.is_empty());
        prop_assert_eq!(store.node_count(), expected_nodes(model.keys()));
        for t in topics {
            prop_assert_eq!(store.get(t), model.get(t));
        }
        for filter in filters {
            let mut want: Vec<(String, String)> = model
                .iter()
                .filter(|(t, _)| matches(t, filter))
                .map(|(t, v)| (t.clone(), v.clone()))
                .collect();
            want.sort_by(|a, b| topic_order(&a.0, &b.0));
            let mut got = Vec::new();
            store.for_each_match(filter, |t, v| got.push((t.to_owned(), v.clone())));
            prop_assert_eq!(&got, &want, "filter {:?}", filter);
            let want: Vec<String> = want.into_iter().map(|(t, _)| t).collect();
            for budget in [1, 7, 1000, budget] {
                let mut got = Vec::new();
                let mut after = None;
                loop {
                    after = store.scan(filter, after.as_deref(), budget, |t, _| {
                        got.push(t.to_owned())
                    });
                    if after.is_none() {
                        break;
                    }
                    prop_assert!(got.len() <= want.len());
                }
                prop_assert_eq!(&got, &want, "filter {:?} by {}", filter, budget);
            }
            // Resuming after any topic, present or not.
            for after in topics {
                let mut got = Vec::new();
                store.scan(filter, Some(after), usize::MAX, |t, _| {
                    got.push(t.to_owned())
                });
                let tail: Vec<String> = want
                    .iter()
                    .filter(|t| topic_order(t, after) == Ordering::Greater)
                    .cloned()
                    .collect();
                prop_assert_eq!(got, tail, "filter {:?} after {:?}", filter, after);
            }
        }
        Ok(())
    }

    fn set_remove(
        topics: &[String],
        filters: &[String],
        ops: &[Op],
        budget: usize,
        every: usize,
    ) -> Result<(), TestCaseError> {
        let mut store = RetainedStore::new();
        let mut model = std::collections::BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Op::Set(t, v) => {
                    let t = &topics[t % topics.len()];
                    let v = format!("{t}:{v}");
                    prop_assert_eq!(store.set(t, v.clone()), model.insert(t.clone(), v));
                }
                Op::Remove(t) => {
                    let t = &topics[t % topics.len()];
                    prop_assert_eq!(store.remove(t), model.remove(t));
                }
            }
            if i % every == every - 1 {
                check(&store, &model, topics, filters, budget)?;
            }
        }
        check(&store, &model, topics, filters, budget)?;
        for t in topics {
            prop_assert_eq!(store.remove(t), model.remove(t));
        }
        prop_assert!(store.is_empty());
        prop_assert_eq!(store.node_count(), 0);
        Ok(())
    }

    fn ops(topics: usize, len: usize) -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            3 => (0..topics, any::<u8>()).prop_map(|(t, v)| Op::Set(t, v)),
            2 => (0..topics).prop_map(Op::Remove),
        ];
        prop::collection::vec(op, 0..len)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn matches_like_the_reference(
            topics in prop::collection::vec(topic(false), 1..16),
            filters in prop::collection::vec(filter(false), 1..8),
            ops in ops(16, 60),
            budget in 1..5usize,
        ) {
            set_remove(&topics, &filters, &ops, budget, 4)?;
        }

        #[test]
        fn wide_nodes_like_the_reference(
            topics in prop::collection::vec(topic(true), 1..80),
            filters in prop::collection::vec(filter(true), 1..6),
            ops in ops(80, 300),
            budget in 1..5usize,
        ) {
            set_remove(&topics, &filters, &ops, budget, 25)?;
        }
    }
}
