//! The HTTP authentication hook: the broker POSTs the client's credentials as JSON to a
//! configured URL and the answer decides (the EMQX habit):
//!
//! | answer | verdict |
//! |---|---|
//! | 2xx, empty body | allow |
//! | 2xx, `{"result": "allow"}` / `"deny"` / `"ignore"` | that |
//! | 4xx | deny |
//! | 5xx, any other status or body, timeout, connection error | unavailable (refused) |
//!
//! Plain `http://` only, to an IP address (no name is resolved on the connection path); meant
//! for a local or otherwise trusted service. One connection per question, `Connection: close`.
//!
//! Answers (not failures) are cached per core in a [`VerdictCache`] for a configured time,
//! keyed on a salted SHA-256 of everything the request says, so a changed password, client id
//! or address asks again. Everything here is pure except [`ask`], the glommio exchange.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The longest path (with query) accepted in `auth.http.url`.
pub const MAX_URL_PATH_BYTES: usize = 1024;

/// Headers read from an answer; more is an error.
const MAX_RESPONSE_HEADERS: usize = 32;

/// Least time between two logs of hook failures on one core; the ones in between are counted
/// and the count is logged with the next.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Where the hook is: from `auth.http.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookUrl {
    /// Address and port to connect to.
    pub addr: SocketAddr,
    /// The `Host` header: the URL's authority.
    pub host: String,
    /// The request target: path and query.
    pub path: String,
}

/// Parses `http://ADDRESS[:PORT][/PATH]`, where ADDRESS is an IPv4 address, a bracketed IPv6
/// address or `localhost` (127.0.0.1). Returns what is wrong.
pub fn parse_url(url: &str) -> Result<HookUrl, String> {
    let expected = "expected http://ADDRESS[:PORT]/PATH, e.g. \"http://127.0.0.1:8080/mqtt/auth\"";
    let Some(rest) = url.strip_prefix("http://") else {
        if url.starts_with("https://") {
            return Err("https is not supported: use http to a local or trusted address".into());
        }
        return Err(format!("{url:?}: {expected}"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if path.len() > MAX_URL_PATH_BYTES
        || !path.bytes().all(|b| b.is_ascii_graphic())
        || path.contains('#')
    {
        return Err(format!(
            "the path must be visible ASCII without '#', at most {MAX_URL_PATH_BYTES} bytes"
        ));
    }
    if authority.contains('@') {
        return Err("user information in the URL is not supported".into());
    }
    let (host, port) = split_port(authority).ok_or_else(|| format!("{url:?}: {expected}"))?;
    let ip: IpAddr = if host == "localhost" {
        Ipv4Addr::LOCALHOST.into()
    } else if let Some(v6) = host.strip_prefix('[') {
        v6.strip_suffix(']')
            .and_then(|v6| v6.parse().ok())
            .ok_or_else(|| format!("{host:?} is not an IPv6 address"))?
    } else {
        host.parse().map_err(|_| {
            format!(
                "the host must be an IP address or localhost (names are not resolved), \
                 got {host:?}"
            )
        })?
    };
    Ok(HookUrl {
        addr: SocketAddr::new(ip, port),
        host: authority.to_owned(),
        path: path.to_owned(),
    })
}

fn split_port(authority: &str) -> Option<(&str, u16)> {
    let colon = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => Some(i),
        _ => None,
    };
    match colon {
        Some(i) => {
            let port: u16 = authority[i + 1..].parse().ok()?;
            (port != 0 && !authority[..i].is_empty()).then(|| (&authority[..i], port))
        }
        None => (!authority.is_empty()).then_some((authority, 80)),
    }
}

/// The hook's settings (from `[auth.http]`, already validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSettings {
    /// Where to ask.
    pub url: HookUrl,
    /// Time for the whole exchange: connect, request, answer.
    pub timeout: Duration,
    /// Largest answer read (status line, headers and body).
    pub max_response_bytes: usize,
    /// How long an answer is reused (zero: never).
    pub cache_ttl: Duration,
    /// Answers cached per core; the oldest goes first.
    pub cache_max_entries: usize,
    /// Questions in flight per core; beyond, clients are refused as unavailable.
    pub max_pending_requests: usize,
}

/// What the hook said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAnswer {
    /// Let the client in.
    Allow,
    /// Refuse it (bad credentials).
    Deny,
    /// No opinion: the next method decides.
    Ignore,
}

