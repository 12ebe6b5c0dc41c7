//! Checks run before any executor starts, so that a machine that cannot run
//! the broker gets a message saying what is wrong and how to fix it, instead
//! of a glommio panic or a failure that only shows at `join()`.
//!
//! [`run`] does, in order:
//! 1. raises the `RLIMIT_MEMLOCK` soft limit to the hard limit;
//! 2. io_uring: reads `/proc/sys/kernel/io_uring_disabled` (a missing file is
//!    fine; 2 = disabled for everyone; 1 = only for `kernel.io_uring_group`
//!    and CAP_SYS_ADMIN), then creates and closes a 4-entry ring with
//!    `io_uring_setup` and asks the kernel (`IORING_REGISTER_PROBE`) whether
//!    it supports every operation glommio needs;
//! 3. checks the memlock soft limit against what glommio needs
//!    ([`memlock_needed_bytes`]);
//! 4. raises the `RLIMIT_NOFILE` soft limit to the hard limit and warns (in
//!    the report) when it is below what the configured connections need
//!    ([`nofile_needed`]).
//!
//! Nothing here uses glommio.

use std::fmt;
use std::io;

use crate::config::Config;

/// The soft `RLIMIT_MEMLOCK` below which glommio refuses to start an executor.
pub const GLOMMIO_MIN_MEMLOCK_BYTES: u64 = 512 * 1024;

/// glommio registers each executor's `io_memory` with this many rings (main,
/// latency, poll); each registration is charged to locked memory on its own.
pub const IO_MEMORY_REGISTRATIONS: u64 = 3;

/// File descriptors kept for things other than connections (listeners,
/// files, the standard streams).
pub const RESERVED_FDS: u64 = 64;

/// File descriptors each executor holds (three rings, eventfds, timers).
pub const FDS_PER_EXECUTOR: u64 = 8;

/// An unlimited resource limit (`RLIM_INFINITY`), as stored in [`RlimitChange`].
pub const UNLIMITED: u64 = u64::MAX;

const IO_URING_DISABLED_PATH: &str = "/proc/sys/kernel/io_uring_disabled";
const IO_URING_GROUP_PATH: &str = "/proc/sys/kernel/io_uring_group";
const NR_OPEN_PATH: &str = "/proc/sys/fs/nr_open";
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type RlimitResource = libc::c_int;

/// The io_uring operations glommio 0.9 checks for at start-up (it exits the
/// process when one is missing), by opcode.
pub const GLOMMIO_URING_OPS: &[(u8, &str)] = &[
    (0, "NOP"),
    (1, "READV"),
    (2, "WRITEV"),
    (3, "FSYNC"),
    (4, "READ_FIXED"),
    (5, "WRITE_FIXED"),
    (6, "POLL_ADD"),
    (7, "POLL_REMOVE"),
    (9, "SENDMSG"),
    (10, "RECVMSG"),
    (11, "TIMEOUT"),
    (12, "TIMEOUT_REMOVE"),
    (13, "ACCEPT"),
    (15, "LINK_TIMEOUT"),
    (16, "CONNECT"),
    (17, "FALLOCATE"),
    (18, "OPENAT"),
    (19, "CLOSE"),
    (21, "STATX"),
    (22, "READ"),
    (23, "WRITE"),
    (26, "SEND"),
    (27, "RECV"),
];

/// The value of the `kernel.io_uring_disabled` sysctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoUringSysctl {
    /// 0: every process may use io_uring.
    Enabled,
    /// 1: only members of `kernel.io_uring_group` and CAP_SYS_ADMIN may.
    GroupOnly,
    /// 2: no process may.
    Disabled,
}

/// Parses the contents of `/proc/sys/kernel/io_uring_disabled`; `None` for
/// a value this code does not know.
pub fn parse_io_uring_disabled(contents: &str) -> Option<IoUringSysctl> {
    match contents.trim() {
        "0" => Some(IoUringSysctl::Enabled),
        "1" => Some(IoUringSysctl::GroupOnly),
        "2" => Some(IoUringSysctl::Disabled),
        _ => None,
    }
}

