//! The command line (argh) and what each command does. Errors are rendered
//! here, once: config and usage errors exit 2, runtime failures exit 1.

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

use crate::config::{CliOverrides, ConfigSource, Profile};

pub const EXIT_USAGE: u8 = 2;

#[derive(FromArgs, Debug)]
/// A self-hostable, content-addressed application node.
pub struct Cli {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    Run(RunCmd),
    Check(CheckCmd),
    Config(ConfigCmd),
    Doctor(DoctorCmd),
    Version(VersionCmd),
    Ctl(crate::ctl::CtlCmd),
}

#[derive(FromArgs, Debug, Default)]
/// Run the node (the default when no command is given).
#[argh(subcommand, name = "run")]
pub struct RunCmd {
    /// config file (TOML); RON_CONFIG wins over this flag
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// roles to run, comma-separated (default: every compiled-in role)
    #[argh(option)]
    pub roles: Option<String>,
    /// keep everything in RAM; write no file
    #[argh(switch)]
    pub amnesia: bool,
    /// refuse writes (503 with Retry-After); reads keep working
    #[argh(switch)]
    pub read_only: bool,
    /// hedge slow object reads (omnigate)
    #[argh(switch)]
    pub hedge_read: bool,
    /// prefer the X25519MLKEM768 hybrid key exchange (overlay)
    #[argh(switch)]
    pub pilot_pq: bool,
}

#[derive(FromArgs, Debug)]
/// Validate config and role selection without starting anything.
#[argh(subcommand, name = "check")]
pub struct CheckCmd {
    /// config file (TOML); RON_CONFIG wins over this flag
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// roles to check, comma-separated
    #[argh(option)]
    pub roles: Option<String>,
}

#[derive(FromArgs, Debug)]
/// Print or validate the effective config.
#[argh(subcommand, name = "config")]
pub struct ConfigCmd {
    #[argh(subcommand)]
    pub action: ConfigAction,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum ConfigAction {
    Print(ConfigPrint),
    Validate(ConfigValidate),
}

#[derive(FromArgs, Debug)]
/// Print the effective config (defaults, file, environment) as TOML, secrets redacted.
#[argh(subcommand, name = "print")]
pub struct ConfigPrint {
    /// config file (TOML); RON_CONFIG wins over this flag
    #[argh(option)]
    pub config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// Validate the effective config; exit 2 naming every problem.
#[argh(subcommand, name = "validate")]
pub struct ConfigValidate {
    /// config file (TOML); RON_CONFIG wins over this flag
    #[argh(option)]
    pub config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// Check ports, data dir, config and clock; print ok/fail for each.
#[argh(subcommand, name = "doctor")]
pub struct DoctorCmd {
    /// config file (TOML); RON_CONFIG wins over this flag
    #[argh(option)]
    pub config: Option<PathBuf>,
}

#[derive(FromArgs, Debug)]
/// Print version, git sha, build time, rustc and compiled-in roles.
#[argh(subcommand, name = "version")]
pub struct VersionCmd {
    /// print JSON
    #[argh(switch)]
    pub json: bool,
}

fn split_roles(s: &Option<String>) -> Option<Vec<String>> {
    s.as_ref().map(|s| {
        s.split(',')
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect()
    })
}

/// Entry point of both binaries.
pub fn main(profile: Profile) -> ExitCode {
    ron_kernel::alloc::tune();
    let args: Vec<String> = std::env::args().collect();
    let bin = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|s| s.to_str())
        .unwrap_or(profile.as_str())
        .to_owned();
    let mut rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    // `micronode --amnesia` and a bare `macronode` mean `run`.
    let commands = ["run", "check", "config", "doctor", "version", "ctl", "help"];
    let wants_help = matches!(rest.first(), Some(&"--help") | Some(&"-h"));
    if !wants_help && rest.first().is_none_or(|a| !commands.contains(a)) {
        rest.insert(0, "run");
    }
    let cli = match Cli::from_args(&[bin.as_str()], &rest) {
        Ok(cli) => cli,
        Err(early) => {
            return match early.status {
                Ok(()) => {
                    println!("{}", early.output);
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprintln!("{}", early.output);
                    eprintln!("Run `{bin} --help` for usage.");
                    ExitCode::from(EXIT_USAGE)
                }
            };
        }
    };
    match cli.command {
        Command::Version(v) => {
            let info = crate::version::info();
            if v.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&info).unwrap_or_default()
                );
            } else {
                println!("{info}");
            }
            ExitCode::SUCCESS
        }
        Command::Config(c) => match c.action {
            ConfigAction::Print(p) => {
                let src = ConfigSource::new(profile, p.config, CliOverrides::default());
                match src.load() {
                    Ok(cfg) => {
                        println!(
                            "# effective {} config ({}); secrets redacted",
                            profile.as_str(),
                            crate::config::describe_source(&src)
                        );
                        print!("{}", cfg.to_redacted_toml());
                        ExitCode::SUCCESS
                    }
                    Err(e) => config_error(&e),
                }
            }
            ConfigAction::Validate(v) => {
                let src = ConfigSource::new(profile, v.config, CliOverrides::default());
                match src.load() {
                    Ok(_) => {
                        println!("config ok ({})", crate::config::describe_source(&src));
                        ExitCode::SUCCESS
                    }
                    Err(e) => config_error(&e),
                }
            }
        },
        Command::Check(c) => {
            let overrides = CliOverrides {
                roles: split_roles(&c.roles),
                ..Default::default()
            };
            let src = ConfigSource::new(profile, c.config, overrides);
            match src.load() {
                Ok(cfg) => {
                    let roles = crate::roles::select(&cfg.roles).unwrap_or_default();
                    println!("config ok ({})", crate::config::describe_source(&src));
                    println!("roles: {}", roles.join(", "));
                    for (name, addr) in crate::doctor::planned_listeners(&cfg) {
                        println!("listener {name}: {addr}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => config_error(&e),
            }
        }
        Command::Doctor(d) => {
            let src = ConfigSource::new(profile, d.config, CliOverrides::default());
            let checks = crate::doctor::run(&src);
            let mut failed = 0;
            for c in &checks {
                if !c.ok {
                    failed += 1;
                }
                println!(
                    "{:<4} {:<16} {}",
                    if c.ok { "ok" } else { "fail" },
                    c.name,
                    c.detail
                );
            }
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                println!("{failed} check(s) failed");
                ExitCode::FAILURE
            }
        }
        Command::Run(r) => run(profile, r),
        Command::Ctl(c) => match crate::ctl::run(c) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ crate::ctl::CtlError::Usage(_)) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_USAGE)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn config_error(e: &crate::config::ConfigError) -> ExitCode {
    eprintln!("config error:");
    for line in e.to_string().lines() {
        eprintln!("  {line}");
    }
    ExitCode::from(EXIT_USAGE)
}

fn run(profile: Profile, r: RunCmd) -> ExitCode {
    let overrides = CliOverrides {
        roles: split_roles(&r.roles),
        amnesia: r.amnesia,
        read_only: r.read_only,
        hedge_read: r.hedge_read,
        pilot_pq: r.pilot_pq,
    };
    let src = ConfigSource::new(profile, r.config, overrides);
    let cfg = match src.load() {
        Ok(cfg) => cfg,
        Err(e) => return config_error(&e),
    };
    let log = crate::logging::init(&cfg.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("macronode")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::node::run(src, cfg, log)) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            tracing::error!(error = %e, "node failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
