//! The HTTP listener for operations (`[admin]`): `GET /metrics` in the Prometheus text format
//! and a JSON API under `/api/v1/`. It runs on core 0's executor.
//!
//! A deliberately small HTTP/1.1 server: one request per connection (`Connection: close`),
//! `Content-Length` bodies only, every size and time bounded by `[admin]` keys. Hostile input
//! gets 400, 413 or 408 and the connection is closed.
//!
//! Figures come from the reports every core sends core 0 over the mesh once per tick
//! (`MeshMsg::Stats`, 100 ms): no lock, no shared counter, and values at most one tick old.
//! Per-client requests go to the client's home core over the mesh (`MeshMsg::AdminRequest`)
//! and are answered by it; list endpoints ask every core in turn.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use serde::Serialize;

use crate::broker::admin::{Query, Reply};
use crate::broker::{Core, StatsReport};
use crate::message::CoreId;

/// The admin listener's settings (from `[admin]`).
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Connections open at once.
    pub max_connections: usize,
    /// Largest request, bytes.
    pub max_request_bytes: usize,
    /// Time to send the whole request.
    pub request_timeout: Duration,
    /// Time another core has to answer.
    pub core_timeout: Duration,
    /// Largest page of a list.
    pub max_page_size: usize,
}

impl AdminSettings {
    /// From a validated configuration; `None` when the admin listener is off.
    pub fn from_config(c: &crate::config::AdminConfig) -> Option<Self> {
        c.enabled.then(|| AdminSettings {
            addr: c.bind,
            max_connections: c.max_connections as usize,
            max_request_bytes: c.max_request_bytes as usize,
            request_timeout: Duration::from_millis(c.request_timeout_ms),
            core_timeout: Duration::from_millis(c.core_timeout_ms),
            max_page_size: (c.max_page_size as usize).max(1),
        })
    }
}

/// One MQTT listener as `GET /api/v1/listeners` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerInfo {
    /// Bound address (the actual port when 0 was configured).
    pub addr: SocketAddr,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: &'static str,
    /// WebSocket path, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Its connection limit.
    pub max_connections: u64,
    /// Its listen backlog.
    pub backlog: u32,
}

/// Binds the admin socket (no `SO_REUSEPORT`: a second broker on the same address must fail,
/// not share it).
pub fn bind(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the admin API has no authentication and listens beyond loopback: \
             restrict who can reach it (firewall, management network)"
        );
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket)
}

/// What the server needs.
pub struct AdminCtx {
    /// Core 0.
    pub core: Rc<RefCell<Core>>,
    /// Bounds.
    pub settings: AdminSettings,
    /// The MQTT listeners.
    pub listeners: Arc<Vec<ListenerInfo>>,
    /// When the broker started.
    pub started: Instant,
}