/// Locked memory needed for `executors` executors with `io_memory_bytes`
/// each: glommio's 512 KiB floor, plus, when `charged` (the process lacks
/// CAP_IPC_LOCK, so registered buffers count against `RLIMIT_MEMLOCK`),
/// [`IO_MEMORY_REGISTRATIONS`] × the executor's io memory (as glommio rounds
/// it: to 4 KiB, at least 64 KiB) per executor.
pub fn memlock_needed_bytes(executors: usize, io_memory_bytes: u64, charged: bool) -> u64 {
    if !charged {
        return GLOMMIO_MIN_MEMLOCK_BYTES;
    }
    let io_memory = io_memory_bytes
        .saturating_add(4095)
        .saturating_div(4096)
        .saturating_mul(4096)
        .max(64 * 1024);
    IO_MEMORY_REGISTRATIONS
        .saturating_mul(io_memory)
        .saturating_mul(executors as u64)
        .saturating_add(GLOMMIO_MIN_MEMLOCK_BYTES)
}

/// File descriptors needed for `max_connections` connections on `executors`
/// executors: one per connection, plus [`RESERVED_FDS`], plus
/// [`FDS_PER_EXECUTOR`] per executor.
pub fn nofile_needed(max_connections: u64, executors: usize) -> u64 {
    max_connections
        .saturating_add(RESERVED_FDS)
        .saturating_add(FDS_PER_EXECUTOR.saturating_mul(executors as u64))
}

/// A resource limit before and after [`run`] raised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RlimitChange {
    /// The soft limit found ([`UNLIMITED`] = no limit).
    pub soft_before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

impl RlimitChange {
    /// Whether the soft limit was raised.
    pub fn raised(&self) -> bool {
        self.soft != self.soft_before
    }
}

/// What [`run`] found and changed, for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightReport {
    /// Executors that will run.
    pub executors: usize,
    /// Online CPU cores.
    pub online_cores: usize,
    /// The `features` bits the kernel reported from `io_uring_setup`.
    pub io_uring_features: u32,
    /// `RLIMIT_MEMLOCK`, in bytes.
    pub memlock: RlimitChange,
    /// Locked memory needed, in bytes (see [`memlock_needed_bytes`]).
    pub memlock_needed_bytes: u64,
    /// Whether registered buffers count against `RLIMIT_MEMLOCK` (no CAP_IPC_LOCK).
    pub memlock_charged: bool,
    /// `RLIMIT_NOFILE`.
    pub nofile: RlimitChange,
    /// File descriptors the configured connections need (see [`nofile_needed`]).
    pub nofile_needed: u64,
    /// Problems that do not stop the broker, each with its fix.
    pub warnings: Vec<String>,
}

impl PreflightReport {
    /// One line per limit that was raised, e.g.
    /// `raised RLIMIT_NOFILE soft limit from 1024 to 20000 (the hard limit)`.
    pub fn raised(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, change, bytes) in [
            ("RLIMIT_MEMLOCK", &self.memlock, true),
            ("RLIMIT_NOFILE", &self.nofile, false),
        ] {
            if change.raised() {
                let show = |v: u64| {
                    if bytes {
                        human_bytes(v)
                    } else {
                        count(v)
                    }
                };
                lines.push(format!(
                    "raised {name} soft limit from {} to {} (the hard limit)",
                    show(change.soft_before),
                    show(change.soft)
                ));
            }
        }
        lines
    }
}

/// Why the broker cannot start on this machine; the message says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreflightError {
    /// `kernel.io_uring_disabled` is 2.
    #[error(
        "io_uring is not available: kernel.io_uring_disabled = 2 disables it for every \
         process. Fix: set kernel.io_uring_disabled=0 (`sysctl -w kernel.io_uring_disabled=0`, \
         and a file in /etc/sysctl.d/ to keep it after a reboot)"
    )]
    IoUringDisabled,
    /// `kernel.io_uring_disabled` is 1 and this process may not use io_uring.
    #[error("{}", group_only_message(*group))]
    IoUringGroupOnly {
        /// `kernel.io_uring_group`, when set.
        group: Option<u32>,
    },
    /// `io_uring_setup` failed.
    #[error("{}", setup_failed_message(*errno, *sysctl))]
    IoUringSetup {
        /// The error number.
        errno: i32,
        /// `kernel.io_uring_disabled`, when readable.
        sysctl: Option<IoUringSysctl>,
    },
    /// The kernel's io_uring lacks operations glommio needs.
    #[error(
        "io_uring on this kernel is too old: it lacks {} that glommio needs. \
         Fix: run ringmq on Linux 5.8 or newer",
        missing.join(", ")
    )]
    IoUringTooOld {
        /// The missing operations (or `IORING_REGISTER_PROBE` when the kernel
        /// cannot even say).
        missing: Vec<&'static str>,
    },
    /// The locked-memory limit is below what the executors need.
    #[error("{}", memlock_message(self))]
    Memlock {
        /// The soft limit, in bytes.
        soft_bytes: u64,
        /// The hard limit, in bytes.
        hard_bytes: u64,
        /// What is needed, in bytes.
        needed_bytes: u64,
        /// Executors that would run.
        executors: usize,
        /// `runtime.io_memory_bytes`.
        io_memory_bytes: u64,
        /// Whether registered buffers count against the limit (no CAP_IPC_LOCK).
        charged: bool,
    },
    /// `getrlimit` failed.
    #[error("getrlimit({resource}) failed: {}", io::Error::from_raw_os_error(*errno))]
    Rlimit {
        /// The resource, e.g. `RLIMIT_NOFILE`.
        resource: &'static str,
        /// The error number.
        errno: i32,
    },
}

