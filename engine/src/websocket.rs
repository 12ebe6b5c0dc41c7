//! MQTT over WebSocket (RFC 6455; MQTT 3.1.1 and 5.0 section 6), without I/O: the upgrade
//! request is checked here ([`check_upgrade`]) and the frames of a connection are decoded and
//! encoded by [`WsState`], which the transport (`transport.rs`) drives. tungstenite supplies the
//! frame header codec and the accept key; httparse the request parser.
//!
//! MQTT is a byte stream inside binary frames: a packet may span frames and a frame may hold
//! several packets, so payload bytes are streamed out as they arrive (unmasked on the way) and
//! no frame or message is ever buffered whole. Only frame headers and control frames (at most
//! 125 bytes of payload) wait in `raw`.
//!
//! Refused: text frames (close 1003), unmasked client frames, reserved bits or opcodes,
//! fragmented or oversized control frames, a data frame inside an unfinished message and a
//! continuation outside one (close 1002). Pings are answered (at most
//! [`MAX_PENDING_CONTROL_BYTES`] of answers wait for the writer; more pings get no pong until
//! it drains), pongs ignored, a close is answered with a close and ends the stream.

use std::io::Cursor;

use bytes::{Buf, BufMut, BytesMut};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// Headers parsed in an upgrade request at most; more get 431.
pub const MAX_HANDSHAKE_HEADERS: usize = 64;

/// Bytes of pong answers waiting for the writer at most; pings beyond it get no answer.
pub const MAX_PENDING_CONTROL_BYTES: usize = 4096;

/// The subprotocols accepted, in order of preference: `mqtt` (3.1.1 and 5.0) and `mqttv3.1`.
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// An accepted upgrade request.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// Bytes of the request (the rest of the buffer belongs to the WebSocket stream).
    pub consumed: usize,
    /// The `101 Switching Protocols` response to send.
    pub response: String,
}

/// A refused upgrade request: the HTTP status and the reason, sent as the body.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpRefusal {
    /// HTTP status code.
    pub status: u16,
    /// What was wrong (one line).
    pub reason: String,
}

impl HttpRefusal {
    fn new(status: u16, reason: impl Into<String>) -> HttpRefusal {
        HttpRefusal {
            status,
            reason: reason.into(),
        }
    }

    /// The HTTP response to send before closing.
    pub fn response(&self) -> String {
        let text = match self.status {
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        let extra = if self.status == 426 {
            "Sec-WebSocket-Version: 13\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 {} {text}\r\nConnection: close\r\n{extra}Content-Type: text/plain\r\n\
             Content-Length: {}\r\n\r\n{}\n",
            self.status,
            self.reason.len() + 1,
            self.reason
        )
    }
}

fn header<'a>(headers: &'a [httparse::Header<'_>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Checks the upgrade request at the start of `buf`. `Ok(None)`: incomplete, read more (the
/// caller refuses with 431 once it holds `max_bytes`). A request whose header block alone is
/// longer than `max_bytes` is refused even when complete.
pub fn check_upgrade(
    buf: &[u8],
    path: &str,
    max_bytes: usize,
) -> Result<Option<Upgrade>, HttpRefusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HANDSHAKE_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= max_bytes => {
            return Err(HttpRefusal::new(
                431,
                format!("upgrade request larger than {max_bytes} bytes"),
            ))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpRefusal::new(
                431,
                format!("more than {MAX_HANDSHAKE_HEADERS} headers"),
            ))
        }
        Err(e) => return Err(HttpRefusal::new(400, format!("malformed request: {e}"))),
    };
    if consumed > max_bytes {
        return Err(HttpRefusal::new(
            431,
            format!("upgrade request larger than {max_bytes} bytes"),
        ));
    }
    if request.method != Some("GET") {
        return Err(HttpRefusal::new(405, "only GET can upgrade to a WebSocket"));
    }
    let target = request.path.unwrap_or("");
    let target_path = target.split(['?', '#']).next().unwrap_or("");
    if target_path != path {
        return Err(HttpRefusal::new(
            404,
            format!("no MQTT WebSocket endpoint at this path (it is {path})"),
        ));
    }
    let headers = request.headers;
    if !header(headers, "upgrade").is_some_and(|v| has_token(v, "websocket"))
        || !header(headers, "connection").is_some_and(|v| has_token(v, "upgrade"))
    {
        return Err(HttpRefusal::new(
            426,
            "this endpoint speaks MQTT over WebSocket only (Upgrade: websocket)",
        ));
    }
    if header(headers, "sec-websocket-version") != Some(b"13".as_slice()) {
        return Err(HttpRefusal::new(426, "Sec-WebSocket-Version must be 13"));
    }
    let key = header(headers, "sec-websocket-key")
        .map(<[u8]>::trim_ascii)
        .filter(|k| k.len() == 24 && k.iter().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| HttpRefusal::new(400, "missing or invalid Sec-WebSocket-Key"))?;
    let offered = header(headers, "sec-websocket-protocol").unwrap_or_default();
    let protocol = SUBPROTOCOLS
        .iter()
        .find(|p| has_token(offered, p))
        .ok_or_else(|| {
            HttpRefusal::new(
                400,
                "Sec-WebSocket-Protocol must offer \"mqtt\" (or \"mqttv3.1\")",
            )
        })?;
    let accept = tungstenite::handshake::derive_accept_key(key);
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    );
    Ok(Some(Upgrade { consumed, response }))
}

