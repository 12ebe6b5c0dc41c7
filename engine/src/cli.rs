//! The command line, parsed by hand:
//!
//! ```text
//! ringmq [--config PATH] [--listen ADDR:PORT]... [--cores N] [--log-level L]
//!        [--data-dir PATH] [--print-default-config] [--help] [--version]
//! ringmq check-config [--config PATH] [--listen ADDR:PORT]... [--cores N] [--log-level L]
//! ringmq passwd [--scram [--iterations N]] [-c | -D] [-b] FILE USER [PASSWORD]
//! ```
//!
//! Values may also be written `--flag=VALUE`. `-h` and `-V` are short for
//! `--help` and `--version`. `--help` wins over everything else, then
//! `--version`, then `--print-default-config`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{self, Config, ConfigError, ListenerConfig};

/// `ringmq` and its version, as printed by `--version`.
pub const VERSION: &str = concat!("ringmq ", env!("CARGO_PKG_VERSION"));

/// The text printed by `--help`.
pub const USAGE: &str = "\
ringmq: an MQTT 3.1/3.1.1/5.0 broker (thread-per-core, io_uring)

Usage:
  ringmq [OPTIONS]                  run the broker
  ringmq check-config [OPTIONS]     load and check the configuration, print it, exit
  ringmq --print-default-config     print the commented default configuration, exit
  ringmq passwd [-c | -D] FILE USER             add a user or change their password
                                                (read from the terminal or stdin)
  ringmq passwd [-c] -b FILE USER PASSWORD      the same, the password as an argument
      -c  create FILE (replacing it)   -D  delete USER
      Writes mosquitto_passwd's format ($7$, PBKDF2-SHA512, 101 iterations); replaces
      FILE atomically; SIGHUP makes a running broker read it again.
      --scram  write FILE as an auth.scram_file instead: SCRAM-SHA-256 credentials for
               MQTT 5 enhanced authentication, in PostgreSQL's format
      --iterations N  PBKDF2 iterations of a --scram line (4096..=10000000; default 4096)

Options:
  --config PATH          TOML configuration file (without it: built-in defaults)
  --listen ADDR:PORT     listen on this TCP address, e.g. 0.0.0.0:1883 or [::]:1883;
                         repeat for several; replaces the file's [[listeners]]
  --cores N              executors to run, 0 = one per online core (overrides `cores`)
  --log-level LEVEL      trace, debug, info, warn, error, off, or a filter such as
                         \"info,ringmq::session=debug\" (overrides `log.level`)
  --data-dir PATH        directory of the durable-session logs (overrides
                         `storage.data_dir`; default ./ringmq-data)
  --admin-listen ADDR:PORT  run the admin HTTP listener (metrics, API) on this address
                         (overrides `admin.bind` and sets `admin.enabled`)
  --print-default-config print the commented default configuration and exit
  -h, --help             print this help and exit
  -V, --version          print the version and exit

A value may also be given as --flag=VALUE.
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the broker with these overrides.
    Run(Options),
    /// Print [`config::DEFAULT_CONFIG_TOML`] and exit.
    PrintDefaultConfig,
    /// Load and validate the configuration, then exit.
    CheckConfig(Options),
    /// Print [`USAGE`] and exit.
    Help,
    /// Print [`VERSION`] and exit.
    Version,
    /// Edit a password file.
    Passwd(PasswdArgs),
}

/// `ringmq passwd` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdArgs {
    /// The password file.
    pub file: PathBuf,
    /// The user.
    pub user: String,
    /// `-c`: create the file.
    pub create: bool,
    /// `-D`: delete the user.
    pub delete: bool,
    /// `-b ... PASSWORD`: the password; otherwise it is read from stdin.
    pub password: Option<String>,
    /// `--scram`: the file is a SCRAM-SHA-256 credentials file (`auth.scram_file`).
    pub scram: bool,
    /// `--iterations N` (with `--scram`): PBKDF2 iterations of the new line.
    pub iterations: Option<u32>,
}