fn group_only_message(group: Option<u32>) -> String {
    let who = match group {
        Some(g) => format!("members of group {g} (kernel.io_uring_group)"),
        None => "no group (kernel.io_uring_group is -1)".to_owned(),
    };
    let join = match group {
        Some(g) => format!("run ringmq as a member of group {g}, or "),
        None => String::new(),
    };
    format!(
        "io_uring is not available to this process: kernel.io_uring_disabled = 1 allows it \
         only to processes with CAP_SYS_ADMIN and to {who}. Fix: {join}set \
         kernel.io_uring_group to a group of ringmq's user, or set \
         kernel.io_uring_disabled=0 (`sysctl -w kernel.io_uring_disabled=0`)"
    )
}

fn setup_failed_message(errno: i32, sysctl: Option<IoUringSysctl>) -> String {
    let err = io::Error::from_raw_os_error(errno);
    let sysctl_note = match sysctl {
        Some(IoUringSysctl::Enabled) => " (kernel.io_uring_disabled is 0)",
        Some(IoUringSysctl::GroupOnly) => " (kernel.io_uring_disabled is 1)",
        Some(IoUringSysctl::Disabled) => " (kernel.io_uring_disabled is 2)",
        None => "",
    };
    match errno {
        libc::ENOSYS => format!(
            "io_uring is not available: io_uring_setup failed with ENOSYS{sysctl_note}: the \
             kernel was built without io_uring (CONFIG_IO_URING) or a seccomp filter blocks it \
             (the default profiles of Docker, containerd and Podman do). Fix: run on Linux 5.8 or \
             newer with io_uring; in a container, use a seccomp profile that allows \
             io_uring_setup, io_uring_enter and io_uring_register; if the sysctl exists, set \
             kernel.io_uring_disabled=0"
        ),
        libc::EPERM | libc::EACCES => format!(
            "io_uring is not available: io_uring_setup was refused ({err}){sysctl_note}. Fix: \
             set kernel.io_uring_disabled=0 (`sysctl -w kernel.io_uring_disabled=0`); if it \
             already is 0, a seccomp filter or security module (SELinux, AppArmor, the \
             container runtime) denies io_uring and must allow it"
        ),
        libc::ENOMEM => format!(
            "io_uring is not available: io_uring_setup could not allocate a ring ({err}). On \
             kernels before 5.12 rings count against the locked-memory limit. Fix: raise it \
             (`ulimit -l`, `LimitMEMLOCK=` in the systemd unit) or free memory"
        ),
        _ => format!(
            "io_uring is not available: io_uring_setup failed: {err}{sysctl_note}. ringmq needs \
             Linux 5.8 or newer with io_uring enabled (kernel.io_uring_disabled=0)"
        ),
    }
}

fn memlock_message(e: &PreflightError) -> String {
    let PreflightError::Memlock {
        soft_bytes,
        hard_bytes,
        needed_bytes,
        executors,
        io_memory_bytes,
        charged,
    } = *e
    else {
        return String::new();
    };
    let why = if charged {
        format!(
            "glommio needs 512 KiB, plus {IO_MEMORY_REGISTRATIONS} × runtime.io_memory_bytes \
             ({}) for each of {executors} executor(s) for io_uring registered buffers, \
             because this process lacks CAP_IPC_LOCK",
            human_bytes(io_memory_bytes)
        )
    } else {
        "glommio refuses to start an executor below 512 KiB".to_owned()
    };
    let lower = if charged {
        ", or lower runtime.io_memory_bytes or cores"
    } else {
        ""
    };
    format!(
        "locked-memory limit too low: RLIMIT_MEMLOCK is {} (hard limit {}), but {} is needed: \
         {why}. Fix: raise it for the process that starts ringmq: `ulimit -l {}` (KiB) in its \
         shell, `LimitMEMLOCK={}` in its systemd unit, or a `memlock` line in \
         /etc/security/limits.conf{lower}",
        human_bytes(soft_bytes),
        human_bytes(hard_bytes),
        human_bytes(needed_bytes),
        needed_bytes.div_ceil(1024),
        needed_bytes,
    )
}

