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
}
