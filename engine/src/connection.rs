//! The driver of one client connection on its core: reads and decodes packets, feeds them to the
//! core's [`Core`], and writes what the session has encoded, one write per wake-up however many
//! packets are waiting. Two tasks share the socket: a reader and a writer. They never run at
//! the same time (one thread), so the socket sits in a `RefCell` borrowed only inside `poll`.
//! The socket is a [`Transport`]: plain TCP, TLS, WebSocket or WebSocket over TLS; a TLS or
//! WebSocket listener's handshakes run first (`transport::handshake`).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use glommio::net::TcpStream;
use ringmq_codec::{
    decode, ConnAck, Connect, DecodeError, DecodeOptions, Disconnect, FixedHeader, Packet,
    PacketType, ProtocolVersion, ReasonCode, Utf8Bytes,
};

use crate::broker::{ConnLink, Core, Ending, Flow};
use crate::mesh::{home_core, Handoff};
use crate::ratelimit::TokenBucket;
use crate::transport::{self, HandshakeLimits, ListenerTransport, Transport, CLOSE_FLUSH_TIMEOUT};

/// What every connection of a core shares.
pub struct ConnCtx {
    /// The core's broker state.
    pub core: Rc<RefCell<Core>>,
    /// Bytes read per read call, at least.
    pub read_buffer_bytes: usize,
    /// Largest read size, for busy connections.
    pub read_buffer_max_bytes: usize,
    /// Bytes per second read from one client (0: no limit).
    pub max_client_bytes_per_second: u64,
    /// PUBLISH packets per second read from one client (0: no limit).
    pub max_client_messages_per_second: u32,
    /// Largest packet accepted.
    pub max_packet_size_bytes: u32,
    /// Time allowed between accept and CONNECT.
    pub connect_timeout: Duration,
    /// Set TCP_NODELAY on accepted sockets.
    pub tcp_nodelay: bool,
    /// Time for the TLS handshake and the WebSocket upgrade.
    pub handshake_timeout: Duration,
    /// Largest WebSocket upgrade request.
    pub max_websocket_handshake_bytes: usize,
}

type Stream = Rc<RefCell<Transport>>;

/// How long a task waiting on a condition without a wake-up of its own (a backlogged mesh queue,
/// a session with no room for retained messages) pauses before looking again.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(1);

async fn read_some(stream: &Stream, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
    let start = buf.len();
    buf.resize(start + chunk, 0);
    let result = poll_fn(|cx| stream.borrow_mut().poll_read(cx, &mut buf[start..])).await;
    let n = *result.as_ref().unwrap_or(&0);
    buf.truncate(start + n);
    result
}

async fn write_all(stream: &Stream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = poll_fn(|cx| stream.borrow_mut().poll_write(cx, data)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        data = &data[n..];
    }
    if !stream.borrow().is_plain() {
        flush(stream).await?;
    }
    Ok(())
}

/// Sends what waits below the MQTT bytes (TLS records, WebSocket frames); nothing for TCP.
async fn flush(stream: &Stream) -> io::Result<()> {
    poll_fn(|cx| stream.borrow_mut().poll_flush(cx)).await
}

fn shutdown(stream: &Stream) {
    // Wakes a reader blocked on this socket: its next read sees end of stream.
    transport::shutdown_socket(stream.borrow().socket());
}

/// Ends the connection: over TLS or WebSocket, the close frame and close_notify first
/// (bounded by [`CLOSE_FLUSH_TIMEOUT`]); then the socket is shut down.
async fn close(stream: &Stream) {
    if !stream.borrow().is_plain() {
        stream.borrow_mut().start_close();
        let _ =
            glommio::timer::timeout(CLOSE_FLUSH_TIMEOUT, async { Ok(flush(stream).await) }).await;
    }
    shutdown(stream);
}

/// Why reading CONNECT failed.
enum ConnectFailure {
    /// Closed, timed out or broken before a CONNECT: just close.
    Silent,
    /// The TLS or WebSocket layer refused what it read (its close is queued).
    Transport(io::Error),
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
            Ok(Some(Packet::Connect(c))) => {
                // The session keeps the client id, the will and the user name, all slices of
                // the read buffer: decoded again from an exact copy of the packet, they pin
                // its few bytes rather than the whole buffer for the session's life.
                let n = before.len() - buf.len();
                let mut exact = BytesMut::from(&before[..n]);
                return Ok(match decode(&mut exact, &options) {
                    Ok(Some(Packet::Connect(own))) => own,
                    _ => c,
                });
            }
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
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(ConnectFailure::Transport(e))
            }
            Ok(0) | Err(_) => return Err(ConnectFailure::Silent),
            Ok(_) => {}
        }
    }
}

