//! Property-based round trips of the codec.
//!
//! * For every packet type in every protocol version it exists in, a valid packet encodes to
//!   exactly `encoded_len` bytes, decodes back equal from those bytes (whole, split at every
//!   point, and followed by the next packet), and is refused by a maximum packet size one byte
//!   too small.
//! * MQTT 5 packets encoded for 3.x lose their MQTT 5 data and nothing else.
//! * Arbitrary and mutated bytes never make `decode` panic, and whatever it decodes re-encodes
//!   and re-decodes to an equal packet.
//! * `topic::matches` agrees with a naive recursive matcher.
//!
//! `cargo test -p ringmq-codec --test roundtrip -- --ignored` writes the fuzz seed corpus.

mod strategies;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use ringmq_codec::{
    decode, topic, DecodeError, DecodeOptions, Disconnect, EncodeError, Packet, PacketType,
    ProtocolVersion, ReasonCode, SubscriptionOptions, PACKET_SIZE_MAX,
};
use strategies::{any_packet, packet, packet_types, VERSIONS};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn encode(p: &Packet, v: ProtocolVersion) -> Result<Bytes, TestCaseError> {
    let mut buf = BytesMut::new();
    let n = p
        .encode(v, &mut buf)
        .map_err(|e| TestCaseError::fail(format!("encode {p:?} for {v:?}: {e}")))?;
    prop_assert_eq!(n, buf.len(), "returned length vs bytes written");
    prop_assert_eq!(n, p.encoded_len(v), "encoded_len vs bytes written");
    Ok(buf.freeze())
}

fn options(v: ProtocolVersion, max_packet_size: u32) -> DecodeOptions {
    DecodeOptions {
        version: v,
        max_packet_size,
    }
}

/// The invariants of a valid packet of version `v`.
fn check_roundtrip(p: &Packet, v: ProtocolVersion) -> Result<(), TestCaseError> {
    let bytes = encode(p, v)?;
    let n = bytes.len();
    let opts = DecodeOptions::new(v);
    let expected = Ok(Some(p.clone()));

    let mut whole = BytesMut::from(&bytes[..]);
    prop_assert_eq!(decode(&mut whole, &opts), expected.clone());
    prop_assert!(whole.is_empty(), "{} bytes left over", whole.len());

    // Delivered in two parts: nothing until the last byte, and nothing consumed meanwhile.
    for split in 0..n {
        let mut buf = BytesMut::from(&bytes[..split]);
        prop_assert_eq!(decode(&mut buf, &opts), Ok(None), "split at {}", split);
        prop_assert_eq!(&buf[..], &bytes[..split]);
        buf.extend_from_slice(&bytes[split..]);
        prop_assert_eq!(
            decode(&mut buf, &opts),
            expected.clone(),
            "split at {}",
            split
        );
        prop_assert!(buf.is_empty());
    }

    // Followed by another packet: each decode takes exactly its own bytes.
    let mut two = BytesMut::from(&bytes[..]);
    two.extend_from_slice(&[0xC0, 0x00]); // PINGREQ
    prop_assert_eq!(decode(&mut two, &opts), expected.clone());
    prop_assert_eq!(decode(&mut two, &opts), Ok(Some(Packet::PingReq)));
    prop_assert!(two.is_empty());

    // The maximum packet size counts the whole packet, fixed header included.
    let mut exact = BytesMut::from(&bytes[..]);
    prop_assert_eq!(decode(&mut exact, &options(v, n as u32)), expected);
    let mut over = BytesMut::from(&bytes[..]);
    prop_assert_eq!(
        decode(&mut over, &options(v, n as u32 - 1)),
        Err(DecodeError::PacketTooLarge {
            size: n,
            max: n as u32 - 1
        })
    );
    Ok(())
}

macro_rules! roundtrip_tests {
    ($($name:ident: $t:ident in $v:ident;)*) => {
        proptest! {
            #![proptest_config(config(256))]
            $(
                #[test]
                fn $name(p in packet(PacketType::$t, ProtocolVersion::$v)) {
                    check_roundtrip(&p, ProtocolVersion::$v)?;
                }
            )*
        }

        /// The tests above cover every packet type in every version it exists in.
        #[test]
        fn every_type_and_version_has_a_roundtrip_test() {
            let covered = [$((PacketType::$t, ProtocolVersion::$v)),*];
            for v in VERSIONS {
                for t in packet_types(v) {
                    assert!(covered.contains(&(t, v)), "no round trip test for {t:?} in {v:?}");
                }
            }
            assert_eq!(covered.len(), 14 * 3 + 1);
        }
    };
}

