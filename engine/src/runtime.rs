//! The seam between the broker and glommio: executors pinned one per core, listeners, the
//! cross-core mesh, timers and signals. Everything glommio-specific lives here and in
//! `connection.rs`, so that the broker logic (`broker.rs`, `session.rs`) does not depend on it.
//!
//! Cross-core queues: `ringmq-ring` channels, bounded lock-free single-producer single-consumer
//! rings (crossbeam's `ArrayQueue` plus atomic wakers, model-checked with loom). One per ordered
//! core pair makes the N×N mesh. A glommio task woken from another thread is queued on its own
//! executor, which rings its eventfd: that is the cross-core wake-up. Unlike glommio's shared
//! channels, nothing has to be "connected" in a particular order at start-up.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::broker::{Core, CoreSettings};
use crate::connection::{self, ConnCtx};
use crate::mesh::MeshMsg;
use crate::message::CoreId;
use crate::transport::ListenerTransport;
use ringmq_ring::{Receiver, Sender, TrySendError};

/// Set by SIGINT/SIGTERM.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SHUTDOWN.store(true, Ordering::Relaxed);
}

/// Incremented by SIGHUP; each core's ticker compares it with the value it last saw and then
/// reloads its own copy of the password and ACL files (cores share no mutable state).
static RELOAD: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_reload_signal(_: libc::c_int) {
    RELOAD.fetch_add(1, Ordering::Relaxed);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        libc::signal(
            libc::SIGHUP,
            on_reload_signal as *const () as libc::sighandler_t,
        );
    }
}

/// Everything a core needs to start, built by the caller.
pub struct RuntimeSettings {
    /// Broker settings per core.
    pub core: CoreSettings,
    /// The listeners.
    pub listeners: Vec<ListenerSettings>,
    /// io_uring registered memory per executor.
    pub io_memory_bytes: usize,
    /// Per read call.
    pub read_buffer_bytes: usize,
    /// Largest read (busy connections).
    pub read_buffer_max_bytes: usize,
    /// `limits.max_connection_rate_per_second` (0: none).
    pub max_connection_rate_per_second: u32,
    /// `limits.max_client_bytes_per_second` (0: none).
    pub max_client_bytes_per_second: u64,
    /// `limits.max_client_messages_per_second` (0: none).
    pub max_client_messages_per_second: u32,
    /// Between accept and CONNECT.
    pub connect_timeout: Duration,
    /// Largest packet accepted.
    pub max_packet_size_bytes: u32,
    /// For the TLS handshake and the WebSocket upgrade.
    pub handshake_timeout: Duration,
    /// Largest WebSocket upgrade request.
    pub max_websocket_handshake_bytes: usize,
    /// TCP_NODELAY on accepted sockets.
    pub tcp_nodelay: bool,
    /// Pause after EMFILE/ENFILE on accept.
    pub accept_backoff: Duration,
    /// Mesh queue capacity per core pair.
    pub cross_core_queue_capacity: usize,
    /// `$SYS` interval (zero: off).
    pub sys_interval: Duration,
    /// Durable sessions (`None`: memory only).
    pub storage: Option<crate::persist::StorageSettings>,
    /// Authentication and authorization settings.
    pub auth: crate::auth::AuthSettings,
    /// The password and ACL files as loaded at start-up (each core reloads its own on SIGHUP).
    pub auth_files: crate::auth::AuthFiles,
    /// The admin HTTP listener (`None`: off); it runs on core 0.
    pub admin: Option<crate::admin::AdminSettings>,
}

/// One listener: where, and what runs over its connections.
pub struct ListenerSettings {
    /// Listening address.
    pub addr: SocketAddr,
    /// `listen(2)` backlog.
    pub backlog: i32,
    /// TLS certificates and keys, loaded by the caller (`None`: no TLS, or not loaded yet:
    /// a listener whose `tls` is set but not loaded is refused by [`run`]).
    pub tls: Option<crate::tls::TlsMaterial>,
    /// Its configuration.
    pub config: crate::config::ListenerConfig,
}

fn bind(addr: SocketAddr, backlog: i32) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

fn owned(socket: socket2::Socket) -> OwnedFd {
    // SAFETY: the socket gives up its descriptor, which the OwnedFd now owns.
    unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) }
}

