//! `xe`: the command line administrators script against (`xe vm-list`, `xe vm-param-get uuid=… param-name=…`).
//!
//! ```text
//! xe <command> [param=value …] [--minimal] [--multiple] [--force] [--progress]
//!    [-s HOST [-p PORT] -u USER (-pw PASSWORD | -pwf FILE)] [--nossl | --cacert FILE]
//! xe help [<command> | --all] [--minimal]
//! ```
//!
//! A normal XenAPI client of the daemon: XML-RPC through `xapi_types::wire` over HTTP, on the local unix socket
//! (`$XE_SOCKET`, else `/var/lib/xcp/xapi`, where root logs in without a password) or, with `-s`, over HTTPS (port
//! 443 unless `-p`; any certificate, unless `--cacert` names the CA to check it against) or, with `--nossl` or
//! `-s 127.0.0.1` (without `--cacert`), plain TCP (port 80 unless `-p`), as XenServer's xe ("never use SSL
//! on-host"). Output and errors
//! follow xe's.

#![forbid(unsafe_code)]

mod client;
mod columns;
mod commands;
mod error;
mod format;
mod http;
mod ops;
mod params;

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
    /// `--nossl`: plain HTTP.
    nossl: bool,
    /// `--cacert FILE`: verify the server's certificate against the CAs of this PEM file.
    cacert: Option<PathBuf>,
    command: Option<String>,
    /// `xe help <command>`: the command.
    topic: Option<String>,
    /// `--all` (for `xe help --all`).
    all: bool,
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
            "--nossl" => cl.nossl = true,
            "--cacert" => cl.cacert = Some(value(a)?.into()),
            "--minimal" => cl.args.minimal = true,
            "--multiple" => cl.args.multiple = true,
            "--force" => cl.args.force = true,
            "--progress" => cl.args.progress = true,
            "--all" => cl.all = true,
            _ if a.starts_with("--") => return Err(XeError::Usage(format!("Unknown option: {a}"))),
            _ => match a.split_once('=') {
                Some((k, v)) => cl.args.params.push((k.to_string(), v.to_string())),
                None if cl.command.is_none() => cl.command = Some(a.clone()),
                None if cl.command.as_deref() == Some("help") && cl.topic.is_none() => cl.topic = Some(a.clone()),
                None => return Err(XeError::Usage(format!("Syntax error: '{a}' is not of the form param=value."))),
            },
        }
    }
    Ok(cl)
}

/// Every command name, sorted: the generic ones, the hand-written ones and `help`.
fn command_names() -> Vec<String> {
    let mut names = commands::all_commands();
    names.extend(ops::specials().map(|s| s.name.to_string()));
    names.push("help".into());
    names.sort();
    names
}

fn help(all: bool, minimal: bool) -> String {
    if minimal {
        return format::minimal(&command_names());
    }
    let mut out = String::from(
        "Usage: xe <command> [-s server] [-p port] [-u username] [-pw password | -pwf password-file]\n\
         \x20         [--nossl | --cacert ca-file] [param=value …] [--minimal] [--multiple] [--force] [--progress]\n\n\
         Without -s, xe talks to the local daemon on $XE_SOCKET (default /var/lib/xcp/xapi) as root.\n\
         With -s, it uses HTTPS (port 443) and accepts any certificate unless --cacert is given; --nossl (or\n\
         -s 127.0.0.1 without --cacert) uses plain HTTP (port 80).\n\
         'xe help <command>' describes one command; 'xe help --all' lists them all.\n\n",
    );
    if all {
        out.push_str("Commands:\n");
        for c in command_names() {
            out.push_str(&format!("    {c}\n"));
        }
    } else {
        out.push_str("Common commands:\n");
        let common = ["vm-list", "vm-param-list", "vm-param-get", "vm-param-set", "vm-start", "vm-shutdown"];
        for c in common.iter().chain(&["host-list", "sr-list", "vdi-list", "network-list", "task-list", "event-wait"]) {
            out.push_str(&format!("    {c}\n"));
        }
    }
    out
}