/// `1048576` → `1 MiB`, `6815744` → `6.5 MiB`, [`UNLIMITED`] → `unlimited`.
fn human_bytes(bytes: u64) -> String {
    if bytes == UNLIMITED {
        return "unlimited".to_owned();
    }
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn count(v: u64) -> String {
    if v == UNLIMITED {
        "unlimited".to_owned()
    } else {
        v.to_string()
    }
}

/// Runs every check; see the module documentation. Raises the process's
/// `RLIMIT_MEMLOCK` and `RLIMIT_NOFILE` soft limits as a side effect.
pub fn run(config: &Config) -> Result<PreflightReport, PreflightError> {
    let online_cores = crate::config::online_cores();
    let executors = config.executors_for(online_cores);
    let mut warnings = Vec::new();
    if config.cores > online_cores {
        warnings.push(format!(
            "cores = {} but only {online_cores} cores are online: executors will share cores \
             and latency will suffer. Fix: set cores = 0 (one executor per online core) or at \
             most {online_cores}",
            config.cores
        ));
    }

    // Raise memlock first: on kernels before 5.12 the probe ring counts against it.
    let memlock = raise_soft_limit(libc::RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK", None, &mut warnings)?;
    let io_uring_features = check_io_uring(&mut warnings)?;

    let charged = memlock_charged();
    let memlock_needed = memlock_needed_bytes(executors, config.runtime.io_memory_bytes, charged);
    if memlock.soft < memlock_needed {
        return Err(PreflightError::Memlock {
            soft_bytes: memlock.soft,
            hard_bytes: memlock.hard,
            needed_bytes: memlock_needed,
            executors,
            io_memory_bytes: config.runtime.io_memory_bytes,
            charged,
        });
    }

    let nr_open = read_u64(NR_OPEN_PATH);
    let nofile = raise_soft_limit(libc::RLIMIT_NOFILE, "RLIMIT_NOFILE", nr_open, &mut warnings)?;
    let connections = config.effective_max_connections();
    let needed = nofile_needed(connections, executors);
    if nofile.soft < needed {
        warnings.push(nofile_warning(nofile, connections, needed, nr_open));
    }

    Ok(PreflightReport {
        executors,
        online_cores,
        io_uring_features,
        memlock,
        memlock_needed_bytes: memlock_needed,
        memlock_charged: charged,
        nofile,
        nofile_needed: needed,
        warnings,
    })
}

fn nofile_warning(
    nofile: RlimitChange,
    connections: u64,
    needed: u64,
    nr_open: Option<u64>,
) -> String {
    let reserve = needed - connections;
    let usable = nofile.soft.saturating_sub(reserve);
    let ceiling = match nr_open {
        Some(n) if n < needed => format!(
            "; the kernel caps it at fs.nr_open = {n}: raise that first \
             (`sysctl -w fs.nr_open={}`)",
            needed.next_power_of_two()
        ),
        Some(n) => format!(" (the kernel ceiling fs.nr_open = {n} allows it)"),
        None => " (the kernel ceiling is fs.nr_open)".to_owned(),
    };
    format!(
        "file-descriptor limit below the configured connections: RLIMIT_NOFILE is {} (hard \
         limit {}), but up to {connections} connections (limits.max_connections, \
         listeners[].max_connections) need about {needed}; beyond about {usable} connections \
         accept() fails with EMFILE. Fix: raise the limit with `LimitNOFILE={needed}` in the \
         systemd unit, a `nofile` line in /etc/security/limits.conf, or `ulimit -n {needed}` \
         as root{ceiling}; or lower limits.max_connections to {usable}",
        count(nofile.soft),
        count(nofile.hard),
    )
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

#[allow(clippy::unnecessary_cast)] // rlim_t is u32 on 32-bit targets
fn rlim_to_u64(v: libc::rlim_t) -> u64 {
    if v == libc::RLIM_INFINITY {
        UNLIMITED
    } else {
        v as u64
    }
}

#[allow(clippy::unnecessary_cast)] // rlim_t is u32 on 32-bit targets
fn u64_to_rlim(v: u64) -> libc::rlim_t {
    if v == UNLIMITED {
        libc::RLIM_INFINITY
    } else {
        v as libc::rlim_t
    }
}

/// Raises a soft limit to the hard limit (for an unlimited hard limit, to
/// `cap` when given: `RLIMIT_NOFILE` cannot exceed `fs.nr_open`).
fn raise_soft_limit(
    resource: RlimitResource,
    name: &'static str,
    cap: Option<u64>,
    warnings: &mut Vec<String>,
) -> Result<RlimitChange, PreflightError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0 {
        return Err(PreflightError::Rlimit {
            resource: name,
            errno: errno(),
        });
    }
    let soft_before = rlim_to_u64(limit.rlim_cur);
    let hard = rlim_to_u64(limit.rlim_max);
    let target = match (hard, cap) {
        (UNLIMITED, Some(cap)) => cap,
        _ => hard,
    };
    let mut change = RlimitChange {
        soft_before,
        soft: soft_before,
        hard,
    };
    if soft_before < target {
        let raised = libc::rlimit {
            rlim_cur: u64_to_rlim(target),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit for the duration of the call.
        if unsafe { libc::setrlimit(resource, &raised) } == 0 {
            change.soft = target;
        } else {
            warnings.push(format!(
                "could not raise the {name} soft limit from {} to {}: {}",
                count(soft_before),
                count(target),
                io::Error::last_os_error()
            ));
        }
    }
    Ok(change)
}

fn read_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The `CapEff:` bits of `/proc/self/status`.
fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

/// Whether `/proc/self/uid_map` is the initial user namespace's identity map
/// (capabilities inside another user namespace do not count for io_uring).
fn is_initial_user_namespace(uid_map: &str) -> bool {
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

/// Whether this process holds `capability` in the initial user namespace;
/// `None` when `/proc` cannot tell.
fn has_capability(capability: u32) -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let caps = parse_cap_eff(&status)?;
    let initial = std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| is_initial_user_namespace(&m))
        .unwrap_or(true);
    Some(initial && caps & (1u64 << capability) != 0)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether io_uring registered buffers count against `RLIMIT_MEMLOCK`: they
/// do unless the process holds CAP_IPC_LOCK (read from `/proc/self/status`;
/// `geteuid() == 0` when that cannot be read).
fn memlock_charged() -> bool {
    !has_capability(CAP_IPC_LOCK).unwrap_or_else(is_root)
}

/// Whether a process may create rings under `kernel.io_uring_disabled = 1`.
fn io_uring_group_allows(group: Option<u32>, gids: &[u32], cap_sys_admin: bool) -> bool {
    cap_sys_admin || group.is_some_and(|g| gids.contains(&g))
}

/// `kernel.io_uring_group`: `None` when -1 (no group) or unreadable.
fn io_uring_group() -> Option<u32> {
    let text = std::fs::read_to_string(IO_URING_GROUP_PATH).ok()?;
    let value: i64 = text.trim().parse().ok()?;
    u32::try_from(value).ok()
}

/// The effective and supplementary group ids of this process.
fn process_gids() -> Vec<u32> {
    // SAFETY: getegid has no preconditions.
    let mut gids = vec![unsafe { libc::getegid() }];
    // SAFETY: a zero size with a null pointer only returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n > 0 {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        // SAFETY: `groups` has room for `n` gids.
        let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
        if n > 0 {
            gids.extend_from_slice(&groups[..n as usize]);
        }
    }
    gids
}

/// `struct io_uring_params` (120 bytes), zeroed for `io_uring_setup`.
#[repr(C)]
#[derive(Default)]
struct IoUringParams {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: [u32; 10],
    cq_off: [u32; 10],
}

const _: () = assert!(std::mem::size_of::<IoUringParams>() == 120);

const IORING_REGISTER_PROBE: libc::c_uint = 8;
const PROBE_OPS: usize = 256;
/// `struct io_uring_probe` (16 bytes) followed by `PROBE_OPS` 8-byte `io_uring_probe_op`s.
const PROBE_BYTES: usize = 16 + PROBE_OPS * 8;
const IO_URING_OP_SUPPORTED: u16 = 1;

/// The operations of [`GLOMMIO_URING_OPS`] that an `IORING_REGISTER_PROBE`
/// answer does not mark supported.
fn missing_ops(probe: &[u8]) -> Vec<&'static str> {
    let last_op = probe.first().copied().unwrap_or(0);
    let ops_len = probe.get(1).copied().unwrap_or(0) as usize;
    GLOMMIO_URING_OPS
        .iter()
        .filter(|&&(op, _)| {
            let i = op as usize;
            let at = 16 + i * 8;
            let supported = op <= last_op
                && i < ops_len
                && probe
                    .get(at + 2..at + 4)
                    .map(|f| u16::from_ne_bytes([f[0], f[1]]) & IO_URING_OP_SUPPORTED != 0)
                    .unwrap_or(false);
            !supported
        })
        .map(|&(_, name)| name)
        .collect()
}

/// What `io_uring_setup` and the probe said.
struct Probe {
    features: u32,
    /// The probe answer, or the errno of `IORING_REGISTER_PROBE`.
    ops: Result<Vec<u8>, i32>,
}

/// Creates a 4-entry ring, probes its operations and closes it; `Err(errno)`
/// when `io_uring_setup` fails.
fn probe_io_uring() -> Result<Probe, i32> {
    let mut params = IoUringParams::default();
    // SAFETY: io_uring_setup reads and writes one io_uring_params (120 bytes,
    // checked above) at the pointer, which is valid and exclusively borrowed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            4 as libc::c_uint,
            &mut params as *mut IoUringParams,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    let fd = fd as libc::c_int;
    // u64 storage keeps the struct aligned; the kernel fills PROBE_BYTES of it.
    let mut probe = vec![0u64; PROBE_BYTES / 8];
    // SAFETY: `fd` is the ring just created; the buffer holds an io_uring_probe
    // with room for PROBE_OPS ops, zeroed as the kernel requires.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            fd,
            IORING_REGISTER_PROBE,
            probe.as_mut_ptr(),
            PROBE_OPS as libc::c_uint,
        )
    };
    let ops = if ret < 0 {
        Err(errno())
    } else {
        Ok(probe.iter().flat_map(|w| w.to_ne_bytes()).collect())
    };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    Ok(Probe {
        features: params.features,
        ops,
    })
}

