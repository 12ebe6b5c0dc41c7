//! The transport seam: what a connection reads MQTT bytes from and writes them to. Four kinds
//! over one glommio `TcpStream`: plain TCP, TLS (rustls), WebSocket, WebSocket over TLS.
//!
//! The connection's reader and writer tasks share one [`Transport`] in a `RefCell`, borrowed
//! only inside `poll` (one thread; never at once). Plain TCP goes straight to the socket: one
//! `match` arm, no copy, no allocation. TLS and WebSocket keep their state next to the socket
//! (a boxed rustls `ServerConnection`, a boxed [`WsState`]).
//!
//! Only the writer task writes to the socket. Bytes that the reader's side produces (a pong,
//! the answer to a close, TLS records rustls wants to send while reading) are queued in that
//! state, and the reader wakes the writer ([`Transport::set_writer_wake`]), which sends them
//! with its next flush.
//!
//! A connection moving to its home core takes its transport state along:
//! [`Transport::detach`] gives the socket and a [`Detached`] (`Send`: the TLS session with
//! whatever it had read, decrypted or queued, and the WebSocket state with undecoded bytes
//! and queued frames), [`Transport::attach`] puts them together on the other core.

use std::future::poll_fn;
use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use crate::broker::ConnLink;
use crate::websocket::{check_upgrade, Decoded, HttpRefusal, WsState};

/// How long closing a TLS or WebSocket connection waits to send its close frame or
/// close_notify before the socket is shut down anyway.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

enum Layer {
    Tcp(TcpStream),
    Tls(TcpStream, Box<ServerConnection>),
    Ws(TcpStream, Box<WsState>),
    WsTls(TcpStream, Box<ServerConnection>, Box<WsState>),
}

/// A connection's byte stream (see the module documentation).
pub struct Transport {
    layer: Layer,
    /// Woken when bytes were queued that only the writer sends.
    writer_wake: Option<Rc<ConnLink>>,
}

/// The transport state that travels with a socket to another core.
#[derive(Debug, Default)]
pub struct Detached {
    /// The TLS session.
    pub tls: Option<Box<ServerConnection>>,
    /// The WebSocket state.
    pub ws: Option<Box<WsState>>,
}

impl Transport {
    /// Plain TCP.
    pub fn tcp(stream: TcpStream) -> Transport {
        Transport {
            layer: Layer::Tcp(stream),
            writer_wake: None,
        }
    }

    /// The socket under everything.
    pub fn socket(&self) -> &TcpStream {
        match &self.layer {
            Layer::Tcp(s) | Layer::Tls(s, _) | Layer::Ws(s, _) | Layer::WsTls(s, _, _) => s,
        }
    }

    /// Plain TCP: nothing is ever queued below the caller.
    pub fn is_plain(&self) -> bool {
        matches!(self.layer, Layer::Tcp(_))
    }