/// Why the hook gave no answer.
#[derive(Debug)]
pub enum HookError {
    /// No complete answer within the timeout.
    Timeout,
    /// Connecting, writing or reading failed.
    Io(std::io::Error),
    /// A 5xx status.
    ServerError(u16),
    /// A status other than 2xx, 4xx or 5xx.
    UnexpectedStatus(u16),
    /// Larger than `max_response_bytes`.
    TooLarge,
    /// Not HTTP/1.x, or a 2xx body that is neither empty nor `{"result": ...}`.
    Malformed(&'static str),
}

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HookError::Timeout => write!(f, "no answer within auth.http.timeout_ms"),
            HookError::Io(e) => write!(f, "{e}"),
            HookError::ServerError(s) => write!(f, "status {s}"),
            HookError::UnexpectedStatus(s) => write!(f, "unexpected status {s}"),
            HookError::TooLarge => write!(f, "answer larger than auth.http.max_response_bytes"),
            HookError::Malformed(what) => write!(f, "malformed answer: {what}"),
        }
    }
}

/// What the hook is told about a client.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The client identifier.
    pub client_id: &'a str,
    /// The user name.
    pub username: Option<&'a str>,
    /// The password (UTF-8: other passwords are not sent).
    pub password: Option<&'a str>,
    /// The client's address.
    pub peer: IpAddr,
    /// The MQTT protocol level: 3 (3.1), 4 (3.1.1) or 5.
    pub protocol: u8,
}

impl Credentials<'_> {
    /// The JSON body of the request.
    pub fn json(&self) -> Vec<u8> {
        serde_json::json!({
            "clientid": self.client_id,
            "username": self.username,
            "password": self.password,
            "peerhost": self.peer.to_string(),
            "protocol": self.protocol,
        })
        .to_string()
        .into_bytes()
    }
}

/// The whole HTTP request for `credentials`.
pub fn request(url: &HookUrl, credentials: &Credentials<'_>) -> Vec<u8> {
    let body = credentials.json();
    let mut out = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\nUser-Agent: ringmq\r\n\r\n",
        url.path,
        url.host,
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Reads an answer from the bytes received so far. `Ok(None)`: more bytes are needed;
/// `complete`: the peer closed, nothing more will come.
pub fn parse_response(buf: &[u8], complete: bool) -> Result<Option<HookAnswer>, HookError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let header_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if !complete => return Ok(None),
        Ok(httparse::Status::Partial) => return Err(HookError::Malformed("truncated header")),
        Err(_) => return Err(HookError::Malformed("not an HTTP/1.x response")),
    };
    let status = response.code.unwrap_or(0);
    match status {
        200..=299 => {}
        // The body does not matter: no need to wait for it.
        400..=499 => return Ok(Some(HookAnswer::Deny)),
        500..=599 => return Err(HookError::ServerError(status)),
        _ => return Err(HookError::UnexpectedStatus(status)),
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let rest = &buf[header_len..];
    let chunked = header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().windows(7).any(|w| w == b"chunked"));
    let body = if status == 204 {
        Some(Vec::new())
    } else if chunked {
        dechunk(rest)?
    } else if let Some(length) = header("content-length") {
        let length: usize = std::str::from_utf8(length)
            .ok()
            .and_then(|l| l.trim().parse().ok())
            .ok_or(HookError::Malformed("Content-Length"))?;
        (rest.len() >= length).then(|| rest[..length].to_vec())
    } else {
        // Delimited by the end of the connection.
        complete.then(|| rest.to_vec())
    };
    match body {
        Some(body) => verdict(&body).map(Some),
        None if complete => Err(HookError::Malformed("truncated body")),
        None => Ok(None),
    }
}

/// The body of a chunked message, or `None` if it is not complete yet.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, HookError> {
    let mut body = Vec::new();
    loop {
        let (start, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(HookError::Malformed("chunk size")),
        };
        let size = usize::try_from(size).map_err(|_| HookError::TooLarge)?;
        if size == 0 {
            // Trailers are not read: the body is complete.
            return Ok(Some(body));
        }
        let data = &rest[start..];
        if data.len() < size.saturating_add(2) {
            return Ok(None);
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err(HookError::Malformed("chunk end"));
        }
        body.extend_from_slice(&data[..size]);
        rest = &data[size + 2..];
    }
}