/// Accepts admin connections until the task is dropped.
pub async fn serve(listener: TcpListener, ctx: Rc<AdminCtx>) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "admin accept failed");
                glommio::timer::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        let open = open.clone();
        glommio::spawn_local(async move {
            if open.get() >= ctx.settings.max_connections {
                let r = Response::error(503, "too many admin connections");
                send(stream, r, ctx.settings.request_timeout).await;
                return;
            }
            open.set(open.get() + 1);
            handle(stream, &ctx).await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}

async fn handle(mut stream: TcpStream, ctx: &AdminCtx) {
    let timeout = ctx.settings.request_timeout;
    let read = futures_lite::future::or(
        async { Some(read_request(&mut stream, ctx.settings.max_request_bytes).await) },
        async {
            glommio::timer::sleep(timeout).await;
            None
        },
    )
    .await;
    let response = match read {
        None => Response::error(408, "request timeout"),
        Some(Err(None)) => return, // closed before a request
        Some(Err(Some(r))) => r,
        Some(Ok(req)) => route(ctx, req).await,
    };
    send(stream, response, timeout).await;
}

async fn send(mut stream: TcpStream, r: Response, timeout: Duration) {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    if r.status == 405 {
        out.push_str("Allow: GET, POST, DELETE\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&r.body);
    let _ = futures_lite::future::or(
        async {
            let _ = stream.write_all(&bytes).await;
            let _ = stream.flush().await;
            // Lingering close: closing with unread request bytes would send a reset, which can
            // destroy the response before the client reads it (413, 503). Stop writing, then
            // read and discard a bounded amount until the client closes.
            let _ = stream.shutdown(std::net::Shutdown::Write).await;
            let mut sink = [0u8; 4096];
            let mut left = LINGER_MAX_BYTES;
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        },
        glommio::timer::sleep(timeout.min(LINGER_MAX_TIME)),
    )
    .await;
}

/// Request bytes read and discarded after an answer, at most.
const LINGER_MAX_BYTES: usize = 256 * 1024;
/// Time given to the client to close after an answer, at most.
const LINGER_MAX_TIME: Duration = Duration::from_secs(2);

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, `DELETE`, ...
    pub method: String,
    /// The path, percent-decoded per segment later.
    pub target: String,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

/// An answer.
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Its content type.
    pub content_type: &'static str,
    /// Its body.
    pub body: Vec<u8>,
}

impl Response {
    fn json(status: u16, value: &impl Serialize) -> Self {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
        body.push(b'\n');
        Response {
            status,
            content_type: "application/json",
            body,
        }
    }

    fn error(status: u16, message: &str) -> Self {
        Self::json(status, &serde_json::json!({ "error": message }))
    }
}

/// Reads one request of at most `max` bytes. `Err(None)`: the peer closed before sending
/// anything; `Err(Some(response))`: answer this and close.
async fn read_request(stream: &mut TcpStream, max: usize) -> Result<Request, Option<Response>> {
    let mut buf = Vec::with_capacity(1024.min(max));
    let mut chunk = [0u8; 4096];
    loop {
        match parse_request(&buf, max) {
            Parsed::Done(req) => return Ok(req),
            Parsed::Fail(r) => return Err(Some(r)),
            Parsed::More => {}
        }
        let room = (max + 1).saturating_sub(buf.len()).min(chunk.len());
        let n = match stream.read(&mut chunk[..room]).await {
            Ok(n) => n,
            Err(_) => return Err(None),
        };
        if n == 0 {
            return Err(if buf.is_empty() {
                None
            } else {
                Some(Response::error(400, "incomplete request"))
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The outcome of parsing what was read so far.
#[derive(Debug)]
pub enum Parsed {
    /// A whole request.
    Done(Request),
    /// Read more.
    More,
    /// Answer this and close.
    Fail(Response),
}

/// Parses a request from `buf`, bounded by `max` bytes in all.
pub fn parse_request(buf: &[u8], max: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max {
                Parsed::Fail(Response::error(413, "request too large"))
            } else {
                Parsed::More
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Fail(Response::error(413, "too many headers"))
        }
        Err(_) => return Parsed::Fail(Response::error(400, "malformed request")),
    };
    if req.version != Some(1) && req.version != Some(0) {
        return Parsed::Fail(Response::error(400, "unsupported HTTP version"));
    }
    let mut length: Option<usize> = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Fail(Response::error(501, "chunked bodies are not supported"));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok());
            match (n, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(l)) if n == l => {}
                _ => return Parsed::Fail(Response::error(400, "bad Content-Length")),
            }
        }
    }
    let length = length.unwrap_or(0);
    if head.saturating_add(length) > max {
        return Parsed::Fail(Response::error(413, "request too large"));
    }
    if buf.len() < head + length {
        return Parsed::More;
    }
    Parsed::Done(Request {
        method: req.method.unwrap_or("").to_owned(),
        target: req.path.unwrap_or("").to_owned(),
        body: buf[head..head + length].to_vec(),
    })
}

/// Percent-decodes `s` (`+` stays `+`); `None` if an escape is malformed or the result is not
/// UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The query parameters, decoded; `None` if one is malformed.
fn query_params(query: &str) -> Option<Vec<(String, String)>> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn route(ctx: &AdminCtx, req: Request) -> Response {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let Some(params) = query_params(query) else {
        return Response::error(400, "malformed query string");
    };
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let method = req.method.as_str();
    match (method, segments.as_slice()) {
        ("GET", ["metrics"]) => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: metrics(ctx).into_bytes(),
        },
        ("GET", ["healthz"]) => Response::json(200, &serde_json::json!({ "status": "ok" })),
        ("GET", ["api", "v1", "stats"]) => stats(ctx),
        ("GET", ["api", "v1", "listeners"]) => Response::json(200, &*ctx.listeners),
        ("GET", ["api", "v1", "clients"]) => clients(ctx, &params).await,
        ("GET", ["api", "v1", "clients", id]) => match percent_decode(id) {
            Some(id) => client(ctx, &id).await,
            None => Response::error(400, "malformed client id"),
        },
        ("DELETE", ["api", "v1", "clients", id])
        | ("POST", ["api", "v1", "clients", id, "kick"]) => match percent_decode(id) {
            Some(id) => kick(ctx, &id).await,
            None => Response::error(400, "malformed client id"),
        },
        ("GET", ["api", "v1", "subscriptions"]) => match param(&params, "client_id") {
            Some(id) => subscriptions(ctx, id).await,
            None => Response::error(400, "client_id is required"),
        },
        ("GET", ["api", "v1", "retained"]) => retained(ctx, &params),
        (
            _,
            ["metrics"]
            | ["healthz"]
            | ["api", "v1", "stats" | "listeners" | "clients" | "subscriptions" | "retained"]
            | ["api", "v1", "clients", _]
            | ["api", "v1", "clients", _, "kick"],
        ) => Response::error(405, "method not allowed"),
        _ => Response::error(404, "not found"),
    }
}

/// Asks core `to`, waiting at most `core_timeout`.
async fn ask(ctx: &AdminCtx, to: CoreId, query: Query) -> Option<Reply> {
    let (id, waiter) = ctx.core.borrow_mut().admin_ask(to, query, Instant::now());
    let answered = futures_lite::future::or(
        async {
            waiter.notify.notified().await;
            true
        },
        async {
            glommio::timer::sleep(ctx.settings.core_timeout).await;
            false
        },
    )
    .await;
    ctx.core.borrow_mut().admin_forget(id);
    if !answered {
        tracing::warn!(core = to, "admin request timed out");
    }
    let reply = waiter.reply.borrow_mut().take();
    reply
}

fn cores(ctx: &AdminCtx) -> usize {
    ctx.core.borrow().settings().cores
}

async fn client(ctx: &AdminCtx, id: &str) -> Response {
    let home = crate::mesh::home_core(id.as_bytes(), cores(ctx));
    match ask(ctx, home, Query::Client(id.into())).await {
        Some(Reply::Client(Some(info))) => Response::json(200, &info),
        Some(_) => Response::error(404, "no such client"),
        None => Response::error(504, "the client's core did not answer in time"),
    }
}

async fn subscriptions(ctx: &AdminCtx, id: &str) -> Response {
    let home = crate::mesh::home_core(id.as_bytes(), cores(ctx));
    match ask(ctx, home, Query::Client(id.into())).await {
        Some(Reply::Client(Some(info))) => Response::json(
            200,
            &serde_json::json!({
                "client_id": info.client_id,
                "subscriptions": info.subscriptions.unwrap_or_default(),
            }),
        ),
        Some(_) => Response::error(404, "no such client"),
        None => Response::error(504, "the client's core did not answer in time"),
    }
}

async fn kick(ctx: &AdminCtx, id: &str) -> Response {
    let home = crate::mesh::home_core(id.as_bytes(), cores(ctx));
    match ask(ctx, home, Query::Kick(id.into())).await {
        Some(Reply::Kicked {
            found: true,
            closed,
        }) => Response::json(
            200,
            &serde_json::json!({ "client_id": id, "disconnected": closed }),
        ),
        Some(_) => Response::error(404, "no such client"),
        None => Response::error(504, "the client's core did not answer in time"),
    }
}

fn number(params: &[(String, String)], name: &str, default: usize) -> Result<usize, Response> {
    match param(params, name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| Response::error(400, &format!("{name} must be a non-negative integer"))),
    }
}

