//! Criterion micro-benchmarks of the codec: PUBLISH decode/encode by payload size and version,
//! CONNECT and SUBSCRIBE (MQTT 5), and a buffer of 1,000 pipelined PUBLISH packets.
//!
//! Run: `cargo bench -p ringmq-codec --bench codec -- --warm-up-time 1 --measurement-time 3`.
//! Figures and the machine they come from: `bench/RESULTS.md`.
//!
//! # What a decode iteration measures, and why
//!
//! `decode` consumes bytes from the front of a `BytesMut`, so every iteration needs the packet
//! bytes again. Three costs must stay out of the timed region because they are the benchmark's,
//! not the decoder's: allocating a buffer, copying the packet bytes into it, and dropping the
//! decoded packet (its `Bytes` handles and boxed properties). The decoder's own costs must stay
//! in: the fixed header, splitting the frame off the buffer (`split_to` + `freeze`, reference
//! counting), and every validation.
//!
//! The main decode benchmarks therefore model a connection's read buffer, which is how the
//! broker calls `decode`: one `BytesMut` is filled with a batch of copies of the packet (as a
//! socket read would leave it: contiguous, warm in cache), then the batch is decoded packet by
//! packet under the timer. Refilling happens outside the timer, into the same allocation:
//! once every decoded packet of the previous batch is dropped the buffer is the only owner of its
//! storage again, and `BytesMut` reclaims it without allocating. Decoded packets are kept in a
//! pre-allocated `Vec` until the timer stops and dropped outside it, as `iter_batched_ref` does.
//! The one allocation `bytes` makes when a `Vec`-backed `BytesMut` is first split (the shared
//! header) is amortized over the batch, as it is over the packets of a real read buffer. The
//! timer is read twice per batch; batches are large (up to 1,024 packets, 16 for 64 KiB) so this
//! adds well under 1 ns per packet.
//!
//! `pipelined_…/decode_and_drop` drops each packet inside the timed loop instead, as a broker
//! does once the message is routed: the difference from `…/decode` is the cost of releasing the
//! packet's `Bytes` handles (two atomic decrements for a v3.1.1 PUBLISH).
//!
//! The `publish_decode_fresh_buffer` group shows the other extreme: a buffer holding exactly one
//! packet, cloned per iteration outside the timer (`iter_batched_ref`, `BatchSize::SmallInput`).
//! There the shared-header allocation of the first `split_to` is paid by every decode.
//!
//! Encode benchmarks reuse one `BytesMut` with enough capacity and `clear()` it per iteration:
//! what is timed is `Packet::encode` (checks, length computation, writing).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use ringmq_codec::{
    decode, Connect, DecodeOptions, Packet, Properties, ProtocolVersion, QoS, RetainHandling,
    Subscribe, SubscribeFilter, SubscriptionOptions, Utf8Bytes, Will,
};

mod packets;

const PAYLOAD_SIZES: [usize; 4] = [16, 64, 256, 64 * 1024];
/// Largest batch of packets decoded per timed region.
const BATCH_MAX: usize = 1024;
/// Bytes of one batch (so that 64 KiB packets come 16 to a batch).
const BATCH_BYTES: usize = 1 << 20;

/// The PUBLISH variants measured for every payload size.
#[derive(Clone, Copy)]
enum Variant {
    V311Qos0,
    V311Qos1,
    V5Props,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::V311Qos0, Variant::V311Qos1, Variant::V5Props];

    fn name(self) -> &'static str {
        match self {
            Variant::V311Qos0 => "v3.1.1_qos0",
            Variant::V311Qos1 => "v3.1.1_qos1",
            Variant::V5Props => "v5_qos1_props",
        }
    }

    fn version(self) -> ProtocolVersion {
        match self {
            Variant::V311Qos0 | Variant::V311Qos1 => ProtocolVersion::V3_1_1,
            Variant::V5Props => ProtocolVersion::V5,
        }
    }
}

fn publish(variant: Variant, size: usize) -> Packet {
    match variant {
        Variant::V311Qos0 => packets::publish(false, QoS::AtMostOnce, size),
        Variant::V311Qos1 => packets::publish(false, QoS::AtLeastOnce, size),
        Variant::V5Props => packets::publish(true, QoS::AtLeastOnce, size),
    }
}