/// The verdict of a 2xx body: empty (or white space) allows; else `{"result": ...}`.
fn verdict(body: &[u8]) -> Result<HookAnswer, HookError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(HookAnswer::Allow);
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| HookError::Malformed("body is not JSON"))?;
    match value.get("result").and_then(|r| r.as_str()) {
        Some("allow") => Ok(HookAnswer::Allow),
        Some("deny") => Ok(HookAnswer::Deny),
        Some("ignore") => Ok(HookAnswer::Ignore),
        _ => Err(HookError::Malformed(
            "result is not \"allow\", \"deny\" or \"ignore\"",
        )),
    }
}

/// Asks the hook: connects, sends `request`, reads the answer, all within `hook.timeout`.
/// Runs on the calling core's executor; never blocks it.
pub async fn ask(hook: &HookSettings, request: &[u8]) -> Result<HookAnswer, HookError> {
    let exchange = async { Ok(exchange(hook, request).await) };
    match glommio::timer::timeout(hook.timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(HookError::Timeout),
    }
}

async fn exchange(hook: &HookSettings, request: &[u8]) -> Result<HookAnswer, HookError> {
    use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = glommio::net::TcpStream::connect(hook.url.addr)
        .await
        .map_err(|e| HookError::Io(e.into()))?;
    let _ = stream.set_nodelay(true);
    stream.write_all(request).await.map_err(HookError::Io)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(HookError::Io)?;
        if buf.len() + n > hook.max_response_bytes {
            return Err(HookError::TooLarge);
        }
        buf.extend_from_slice(&chunk[..n]);
        if n == 0 {
            // The peer closed: the answer is whole or never will be.
            return parse_response(&buf, true)?.ok_or(HookError::Malformed("truncated"));
        }
        if let Some(answer) = parse_response(&buf, false)? {
            return Ok(answer);
        }
    }
}

/// Answers of the hook, reused for a while: a bounded table per core. Entries expire after the
/// TTL; when full, the oldest goes. Keys are salted SHA-256 digests, so the table holds no
/// password and costs the same per entry whatever the credentials' size.
#[derive(Debug)]
pub struct VerdictCache {
    ttl: Duration,
    max_entries: usize,
    salt: [u8; 16],
    entries: HashMap<[u8; 32], (HookAnswer, Instant)>,
    /// Keys in insertion order with their expiry: the front expires first (one TTL for all).
    order: VecDeque<([u8; 32], Instant)>,
}