    /// The transport's short name for logs.
    pub fn name(&self) -> &'static str {
        match self.layer {
            Layer::Tcp(_) => "tcp",
            Layer::Tls(..) => "tls",
            Layer::Ws(..) => "ws",
            Layer::WsTls(..) => "wss",
        }
    }

    /// Splits into the socket and the state that goes with it (for a handoff).
    pub fn detach(self) -> (TcpStream, Detached) {
        match self.layer {
            Layer::Tcp(s) => (s, Detached::default()),
            Layer::Tls(s, tls) => (
                s,
                Detached {
                    tls: Some(tls),
                    ws: None,
                },
            ),
            Layer::Ws(s, ws) => (
                s,
                Detached {
                    tls: None,
                    ws: Some(ws),
                },
            ),
            Layer::WsTls(s, tls, ws) => (
                s,
                Detached {
                    tls: Some(tls),
                    ws: Some(ws),
                },
            ),
        }
    }

    /// Puts a socket and its state back together (on the home core).
    pub fn attach(stream: TcpStream, state: Detached) -> Transport {
        let layer = match (state.tls, state.ws) {
            (None, None) => Layer::Tcp(stream),
            (Some(tls), None) => Layer::Tls(stream, tls),
            (None, Some(ws)) => Layer::Ws(stream, ws),
            (Some(tls), Some(ws)) => Layer::WsTls(stream, tls, ws),
        };
        Transport {
            layer,
            writer_wake: None,
        }
    }

    fn into_ws(self, ws: WsState) -> Transport {
        let ws = Box::new(ws);
        let layer = match self.layer {
            Layer::Tcp(s) => Layer::Ws(s, ws),
            Layer::Tls(s, tls) => Layer::WsTls(s, tls, ws),
            other => other,
        };
        Transport {
            layer,
            writer_wake: self.writer_wake,
        }
    }

    /// The link whose writer sends what the reading side queues.
    pub fn set_writer_wake(&mut self, link: Rc<ConnLink>) {
        self.writer_wake = Some(link);
    }

    /// Whether bytes wait below the caller (queued frames, TLS records).
    pub fn wants_flush(&self) -> bool {
        match &self.layer {
            Layer::Tcp(_) => false,
            Layer::Tls(_, tls) => tls.wants_write(),
            Layer::Ws(_, ws) => !ws.out.is_empty(),
            Layer::WsTls(_, tls, ws) => !ws.out.is_empty() || tls.wants_write(),
        }
    }

    /// The subject CN of the client's certificate (TLS with client certificates only).
    pub fn peer_common_name(&self) -> Option<String> {
        let tls = match &self.layer {
            Layer::Tls(_, tls) | Layer::WsTls(_, tls, _) => tls,
            _ => return None,
        };
        crate::tls::common_name(tls.peer_certificates()?.first()?)
    }

    /// Reads MQTT bytes. `Ok(0)`: the peer closed (TCP end, TLS close_notify, WebSocket
    /// close). A TLS or WebSocket violation is an `InvalidData` error (its close is queued).
    pub fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if let Layer::Tcp(s) = &mut self.layer {
            return Pin::new(s).poll_read(cx, buf);
        }
        let result = match &mut self.layer {
            Layer::Tcp(_) => unreachable_tcp(),
            Layer::Tls(s, tls) => tls_read(s, tls, cx, buf),
            Layer::Ws(s, ws) => ws_read(s, None, ws, cx, buf),
            Layer::WsTls(s, tls, ws) => ws_read(s, Some(tls), ws, cx, buf),
        };
        if self.wants_flush() {
            if let Some(link) = &self.writer_wake {
                link.notify.notify();
            }
        }
        result
    }

    /// Writes MQTT bytes; returns how many were taken. Over TLS and WebSocket they may wait
    /// below: call [`Transport::poll_flush`] after the last write.
    pub fn poll_write(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.layer {
            Layer::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Layer::Tls(s, tls) => tls_write(s, tls, cx, data),
            Layer::Ws(s, ws) => ws_write(s, None, ws, cx, data),
            Layer::WsTls(s, tls, ws) => ws_write(s, Some(tls), ws, cx, data),
        }
    }

    /// Sends everything queued below.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.layer {
            Layer::Tcp(_) => Poll::Ready(Ok(())),
            Layer::Tls(s, tls) => tls_flush(s, tls, cx),
            Layer::Ws(s, ws) => ws_flush(s, None, ws, cx),
            Layer::WsTls(s, tls, ws) => ws_flush(s, Some(tls), ws, cx),
        }
    }

    /// Queues the polite end: a WebSocket close (1000, unless one was sent already) and a TLS
    /// close_notify. Flush, then shut the socket down.
    pub fn start_close(&mut self) {
        match &mut self.layer {
            Layer::Tcp(_) => {}
            Layer::Tls(_, tls) => tls.send_close_notify(),
            Layer::Ws(_, ws) => ws.close(1000, ""),
            Layer::WsTls(_, tls, ws) => {
                ws.close(1000, "");
                // Queued frames and the close go into the TLS stream before the close_notify.
                let out = std::mem::take(&mut ws.out);
                let _ = tls.writer().write_all(&out);
                ws.written(0);
                tls.send_close_notify();
            }
        }
    }

    /// Drives the TLS handshake to its end (nothing to do for other layers).
    fn poll_tls_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (s, tls) = match &mut self.layer {
            Layer::Tls(s, tls) => (s, tls),
            _ => return Poll::Ready(Ok(())),
        };
        loop {
            ready!(tls_flush(s, tls, cx))?;
            if !tls.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match tls.read_tls(&mut Adapter { io: s, cx }) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed by the peer during the TLS handshake",
                    )))
                }
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        // Send the alert rustls queued, if the socket takes it now.
                        let _ = tls_flush(s, tls, cx);
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

#[cold]
fn unreachable_tcp() -> Poll<io::Result<usize>> {
    Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
}

