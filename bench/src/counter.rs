//! Accounting of one message stream (one publisher as seen by one subscriber) from the sequence
//! numbers the publisher put in its payloads: 0, 1, 2, ... with no gap at the source.
//!
//! Definitions used in every report:
//! * **received**: every arrival, duplicates included (what the broker delivered).
//! * **duplicate**: an arrival whose sequence number had already arrived.
//! * **reordered**: a first arrival of a sequence number lower than one that arrived before it
//!   (it filled a gap). It is not lost.
//! * **lost**: of the `sent` messages `0..sent`, those that never arrived, counted at the end of
//!   the run after the drain period: the gaps still open plus the tail that never came.

use std::collections::BTreeMap;

/// What one arrival was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The highest sequence number so far (possibly after a gap).
    InOrder,
    /// Filled a gap: lower than a number that arrived before it, and new.
    Reordered,
    /// Already arrived before.
    Duplicate,
}

/// The accounting of one stream.
#[derive(Clone, Debug, Default)]
pub struct StreamCounter {
    /// Every number below `next` has arrived or lies in `missing`.
    next: u64,
    /// Gaps below `next`, as `start -> end` (end exclusive), disjoint and not adjacent.
    missing: BTreeMap<u64, u64>,
    /// Numbers in `missing`.
    missing_count: u64,
    received: u64,
    duplicates: u64,
    reordered: u64,
}

impl StreamCounter {
    /// Records the arrival of `seq`.
    pub fn record(&mut self, seq: u64) -> Arrival {
        self.received += 1;
        if seq == self.next {
            self.next += 1;
            return Arrival::InOrder;
        }
        if seq > self.next {
            self.missing.insert(self.next, seq);
            self.missing_count += seq - self.next;
            self.next = seq + 1;
            return Arrival::InOrder;
        }
        // Below `next`: either it fills a gap, or it came before.
        if let Some((&start, &end)) = self.missing.range(..=seq).next_back() {
            if seq < end {
                self.missing.remove(&start);
                if start < seq {
                    self.missing.insert(start, seq);
                }
                if seq + 1 < end {
                    self.missing.insert(seq + 1, end);
                }
                self.missing_count -= 1;
                self.reordered += 1;
                return Arrival::Reordered;
            }
        }
        self.duplicates += 1;
        Arrival::Duplicate
    }

    /// The highest sequence number that arrived, plus one (0 before any arrival).
    pub fn high_water(&self) -> u64 {
        self.next
    }

    /// Every arrival, duplicates included.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Distinct sequence numbers that arrived.
    pub fn distinct(&self) -> u64 {
        self.next - self.missing_count
    }

    /// Arrivals of a number that had already arrived.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// First arrivals that came after a higher number.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Of the messages `0..sent`, those that never arrived.
    pub fn lost(&self, sent: u64) -> u64 {
        if sent >= self.next {
            self.missing_count + (sent - self.next)
        } else {
            // Numbers at or above `sent` arrived: count only the gaps below `sent`.
            self.missing
                .range(..sent)
                .map(|(&start, &end)| end.min(sent) - start)
                .sum()
        }
    }

    /// Whether a number at or above `sent` arrived (the publisher never sent it: a bug in the
    /// generator or the broker).
    pub fn beyond(&self, sent: u64) -> bool {
        self.next > sent
    }

    /// The numbers that arrived, as sorted disjoint ranges `(start, end)`, end exclusive.
    pub fn arrived_ranges(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(self.missing.len() + 1);
        let mut at = 0;
        for (&start, &end) in &self.missing {
            if at < start {
                out.push((at, start));
            }
            at = end;
        }
        if at < self.next {
            out.push((at, self.next));
        }
        out
    }
}

