//! The subscription store: topic filters to subscriber entries, matched against topic names.
//!
//! A trie by topic level, in the style of FlashMQ's subscription store. Each node has its
//! children by level name, a dedicated `+` child, the entries of the filters that end at the node
//! and the entries of the filters that end with `#` below it. Filters whose first level begins
//! with `$` live under a separate root, so that a `+` or `#` in the first level never reaches a
//! topic that begins with `$` [MQTT-4.7.2-1].
//!
//! A node keeps a few children in a short vector searched linearly and switches to a hash map
//! when it has more than [`CHILDREN_FEW_MAX`]: most nodes of a real subscription set have one
//! child (`devices/{id}/cmd/#`), and a hash map holds at least four slots.
//!
//! Pure and core-local: no I/O, no locks. Matching does not allocate unless more than
//! [`INLINE_BRANCHES`] branches are pending at once (see [`SubscriptionTrie::for_each_match`]);
//! nothing recurses, so neither a topic nor a filter of 65,535 levels can exhaust the stack, not
//! even when the trie is dropped.

use std::collections::HashMap;
use std::hash::Hash;
use std::mem;

/// How many pending branches [`SubscriptionTrie::for_each_match`] keeps on the machine stack
/// before it spills to the heap. A branch is pending for every level of the topic at which both
/// the literal child and the `+` child exist; 32 covers any realistic subscription set.
pub const INLINE_BRANCHES: usize = 32;

/// Up to this many children of a node are kept in a vector and searched linearly; more go to a
/// hash map.
pub const CHILDREN_FEW_MAX: usize = 8;
/// A map of children that shrinks below this size goes back to a vector.
const CHILDREN_FEW_MIN: usize = 4;

/// Up to this many entries per filter are kept in a vector and searched linearly.
const FEW_MAX: usize = 16;
/// A map of entries that shrinks below this size goes back to a vector.
const FEW_MIN: usize = 8;

/// The entries (subscribers) of one filter.
enum Entries<K, V> {
    /// Few entries: a vector, searched linearly.
    Few(Vec<(K, V)>),
    /// Many entries: a map, so that a popular filter does not make subscribing quadratic.
    /// Boxed so that `Entries` stays 24 bytes rather than 48: every node has two of them.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<K, V>>),
}

impl<K, V> Default for Entries<K, V> {
    fn default() -> Self {
        Entries::Few(Vec::new())
    }
}

impl<K: Copy + Eq + Hash, V> Entries<K, V> {
    fn is_empty(&self) -> bool {
        match self {
            Entries::Few(v) => v.is_empty(),
            Entries::Many(m) => m.is_empty(),
        }
    }

    fn get(&self, key: K) -> Option<&V> {
        match self {
            Entries::Few(v) => v.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            Entries::Many(m) => m.get(&key),
        }
    }

    fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self {
            Entries::Few(v) => {
                if let Some((_, old)) = v.iter_mut().find(|(k, _)| *k == key) {
                    return Some(mem::replace(old, value));
                }
                if v.capacity() == 0 {
                    // Most filters have one subscriber: do not reserve room for four.
                    v.reserve_exact(1);
                }
                v.push((key, value));
                if v.len() > FEW_MAX {
                    let map: HashMap<K, V> = mem::take(v).into_iter().collect();
                    *self = Entries::Many(Box::new(map));
                }
                None
            }
            Entries::Many(m) => m.insert(key, value),
        }
    }

    fn remove(&mut self, key: K) -> Option<V> {
        match self {
            Entries::Few(v) => {
                let i = v.iter().position(|(k, _)| *k == key)?;
                let (_, old) = v.swap_remove(i);
                if v.is_empty() {
                    *v = Vec::new();
                } else if v.len() * 4 < v.capacity() {
                    v.shrink_to_fit();
                }
                Some(old)
            }
            Entries::Many(m) => {
                let old = m.remove(&key)?;
                if m.len() < FEW_MIN {
                    let few: Vec<(K, V)> = mem::take(&mut **m).into_iter().collect();
                    *self = Entries::Few(few);
                } else if m.len() * 4 < m.capacity() {
                    m.shrink_to_fit();
                }
                Some(old)
            }
        }
    }

    #[inline]
    fn for_each(&self, f: &mut impl FnMut(K, &V)) {
        match self {
            Entries::Few(v) => v.iter().for_each(|(k, v)| f(*k, v)),
            Entries::Many(m) => m.iter().for_each(|(k, v)| f(*k, v)),
        }
    }
}