async fn clients(ctx: &AdminCtx, params: &[(String, String)]) -> Response {
    let max = ctx.settings.max_page_size;
    let limit = match number(params, "limit", max) {
        Ok(n) => n.min(max),
        Err(r) => return r,
    };
    let offset = match number(params, "offset", 0) {
        Ok(n) => n,
        Err(r) => return r,
    };
    // Each core returns its first offset + limit clients in id order; merged here. The cost of
    // a page grows with its offset.
    let upto = offset.saturating_add(limit);
    let mut total = 0u64;
    let mut all = Vec::new();
    for c in 0..cores(ctx) {
        match ask(ctx, c as CoreId, Query::Clients { upto }).await {
            Some(Reply::Clients { total: t, first }) => {
                total += t;
                all.extend(first);
            }
            _ => return Response::error(504, "a core did not answer in time"),
        }
    }
    all.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let page: Vec<_> = all.into_iter().skip(offset).take(limit).collect();
    Response::json(
        200,
        &serde_json::json!({
            "total": total,
            "offset": offset,
            "limit": limit,
            "clients": page,
        }),
    )
}

fn retained(ctx: &AdminCtx, params: &[(String, String)]) -> Response {
    let core = ctx.core.borrow();
    if let Some(topic) = param(params, "topic") {
        if ringmq_codec::topic::validate_topic_name(topic).is_err() {
            return Response::error(400, "invalid topic name");
        }
        let (found, _) = core.admin_retained(topic, 1);
        return match found.into_iter().next() {
            Some(m) => Response::json(200, &m),
            None => Response::error(404, "no retained message on this topic"),
        };
    }
    let filter = param(params, "filter").unwrap_or("#");
    if ringmq_codec::topic::validate_filter(filter).is_err() || filter.starts_with("$share/") {
        return Response::error(400, "invalid topic filter");
    }
    let max = ctx.settings.max_page_size;
    let limit = match number(params, "limit", max) {
        Ok(n) => n.clamp(1, max),
        Err(r) => return r,
    };
    let (messages, truncated) = core.admin_retained(filter, limit);
    Response::json(
        200,
        &serde_json::json!({
            "filter": filter,
            "limit": limit,
            "truncated": truncated,
            "messages": messages,
        }),
    )
}

