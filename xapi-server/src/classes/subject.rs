//! `subject`: the users RBAC knows. xapi's subjects come from an external directory (Active Directory); ours are
//! local users: `subject_identifier` `local:<name>` (or `other_config:subject-name` = name, from which the
//! identifier is made), whose password is given once, at creation, as `other_config:password` — hashed (argon2)
//! into the store's `_local_user` table and never kept in the record. Roles are added and removed with
//! `add_to_roles`/`remove_from_roles` (role refs, `role.get_by_name_label`); a new subject holds none (xapi's
//! default is pool-admin), and a user without a role cannot log in.

use xapi_types::generated::errors as codes;
use xapi_types::{Class, Message, Value};

use crate::auth;
use crate::dispatch::{Ctx, Reply};
use crate::error::ApiError;
use crate::generic;
use crate::hv::rec::{Rec, class, set};
use crate::rbac;

fn arg(args: &[Value], i: usize) -> &str {
    args.get(i).and_then(Value::as_str).unwrap_or_default()
}

/// `subject.create(record)`: a local user (see the module header).
pub fn create(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Vec<Value>) -> Result<Reply, ApiError> {
    let (r, mut f) = generic::new_row(ctx, c, args)?;
    let mut other: Vec<(String, Value)> = Rec::new(c, &f).get("other_config").as_struct().unwrap_or_default().to_vec();
    let password = other.iter().position(|(k, _)| k == "password").map(|i| other.remove(i).1);
    let id = Rec::new(c, &f).str("subject_identifier").to_string();
    let name = match (id.strip_prefix("local:"), other.iter().find(|(k, _)| k == "subject-name")) {
        (Some(n), _) => n.to_string(),
        (None, Some((_, n))) if id.is_empty() => n.as_str().unwrap_or_default().to_string(),
        _ => {
            return Err(ApiError::new(
                &codes::AUTH_SERVICE_ERROR,
                ["subjects here are local users: give subject_identifier local:<name> or other_config:subject-name"],
            ));
        }
    };
    let valid = !name.is_empty()
        && name != "root"
        && name.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-@".contains(ch))
        && name.len() <= 64;
    if !valid {
        return Err(ApiError::invalid_value("subject-name", &name));
    }
    if rbac::subject_of_user(&ctx.state.store, &name).is_some() {
        return Err(ApiError::new(&codes::SUBJECT_ALREADY_EXISTS, std::iter::empty::<String>()));
    }
    if !other.iter().any(|(k, _)| k == "subject-name") {
        other.push(("subject-name".into(), Value::str(name.clone())));
    }
    set(c, &mut f, "subject_identifier", rbac::local_identifier(&name));
    // xapi's default is its pool-admin role; a new user here holds nothing until a role is added.
    set(c, &mut f, "roles", Value::Array(vec![]));
    set(c, &mut f, "other_config", Value::Struct(other));
    if let Some(p) = password.as_ref().and_then(Value::as_str) {
        if p.is_empty() {
            return Err(ApiError::invalid_value("password", ""));
        }
        auth::set_password(&ctx.state.store, &name, p)?;
    }
    ctx.state.store.transaction(|tx| tx.insert(c, &r, f))?;
    tracing::info!(user = name, "local user made");
    Ok(Reply::Value(Value::Str(r)))
}

/// `subject.destroy`: the subject goes; its sessions end (they held its roles).
pub fn destroy(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Vec<Value>) -> Result<Reply, ApiError> {
    let s = arg(&args, 0).to_string();
    ctx.state.store.get(c, &s)?;
    end_sessions(ctx, &s)?;
    ctx.state.store.transaction(|tx| tx.delete(c, &s))?;
    Ok(Reply::void())
}

/// Ends the sessions of subject `s` (its roles changed or it went).
fn end_sessions(ctx: &Ctx<'_>, s: &str) -> Result<(), ApiError> {
    let sc = class("session");
    let theirs: Vec<String> = ctx
        .state
        .store
        .filter(sc, |row| Rec::new(sc, &row.fields).str("subject") == s)
        .into_iter()
        .map(|(r, _)| r.to_string())
        .collect();
    super::session::end(ctx.state, &theirs)
}

fn change_roles(ctx: &Ctx<'_>, c: &'static Class, args: &[Value], add: bool) -> Result<Reply, ApiError> {
    let (s, role) = (arg(args, 0), arg(args, 1));
    let row = ctx.state.store.get(c, s)?;
    ctx.state.store.get(class("role"), role)?;
    let mut roles: Vec<Value> = Rec::new(c, &row.fields).get("roles").as_array().unwrap_or_default().to_vec();
    let has = roles.iter().any(|r| r.as_str() == Some(role));
    match (add, has) {
        (true, true) | (false, false) => return Ok(Reply::void()),
        (true, false) => roles.push(Value::str(role)),
        (false, true) => roles.retain(|r| r.as_str() != Some(role)),
    }
    ctx.state.store.transaction(|tx| tx.update(c, s, |f| set(c, f, "roles", Value::Array(roles))))?;
    // Sessions keep the roles they logged in with nowhere: every call reads the subject's. Nothing to end.
    Ok(Reply::void())
}

pub fn add_to_roles(
    ctx: &Ctx<'_>,
    c: &'static Class,
    _: &'static Message,
    args: Vec<Value>,
) -> Result<Reply, ApiError> {
    change_roles(ctx, c, &args, true)
}

pub fn remove_from_roles(
    ctx: &Ctx<'_>,
    c: &'static Class,
    _: &'static Message,
    args: Vec<Value>,
) -> Result<Reply, ApiError> {
    change_roles(ctx, c, &args, false)
}