/// What a generic command does, for `xe help <command>`.
fn generic_description(subject: &commands::Subject, op: commands::Op) -> String {
    let c = &subject.noun;
    match op {
        commands::Op::List => {
            let shown: Vec<String> = columns::defaults(c, subject.class).into_iter().map(|col| col.name).collect();
            let shown = if shown.len() == subject.class.fields.len() { "all fields".into() } else { shown.join(", ") };
            format!(
                "Lists the {c} objects, with optional filters field=value or map:key=value, the fields to show in \
                 params=a,b|all (default: {shown})."
            )
        }
        commands::Op::ParamList => format!("Lists all the parameters of the {c} object, with their values."),
        commands::Op::ParamGet => {
            format!("Gets the parameter param-name of the {c} object (the key param-key of a map parameter).")
        }
        commands::Op::ParamSet => {
            format!("Sets parameters of the {c} object: field=value, and map:key=value for map parameters.")
        }
        commands::Op::ParamAdd => format!(
            "Adds to a set or map parameter of the {c} object. If the parameter is a set, use param-key=<value to \
             add>; if it is a map, pass the pairs to add as key=value."
        ),
        commands::Op::ParamRemove => format!(
            "Removes a key from a map parameter, or a value from a set parameter, of the {c} object (param-key)."
        ),
        commands::Op::ParamClear => format!("Empties a set or map parameter of the {c} object."),
    }
}

/// `xe help <command>`, in xe's layout; with `--minimal` the parameter names, comma-separated (for completion).
fn command_help(name: &str, minimal: bool) -> Result<String, XeError> {
    let (reqd, optional, description) = if let Some((subject, op)) = commands::resolve(name) {
        let (reqd, optional) = ops::generic_params(&subject, op);
        (reqd, optional, generic_description(&subject, op))
    } else if let Some(s) = ops::special(name) {
        let v = |p: &[&str]| p.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        (v(s.reqd), v(s.optional), s.description.to_string())
    } else if name == "help" {
        (vec![], vec!["<command>".into(), "--all".into()], "Describes a command, or lists them all.".into())
    } else {
        return Err(XeError::Usage(format!("Unknown command: {name}\nFor usage run: 'xe help'")));
    };
    if minimal {
        let names: Vec<String> =
            reqd.iter().chain(&optional).filter(|p| !p.starts_with('<') && !p.starts_with("--")).cloned().collect();
        return Ok(format::minimal(&names));
    }
    Ok(format!(
        "command name            : {name}\n        reqd params     : {}\n        optional params : {}\n        \
         description     : {description}\n",
        reqd.join(", "),
        optional.join(", ")
    ))
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
    Client::login(target(host, cl), user, &password)
}

/// Where `-s HOST` leads: HTTPS, unless `--nossl` or the host is `127.0.0.1` (XenServer's xe never uses TLS on
/// the host itself) without `--cacert` (which asks for TLS).
fn target(host: &str, cl: &CommandLine) -> Target {
    if cl.nossl || (host == "127.0.0.1" && cl.cacert.is_none()) {
        return Target::Tcp { host: host.to_string(), port: cl.port.unwrap_or(80) };
    }
    let verify = match &cl.cacert {
        Some(file) => http::Verify::Ca(file.clone()),
        None => http::Verify::Nothing,
    };
    Target::Tls { host: host.to_string(), port: cl.port.unwrap_or(443), verify }
}