fn parse_passwd(mut args: impl Iterator<Item = OsString>) -> Result<Command, CliError> {
    let (mut create, mut delete, mut batch, mut scram) = (false, false, false, false);
    let mut iterations = None;
    let mut positional = Vec::new();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-c") => create = true,
            Some("-D") => delete = true,
            Some("-b") => batch = true,
            Some("--scram") if positional.is_empty() => scram = true,
            Some("--iterations") if positional.is_empty() => {
                let n = parse_iterations(args.next())?;
                if iterations.replace(n).is_some() {
                    return Err(CliError::Repeated("--iterations"));
                }
            }
            Some(flag) if flag.starts_with('-') && flag.len() > 1 && positional.is_empty() => {
                return Err(CliError::UnknownFlag(flag.to_owned()))
            }
            _ => positional.push(arg),
        }
    }
    if create && delete {
        return Err(CliError::Conflict {
            flag: "-D",
            with: "-c",
        });
    }
    if iterations.is_some() && (delete || !scram) {
        return Err(CliError::Conflict {
            flag: "--iterations",
            with: if delete {
                "-D"
            } else {
                "passwd without --scram"
            },
        });
    }
    let wanted = if batch { 3 } else { 2 };
    if delete && batch {
        return Err(CliError::Conflict {
            flag: "-D",
            with: "-b",
        });
    }
    if positional.len() != wanted {
        return Err(CliError::MissingValue {
            flag: "passwd",
            placeholder: if batch {
                "FILE USER PASSWORD"
            } else {
                "FILE USER"
            },
        });
    }
    let mut positional = positional.into_iter();
    let file = PathBuf::from(positional.next().expect("counted"));
    let user = text_value("passwd USER", positional.next().expect("counted"))?;
    let password = positional
        .next()
        .map(|p| text_value("passwd PASSWORD", p))
        .transpose()?;
    Ok(Command::Passwd(PasswdArgs {
        file,
        user,
        create,
        delete,
        password,
        scram,
        iterations,
    }))
}

fn parse_iterations(value: Option<OsString>) -> Result<u32, CliError> {
    use crate::auth::scram::{MAX_ITERATIONS, MIN_ITERATIONS};
    let flag = "--iterations";
    let value = value.ok_or(CliError::MissingValue {
        flag,
        placeholder: "N",
    })?;
    let raw = text_value(flag, value)?;
    raw.parse::<u32>()
        .ok()
        .filter(|n| (MIN_ITERATIONS..=MAX_ITERATIONS).contains(n))
        .ok_or_else(|| CliError::InvalidValue {
            flag,
            value: raw.clone(),
            reason: format!("expected a whole number from {MIN_ITERATIONS} to {MAX_ITERATIONS}"),
        })
}

/// The configuration file and the overrides given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// `--config PATH`: the file to load, if any.
    pub config_path: Option<PathBuf>,
    /// `--listen ADDR:PORT`, in order; when not empty, replaces the file's listeners.
    pub listen: Vec<SocketAddr>,
    /// `--cores N`: overrides `cores`.
    pub cores: Option<usize>,
    /// `--log-level L`: overrides `log.level`.
    pub log_level: Option<String>,
    /// `--data-dir PATH`: overrides `storage.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `--admin-listen ADDR:PORT`: overrides `admin.bind` and enables the admin listener.
    pub admin_listen: Option<SocketAddr>,
}

impl Options {
    /// Applies the overrides on top of a loaded configuration. `--listen`
    /// replaces all listeners with one per address, each with the default
    /// `backlog` and `max_connections`. Call [`Config::validate`] afterwards.
    pub fn apply(&self, config: &mut Config) {
        if !self.listen.is_empty() {
            config.listeners = self
                .listen
                .iter()
                .map(|&bind| ListenerConfig {
                    bind,
                    ..ListenerConfig::default()
                })
                .collect();
        }
        if let Some(cores) = self.cores {
            config.cores = cores;
        }
        if let Some(bind) = self.admin_listen {
            config.admin.enabled = true;
            config.admin.bind = bind;
        }
        if let Some(level) = &self.log_level {
            config.log.level.clone_from(level);
        }
        if let Some(dir) = &self.data_dir {
            config.storage.data_dir.clone_from(dir);
        }
    }

    /// The effective configuration: the `--config` file (or the defaults),
    /// with the overrides applied, validated.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config_path {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        self.apply(&mut config);
        config.validate()?;
        Ok(config)
    }
}