/// `std::io` over a glommio socket inside a `poll`: `Pending` becomes `WouldBlock` (the waker
/// is registered), which is what rustls' `read_tls`/`write_tls` expect.
struct Adapter<'a, 'b> {
    io: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl io::Read for Adapter<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_read(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl io::Write for Adapter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tls_read(
    s: &mut TcpStream,
    tls: &mut ServerConnection,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    loop {
        // Decrypted bytes first: rustls bounds what it holds, so read_tls only when empty.
        match tls.reader().read(buf) {
            Ok(n) => return Poll::Ready(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(0)),
            Err(e) => return Poll::Ready(Err(e)),
        }
        match tls.read_tls(&mut Adapter { io: s, cx }) {
            Ok(0) => return Poll::Ready(Ok(0)),
            Ok(_) => {
                if let Err(e) = tls.process_new_packets() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("TLS: {e}"),
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
}

fn tls_flush(
    s: &mut TcpStream,
    tls: &mut ServerConnection,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while tls.wants_write() {
        match tls.write_tls(&mut Adapter { io: s, cx }) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

fn tls_write(
    s: &mut TcpStream,
    tls: &mut ServerConnection,
    cx: &mut Context<'_>,
    data: &[u8],
) -> Poll<io::Result<usize>> {
    // Make room: rustls holds at most its buffer limit of records not yet sent.
    let flushed = tls_flush(s, tls, cx);
    if let Poll::Ready(Err(e)) = flushed {
        return Poll::Ready(Err(e));
    }
    if data.is_empty() {
        return flushed.map(|r| r.map(|()| 0));
    }
    let n = tls.writer().write(data)?;
    if n == 0 {
        return match flushed {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
        };
    }
    // Send now what the socket takes; the rest goes with the next write or flush.
    if let Poll::Ready(Err(e)) = tls_flush(s, tls, cx) {
        return Poll::Ready(Err(e));
    }
    Poll::Ready(Ok(n))
}

fn io_read(
    s: &mut TcpStream,
    tls: Option<&mut ServerConnection>,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    match tls {
        None => Pin::new(s).poll_read(cx, buf),
        Some(tls) => tls_read(s, tls, cx, buf),
    }
}

fn io_write(
    s: &mut TcpStream,
    tls: Option<&mut ServerConnection>,
    cx: &mut Context<'_>,
    data: &[u8],
) -> Poll<io::Result<usize>> {
    match tls {
        None => Pin::new(s).poll_write(cx, data),
        Some(tls) => tls_write(s, tls, cx, data),
    }
}

fn ws_read(
    s: &mut TcpStream,
    mut tls: Option<&mut ServerConnection>,
    ws: &mut WsState,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    loop {
        match ws.decode(buf) {
            Ok(Decoded::Data(n)) => return Poll::Ready(Ok(n)),
            Ok(Decoded::Closed) => return Poll::Ready(Ok(0)),
            Ok(Decoded::NeedMore) => {}
            Err(e) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("WebSocket: {} (closed with {})", e.reason, e.code),
                )))
            }
        }
        if let Some(left) = ws.direct_payload() {
            // Inside a payload with nothing buffered: read straight into the caller's buffer.
            let want = left.min(buf.len() as u64) as usize;
            let n = ready!(io_read(s, tls.as_deref_mut(), cx, &mut buf[..want]))?;
            ws.unmask_in_place(&mut buf[..n]);
            return Poll::Ready(Ok(n));
        }
        // A frame header or a control frame is incomplete: read more of it. `raw` stays below
        // one caller's buffer plus a control frame.
        let start = ws.raw.len();
        ws.raw.resize(start + buf.len().max(256), 0);
        let read = io_read(s, tls.as_deref_mut(), cx, &mut ws.raw[start..]);
        let n = match &read {
            Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        ws.raw.truncate(start + n);
        match read {
            Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
}

fn ws_flush(
    s: &mut TcpStream,
    mut tls: Option<&mut ServerConnection>,
    ws: &mut WsState,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !ws.out.is_empty() {
        let n = ready!(io_write(s, tls.as_deref_mut(), cx, &ws.out))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        ws.written(n);
    }
    match tls {
        Some(tls) => tls_flush(s, tls, cx),
        None => Poll::Ready(Ok(())),
    }
}

fn ws_write(
    s: &mut TcpStream,
    mut tls: Option<&mut ServerConnection>,
    ws: &mut WsState,
    cx: &mut Context<'_>,
    data: &[u8],
) -> Poll<io::Result<usize>> {
    // Frames queued earlier go first, so `out` holds at most one write's frame.
    ready!(ws_flush(s, tls.as_deref_mut(), ws, cx))?;
    if data.is_empty() {
        return Poll::Ready(Ok(0));
    }
    if !ws.write_binary(data) {
        return Poll::Ready(Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "WebSocket closed",
        )));
    }
    if let Poll::Ready(Err(e)) = ws_flush(s, tls, ws, cx) {
        return Poll::Ready(Err(e));
    }
    Poll::Ready(Ok(data.len()))
}

/// Writes all of `data` and flushes, on a transport owned by the calling task.
pub async fn write_all_owned(t: &mut Transport, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = poll_fn(|cx| t.poll_write(cx, data)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    poll_fn(|cx| t.poll_flush(cx)).await
}

/// Closes a transport owned by the calling task: close frame and close_notify sent within
/// [`CLOSE_FLUSH_TIMEOUT`], then the socket shut down (and closed when dropped).
pub async fn close_owned(mut t: Transport) {
    if !t.is_plain() {
        t.start_close();
        let _ = glommio::timer::timeout(CLOSE_FLUSH_TIMEOUT, async {
            Ok(poll_fn(|cx| t.poll_flush(cx)).await)
        })
        .await;
    }
    shutdown_socket(t.socket());
}

/// Shuts the socket down both ways (wakes a reader blocked on it: it sees end of stream).
pub fn shutdown_socket(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is owned by the stream, alive for this call.
    unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_RDWR) };
}

/// What a listener does before MQTT starts.
pub struct ListenerTransport {
    /// TLS with this configuration (this core's own).
    pub tls: Option<Arc<ServerConfig>>,
    /// The client certificate's CN becomes the username.
    pub use_identity_as_username: bool,
    /// MQTT over WebSocket at this path.
    pub websocket_path: Option<String>,
    /// Short name for logs: tcp, tls, ws, wss.
    pub name: &'static str,
}

/// Limits of the handshakes.
pub struct HandshakeLimits {
    /// For the TLS handshake and the WebSocket upgrade together.
    pub timeout: Duration,
    /// Largest WebSocket upgrade request.
    pub max_websocket_bytes: usize,
    /// Bytes per read.
    pub read_chunk: usize,
}

/// Runs the TLS handshake and the WebSocket upgrade a listener asks for. Failures are logged
/// (with `peer`), answered where the protocol can (a TLS alert, an HTTP error status) and
/// closed: `None`.
pub async fn handshake(
    stream: TcpStream,
    listener: &ListenerTransport,
    limits: &HandshakeLimits,
    peer: SocketAddr,
) -> Option<Transport> {
    let deadline = Instant::now() + limits.timeout;
    let kind = listener.name;
    let mut t = Transport::tcp(stream);
    if let Some(config) = &listener.tls {
        let conn = match ServerConnection::new(config.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%peer, listener = kind, error = %e, "cannot start a TLS session");
                return None;
            }
        };
        let (stream, _) = t.detach();
        t = Transport::attach(
            stream,
            Detached {
                tls: Some(Box::new(conn)),
                ws: None,
            },
        );
        let left = deadline.saturating_duration_since(Instant::now());
        let done = glommio::timer::timeout(left, async {
            Ok(poll_fn(|cx| t.poll_tls_handshake(cx)).await)
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    tracing::info!(%peer, listener = kind, error = %e, "TLS handshake failed; closed");
                } else {
                    tracing::debug!(%peer, listener = kind, error = %e, "TLS handshake failed; closed");
                }
                close_owned(t).await;
                return None;
            }
            Err(_) => {
                tracing::info!(
                    %peer, listener = kind,
                    "TLS handshake not done within limits.handshake_timeout_ms; closed"
                );
                shutdown_socket(t.socket());
                return None;
            }
        }
    }
    let Some(path) = &listener.websocket_path else {
        return Some(t);
    };
    let max = limits.max_websocket_bytes;
    let mut request = BytesMut::new();
    let refusal = loop {
        match check_upgrade(&request, path, max) {
            Ok(Some(upgrade)) => {
                let rest = request.split_off(upgrade.consumed);
                if let Err(e) = write_all_owned(&mut t, upgrade.response.as_bytes()).await {
                    tracing::debug!(%peer, listener = kind, error = %e, "WebSocket upgrade not sent");
                    return None;
                }
                return Some(t.into_ws(WsState::new(rest)));
            }
            Ok(None) => {}
            Err(refusal) => break refusal,
        }
        let want = max
            .saturating_sub(request.len())
            .clamp(1, limits.read_chunk);
        let start = request.len();
        request.resize(start + want, 0);
        let left = deadline.saturating_duration_since(Instant::now());
        let read = glommio::timer::timeout(left, async {
            Ok(poll_fn(|cx| t.poll_read(cx, &mut request[start..])).await)
        })
        .await;
        match read {
            Ok(Ok(n)) if n > 0 => request.truncate(start + n),
            Ok(Ok(_)) => {
                tracing::debug!(%peer, listener = kind, "closed during the WebSocket upgrade");
                return None;
            }
            Ok(Err(e)) => {
                tracing::info!(%peer, listener = kind, error = %e, "WebSocket upgrade failed; closed");
                close_owned(t).await;
                return None;
            }
            Err(_) => {
                break HttpRefusal {
                    status: 408,
                    reason: "upgrade request not complete within limits.handshake_timeout_ms"
                        .into(),
                }
            }
        }
    };
    tracing::info!(
        %peer, listener = kind, status = refusal.status, reason = %refusal.reason,
        "WebSocket upgrade refused; closed"
    );
    let response = refusal.response();
    let _ = glommio::timer::timeout(CLOSE_FLUSH_TIMEOUT, async {
        Ok(write_all_owned(&mut t, response.as_bytes()).await)
    })
    .await;
    close_owned(t).await;
    None
}