/// A WebSocket protocol violation: the close code sent and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsError {
    /// Close status code (1002 protocol error, 1003 unsupported data).
    pub code: u16,
    /// What the peer did.
    pub reason: &'static str,
}

/// What [`WsState::decode`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// This many payload bytes were written to the output.
    Data(usize),
    /// Nothing decodable in `raw`: read more.
    NeedMore,
    /// The peer closed (the answer is queued), or the stream was closed already.
    Closed,
}

/// The WebSocket state of one server-side connection. `Send`: it travels in a handoff to
/// the session's home core, with bytes read but not decoded yet and answers not sent yet.
#[derive(Debug, Default)]
pub struct WsState {
    /// Bytes read from below and not decoded yet (frame headers, control frames, the start
    /// of a payload).
    pub raw: BytesMut,
    /// Payload bytes left in the current data frame.
    payload_left: u64,
    mask: [u8; 4],
    /// Offset of the next payload byte in the mask.
    mask_pos: usize,
    /// A fragmented binary message is open: continuation frames are expected.
    in_message: bool,
    /// Encoded frames waiting to be written below (data, pongs, the close).
    pub out: BytesMut,
    /// Bytes of control frames (pongs) among `out` not yet written, roughly: bounds pongs.
    control_pending: usize,
    /// A close frame was received or sent: no more data either way.
    closed: bool,
}

impl WsState {
    /// A new state; `raw` holds bytes read after the upgrade request.
    pub fn new(raw: BytesMut) -> WsState {
        WsState {
            raw,
            ..WsState::default()
        }
    }

    /// Whether a close was received or sent.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// In a data frame's payload with nothing buffered: the caller may read up to this many
    /// bytes straight into its buffer and pass them to [`WsState::unmask_in_place`].
    pub fn direct_payload(&self) -> Option<u64> {
        (self.payload_left > 0 && self.raw.is_empty() && !self.closed).then_some(self.payload_left)
    }

    /// Unmasks `n` payload bytes read straight into the caller's buffer.
    pub fn unmask_in_place(&mut self, data: &mut [u8]) {
        debug_assert!(data.len() as u64 <= self.payload_left);
        self.mask_pos = unmask(data, self.mask, self.mask_pos);
        self.payload_left -= data.len() as u64;
    }