roundtrip_tests! {
    connect_v3_1: Connect in V3_1;
    connect_v3_1_1: Connect in V3_1_1;
    connect_v5: Connect in V5;
    connack_v3_1: ConnAck in V3_1;
    connack_v3_1_1: ConnAck in V3_1_1;
    connack_v5: ConnAck in V5;
    publish_v3_1: Publish in V3_1;
    publish_v3_1_1: Publish in V3_1_1;
    publish_v5: Publish in V5;
    puback_v3_1: PubAck in V3_1;
    puback_v3_1_1: PubAck in V3_1_1;
    puback_v5: PubAck in V5;
    pubrec_v3_1: PubRec in V3_1;
    pubrec_v3_1_1: PubRec in V3_1_1;
    pubrec_v5: PubRec in V5;
    pubrel_v3_1: PubRel in V3_1;
    pubrel_v3_1_1: PubRel in V3_1_1;
    pubrel_v5: PubRel in V5;
    pubcomp_v3_1: PubComp in V3_1;
    pubcomp_v3_1_1: PubComp in V3_1_1;
    pubcomp_v5: PubComp in V5;
    subscribe_v3_1: Subscribe in V3_1;
    subscribe_v3_1_1: Subscribe in V3_1_1;
    subscribe_v5: Subscribe in V5;
    suback_v3_1: SubAck in V3_1;
    suback_v3_1_1: SubAck in V3_1_1;
    suback_v5: SubAck in V5;
    unsubscribe_v3_1: Unsubscribe in V3_1;
    unsubscribe_v3_1_1: Unsubscribe in V3_1_1;
    unsubscribe_v5: Unsubscribe in V5;
    unsuback_v3_1: UnsubAck in V3_1;
    unsuback_v3_1_1: UnsubAck in V3_1_1;
    unsuback_v5: UnsubAck in V5;
    pingreq_v3_1: PingReq in V3_1;
    pingreq_v3_1_1: PingReq in V3_1_1;
    pingreq_v5: PingReq in V5;
    pingresp_v3_1: PingResp in V3_1;
    pingresp_v3_1_1: PingResp in V3_1_1;
    pingresp_v5: PingResp in V5;
    disconnect_v3_1: Disconnect in V3_1;
    disconnect_v3_1_1: Disconnect in V3_1_1;
    disconnect_v5: Disconnect in V5;
    auth_v5: Auth in V5;
}

/// What an MQTT 5 packet becomes when encoded for 3.x (`v`): its MQTT 5 data dropped (and the
/// Session Present flag, which 3.1 lacks). `None` when 3.x cannot carry it at all.
fn without_v5_data(p: &Packet, v: ProtocolVersion) -> Option<Packet> {
    let mut p = p.clone();
    match &mut p {
        Packet::Connect(_) | Packet::PingReq | Packet::PingResp => {} // CONNECT keeps its version
        Packet::ConnAck(c) => {
            c.reason_code = ReasonCode::from_v3_connack(c.reason_code.to_v3_connack())?;
            c.properties = None;
            c.session_present &= v != ProtocolVersion::V3_1;
        }
        Packet::Publish(p) if p.topic.is_empty() => return None, // only a Topic Alias names it
        Packet::Publish(p) => p.properties = None,
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            a.reason_code = ReasonCode::Success;
            a.properties = None;
        }
        Packet::Subscribe(s) => {
            s.properties = None;
            for f in &mut s.filters {
                f.options = SubscriptionOptions::qos(f.options.qos);
            }
        }
        Packet::SubAck(s) => {
            s.properties = None;
            for c in &mut s.return_codes {
                if c.is_error() {
                    *c = ReasonCode::UnspecifiedError; // 0x80, the one 3.x failure code
                }
            }
        }
        Packet::Unsubscribe(u) => u.properties = None,
        Packet::UnsubAck(u) => {
            u.properties = None;
            u.reason_codes.clear();
        }
        Packet::Disconnect(d) => *d = Disconnect::NORMAL,
        Packet::Auth(_) => return None,
    }
    Some(p)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn v5_packets_encoded_for_v3_lose_only_v5_data(
        p in any_packet(ProtocolVersion::V5),
        v in prop_oneof![Just(ProtocolVersion::V3_1), Just(ProtocolVersion::V3_1_1)],
    ) {
        if let Packet::Auth(_) = p {
            let mut buf = BytesMut::new();
            prop_assert_eq!(p.encode(v, &mut buf), Err(EncodeError::NotInVersion(PacketType::Auth)));
            return Ok(());
        }
        let Some(expected) = without_v5_data(&p, v) else { return Ok(()) };
        let mut buf = BytesMut::from(&encode(&p, v)?[..]);
        prop_assert_eq!(decode(&mut buf, &DecodeOptions::new(v)), Ok(Some(expected)));
        prop_assert!(buf.is_empty());
    }
}