/// Serves a freshly accepted socket: reads CONNECT within the connect timeout, then either
/// serves it here (its home core) or hands it to its home core.
pub async fn accepted(stream: TcpStream, ctx: Rc<ConnCtx>, listener: Rc<ListenerTransport>) {
    if ctx.tcp_nodelay {
        let _ = stream.set_nodelay(true);
    }
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    let transport = if listener.tls.is_none() && listener.websocket_path.is_none() {
        Transport::tcp(stream)
    } else {
        let limits = HandshakeLimits {
            timeout: ctx.handshake_timeout,
            max_websocket_bytes: ctx.max_websocket_handshake_bytes,
            read_chunk: ctx.read_buffer_bytes,
        };
        match transport::handshake(stream, &listener, &limits, peer).await {
            Some(t) => t,
            None => return,
        }
    };
    let stream: Stream = Rc::new(RefCell::new(transport));
    let mut buf = BytesMut::new();
    let read = glommio::timer::timeout(ctx.connect_timeout, async {
        Ok(read_connect(&stream, &mut buf, &ctx).await)
    })
    .await;
    let mut connect = match read {
        Err(_) => {
            tracing::debug!(%peer, "no CONNECT within the connect timeout; closed");
            close(&stream).await;
            return;
        }
        Ok(Err(ConnectFailure::Silent)) => {
            tracing::debug!(%peer, "connection closed before a valid CONNECT");
            close(&stream).await;
            return;
        }
        Ok(Err(ConnectFailure::Transport(error))) => {
            tracing::info!(%peer, listener = listener.name, %error, "closing connection before CONNECT");
            close(&stream).await;
            return;
        }
        Ok(Err(ConnectFailure::Refuse(version, reason))) => {
            tracing::info!(%peer, ?reason, "CONNECT refused");
            refuse(&stream, version, reason).await;
            return;
        }
        Ok(Ok(c)) => c,
    };
    if overloaded(&stream, &connect, peer, &ctx).await {
        return;
    }
    let certificate = listener.use_identity_as_username;
    if certificate {
        // The certificate's CN replaces whatever user name and password the CONNECT has.
        let name = stream.borrow().peer_common_name();
        match name.as_deref().map(Utf8Bytes::try_from) {
            Some(Ok(name)) => {
                connect.username = Some(name);
                connect.password = None;
            }
            _ => {
                tracing::info!(
                    %peer, client_id = %connect.client_id,
                    "CONNECT refused: the client certificate has no usable subject CN \
                     (use_identity_as_username)"
                );
                let reason = if connect.protocol.is_v5() {
                    ReasonCode::NotAuthorized
                } else {
                    ReasonCode::BadUserNameOrPassword
                };
                refuse(&stream, connect.protocol, reason).await;
                return;
            }
        }
    }
    let Some(enhanced) = enhanced_authentication(&stream, &mut buf, &mut connect, peer, &ctx).await
    else {
        return;
    };
    if !enhanced && !authenticate(&stream, &connect, peer, &ctx, certificate).await {
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
        // Move the socket to the home core: duplicate the descriptor, drop ours. The TLS
        // session and WebSocket state go along, with everything they buffered.
        let Ok(transport) = Rc::try_unwrap(stream).map(RefCell::into_inner) else {
            tracing::warn!(%peer, "cannot move connection to its home core: still shared");
            return;
        };
        let (socket, state) = transport.detach();
        // SAFETY: dup of a descriptor we own; the copy is owned by the OwnedFd.
        let fd = unsafe { libc::dup(socket.as_raw_fd()) };
        if fd < 0 {
            tracing::warn!(%peer, error = %io::Error::last_os_error(), "cannot move connection to its home core");
            return;
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        drop(socket);
        tracing::debug!(
            %peer, client_id = %connect.client_id, from = me, to = home,
            transport = listener.name, "moving the connection to its home core"
        );
        ctx.core.borrow_mut().handoff(
            home,
            Box::new(Handoff {
                fd,
                connect,
                rest: buf,
                peer,
                transport: state,
            }),
        );
        return;
    }
    serve(stream, connect, buf, peer, ctx).await;
}

/// Checks the credentials of a CONNECT on the core that read it, before it moves to its home
/// core (the failed-login limiter and the HTTP hook's cache are per core). On refusal answers
/// CONNACK and closes.
/// `certificate`: the user name comes from a verified client certificate, which replaces the
/// password check.
async fn authenticate(
    stream: &Stream,
    connect: &Connect,
    peer: SocketAddr,
    ctx: &ConnCtx,
    certificate: bool,
) -> bool {
    use crate::auth::{Refusal, Step};
    let step = {
        let mut core = ctx.core.borrow_mut();
        let now = Instant::now();
        if certificate {
            Step::Done(core.auth.authenticate_certificate(peer.ip(), now))
        } else {
            let unix_secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            core.auth.start(connect, peer.ip(), now, unix_secs)
        }
    };
    let verdict = match step {
        Step::Done(verdict) => verdict,
        Step::Ask(question) => {
            // The HTTP hook, awaited on this core (bounded by auth.http.timeout_ms); the core
            // is not borrowed meanwhile.
            let answer = crate::auth::http::ask(&question.hook, &question.request).await;
            let mut core = ctx.core.borrow_mut();
            core.auth
                .finish(question, answer, peer.ip(), Instant::now())
        }
    };
    if verdict.is_err() {
        ctx.core.borrow_mut().stats.auth_failed += 1;
    }
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

/// Why an enhanced authentication exchange ended without a verified client.
enum ExchangeEnd {
    /// Answer CONNACK with this reason and close; a failed login when `failed` (counted in
    /// the limiter). The text is for the log (empty: not logged).
    Refuse {
        reason: ReasonCode,
        failed: bool,
        why: String,
    },
    /// The client closed, sent DISCONNECT, or the socket broke: just close.
    Closed,
}

/// MQTT 5 enhanced authentication (spec 4.12) of a CONNECT that names an Authentication
/// Method, on the core that accepted the socket, before the usual credential checks. The one
/// method is SCRAM-SHA-256 (`auth::scram`): CONNECT carries the client-first-message, the
/// broker answers AUTH 0x18 with the server-first-message, the client AUTH 0x18 with its
/// proof; on success the CONNECT leaves here with the SCRAM user as its User Name and the
/// server-final-message as its Authentication Data, which the home core's CONNACK carries
/// [MQTT-4.12.0-5]. The exchange after the CONNECT has `connect_timeout` of its own.
///
/// Returns `Some(false)` when the CONNECT does not use enhanced authentication (3.1.1 never
/// does), `Some(true)` when the client is verified (the password check is skipped), `None`
/// when it was refused: answered with CONNACK and closed. An unknown method gets 0x8C
/// [MQTT-4.12.0-1]; Authentication Data without a method, a packet other than AUTH or an AUTH
/// that is not Continue authentication get 0x82; an AUTH with another method 0x8C; a wrong
/// proof or unknown user 0x86; a malformed SCRAM message 0x87; a challenge larger than the
/// client's Maximum Packet Size 0x83. Failed logins count in the failed-login limiter, every
/// refusal in `auth_failed`.
async fn enhanced_authentication(
    stream: &Stream,
    buf: &mut BytesMut,
    connect: &mut Connect,
    peer: SocketAddr,
    ctx: &ConnCtx,
) -> Option<bool> {
    let props = connect.properties.as_deref();
    let method = props.and_then(|p| p.authentication_method.clone());
    let has_data = props.is_some_and(|p| p.authentication_data.is_some());
    if !connect.protocol.is_v5() || (method.is_none() && !has_data) {
        return Some(false);
    }
    let client_id = connect.client_id.clone();
    let end = match method {
        // Authentication Data without a method is a Protocol Error (3.1.2.11.10).
        None => ExchangeEnd::Refuse {
            reason: ReasonCode::ProtocolError,
            failed: false,
            why: "Authentication Data without Authentication Method".into(),
        },
        Some(method) => {
            let exchange = glommio::timer::timeout(ctx.connect_timeout, async {
                Ok(scram_exchange(stream, buf, connect, method, peer, ctx).await)
            })
            .await;
            match exchange {
                Ok(Ok(())) => return Some(true),
                Ok(Err(end)) => end,
                Err(_) => {
                    tracing::debug!(%peer, %client_id, "enhanced authentication not finished within the connect timeout; closed");
                    ExchangeEnd::Closed
                }
            }
        }
    };
    match end {
        ExchangeEnd::Closed => close(stream).await,
        ExchangeEnd::Refuse {
            reason,
            failed,
            why,
        } => {
            {
                let mut core = ctx.core.borrow_mut();
                core.stats.auth_failed += 1;
                if reason == ReasonCode::ProtocolError {
                    core.stats.protocol_errors += 1;
                }
                if failed {
                    core.auth.login_failed(peer.ip(), Instant::now());
                }
            }
            if !why.is_empty() {
                tracing::info!(%peer, %client_id, ?reason, "CONNECT refused: enhanced authentication: {why}");
            }
            refuse(stream, ProtocolVersion::V5, reason).await;
        }
    }
    None
}

/// The SCRAM-SHA-256 exchange of [`enhanced_authentication`], without its time limit.
async fn scram_exchange(
    stream: &Stream,
    buf: &mut BytesMut,
    connect: &mut Connect,
    method: Utf8Bytes,
    peer: SocketAddr,
    ctx: &ConnCtx,
) -> Result<(), ExchangeEnd> {
    use crate::auth::scram::{Failure, METHOD};
    use crate::auth::Refusal;
    let refused = |reason, failed, why: String| ExchangeEnd::Refuse {
        reason,
        failed,
        why,
    };
    // A failure of the server's own random source is not the client's failed login.
    let failure = |f: Failure| refused(f.reason(), f != Failure::NoRandom, f.to_string());
    let client_first = connect
        .properties
        .as_deref()
        .and_then(|p| p.authentication_data.clone())
        .unwrap_or_default();
    let (exchange, server_first) = {
        let mut core = ctx.core.borrow_mut();
        if &*method != METHOD || core.auth.scram().is_none() {
            let why = format!("unsupported Authentication Method {method:?}");
            return Err(refused(ReasonCode::BadAuthenticationMethod, false, why));
        }
        if let Err(refusal) = core.auth.check_limit(peer.ip(), Instant::now()) {
            // Only the first refusal of a window is logged (an empty text is not).
            let why = match refusal {
                Refusal::RateLimited { first: true } => {
                    "too many failed logins from this address (auth.failed_login_limit); \
                     further refusals in this window are not logged"
                }
                _ => "",
            };
            return Err(refused(refusal.reason(true), false, why.into()));
        }
        let scram = core.auth.scram().expect("checked above");
        scram.start(&client_first).map_err(failure)?
    };
    if let Some(name) = connect.username.as_deref() {
        if name != exchange.user() {
            return Err(failure(Failure::Malformed(
                "the CONNECT User Name is not the SCRAM user",
            )));
        }
    }
    let mut out = BytesMut::new();
    let challenge = Packet::Auth(ringmq_codec::Auth {
        reason_code: ReasonCode::ContinueAuthentication,
        properties: Some(Box::new(ringmq_codec::Properties {
            authentication_method: Some(method.clone()),
            authentication_data: Some(server_first.into()),
            ..Default::default()
        })),
    });
    if challenge.encode(ProtocolVersion::V5, &mut out).is_err() {
        return Err(ExchangeEnd::Closed);
    }
    let client_max = connect
        .properties
        .as_deref()
        .and_then(|p| p.maximum_packet_size)
        .unwrap_or(u32::MAX);
    if out.len() as u64 > u64::from(client_max) {
        // [MQTT-3.1.2-24]: never more than the client's Maximum Packet Size.
        let why = format!("the AUTH challenge is larger than the client's Maximum Packet Size ({client_max} bytes)");
        return Err(refused(ReasonCode::ImplementationSpecificError, false, why));
    }
    if write_all(stream, &out).await.is_err() {
        return Err(ExchangeEnd::Closed);
    }
    let client_final = read_auth_response(stream, buf, &method, ctx).await?;
    let verified = exchange.finish(&client_final).map_err(failure)?;
    let user = Utf8Bytes::try_from(&*verified.user).map_err(|_| {
        failure(Failure::Malformed(
            "the user name is not a valid MQTT string",
        ))
    })?;
    connect.username = Some(user);
    connect.password = None;
    let props = connect.properties.get_or_insert_with(Box::default);
    props.authentication_data = Some(verified.server_final.into());
    Ok(())
}

/// Reads the client's answer to an AUTH 0x18: an AUTH 0x18 with the same method; returns its
/// Authentication Data.
async fn read_auth_response(
    stream: &Stream,
    buf: &mut BytesMut,
    method: &str,
    ctx: &ConnCtx,
) -> Result<bytes::Bytes, ExchangeEnd> {
    let options = DecodeOptions {
        version: ProtocolVersion::V5,
        max_packet_size: ctx.max_packet_size_bytes,
    };
    let protocol_error = |why: &str| ExchangeEnd::Refuse {
        reason: ReasonCode::ProtocolError,
        failed: false,
        why: why.into(),
    };
    loop {
        match decode(buf, &options) {
            Ok(Some(Packet::Auth(a))) => {
                if a.reason_code != ReasonCode::ContinueAuthentication {
                    return Err(protocol_error("AUTH during the exchange is not 0x18"));
                }
                let props = a.properties.unwrap_or_default();
                return match props.authentication_method.as_deref() {
                    None => Err(protocol_error("AUTH without Authentication Method")),
                    // [MQTT-4.12.0-5]
                    Some(m) if m != method => Err(ExchangeEnd::Refuse {
                        reason: ReasonCode::BadAuthenticationMethod,
                        failed: false,
                        why: format!("AUTH with another Authentication Method {m:?}"),
                    }),
                    Some(_) => Ok(props.authentication_data.unwrap_or_default()),
                };
            }
            Ok(Some(Packet::Disconnect(_))) => return Err(ExchangeEnd::Closed),
            // [MQTT-3.1.2-30]: only AUTH or DISCONNECT until the CONNACK.
            Ok(Some(_)) => {
                return Err(protocol_error(
                    "a packet other than AUTH during enhanced authentication",
                ))
            }
            Ok(None) => {}
            Err(e) => {
                return Err(ExchangeEnd::Refuse {
                    reason: e.reason_code(),
                    failed: false,
                    why: format!("malformed packet during enhanced authentication: {e}"),
                })
            }
        }
        match read_some(stream, buf, ctx.read_buffer_bytes).await {
            Ok(0) | Err(_) => return Err(ExchangeEnd::Closed),
            Ok(_) => {}
        }
    }
}

/// Serves a connection handed over by another core.
pub async fn handed_over(h: Box<Handoff>, ctx: Rc<ConnCtx>) {
    let Handoff {
        fd,
        connect,
        rest,
        peer,
        transport,
    } = *h;
    // SAFETY: the descriptor is a connected TCP socket we own, handed over whole.
    let socket = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
    let stream: Stream = Rc::new(RefCell::new(Transport::attach(socket, transport)));
    serve(stream, connect, rest, peer, ctx).await;
}

/// The overload check (`overload.rs`, `Core::admit_under_overload`): in `accepted` before
/// the certificate and credentials are looked at, so that an overloaded broker spends nothing
/// on a client it refuses; in `serve`, on the home core, which knows its queues and whether
/// the client resumes a session. On refusal answers CONNACK 0x89 (3.x: 3) and closes. Not
/// logged per connection: entering and leaving overload are (once per core).
async fn overloaded(stream: &Stream, connect: &Connect, peer: SocketAddr, ctx: &ConnCtx) -> bool {
    let verdict = ctx.core.borrow_mut().admit_under_overload(connect);
    let Err(cause) = verdict else {
        return false;
    };
    tracing::debug!(%peer, client_id = %connect.client_id, ?cause, "CONNECT refused: overload");
    refuse(stream, connect.protocol, ReasonCode::ServerBusy).await;
    true
}

async fn refuse(stream: &Stream, version: ProtocolVersion, reason: ReasonCode) {
    let mut out = BytesMut::new();
    let connack = Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: reason,
        properties: None,
    });
    if connack.encode(version, &mut out).is_ok() {
        let _ = glommio::timer::timeout(CLOSE_FLUSH_TIMEOUT, async {
            Ok(write_all(stream, &out).await)
        })
        .await;
    }
    close(stream).await;
}

