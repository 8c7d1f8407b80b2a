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
    Probe(crate::probe::ProbeCmd),
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
    /// keep everything in RAM; write no file (also --amnesia=on)
    #[argh(switch)]
    pub amnesia: bool,
    /// keep state on disk although the profile defaults to amnesia
    /// (micronode); also --amnesia=off
    #[argh(switch)]
    pub no_amnesia: bool,
    /// refuse writes (503 with Retry-After); reads keep working
    #[argh(switch)]
    pub read_only: bool,
    /// hedge slow object reads (omnigate)
    #[argh(switch)]
    pub hedge_read: bool,
    /// prefer the X25519MLKEM768 hybrid key exchange (overlay)
    #[argh(switch)]
    pub pilot_pq: bool,
    /// listen for OAP/1 over QUIC too (the default; also --quic=on)
    #[argh(switch)]
    pub quic: bool,
    /// no QUIC listener: peers reach the overlay over TLS/TCP only (also
    /// --quic=off)
    #[argh(switch)]
    pub no_quic: bool,
    /// streams one overlay peer may have open at once
    /// (overlay.peer.max_streams)
    #[argh(option)]
    pub oap_concurrency: Option<u32>,
    /// serve the HTTP planes on Unix sockets under uds.dir, no TCP
    #[argh(switch)]
    pub uds_only: bool,
    /// refused: this build has no Tor transport (exits 2)
    #[argh(switch)]
    pub tor: bool,
    /// refused: zero-knowledge pilots are not part of this node (exits 2)
    #[argh(switch)]
    pub pilot_zk: bool,
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

/// How the program was invoked: `ronctl` (any file name starting so, a
/// symlink or hard link included) means `macronode ctl`.
fn invoked_as(argv0: Option<&String>, profile: Profile) -> (String, bool) {
    let bin = argv0
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|s| s.to_str())
        .unwrap_or(profile.as_str())
        .to_owned();
    let ctl = bin.starts_with("ronctl");
    (bin, ctl)
}

/// The runbooks write `--flag=value`, which argh does not parse: splits it
/// into `--flag value`, and turns the on/off switches `--amnesia=on|off`
/// and `--quic=on|off` into `--amnesia`/`--no-amnesia`, `--quic`/`--no-quic`.
/// Everything after a bare `--` is left alone.
pub fn normalize_args(args: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = args.iter();
    for a in rest.by_ref() {
        if a == "--" {
            out.push(a.clone());
            break;
        }
        let Some((flag, value)) = a.strip_prefix("--").and_then(|f| f.split_once('=')) else {
            out.push(a.clone());
            continue;
        };
        if matches!(flag, "amnesia" | "quic") {
            let on = match value.to_ascii_lowercase().as_str() {
                "on" | "true" | "yes" | "1" => true,
                "off" | "false" | "no" | "0" => false,
                _ => return Err(format!("--{flag}={value}: --{flag} takes on or off")),
            };
            out.push(if on {
                format!("--{flag}")
            } else {
                format!("--no-{flag}")
            });
        } else {
            out.push(format!("--{flag}"));
            out.push(value.to_owned());
        }
    }
    out.extend(rest.cloned());
    Ok(out)
}