/// The children of a node by literal level name.
enum Children<K, V> {
    /// Few children: a vector with no spare room, searched linearly.
    Few(Vec<(Box<str>, Node<K, V>)>),
    /// Many children: a map. Boxed so that `Children` stays 24 bytes rather than 48.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<Box<str>, Node<K, V>>>),
}

impl<K, V> Children<K, V> {
    fn len(&self) -> usize {
        match self {
            Children::Few(v) => v.len(),
            Children::Many(m) => m.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn get(&self, level: &str) -> Option<&Node<K, V>> {
        match self {
            Children::Few(v) => v.iter().find(|(k, _)| **k == *level).map(|(_, n)| n),
            Children::Many(m) => m.get(level),
        }
    }

    fn get_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        match self {
            Children::Few(v) => v.iter_mut().find(|(k, _)| **k == *level).map(|(_, n)| n),
            Children::Many(m) => m.get_mut(level),
        }
    }

    fn get_or_insert(&mut self, level: &str) -> &mut Node<K, V> {
        if let Children::Few(v) = self {
            if v.len() >= CHILDREN_FEW_MAX && !v.iter().any(|(k, _)| **k == *level) {
                let map: HashMap<Box<str>, Node<K, V>> = mem::take(v).into_iter().collect();
                *self = Children::Many(Box::new(map));
            }
        }
        match self {
            Children::Few(v) => {
                let i = match v.iter().position(|(k, _)| **k == *level) {
                    Some(i) => i,
                    None => {
                        v.reserve_exact(1);
                        v.push((level.into(), Node::default()));
                        v.len() - 1
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

    fn remove(&mut self, level: &str) -> Option<Node<K, V>> {
        match self {
            Children::Few(v) => {
                let i = v.iter().position(|(k, _)| **k == *level)?;
                let (_, node) = v.swap_remove(i);
                if v.len() * 2 <= v.capacity() {
                    v.shrink_to_fit();
                }
                Some(node)
            }
            Children::Many(m) => {
                let node = m.remove(level)?;
                if m.len() < CHILDREN_FEW_MIN {
                    let few: Vec<(Box<str>, Node<K, V>)> =
                        mem::take(&mut **m).into_iter().collect();
                    *self = Children::Few(few);
                } else if m.len() * 4 < m.capacity() {
                    m.shrink_to_fit();
                }
                Some(node)
            }
        }
    }

    /// Moves the children out, into `out`.
    fn take_all(&mut self, out: &mut Vec<Node<K, V>>) {
        match mem::replace(self, Children::Few(Vec::new())) {
            Children::Few(v) => out.extend(v.into_iter().map(|(_, n)| n)),
            Children::Many(m) => out.extend(m.into_values()),
        }
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        match self {
            Children::Few(v) => v.capacity(),
            Children::Many(m) => m.capacity(),
        }
    }

    #[cfg(test)]
    fn nodes(&self) -> Vec<&Node<K, V>> {
        match self {
            Children::Few(v) => v.iter().map(|(_, n)| n).collect(),
            Children::Many(m) => m.values().collect(),
        }
    }
}

/// One level of the trie.
struct Node<K, V> {
    /// Children by literal level name.
    children: Children<K, V>,
    /// The child for a `+` level.
    plus: Option<Box<Node<K, V>>>,
    /// Entries of the filter that ends at this node.
    exact: Entries<K, V>,
    /// Entries of the filter that ends at this node followed by `/#` (or of `#` at the root).
    hash: Entries<K, V>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: Children::Few(Vec::new()),
            plus: None,
            exact: Entries::default(),
            hash: Entries::default(),
        }
    }
}

impl<K, V> Node<K, V> {
    fn child(&self, level: &str) -> Option<&Node<K, V>> {
        if level == "+" {
            self.plus.as_deref()
        } else {
            self.children.get(level)
        }
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node<K, V>> {
        if level == "+" {
            self.plus.as_deref_mut()
        } else {
            self.children.get_mut(level)
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Node<K, V> {
        if level == "+" {
            return self.plus.get_or_insert_with(Box::default);
        }
        self.children.get_or_insert(level)
    }

    /// Drops the child reached through `level`, and the subtree under it.
    fn detach(&mut self, level: &str) {
        if level == "+" {
            self.plus = None;
        } else {
            self.children.remove(level);
        }
    }

    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some())
    }

    /// Moves the children out, into `out`.
    fn take_children(&mut self, out: &mut Vec<Node<K, V>>) {
        if !self.children.is_empty() {
            self.children.take_all(out);
        }
        if let Some(plus) = self.plus.take() {
            out.push(*plus);
        }
    }

    #[cfg(test)]
    fn count_nodes(&self) -> usize {
        let mut stack = vec![self];
        let mut count = 0;
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.children.nodes());
            stack.extend(node.plus.as_deref());
        }
        count
    }
}

impl<K, V> Drop for Node<K, V> {
    /// Drops the subtree without recursion: a filter may have tens of thousands of levels.
    fn drop(&mut self) {
        if self.children.is_empty() && self.plus.is_none() {
            return;
        }
        let mut pending = Vec::new();
        self.take_children(&mut pending);
        while let Some(mut node) = pending.pop() {
            node.take_children(&mut pending);
        }
    }
}

/// Splits a filter into the levels that name nodes and whether it ends with `#`. `None` as the
/// path means no level: the filter `#` itself.
fn split_filter(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(path) = filter.strip_suffix("/#") {
        (Some(path), true)
    } else {
        (Some(filter), false)
    }
}

/// The level of `topic` that starts at byte `pos` (which must be at most `topic.len()`), and
/// where the next one starts; `topic.len() + 1` when there is none.
#[inline]
fn level_at(topic: &str, pos: usize) -> (&str, usize) {
    let rest = &topic[pos..];
    match rest.find('/') {
        Some(i) => (&rest[..i], pos + i + 1),
        None => (rest, topic.len() + 1),
    }
}

/// A LIFO of pending branches that lives on the machine stack up to [`INLINE_BRANCHES`] and
/// spills to the heap beyond.
struct Branches<'a, K, V> {
    inline: [(&'a Node<K, V>, usize); INLINE_BRANCHES],
    len: usize,
    spill: Vec<(&'a Node<K, V>, usize)>,
}

impl<'a, K, V> Branches<'a, K, V> {
    fn new(filler: &'a Node<K, V>) -> Self {
        Branches {
            inline: [(filler, 0); INLINE_BRANCHES],
            len: 0,
            spill: Vec::new(),
        }
    }

    #[inline]
    fn push(&mut self, branch: (&'a Node<K, V>, usize)) {
        if self.len < INLINE_BRANCHES {
            self.inline[self.len] = branch;
            self.len += 1;
        } else {
            self.spill.push(branch);
        }
    }

    #[inline]
    fn pop(&mut self) -> Option<(&'a Node<K, V>, usize)> {
        // The spill is only used once the inline part is full, so it holds the newest branches.
        if let Some(branch) = self.spill.pop() {
            return Some(branch);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        Some(self.inline[self.len])
    }
}

/// Topic filters mapped to subscriber entries: at most one entry per (filter, key), each holding
/// a `V` (typically the subscription options).
///
/// Filters are plain and valid (see [`ringmq_codec::topic::validate_filter`]): a shared
/// subscription is stored by its inner filter, `$share/` stripped by the caller.
pub struct SubscriptionTrie<K, V> {
    /// Filters whose first level does not begin with `$`, including `+` and `#` at the root.
    root: Node<K, V>,
    /// Filters whose first level begins with `$`; only the children of this node are used.
    dollar: Node<K, V>,
    /// Number of (filter, key) entries.
    len: usize,
    /// Number of filters with at least one entry.
    filters: usize,
}

impl<K, V> std::fmt::Debug for SubscriptionTrie<K, V> {
    /// The counts only: a derived walk of the trie would recurse once per level.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionTrie")
            .field("len", &self.len)
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

impl<K, V> Default for SubscriptionTrie<K, V> {
    fn default() -> Self {
        SubscriptionTrie {
            root: Node::default(),
            dollar: Node::default(),
            len: 0,
            filters: 0,
        }
    }
}

impl<K: Copy + Eq + Hash, V> SubscriptionTrie<K, V> {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries, each a (filter, key) pair.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Number of distinct filters that have at least one entry.
    pub fn filter_count(&self) -> usize {
        self.filters
    }

    /// Whether the trie holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The root that holds a path whose first level is `first`.
    fn root_for(&self, first: &str) -> &Node<K, V> {
        if first.starts_with('$') {
            &self.dollar
        } else {
            &self.root
        }
    }

    fn root_for_mut(&mut self, first: &str) -> &mut Node<K, V> {
        if first.starts_with('$') {
            &mut self.dollar
        } else {
            &mut self.root
        }
    }

    /// The node at the end of `path` (levels separated by `/`), `root` for `None`.
    fn node(&self, path: Option<&str>) -> Option<&Node<K, V>> {
        let Some(path) = path else {
            return Some(&self.root);
        };
        let mut levels = path.split('/');
        let first = levels.next().unwrap_or_default();
        let mut node = self.root_for(first).child(first)?;
        for level in levels {
            node = node.child(level)?;
        }
        Some(node)
    }

    fn node_mut(&mut self, path: Option<&str>) -> Option<&mut Node<K, V>> {
        let Some(path) = path else {
            return Some(&mut self.root);
        };
        let mut levels = path.split('/');
        let first = levels.next().unwrap_or_default();
        let mut node = self.root_for_mut(first).child_mut(first)?;
        for level in levels {
            node = node.child_mut(level)?;
        }
        Some(node)
    }

    fn node_or_insert(&mut self, path: Option<&str>) -> &mut Node<K, V> {
        let Some(path) = path else {
            return &mut self.root;
        };
        let mut levels = path.split('/');
        let first = levels.next().unwrap_or_default();
        let mut node = self.root_for_mut(first).child_or_insert(first);
        for level in levels {
            node = node.child_or_insert(level);
        }
        node
    }

    /// Adds the entry of `key` under `filter`, or replaces it and returns the old value.
    ///
    /// `filter` must be a valid plain filter ([`ringmq_codec::topic::validate_filter`]); this is
    /// checked in debug builds only.
    pub fn insert(&mut self, filter: &str, key: K, value: V) -> Option<V> {
        debug_assert!(
            ringmq_codec::topic::validate_filter(filter).is_ok(),
            "invalid filter {filter:?}"
        );
        let (path, hash) = split_filter(filter);
        let node = self.node_or_insert(path);
        let entries = if hash {
            &mut node.hash
        } else {
            &mut node.exact
        };
        let was_empty = entries.is_empty();
        let old = entries.insert(key, value);
        if old.is_none() {
            self.len += 1;
            self.filters += usize::from(was_empty);
        }
        old
    }

    /// Removes the entry of `key` under `filter` and returns its value. Nodes left without
    /// entries and children are freed, so memory follows the live subscriptions.
    pub fn remove(&mut self, filter: &str, key: K) -> Option<V> {
        let (path, hash) = split_filter(filter);
        let node = self.node_mut(path)?;
        let entries = if hash {
            &mut node.hash
        } else {
            &mut node.exact
        };
        let old = entries.remove(key)?;
        let now_empty = entries.is_empty();
        self.len -= 1;
        if now_empty {
            self.filters -= 1;
            if let Some(path) = path {
                self.prune(path);
            }
        }
        Some(old)
    }

    /// Frees the nodes at the end of `path` that hold no entry and lead to no other node.
    /// Two passes down the path, no recursion: the first finds the topmost such node, the second
    /// detaches it from its parent.
    fn prune(&mut self, path: &str) {
        let mut cut = None;
        {
            let mut levels = path.split('/').peekable();
            let first = levels.next().unwrap_or_default();
            let Some(mut node) = self.root_for(first).child(first) else {
                return;
            };
            let mut depth = 0usize;
            loop {
                let next = levels.next();
                // An inner node of the path has the next one as a child; it is useless if that
                // is its only child. The last node is useless if it has no child at all.
                let useless = node.exact.is_empty()
                    && node.hash.is_empty()
                    && node.child_count() == usize::from(next.is_some());
                if !useless {
                    cut = None;
                } else if cut.is_none() {
                    cut = Some(depth);
                }
                let Some(level) = next else { break };
                let Some(child) = node.child(level) else {
                    return;
                };
                node = child;
                depth += 1;
            }
        }
        let Some(cut) = cut else { return };
        let mut levels = path.split('/');
        let first = levels.next().unwrap_or_default();
        let mut parent = self.root_for_mut(first);
        let mut level = first;
        for _ in 0..cut {
            let (Some(child), Some(next)) = (parent.child_mut(level), levels.next()) else {
                return;
            };
            parent = child;
            level = next;
        }
        parent.detach(level);
    }

    /// The value of the entry of `key` under `filter`.
    pub fn get(&self, filter: &str, key: K) -> Option<&V> {
        let (path, hash) = split_filter(filter);
        let node = self.node(path)?;
        if hash {
            node.hash.get(key)
        } else {
            node.exact.get(key)
        }
    }

    /// Calls `f` with every entry whose filter matches `topic`, a valid topic name. Each
    /// (filter, key) entry is visited once; a key subscribed through two overlapping filters is
    /// visited once per filter, and deduplication is the caller's job. The order is unspecified.
    ///
    /// Iterative, so the depth of the topic is not bounded by the machine stack; it allocates
    /// only when more than [`INLINE_BRANCHES`] branches (levels at which both the literal child
    /// and the `+` child match) are pending at the same time.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(K, &V)) {
        let end = topic.len() + 1;
        let start = if topic.starts_with('$') {
            // Only filters that begin with the same `$` level: no `+` or `#` at the root.
            let (first, next) = level_at(topic, 0);
            match self.dollar.children.get(first) {
                Some(node) => (node, next),
                None => return,
            }
        } else {
            (&self.root, 0)
        };
        let mut branches = Branches::new(&self.root);
        let mut current = Some(start);
        loop {
            let Some((node, pos)) = current.take().or_else(|| branches.pop()) else {
                return;
            };
            // `#` matches the parent level too: `a/#` matches `a`.
            node.hash.for_each(&mut f);
            if pos == end {
                node.exact.for_each(&mut f);
                continue;
            }
            let (level, next) = level_at(topic, pos);
            current = node.children.get(level).map(|child| (child, next));
            if let Some(plus) = node.plus.as_deref() {
                if current.is_none() {
                    current = Some((plus, next));
                } else {
                    branches.push((plus, next));
                }
            }
        }
    }

    /// Number of nodes, roots excluded.
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.root.count_nodes() + self.dollar.count_nodes() - 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringmq_codec::topic::matches;
    use std::collections::{BTreeMap, BTreeSet};

    fn matched(trie: &SubscriptionTrie<u32, &'static str>, topic: &str) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |k, v| out.push((k, (*v).to_owned())));
        out.sort();
        out
    }

    fn keys(trie: &SubscriptionTrie<u32, ()>, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        trie.for_each_match(topic, |k, _| out.push(k));
        out.sort_unstable();
        out
    }

    /// One trie holding `filters`, key i for filter i.
    fn trie_of(filters: &[&str]) -> SubscriptionTrie<u32, ()> {
        let mut trie = SubscriptionTrie::new();
        for (i, f) in filters.iter().enumerate() {
            trie.insert(f, i as u32, ());
        }
        trie
    }

    #[test]
    fn spec_4_7_1_2_multi_level_wildcard() {
        let trie = trie_of(&["sport/tennis/player1/#", "sport/#", "#", "sport/tennis/#"]);
        assert_eq!(keys(&trie, "sport/tennis/player1"), [0, 1, 2, 3]);
        assert_eq!(keys(&trie, "sport/tennis/player1/ranking"), [0, 1, 2, 3]);
        assert_eq!(
            keys(&trie, "sport/tennis/player1/score/wimbledon"),
            [0, 1, 2, 3]
        );
        // `sport/#` matches its parent `sport`.
        assert_eq!(keys(&trie, "sport"), [1, 2]);
        assert_eq!(keys(&trie, "sport/tennis"), [1, 2, 3]);
        assert_eq!(keys(&trie, "other"), [2]);
    }

    #[test]
    fn spec_4_7_1_3_single_level_wildcard() {
        let trie = trie_of(&[
            "sport/tennis/+",
            "sport/+",
            "+/+",
            "/+",
            "+",
            "+/tennis/#",
            "sport/+/player1",
        ]);
        assert_eq!(keys(&trie, "sport/tennis/player1"), [0, 5, 6]);
        assert_eq!(keys(&trie, "sport/tennis/player1/ranking"), [5]);
        assert_eq!(keys(&trie, "sport"), [4]);
        assert_eq!(keys(&trie, "sport/"), [1, 2]);
        assert_eq!(keys(&trie, "/finance"), [2, 3]);
        assert_eq!(keys(&trie, "sport/tennis"), [1, 2, 5]);
    }

    #[test]
    fn spec_4_7_2_dollar_topics() {
        let trie = trie_of(&[
            "#",
            "+/monitor/Clients",
            "$SYS/#",
            "$SYS/monitor/+",
            "+",
            "+/#",
        ]);
        assert_eq!(keys(&trie, "$SYS/monitor/Clients"), [2, 3]);
        assert_eq!(keys(&trie, "$SYS"), [2]);
        assert_eq!(keys(&trie, "$"), Vec::<u32>::new());
        assert_eq!(keys(&trie, "SYS/monitor/Clients"), [0, 1, 5]);
        // `$` only matters in the first level.
        assert_eq!(keys(&trie, "a/$SYS"), [0, 5]);
    }

    #[test]
    fn empty_levels_are_levels() {
        let trie = trie_of(&["/", "+", "+/+", "a/", "a//b", "a/+/b", "/#", "a/+"]);
        assert_eq!(keys(&trie, "/"), [0, 2, 6]);
        assert_eq!(keys(&trie, "a/"), [2, 3, 7]);
        assert_eq!(keys(&trie, "a//b"), [4, 5]);
        assert_eq!(keys(&trie, "/a"), [2, 6]);
        assert_eq!(keys(&trie, "a"), [1]);
    }

    #[test]
    fn insert_replace_get_remove() {
        let mut trie = SubscriptionTrie::new();
        assert!(trie.is_empty());
        assert_eq!(trie.insert("a/+", 1, "q0"), None);
        assert_eq!(trie.insert("a/+", 2, "q1"), None);
        assert_eq!(trie.insert("a/+", 1, "q2"), Some("q0"));
        assert_eq!(trie.insert("a/#", 1, "q1"), None);
        assert_eq!((trie.len(), trie.filter_count()), (3, 2));
        assert_eq!(trie.get("a/+", 1), Some(&"q2"));
        assert_eq!(trie.get("a/#", 1), Some(&"q1"));
        assert_eq!(trie.get("a/#", 2), None);
        assert_eq!(trie.get("a", 1), None);
        assert_eq!(trie.get("b/+", 1), None);
        assert_eq!(
            matched(&trie, "a/b"),
            [(1, "q1".into()), (1, "q2".into()), (2, "q1".into())]
        );
        assert_eq!(trie.remove("a/+", 3), None);
        assert_eq!(trie.remove("a/b", 1), None);
        assert_eq!(trie.remove("a/+", 1), Some("q2"));
        assert_eq!(trie.remove("a/+", 1), None);
        assert_eq!((trie.len(), trie.filter_count()), (2, 2));
        assert_eq!(trie.remove("a/+", 2), Some("q1"));
        assert_eq!((trie.len(), trie.filter_count()), (1, 1));
        assert_eq!(matched(&trie, "a/b"), [(1, "q1".into())]);
        assert_eq!(trie.remove("a/#", 1), Some("q1"));
        assert!(trie.is_empty());
        assert_eq!(trie.filter_count(), 0);
        assert_eq!(trie.node_count(), 0);
    }

    #[test]
    fn removal_prunes_only_what_is_unused() {
        let mut trie = SubscriptionTrie::new();
        trie.insert("a/b/c/d", 1, ());
        trie.insert("a/b", 1, ());
        trie.insert("a/+/c/#", 1, ());
        trie.insert("$SYS/x/y", 1, ());
        trie.insert("#", 1, ());
        // a, a/b, a/b/c, a/b/c/d, a/+, a/+/c, $SYS, $SYS/x, $SYS/x/y
        assert_eq!(trie.node_count(), 9);
        trie.remove("a/b/c/d", 1);
        // a/b stays: it holds an entry.
        assert_eq!(trie.node_count(), 7);
        assert_eq!(trie.get("a/b", 1), Some(&()));
        trie.remove("a/+/c/#", 1);
        assert_eq!(trie.node_count(), 5);
        trie.remove("#", 1);
        assert_eq!(trie.node_count(), 5);
        trie.remove("a/b", 1);
        assert_eq!(trie.node_count(), 3);
        trie.remove("$SYS/x/y", 1);
        assert_eq!(trie.node_count(), 0);
        assert!(trie.is_empty());
        // An inner node with an entry of its own stops the pruning above it.
        trie.insert("a/b", 1, ());
        trie.insert("a/#", 2, ());
        trie.remove("a/b", 1);
        assert_eq!(trie.node_count(), 1);
        assert_eq!(keys(&trie, "a/b"), [2]);
    }

    #[test]
    fn churn_does_not_grow_the_trie() {
        let mut trie = SubscriptionTrie::new();
        trie.insert("keep/+", 0, ());
        for round in 0..50u32 {
            for i in 0..100u32 {
                trie.insert(&format!("dev/{round}/{i}/#"), i, ());
                trie.insert(&format!("keep/{i}"), i + 1, ());
            }
            for i in 0..100u32 {
                trie.remove(&format!("dev/{round}/{i}/#"), i);
                trie.remove(&format!("keep/{i}"), i + 1);
            }
            assert_eq!(trie.node_count(), 2);
        }
        assert_eq!(trie.len(), 1);
        let keep = trie.root.children.get("keep").unwrap();
        assert_eq!(keep.children.capacity(), 0);
    }

    #[test]
    fn many_keys_on_one_filter() {
        let mut trie = SubscriptionTrie::new();
        for k in 0..1000u32 {
            assert_eq!(trie.insert("a/#", k, k), None);
        }
        for k in 0..1000u32 {
            assert_eq!(trie.insert("a/#", k, k + 1), Some(k));
        }
        assert_eq!((trie.len(), trie.filter_count()), (1000, 1));
        let mut sum = 0;
        trie.for_each_match("a/b", |k, v| {
            assert_eq!(*v, k + 1);
            sum += 1;
        });
        assert_eq!(sum, 1000);
        for k in (0..1000u32).rev() {
            assert_eq!(trie.get("a/#", k), Some(&(k + 1)));
            assert_eq!(trie.remove("a/#", k), Some(k + 1));
            assert_eq!(trie.get("a/#", k), None);
        }
        assert!(trie.is_empty());
        assert_eq!(trie.node_count(), 0);
    }

    #[test]
    fn deep_topics_and_filters_do_not_overflow_the_stack() {
        // 65,535 bytes: 32,768 levels.
        let deep = vec!["a"; 32_768].join("/");
        let plus = vec!["+"; 32_768].join("/");
        let slashes = "/".repeat(65_535);
        let run = move || {
            let mut trie = SubscriptionTrie::new();
            trie.insert(&deep, 1u32, ());
            trie.insert(&plus, 2, ());
            trie.insert(&format!("{}/#", &plus[..plus.len() - 2]), 3, ());
            trie.insert(&slashes, 4, ());
            trie.insert("#", 5, ());
            assert_eq!(keys(&trie, &deep), [1, 2, 3, 5]);
            assert_eq!(keys(&trie, &slashes), [3, 4, 5]);
            assert_eq!(trie.remove(&deep, 1), Some(()));
            assert_eq!(keys(&trie, &deep), [2, 3, 5]);
            // Drop with deep chains still in place.
            drop(trie);
        };
        // A small stack: a recursive walk or drop would overflow it.
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(run)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn many_pending_branches_spill() {
        // At every level of `a/a/.../a` both the literal child and `+` exist.
        let mut trie = SubscriptionTrie::new();
        let n = 3 * INLINE_BRANCHES;
        for i in 0..n {
            let prefix = vec!["a"; i].join("/");
            let filter = if i == 0 {
                "+".to_owned()
            } else {
                format!("{prefix}/+")
            };
            trie.insert(&filter, i as u32, ());
        }
        let topic = vec!["a"; n].join("/");
        trie.insert(&topic, 1000, ());
        let mut got = Vec::new();
        trie.for_each_match(&topic, |k, _| got.push(k));
        got.sort_unstable();
        assert_eq!(got, [n as u32 - 1, 1000]);
        let topic = ["a"; 10].join("/");
        assert_eq!(keys(&trie, &topic), [9]);
    }

    // Property tests against a naive reference built on `ringmq_codec::topic::matches`.

    use crate::test_strategies::{filter, topic};

    #[derive(Clone, Debug)]
    enum Op {
        Insert(usize, u32, u32),
        Remove(usize, u32),
    }

    fn ops(filters: usize, len: usize) -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            3 => (0..filters, 0..4u32, any::<u32>()).prop_map(|(f, k, v)| Op::Insert(f, k, v)),
            2 => (0..filters, 0..4u32).prop_map(|(f, k)| Op::Remove(f, k)),
        ];
        prop::collection::vec(op, 0..len)
    }

    /// Applies `ops` to a trie and to the reference, checking them against each other every
    /// `every` operations, then empties both.
    fn interleave(
        filters: &[String],
        topics: &[String],
        ops: &[Op],
        every: usize,
    ) -> Result<(), TestCaseError> {
        let mut trie = SubscriptionTrie::new();
        let mut model = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            match *op {
                Op::Insert(f, k, v) => {
                    let f = &filters[f % filters.len()];
                    prop_assert_eq!(trie.insert(f, k, v), model.insert((f.clone(), k), v));
                }
                Op::Remove(f, k) => {
                    let f = &filters[f % filters.len()];
                    prop_assert_eq!(trie.remove(f, k), model.remove(&(f.clone(), k)));
                }
            }
            if i % every == every - 1 {
                check(&trie, &model, topics)?;
            }
        }
        check(&trie, &model, topics)?;
        // Emptying the trie frees every node.
        let entries: Vec<(String, u32)> = model.keys().cloned().collect();
        for (f, k) in entries {
            prop_assert_eq!(trie.remove(&f, k), model.remove(&(f.clone(), k)));
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.node_count(), 0);
        Ok(())
    }

    /// Distinct node paths the trie must hold for `filters`: every prefix of every filter,
    /// a trailing `#` excluded.
    fn expected_nodes<'a>(filters: impl Iterator<Item = &'a str>) -> usize {
        let mut paths = BTreeSet::new();
        for f in filters {
            let levels: Vec<&str> = f.split('/').collect();
            let n = if levels.last() == Some(&"#") {
                levels.len() - 1
            } else {
                levels.len()
            };
            for i in 1..=n {
                paths.insert(levels[..i].to_vec());
            }
        }
        paths.len()
    }

    fn check(
        trie: &SubscriptionTrie<u32, u32>,
        model: &BTreeMap<(String, u32), u32>,
        topics: &[String],
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(trie.len(), model.len());
        let filters: BTreeSet<&str> = model.keys().map(|(f, _)| f.as_str()).collect();
        prop_assert_eq!(trie.filter_count(), filters.len());
        prop_assert_eq!(trie.is_empty(), model.is_empty());
        prop_assert_eq!(trie.node_count(), expected_nodes(filters.iter().copied()));
        for ((f, k), v) in model {
            prop_assert_eq!(trie.get(f, *k), Some(v));
        }
        for t in topics {
            let mut got = Vec::new();
            trie.for_each_match(t, |k, v| got.push((k, *v)));
            got.sort_unstable();
            let mut want: Vec<(u32, u32)> = model
                .iter()
                .filter(|((f, _), _)| matches(t, f))
                .map(|((_, k), v)| (*k, *v))
                .collect();
            want.sort_unstable();
            prop_assert_eq!(got, want, "topic {:?}", t);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_like_the_reference(
            filters in prop::collection::vec(filter(false), 1..12),
            topics in prop::collection::vec(topic(false), 1..12),
        ) {
            let mut trie = SubscriptionTrie::new();
            let mut model = BTreeMap::new();
            for (i, f) in filters.iter().enumerate() {
                let k = i as u32 % 3;
                prop_assert_eq!(trie.insert(f, k, i as u32), model.insert((f.clone(), k), i as u32));
            }
            check(&trie, &model, &topics)?;
        }

        #[test]
        fn interleaved_insert_remove_like_the_reference(
            filters in prop::collection::vec(filter(false), 1..8),
            topics in prop::collection::vec(topic(false), 1..10),
            ops in ops(8, 80),
        ) {
            interleave(&filters, &topics, &ops, 1)?;
        }

        #[test]
        fn wide_nodes_like_the_reference(
            filters in prop::collection::vec(filter(true), 1..60),
            topics in prop::collection::vec(topic(true), 1..24),
            ops in ops(60, 300),
        ) {
            interleave(&filters, &topics, &ops, 10)?;
        }
    }
}