async fn serve(
    stream: Stream,
    connect: Box<Connect>,
    buf: BytesMut,
    peer: std::net::SocketAddr,
    ctx: Rc<ConnCtx>,
) {
    if overloaded(&stream, &connect, peer, &ctx).await {
        return;
    }
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
    {
        let mut t = stream.borrow_mut();
        t.set_writer_wake(link.clone());
        if t.wants_flush() {
            // Answers queued before the writer existed (pongs, TLS records).
            link.notify.notify();
        }
    }
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
    let mut chunk = ctx.read_buffer_bytes;
    let now = Instant::now();
    let mut byte_limit = TokenBucket::optional(ctx.max_client_bytes_per_second, now);
    let mut message_limit =
        TokenBucket::optional(u64::from(ctx.max_client_messages_per_second), now);
    let mut read_bytes = 0u64;
    // This episode of back-pressure outlasted `publisher_backpressure_max_wait_ms`: go on.
    let mut gave_up = false;
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
            if let Packet::Publish(p) = &packet {
                if p.qos != ringmq_codec::QoS::AtMostOnce {
                    if link.throttled.get() > 0 {
                        wait_while_throttled(link, ctx, &mut gave_up).await;
                    } else {
                        gave_up = false;
                    }
                    wait_for_cross_core_window(link, ctx).await;
                }
            }
            if let (Some(limit), Packet::Publish(_)) = (message_limit.as_mut(), &packet) {
                // Over the client's message rate: wait before handling this PUBLISH (what
                // follows stays unread in the socket; TCP pushes back).
                let wait = limit.spend(1, Instant::now());
                if !wait.is_zero() {
                    glommio::timer::sleep(wait).await;
                }
            }
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
        // The client's byte rate: pay for the last read; in debt, stop reading (TCP pushes
        // back on the client) until it is paid. Reads are at most one buffer.
        if let Some(limit) = byte_limit.as_mut() {
            let wait = limit.spend(read_bytes, Instant::now());
            read_bytes = 0;
            if !wait.is_zero() {
                glommio::timer::sleep(wait).await;
            }
        }
        while ctx.core.borrow().mesh_backlogged() {
            // Back-pressure: another core is behind; stop reading until it catches up.
            glommio::timer::sleep(RETRY_PAUSE).await;
        }
        // Adaptive read size: a read that filled its buffer doubles the next one (a busy
        // connection reads in large chunks), one mostly empty halves it; an idle connection
        // waits with a small, fresh buffer rather than the large one its last burst used.
        if buf.is_empty() && buf.capacity() > 4 * chunk {
            buf = BytesMut::new();
        }
        // A rate-limited client never reads more than a second's worth at once.
        let this_read = match ctx.max_client_bytes_per_second {
            0 => chunk,
            rate => chunk.min(usize::try_from(rate).unwrap_or(usize::MAX).max(64)),
        };
        let read = read_some(stream, &mut buf, this_read);
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
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                let (peer, transport) = {
                    let t = stream.borrow();
                    let peer = t.socket().peer_addr().map(|a| a.to_string());
                    (peer.unwrap_or_default(), t.name())
                };
                tracing::info!(%peer, transport, %error, "closing connection");
                return Ending::WithWill;
            }
            Ok(0) | Err(_) => return Ending::WithWill,
            Ok(n) => {
                ctx.core.borrow_mut().stats.bytes_received += n as u64;
                read_bytes += n as u64;
                if n == this_read {
                    chunk = (chunk * 2).min(ctx.read_buffer_max_bytes);
                } else if n < chunk / 4 {
                    chunk = (chunk / 2).max(ctx.read_buffer_bytes);
                }
            }
        }
    }
}