/// The io_uring check; returns the kernel's feature bits.
fn check_io_uring(warnings: &mut Vec<String>) -> Result<u32, PreflightError> {
    let sysctl = match std::fs::read_to_string(IO_URING_DISABLED_PATH) {
        Ok(text) => {
            let parsed = parse_io_uring_disabled(&text);
            if parsed.is_none() {
                warnings.push(format!(
                    "{IO_URING_DISABLED_PATH} holds {:?}, a value ringmq does not know; \
                     trying io_uring anyway",
                    text.trim()
                ));
            }
            parsed
        }
        // Kernels before 6.6 have no such sysctl: io_uring is on when built in.
        Err(_) => None,
    };
    if sysctl == Some(IoUringSysctl::Disabled) {
        return Err(PreflightError::IoUringDisabled);
    }
    // The ring itself is the authority: the group check only explains a refusal.
    let probe = match probe_io_uring() {
        Ok(probe) => probe,
        Err(errno) => {
            if sysctl == Some(IoUringSysctl::GroupOnly)
                && matches!(errno, libc::EPERM | libc::EACCES)
            {
                let group = io_uring_group();
                let cap_sys_admin = has_capability(CAP_SYS_ADMIN).unwrap_or_else(is_root);
                if !io_uring_group_allows(group, &process_gids(), cap_sys_admin) {
                    return Err(PreflightError::IoUringGroupOnly { group });
                }
            }
            return Err(PreflightError::IoUringSetup { errno, sysctl });
        }
    };
    match probe.ops {
        Ok(bytes) => {
            let missing = missing_ops(&bytes);
            if !missing.is_empty() {
                return Err(PreflightError::IoUringTooOld { missing });
            }
        }
        Err(libc::EINVAL) => {
            return Err(PreflightError::IoUringTooOld {
                missing: vec!["IORING_REGISTER_PROBE"],
            })
        }
        Err(errno) => warnings.push(format!(
            "could not probe io_uring operations: {}; glommio checks them itself at start-up",
            io::Error::from_raw_os_error(errno)
        )),
    }
    Ok(probe.features)
}