/// Entry point of both binaries (and of `ronctl`).
pub fn main(profile: Profile) -> ExitCode {
    ron_kernel::alloc::tune();
    // 4 KiB pages: an edge box counts every resident byte (RUNBOOK, "Edge
    // boxes"), and both profiles pay for huge pages in zeroing (`alloc.rs`).
    ron_kernel::alloc::small_pages();
    let args: Vec<String> = std::env::args().collect();
    let (bin, as_ctl) = invoked_as(args.first(), profile);
    let mut rest = match normalize_args(args.get(1..).unwrap_or_default()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("Run `{bin} --help` for usage.");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if as_ctl {
        rest.insert(0, "ctl".into());
    }
    // `ronctl status --json` as well as `ronctl --json status`.
    if rest.first().is_some_and(|a| a == "ctl") {
        let end = rest.iter().position(|a| a == "--").unwrap_or(rest.len());
        let (head, tail) = rest.split_at(end);
        let json = head.iter().any(|a| a == "--json");
        let mut args: Vec<String> = head.iter().filter(|a| *a != "--json").cloned().collect();
        if json {
            args.insert(1, "--json".into());
        }
        args.extend_from_slice(tail);
        rest = args;
    }
    // `micronode --amnesia` and a bare `macronode` mean `run`.
    let commands = [
        "run", "check", "config", "doctor", "version", "probe", "ctl", "help",
    ];
    let wants_help = matches!(rest.first().map(String::as_str), Some("--help" | "-h"));
    if !wants_help && rest.first().is_none_or(|a| !commands.contains(&a.as_str())) {
        rest.insert(0, "run".into());
    }
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    // As `ronctl`, usage reads `ronctl <verb>`, not `ronctl ctl <verb>`.
    let cli = match Cli::from_args(&[bin.as_str()], &rest) {
        Ok(cli) => cli,
        Err(early) => {
            let output = if as_ctl {
                early.output.replace(&format!("{bin} ctl"), &bin)
            } else {
                early.output
            };
            return match early.status {
                Ok(()) => {
                    println!("{output}");
                    ExitCode::SUCCESS
                }
                Err(()) => {
                    eprintln!("{output}");
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
                    let roles: Vec<&str> = crate::roles::select(&cfg.roles)
                        .unwrap_or_default()
                        .iter()
                        .map(|r| r.as_str())
                        .collect();
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
        Command::Probe(p) => match crate::probe::run(profile, p) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("probe: {e}");
                match e {
                    crate::probe::ProbeError::Usage(_) => ExitCode::from(EXIT_USAGE),
                    crate::probe::ProbeError::Failed(_) => ExitCode::FAILURE,
                }
            }
        },
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
    if r.tor {
        eprintln!(
            "error: --tor: this build has no Tor transport; the overlay speaks OAP/1 over \
             TLS and QUIC only (see docs/RUNBOOK.md, \"Runbook commands\")"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if r.pilot_zk {
        eprintln!(
            "error: --pilot-zk: zero-knowledge pilots are not part of this node \
             (see docs/RUNBOOK.md, \"Runbook commands\")"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let on_off = |on: bool, off: bool, flag: &str| match (on, off) {
        (true, true) => Err(format!("--{flag} and --no-{flag} contradict each other")),
        (true, false) => Ok(Some(true)),
        (false, true) => Ok(Some(false)),
        (false, false) => Ok(None),
    };
    let (amnesia, quic) = match (
        on_off(r.amnesia, r.no_amnesia, "amnesia"),
        on_off(r.quic, r.no_quic, "quic"),
    ) {
        (Ok(a), Ok(q)) => (a, q),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let overrides = CliOverrides {
        roles: split_roles(&r.roles),
        amnesia,
        read_only: r.read_only,
        hedge_read: r.hedge_read,
        pilot_pq: r.pilot_pq,
        quic,
        oap_concurrency: r.oap_concurrency,
        uds_only: r.uds_only,
    };
    let src = ConfigSource::new(profile, r.config, overrides);
    let cfg = match src.load() {
        Ok(cfg) => cfg,
        Err(e) => return config_error(&e),
    };
    let log = crate::logging::init(&cfg.log);
    for note in crate::config::env_notes() {
        tracing::warn!("{note}");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Result<Vec<String>, String> {
        normalize_args(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn runbook_flag_spellings_become_argh_ones() {
        assert_eq!(norm(&["--amnesia=on"]).unwrap(), ["--amnesia"]);
        assert_eq!(norm(&["--amnesia=off"]).unwrap(), ["--no-amnesia"]);
        assert_eq!(norm(&["--quic=false"]).unwrap(), ["--no-quic"]);
        assert_eq!(norm(&["--ms=50", "x"]).unwrap(), ["--ms", "50", "x"]);
        assert_eq!(norm(&["--", "--a=b"]).unwrap(), ["--", "--a=b"]);
        assert!(norm(&["--quic=maybe"]).is_err());
    }

    #[test]
    fn ronctl_by_any_name_starting_so() {
        let p = Profile::Macronode;
        assert!(invoked_as(Some(&"/usr/bin/ronctl".to_owned()), p).1);
        assert!(invoked_as(Some(&"ronctl-1.2".to_owned()), p).1);
        assert!(!invoked_as(Some(&"/usr/bin/macronode".to_owned()), p).1);
    }
}