/// MQTT 3.1 CONNACK has a reserved byte where 3.1.1 has Session Present: written as 0, and
/// read as no session (found by `mutated_packets_never_panic`: 0x01 decoded, re-encoded as 0x00).
#[test]
fn v3_1_connack_has_no_session_present() {
    let present = Packet::ConnAck(ringmq_codec::ConnAck {
        session_present: true,
        reason_code: ReasonCode::Success,
        properties: None,
    });
    let mut buf = BytesMut::new();
    present.encode(ProtocolVersion::V3_1, &mut buf).unwrap();
    assert_eq!(&buf[..], [0x20, 0x02, 0x00, 0x00]);
    let mut buf = BytesMut::from(&[0x20, 0x02, 0x01, 0x00][..]);
    let decoded = decode(&mut buf, &DecodeOptions::new(ProtocolVersion::V3_1));
    let Ok(Some(Packet::ConnAck(c))) = decoded else {
        panic!("{decoded:?}")
    };
    assert!(!c.session_present);
}

/// Decodes everything `buf` yields under `opts`; each packet must re-encode and re-decode to
/// itself. Must never panic, whatever the bytes.
fn decode_all(mut buf: BytesMut, opts: &DecodeOptions) -> Result<usize, TestCaseError> {
    let mut count = 0;
    loop {
        let before = buf.len();
        match decode(&mut buf, opts) {
            Ok(Some(p)) => {
                let consumed = before - buf.len();
                prop_assert!(consumed >= 2 && consumed <= opts.max_packet_size as usize);
                let bytes = encode(&p, opts.version)?;
                let mut again = BytesMut::from(&bytes[..]);
                let redecoded = decode(&mut again, &DecodeOptions::new(opts.version));
                prop_assert_eq!(redecoded, Ok(Some(p)));
                prop_assert!(again.is_empty());
                count += 1;
            }
            Ok(None) => {
                prop_assert_eq!(buf.len(), before, "Ok(None) must consume nothing");
                return Ok(count);
            }
            Err(e) => {
                let _ = e.reason_code();
                return Ok(count);
            }
        }
    }
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    proptest::sample::select(VERSIONS.to_vec())
}

fn max_packet_size() -> impl Strategy<Value = u32> {
    prop_oneof![3 => Just(PACKET_SIZE_MAX), 1 => 0u32..64]
}

/// A first byte and a remaining length that fits the arbitrary body after it.
fn framed() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), vec(any::<u8>(), 0..127))
        .prop_map(|(first, body)| [&[first, body.len() as u8][..], &body].concat())
}

/// An edit of an encoded packet.
#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, 1 << bit)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let at = |i: &usize| i % bytes.len();
    match m {
        Mutation::Set(i, b) => {
            let i = at(i);
            bytes[i] = *b;
        }
        Mutation::Flip(i, bit) => {
            let i = at(i);
            bytes[i] ^= bit;
        }
        Mutation::Insert(i, b) => {
            let i = at(i);
            bytes.insert(i, *b);
        }
        Mutation::Remove(i) => {
            let i = at(i);
            bytes.remove(i);
        }
        Mutation::Truncate(i) => {
            let i = at(i);
            bytes.truncate(i);
        }
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop_oneof![vec(any::<u8>(), 0..192), framed()],
        v in version(),
        max in max_packet_size(),
    ) {
        decode_all(BytesMut::from(&bytes[..]), &options(v, max))?;
    }

    #[test]
    fn mutated_packets_never_panic(
        (v, packets) in version().prop_flat_map(|v| (Just(v), vec(any_packet(v), 1..3))),
        mutations in vec(mutation(), 1..4),
        decode_as in proptest::option::of(version()),
        max in max_packet_size(),
    ) {
        let mut bytes = Vec::new();
        for p in &packets {
            bytes.extend_from_slice(&encode(p, v)?);
        }
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        decode_all(BytesMut::from(&bytes[..]), &options(decode_as.unwrap_or(v), max))?;
    }
}

/// The topic matching of spec 4.7, written as plainly as possible.
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

fn small_level() -> impl Strategy<Value = String> {
    proptest::sample::select(vec!["", "a", "b", "ab", "$", "$a", "a$", "$SYS"])
        .prop_map(String::from)
}