/// Waits while another core has not yet handled `runtime.cross_core_window_messages` QoS 1/2
/// publications from this one, or, while some core pauses publishers, one of this
/// connection's: what it has not seen yet could be on its way to a full session whose
/// back-pressure has not come back.
async fn wait_for_cross_core_window(link: &ConnLink, ctx: &ConnCtx) {
    loop {
        let waiters = {
            let core = ctx.core.borrow();
            if !core.must_wait_for_mesh(link) {
                return;
            }
            core.window_waiters.clone()
        };
        waiters.wait().await;
    }
}

/// Back-pressure: a session this publisher feeds is full. Waits (this QoS 1/2 PUBLISH and all
/// that follow stay unread; TCP pushes back) until every such session has drained, at most
/// `limits.publisher_backpressure_max_wait_ms` per episode, then goes on regardless.
async fn wait_while_throttled(link: &ConnLink, ctx: &ConnCtx, gave_up: &mut bool) {
    if *gave_up {
        return;
    }
    let max_wait = ctx
        .core
        .borrow()
        .settings()
        .backpressure
        .map_or(Duration::ZERO, |b| b.max_wait);
    let start = Instant::now();
    while link.throttled.get() > 0 && link.close.get().is_none() {
        if start.elapsed() >= max_wait {
            *gave_up = true;
            ctx.core.borrow_mut().stats.backpressure_timeouts += 1;
            tracing::debug!(
                "publisher back-pressure outlasted limits.publisher_backpressure_max_wait_ms; \
                 reading on (the queue limits apply)"
            );
            return;
        }
        glommio::timer::sleep(RETRY_PAUSE).await;
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
        if stream.borrow().wants_flush() && flush(&stream).await.is_err() {
            close_with(&link, ReasonCode::Success);
            shutdown(&stream);
            return;
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
            close(&stream).await;
            return;
        }
    }
}
