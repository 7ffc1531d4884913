//! `subject-add`, `subject-remove`, `subject-role-add`, `subject-role-remove`: local users and their roles
//! (`docs/rbac.md`). xe's `subject-add` names a directory user; ours makes a local user, whose password is given
//! with `password=` (or read from the file `password-file=`, which keeps it out of the shell's history).

use xapi_types::Value;

use super::{Special, by_uuid_param, call_op, uuid_line};
use crate::client::Client;
use crate::commands::Args;
use crate::error::XeError;

pub const SPECIALS: &[Special] = &[
    Special {
        name: "subject-add",
        reqd: &["subject-name"],
        optional: &["password", "password-file"],
        description: "Makes a local user (a subject with no role yet: add one with subject-role-add) and prints \
                      its uuid. The password is given with password= or read from password-file=.",
        run: subject_add,
    },
    Special {
        name: "subject-remove",
        reqd: &["subject-uuid"],
        optional: &[],
        description: "Removes the subject; its sessions end.",
        run: subject_remove,
    },
    Special {
        name: "subject-role-add",
        reqd: &["uuid"],
        optional: &["role-name", "role-uuid"],
        description: "Gives the subject a role: pool-admin, pool-operator, vm-power-admin, vm-admin, vm-operator \
                      or read-only.",
        run: role_add,
    },
    Special {
        name: "subject-role-remove",
        reqd: &["uuid"],
        optional: &["role-name", "role-uuid"],
        description: "Takes a role from the subject.",
        run: role_remove,
    },
];

fn subject_add(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let name = args.require("subject-name")?;
    let password = match (args.get("password"), args.get("password-file")) {
        (Some(p), None) => p.to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .map_err(|e| XeError::Failure(format!("Cannot read the file {f}: {e}")))?
            .trim_end_matches(['\n', '\r'])
            .to_string(),
        _ => return Err(XeError::Failure("Give the password with password= or password-file=.".into())),
    };
    let other =
        Value::Struct(vec![("subject-name".into(), Value::str(name)), ("password".into(), Value::Str(password))]);
    let r = call_op(client, "subject.create", vec![Value::Struct(vec![("other_config".into(), other)])])?;
    uuid_line(client, "subject", &r)
}

fn subject_remove(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let s = by_uuid_param(client, args, "subject-uuid", "subject")?;
    call_op(client, "subject.destroy", vec![s])?;
    Ok(String::new())
}

fn role_of(client: &Client, args: &Args) -> Result<Value, XeError> {
    match (args.get("role-name"), args.get("role-uuid")) {
        (Some(n), None) => {
            let found = call_op(client, "role.get_by_name_label", vec![Value::str(n)])?;
            found
                .as_array()
                .and_then(|a| a.first())
                .cloned()
                .ok_or_else(|| XeError::Failure(format!("No role is named '{n}'.")))
        }
        (None, Some(_)) => by_uuid_param(client, args, "role-uuid", "role"),
        _ => Err(XeError::Failure("Give the role with role-name= or role-uuid=.".into())),
    }
}

fn role_add(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let s = by_uuid_param(client, args, "uuid", "subject")?;
    let role = role_of(client, args)?;
    call_op(client, "subject.add_to_roles", vec![s, role])?;
    Ok(String::new())
}

fn role_remove(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let s = by_uuid_param(client, args, "uuid", "subject")?;
    let role = role_of(client, args)?;
    call_op(client, "subject.remove_from_roles", vec![s, role])?;
    Ok(String::new())
}