/// A command-line error; the message names the flag or argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// A flag that does not exist.
    #[error("unknown option `{0}` (see `ringmq --help`)")]
    UnknownFlag(String),
    /// A flag that needs a value came last or was followed by another flag.
    #[error("`{flag}` needs a value: {flag} {placeholder}")]
    MissingValue {
        /// The flag.
        flag: &'static str,
        /// What the value looks like, e.g. `PATH`.
        placeholder: &'static str,
    },
    /// A value that does not parse.
    #[error("invalid value `{value}` for `{flag}`: {reason}")]
    InvalidValue {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value given to a flag that takes none (`--help=yes`).
    #[error("`{0}` takes no value")]
    UnexpectedValue(&'static str),
    /// A flag that may appear only once appeared again.
    #[error("`{0}` given more than once")]
    Repeated(&'static str),
    /// An argument that is not a flag (only `check-config`, first, is allowed).
    #[error(
        "unexpected argument `{0}`: the subcommands are `check-config` and `passwd`, and \
         they come first (see `ringmq --help`)"
    )]
    UnexpectedArgument(String),
    /// A flag that cannot be used in this mode.
    #[error("`{flag}` cannot be used with `{with}`")]
    Conflict {
        /// The flag.
        flag: &'static str,
        /// What it conflicts with.
        with: &'static str,
    },
    /// An argument that is not valid UTF-8 where text is needed.
    #[error("argument `{0}` is not valid UTF-8")]
    NotUnicode(String),
}

/// Parses the process's own arguments (`std::env::args_os`, program name skipped).
pub fn parse_env() -> Result<Command, CliError> {
    parse(std::env::args_os().skip(1))
}

