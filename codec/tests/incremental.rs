//! Incremental decoding: `decode` returns `Ok(None)` and consumes nothing until a whole packet
//! is buffered, then returns it; pipelined packets come out one after the other.

mod common;

use bytes::BytesMut;
use common::*;
use ringmq_codec::{
    decode, Ack, ConnAck, Disconnect, Packet, ProtocolVersion, Publish, QoS, ReasonCode,
};

/// A v5 CONNECT with a two-byte remaining length (131) and a client id of 118 bytes.
fn big_connect() -> Vec<u8> {
    let mut body = vec![
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x00,
    ];
    body.extend_from_slice(&field(&[b'c'; 118]));
    assert_eq!(body.len(), 131);
    packet(0x10, &body)
}

/// Packets of every shape of fixed header: 1-, 2- and 3-byte remaining lengths, empty bodies.
fn samples() -> Vec<(ProtocolVersion, Vec<u8>)> {
    let mut publish_3_byte_len = vec![0x30, 0x80, 0x80, 0x01, 0x00, 0x01, b't'];
    publish_3_byte_len.resize(4 + 16_384, 0x42);
    vec![
        (V3_1_1, vec![0xC0, 0x00]),
        (V5, vec![0xE0, 0x00]),
        (V5, vec![0x40, 0x03, 0x00, 0x01, 0x10]),
        (
            V5,
            vec![
                0x32, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, 0x00, b'h', b'i',
            ],
        ),
        (V5, big_connect()),
        (V3_1_1, publish_3_byte_len),
    ]
}

#[test]
fn one_byte_at_a_time() {
    for (version, bytes) in samples() {
        let whole = decode_all(version, &bytes)
            .expect("sample decodes")
            .expect("sample is complete");
        let mut buf = BytesMut::new();
        for (i, &byte) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[byte]);
            let result = decode(&mut buf, &opts(version));
            if i + 1 < bytes.len() {
                assert_eq!(result, Ok(None), "{} of {} bytes", i + 1, bytes.len());
                // Nothing is consumed while the packet is incomplete.
                assert_eq!(buf.len(), i + 1);
            } else {
                assert_eq!(result, Ok(Some(whole.clone())));
                assert!(buf.is_empty());
            }
        }
    }
}

/// An empty buffer is not an error either.
#[test]
fn empty_buffer() {
    let mut buf = BytesMut::new();
    assert_eq!(decode(&mut buf, &opts(V5)), Ok(None));
}

/// Two packets in one buffer decode one after the other and leave it empty.
#[test]
fn two_pipelined_packets() {
    let mut buf = BytesMut::new();
    // PUBLISH QoS 1 "a/b" id 7 "hi", then PUBACK 7 (MQTT 3.1.1).
    buf.extend_from_slice(&[
        0x32, 0x09, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x07, b'h', b'i',
    ]);
    buf.extend_from_slice(&[0x40, 0x02, 0x00, 0x07]);
    let first = decode(&mut buf, &opts(V3_1_1)).unwrap();
    assert_eq!(
        first,
        Some(Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: s("a/b"),
            packet_id: 7,
            payload: b(b"hi"),
            ..Publish::default()
        }))
    );
    assert_eq!(&buf[..], &[0x40, 0x02, 0x00, 0x07]);
    let second = decode(&mut buf, &opts(V3_1_1)).unwrap();
    assert_eq!(second, Some(Packet::PubAck(Ack::new(7))));
    assert!(buf.is_empty());
    assert_eq!(decode(&mut buf, &opts(V3_1_1)), Ok(None));
}

/// Every sample back to back, fed in chunks of every size from 1 to 7 bytes: the same packets
/// come out in the same order, and the buffer ends empty.
#[test]
fn pipelined_stream_in_chunks() {
    let v5: Vec<(ProtocolVersion, Vec<u8>)> = samples()
        .into_iter()
        .filter(|(version, _)| *version == V5)
        .collect();
    let stream: Vec<u8> = v5.iter().flat_map(|(_, bytes)| bytes.clone()).collect();
    let expected: Vec<Packet> = v5
        .iter()
        .map(|(version, bytes)| decode_all(*version, bytes).unwrap().unwrap())
        .collect();
    for chunk in 1..=7 {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(p) = decode(&mut buf, &opts(V5)).unwrap() {
                got.push(p);
            }
        }
        assert_eq!(got, expected, "chunks of {chunk}");
        assert!(buf.is_empty());
    }
}

/// A CONNACK followed by a partial DISCONNECT: the first comes out, the partial one stays.
#[test]
fn whole_packet_then_partial_one() {
    let mut buf = BytesMut::from(&[0x20, 0x03, 0x00, 0x00, 0x00, 0xE0, 0x01][..]);
    assert_eq!(
        decode(&mut buf, &opts(V5)).unwrap(),
        Some(Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: ReasonCode::Success,
            properties: None,
        }))
    );
    assert_eq!(decode(&mut buf, &opts(V5)), Ok(None));
    assert_eq!(&buf[..], &[0xE0, 0x01]);
    buf.extend_from_slice(&[0x8E]);
    assert_eq!(
        decode(&mut buf, &opts(V5)).unwrap(),
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::SessionTakenOver
        )))
    );
    assert!(buf.is_empty());
}
