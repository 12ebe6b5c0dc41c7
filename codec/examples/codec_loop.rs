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

use bytes::BytesMut;
use ringmq_codec::{decode, DecodeOptions, Packet, ProtocolVersion, QoS};

#[path = "../benches/packets.rs"]
mod packets;

use packets::publish;

const BATCH: usize = 1000;

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