/// Parses arguments, without the program name.
pub fn parse<I, T>(args: I) -> Result<Command, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut args = args.into_iter().map(Into::into).peekable();
    let mut options = Options::default();
    let mut check_config = false;
    let mut help = false;
    let mut version = false;
    let mut print_default = false;
    let mut first = true;

    while let Some(arg) = args.next() {
        let is_first = std::mem::replace(&mut first, false);
        let Some(text) = arg.to_str() else {
            return Err(CliError::NotUnicode(arg.to_string_lossy().into_owned()));
        };
        if is_first && text == "check-config" {
            check_config = true;
            continue;
        }
        if is_first && text == "passwd" {
            let rest: Vec<OsString> = args.collect();
            if rest.iter().any(|a| a == "--help" || a == "-h") {
                return Ok(Command::Help);
            }
            return parse_passwd(rest.into_iter());
        }
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(OsString::from(value))),
            _ => (text, None),
        };
        let mut value =
            |flag: &'static str, placeholder: &'static str| -> Result<OsString, CliError> {
                let value = match inline.clone() {
                    Some(value) => value,
                    None => match args.peek() {
                        Some(next) if !next.to_string_lossy().starts_with("--") => {
                            args.next().expect("peeked")
                        }
                        _ => return Err(CliError::MissingValue { flag, placeholder }),
                    },
                };
                if value.is_empty() {
                    return Err(CliError::InvalidValue {
                        flag,
                        value: String::new(),
                        reason: "must not be empty".to_owned(),
                    });
                }
                Ok(value)
            };
        match name {
            "--config" => {
                let path = value("--config", "PATH")?;
                if options.config_path.replace(PathBuf::from(path)).is_some() {
                    return Err(CliError::Repeated("--config"));
                }
            }
            "--data-dir" => {
                let path = value("--data-dir", "PATH")?;
                if options.data_dir.replace(PathBuf::from(path)).is_some() {
                    return Err(CliError::Repeated("--data-dir"));
                }
            }
            "--listen" => {
                let raw = text_value("--listen", value("--listen", "ADDR:PORT")?)?;
                let addr = raw
                    .parse::<SocketAddr>()
                    .map_err(|_| CliError::InvalidValue {
                        flag: "--listen",
                        value: raw.clone(),
                        reason: "expected an IP address and port such as 0.0.0.0:1883, \
                             127.0.0.1:1883 or [::]:1883 (host names are not resolved)"
                            .to_owned(),
                    })?;
                options.listen.push(addr);
            }
            "--admin-listen" => {
                let raw = text_value("--admin-listen", value("--admin-listen", "ADDR:PORT")?)?;
                let addr = raw
                    .parse::<SocketAddr>()
                    .map_err(|_| CliError::InvalidValue {
                        flag: "--admin-listen",
                        value: raw.clone(),
                        reason: "expected an IP address and port such as 127.0.0.1:18083"
                            .to_owned(),
                    })?;
                if options.admin_listen.replace(addr).is_some() {
                    return Err(CliError::Repeated("--admin-listen"));
                }
            }
            "--cores" => {
                let raw = text_value("--cores", value("--cores", "N")?)?;
                let cores = raw.parse::<usize>().map_err(|_| CliError::InvalidValue {
                    flag: "--cores",
                    value: raw.clone(),
                    reason: "expected a whole number of executors (0 = one per online core)"
                        .to_owned(),
                })?;
                if cores > config::MAX_CORES {
                    return Err(CliError::InvalidValue {
                        flag: "--cores",
                        value: raw,
                        reason: format!("must be at most {}", config::MAX_CORES),
                    });
                }
                if options.cores.replace(cores).is_some() {
                    return Err(CliError::Repeated("--cores"));
                }
            }
            "--log-level" => {
                let raw = text_value("--log-level", value("--log-level", "LEVEL")?)?;
                if let Err(reason) = config::check_log_level(&raw) {
                    return Err(CliError::InvalidValue {
                        flag: "--log-level",
                        value: raw,
                        reason,
                    });
                }
                if options.log_level.replace(raw).is_some() {
                    return Err(CliError::Repeated("--log-level"));
                }
            }
            "--print-default-config" => {
                no_value("--print-default-config", &inline)?;
                if check_config {
                    return Err(CliError::Conflict {
                        flag: "--print-default-config",
                        with: "check-config",
                    });
                }
                print_default = true;
            }
            "--help" | "-h" => {
                no_value("--help", &inline)?;
                help = true;
            }
            "--version" | "-V" => {
                no_value("--version", &inline)?;
                version = true;
            }
            flag if flag.starts_with('-') => return Err(CliError::UnknownFlag(flag.to_owned())),
            other => return Err(CliError::UnexpectedArgument(other.to_owned())),
        }
    }

    Ok(if help {
        Command::Help
    } else if version {
        Command::Version
    } else if print_default {
        Command::PrintDefaultConfig
    } else if check_config {
        Command::CheckConfig(options)
    } else {
        Command::Run(options)
    })
}

fn text_value(flag: &'static str, value: OsString) -> Result<String, CliError> {
    value.into_string().map_err(|value| CliError::InvalidValue {
        flag,
        value: value.to_string_lossy().into_owned(),
        reason: "is not valid UTF-8".to_owned(),
    })
}