/// A topic name from a small alphabet, and a filter: either of random levels, or made from the
/// topic by swapping levels for `+`, cutting it and ending it with `#`.
fn topic_and_filter() -> impl Strategy<Value = (String, String)> {
    let topic_levels = vec(small_level(), 1..5);
    topic_levels.prop_flat_map(|t| {
        let n = t.len();
        let independent = (
            vec(
                prop_oneof![3 => small_level(), 1 => Just("+".to_string())],
                0..5,
            ),
            any::<bool>(),
        )
            .prop_map(|(mut f, hash)| {
                if hash || f.is_empty() {
                    f.push("#".into());
                }
                f
            });
        let derived = (vec(0u8..4, n), 0..=n, any::<bool>(), Just(t.clone())).prop_map(
            |(ops, cut, hash, t)| {
                let mut f: Vec<String> = t
                    .into_iter()
                    .zip(ops)
                    .map(|(l, op)| match op {
                        0 => "+".to_string(),
                        1 => format!("{l}a"),
                        _ => l,
                    })
                    .collect();
                if hash {
                    f.truncate(cut);
                    f.push("#".into());
                }
                f
            },
        );
        (
            Just(t.join("/")),
            prop_oneof![independent, derived].prop_map(|f| f.join("/")),
        )
    })
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn matches_agrees_with_reference((t, f) in topic_and_filter()) {
        prop_assume!(topic::validate_topic_name(&t).is_ok() && topic::validate_filter(&f).is_ok());
        prop_assert_eq!(topic::matches(&t, &f), reference_matches(&t, &f), "{} vs {}", t, f);
    }

    #[test]
    fn matches_agrees_with_reference_on_raw_strings(
        t in "[ab$/]{1,8}",
        f in "[ab$/+#]{1,8}",
    ) {
        if topic::validate_topic_name(&t).is_ok() && topic::validate_filter(&f).is_ok() {
            prop_assert_eq!(topic::matches(&t, &f), reference_matches(&t, &f), "{} vs {}", t, f);
        }
    }
}

#[test]
fn reference_matcher_follows_spec_examples() {
    for (t, f, m) in [
        (
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/#",
            true,
        ),
        ("sport", "sport/#", true),
        ("sport/tennis/player1", "sport/tennis/+", true),
        ("sport/tennis/player1/ranking", "sport/tennis/+", false),
        ("sport", "sport/+", false),
        ("/finance", "+/+", true),
        ("/finance", "+", false),
        ("$SYS/monitor/Clients", "#", false),
        ("$SYS/monitor/Clients", "+/monitor/Clients", false),
        ("$SYS/monitor/Clients", "$SYS/#", true),
    ] {
        assert_eq!(reference_matches(t, f), m, "{t} vs {f}");
        assert_eq!(topic::matches(t, f), m, "{t} vs {f}");
    }
}

/// The version selector byte that the `roundtrip` fuzz target reads first.
fn selector(v: ProtocolVersion) -> u8 {
    VERSIONS.iter().position(|x| *x == v).unwrap() as u8
}

#[test]
#[ignore = "writes fuzz/corpus; run with --ignored"]
fn write_fuzz_seed_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    };
    let mut runner = TestRunner::deterministic();
    for v in VERSIONS {
        let mut stream = Vec::new();
        for t in packet_types(v) {
            for i in 0..2 {
                let p = packet(t, v).new_tree(&mut runner).unwrap().current();
                let mut bytes = Vec::new();
                p.encode(v, &mut bytes).unwrap();
                let name = format!("seed-{t:?}-{v:?}-{i}").to_lowercase();
                write("decode", &name, &bytes);
                write("roundtrip", &name, &[&[selector(v)], &bytes[..]].concat());
                stream.extend_from_slice(&bytes);
            }
        }
        let name = format!("seed-stream-{v:?}").to_lowercase();
        write("roundtrip", &name, &[&[selector(v)], &stream[..]].concat());
    }
    let pairs = [
        ("sport/tennis/player1", "sport/tennis/+"),
        ("sport", "sport/#"),
        ("/finance", "+/+"),
        ("$SYS/monitor", "#"),
        ("$SYS/monitor", "$SYS/+"),
        ("a//b", "a/+/b"),
        ("a/b", "a/b/#"),
        ("a/b/c", "+/+"),
    ];
    for (i, (t, f)) in pairs.into_iter().enumerate() {
        write(
            "topic_match",
            &format!("seed-pair-{i}"),
            format!("{t}\0{f}").as_bytes(),
        );
    }
}