/// Binds every listener once per core (SO_REUSEPORT: the kernel spreads connections over the
/// cores). A port of 0 is resolved by the first bind and reused by the others.
fn bind_all(
    settings: &RuntimeSettings,
    cores: usize,
) -> std::io::Result<(Vec<SocketAddr>, Vec<Vec<OwnedFd>>)> {
    let mut per_core: Vec<Vec<OwnedFd>> = (0..cores).map(|_| Vec::new()).collect();
    let mut bound = Vec::new();
    for listener in &settings.listeners {
        let (addr, backlog) = (listener.addr, listener.backlog);
        let first = bind(addr, backlog)?;
        let actual = first.local_addr()?.as_socket().unwrap_or(addr);
        bound.push(actual);
        per_core[0].push(owned(first));
        for fds in per_core.iter_mut().skip(1) {
            fds.push(owned(bind(actual, backlog)?));
        }
    }
    Ok((bound, per_core))
}

/// Errors that stop the broker.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not be bound.
    #[error("cannot listen: {0}")]
    Bind(std::io::Error),
    /// A TLS listener without its certificates.
    #[error("{0}")]
    Tls(String),
    /// The data directory could not be opened or recovered.
    #[error("storage: {0}")]
    Storage(#[from] crate::persist::OpenError),
    /// An executor could not start or failed.
    #[error("executor on core {core}: {message}")]
    Executor {
        /// The core.
        core: usize,
        /// What happened.
        message: String,
    },
}

