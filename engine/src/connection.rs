//! The driver of one client connection on its core: reads and decodes packets, feeds them to the
//! core's [`Core`], and writes what the session has encoded, one write per wake-up however many
//! packets are waiting. Two tasks share the socket: a reader and a writer. They never run at
//! the same time (one thread), so the socket sits in a `RefCell` borrowed only inside `poll`.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use ringmq_codec::{
    decode, ConnAck, Connect, DecodeError, DecodeOptions, Disconnect, FixedHeader, Packet,
    PacketType, ProtocolVersion, ReasonCode,
};

use crate::broker::{ConnLink, Core, Ending, Flow};
use crate::mesh::{home_core, Handoff};

/// What every connection of a core shares.
pub struct ConnCtx {
    /// The core's broker state.
    pub core: Rc<RefCell<Core>>,
    /// Bytes read per read call, at least.
    pub read_buffer_bytes: usize,
    /// Largest packet accepted.
    pub max_packet_size_bytes: u32,
    /// Time allowed between accept and CONNECT.
    pub connect_timeout: Duration,
    /// Set TCP_NODELAY on accepted sockets.
    pub tcp_nodelay: bool,
}

type Stream = Rc<RefCell<TcpStream>>;

/// How long a task waiting on a condition without a wake-up of its own (a backlogged mesh queue,
/// a session with no room for retained messages) pauses before looking again.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(1);

async fn read_some(stream: &Stream, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
    let start = buf.len();
    buf.resize(start + chunk, 0);
    let result =
        poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_read(cx, &mut buf[start..])).await;
    let n = *result.as_ref().unwrap_or(&0);
    buf.truncate(start + n);
    result
}

async fn write_all(stream: &Stream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *stream.borrow_mut()).poll_write(cx, data)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    Ok(())
}

fn shutdown(stream: &Stream) {
    // Wakes a reader blocked on this socket: its next read sees end of stream.
    // SAFETY: the fd is owned by the stream, alive for this call.
    unsafe { libc::shutdown(stream.borrow().as_raw_fd(), libc::SHUT_RDWR) };
}

/// Why reading CONNECT failed.
enum ConnectFailure {
    /// Closed, timed out or broken before a CONNECT: just close.
    Silent,
    /// A CONNECT that cannot be accepted: answer CONNACK with this reason in this version.
    Refuse(ProtocolVersion, ReasonCode),
}

