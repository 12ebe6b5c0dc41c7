//! The packet model: one enum over the 15 MQTT control packets, shared by all protocol versions
//! (data that exists only in MQTT 5 is optional), and the fixed header (spec 2.1).

use bytes::{Buf, BufMut, BytesMut};

use crate::wire::{parse_varint, put_varint, varint_len, Reader, VarInt, VARINT_MAX};
use crate::{
    Ack, Auth, ConnAck, Connect, DecodeError, Disconnect, EncodeError, Publish, SubAck, Subscribe,
    UnsubAck, Unsubscribe,
};

/// The protocol version, from the CONNECT protocol level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (protocol name `MQIsdp`, level 3).
    V3_1 = 3,
    /// MQTT 3.1.1 (protocol name `MQTT`, level 4).
    V3_1_1 = 4,
    /// MQTT 5.0 (protocol name `MQTT`, level 5).
    V5 = 5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub const fn level(self) -> u8 {
        self as u8
    }

    /// The protocol name of CONNECT.
    pub const fn protocol_name(self) -> &'static str {
        match self {
            Self::V3_1 => "MQIsdp",
            Self::V3_1_1 | Self::V5 => "MQTT",
        }
    }

    /// Whether this is MQTT 5.
    pub const fn is_v5(self) -> bool {
        matches!(self, Self::V5)
    }
}

/// Quality of service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QoS {
    /// QoS 0.
    #[default]
    AtMostOnce = 0,
    /// QoS 1.
    AtLeastOnce = 1,
    /// QoS 2.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a 2-bit value; 3 is not a QoS [MQTT-3.3.1-4].
    pub const fn from_u8(value: u8) -> Result<Self, DecodeError> {
        match value {
            0 => Ok(Self::AtMostOnce),
            1 => Ok(Self::AtLeastOnce),
            2 => Ok(Self::ExactlyOnce),
            _ => Err(DecodeError::InvalidQoS),
        }
    }
}

/// The control packet type, the high nibble of the first byte (spec 2.1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

impl PacketType {
    /// The packet type for a nibble; 0 is reserved.
    pub const fn from_nibble(nibble: u8) -> Option<Self> {
        use PacketType::*;
        Some(match nibble {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 => Auth,
            _ => return None,
        })
    }