/// Runs the broker until SIGINT or SIGTERM.
pub fn run(settings: RuntimeSettings) -> Result<(), RunError> {
    install_signal_handlers();
    let cores = settings.core.cores;
    for (i, l) in settings.listeners.iter().enumerate() {
        if l.config.tls.is_some() && l.tls.is_none() {
            return Err(RunError::Tls(format!(
                "listeners[{i}].tls: certificate and key not loaded"
            )));
        }
    }
    // Recovery reads every core's log before any executor runs: the broker accepts no client
    // before its durable state is back.
    let started = Instant::now();
    let (_data_dir, mut recovered, retained) = match &settings.storage {
        Some(s) => {
            let (dir, logs, retained) = crate::persist::open_and_recover(s, cores)?;
            tracing::info!(
                data_dir = %s.data_dir.display(),
                ms = started.elapsed().as_millis() as u64,
                retained = retained.len(),
                "durable state recovered"
            );
            (Some(dir), logs.into_iter().map(Some).collect(), retained)
        }
        None => (
            None,
            (0..cores).map(|_| None).collect::<Vec<_>>(),
            Vec::new(),
        ),
    };
    let retained = Arc::new(retained);
    let (bound, mut fds) = bind_all(&settings, cores).map_err(RunError::Bind)?;
    let announce = |bound: &[SocketAddr], settings: &RuntimeSettings| {
        for (addr, listener) in bound.iter().zip(&settings.listeners) {
            // Tests and operators read this line to learn the port (plain TCP: no suffix).
            let kind = listener.config.transport_name();
            let path = listener
                .config
                .websocket
                .as_ref()
                .map(|w| w.path.as_str())
                .unwrap_or("");
            tracing::info!(transport = kind, "listening on {addr}{path}");
            if kind == "tcp" {
                println!("ringmq listening on {addr}");
            } else {
                println!(
                    "ringmq listening on {addr} ({kind}{})",
                    if path.is_empty() {
                        String::new()
                    } else {
                        format!(" {path}")
                    }
                );
            }
        }
    };
    let mut admin = admin_listener(&settings, &bound);
    // mesh[from][to]
    let mut senders: Vec<Vec<Option<Sender<MeshMsg>>>> = (0..cores)
        .map(|_| (0..cores).map(|_| None).collect())
        .collect();
    let mut receivers: Vec<Vec<Option<Receiver<MeshMsg>>>> = (0..cores)
        .map(|_| (0..cores).map(|_| None).collect())
        .collect();
    for (from, row) in senders.iter_mut().enumerate() {
        for (to, slot) in row.iter_mut().enumerate() {
            if from != to {
                let (tx, rx) = ringmq_ring::channel(settings.cross_core_queue_capacity);
                *slot = Some(tx);
                receivers[to][from] = Some(rx);
            }
        }
    }
    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    let settings = Arc::new(settings);
    let mut handles = Vec::new();
    // Each core says when it has restored its sessions; the listening line (which clients and
    // tests wait for) comes only when every core serves.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    for (core, ((tx, rx), fds)) in senders
        .into_iter()
        .zip(receivers)
        .zip(fds.drain(..))
        .enumerate()
    {
        let settings = settings.clone();
        let log = recovered[core].take();
        let retained = retained.clone();
        let ready = ready_tx.clone();
        let admin = if core == 0 { admin.take() } else { None };
        let builder = LocalExecutorBuilder::new(Placement::Fixed(core % online))
            .name(&format!("ringmq-core-{core}"))
            .io_memory(settings.io_memory_bytes);
        let handle = builder
            .spawn(move || {
                let start = CoreStart {
                    log,
                    retained,
                    ready,
                    admin,
                };
                core_main(core as CoreId, settings, tx, rx, fds, start)
            })
            .map_err(|e| RunError::Executor {
                core,
                message: e.to_string(),
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    // An executor that fails to start drops its sender: stop waiting and report it below.
    if (0..cores).all(|_| ready_rx.recv().is_ok()) {
        announce(&bound, &settings);
    }
    let mut result = Ok(());
    for (core, h) in handles.into_iter().enumerate() {
        if let Err(e) = h.join() {
            result = Err(RunError::Executor {
                core,
                message: e.to_string(),
            });
        }
    }
    result
}

/// What a core starts from besides its sockets: its recovered log, the retained messages of
/// every core's log, where to say that it is ready, and (core 0) the admin listener.
struct CoreStart {
    log: Option<(ringmq_storage::Log, crate::persist::Recovered)>,
    retained: Arc<Vec<crate::persist::RecoveredRetained>>,
    ready: std::sync::mpsc::Sender<()>,
    admin: Option<(OwnedFd, Arc<Vec<crate::admin::ListenerInfo>>)>,
}

/// Binds the admin listener, if configured. Failing to bind it is logged and does not stop the
/// broker: MQTT service comes first.
fn admin_listener(
    settings: &RuntimeSettings,
    bound: &[SocketAddr],
) -> Option<(OwnedFd, Arc<Vec<crate::admin::ListenerInfo>>)> {
    let a = settings.admin.as_ref()?;
    let socket = match crate::admin::bind(a.addr) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(addr = %a.addr, "admin listener not started: {e}");
            return None;
        }
    };
    let addr = socket.local_addr().ok()?.as_socket().unwrap_or(a.addr);
    tracing::info!("admin listening on {addr}");
    // Tests and operators read this line to learn the port.
    println!("ringmq admin listening on {addr}");
    let listeners = bound
        .iter()
        .zip(&settings.listeners)
        .map(|(&addr, l)| crate::admin::ListenerInfo {
            addr,
            transport: l.config.transport_name(),
            path: l.config.websocket.as_ref().map(|w| w.path.clone()),
            max_connections: l.config.max_connections,
            backlog: u32::try_from(l.backlog).unwrap_or(0),
        })
        .collect();
    Some((owned(socket), Arc::new(listeners)))
}

async fn core_main(
    id: CoreId,
    settings: Arc<RuntimeSettings>,
    senders: Vec<Option<Sender<MeshMsg>>>,
    receivers: Vec<Option<Receiver<MeshMsg>>>,
    listeners: Vec<OwnedFd>,
    start: CoreStart,
) {
    let CoreStart {
        log,
        retained,
        ready,
        admin,
    } = start;
    let core = Rc::new(RefCell::new(Core::new(id, settings.core.clone())));
    core.borrow_mut().auth =
        crate::auth::Auth::new(settings.auth.clone(), settings.auth_files.clone());
    let mut flusher = None;
    if let (Some((log, rec)), Some(storage)) = (log, &settings.storage) {
        {
            let started = Instant::now();
            let (sessions, messages) = (rec.sessions.len(), rec.messages.len());
            let mut c = core.borrow_mut();
            c.set_store(crate::persist::store_from(log, &rec));
            c.restore(rec, &retained, Instant::now());
            tracing::info!(
                core = id,
                sessions,
                messages,
                ms = started.elapsed().as_millis() as u64,
                "sessions restored"
            );
        }
        let mut cfg = storage.log.clone();
        cfg.dir = crate::persist::core_dir(&storage.data_dir, usize::from(id));
        let f = ringmq_storage::Flusher::new(ringmq_storage::GlommioFs, &cfg);
        flusher = Some(glommio::spawn_local(flush_loop(core.clone(), f)));
        glommio::spawn_local(compactor(core.clone())).detach();
    }
    drop(retained);
    if core.borrow().overload.samples_memory() {
        // A first sample before any client is accepted, then one every interval.
        sample_memory(&core);
        glommio::spawn_local(memory_sampler(core.clone())).detach();
    }
    // Restored: this core may be announced (the accept loops below start right away).
    let _ = ready.send(());
    let ctx = Rc::new(ConnCtx {
        core: core.clone(),
        read_buffer_bytes: settings.read_buffer_bytes,
        read_buffer_max_bytes: settings.read_buffer_max_bytes,
        max_client_bytes_per_second: settings.max_client_bytes_per_second,
        max_client_messages_per_second: settings.max_client_messages_per_second,
        max_packet_size_bytes: settings.max_packet_size_bytes,
        connect_timeout: settings.connect_timeout,
        tcp_nodelay: settings.tcp_nodelay,
        handshake_timeout: settings.handshake_timeout,
        max_websocket_handshake_bytes: settings.max_websocket_handshake_bytes,
    });
    for (to, tx) in senders.into_iter().enumerate() {
        if let Some(tx) = tx {
            glommio::spawn_local(mesh_sender(core.clone(), to, tx)).detach();
        }
    }
    for (from, rx) in receivers.into_iter().enumerate() {
        if let Some(rx) = rx {
            glommio::spawn_local(mesh_receiver(ctx.clone(), from as CoreId, rx)).detach();
        }
    }
    let mut accept_tasks = Vec::new();
    for (fd, listener) in listeners.into_iter().zip(&settings.listeners) {
        // Each core builds its own TLS configuration (its own session cache: no shared lock).
        let tls = match listener.tls.as_ref().map(|m| m.server_config()).transpose() {
            Ok(tls) => tls,
            Err(e) => {
                tracing::error!(core = id, addr = %listener.addr, "TLS listener not started: {e:?}");
                continue;
            }
        };
        let transport = Rc::new(ListenerTransport {
            tls,
            use_identity_as_username: listener
                .config
                .tls
                .as_ref()
                .is_some_and(|t| t.use_identity_as_username),
            websocket_path: listener.config.websocket.as_ref().map(|w| w.path.clone()),
            name: listener.config.transport_name(),
        });
        // SAFETY: a listening socket we own, handed over whole.
        let socket = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
        // The listener's connection rate, shared evenly by the cores (at least 1/s each).
        let rate =
            u64::from(settings.max_connection_rate_per_second).div_ceil(settings.core.cores as u64);
        let limit = crate::ratelimit::TokenBucket::optional(rate, Instant::now());
        accept_tasks.push(glommio::spawn_local(accept_loop(
            socket,
            ctx.clone(),
            transport,
            settings.accept_backoff,
            limit,
        )));
    }
    glommio::spawn_local(retained_pump(core.clone())).detach();
    if let (Some((fd, listeners)), Some(a)) = (admin, &settings.admin) {
        // SAFETY: a listening socket we own, handed over whole.
        let socket = unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) };
        let ctx = Rc::new(crate::admin::AdminCtx {
            core: core.clone(),
            settings: a.clone(),
            listeners,
            started: Instant::now(),
        });
        glommio::spawn_local(crate::admin::serve(socket, ctx)).detach();
    }
    ticker(&core, id, &settings).await;
    for t in accept_tasks {
        t.cancel().await;
    }
    core.borrow_mut().shutdown();
    // Let writers send their DISCONNECT (0x8B) and close.
    glommio::timer::sleep(SHUTDOWN_GRACE).await;
    if let Some(f) = flusher {
        // The flusher writes what is pending, then stops (SHUTDOWN is set).
        if let Some(store) = core.borrow_mut().store_mut() {
            store.flush_notify.notify();
        }
        f.await;
    }
}