/// The per-core reports (core 0's own is current, the others' at most one tick old).
fn reports(ctx: &AdminCtx) -> Vec<StatsReport> {
    ctx.core.borrow().admin_reports()
}

/// One figure of a report: its name, help, Prometheus type, and how to read it.
type Figure = (
    &'static str,
    &'static str,
    &'static str,
    fn(&StatsReport) -> u64,
);

const FIGURES: &[Figure] = &[
    (
        "messages_received_total",
        "PUBLISH packets received from clients.",
        "counter",
        |r| r.stats.messages_received,
    ),
    (
        "messages_sent_total",
        "PUBLISH packets sent to clients.",
        "counter",
        |r| r.stats.messages_sent,
    ),
    (
        "messages_dropped_total",
        "Messages dropped (full queues, expiry, size).",
        "counter",
        |r| r.stats.messages_dropped,
    ),
    (
        "backpressure_episodes_total",
        "Times a connected session's queue reached limits.publisher_backpressure_percent and paused its publishers.",
        "counter",
        |r| r.stats.backpressure_episodes,
    ),
    (
        "backpressure_timeouts_total",
        "Publishers that waited limits.publisher_backpressure_max_wait_ms for a slow session and went on.",
        "counter",
        |r| r.stats.backpressure_timeouts,
    ),
    (
        "bytes_received_total",
        "Bytes read from client sockets.",
        "counter",
        |r| r.stats.bytes_received,
    ),
    (
        "bytes_sent_total",
        "Bytes written to client sockets.",
        "counter",
        |r| r.stats.bytes_sent,
    ),
    (
        "connections_total",
        "Connections accepted.",
        "counter",
        |r| r.stats.connections_total,
    ),
    (
        "protocol_errors_total",
        "Connections closed for a protocol violation.",
        "counter",
        |r| r.stats.protocol_errors,
    ),
    (
        "auth_failures_total",
        "CONNECTs refused by authentication.",
        "counter",
        |r| r.stats.auth_failed,
    ),
    (
        "clients_connected",
        "Live client connections.",
        "gauge",
        |r| r.clients_connected,
    ),
    ("sessions", "Sessions, connected or not.", "gauge", |r| {
        r.sessions
    }),
    ("subscriptions", "Subscriptions.", "gauge", |r| {
        r.subscriptions
    }),
    (
        "log_appended_bytes",
        "Position appended in the durable log, bytes.",
        "gauge",
        |r| r.log_appended_bytes,
    ),
    (
        "log_durable_bytes",
        "Position made durable in the durable log, bytes.",
        "gauge",
        |r| r.log_durable_bytes,
    ),
    (
        "connections_refused_overload_total",
        "CONNECTs refused with Server busy because memory or queues were over their overload marks.",
        "counter",
        |r| r.stats.connections_refused_overload,
    ),
    (
        "messages_queued",
        "Messages waiting in session queues beyond the in-flight windows.",
        "gauge",
        |r| r.messages_queued,
    ),
    (
        "overloaded",
        "Cores refusing new connections for overload (1 per core while it does).",
        "gauge",
        |r| r.overloaded,
    ),
];