    /// The flag nibble required for every type but PUBLISH (spec 2.1.3, table 2-2).
    pub const fn required_flags(self) -> u8 {
        match self {
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

/// A decoded fixed header (spec 2.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedHeader {
    /// The packet type.
    pub packet_type: PacketType,
    /// The low nibble of the first byte.
    pub flags: u8,
    /// The remaining length: bytes after the fixed header.
    pub remaining_len: usize,
    /// Bytes of the fixed header itself (2 to 5).
    pub header_len: usize,
}

impl FixedHeader {
    /// Bytes of the whole packet.
    pub const fn total_len(&self) -> usize {
        self.header_len + self.remaining_len
    }

    /// Parses and checks the fixed header at the front of `bytes` without consuming anything.
    /// `Ok(None)` means the header is not complete yet. A declared size above
    /// `max_packet_size` is rejected here, before the body is buffered.
    #[inline]
    pub fn parse(
        bytes: &[u8],
        version: ProtocolVersion,
        max_packet_size: u32,
    ) -> Result<Option<Self>, DecodeError> {
        let Some(&first) = bytes.first() else {
            return Ok(None);
        };
        // A table lookup accepts the valid first bytes; the others go through the checks
        // themselves, which name the error.
        let table = if version.is_v5() {
            &FIRST_BYTE_V5
        } else {
            &FIRST_BYTE_V3
        };
        let packet_type = match table[usize::from(first)] {
            Some(t) => t,
            None => check_first_byte(first, version)?,
        };
        let (remaining_len, len_bytes) = match parse_varint(&bytes[1..])? {
            VarInt::Done(value, len) => (value as usize, len),
            VarInt::Incomplete => return Ok(None),
        };
        let header = Self {
            packet_type,
            flags: first & 0x0F,
            remaining_len,
            header_len: 1 + len_bytes,
        };
        if header.total_len() > max_packet_size as usize {
            return Err(DecodeError::PacketTooLarge {
                size: header.total_len(),
                max: max_packet_size,
            });
        }
        Ok(Some(header))
    }
}

/// The checks of the first byte of a fixed header: a defined packet type for `version`, and
/// the flags its type requires (spec 2.1.2, 2.1.3; QoS 3 [MQTT-3.3.1-4]; DUP on QoS 0
/// [MQTT-3.3.1-2]).
const fn check_first_byte(first: u8, version: ProtocolVersion) -> Result<PacketType, DecodeError> {
    let (nibble, flags) = (first >> 4, first & 0x0F);
    let packet_type = match PacketType::from_nibble(nibble) {
        Some(PacketType::Auth) if !version.is_v5() => {
            return Err(DecodeError::InvalidPacketType(nibble))
        }
        Some(t) => t,
        None => return Err(DecodeError::InvalidPacketType(nibble)),
    };
    if let PacketType::Publish = packet_type {
        match QoS::from_u8((flags >> 1) & 0b11) {
            Ok(QoS::AtMostOnce) if flags & 0b1000 != 0 => Err(DecodeError::DupOnQoS0),
            Ok(_) => Ok(packet_type),
            Err(e) => Err(e),
        }
    } else if flags != packet_type.required_flags() {
        Err(DecodeError::InvalidHeaderFlags {
            packet: packet_type,
            flags,
        })
    } else {
        Ok(packet_type)
    }
}

/// [`check_first_byte`] for every byte, computed at compile time: the packet type of each
/// valid first byte, `None` for the others.
const fn first_byte_table(version: ProtocolVersion) -> [Option<PacketType>; 256] {
    let mut table = [None; 256];
    let mut i = 0;
    while i < 256 {
        if let Ok(t) = check_first_byte(i as u8, version) {
            table[i] = Some(t);
        }
        i += 1;
    }
    table
}

static FIRST_BYTE_V3: [Option<PacketType>; 256] = first_byte_table(ProtocolVersion::V3_1_1);
static FIRST_BYTE_V5: [Option<PacketType>; 256] = first_byte_table(ProtocolVersion::V5);

/// What the decoder needs to know about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeOptions {
    /// The version the connection speaks. CONNECT ignores it: it carries its own.
    pub version: ProtocolVersion,
    /// The largest packet accepted, fixed header included, in bytes.
    pub max_packet_size: u32,
}

/// The largest packet the MQTT wire format can carry: 1 + 4 + 268,435,455 bytes.
pub const PACKET_SIZE_MAX: u32 = 1 + 4 + VARINT_MAX;

impl DecodeOptions {
    /// Options for `version` with no size limit beyond the protocol's own.
    pub const fn new(version: ProtocolVersion) -> Self {
        Self {
            version,
            max_packet_size: PACKET_SIZE_MAX,
        }
    }
}

/// An MQTT control packet.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

/// Decodes one packet from the front of `buf`.
///
/// `Ok(None)`: `buf` does not hold a whole packet yet; nothing was consumed. `Ok(Some(_))`: the
/// packet's bytes were split off `buf`, and its topics, payloads and binary properties share
/// them (zero copy). `Err(_)`: the stream is broken; the connection must be closed (the bytes
/// of the bad packet may or may not have been consumed).
#[inline]
pub fn decode(buf: &mut BytesMut, options: &DecodeOptions) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = FixedHeader::parse(buf, options.version, options.max_packet_size)? else {
        return Ok(None);
    };
    if buf.len() < header.total_len() {
        return Ok(None);
    }
    let mut frame = buf.split_to(header.total_len()).freeze();
    frame.advance(header.header_len);
    let r = Reader::new(frame);
    if header.packet_type == PacketType::Publish {
        // The bulk of the traffic: decoded here rather than in `decode_body`, whose stack frame
        // and moves are sized for every packet type.
        return Publish::decode(header.flags, r, options.version).map(|p| Some(Packet::Publish(p)));
    }
    decode_body(header, r, options.version).map(Some)
}

