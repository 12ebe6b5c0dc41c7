//! decode, encode, decode again. The first byte picks the protocol version (0: 3.1, 1: 3.1.1,
//! 2: 5.0, modulo 3); the rest is a byte stream. Invariants for every packet decoded from it:
//! it encodes; `encode` returns `encoded_len`, which is the number of bytes written; those bytes
//! decode, whole, to an equal packet; and encoding that packet gives the same bytes again.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringmq_codec::{decode, DecodeOptions, ProtocolVersion};

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let version = VERSIONS[usize::from(selector % 3)];
    let options = DecodeOptions::new(version);
    let mut buf = BytesMut::from(stream);
    while let Ok(Some(packet)) = decode(&mut buf, &options) {
        let mut out = BytesMut::new();
        let written = match packet.encode(version, &mut out) {
            Ok(n) => n,
            Err(e) => panic!("decoded {packet:?} does not encode: {e}"),
        };
        assert_eq!(written, out.len(), "returned length vs bytes written");
        assert_eq!(
            written,
            packet.encoded_len(version),
            "encoded_len vs bytes written"
        );
        let encoded = out.clone().freeze();
        let again = match decode(&mut out, &options) {
            Ok(Some(p)) => p,
            other => panic!("{packet:?} encoded as {encoded:02x?} decodes to {other:?}"),
        };
        assert_eq!(again, packet, "re-decoded packet differs");
        assert!(out.is_empty(), "re-decode left {} bytes", out.len());
        let mut twice = BytesMut::new();
        again.encode(version, &mut twice).expect("encodes again");
        assert_eq!(twice.freeze(), encoded, "encoding is not stable");
    }
});