/// Compacts the log in small steps (see `Store::compact_step`), going back to the reactor
/// between them so that connections are served while a segment is evacuated.
async fn compactor(core: Rc<RefCell<Core>>) {
    use crate::persist::CompactStep;
    loop {
        glommio::timer::sleep(TICK).await;
        loop {
            let step = core.borrow_mut().compact(Instant::now());
            match step {
                CompactStep::Idle => break,
                CompactStep::More | CompactStep::Retired => {
                    glommio::executor().yield_task_queue_now().await
                }
            }
        }
        if core.borrow().is_stopped() {
            return;
        }
    }
}

/// Writes the log's batches (group commit: everything appended while one batch is written goes
/// into the next) and tells the core how far it is durable.
async fn flush_loop(
    core: Rc<RefCell<Core>>,
    mut flusher: ringmq_storage::Flusher<ringmq_storage::GlommioFs>,
) {
    let Some(notify) = core
        .borrow_mut()
        .store_mut()
        .map(|s| s.flush_notify.clone())
    else {
        return;
    };
    loop {
        let (batch, deadline) = {
            let mut c = core.borrow_mut();
            let Some(store) = c.store_mut() else { return };
            let batch = store.log_mut().take_batch(Instant::now());
            (batch, store.log().next_flush_deadline())
        };
        match batch {
            Some(batch) => {
                let result = flusher.run_batch(batch).await;
                let now = Instant::now();
                let mut c = core.borrow_mut();
                if let Some(store) = c.store_mut() {
                    store.log_mut().complete(result);
                }
                c.on_durable(now);
            }
            None if core.borrow().is_stopped() => return,
            None => match deadline {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    futures_lite::future::or(notify.notified(), glommio::timer::sleep(wait)).await;
                }
                None => notify.notified().await,
            },
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Rc<ConnCtx>,
    transport: Rc<ListenerTransport>,
    backoff: Duration,
    mut limit: Option<crate::ratelimit::TokenBucket>,
) {
    let mut refused: u64 = 0;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if let Some(bucket) = limit.as_mut() {
                    if !bucket.try_take(Instant::now()) {
                        // Over limits.max_connection_rate_per_second: closed before any work.
                        refused += 1;
                        if refused.is_power_of_two() {
                            tracing::warn!(
                                refused,
                                "connections refused: over limits.max_connection_rate_per_second"
                            );
                        }
                        drop(stream);
                        continue;
                    }
                }
                glommio::spawn_local(connection::accepted(stream, ctx.clone(), transport.clone()))
                    .detach();
            }
            Err(e) => {
                let raw = match &e {
                    glommio::GlommioError::IoError(io) => io.raw_os_error(),
                    _ => None,
                };
                if matches!(
                    raw,
                    Some(libc::EMFILE)
                        | Some(libc::ENFILE)
                        | Some(libc::ENOBUFS)
                        | Some(libc::ENOMEM)
                ) {
                    tracing::warn!(error = %e, "accept failed: out of descriptors or memory; backing off");
                    glommio::timer::sleep(backoff).await;
                } else {
                    tracing::debug!(error = %e, "accept failed");
                }
            }
        }
    }
}

