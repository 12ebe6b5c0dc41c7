//! `decode` over arbitrary bytes, in every protocol version, with no size limit and with small
//! ones. Invariants: no panic; each decoded packet took between 2 and `max_packet_size` bytes;
//! `Ok(None)` consumed nothing; a packet cut one byte short is `Ok(None)`.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq_codec::{decode, DecodeOptions, ProtocolVersion, PACKET_SIZE_MAX};

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

fuzz_target!(|data: &[u8]| {
    for version in VERSIONS {
        for max_packet_size in [PACKET_SIZE_MAX, 64, 5] {
            let options = DecodeOptions {
                version,
                max_packet_size,
            };
            let mut buf = BytesMut::from(data);
            let mut first = true;
            loop {
                let before = buf.len();
                match decode(&mut buf, &options) {
                    Ok(Some(packet)) => {
                        let consumed = before - buf.len();
                        assert!(consumed >= 2, "{consumed} bytes make no packet");
                        assert!(consumed <= max_packet_size as usize, "over the maximum");
                        let _ = packet.encoded_len(version);
                        if first {
                            // The same packet one byte short: not there yet.
                            let offset = data.len() - before;
                            let mut short = BytesMut::from(&data[offset..offset + consumed - 1]);
                            assert_eq!(decode(&mut short, &options), Ok(None));
                            assert_eq!(short.len(), consumed - 1);
                        }
                    }
                    Ok(None) => {
                        assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                        break;
                    }
                    Err(e) => {
                        let _ = (e.reason_code(), e.to_string());
                        break;
                    }
                }
                first = false;
            }
        }
    }
});