    /// Decodes from `raw`: payload bytes into `out` (unmasked), control frames answered.
    /// On a violation, queues a close with its code and returns the error; every later call
    /// returns [`Decoded::Closed`].
    pub fn decode(&mut self, out: &mut [u8]) -> Result<Decoded, WsError> {
        loop {
            if self.closed {
                return Ok(Decoded::Closed);
            }
            if self.payload_left > 0 {
                if self.raw.is_empty() || out.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = (self.raw.len() as u64)
                    .min(self.payload_left)
                    .min(out.len() as u64) as usize;
                out[..n].copy_from_slice(&self.raw[..n]);
                self.raw.advance(n);
                self.unmask_in_place(&mut out[..n]);
                return Ok(Decoded::Data(n));
            }
            let mut cursor = Cursor::new(&self.raw[..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(Decoded::NeedMore),
                Err(_) => return Err(self.fail(1002, "malformed frame header")),
            };
            let header_len = cursor.position() as usize;
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(self.fail(1002, "reserved bits set (no extension was agreed)"));
            }
            let Some(mask) = header.mask else {
                return Err(self.fail(1002, "unmasked frame from the client"));
            };
            match header.opcode {
                OpCode::Data(data) => {
                    match data {
                        Data::Binary if !self.in_message => {}
                        Data::Continue if self.in_message => {}
                        Data::Text => {
                            return Err(self.fail(1003, "text frame (MQTT needs binary frames)"))
                        }
                        Data::Binary => {
                            return Err(self.fail(1002, "new message inside a fragmented one"))
                        }
                        Data::Continue => {
                            return Err(self.fail(1002, "continuation frame outside a message"))
                        }
                        Data::Reserved(_) => return Err(self.fail(1002, "reserved opcode")),
                    }
                    if len >= 1 << 63 {
                        return Err(self.fail(1002, "frame length out of range"));
                    }
                    self.in_message = !header.is_final;
                    self.raw.advance(header_len);
                    self.payload_left = len;
                    self.mask = mask;
                    self.mask_pos = 0;
                }
                OpCode::Control(control) => {
                    if !header.is_final || len > 125 {
                        return Err(self.fail(1002, "fragmented or oversized control frame"));
                    }
                    let len = len as usize;
                    if self.raw.len() < header_len + len {
                        return Ok(Decoded::NeedMore);
                    }
                    self.raw.advance(header_len);
                    let mut payload = [0u8; 125];
                    payload[..len].copy_from_slice(&self.raw[..len]);
                    self.raw.advance(len);
                    unmask(&mut payload[..len], mask, 0);
                    match control {
                        Control::Ping => {
                            if self.control_pending + 2 + len <= MAX_PENDING_CONTROL_BYTES {
                                self.control_pending += 2 + len;
                                self.frame(OpCode::Control(Control::Pong), &payload[..len]);
                            }
                        }
                        Control::Pong => {}
                        Control::Close => {
                            // Echo the status code (RFC 6455 5.5.1), or 1000 without one.
                            let code = if len >= 2 {
                                u16::from_be_bytes([payload[0], payload[1]])
                            } else {
                                1000
                            };
                            let code = if CloseCode::from(code).is_allowed() {
                                code
                            } else {
                                1002
                            };
                            self.close(code, "");
                            return Ok(Decoded::Closed);
                        }
                        Control::Reserved(_) => {
                            return Err(self.fail(1002, "reserved control opcode"))
                        }
                    }
                }
            }
        }
    }

    fn fail(&mut self, code: u16, reason: &'static str) -> WsError {
        self.close(code, reason);
        WsError { code, reason }
    }

    /// Queues a close frame with `code` and `reason`, unless one was sent already; after it,
    /// nothing more is read or written.
    pub fn close(&mut self, code: u16, reason: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        let reason = &reason.as_bytes()[..reason.len().min(123)];
        let mut payload = Vec::with_capacity(2 + reason.len());
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(reason);
        self.frame(OpCode::Control(Control::Close), &payload);
    }

    /// Queues `data` as one binary frame. Refused (false) after a close.
    pub fn write_binary(&mut self, data: &[u8]) -> bool {
        if self.closed {
            return false;
        }
        self.frame(OpCode::Data(Data::Binary), data);
        true
    }

    fn frame(&mut self, opcode: OpCode, payload: &[u8]) {
        let header = FrameHeader {
            is_final: true,
            opcode,
            mask: None,
            ..FrameHeader::default()
        };
        let mut writer = (&mut self.out).writer();
        // Writing into memory cannot fail.
        let _ = header.format(payload.len() as u64, &mut writer);
        self.out.extend_from_slice(payload);
    }

    /// `n` bytes of `out` were written below.
    pub fn written(&mut self, n: usize) {
        self.out.advance(n);
        if self.out.is_empty() {
            self.control_pending = 0;
        }
    }
}