/// Peeks at a CONNECT that failed to decode to learn which version to refuse it in.
fn connect_version(buf: &[u8]) -> Option<ProtocolVersion> {
    let header = FixedHeader::parse(buf, ProtocolVersion::V5, u32::MAX).ok()??;
    let body = buf.get(header.header_len..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    match body.get(2 + name_len)? {
        5 => Some(ProtocolVersion::V5),
        3 => Some(ProtocolVersion::V3_1),
        _ => Some(ProtocolVersion::V3_1_1),
    }
}

async fn read_connect(
    stream: &Stream,
    buf: &mut BytesMut,
    ctx: &ConnCtx,
) -> Result<Box<Connect>, ConnectFailure> {
    let options = DecodeOptions {
        version: ProtocolVersion::V5,
        max_packet_size: ctx.max_packet_size_bytes,
    };
    loop {
        if let Some(&first) = buf.first() {
            if first >> 4 != PacketType::Connect as u8 {
                return Err(ConnectFailure::Silent); // [MQTT-3.1.0-1]
            }
        }
        let before = buf.clone();
        match decode(buf, &options) {
            Ok(Some(Packet::Connect(c))) => return Ok(c),
            Ok(Some(_)) => return Err(ConnectFailure::Silent),
            Ok(None) => {}
            Err(e) => {
                let version = connect_version(&before);
                return Err(match (e, version) {
                    // A level above 5 comes from a newer client, answered in the 5.0 form
                    // (0x84, 5.0 3.1.2.2); older levels get 3.1.1 return code 1 [MQTT-3.1.2-2].
                    (DecodeError::UnsupportedProtocolVersion(level), _) => ConnectFailure::Refuse(
                        if level > 5 {
                            ProtocolVersion::V5
                        } else {
                            ProtocolVersion::V3_1_1
                        },
                        ReasonCode::UnsupportedProtocolVersion,
                    ),
                    (e, Some(ProtocolVersion::V5)) => {
                        ConnectFailure::Refuse(ProtocolVersion::V5, e.reason_code())
                    }
                    _ => ConnectFailure::Silent,
                });
            }
        }
        match read_some(stream, buf, ctx.read_buffer_bytes).await {
            Ok(0) | Err(_) => return Err(ConnectFailure::Silent),
            Ok(_) => {}
        }
    }
}

/// Serves a freshly accepted socket: reads CONNECT within the connect timeout, then either
/// serves it here (its home core) or hands it to its home core.
pub async fn accepted(stream: TcpStream, ctx: Rc<ConnCtx>) {
    if ctx.tcp_nodelay {
        let _ = stream.set_nodelay(true);
    }
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    let stream: Stream = Rc::new(RefCell::new(stream));
    let mut buf = BytesMut::new();
    let read = glommio::timer::timeout(ctx.connect_timeout, async {
        Ok(read_connect(&stream, &mut buf, &ctx).await)
    })
    .await;
    let connect = match read {
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT within the connect timeout; closed");
            return;
        }
        Ok(Err(ConnectFailure::Silent)) => {
            tracing::debug!(%peer, "connection closed before a valid CONNECT");
            return;
        }
        Ok(Err(ConnectFailure::Refuse(version, reason))) => {
            tracing::info!(%peer, ?reason, "CONNECT refused");
            refuse(&stream, version, reason).await;
            return;
        }
        Ok(Ok(c)) => c,
    };
    if !authenticate(&stream, &connect, peer, &ctx).await {
        return;
    }
    let (me, cores) = {
        let core = ctx.core.borrow();
        (core.id, core.settings().cores)
    };
    let home = if connect.client_id.is_empty() {
        me
    } else {
        home_core(connect.client_id.as_bytes(), cores)
    };
    if home != me {
        // Move the socket to the home core: duplicate the descriptor, drop ours.
        // SAFETY: dup of a descriptor we own; the copy is owned by the OwnedFd.
        let fd = unsafe { libc::dup(stream.borrow().as_raw_fd()) };
        if fd < 0 {
            tracing::warn!(%peer, error = %io::Error::last_os_error(), "cannot move connection to its home core");
            return;
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        ctx.core.borrow_mut().handoff(
            home,
            Box::new(Handoff {
                fd,
                connect,
                rest: buf,
                peer,
            }),
        );
        return;
    }
    serve(stream, connect, buf, peer, ctx).await;
}

/// Checks the credentials of a CONNECT on the core that read it, before it moves to its home
/// core (the failed-login limiter counts per core). On refusal answers CONNACK and closes.
async fn authenticate(stream: &Stream, connect: &Connect, peer: SocketAddr, ctx: &ConnCtx) -> bool {
    use crate::auth::Refusal;
    let verdict = {
        let mut core = ctx.core.borrow_mut();
        let verdict = core.auth.authenticate(connect, peer.ip(), Instant::now());
        if verdict.is_err() {
            core.stats.auth_failed += 1;
        }
        verdict
    };
    let Err(refusal) = verdict else {
        return true;
    };
    let client_id = &connect.client_id;
    let username = connect.username.as_deref().unwrap_or("");
    match refusal {
        Refusal::RateLimited { first: true } => tracing::warn!(
            %peer, %client_id, username,
            "CONNECT refused: too many failed logins from this address \
             (auth.failed_login_limit); further refusals in this window are not logged"
        ),
        Refusal::RateLimited { first: false } => {}
        other => {
            tracing::info!(%peer, %client_id, username, ?other, "CONNECT refused: authentication")
        }
    }
    refuse(
        stream,
        connect.protocol,
        refusal.reason(connect.protocol.is_v5()),
    )
    .await;
    false
}

/// Serves a connection handed over by another core.
pub async fn handed_over(h: Box<Handoff>, ctx: Rc<ConnCtx>) {
    let Handoff {
        fd,
        connect,
        rest,
        peer,
    } = *h;
    // SAFETY: the descriptor is a connected TCP socket we own, handed over whole.
    let stream: Stream = Rc::new(RefCell::new(unsafe {
        TcpStream::from_raw_fd(fd.into_raw_fd())
    }));
    serve(stream, connect, rest, peer, ctx).await;
}

async fn refuse(stream: &Stream, version: ProtocolVersion, reason: ReasonCode) {
    let mut out = BytesMut::new();
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: reason,
        properties: None,
    });
    if connack.encode(version, &mut out).is_ok() {
        let _ = write_all(stream, &out).await;
    }
    shutdown(stream);
}