fn connect_v5() -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 60,
        properties: Some(Box::new(Properties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(256),
            topic_alias_maximum: Some(64),
            maximum_packet_size: Some(1 << 20),
            user_properties: vec![(
                Utf8Bytes::from_static("region"),
                Utf8Bytes::from_static("eu-west-1"),
            )],
            ..Properties::default()
        })),
        client_id: Utf8Bytes::from_static("sensor-gateway-building-7-0042"),
        will: Some(Will {
            topic: Utf8Bytes::from_static("sensors/building-7/gateway-0042/status"),
            payload: Bytes::from_static(b"{\"state\":\"offline\"}"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Some(Box::new(Properties {
                will_delay_interval: Some(30),
                message_expiry_interval: Some(86400),
                content_type: Some(Utf8Bytes::from_static("application/json")),
                ..Properties::default()
            })),
        }),
        username: Some(Utf8Bytes::from_static("gateway-0042")),
        password: Some(Bytes::from_static(b"s3cr3t-t0ken-0123456789abcdef")),
    }))
}

fn subscribe_v5() -> Packet {
    let filters = [
        ("sensors/building-7/+/temperature", QoS::AtLeastOnce, false),
        ("sensors/building-7/floor-3/#", QoS::AtMostOnce, true),
        ("sensors/+/+/humidity", QoS::AtLeastOnce, false),
        ("alerts/#", QoS::ExactlyOnce, false),
        ("$share/workers/jobs/+/pending", QoS::AtLeastOnce, false),
        ("commands/gateway-0042", QoS::AtLeastOnce, true),
        ("status/building-7/floor-3/door-12", QoS::AtMostOnce, false),
        ("$queue/telemetry/ingest", QoS::AtLeastOnce, false),
        ("config/+/gateway-0042/#", QoS::AtLeastOnce, false),
        ("metrics/building-7/energy/total", QoS::AtMostOnce, false),
    ];
    Packet::Subscribe(Subscribe {
        packet_id: 17,
        properties: Some(Box::new(Properties {
            subscription_identifiers: vec![12],
            user_properties: vec![(
                Utf8Bytes::from_static("app"),
                Utf8Bytes::from_static("dashboard"),
            )],
            ..Properties::default()
        })),
        filters: filters
            .into_iter()
            .map(|(filter, qos, no_local)| SubscribeFilter {
                filter: Utf8Bytes::from_static(filter),
                options: SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published: no_local,
                    retain_handling: RetainHandling::SendIfNew,
                },
            })
            .collect(),
    })
}

fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    let n = packet.encode(version, &mut out).expect("encodable packet");
    assert_eq!(n, out.len());
    // The benchmark packets must round-trip, or the benchmarks measure an error path.
    let decoded = decode(&mut out.clone(), &DecodeOptions::new(version))
        .expect("decodable packet")
        .expect("whole packet");
    assert_eq!(&decoded, packet);
    out.to_vec()
}

/// What happens to a decoded packet inside the timed region.
#[derive(Clone, Copy, PartialEq)]
enum Packets {
    /// Kept until the timer stops, then dropped: only `decode` is timed.
    Keep,
    /// Dropped at once, as a broker does once it has routed the message: `decode` plus the
    /// drop of the packet (the release of its `Bytes` handles) are timed.
    Drop,
}

/// Decodes `iters` copies of the packet `wire` (`per_iter` packets per iteration) from a reused
/// read buffer and returns the time spent decoding. See the module documentation.
fn decode_batched(
    wire: &[u8],
    per_iter: usize,
    options: &DecodeOptions,
    packets_fate: Packets,
    iters: u64,
) -> Duration {
    let batch_iters = (BATCH_MAX / per_iter)
        .min(BATCH_BYTES / (wire.len() * per_iter))
        .max(1);
    let batch_packets = batch_iters * per_iter;
    let image = wire.repeat(batch_packets);
    let mut buf = BytesMut::with_capacity(image.len());
    let mut out: Vec<Packet> = Vec::with_capacity(batch_packets);
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = (left as usize).min(batch_iters);
        left -= n as u64;
        let packets = n * per_iter;
        out.clear();
        buf.clear();
        buf.extend_from_slice(&image[..packets * wire.len()]);
        let start = Instant::now();
        for _ in 0..packets {
            match decode(black_box(&mut buf), options) {
                Ok(Some(p)) if packets_fate == Packets::Keep => out.push(p),
                Ok(Some(p)) => drop(black_box(p)),
                _ => unreachable!("benchmark packet must decode"),
            }
        }
        total += start.elapsed();
        black_box(&out);
    }
    total
}