/// The Prometheus text exposition (format 0.0.4). Broker-wide figures are `ringmq_NAME`;
/// per-core ones are `ringmq_core_NAME{core="N"}`, so that summing either never counts twice.
pub fn render_metrics(reports: &[StatsReport], uptime: Duration) -> String {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# HELP ringmq_build_info The broker's version.\n# TYPE ringmq_build_info gauge\nringmq_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        out,
        "# HELP ringmq_uptime_seconds Seconds since the broker started.\n# TYPE ringmq_uptime_seconds gauge\nringmq_uptime_seconds {}",
        uptime.as_secs()
    );
    let _ = writeln!(
        out,
        "# HELP ringmq_cores Executors (one per core).\n# TYPE ringmq_cores gauge\nringmq_cores {}",
        reports.len()
    );
    for (name, help, kind, get) in FIGURES {
        let total: u64 = reports.iter().map(get).sum();
        let _ = writeln!(
            out,
            "# HELP ringmq_{name} {help}\n# TYPE ringmq_{name} {kind}\nringmq_{name} {total}"
        );
        let _ = writeln!(
            out,
            "# HELP ringmq_core_{name} {help} Per core.\n# TYPE ringmq_core_{name} {kind}"
        );
        for (core, r) in reports.iter().enumerate() {
            let _ = writeln!(out, "ringmq_core_{name}{{core=\"{core}\"}} {}", get(r));
        }
    }
    if let Some(rss) = crate::overload::resident_bytes() {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory of the broker process.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
        );
    }
    // Every core holds the whole retained replica: core 0's count is the broker's.
    let retained = reports.first().map_or(0, |r| r.retained);
    let _ = writeln!(
        out,
        "# HELP ringmq_retained_messages Retained messages stored.\n# TYPE ringmq_retained_messages gauge\nringmq_retained_messages {retained}"
    );
    out
}

fn metrics(ctx: &AdminCtx) -> String {
    render_metrics(&reports(ctx), ctx.started.elapsed())
}

#[derive(Serialize)]
struct Figures {
    messages_received: u64,
    messages_sent: u64,
    messages_dropped: u64,
    bytes_received: u64,
    bytes_sent: u64,
    connections_total: u64,
    protocol_errors: u64,
    auth_failures: u64,
    clients_connected: u64,
    sessions: u64,
    subscriptions: u64,
    retained_messages: u64,
    log_appended_bytes: u64,
    log_durable_bytes: u64,
    connections_refused_overload: u64,
    messages_queued: u64,
    overloaded: u64,
}

impl Figures {
    fn of(r: &StatsReport) -> Self {
        Figures {
            messages_received: r.stats.messages_received,
            messages_sent: r.stats.messages_sent,
            messages_dropped: r.stats.messages_dropped,
            bytes_received: r.stats.bytes_received,
            bytes_sent: r.stats.bytes_sent,
            connections_total: r.stats.connections_total,
            protocol_errors: r.stats.protocol_errors,
            auth_failures: r.stats.auth_failed,
            clients_connected: r.clients_connected,
            sessions: r.sessions,
            subscriptions: r.subscriptions,
            retained_messages: r.retained,
            log_appended_bytes: r.log_appended_bytes,
            log_durable_bytes: r.log_durable_bytes,
            connections_refused_overload: r.stats.connections_refused_overload,
            messages_queued: r.messages_queued,
            overloaded: r.overloaded,
        }
    }
}