impl VerdictCache {
    /// An empty cache; a zero `ttl` caches nothing.
    pub fn new(ttl: Duration, max_entries: usize) -> VerdictCache {
        let mut salt = [0u8; 16];
        // Without randomness the salt stays zero: the keys are still digests.
        let _ = getrandom::getrandom(&mut salt);
        VerdictCache {
            ttl,
            max_entries: max_entries.max(1),
            salt,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The key of a request: every field the hook is told, the password included.
    pub fn key(&self, c: &Credentials<'_>) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        let mut field = |bytes: Option<&[u8]>| match bytes {
            None => h.update([0]),
            Some(b) => {
                h.update([1]);
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
        };
        field(Some(c.client_id.as_bytes()));
        field(c.username.map(str::as_bytes));
        field(c.password.map(str::as_bytes));
        field(Some(c.peer.to_string().as_bytes()));
        field(Some(&[c.protocol]));
        h.finalize().into()
    }

    /// The cached answer for `key`, if it has not expired.
    pub fn get(&mut self, key: &[u8; 32], now: Instant) -> Option<HookAnswer> {
        self.expire(now);
        match self.entries.get(key) {
            Some(&(answer, expiry)) if now < expiry => Some(answer),
            _ => None,
        }
    }

    /// Remembers `answer` for `key` until `now + ttl`.
    pub fn put(&mut self, key: [u8; 32], answer: HookAnswer, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        self.expire(now);
        while self.order.len() >= self.max_entries {
            self.pop_oldest();
        }
        let expiry = now + self.ttl;
        self.entries.insert(key, (answer, expiry));
        self.order.push_back((key, expiry));
        debug_assert!(self.entries.len() <= self.order.len());
        debug_assert!(self.order.len() <= self.max_entries);
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|&(_, expiry)| expiry <= now) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((key, expiry)) = self.order.pop_front() {
            // The key may have been stored again later: only its own entry goes.
            if self.entries.get(&key).is_some_and(|&(_, e)| e == expiry) {
                self.entries.remove(&key);
            }
        }
    }
}

/// Logs at most once per [`FAILURE_LOG_INTERVAL`]; counts what it did not log.
#[derive(Debug, Default)]
pub struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(n)`: log now, `n` events were not logged since the last log.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < FAILURE_LOG_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8080/mqtt/auth?x=1").unwrap();
        assert_eq!(u.addr, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(
            (u.host.as_str(), u.path.as_str()),
            ("127.0.0.1:8080", "/mqtt/auth?x=1")
        );
        let u = parse_url("http://localhost").unwrap();
        assert_eq!(u.addr, "127.0.0.1:80".parse::<SocketAddr>().unwrap());
        assert_eq!(u.path, "/");
        let u = parse_url("http://[::1]:9000/a").unwrap();
        assert_eq!(u.addr, "[::1]:9000".parse::<SocketAddr>().unwrap());
        let u = parse_url("http://[::1]/a").unwrap();
        assert_eq!(u.addr, "[::1]:80".parse::<SocketAddr>().unwrap());
        for (bad, needle) in [
            ("https://127.0.0.1/", "https is not supported"),
            ("127.0.0.1:80/", "expected http://"),
            ("ftp://x/", "expected http://"),
            ("http://auth.example.com/x", "names are not resolved"),
            ("http://127.0.0.1:0/", "expected http://"),
            ("http://127.0.0.1:99999/", "expected http://"),
            ("http://:80/", "expected http://"),
            ("http:///x", "expected http://"),
            ("http://u:p@127.0.0.1/", "user information"),
            ("http://[::1/", "not an IPv6"),
            ("http://127.0.0.1/a b", "visible ASCII"),
            ("http://127.0.0.1/a#b", "visible ASCII"),
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        assert!(parse_url(&format!(
            "http://127.0.0.1/{}",
            "a".repeat(MAX_URL_PATH_BYTES)
        ))
        .is_err());
    }

    #[test]
    fn requests_carry_the_credentials_as_json() {
        let url = parse_url("http://127.0.0.1:8080/auth").unwrap();
        let c = Credentials {
            client_id: "dev\"1",
            username: Some("alice"),
            password: Some("pw"),
            peer: "10.0.0.9".parse().unwrap(),
            protocol: 5,
        };
        let r = String::from_utf8(request(&url, &c)).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("POST /auth HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"clientid": "dev\"1", "username": "alice", "password": "pw",
                               "peerhost": "10.0.0.9", "protocol": 5})
        );
    }

    fn parse(text: &str) -> Result<Option<HookAnswer>, HookError> {
        parse_response(text.as_bytes(), false)
    }

    #[test]
    fn answers() {
        use HookAnswer::*;
        let ok = |t: &str| parse(t).unwrap();
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            Some(Allow)
        );
        assert_eq!(ok("HTTP/1.1 204 No Content\r\n\r\n"), Some(Allow));
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\n{\"result\": \"allow\"}"),
            Some(Allow)
        );
        assert_eq!(
            ok("HTTP/1.0 200 OK\r\ncontent-length: 17\r\n\r\n{\"result\":\"deny\"}"),
            Some(Deny)
        );
        assert_eq!(
            ok("HTTP/1.1 201 Created\r\nContent-Length: 19\r\n\r\n{\"result\":\"ignore\"}"),
            Some(Ignore)
        );
        assert_eq!(
            ok("HTTP/1.1 401 Unauthorized\r\n\r\n"),
            Some(Deny),
            "4xx: the body does not matter"
        );
        assert_eq!(
            ok("HTTP/1.1 403 Forbidden\r\nContent-Length: 100\r\n\r\n"),
            Some(Deny)
        );
        // Chunked.
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                       5\r\n{\"res\r\n0c\r\nult\":\"deny\"}\r\n0\r\n\r\n";
        assert_eq!(ok(chunked), Some(Deny));
        for cut in 0..chunked.len() - 5 {
            assert!(
                matches!(parse(&chunked[..cut]), Ok(None)),
                "a prefix of {cut} bytes needs more"
            );
        }
        // Without a length, the end of the connection ends the body.
        let open = "HTTP/1.1 200 OK\r\n\r\n{\"result\":\"allow\"}";
        assert_eq!(ok(open), None);
        assert_eq!(parse_response(open.as_bytes(), true).unwrap(), Some(Allow));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n", true).unwrap(),
            Some(Allow)
        );
        // Need more.
        assert_eq!(ok("HTTP/1.1 200 OK\r\nContent-Le"), None);
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\n{\"res"),
            None
        );
    }

    #[test]
    fn failures() {
        let err = |t: &str, complete: bool| parse_response(t.as_bytes(), complete).unwrap_err();
        assert!(matches!(
            err("HTTP/1.1 500 Oops\r\n\r\n", false),
            HookError::ServerError(500)
        ));
        assert!(matches!(
            err("HTTP/1.1 503 Busy\r\n\r\n", false),
            HookError::ServerError(503)
        ));
        assert!(matches!(
            err("HTTP/1.1 302 Found\r\n\r\n", false),
            HookError::UnexpectedStatus(302)
        ));
        assert!(matches!(
            err("SSH-2.0-OpenSSH\r\n\r\n", false),
            HookError::Malformed(_)
        ));
        assert!(matches!(
            err("HTTP/1.1 200 OK\r\nContent-Le", true),
            HookError::Malformed(_)
        ));
        for body in [
            "yes",
            "{\"result\":\"maybe\"}",
            "{\"result\":true}",
            "{}",
            "[\"allow\"]",
        ] {
            let t = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            assert!(matches!(err(&t, false), HookError::Malformed(_)), "{body}");
        }
        assert!(matches!(
            err("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            HookError::Malformed("Content-Length")
        ));
        assert!(matches!(
            err("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", true),
            HookError::Malformed("truncated body")
        ));
        assert!(matches!(
            err(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false
            ),
            HookError::Malformed("chunk size")
        ));
        assert!(matches!(
            err(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}xx0\r\n\r\n",
                false
            ),
            HookError::Malformed("chunk end")
        ));
        let many: String = (0..MAX_RESPONSE_HEADERS + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        assert!(matches!(
            err(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false),
            HookError::Malformed(_)
        ));
        // Arbitrary bytes never panic.
        const ALPHABET: &[u8] = b"HTTP/1.1 200\r\n:chunkedContent-Length0123456789{}\"result\" ";
        let mut seed = 7u64;
        for _ in 0..2000 {
            let len = (seed % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ALPHABET[(seed >> 33) as usize % ALPHABET.len()]
                })
                .collect();
            let _ = parse_response(&bytes, seed & 1 == 0);
        }
    }

    #[test]
    fn a_closed_connection_always_gets_a_verdict_or_an_error() {
        for whole in [
            "HTTP/1.1 200 OK\r\nContent-Length: 19\r\n\r\n{\"result\": \"allow\"}",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n{\"result\":\"deny\"}",
            "HTTP/1.1 403 Forbidden\r\n\r\n",
        ] {
            for cut in 0..=whole.len() {
                let r = parse_response(&whole.as_bytes()[..cut], true);
                assert!(!matches!(r, Ok(None)), "{cut} bytes of {whole:?}");
            }
        }
    }

    /// A loopback server that reads the request, then writes `reply` in pieces of `piece`
    /// bytes and closes (or, for `None`, waits without answering).
    fn server(reply: Option<Vec<u8>>, piece: usize) -> HookUrl {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = parse_url(&format!("http://{}/auth", listener.local_addr().unwrap())).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.read(&mut [0u8; 4096]);
            match reply {
                Some(reply) => {
                    for part in reply.chunks(piece) {
                        let _ = s.write_all(part);
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
                None => std::thread::sleep(Duration::from_secs(2)),
            }
        });
        url
    }

    #[test]
    fn ask_over_a_real_socket() {
        let settings = |url: HookUrl| HookSettings {
            url,
            timeout: Duration::from_millis(300),
            max_response_bytes: 256,
            cache_ttl: Duration::ZERO,
            cache_max_entries: 1,
            max_pending_requests: 1,
        };
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let ask_ = |reply: Option<&str>, piece: usize| {
                let hook = settings(server(reply.map(|r| r.as_bytes().to_vec()), piece));
                async move {
                    let request = request(&hook.url, &creds("pw"));
                    ask(&hook, &request).await
                }
            };
            let slow = "HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n{\"result\":\"allow\"}";
            assert_eq!(ask_(Some(slow), 3).await.unwrap(), HookAnswer::Allow);
            let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "x".repeat(300));
            assert!(matches!(
                ask_(Some(&big), 64).await,
                Err(HookError::TooLarge)
            ));
            let cut = "HTTP/1.1 200 OK\r\nContent-Length: 18\r\n\r\n{\"res";
            assert!(matches!(
                ask_(Some(cut), 64).await,
                Err(HookError::Malformed(_))
            ));
            let started = Instant::now();
            assert!(matches!(ask_(None, 1).await, Err(HookError::Timeout)));
            assert!(started.elapsed() < Duration::from_secs(2));
        });
    }

    fn creds(password: &str) -> Credentials<'_> {
        Credentials {
            client_id: "c",
            username: Some("u"),
            password: Some(password),
            peer: "127.0.0.1".parse().unwrap(),
            protocol: 4,
        }
    }

    #[test]
    fn cache_keys_change_with_every_field() {
        let cache = VerdictCache::new(Duration::from_secs(1), 10);
        let base = creds("p");
        let k = cache.key(&base);
        assert_eq!(k, cache.key(&creds("p")));
        for other in [
            Credentials {
                password: Some("q"),
                ..base
            },
            Credentials {
                password: None,
                ..base
            },
            Credentials {
                username: None,
                ..base
            },
            Credentials {
                username: Some("uc"),
                client_id: "",
                ..base
            },
            Credentials {
                client_id: "d",
                ..base
            },
            Credentials {
                peer: "127.0.0.2".parse().unwrap(),
                ..base
            },
            Credentials {
                protocol: 5,
                ..base
            },
        ] {
            assert_ne!(k, cache.key(&other), "{other:?}");
        }
        let another = VerdictCache::new(Duration::from_secs(1), 10);
        assert_ne!(k, another.key(&base), "salted per cache");
    }

    #[test]
    fn cache_entries_expire_and_are_bounded() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let mut cache = VerdictCache::new(ttl, 3);
        let keys: Vec<[u8; 32]> = (0..5).map(|i| cache.key(&creds(&i.to_string()))).collect();
        cache.put(keys[0], HookAnswer::Allow, t0);
        assert_eq!(
            cache.get(&keys[0], t0 + Duration::from_secs(9)),
            Some(HookAnswer::Allow)
        );
        assert_eq!(cache.get(&keys[0], t0 + ttl), None, "expired at the TTL");
        assert!(cache.is_empty());
        // Bounded: the fourth entry pushes out the first.
        for (i, k) in keys[..4].iter().enumerate() {
            cache.put(*k, HookAnswer::Deny, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(cache.len(), 3);
        let now = t0 + Duration::from_secs(1);
        assert_eq!(cache.get(&keys[0], now), None);
        for k in &keys[1..4] {
            assert_eq!(cache.get(k, now), Some(HookAnswer::Deny));
        }
        let later = t0 + Duration::from_secs(12);
        assert_eq!(cache.get(&keys[1], later), None);
        assert!(cache.is_empty());
        // Storing a key again renews it; its old slot expiring does not remove it.
        let mut renewed = VerdictCache::new(ttl, 10);
        renewed.put(keys[4], HookAnswer::Deny, t0);
        renewed.put(keys[4], HookAnswer::Allow, t0 + Duration::from_secs(5));
        assert_eq!(renewed.get(&keys[4], later), Some(HookAnswer::Allow));
        assert_eq!(renewed.get(&keys[4], t0 + Duration::from_secs(15)), None);
        // Many puts stay within the bound.
        for i in 0..1000u64 {
            let k = cache.key(&creds(&format!("x{i}")));
            cache.put(k, HookAnswer::Ignore, later + Duration::from_millis(i));
            assert!(cache.len() <= 3 && cache.order.len() <= 3);
        }
        // A zero TTL caches nothing.
        let mut off = VerdictCache::new(Duration::ZERO, 3);
        off.put(keys[0], HookAnswer::Allow, t0);
        assert_eq!(off.get(&keys[0], t0), None);
    }

    #[test]
    fn failure_logs_are_spaced() {
        let t0 = Instant::now();
        let mut l = LogLimiter::default();
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(l.allow(t0 + FAILURE_LOG_INTERVAL), Some(2));
        assert_eq!(l.allow(t0 + FAILURE_LOG_INTERVAL), None);
    }
}
