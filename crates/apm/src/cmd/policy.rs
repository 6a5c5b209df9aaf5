//! `apm policy …`: offline tools over a policy file.

use std::io::{Read, Write};
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use apm_policy::{AtsMajor, Policy, Target, ValidPolicy, client, template};
use clap::Subcommand;

/// Exit code for a policy that parses but does not validate (or does not parse).
const EXIT_INVALID: u8 = 1;

/// Offline policy commands.
#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Print the default policy (the seed's routing table) as commented TOML.
    Template {
        /// Print JSON (the API's form) instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// Check a policy; exit 0 when valid, 1 with every error on stderr otherwise.
    Validate {
        /// Policy file (TOML, or JSON when it ends in .json; `-` for stdin).
        file: PathBuf,
    },
    /// Write the ATS files for a policy into a directory and print their content hash.
    Render {
        /// Policy file (TOML, or JSON when it ends in .json; `-` for stdin).
        file: PathBuf,
        /// ATS major version to render for: 9 (records.config) or 10 (records.yaml).
        #[arg(long, default_value = "9")]
        ats: AtsMajor,
        /// Directory to write the files into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Show where requests to each target go, and which rule decides.
    Explain {
        /// Policy file (TOML, or JSON when it ends in .json; `-` for stdin).
        file: PathBuf,
        /// URLs or host[:port] to explain.
        #[arg(required = true)]
        targets: Vec<String>,
        /// Print one JSON object per target (a JSON array).
        #[arg(long)]
        json: bool,
        /// Resolve host names with this machine's DNS so `ip` rules can be decided.
        #[arg(long)]
        resolve: bool,
    },
    /// Print the policy as a proxy auto-config (PAC) file.
    Pac {
        /// Policy file.
        file: PathBuf,
    },
    /// Print the DIRECT destinations as a NO_PROXY value; what it cannot express goes to stderr.
    NoProxy {
        /// Policy file.
        file: PathBuf,
    },
}

/// Runs one policy command.
pub fn run(command: PolicyCommand) -> Result<ExitCode> {
    match command {
        PolicyCommand::Template { json } => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&template::default_policy())?
                );
            } else {
                print!("{}", template::DEFAULT_POLICY_TOML);
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Validate { file } => with_valid_policy(&file, |policy| {
            eprintln!(
                "{}: valid ({} rules, {} parents, default {})",
                file.display(),
                policy.rules.len(),
                policy.parents.len(),
                policy.policy().default_action
            );
            Ok(())
        }),
        PolicyCommand::Render { file, ats, out } => with_valid_policy(&file, |policy| {
            let bundle = apm_policy::render(policy, ats);
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            for (name, content) in &bundle.files {
                let path = out.join(name);
                write_atomically(&path, content.as_bytes())?;
                eprintln!("wrote {}", path.display());
            }
            println!("{}", bundle.hash);
            Ok(())
        }),
        PolicyCommand::Explain {
            file,
            targets,
            json,
            resolve,
        } => with_valid_policy(&file, |policy| explain(policy, &targets, json, resolve)),
        PolicyCommand::Pac { file } => with_valid_policy(&file, |policy| {
            print!("{}", client::pac(policy));
            Ok(())
        }),
        PolicyCommand::NoProxy { file } => with_valid_policy(&file, |policy| {
            let no_proxy = client::no_proxy(policy);
            println!("{}", no_proxy.value);
            for note in &no_proxy.notes {
                eprintln!("note: {note}");
            }
            Ok(())
        }),
    }
}

fn explain(policy: &ValidPolicy, targets: &[String], json: bool, resolve: bool) -> Result<()> {
    let mut explanations = Vec::new();
    for text in targets {
        let target = Target::parse(text)?;
        let resolved = match (&target.host, resolve) {
            (apm_policy::explain::TargetHost::Name(name), true) => lookup(name, target.port)?,
            _ => Vec::new(),
        };
        explanations.push(apm_policy::explain(policy, &target, &resolved));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&explanations)?);
        return Ok(());
    }
    for e in &explanations {
        let route = if e.parents.is_empty() {
            "DIRECT".to_string()
        } else {
            format!(
                "PARENT {} ({})",
                e.parents.join(" -> "),
                e.failover.unwrap_or_default()
            )
        };
        println!("{}: {route}", e.target);
        println!("  decided by {}", e.rule_text);
        for note in &e.notes {
            println!("  note: {note}");
        }
    }
    Ok(())
}

fn lookup(name: &str, port: Option<u16>) -> Result<Vec<IpAddr>> {
    let addresses = (name, port.unwrap_or(80))
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {name}"))?;
    let mut ips: Vec<IpAddr> = addresses.map(|a| a.ip()).collect();
    ips.dedup();
    Ok(ips)
}

/// Reads and validates the policy, runs `action` on it, and maps an invalid policy to exit 1
/// with every error on stderr.
fn with_valid_policy(
    file: &Path,
    action: impl FnOnce(&ValidPolicy) -> Result<()>,
) -> Result<ExitCode> {
    let policy = match read_policy(file)? {
        Ok(policy) => policy,
        Err(message) => {
            eprintln!("{}: {message}", file.display());
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    match policy.validate() {
        Ok(valid) => {
            action(&valid)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            eprintln!("{}: {errors}", file.display());
            Ok(ExitCode::from(EXIT_INVALID))
        }
    }
}

/// Reads a policy file. The outer error is I/O (exit 2); the inner one a parse error (exit 1).
fn read_policy(file: &Path) -> Result<std::result::Result<Policy, String>> {
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read stdin")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let is_json = file
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    let parsed = if is_json {
        Policy::from_json_str(&text)
    } else {
        Policy::from_toml_str(&text)
    };
    Ok(parsed.map_err(|error| error.to_string()))
}

/// Writes a file so readers see the old or the new content, never a mix: temp file in the
/// same directory, fsync, rename.
fn write_atomically(path: &Path, content: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.apm-tmp"));
    let mut handle =
        std::fs::File::create(&temp).with_context(|| format!("cannot write {}", temp.display()))?;
    handle.write_all(content)?;
    handle.sync_all()?;
    std::fs::rename(&temp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}
