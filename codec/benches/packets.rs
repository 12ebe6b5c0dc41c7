//! The PUBLISH packets measured, shared by the criterion benchmarks (`benches/codec.rs`) and the
//! callgrind loop (`examples/codec_loop.rs`), so that both measure the same bytes.

use bytes::Bytes;
use ringmq_codec::{Packet, Properties, Publish, QoS, Utf8Bytes};

/// The topic of every benchmark PUBLISH (38 bytes).
pub const TOPIC: &str = "sensors/building-7/floor-3/temperature";

/// A payload of `size` bytes.
pub fn payload(size: usize) -> Bytes {
    (0..size)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A PUBLISH on [`TOPIC`]: with `v5`, carrying message expiry, topic alias, one user property
/// and 16 bytes of correlation data.
pub fn publish(v5: bool, qos: QoS, size: usize) -> Packet {
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
        topic: Utf8Bytes::from_static(TOPIC),
        packet_id: if qos == QoS::AtMostOnce { 0 } else { 4242 },
        properties,
        payload: payload(size),
    })
}