#[inline(never)]
fn decode_body(
    header: FixedHeader,
    r: Reader,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    Ok(match header.packet_type {
        PacketType::Connect => Packet::Connect(Box::new(Connect::decode(r)?)),
        PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(r, version)?),
        PacketType::Publish => Packet::Publish(Publish::decode(header.flags, r, version)?),
        PacketType::PubAck => Packet::PubAck(Ack::decode(PacketType::PubAck, r, version)?),
        PacketType::PubRec => Packet::PubRec(Ack::decode(PacketType::PubRec, r, version)?),
        PacketType::PubRel => Packet::PubRel(Ack::decode(PacketType::PubRel, r, version)?),
        PacketType::PubComp => Packet::PubComp(Ack::decode(PacketType::PubComp, r, version)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(r, version)?),
        PacketType::SubAck => Packet::SubAck(SubAck::decode(r, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(r, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(r, version)?),
        PacketType::PingReq => {
            r.finish()?;
            Packet::PingReq
        }
        PacketType::PingResp => {
            r.finish()?;
            Packet::PingResp
        }
        PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(r, version)?),
        PacketType::Auth => Packet::Auth(Auth::decode(r)?),
    })
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    fn first_byte(&self) -> u8 {
        let t = self.packet_type();
        let flags = match self {
            Packet::Publish(p) => p.flags(),
            _ => t.required_flags(),
        };
        ((t as u8) << 4) | flags
    }

    /// Bytes after the fixed header when encoded for `version`.
    pub fn body_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Packet::Connect(p) => p.body_len(),
            Packet::ConnAck(p) => p.body_len(version),
            Packet::Publish(p) => p.body_len(version),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                p.body_len(version)
            }
            Packet::Subscribe(p) => p.body_len(version),
            Packet::SubAck(p) => p.body_len(version),
            Packet::Unsubscribe(p) => p.body_len(version),
            Packet::UnsubAck(p) => p.body_len(version),
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(p) => p.body_len(version),
            Packet::Auth(p) => p.body_len(),
        }
    }

    /// Exact size in bytes of the encoded packet, fixed header included: compare it with the
    /// peer's maximum packet size before encoding.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let body = self.body_len(version);
        1 + varint_len(body.min(VARINT_MAX as usize) as u32) + body
    }

    fn check(&self, version: ProtocolVersion) -> Result<(), EncodeError> {
        use crate::properties::check_identified;
        match self {
            Packet::Connect(p) => p.check(),
            Packet::ConnAck(p) => crate::properties::check_block(&p.properties),
            Packet::Publish(p) => p.check(),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                check_identified(p.packet_id, &p.properties)
            }
            Packet::Subscribe(p) => check_identified(p.packet_id, &p.properties),
            Packet::SubAck(p) => check_identified(p.packet_id, &p.properties),
            Packet::Unsubscribe(p) => check_identified(p.packet_id, &p.properties),
            Packet::UnsubAck(p) => check_identified(p.packet_id, &p.properties),
            Packet::PingReq | Packet::PingResp => Ok(()),
            Packet::Disconnect(p) => crate::properties::check_block(&p.properties),
            Packet::Auth(_) if !version.is_v5() => Err(EncodeError::NotInVersion(PacketType::Auth)),
            Packet::Auth(p) => crate::properties::check_block(&p.properties),
        }
    }

    /// Encodes the packet for `version` and returns the bytes written (equal to
    /// [`Packet::encoded_len`]). MQTT 5 data is left out for MQTT 3.x.
    pub fn encode(
        &self,
        version: ProtocolVersion,
        buf: &mut impl BufMut,
    ) -> Result<usize, EncodeError> {
        if let Packet::Publish(p) = self {
            // Most of what a broker writes, once per subscriber: the steps below, without
            // dispatching on the packet type at each of them.
            p.check()?;
            let first = ((PacketType::Publish as u8) << 4) | p.flags();
            return write_packet(buf, first, p.body_len(version), |buf| {
                p.encode_body(version, buf)
            });
        }
        self.check(version)?;
        let body = self.body_len(version);
        write_packet(buf, self.first_byte(), body, |buf| match self {
            Packet::Connect(p) => p.encode_body(buf),
            Packet::ConnAck(p) => p.encode_body(version, buf),
            Packet::Publish(p) => p.encode_body(version, buf),
            Packet::PubAck(p) | Packet::PubRec(p) | Packet::PubRel(p) | Packet::PubComp(p) => {
                p.encode_body(version, buf)
            }
            Packet::Subscribe(p) => p.encode_body(version, buf),
            Packet::SubAck(p) => p.encode_body(version, buf),
            Packet::Unsubscribe(p) => p.encode_body(version, buf),
            Packet::UnsubAck(p) => p.encode_body(version, buf),
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(p) => p.encode_body(version, buf),
            Packet::Auth(p) => p.encode_body(buf),
        })
    }
}