async fn serve(
    stream: Stream,
    connect: Box<Connect>,
    buf: BytesMut,
    peer: std::net::SocketAddr,
    ctx: Rc<ConnCtx>,
) {
    let link = Rc::new(ConnLink::default());
    let version = connect.protocol;
    let accepted = ctx
        .core
        .borrow_mut()
        .connect(&connect, link.clone(), Instant::now());
    let accepted = match accepted {
        Ok(a) => a,
        Err(reason) => {
            tracing::info!(%peer, client_id = %connect.client_id, ?reason, "CONNECT refused");
            refuse(&stream, version, reason).await;
            return;
        }
    };
    tracing::debug!(%peer, client_id = %connect.client_id, ?version, "client connected");
    drop(connect);
    let sid = accepted.session;
    let writer = glommio::spawn_local(writer(
        stream.clone(),
        link.clone(),
        sid,
        version,
        ctx.clone(),
    ));
    let ending = reader(
        &stream,
        buf,
        &link,
        sid,
        version,
        accepted.keep_alive_secs,
        &ctx,
    )
    .await;
    ctx.core
        .borrow_mut()
        .disconnected(sid, accepted.generation, ending, Instant::now());
    if link.close.get().is_none() {
        link.close.set(Some(ReasonCode::Success));
    }
    link.notify.notify();
    writer.await;
}

async fn reader(
    stream: &Stream,
    mut buf: BytesMut,
    link: &Rc<ConnLink>,
    sid: u64,
    version: ProtocolVersion,
    keep_alive_secs: u16,
    ctx: &ConnCtx,
) -> Ending {
    let options = DecodeOptions {
        version,
        max_packet_size: ctx.max_packet_size_bytes,
    };
    // [MQTT-3.1.2-24]: one and a half times the keep alive.
    let idle_limit =
        (keep_alive_secs > 0).then(|| Duration::from_millis(u64::from(keep_alive_secs) * 1500));
    loop {
        loop {
            if link.close.get().is_some() {
                return Ending::WithWill;
            }
            let packet = match decode(&mut buf, &options) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(error = %e, "closing connection: malformed packet");
                    close_with(link, e.reason_code());
                    return Ending::WithWill;
                }
            };
            match ctx.core.borrow_mut().on_packet(sid, packet, Instant::now()) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close(ending)) => return ending,
                Err(reason) => {
                    tracing::info!(?reason, "closing connection: protocol error");
                    close_with(link, reason);
                    return Ending::WithWill;
                }
            }
        }
        while ctx.core.borrow().mesh_backlogged() {
            // Back-pressure: another core is behind; stop reading until it catches up.
            glommio::timer::sleep(RETRY_PAUSE).await;
        }
        let read = read_some(stream, &mut buf, ctx.read_buffer_bytes);
        let n = match idle_limit {
            Some(limit) => match glommio::timer::timeout(limit, async { Ok(read.await) }).await {
                Ok(r) => r,
                Err(_) => {
                    close_with(link, ReasonCode::KeepAliveTimeout);
                    return Ending::WithWill;
                }
            },
            None => read.await,
        };
        match n {
            Ok(0) | Err(_) => return Ending::WithWill,
            Ok(n) => ctx.core.borrow_mut().stats.bytes_received += n as u64,
        }
    }
}

fn close_with(link: &ConnLink, reason: ReasonCode) {
    if link.close.get().is_none() {
        link.close.set(Some(reason));
    }
    link.notify.notify();
}

async fn writer(
    stream: Stream,
    link: Rc<ConnLink>,
    sid: u64,
    version: ProtocolVersion,
    ctx: Rc<ConnCtx>,
) {
    loop {
        link.notify.notified().await;
        loop {
            let out = ctx.core.borrow_mut().take_output(sid, &link);
            let Some(out) = out else { break };
            if write_all(&stream, &out).await.is_err() {
                close_with(&link, ReasonCode::Success);
                shutdown(&stream);
                return;
            }
            let mut core = ctx.core.borrow_mut();
            core.stats.bytes_sent += out.len() as u64;
            core.on_written(sid, &link, Instant::now());
        }
        if let Some(reason) = link.close.get() {
            if version.is_v5() && reason != ReasonCode::Success {
                let mut out = BytesMut::new();
                // With an explicit empty property block (0xE0 0x02 reason 0x00): the short form
                // without it (3.14.2.2.1) is valid too, but [MQTT-2.2.2-1] asks for the Property
                // Length and several client libraries (rumqttc 0.24 among them) cannot parse
                // the short form and lose the reason.
                let disconnect = Disconnect {
                    reason_code: reason,
                    properties: Some(Box::default()),
                };
                if Packet::Disconnect(disconnect)
                    .encode(version, &mut out)
                    .is_ok()
                {
                    let _ = write_all(&stream, &out).await;
                }
            }
            shutdown(&stream);
            return;
        }
    }
}