async fn mesh_sender(core: Rc<RefCell<Core>>, to: usize, tx: Sender<MeshMsg>) {
    let notify = core.borrow().mesh_notify[to].clone();
    loop {
        notify.notified().await;
        loop {
            let msg = core.borrow_mut().mesh_out[to].pop_front();
            let Some(msg) = msg else { break };
            match tx.try_send(msg) {
                Ok(()) => {}
                // Full: wait for the peer (readers on this core pause meanwhile).
                Err(TrySendError::Full(msg)) => {
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                Err(TrySendError::Closed(_)) => return, // the peer core has stopped
            }
        }
    }
}

async fn mesh_receiver(ctx: Rc<ConnCtx>, from: CoreId, rx: Receiver<MeshMsg>) {
    while let Some(first) = rx.recv().await {
        // Take what is waiting in one go: one borrow of the core per batch.
        let mut handoffs = Vec::new();
        {
            let now = Instant::now();
            let mut core = ctx.core.borrow_mut();
            let mut next = Some(first);
            while let Some(msg) = next {
                handoffs.extend(core.on_mesh(msg, now));
                next = rx.try_recv();
            }
            core.after_mesh_batch(from);
        }
        for h in handoffs {
            glommio::spawn_local(connection::handed_over(h, ctx.clone())).detach();
        }
    }
}

/// Reads the process's resident memory into this core's overload state (`overload.rs`).
fn sample_memory(core: &Rc<RefCell<Core>>) {
    if let Some(rss) = crate::overload::resident_bytes() {
        core.borrow_mut().overload.sample_memory(rss);
    }
}

/// Samples resident memory every [`crate::overload::MEMORY_SAMPLE_INTERVAL`] for
/// `limits.overload_memory_bytes`. Each core samples for itself: the figure is the process's,
/// and cores share no mutable state, not even this one.
async fn memory_sampler(core: Rc<RefCell<Core>>) {
    while !core.borrow().is_stopped() {
        glommio::timer::sleep(crate::overload::MEMORY_SAMPLE_INTERVAL).await;
        sample_memory(&core);
    }
}

/// Runs pending retained-message deliveries one slice per loop turn, so a wildcard subscribe
/// against a huge store never stalls the core.
async fn retained_pump(core: Rc<RefCell<Core>>) {
    use crate::broker::ScanProgress;
    let notify = core.borrow().scan_notify.clone();
    loop {
        notify.notified().await;
        loop {
            let progress = core.borrow_mut().continue_retained_scans(Instant::now());
            match progress {
                ScanProgress::Done => break,
                ScanProgress::Advanced => futures_lite::future::yield_now().await,
                ScanProgress::Stalled => {
                    glommio::timer::sleep(crate::connection::RETRY_PAUSE).await
                }
            }
        }
    }
}

/// Period of the per-core housekeeping: timers (will delay, session expiry), counters to core 0.
const TICK: Duration = Duration::from_millis(100);

/// Time given to connection writers to send their DISCONNECT 0x8B before an executor exits.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

async fn ticker(core: &Rc<RefCell<Core>>, id: CoreId, settings: &RuntimeSettings) {
    let started = Instant::now();
    let mut next_sys = started + settings.sys_interval;
    let mut reloads_seen = RELOAD.load(Ordering::Relaxed);
    while !SHUTDOWN.load(Ordering::Relaxed) {
        glommio::timer::sleep(TICK).await;
        let now = Instant::now();
        let mut c = core.borrow_mut();
        let reloads = RELOAD.load(Ordering::Relaxed);
        if reloads != reloads_seen {
            reloads_seen = reloads;
            // Small files read on the core's thread, once per SIGHUP.
            match c.auth.reload() {
                Ok(()) => tracing::info!(core = id, "SIGHUP: password and ACL files reloaded"),
                Err(e) => tracing::error!(
                    core = id,
                    "SIGHUP: reload failed, the previous rules stay in force: {e}"
                ),
            }
        }
        c.fire_timers(now);
        // Counters travel to core 0 over the mesh like everything else: no shared state.
        c.report_stats(0);
        if id == 0 && !settings.sys_interval.is_zero() && now >= next_sys {
            next_sys = now + settings.sys_interval;
            c.publish_sys_topics(now - started, now);
        }
    }
}

impl RuntimeSettings {
    /// Derives the settings of every part from a validated configuration.
    pub fn from_config(config: &crate::config::Config) -> Self {
        use crate::broker::ShareStrategy;
        use crate::config::SharedSubscriptionStrategy as S;
        let l = &config.limits;
        let r = &config.runtime;
        let cores = config.executors();
        let sat = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        let session = crate::session::SessionLimits {
            max_inflight_messages: l.max_inflight_messages,
            max_queued_messages: l.max_queued_messages as usize,
            max_queued_bytes: sat(l.max_queued_bytes),
            write_buffer_high_water_bytes: sat(r.write_buffer_high_water_bytes),
            max_topic_alias: l.max_topic_alias,
        };
        let core = CoreSettings {
            cores,
            session: session.clone(),
            max_packet_size_bytes: l.max_packet_size_bytes,
            max_keep_alive_secs: l.max_keep_alive_secs,
            session_expiry_max_secs: l.session_expiry_max_secs,
            message_expiry_max_secs: l.message_expiry_max_secs,
            max_topic_levels: l.max_topic_levels as usize,
            max_topic_length_bytes: usize::from(l.max_topic_length_bytes),
            max_subscriptions_per_client: l.max_subscriptions_per_client as usize,
            retained_messages_max: sat(l.retained_messages_max),
            retained_scan_budget_messages: (l.retained_scan_budget_messages as usize).max(1),
            max_client_id_length_bytes: usize::from(l.max_client_id_length_bytes),
            allow_anonymous: config.allow_anonymous,
            share_strategy: match config.shared_subscriptions.strategy {
                S::RoundRobin => ShareStrategy::RoundRobin,
                S::Random => ShareStrategy::Random,
                S::HashClientId => ShareStrategy::HashClientId,
                S::Sticky => ShareStrategy::Sticky,
            },
            shared_subscriptions_enabled: config.shared_subscriptions.enabled,
            maximum_qos: match l.max_qos {
                0 => ringmq_codec::QoS::AtMostOnce,
                1 => ringmq_codec::QoS::AtLeastOnce,
                _ => ringmq_codec::QoS::ExactlyOnce,
            },
            retain_available: l.retain_available,
            backpressure: crate::broker::Backpressure::new(
                l.publisher_backpressure_percent,
                &session,
                Duration::from_millis(l.publisher_backpressure_max_wait_ms),
                l.publisher_backpressure_max_publishers as usize,
            ),
            max_connections_per_core: sat(config
                .effective_max_connections()
                .div_ceil(cores as u64)),
            cross_core_queue_capacity: r.cross_core_queue_capacity as usize,
            cross_core_window_messages: u64::from(r.cross_core_window_messages),
            overload: crate::overload::OverloadLimits {
                memory_bytes: l.overload_memory_bytes,
                queued_messages: l.overload_queued_messages,
                resume_percent: l.overload_resume_percent,
            },
        };
        Self {
            core,
            listeners: config
                .listeners
                .iter()
                .map(|l| ListenerSettings {
                    addr: l.bind,
                    backlog: i32::try_from(l.backlog).unwrap_or(i32::MAX),
                    tls: None,
                    config: l.clone(),
                })
                .collect(),
            io_memory_bytes: sat(r.io_memory_bytes),
            read_buffer_bytes: r.read_buffer_bytes as usize,
            read_buffer_max_bytes: r.read_buffer_max_bytes as usize,
            max_connection_rate_per_second: l.max_connection_rate_per_second,
            max_client_bytes_per_second: l.max_client_bytes_per_second,
            max_client_messages_per_second: l.max_client_messages_per_second,
            connect_timeout: Duration::from_millis(l.connect_timeout_ms),
            max_packet_size_bytes: l.max_packet_size_bytes,
            handshake_timeout: Duration::from_millis(l.handshake_timeout_ms),
            max_websocket_handshake_bytes: l.max_websocket_handshake_bytes as usize,
            tcp_nodelay: r.tcp_nodelay,
            accept_backoff: Duration::from_millis(r.accept_backoff_ms),
            cross_core_queue_capacity: r.cross_core_queue_capacity as usize,
            sys_interval: Duration::from_secs(u64::from(config.sys.interval_secs)),
            storage: config.storage.enabled.then(|| {
                let st = &config.storage;
                let mut log = ringmq_storage::LogConfig::new(&st.data_dir);
                log.segment_size_bytes = st.segment_size_bytes;
                log.max_disk_bytes = st.max_disk_bytes / cores.max(1) as u64;
                log.max_pending_bytes = sat(st.max_pending_bytes);
                log.fsync = match st.fsync_policy() {
                    crate::config::Fsync::Always => ringmq_storage::FsyncPolicy::Always,
                    crate::config::Fsync::Never => ringmq_storage::FsyncPolicy::Never,
                    crate::config::Fsync::EveryMs(n) => ringmq_storage::FsyncPolicy::EveryMs(n),
                };
                crate::persist::StorageSettings {
                    data_dir: st.data_dir.clone(),
                    log,
                }
            }),
            auth: config.auth.settings(config.allow_anonymous),
            auth_files: crate::auth::AuthFiles::default(),
            admin: crate::admin::AdminSettings::from_config(&config.admin),
        }
    }
}