/// XORs `data` with `mask` starting at mask offset `pos`; returns the next offset.
fn unmask(data: &mut [u8], mask: [u8; 4], pos: usize) -> usize {
    let mut pos = pos;
    // Rotate the mask so that chunks of 8 bytes start at offset 0.
    let head = (4 - pos % 4) % 4;
    let head = head.min(data.len());
    for b in &mut data[..head] {
        *b ^= mask[pos % 4];
        pos += 1;
    }
    let rest = &mut data[head..];
    let m = u32::from_ne_bytes(mask);
    let m64 = u64::from(m) | (u64::from(m) << 32);
    let mut chunks = rest.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ m64;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    let tail = chunks.into_remainder();
    for (i, b) in tail.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    (pos + rest.len()) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    #[test]
    fn upgrade_requests() {
        let ok = request("/mqtt", "Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n");
        let up = check_upgrade(ok.as_bytes(), "/mqtt", 4096)
            .unwrap()
            .unwrap();
        assert_eq!(up.consumed, ok.len());
        // RFC 6455's example key.
        assert!(up
            .response
            .contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(up.response.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        let query = request("/mqtt?x=1", "Sec-WebSocket-Protocol: mqtt\r\n");
        assert!(check_upgrade(query.as_bytes(), "/mqtt", 4096)
            .unwrap()
            .is_some());
        assert_eq!(check_upgrade(&ok.as_bytes()[..20], "/mqtt", 4096), Ok(None));
        let status = |text: &str, max: usize| {
            check_upgrade(text.as_bytes(), "/mqtt", max)
                .unwrap_err()
                .status
        };
        assert_eq!(
            status(&request("/other", "Sec-WebSocket-Protocol: mqtt\r\n"), 4096),
            404
        );
        assert_eq!(
            status(&request("/mqtt", "Sec-WebSocket-Protocol: chat\r\n"), 4096),
            400
        );
        assert_eq!(status(&request("/mqtt", ""), 4096), 400);
        assert_eq!(status(&ok, 64), 431);
        assert_eq!(status(&ok[..100], 100), 431);
        assert_eq!(status("POST /mqtt HTTP/1.1\r\n\r\n", 4096), 405);
        assert_eq!(status("GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n", 4096), 426);
        assert_eq!(
            status("\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00", 4096),
            400
        );
        let many: String = (0..100).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(status(&request("/mqtt", &many), 1 << 20), 431);
        let refusal = HttpRefusal::new(404, "nope");
        assert!(refusal.response().starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(refusal.response().ends_with("\r\n\r\nnope\n"));
    }

    /// A masked client frame.
    fn frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let header = FrameHeader {
            is_final: fin,
            opcode,
            mask: Some(mask),
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        header.format(payload.len() as u64, &mut out).unwrap();
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn drain(ws: &mut WsState, chunk: usize) -> (Vec<u8>, Result<Decoded, WsError>) {
        let mut got = Vec::new();
        loop {
            let mut buf = vec![0u8; chunk];
            match ws.decode(&mut buf) {
                Ok(Decoded::Data(n)) => got.extend_from_slice(&buf[..n]),
                other => return (got, other),
            }
        }
    }

    #[test]
    fn binary_frames_fragments_and_control_frames() {
        let bin = OpCode::Data(Data::Binary);
        let cont = OpCode::Data(Data::Continue);
        let payload: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let mut wire = frame(bin, false, &payload[..3]);
        wire.extend(frame(OpCode::Control(Control::Ping), true, b"hi"));
        wire.extend(frame(cont, false, &payload[3..1000]));
        wire.extend(frame(cont, true, &payload[1000..]));
        wire.extend(frame(bin, true, b""));
        wire.extend(frame(bin, true, b"tail"));
        // Fed in odd pieces, read in odd chunks.
        let mut ws = WsState::default();
        let mut got = Vec::new();
        for piece in wire.chunks(7) {
            ws.raw.extend_from_slice(piece);
            let (g, r) = drain(&mut ws, 13);
            got.extend(g);
            assert_eq!(r, Ok(Decoded::NeedMore));
        }
        let mut expected = payload.clone();
        expected.extend_from_slice(b"tail");
        assert_eq!(got, expected);
        // The pong, unmasked, with the ping's payload.
        assert_eq!(&ws.out[..], &[0x8A, 2, b'h', b'i']);
        ws.written(4);
        // A close is echoed and ends the stream.
        ws.raw.extend(frame(
            OpCode::Control(Control::Close),
            true,
            &1001u16.to_be_bytes(),
        ));
        assert_eq!(drain(&mut ws, 8).1, Ok(Decoded::Closed));
        assert_eq!(&ws.out[..], &[0x88, 2, 0x03, 0xE9]);
        assert!(!ws.write_binary(b"x"));
    }

    #[test]
    fn violations_close_with_a_code() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (frame(OpCode::Data(Data::Text), true, b"{}"), 1003),
            (frame(OpCode::Data(Data::Continue), true, b"x"), 1002),
            (frame(OpCode::Data(Data::Reserved(3)), true, b"x"), 1002),
            (frame(OpCode::Control(Control::Ping), false, b"x"), 1002),
            (frame(OpCode::Control(Control::Ping), true, &[0; 126]), 1002),
            (vec![0x82, 0x01, b'x'], 1002),       // unmasked
            (vec![0xC2, 0x80, 0, 0, 0, 0], 1002), // rsv1
            (
                [
                    frame(OpCode::Data(Data::Binary), false, b"a"),
                    frame(OpCode::Data(Data::Binary), true, b"b"),
                ]
                .concat(),
                1002,
            ),
        ];
        for (wire, code) in cases {
            let mut ws = WsState::new(BytesMut::from(&wire[..]));
            let (_, result) = drain(&mut ws, 64);
            assert_eq!(result.map_err(|e| e.code), Err(code), "{wire:02x?}");
            assert_eq!(
                &ws.out[..4],
                &[0x88, ws.out[1], (code >> 8) as u8, code as u8]
            );
            assert_eq!(ws.decode(&mut [0; 8]), Ok(Decoded::Closed));
        }
    }

    #[test]
    fn pongs_are_bounded() {
        let mut ws = WsState::default();
        for _ in 0..1000 {
            ws.raw
                .extend(frame(OpCode::Control(Control::Ping), true, &[7; 100]));
        }
        assert_eq!(drain(&mut ws, 64).1, Ok(Decoded::NeedMore));
        assert!(
            ws.out.len() <= MAX_PENDING_CONTROL_BYTES,
            "{}",
            ws.out.len()
        );
    }

    proptest::proptest! {
        #[test]
        fn hostile_bytes_never_panic(bytes: Vec<u8>, chunk in 1usize..64) {
            let mut ws = WsState::default();
            for piece in bytes.chunks(chunk) {
                ws.raw.extend_from_slice(piece);
                let _ = drain(&mut ws, chunk);
                proptest::prop_assert!(ws.raw.len() <= chunk + 139 || ws.is_closed());
            }
            let _ = check_upgrade(&bytes, "/mqtt", 1024);
        }

        #[test]
        fn any_framing_yields_the_stream(
            payload: Vec<u8>,
            cuts in proptest::collection::vec(0usize..2000, 0..8),
            pings in proptest::collection::vec(proptest::bool::ANY, 8),
            chunk in 1usize..300,
            read in 1usize..300,
        ) {
            // Split the payload into messages and frames at the cuts; pings between frames.
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(payload.len())).collect();
            cuts.push(payload.len());
            cuts.sort_unstable();
            let mut wire = Vec::new();
            let mut start = 0;
            for (i, &end) in cuts.iter().enumerate() {
                let first = i % 2 == 0;
                let last = i % 2 == 1 || i + 1 == cuts.len();
                let opcode = if first { OpCode::Data(Data::Binary) } else { OpCode::Data(Data::Continue) };
                wire.extend(frame(opcode, last, &payload[start..end]));
                if pings[i % pings.len()] {
                    wire.extend(frame(OpCode::Control(Control::Ping), true, b"x"));
                }
                start = end;
            }
            let mut ws = WsState::default();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                ws.raw.extend_from_slice(piece);
                let (g, r) = drain(&mut ws, read);
                got.extend(g);
                proptest::prop_assert_eq!(r, Ok(Decoded::NeedMore));
            }
            proptest::prop_assert_eq!(got, payload);
        }
    }

    #[test]
    fn direct_reads_unmask_across_calls() {
        let payload: Vec<u8> = (0..100u8).collect();
        let wire = frame(OpCode::Data(Data::Binary), true, &payload);
        let mut ws = WsState::new(BytesMut::from(&wire[..6]));
        assert_eq!(ws.decode(&mut [0; 8]), Ok(Decoded::NeedMore));
        assert_eq!(ws.direct_payload(), Some(100));
        let mut body = wire[6..].to_vec();
        let (a, b) = body.split_at_mut(33);
        ws.unmask_in_place(a);
        ws.unmask_in_place(b);
        assert_eq!(body, payload);
        assert_eq!(ws.direct_payload(), None);
    }
}