/// Writes the fixed header of a checked packet, then its body, and returns the bytes written.
#[inline(always)]
fn write_packet<B: BufMut>(
    buf: &mut B,
    first: u8,
    body: usize,
    encode_body: impl FnOnce(&mut B),
) -> Result<usize, EncodeError> {
    if body > VARINT_MAX as usize {
        return Err(EncodeError::PacketTooLarge(body));
    }
    buf.put_u8(first);
    put_varint(buf, body as u32);
    encode_body(buf);
    Ok(1 + varint_len(body as u32) + body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first-byte checks as they were written before the lookup table, as the reference.
    fn reference(first: u8, version: ProtocolVersion) -> Result<PacketType, DecodeError> {
        let (nibble, flags) = (first >> 4, first & 0x0F);
        let packet_type = match PacketType::from_nibble(nibble) {
            Some(PacketType::Auth) if !version.is_v5() => {
                return Err(DecodeError::InvalidPacketType(nibble))
            }
            Some(t) => t,
            None => return Err(DecodeError::InvalidPacketType(nibble)),
        };
        if packet_type == PacketType::Publish {
            let qos = QoS::from_u8((flags >> 1) & 0b11)?;
            if qos == QoS::AtMostOnce && flags & 0b1000 != 0 {
                return Err(DecodeError::DupOnQoS0);
            }
        } else if flags != packet_type.required_flags() {
            return Err(DecodeError::InvalidHeaderFlags {
                packet: packet_type,
                flags,
            });
        }
        Ok(packet_type)
    }

    #[test]
    fn every_first_byte_is_judged_as_before() {
        use ProtocolVersion::*;
        for version in [V3_1, V3_1_1, V5] {
            for first in 0..=255u8 {
                let expected = reference(first, version).map(|packet_type| {
                    Some(FixedHeader {
                        packet_type,
                        flags: first & 0x0F,
                        remaining_len: 5,
                        header_len: 2,
                    })
                });
                let got = FixedHeader::parse(&[first, 5], version, PACKET_SIZE_MAX);
                assert_eq!(got, expected, "{first:#04x} {version:?}");
                // An incomplete remaining length comes after the first-byte checks.
                let got = FixedHeader::parse(&[first, 0x80], version, PACKET_SIZE_MAX);
                assert_eq!(got, expected.map(|_| None), "{first:#04x} {version:?}");
            }
        }
    }

    #[test]
    fn remaining_length_fast_path_and_limits() {
        let v = ProtocolVersion::V3_1_1;
        assert_eq!(FixedHeader::parse(&[0x30], v, PACKET_SIZE_MAX), Ok(None));
        let h = FixedHeader::parse(&[0x30, 0x7F], v, PACKET_SIZE_MAX).unwrap();
        assert_eq!(h.map(|h| (h.remaining_len, h.header_len)), Some((127, 2)));
        let h = FixedHeader::parse(&[0x30, 0x80, 0x01], v, PACKET_SIZE_MAX).unwrap();
        assert_eq!(h.map(|h| (h.remaining_len, h.header_len)), Some((128, 3)));
        assert_eq!(
            FixedHeader::parse(&[0x30, 0x80, 0x00], v, PACKET_SIZE_MAX),
            Err(DecodeError::MalformedRemainingLength)
        );
        assert_eq!(
            FixedHeader::parse(&[0x30, 0x7F], v, 128),
            Err(DecodeError::PacketTooLarge {
                size: 129,
                max: 128
            })
        );
        assert!(FixedHeader::parse(&[0x30, 0x7E], v, 128).is_ok());
    }
}
