//! `xe`: the command line administrators script against (`xe vm-list`, `xe vm-param-get uuid=… param-name=…`).
//!
//! ```text
//! xe <command> [param=value …] [--minimal] [-s HOST [-p PORT] -u USER (-pw PASSWORD | -pwf FILE)] [--nossl]
//! ```
//!
//! A normal XenAPI client of the daemon: XML-RPC through `xapi_types::wire` over HTTP, on the local unix socket
//! (`$XE_SOCKET`, else `/var/lib/xcp/xapi`, where root logs in without a password) or, with `-s`, over plain
//! TCP (port 80 unless `-p`; HTTPS is not available yet, so `--nossl` is implied). Output and errors follow xe's.

#![forbid(unsafe_code)]

mod client;
mod commands;
mod error;
mod format;
mod http;

use std::path::PathBuf;

use client::Client;
use error::XeError;
use http::Target;

const DEFAULT_SOCKET: &str = "/var/lib/xcp/xapi";

/// The whole command line, parsed.
#[derive(Debug, Default)]
struct CommandLine {
    server: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    command: Option<String>,
    args: commands::Args,
}

fn parse(argv: &[String]) -> Result<CommandLine, XeError> {
    let mut cl = CommandLine::default();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let mut value =
            |flag: &str| it.next().cloned().ok_or_else(|| XeError::Usage(format!("The option {flag} needs a value.")));
        match a.as_str() {
            "-s" => cl.server = Some(value(a)?),
            "-p" => {
                let p = value(a)?;
                cl.port = Some(p.parse().map_err(|_| XeError::Usage(format!("Invalid port: {p}")))?);
            }
            "-u" => cl.user = Some(value(a)?),
            "-pw" => cl.password = Some(value(a)?),
            "-pwf" => cl.password_file = Some(value(a)?.into()),
            "--nossl" => {}
            "--minimal" => cl.args.minimal = true,
            _ if a.starts_with("--") => return Err(XeError::Usage(format!("Unknown option: {a}"))),
            _ => match a.split_once('=') {
                Some((k, v)) => cl.args.params.push((k.to_string(), v.to_string())),
                None if cl.command.is_none() => cl.command = Some(a.clone()),
                None => return Err(XeError::Usage(format!("Syntax error: '{a}' is not of the form param=value."))),
            },
        }
    }
    Ok(cl)
}

fn help() -> String {
    let mut out = String::from(
        "Usage: xe <command> [-s server] [-p port] [-u username] [-pw password | -pwf password-file] [--nossl]\n\
         \x20         [param=value …] [--minimal]\n\n\
         Without -s, xe talks to the local daemon on $XE_SOCKET (default /var/lib/xcp/xapi) as root.\n\n\
         Commands:\n    help\n",
    );
    for c in commands::all_commands() {
        out.push_str(&format!("    {c}\n"));
    }
    out
}

fn connect(cl: &CommandLine) -> Result<Client, XeError> {
    let Some(host) = &cl.server else {
        let socket = std::env::var_os("XE_SOCKET").map(PathBuf::from).unwrap_or_else(|| DEFAULT_SOCKET.into());
        return Client::login(Target::Unix(socket), cl.user.as_deref().unwrap_or("root"), "");
    };
    let password = match (&cl.password, &cl.password_file) {
        (Some(p), _) => p.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map_err(|e| XeError::Usage(format!("Cannot read the password file {}: {e}", file.display())))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        (None, None) => String::new(),
    };
    let user = cl.user.as_deref().unwrap_or("root");
    Client::login(Target::Tcp { host: host.clone(), port: cl.port.unwrap_or(80) }, user, &password)
}

/// Runs the command line; the text for stdout on success.
fn run(argv: &[String]) -> Result<String, XeError> {
    let cl = parse(argv)?;
    let command = match cl.command.as_deref() {
        None | Some("help") => return Ok(help()),
        Some(c) => c,
    };
    let Some((class, op)) = commands::resolve(command) else {
        return Err(XeError::Usage(format!("Unknown command: {command}\nFor usage run: 'xe help'")));
    };
    let mut client = connect(&cl)?;
    let result = commands::run(&mut client, class, op, &cl.args);
    let logout = client.logout();
    let out = result?;
    logout?;
    Ok(out)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match run(&argv) {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprint!("{}", e.render());
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_connection_options_params_and_flags() {
        let cl = parse(&argv("-s h -p 8080 vm-list -u root -pw x power-state=running --minimal --nossl")).unwrap();
        assert_eq!(cl.server.as_deref(), Some("h"));
        assert_eq!(cl.port, Some(8080));
        assert_eq!(cl.password.as_deref(), Some("x"));
        assert_eq!(cl.command.as_deref(), Some("vm-list"));
        assert_eq!(cl.args.params, vec![("power-state".to_string(), "running".to_string())]);
        assert!(cl.args.minimal);
    }

    #[test]
    fn unknown_command_points_to_help() {
        let err = run(&argv("foo")).unwrap_err();
        expect_test::expect![[r#"
            Unknown command: foo
            For usage run: 'xe help'
        "#]]
        .assert_eq(&err.render());
    }
}
