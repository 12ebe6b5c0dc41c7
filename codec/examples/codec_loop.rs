//! Decodes or encodes one benchmark packet N times, for instruction counting under callgrind,
//! which is repeatable where wall-clock timings on a shared machine are not:
//!
//! ```text
//! cargo build --release -p ringmq-codec --example codec_loop
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!   --toggle-collect=codec_loop::decode_one --toggle-collect=codec_loop::encode_one \
//!   target/release/examples/codec_loop decode-v311-qos0-64 100000 2>&1 | grep Collected
//! ```
//!
//! Collected / N = instructions per `decode` or `Packet::encode` call: only the calls are
//! counted, not the refill of the buffer nor the drop of the packets. Decoding works as in
//! `benches/codec.rs`: one read buffer holding a batch of 1,000 copies, refilled into the same
//! allocation, decoded packets dropped after each batch.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use ringmq_codec::{
    decode, DecodeOptions, Packet, Properties, ProtocolVersion, Publish, QoS, Utf8Bytes,
};

const BATCH: usize = 1000;

fn publish(v5: bool, qos: QoS, size: usize) -> Packet {
    let properties = v5.then(|| {
        Box::new(Properties {
            message_expiry_interval: Some(3600),
            topic_alias: Some(7),
            user_properties: vec![(
                Utf8Bytes::from_static("unit"),
                Utf8Bytes::from_static("celsius"),
            )],
            correlation_data: Some(Bytes::from_static(b"req-000000001234")),
            ..Properties::default()
        })
    });
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: Utf8Bytes::from_static("sensors/building-7/floor-3/temperature"),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 4242 },
        properties,
        payload: vec![0x5A; size].into(),
    })
}

#[inline(never)]
fn decode_one(buf: &mut BytesMut, options: &DecodeOptions) -> Packet {
    decode(buf, options).unwrap().unwrap()
}

#[inline(never)]
fn encode_one(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) -> usize {
    packet.encode(version, buf).unwrap()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "decode-v311-qos0-64".into());
    let n: usize = args.next().map_or(1_000_000, |s| s.parse().expect("N"));
    let (op, rest) = case.split_once('-').expect("decode-… or encode-…");
    let (packet, version) = match rest {
        "v311-qos0-64" => (publish(false, QoS::AtMostOnce, 64), ProtocolVersion::V3_1_1),
        "v311-qos1-64" => (
            publish(false, QoS::AtLeastOnce, 64),
            ProtocolVersion::V3_1_1,
        ),
        "v5-props-64" => (publish(true, QoS::AtLeastOnce, 64), ProtocolVersion::V5),
        _ => panic!("unknown case {rest}"),
    };
    let mut wire = BytesMut::new();
    packet.encode(version, &mut wire).expect("encode");
    match op {
        "decode" => {
            let options = DecodeOptions::new(version);
            let image = wire.repeat(BATCH);
            let mut buf = BytesMut::with_capacity(image.len());
            let mut out = Vec::with_capacity(BATCH);
            let mut left = n;
            while left > 0 {
                let k = left.min(BATCH);
                left -= k;
                out.clear();
                buf.clear();
                buf.extend_from_slice(&image[..k * wire.len()]);
                for _ in 0..k {
                    out.push(decode_one(black_box(&mut buf), &options));
                }
                black_box(&out);
            }
            assert_eq!(out.last(), Some(&packet));
        }
        "encode" => {
            let mut buf = BytesMut::with_capacity(wire.len());
            for _ in 0..n {
                buf.clear();
                black_box(encode_one(black_box(&packet), version, &mut buf));
            }
            assert_eq!(buf, wire);
        }
        _ => panic!("unknown operation {op}"),
    }
}