fn bench_publish(c: &mut Criterion) {
    let mut dec = c.benchmark_group("publish_decode");
    for variant in Variant::ALL {
        let options = DecodeOptions::new(variant.version());
        for size in PAYLOAD_SIZES {
            let wire = encode(&publish(variant, size), variant.version());
            dec.throughput(Throughput::Bytes(wire.len() as u64));
            dec.bench_with_input(BenchmarkId::new(variant.name(), size), &wire, |b, wire| {
                b.iter_custom(|iters| decode_batched(wire, 1, &options, Packets::Keep, iters))
            });
        }
    }
    dec.finish();

    let mut enc = c.benchmark_group("publish_encode");
    for variant in Variant::ALL {
        let version = variant.version();
        for size in PAYLOAD_SIZES {
            let packet = publish(variant, size);
            let len = packet.encoded_len(version);
            let mut buf = BytesMut::with_capacity(len);
            enc.throughput(Throughput::Bytes(len as u64));
            enc.bench_with_input(
                BenchmarkId::new(variant.name(), size),
                &packet,
                |b, packet| {
                    b.iter(|| {
                        buf.clear();
                        black_box(packet).encode(version, &mut buf).unwrap()
                    })
                },
            );
        }
    }
    enc.finish();

    // One packet per buffer: every decode also pays the first-split allocation of `bytes`.
    let mut fresh = c.benchmark_group("publish_decode_fresh_buffer");
    for variant in [Variant::V311Qos0, Variant::V5Props] {
        let options = DecodeOptions::new(variant.version());
        let wire = BytesMut::from(&encode(&publish(variant, 64), variant.version())[..]);
        fresh.throughput(Throughput::Bytes(wire.len() as u64));
        fresh.bench_with_input(BenchmarkId::new(variant.name(), 64), &wire, |b, wire| {
            b.iter_batched_ref(
                || wire.clone(),
                |buf| decode(buf, &options).unwrap().unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    fresh.finish();
}

fn bench_control(c: &mut Criterion) {
    let v5 = ProtocolVersion::V5;
    let options = DecodeOptions::new(v5);
    for (name, packet) in [
        ("connect_v5", connect_v5()),
        ("subscribe_v5_10", subscribe_v5()),
    ] {
        let wire = encode(&packet, v5);
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(1));
        group.bench_function("decode", |b| {
            b.iter_custom(|iters| decode_batched(&wire, 1, &options, Packets::Keep, iters))
        });
        let mut buf = BytesMut::with_capacity(wire.len());
        group.bench_function("encode", |b| {
            b.iter(|| {
                buf.clear();
                black_box(&packet).encode(v5, &mut buf).unwrap()
            })
        });
        group.finish();
    }
}

fn bench_pipelined(c: &mut Criterion) {
    const PACKETS: usize = 1000;
    let version = ProtocolVersion::V3_1_1;
    let options = DecodeOptions::new(version);
    let packet = publish(Variant::V311Qos0, 64);
    let wire = encode(&packet, version);

    let mut group = c.benchmark_group("pipelined_1000_publish_v3.1.1_qos0_64B");
    group.throughput(Throughput::Elements(PACKETS as u64));
    // One iteration decodes one 1,000-packet buffer (102 KB); the refill is not timed.
    group.bench_function("decode", |b| {
        b.iter_custom(|iters| decode_batched(&wire, PACKETS, &options, Packets::Keep, iters))
    });
    // The same with each packet dropped right after it is decoded, as a broker does.
    group.bench_function("decode_and_drop", |b| {
        b.iter_custom(|iters| decode_batched(&wire, PACKETS, &options, Packets::Drop, iters))
    });
    let mut buf = BytesMut::with_capacity(wire.len() * PACKETS);
    group.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            for _ in 0..PACKETS {
                black_box(&packet).encode(version, &mut buf).unwrap();
            }
            buf.len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_publish, bench_control, bench_pipelined);
criterion_main!(benches);