impl fmt::Display for RlimitChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.raised() {
            write!(
                f,
                "soft {} (raised from {}), hard {}",
                count(self.soft),
                count(self.soft_before),
                count(self.hard)
            )
        } else {
            write!(f, "soft {}, hard {}", count(self.soft), count(self.hard))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;

    #[test]
    fn io_uring_disabled_values() {
        assert_eq!(parse_io_uring_disabled("0\n"), Some(IoUringSysctl::Enabled));
        assert_eq!(parse_io_uring_disabled("1"), Some(IoUringSysctl::GroupOnly));
        assert_eq!(
            parse_io_uring_disabled(" 2 \n"),
            Some(IoUringSysctl::Disabled)
        );
        assert_eq!(parse_io_uring_disabled("3"), None);
        assert_eq!(parse_io_uring_disabled(""), None);
        assert_eq!(parse_io_uring_disabled("yes"), None);
    }

    #[test]
    fn group_rules_of_io_uring_disabled_1() {
        assert!(io_uring_group_allows(None, &[0], true));
        assert!(!io_uring_group_allows(None, &[0, 10], false));
        assert!(io_uring_group_allows(Some(10), &[1000, 10], false));
        assert!(!io_uring_group_allows(Some(10), &[1000, 11], false));
    }

    #[test]
    fn memlock_needs() {
        // Root / CAP_IPC_LOCK: only glommio's floor.
        assert_eq!(memlock_needed_bytes(64, MIB, false), 512 * KIB);
        // Otherwise 512 KiB + 3 × io_memory per executor.
        assert_eq!(memlock_needed_bytes(1, MIB, true), 512 * KIB + 3 * MIB);
        assert_eq!(memlock_needed_bytes(2, MIB, true), 512 * KIB + 6 * MIB);
        // The project's machines: 2 cores, 8 MiB memlock, 1 MiB io_memory fits.
        assert!(memlock_needed_bytes(2, MIB, true) <= 8 * MIB);
        assert!(memlock_needed_bytes(4, MIB, true) > 8 * MIB);
        // glommio rounds io_memory up to 4 KiB and to at least 64 KiB.
        assert_eq!(memlock_needed_bytes(1, 1, true), 512 * KIB + 3 * 64 * KIB);
        assert_eq!(
            memlock_needed_bytes(1, 100 * KIB + 1, true),
            512 * KIB + 3 * 104 * KIB
        );
        assert_eq!(memlock_needed_bytes(1, u64::MAX, true), u64::MAX);
    }

    #[test]
    fn nofile_needs() {
        assert_eq!(nofile_needed(100_000, 2), 100_000 + 64 + 16);
        assert_eq!(nofile_needed(0, 1), 72);
        assert_eq!(nofile_needed(u64::MAX, 4), u64::MAX);
    }

    #[test]
    fn capability_parsing() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        let caps = parse_cap_eff(status).unwrap();
        assert_ne!(caps & (1 << CAP_IPC_LOCK), 0);
        let none = parse_cap_eff("CapEff:\t0000000000000000\n").unwrap();
        assert_eq!(none & (1 << CAP_IPC_LOCK), 0);
        assert_eq!(parse_cap_eff("Name: x\n"), None);
        assert!(is_initial_user_namespace(
            "         0          0 4294967295\n"
        ));
        assert!(!is_initial_user_namespace(
            "         0       1000          1\n"
        ));
    }

    #[test]
    fn probe_answers() {
        let mut probe = vec![0u8; PROBE_BYTES];
        probe[0] = 57; // last_op
        probe[1] = 58; // ops_len
        for op in 0..58usize {
            probe[16 + op * 8] = op as u8;
            probe[16 + op * 8 + 2..16 + op * 8 + 4]
                .copy_from_slice(&IO_URING_OP_SUPPORTED.to_ne_bytes());
        }
        assert!(missing_ops(&probe).is_empty());
        // RECV (27) unsupported.
        probe[16 + 27 * 8 + 2..16 + 27 * 8 + 4].copy_from_slice(&0u16.to_ne_bytes());
        assert_eq!(missing_ops(&probe), vec!["RECV"]);
        // A 5.5-era kernel knowing opcodes up to 23 only.
        probe[0] = 23;
        probe[1] = 24;
        assert_eq!(missing_ops(&probe), vec!["SEND", "RECV"]);
        // An empty answer: everything is missing.
        assert_eq!(missing_ops(&[]).len(), GLOMMIO_URING_OPS.len());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(512 * KIB), "512 KiB");
        assert_eq!(human_bytes(6 * MIB + 512 * KIB), "6.5 MiB");
        assert_eq!(human_bytes(UNLIMITED), "unlimited");
    }

    #[test]
    fn error_messages_say_what_to_do() {
        let disabled = PreflightError::IoUringDisabled.to_string();
        assert!(disabled.contains("io_uring is not available"), "{disabled}");
        assert!(
            disabled.contains("kernel.io_uring_disabled=0"),
            "{disabled}"
        );

        for errno in [libc::ENOSYS, libc::EPERM] {
            let m = PreflightError::IoUringSetup {
                errno,
                sysctl: Some(IoUringSysctl::Enabled),
            }
            .to_string();
            assert!(m.starts_with("io_uring is not available"), "{m}");
            assert!(m.contains("kernel.io_uring_disabled=0"), "{m}");
        }
        let seccomp = PreflightError::IoUringSetup {
            errno: libc::ENOSYS,
            sysctl: None,
        }
        .to_string();
        assert!(seccomp.contains("seccomp"), "{seccomp}");

        let group = PreflightError::IoUringGroupOnly { group: Some(42) }.to_string();
        assert!(group.contains("group 42"), "{group}");
        assert!(group.contains("kernel.io_uring_disabled=0"), "{group}");

        let old = PreflightError::IoUringTooOld {
            missing: vec!["SEND", "RECV"],
        }
        .to_string();
        assert!(old.contains("SEND, RECV") && old.contains("5.8"), "{old}");

        let memlock = PreflightError::Memlock {
            soft_bytes: 64 * KIB,
            hard_bytes: 64 * KIB,
            needed_bytes: memlock_needed_bytes(2, MIB, true),
            executors: 2,
            io_memory_bytes: MIB,
            charged: true,
        }
        .to_string();
        for needle in [
            "RLIMIT_MEMLOCK is 64 KiB",
            "6.5 MiB is needed",
            "ulimit -l 6656",
            "LimitMEMLOCK=6815744",
            "runtime.io_memory_bytes",
            "CAP_IPC_LOCK",
        ] {
            assert!(memlock.contains(needle), "{needle:?} not in {memlock}");
        }
        let root = PreflightError::Memlock {
            soft_bytes: 64 * KIB,
            hard_bytes: 64 * KIB,
            needed_bytes: 512 * KIB,
            executors: 2,
            io_memory_bytes: MIB,
            charged: false,
        }
        .to_string();
        assert!(
            root.contains("ulimit -l 512") && root.contains("LimitMEMLOCK="),
            "{root}"
        );
    }

    #[test]
    fn nofile_warning_says_what_to_do() {
        let change = RlimitChange {
            soft_before: 1024,
            soft: 20_000,
            hard: 20_000,
        };
        let w = nofile_warning(change, 100_000, nofile_needed(100_000, 2), Some(1_048_576));
        for needle in [
            "RLIMIT_NOFILE is 20000",
            "100080",
            "LimitNOFILE=100080",
            "fs.nr_open",
            "limits.max_connections to 19920",
        ] {
            assert!(w.contains(needle), "{needle:?} not in {w}");
        }
        let w = nofile_warning(
            change,
            2_000_000,
            nofile_needed(2_000_000, 2),
            Some(1_048_576),
        );
        assert!(w.contains("sysctl -w fs.nr_open="), "{w}");
    }

    #[test]
    fn report_lists_raised_limits() {
        let report = PreflightReport {
            executors: 2,
            online_cores: 2,
            io_uring_features: 0,
            memlock: RlimitChange {
                soft_before: 8 * MIB,
                soft: 8 * MIB,
                hard: 8 * MIB,
            },
            memlock_needed_bytes: 512 * KIB,
            memlock_charged: false,
            nofile: RlimitChange {
                soft_before: 1024,
                soft: 20_000,
                hard: 20_000,
            },
            nofile_needed: 100_080,
            warnings: vec![],
        };
        assert_eq!(
            report.raised(),
            vec!["raised RLIMIT_NOFILE soft limit from 1024 to 20000 (the hard limit)"]
        );
        assert_eq!(
            report.nofile.to_string(),
            "soft 20000 (raised from 1024), hard 20000"
        );
        assert_eq!(report.memlock.to_string(), "soft 8388608, hard 8388608");
    }

    /// The real checks on this machine: they pass, or fail with a message
    /// that names io_uring or the locked-memory limit.
    #[test]
    fn run_on_this_machine() {
        let config = Config::default();
        match run(&config) {
            Ok(report) => {
                assert_eq!(report.executors, config.executors());
                assert!(report.memlock.soft >= report.memlock_needed_bytes);
                assert!(report.nofile.soft >= report.nofile.soft_before);
                if report.nofile.soft < report.nofile_needed {
                    assert!(report.warnings.iter().any(|w| w.contains("LimitNOFILE=")));
                }
            }
            Err(e) => {
                let m = e.to_string();
                assert!(
                    m.contains("io_uring") || m.contains("RLIMIT_MEMLOCK"),
                    "{m}"
                );
            }
        }
    }
}
