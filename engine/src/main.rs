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

fn main() -> ExitCode {
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
        Command::CheckConfig(options) => match load(&options) {
            Ok(config) => {
                println!("{}", config.to_toml_string());
                eprintln!("ringmq: configuration is valid");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringmq: invalid configuration: {e}");
                ExitCode::from(2)
            }
        },
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
            let settings = RuntimeSettings::from_config(&config);
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