/// One publisher's stream as seen by a whole shared-subscription group, where every message
/// must reach exactly one member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupTally {
    /// Deliveries to all members, duplicates included.
    pub received: u64,
    /// Distinct numbers that reached at least one member.
    pub distinct: u64,
    /// Of `0..sent`, the numbers no member received.
    pub lost: u64,
    /// Extra deliveries of a number to another member: a number that reached k members
    /// counts k - 1 (a message delivered to two members is duplicated).
    pub across_members: u64,
    /// Extra deliveries of a number to the same member.
    pub within_member: u64,
    /// Members' first arrivals that came after a higher number at that member.
    pub reordered: u64,
}

impl GroupTally {
    /// Every duplicated delivery, across and within members.
    pub fn duplicated(&self) -> u64 {
        self.across_members + self.within_member
    }
}

/// Combines the members' counters of one publisher's stream (`sent` messages).
pub fn group_tally(members: &[&StreamCounter], sent: u64) -> GroupTally {
    let mut t = GroupTally::default();
    // +1 at each range start, -1 at each end; a sweep gives the coverage of every number.
    let mut edges: Vec<(u64, i64)> = Vec::new();
    for m in members {
        t.received += m.received();
        t.within_member += m.duplicates();
        t.reordered += m.reordered();
        for (start, end) in m.arrived_ranges() {
            edges.push((start, 1));
            edges.push((end, -1));
        }
    }
    edges.sort_unstable();
    let (mut depth, mut at, mut covered_below_sent) = (0i64, 0u64, 0u64);
    for (x, d) in edges {
        if depth > 0 {
            let span = x - at;
            t.distinct += span;
            t.across_members += (depth as u64 - 1) * span;
            covered_below_sent += x.min(sent).saturating_sub(at);
        }
        depth += d;
        at = x;
    }
    t.lost = sent - covered_below_sent;
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn feed(seqs: &[u64]) -> (StreamCounter, Vec<Arrival>) {
        let mut c = StreamCounter::default();
        let arrivals = seqs.iter().map(|&s| c.record(s)).collect();
        (c, arrivals)
    }

    #[test]
    fn in_order_stream_has_nothing_to_report() {
        let seqs: Vec<u64> = (0..1000).collect();
        let (c, arrivals) = feed(&seqs);
        assert!(arrivals.iter().all(|&a| a == Arrival::InOrder));
        assert_eq!(c.received(), 1000);
        assert_eq!(c.distinct(), 1000);
        assert_eq!(c.lost(1000), 0);
        assert_eq!((c.duplicates(), c.reordered()), (0, 0));
        assert!(!c.beyond(1000));
    }

    #[test]
    fn nothing_received_loses_everything_sent() {
        let c = StreamCounter::default();
        assert_eq!(c.lost(0), 0);
        assert_eq!(c.lost(17), 17);
        assert_eq!(c.distinct(), 0);
    }

    #[test]
    fn gaps_and_tail_are_lost() {
        // 2, 3 and 7 never come; 9 and 10 were sent but never arrived (tail).
        let (c, arrivals) = feed(&[0, 1, 4, 5, 6, 8]);
        assert!(arrivals.iter().all(|&a| a == Arrival::InOrder));
        assert_eq!(c.distinct(), 6);
        assert_eq!(c.lost(9), 3);
        assert_eq!(c.lost(11), 5);
        assert_eq!((c.duplicates(), c.reordered()), (0, 0));
    }

    #[test]
    fn late_arrival_is_reordered_not_lost() {
        let (c, arrivals) = feed(&[0, 2, 1, 3]);
        assert_eq!(
            arrivals,
            [
                Arrival::InOrder,
                Arrival::InOrder,
                Arrival::Reordered,
                Arrival::InOrder
            ]
        );
        assert_eq!(c.reordered(), 1);
        assert_eq!(c.lost(4), 0);
        assert_eq!(c.distinct(), 4);
    }

    #[test]
    fn filling_the_middle_of_a_gap_splits_it() {
        // Gap 1..10, then 5 arrives, then 1 and 9 (its ends), then 4 and 6 (next to the hole).
        let (c, arrivals) = feed(&[0, 10, 5, 1, 9, 4, 6]);
        assert_eq!(arrivals[2..], [Arrival::Reordered; 5]);
        assert_eq!(c.reordered(), 5);
        assert_eq!(c.distinct(), 7);
        // Still missing: 2, 3, 7, 8.
        assert_eq!(c.lost(11), 4);
        // The same numbers again are duplicates.
        let mut c = c;
        for s in [0, 10, 5, 1, 9, 4, 6] {
            assert_eq!(c.record(s), Arrival::Duplicate, "{s}");
        }
        assert_eq!(c.duplicates(), 7);
        assert_eq!(c.lost(11), 4);
        for s in [2, 3, 7, 8] {
            assert_eq!(c.record(s), Arrival::Reordered, "{s}");
        }
        assert_eq!(c.lost(11), 0);
        assert_eq!(c.received(), 18);
    }

    #[test]
    fn duplicates_are_counted_and_not_distinct() {
        let (c, arrivals) = feed(&[0, 0, 1, 1, 1, 2]);
        assert_eq!(
            arrivals,
            [
                Arrival::InOrder,
                Arrival::Duplicate,
                Arrival::InOrder,
                Arrival::Duplicate,
                Arrival::Duplicate,
                Arrival::InOrder
            ]
        );
        assert_eq!(c.duplicates(), 3);
        assert_eq!(c.received(), 6);
        assert_eq!(c.distinct(), 3);
        assert_eq!(c.lost(3), 0);
        assert_eq!(c.reordered(), 0);
    }

    #[test]
    fn duplicate_of_a_reordered_message_is_a_duplicate() {
        let (c, arrivals) = feed(&[1, 0, 0]);
        assert_eq!(
            arrivals,
            [Arrival::InOrder, Arrival::Reordered, Arrival::Duplicate]
        );
        assert_eq!((c.reordered(), c.duplicates(), c.lost(2)), (1, 1, 0));
    }

    #[test]
    fn arrivals_beyond_sent_are_flagged_and_not_counted_as_loss() {
        let (c, _) = feed(&[0, 3, 7]);
        assert!(c.beyond(5));
        // Below 5: 1, 2 and 4 missing.
        assert_eq!(c.lost(5), 3);
        assert!(!c.beyond(8));
        assert_eq!(c.lost(8), 5);
    }

    /// A small deterministic generator, to avoid a dependency.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn agrees_with_a_naive_reference_on_random_streams() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..300 {
            let sent = rng.next() % 200;
            // Shuffle locally, drop some, duplicate some.
            let mut stream: Vec<u64> = Vec::new();
            for s in 0..sent {
                match rng.next() % 10 {
                    0 => {}                     // lost
                    1 => stream.extend([s, s]), // duplicated
                    _ => stream.push(s),        // delivered once
                }
            }
            for i in 0..stream.len() {
                if rng.next() % 8 == 0 {
                    let j = (i + (rng.next() % 5) as usize).min(stream.len() - 1);
                    stream.swap(i, j);
                }
            }
            let mut c = StreamCounter::default();
            let mut seen = HashSet::new();
            let (mut max_seen, mut dups, mut reordered) = (None::<u64>, 0, 0);
            for &s in &stream {
                let expected = if !seen.insert(s) {
                    dups += 1;
                    Arrival::Duplicate
                } else if max_seen.is_some_and(|m| s < m) {
                    reordered += 1;
                    Arrival::Reordered
                } else {
                    Arrival::InOrder
                };
                max_seen = max_seen.max(Some(s));
                assert_eq!(c.record(s), expected, "round {round}, seq {s}");
            }
            let lost = (0..sent).filter(|s| !seen.contains(s)).count() as u64;
            assert_eq!(c.lost(sent), lost, "round {round}");
            assert_eq!(c.duplicates(), dups, "round {round}");
            assert_eq!(c.reordered(), reordered, "round {round}");
            assert_eq!(c.distinct(), seen.len() as u64, "round {round}");
            assert_eq!(c.received(), stream.len() as u64, "round {round}");
        }
    }

    #[test]
    fn arrived_ranges_are_the_complement_of_the_gaps() {
        let (c, _) = feed(&[0, 1, 4, 5, 9, 2]);
        assert_eq!(c.arrived_ranges(), [(0, 3), (4, 6), (9, 10)]);
        let (c, _) = feed(&[3]);
        assert_eq!(c.arrived_ranges(), [(3, 4)]);
        assert!(StreamCounter::default().arrived_ranges().is_empty());
    }

    #[test]
    fn group_tally_of_a_clean_round_robin_split() {
        // Three members, round robin: every number reaches exactly one member.
        let mut m = vec![StreamCounter::default(); 3];
        for s in 0..30u64 {
            m[(s % 3) as usize].record(s);
        }
        let refs: Vec<&StreamCounter> = m.iter().collect();
        let t = group_tally(&refs, 30);
        assert_eq!((t.received, t.distinct, t.lost), (30, 30, 0));
        assert_eq!((t.across_members, t.within_member, t.reordered), (0, 0, 0));
        // Two more were sent but never came: lost, not duplicated.
        assert_eq!(group_tally(&refs, 32).lost, 2);
    }

    #[test]
    fn group_tally_counts_a_message_at_two_members_as_duplicated() {
        let (a, _) = feed(&[0, 1, 2, 5]);
        let (b, _) = feed(&[2, 3, 5, 5]);
        let (c, _) = feed(&[5]);
        let t = group_tally(&[&a, &b, &c], 7);
        // 5 reached three members (2 extra) plus once more at b; 2 reached two members.
        assert_eq!(t.across_members, 3);
        assert_eq!(t.within_member, 1);
        assert_eq!(t.duplicated(), 4);
        assert_eq!(t.distinct, 5); // 0 1 2 3 5
        assert_eq!(t.lost, 2); // 4 and 6
        assert_eq!(t.received, 9);
    }

    #[test]
    fn group_tally_agrees_with_a_naive_reference() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        for round in 0..300 {
            let sent = rng.next() % 150;
            let members = 1 + (rng.next() % 4) as usize;
            let mut streams: Vec<Vec<u64>> = vec![Vec::new(); members];
            for s in 0..sent + 3 {
                // Numbers at or above `sent` may arrive too (a broker bug): not lost.
                let copies = match rng.next() % 12 {
                    0 => 0,
                    1 => 2,
                    2 => 3,
                    _ => 1,
                };
                for _ in 0..copies {
                    streams[(rng.next() % members as u64) as usize].push(s);
                }
            }
            let mut counters = vec![StreamCounter::default(); members];
            for (c, st) in counters.iter_mut().zip(&streams) {
                for &s in st {
                    c.record(s);
                }
            }
            let refs: Vec<&StreamCounter> = counters.iter().collect();
            let t = group_tally(&refs, sent);
            let mut all: Vec<u64> = streams.concat();
            all.sort_unstable();
            let distinct: HashSet<u64> = all.iter().copied().collect();
            let lost = (0..sent).filter(|s| !distinct.contains(s)).count() as u64;
            let within: u64 = streams
                .iter()
                .map(|st| st.len() as u64 - st.iter().collect::<HashSet<_>>().len() as u64)
                .sum();
            let members_per_number = |s: u64| streams.iter().filter(|st| st.contains(&s)).count();
            let across: u64 = distinct
                .iter()
                .map(|&s| members_per_number(s) as u64 - 1)
                .sum();
            assert_eq!(t.received, all.len() as u64, "round {round}");
            assert_eq!(t.distinct, distinct.len() as u64, "round {round}");
            assert_eq!(t.lost, lost, "round {round}");
            assert_eq!(t.within_member, within, "round {round}");
            assert_eq!(t.across_members, across, "round {round}");
            assert_eq!(
                t.received,
                t.distinct + t.duplicated(),
                "round {round}: every delivery is a first or a duplicate"
            );
        }
    }
}