fn no_value(flag: &'static str, inline: &Option<OsString>) -> Result<(), CliError> {
    match inline {
        Some(_) => Err(CliError::UnexpectedValue(flag)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Options {
        match parse(args.iter().copied()) {
            Ok(Command::Run(options)) => options,
            other => panic!("{args:?}: expected Run, got {other:?}"),
        }
    }

    fn err(args: &[&str]) -> CliError {
        match parse(args.iter().copied()) {
            Err(e) => e,
            Ok(c) => panic!("{args:?}: expected an error, got {c:?}"),
        }
    }

    #[test]
    fn no_arguments_run_with_defaults() {
        assert_eq!(run(&[]), Options::default());
    }

    #[test]
    fn config_flag() {
        assert_eq!(
            run(&["--config", "/etc/ringmq.toml"]).config_path,
            Some(PathBuf::from("/etc/ringmq.toml"))
        );
        assert_eq!(
            run(&["--config=a b.toml"]).config_path,
            Some(PathBuf::from("a b.toml"))
        );
    }

    #[test]
    fn data_dir_overrides_the_file_once() {
        let o = run(&["--data-dir", "/tmp/x"]);
        assert_eq!(o.data_dir, Some(PathBuf::from("/tmp/x")));
        let mut c = Config::default();
        o.apply(&mut c);
        assert_eq!(c.storage.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(
            err(&["--data-dir=a", "--data-dir=b"]),
            CliError::Repeated("--data-dir")
        );
    }

    #[test]
    fn admin_listen_sets_and_enables_the_admin_listener() {
        let o = run(&["--admin-listen", "127.0.0.1:0"]);
        let mut c = Config::default();
        c.admin.enabled = false;
        o.apply(&mut c);
        assert!(c.admin.enabled);
        assert_eq!(c.admin.bind, "127.0.0.1:0".parse::<SocketAddr>().unwrap());
        assert_eq!(
            err(&["--admin-listen=127.0.0.1:1", "--admin-listen=127.0.0.1:2"]),
            CliError::Repeated("--admin-listen")
        );
        assert!(matches!(
            err(&["--admin-listen", "localhost:80"]),
            CliError::InvalidValue {
                flag: "--admin-listen",
                ..
            }
        ));
    }

    #[test]
    fn listen_flag_repeats_in_order() {
        let o = run(&["--listen", "0.0.0.0:1883", "--listen=[::1]:8883"]);
        assert_eq!(
            o.listen,
            vec![
                "0.0.0.0:1883".parse::<SocketAddr>().unwrap(),
                "[::1]:8883".parse().unwrap()
            ]
        );
    }

    #[test]
    fn cores_flag() {
        assert_eq!(run(&["--cores", "4"]).cores, Some(4));
        assert_eq!(run(&["--cores=0"]).cores, Some(0));
    }

    #[test]
    fn log_level_flag() {
        assert_eq!(
            run(&["--log-level", "debug"]).log_level.as_deref(),
            Some("debug")
        );
        assert_eq!(
            run(&["--log-level=info,ringmq::session=trace"])
                .log_level
                .as_deref(),
            Some("info,ringmq::session=trace")
        );
    }

    #[test]
    fn all_flags_together() {
        let o = run(&[
            "--config",
            "c.toml",
            "--listen",
            "127.0.0.1:1",
            "--cores",
            "2",
            "--log-level",
            "warn",
        ]);
        assert_eq!(o.config_path, Some(PathBuf::from("c.toml")));
        assert_eq!(o.listen.len(), 1);
        assert_eq!(o.cores, Some(2));
        assert_eq!(o.log_level.as_deref(), Some("warn"));
    }

    #[test]
    fn print_default_config_help_version() {
        let p = |args: &[&str]| parse(args.iter().copied()).unwrap();
        assert_eq!(p(&["--print-default-config"]), Command::PrintDefaultConfig);
        assert_eq!(p(&["--help"]), Command::Help);
        assert_eq!(p(&["-h"]), Command::Help);
        assert_eq!(p(&["--version"]), Command::Version);
        assert_eq!(p(&["-V"]), Command::Version);
        // Precedence: help, then version, then print-default-config.
        assert_eq!(p(&["--version", "--help"]), Command::Help);
        assert_eq!(p(&["--print-default-config", "-V"]), Command::Version);
        assert_eq!(p(&["check-config", "--help"]), Command::Help);
        assert_eq!(
            p(&["--cores", "2", "--print-default-config"]),
            Command::PrintDefaultConfig
        );
        assert!(VERSION.starts_with("ringmq 0."));
        assert!(USAGE.contains("--print-default-config"));
    }

    #[test]
    fn check_config_subcommand() {
        assert_eq!(
            parse(["check-config"]).unwrap(),
            Command::CheckConfig(Options::default())
        );
        assert_eq!(
            parse(["check-config", "--config", "x.toml", "--cores", "1"]).unwrap(),
            Command::CheckConfig(Options {
                config_path: Some(PathBuf::from("x.toml")),
                cores: Some(1),
                ..Options::default()
            })
        );
    }

    #[test]
    fn passwd_subcommand() {
        let p = |args: &[&str]| parse(args.iter().copied());
        assert_eq!(
            p(&["passwd", "-c", "-b", "f", "u", "pw"]).unwrap(),
            Command::Passwd(PasswdArgs {
                file: "f".into(),
                user: "u".into(),
                create: true,
                delete: false,
                password: Some("pw".into()),
                scram: false,
                iterations: None,
            })
        );
        assert_eq!(
            p(&["passwd", "-D", "f", "u"]).unwrap(),
            Command::Passwd(PasswdArgs {
                file: "f".into(),
                user: "u".into(),
                create: false,
                delete: true,
                password: None,
                scram: false,
                iterations: None,
            })
        );
        assert_eq!(
            p(&["passwd", "--scram", "-c", "f", "u"]).unwrap(),
            Command::Passwd(PasswdArgs {
                file: "f".into(),
                user: "u".into(),
                create: true,
                delete: false,
                password: None,
                scram: true,
                iterations: None,
            })
        );
        match p(&["passwd", "--scram", "--iterations", "8192", "f", "u"]).unwrap() {
            Command::Passwd(a) => assert_eq!((a.scram, a.iterations), (true, Some(8192))),
            other => panic!("{other:?}"),
        }
        for bad in [
            &["passwd", "--scram", "--iterations", "4095", "f", "u"][..],
            &["passwd", "--scram", "--iterations", "x", "f", "u"],
            &["passwd", "--scram", "--iterations"],
            &["passwd", "--iterations", "5000", "f", "u"],
            &["passwd", "--scram", "-D", "--iterations", "5000", "f", "u"],
            &[
                "passwd",
                "--scram",
                "--iterations",
                "5000",
                "--iterations",
                "5000",
                "f",
                "u",
            ],
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.to_string().contains("--iterations"), "{bad:?}: {e}");
        }
        assert!(p(&["passwd", "f"]).is_err());
        assert!(p(&["passwd", "-b", "f", "u"]).is_err());
        assert!(p(&["passwd", "-c", "-D", "f", "u"]).is_err());
        assert!(p(&["passwd", "-x", "f", "u"]).is_err());
        // A password may start with '-' once FILE is given.
        assert!(p(&["passwd", "-b", "f", "u", "-pw"]).is_ok());
        assert_eq!(p(&["passwd", "--help"]).unwrap(), Command::Help);
    }

    #[test]
    fn unknown_flag() {
        assert_eq!(
            err(&["--port", "1883"]),
            CliError::UnknownFlag("--port".into())
        );
        assert_eq!(err(&["-x"]), CliError::UnknownFlag("-x".into()));
        assert!(err(&["--nope=1"]).to_string().contains("`--nope`"));
    }

    #[test]
    fn missing_values_name_the_flag() {
        for flag in ["--config", "--listen", "--cores", "--log-level"] {
            let e = err(&[flag]);
            assert!(
                matches!(e, CliError::MissingValue { flag: f, .. } if f == flag),
                "{e}"
            );
            assert!(e.to_string().contains(flag), "{e}");
            // A following long flag is not taken as the value.
            let e = err(&[flag, "--help"]);
            assert!(matches!(e, CliError::MissingValue { .. }), "{e}");
        }
        let e = err(&["--config="]);
        assert!(
            matches!(
                e,
                CliError::InvalidValue {
                    flag: "--config",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn invalid_listen_address() {
        for bad in [
            "localhost:1883",
            "1883",
            "0.0.0.0",
            "0.0.0.0:99999",
            "::1:1883",
        ] {
            let e = err(&["--listen", bad]);
            assert!(
                matches!(&e, CliError::InvalidValue { flag: "--listen", value, .. } if value == bad),
                "{e}"
            );
            let text = e.to_string();
            assert!(text.contains("--listen") && text.contains(bad), "{text}");
        }
    }

    #[test]
    fn invalid_cores() {
        for bad in ["-1", "two", "1.5", "5000"] {
            let e = err(&["--cores", bad]);
            assert!(
                matches!(
                    e,
                    CliError::InvalidValue {
                        flag: "--cores",
                        ..
                    }
                ),
                "{bad}: {e}"
            );
            assert!(e.to_string().contains("--cores"));
        }
    }

    #[test]
    fn invalid_log_level() {
        let e = err(&["--log-level", "loud"]);
        assert!(
            matches!(
                e,
                CliError::InvalidValue {
                    flag: "--log-level",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("--log-level"), "{e}");
    }

    #[test]
    fn repeated_flags() {
        assert_eq!(
            err(&["--config", "a", "--config", "b"]),
            CliError::Repeated("--config")
        );
        assert_eq!(
            err(&["--cores", "1", "--cores=2"]),
            CliError::Repeated("--cores")
        );
        assert_eq!(
            err(&["--log-level", "info", "--log-level", "debug"]),
            CliError::Repeated("--log-level")
        );
    }

    #[test]
    fn flags_without_values_reject_one() {
        assert_eq!(err(&["--help=yes"]), CliError::UnexpectedValue("--help"));
        assert_eq!(
            err(&["--version=1"]),
            CliError::UnexpectedValue("--version")
        );
        assert_eq!(
            err(&["--print-default-config=x"]),
            CliError::UnexpectedValue("--print-default-config")
        );
    }

    #[test]
    fn unexpected_arguments() {
        assert_eq!(err(&["run"]), CliError::UnexpectedArgument("run".into()));
        assert_eq!(
            err(&["--cores", "1", "check-config"]),
            CliError::UnexpectedArgument("check-config".into())
        );
        assert!(err(&["extra"]).to_string().contains("`extra`"));
    }

    #[test]
    fn print_default_config_conflicts_with_check_config() {
        let e = err(&["check-config", "--print-default-config"]);
        assert_eq!(
            e,
            CliError::Conflict {
                flag: "--print-default-config",
                with: "check-config"
            }
        );
        assert!(e.to_string().contains("--print-default-config"));
    }

    #[test]
    fn non_utf8_arguments() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'-', b'-', 0xff]);
        assert!(matches!(parse([bad]), Err(CliError::NotUnicode(_))));
        // A non-UTF-8 config path is fine.
        let path = OsString::from_vec(vec![b'c', 0xff]);
        match parse([OsString::from("--config"), path.clone()]).unwrap() {
            Command::Run(o) => assert_eq!(o.config_path, Some(PathBuf::from(path))),
            other => panic!("{other:?}"),
        }
        let e = parse([OsString::from("--cores"), OsString::from_vec(vec![0xff])]).unwrap_err();
        assert!(
            matches!(
                e,
                CliError::InvalidValue {
                    flag: "--cores",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn apply_overrides_the_file() {
        let mut config = Config::from_toml_str(
            "cores = 8\n[[listeners]]\nbind = \"0.0.0.0:1883\"\nbacklog = 10\n\
             [[listeners]]\nbind = \"0.0.0.0:8883\"\n[log]\nlevel = \"warn\"\n",
        )
        .unwrap();
        let untouched = config.clone();
        Options::default().apply(&mut config);
        assert_eq!(config, untouched);

        let o = run(&[
            "--listen",
            "127.0.0.1:2000",
            "--listen",
            "[::1]:2001",
            "--cores",
            "2",
            "--log-level",
            "debug",
        ]);
        o.apply(&mut config);
        assert_eq!(config.cores, 2);
        assert_eq!(config.log.level, "debug");
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(
            config.listeners[0].bind,
            "127.0.0.1:2000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            config.listeners[0].backlog,
            ListenerConfig::default().backlog
        );
        assert_eq!(
            config.listeners[1].bind,
            "[::1]:2001".parse::<SocketAddr>().unwrap()
        );
        config.validate().unwrap();
    }

    #[test]
    fn load_config_reads_the_file_and_applies_overrides() {
        let dir = std::env::temp_dir().join(format!("ringmq-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ringmq.toml");
        std::fs::write(&path, "cores = 3\n[sys]\ninterval_secs = 0\n").unwrap();
        let o = Options {
            config_path: Some(path.clone()),
            cores: Some(1),
            ..Options::default()
        };
        let config = o.load_config().unwrap();
        assert_eq!(config.cores, 1);
        assert_eq!(config.sys.interval_secs, 0);
        // Overrides are validated too: two --listen with the same address.
        let o = run(&["--listen", "127.0.0.1:1883", "--listen", "127.0.0.1:1883"]);
        let e = o.load_config().unwrap_err();
        assert_eq!(e.key(), Some("listeners[1].bind"));
        // No --config: the defaults.
        assert_eq!(Options::default().load_config().unwrap(), Config::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
