//! The `ringmq` binary: parse the command line, load and check the configuration, run the
//! preflight checks, install the logger, and run the broker.

use std::process::ExitCode;

use ringmq::cli::{self, Command};
use ringmq::config::{Config, LogFormat, DEFAULT_CONFIG_TOML};
use ringmq::runtime::{self, RuntimeSettings};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn install_logger(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `init` also routes the `log` crate (glommio's warnings) into tracing.
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn load(options: &cli::Options) -> Result<Config, String> {
    options.load_config().map_err(|e| e.to_string())
}

/// Reads the password, ACL and JWT key files the configuration names; the error names the key,
/// the file and the line.
fn load_auth_files(config: &Config) -> Result<ringmq::auth::AuthFiles, String> {
    let settings = config.auth.settings(config.allow_anonymous);
    ringmq::auth::AuthFiles::load(&settings)
        .map_err(|e| format!("{}: {e}", settings.key_of_file(&e.file)))
}

/// Reads the certificates and keys of the TLS listeners; the error names the key and the file.
fn load_tls(config: &Config) -> Result<Vec<Option<ringmq::tls::TlsMaterial>>, String> {
    config
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.tls
                .as_ref()
                .map(|tls| ringmq::tls::TlsMaterial::load(&format!("listeners[{i}]"), tls))
                .transpose()
        })
        .collect()
}

/// Reads a password from the terminal (echo off, asked twice) or the first line of stdin.
fn read_password() -> Result<String, String> {
    use std::io::BufRead as _;
    use std::io::IsTerminal as _;
    let stdin = std::io::stdin();
    let read_line = || -> Result<String, String> {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password: {e}"))?;
        Ok(line.trim_end_matches(['\n', '\r']).to_owned())
    };
    if !stdin.is_terminal() {
        return read_line();
    }
    // SAFETY: termios calls on our own stdin descriptor with a zeroed, then filled, struct.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let echo_off = unsafe { libc::tcgetattr(0, &mut saved) } == 0 && {
        let mut t = saved;
        t.c_lflag &= !libc::ECHO;
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) == 0 }
    };
    let result = (|| {
        eprint!("Password: ");
        let first = read_line()?;
        eprint!("\nReenter password: ");
        let second = read_line()?;
        eprintln!();
        if first != second {
            return Err("passwords do not match".to_owned());
        }
        Ok(first)
    })();
    if echo_off {
        // SAFETY: restores the attributes read above.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
    }
    result
}

fn passwd(args: cli::PasswdArgs) -> ExitCode {
    use ringmq::auth::passwd::{update_file, FileChange};
    let change = if args.delete {
        FileChange::Delete
    } else {
        let password = match args.password {
            Some(p) => p,
            None => match read_password() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("ringmq passwd: {e}");
                    return ExitCode::from(1);
                }
            },
        };
        FileChange::Set {
            password,
            create: args.create,
        }
    };
    let done = if args.scram {
        use ringmq::auth::scram;
        let iterations = args.iterations.unwrap_or(scram::DEFAULT_ITERATIONS);
        scram::update_file(&args.file, &args.user, &change, iterations)
    } else {
        update_file(&args.file, &args.user, &change)
    };
    match done {
        Ok(done) => {
            eprintln!("ringmq passwd: {done}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringmq passwd: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    // No transparent huge pages for this process: the allocator asks for them on its arenas,
    // and every fault of a 2 MiB page zeroes all of it. With queues that grow and shrink, that
    // zeroing was a quarter of the broker's CPU when queueing messages for offline sessions
    // (bench/RESULTS.md); 4 KiB pages cost a little TLB reach instead.
    // SAFETY: prctl with integer arguments only; it affects this process's memory policy.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    let command = match cli::parse_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringmq: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            println!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("ringmq {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG_TOML}");
            ExitCode::SUCCESS
        }
        Command::Passwd(args) => passwd(args),
        Command::CheckConfig(options) => {
            match load(&options)
                .and_then(|c| load_auth_files(&c).map(|_| c))
                .and_then(|c| load_tls(&c).map(|_| c))
            {
                Ok(config) => {
                    println!("{}", config.to_toml_string());
                    eprintln!("ringmq: configuration is valid");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ringmq: invalid configuration: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Run(options) => {
            let config = match load(&options) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("ringmq: invalid configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            install_logger(&config);
            match ringmq::preflight::run(&config) {
                Ok(report) => {
                    for line in report.raised() {
                        tracing::info!("{line}");
                    }
                    for warning in &report.warnings {
                        tracing::warn!("{warning}");
                    }
                }
                Err(e) => {
                    eprintln!("ringmq: cannot start: {e}");
                    return ExitCode::from(1);
                }
            }
            let auth_files = match load_auth_files(&config) {
                Ok(files) => files,
                Err(e) => {
                    eprintln!("ringmq: cannot start: {e}");
                    return ExitCode::from(1);
                }
            };
            if !config.allow_anonymous && !config.auth.checks_credentials() {
                tracing::warn!(
                    "allow_anonymous = false without auth.password_file, [auth.jwt] or \
                     [auth.http]: any user name is accepted without a password check"
                );
            }
            let tls = match load_tls(&config) {
                Ok(tls) => tls,
                Err(e) => {
                    eprintln!("ringmq: cannot start: {e}");
                    return ExitCode::from(1);
                }
            };
            let mut settings = RuntimeSettings::from_config(&config);
            settings.auth_files = auth_files;
            for (listener, tls) in settings.listeners.iter_mut().zip(tls) {
                listener.tls = tls;
            }
            tracing::info!(
                cores = settings.core.cores,
                "ringmq {} starting",
                env!("CARGO_PKG_VERSION")
            );
            match runtime::run(settings) {
                Ok(()) => {
                    tracing::info!("ringmq stopped");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ringmq: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