fn stats(ctx: &AdminCtx) -> Response {
    let reports = reports(ctx);
    let mut total = StatsReport::default();
    for r in &reports {
        let s = &mut total.stats;
        s.messages_received += r.stats.messages_received;
        s.messages_sent += r.stats.messages_sent;
        s.messages_dropped += r.stats.messages_dropped;
        s.bytes_received += r.stats.bytes_received;
        s.bytes_sent += r.stats.bytes_sent;
        s.connections_total += r.stats.connections_total;
        s.protocol_errors += r.stats.protocol_errors;
        s.auth_failed += r.stats.auth_failed;
        total.clients_connected += r.clients_connected;
        total.sessions += r.sessions;
        total.subscriptions += r.subscriptions;
        total.log_appended_bytes += r.log_appended_bytes;
        total.log_durable_bytes += r.log_durable_bytes;
        total.stats.connections_refused_overload += r.stats.connections_refused_overload;
        total.messages_queued += r.messages_queued;
        total.overloaded += r.overloaded;
    }
    total.retained = reports.first().map_or(0, |r| r.retained);
    let per_core: Vec<_> = reports
        .iter()
        .enumerate()
        .map(|(core, r)| serde_json::json!({ "core": core, "figures": Figures::of(r) }))
        .collect();
    Response::json(
        200,
        &serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": ctx.started.elapsed().as_secs(),
            "cores": reports.len(),
            "total": Figures::of(&total),
            "per_core": per_core,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(buf: &[u8], max: usize) -> Request {
        match parse_request(buf, max) {
            Parsed::Done(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn status(buf: &[u8], max: usize) -> Option<u16> {
        match parse_request(buf, max) {
            Parsed::Fail(r) => Some(r.status),
            Parsed::More => None,
            Parsed::Done(r) => panic!("{r:?}"),
        }
    }

    #[test]
    fn requests_parse_with_and_without_body() {
        let r = done(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 1024);
        assert_eq!((r.method.as_str(), r.target.as_str()), ("GET", "/metrics"));
        let r = done(
            b"POST /api/v1/clients/a/kick HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            1024,
        );
        assert_eq!(r.body, b"abc");
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab", 1024),
            None
        );
    }

    #[test]
    fn hostile_requests_are_refused() {
        assert_eq!(status(b"\x00\x01 garbage\r\n\r\n", 1024), Some(400));
        assert_eq!(
            status(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 1024),
            Some(400)
        );
        assert_eq!(
            status(
                b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                1024
            ),
            Some(400)
        );
        assert_eq!(
            status(
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                1024
            ),
            Some(400)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n", 1024),
            Some(413)
        );
        assert_eq!(
            status(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                1024
            ),
            Some(501)
        );
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(2000));
        assert_eq!(status(long.as_bytes(), 1024), Some(413));
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..40 {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(status(many.as_bytes(), 4096), Some(413));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(
            query_params("limit=5&offset=&x").unwrap(),
            vec![
                ("limit".into(), "5".into()),
                ("offset".into(), String::new()),
                ("x".into(), String::new())
            ]
        );
    }

    #[test]
    fn metrics_have_a_total_and_a_series_per_core() {
        let mut a = StatsReport::default();
        a.stats.messages_received = 3;
        a.retained = 7;
        let mut b = StatsReport::default();
        b.stats.messages_received = 4;
        b.retained = 7;
        let text = render_metrics(&[a, b], Duration::from_secs(5));
        assert!(
            text.contains("\nringmq_messages_received_total 7\n"),
            "{text}"
        );
        assert!(text.contains("ringmq_core_messages_received_total{core=\"1\"} 4\n"));
        assert!(text.contains("\nringmq_retained_messages 7\n"));
        assert!(text.contains("\nringmq_uptime_seconds 5\n"));
    }
}