/// Runs the command line; the text for stdout on success.
fn run(argv: &[String]) -> Result<String, XeError> {
    let cl = parse(argv)?;
    let command = match (cl.command.as_deref(), &cl.topic) {
        (Some("help"), Some(topic)) => return command_help(topic, cl.args.minimal),
        (None | Some("help"), _) => return Ok(help(cl.all, cl.args.minimal)),
        (Some(c), _) => c,
    };
    let generic = commands::resolve(command);
    let special = ops::special(command);
    if generic.is_none() && special.is_none() {
        return Err(XeError::Usage(format!("Unknown command: {command}\nFor usage run: 'xe help'")));
    }
    if let Some(s) = special {
        ops::check_required(s, &cl.args)?;
    }
    let mut client = connect(&cl)?;
    let result = match (generic, special) {
        (Some((subject, op)), _) => commands::run(&mut client, &subject, op, &cl.args),
        (None, Some(s)) => ops::run(&mut client, s, &cl.args),
        (None, None) => unreachable!("checked above"),
    };
    let result = result.map_err(|e| client.name_error_refs(e));
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
        assert_eq!(target("h", &cl), Target::Tcp { host: "h".into(), port: 8080 });
        let cl = parse(&argv("-s h vm-list --cacert ca.pem")).unwrap();
        let tls = Target::Tls { host: "h".into(), port: 443, verify: http::Verify::Ca("ca.pem".into()) };
        assert_eq!(target("h", &cl), tls);
        let cl = parse(&argv("-s 127.0.0.1 vm-list")).unwrap();
        assert_eq!(target("127.0.0.1", &cl), Target::Tcp { host: "127.0.0.1".into(), port: 80 });
        assert_eq!(
            target("localhost", &cl),
            Target::Tls { host: "localhost".into(), port: 443, verify: http::Verify::Nothing }
        );
    }

    #[test]
    fn help_for_a_command_is_generated_from_the_datamodel() {
        expect_test::expect![[r#"
            command name            : vm-param-get
                    reqd params     : uuid, param-name
                    optional params : param-key
                    description     : Gets the parameter param-name of the vm object (the key param-key of a map parameter).
        "#]]
        .assert_eq(&run(&argv("help vm-param-get")).unwrap());
        expect_test::expect![[r#"
            command name            : vm-start
                    reqd params     : 
                    optional params : uuid, vm, <field>=<value>, --multiple, force, paused, on
                    description     : Starts the selected VMs (paused with paused=true; on the host on=<name-label or uuid> if given); force=true (or --force) is passed to VM.start.
        "#]]
        .assert_eq(&run(&argv("help vm-start")).unwrap());
        expect_test::expect![[r#"
            command name            : vbd-list
                    reqd params     : 
                    optional params : params, vbd, uuid, allowed-operations, current-operations, VM, VDI, device, userdevice, bootable, mode, type, unpluggable, storage-lock, empty, other-config, currently-attached, status-code, status-detail, runtime-properties, qos-algorithm-type, qos-algorithm-params, qos-supported-algorithms, metrics
                    description     : Lists the vbd objects, with optional filters field=value or map:key=value, the fields to show in params=a,b|all (default: uuid, vm-uuid, vm-name-label, vdi-uuid, empty, device).
        "#]]
        .assert_eq(&run(&argv("help vbd-list")).unwrap());
        assert!(run(&argv("help message-list")).unwrap().contains("(default: all fields)."));
        expect_test::expect![[r#"
            uuid,param-name
        "#]]
        .assert_eq(&run(&argv("help pool-param-clear --minimal")).unwrap());
        let set = run(&argv("help vm-param-set --minimal")).unwrap();
        assert!(set.starts_with("uuid,name-label,name-description,"), "{set}");
        assert!(set.contains(",other-config:,"), "{set}");
        assert!(!set.contains("power-state"), "read-only fields are not settable: {set}");
    }

    #[test]
    fn help_all_lists_every_command() {
        let all = run(&argv("help --all --minimal")).unwrap();
        let names: Vec<&str> = all.trim().split(',').collect();
        for c in ["vm-list", "vm-param-add", "vm-param-remove", "vm-param-clear", "task-cancel", "event-wait", "help"] {
            assert!(names.contains(&c), "{c} missing");
        }
        assert!(run(&argv("help --all")).unwrap().contains("\n    vm-unpause\n"));
        assert!(run(&argv("help nothing-such")).is_err());
    }

    #[test]
    fn help_describes_the_storage_commands() {
        expect_test::expect![[r#"
            command name            : vdi-create
                    reqd params     : sr-uuid, name-label, virtual-size
                    optional params : type, sharable, read-only, sm-config:, tags:
                    description     : Creates a VDI of virtual-size (bytes, or with a suffix KiB, MiB, GiB, TiB) on the SR and prints its uuid. Type is 'system', 'user' (the default), 'suspend' or 'crashdump'.
        "#]]
        .assert_eq(&run(&argv("help vdi-create")).unwrap());
        expect_test::expect![[r#"
            name-label,type,name-description,host-uuid,device-config:,shared,physical-size,content-type,sm-config:
        "#]]
        .assert_eq(&run(&argv("help sr-create --minimal")).unwrap());
        let all = run(&argv("help --all --minimal")).unwrap();
        let names: Vec<&str> = all.trim().split(',').collect();
        let storage = [
            "sr-create",
            "sr-introduce",
            "sr-forget",
            "sr-destroy",
            "sr-scan",
            "sr-probe",
            "pbd-create",
            "pbd-plug",
            "pbd-unplug",
            "pbd-destroy",
            "vdi-create",
            "vdi-destroy",
            "vdi-resize",
            "vdi-snapshot",
            "vdi-clone",
            "vdi-copy",
            "vdi-introduce",
            "vdi-forget",
            "vbd-create",
            "vbd-destroy",
            "vbd-plug",
            "vbd-unplug",
            "vbd-eject",
            "vbd-insert",
            "vm-disk-add",
            "vm-disk-list",
            "vm-cd-add",
            "vm-cd-insert",
            "vm-cd-eject",
            "vm-cd-remove",
            "vm-copy",
            "vm-snapshot",
            "vm-uninstall",
            "template-list",
            "template-param-set",
            "template-uninstall",
            "snapshot-list",
            "snapshot-param-list",
            "snapshot-uninstall",
            "snapshot-destroy",
            "snapshot-disk-list",
            "snapshot-clone",
            "snapshot-copy",
            "vdi-import",
            "vdi-export",
        ];
        for c in storage {
            assert!(names.contains(&c), "{c} missing from help --all");
            let help = run(&argv(&format!("help {c}"))).unwrap();
            assert!(help.starts_with(&format!("command name            : {c}\n")), "{help}");
        }
    }

    #[test]
    fn help_describes_vdi_import_and_export() {
        expect_test::expect![[r#"
            command name            : vdi-import
                    reqd params     : filename
                    optional params : uuid, sr-uuid, name-label, virtual-size, format, --progress
                    description     : Replaces the content of the VDI uuid= with the disk image in filename. Format is 'raw', 'vhd' or 'vmdk'; without format=, 'vhd' for a file name ending in .vhd, 'vmdk' for .vmdk, else 'raw'. The VDI must be at least as large as the image. A differencing VHD (vdi-export base=) is applied onto a VDI holding its base. With sr-uuid= instead of uuid=, a new VDI of the image's size is made in that SR (name-label= defaults to the file's name; virtual-size= overrides the size) and its uuid printed. A progress bar is shown on a terminal (--progress: always).
        "#]]
        .assert_eq(&run(&argv("help vdi-import")).unwrap());
        assert_eq!(run(&argv("help vdi-export --minimal")).unwrap(), "uuid,filename,format,base\n");
        let err = run(&argv("vdi-import uuid=x")).unwrap_err();
        assert_eq!(err.render(), "Required parameter not found: filename\nFor usage run: 'xe help'\n");
        assert!(parse(&argv("vdi-export uuid=x filename=y --progress")).unwrap().args.progress);
    }

    #[test]
    fn a_missing_required_parameter_is_reported_before_connecting() {
        let err = run(&argv("vdi-create name-label=x virtual-size=1")).unwrap_err();
        expect_test::expect![[r#"
            Required parameter not found: sr-uuid
            For usage run: 'xe help'
        "#]]
        .assert_eq(&err.render());
    }

    #[test]
    fn parses_selector_flags() {
        let cl = parse(&argv("vm-shutdown power-state=running --multiple --force")).unwrap();
        assert!(cl.args.multiple && cl.args.force);
        let cl = parse(&argv("help vm-list")).unwrap();
        assert_eq!(cl.topic.as_deref(), Some("vm-list"));
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
