//! `session`: logging in and out. Session refs are `OpaqueRef:` + a random UUID and act as bearer secrets.
//!
//! Root on the local unix socket (peer uid 0) logs in without a password, as on XenServer, so that `xe` over SSH
//! needs none. Everyone else proves a password against its argon2 hash.

use xapi_types::generated::errors as codes;
use xapi_types::model::{self, Lifecycle, Roles};
use xapi_types::{Class, Message, Value};

use crate::auth;
use crate::coerce::now_datetime;
use crate::db::{self, Ref};
use crate::dispatch::{Ctx, Reply};
use crate::error::ApiError;

fn arg(args: &[Value], i: usize) -> &str {
    args[i].as_str().unwrap_or_default()
}

/// `session.login_with_password(uname, pwd, version?, originator?)`; the version is ignored, as xapi does.
pub fn login_with_password(
    ctx: &Ctx<'_>,
    class: &'static Class,
    _: &'static Message,
    args: Vec<Value>,
) -> Result<Reply, ApiError> {
    let (user, password, originator) = (arg(&args, 0), arg(&args, 1), arg(&args, 3));
    let trusted = ctx.peer.is_local_root() && user == "root";
    if !trusted && !auth::verify(&ctx.state.store, user, password)? {
        tracing::info!(user, peer = ?ctx.peer, "login refused");
        return Err(ApiError::new(&codes::SESSION_AUTHENTICATION_FAILED, std::iter::empty::<String>()));
    }
    let client = crate::state::Client::new(user, originator, Some(ctx.peer));
    let evicted = ctx.state.admit_session(&client).map_err(|held| {
        tracing::warn!(user, originator, peer = ?ctx.peer, held, "login refused: the user's session limit");
        ApiError::new(
            &codes::SESSION_AUTHORIZATION_FAILED,
            [
                user.to_string(),
                format!(
                    "{user} holds {held} sessions, the most a user may (--sessions-per-user): log out unused ones, \
                     or wait for idle ones to expire"
                ),
            ],
        )
    })?;
    let r = db::new_ref();
    let now = Value::DateTime(now_datetime());
    let mut fields = db::default_row(class);
    let mut put = |name: &str, v: Value| {
        let (i, _) = class.field(name).expect("session field");
        fields[i] = v;
    };
    put("uuid", Value::Str(db::new_uuid()));
    put("this_host", Value::Str(ctx.state.host.to_string()));
    put("last_active", now.clone());
    put("validation_time", now);
    put("is_local_superuser", Value::Bool(user == "root"));
    put("auth_user_name", Value::str(user));
    put("originator", Value::str(originator));
    ctx.state.store.transaction(|tx| tx.insert(class, &r, fields))?;
    let r: Ref = r.into();
    ctx.state.session_started(r.clone(), client);
    if !evicted.is_empty() {
        tracing::info!(
            user,
            originator,
            peer = ?ctx.peer,
            ended = evicted.len(),
            "session limit: this client's least recently used sessions ended"
        );
        for old in &evicted {
            ctx.state.session_ended(old);
        }
        ctx.state.store.transaction(|tx| {
            evicted.iter().try_for_each(|old| match tx.delete(class, old) {
                Err(db::DbError::HandleInvalid { .. }) => Ok(()),
                other => other,
            })
        })?;
    }
    tracing::info!(user, originator, peer = ?ctx.peer, "login");
    Ok(Reply::Value(Value::Str(r.to_string())))
}

pub fn logout(ctx: &Ctx<'_>, class: &'static Class, _: &'static Message, _: Vec<Value>) -> Result<Reply, ApiError> {
    let r = ctx.session().clone();
    ctx.state.session_ended(&r);
    ctx.state.store.transaction(|tx| tx.delete(class, &r))?;
    Ok(Reply::void())
}

/// Every permission the session holds: for the local superuser, every message a pool-admin may call, named as
/// xapi names permissions (`class.message`, lower case).
pub fn get_rbac_permissions(
    ctx: &Ctx<'_>,
    class: &'static Class,
    _: &'static Message,
    args: Vec<Value>,
) -> Result<Reply, ApiError> {
    let row = ctx.state.store.get(class, arg(&args, 0))?;
    let (su, _) = class.field("is_local_superuser").expect("field");
    let (stored, _) = class.field("rbac_permissions").expect("field");
    if row.fields[su] != Value::Bool(true) {
        return Ok(Reply::Value(row.fields[stored].clone()));
    }
    let admin = Roles::NAMES.iter().position(|n| *n == "pool-admin").expect("pool-admin");
    let mut perms = Vec::new();
    for c in model::classes() {
        for m in c.messages {
            if m.lifecycle != Lifecycle::Removed && m.roles.0 & (1 << admin) != 0 {
                perms.push(Value::Str(format!("{}.{}", c.name, m.name).to_lowercase()));
            }
        }
    }
    Ok(Reply::Value(Value::Array(perms)))
}

/// `session.change_password(old, new)` for the session's own local user.
pub fn change_password(
    ctx: &Ctx<'_>,
    class: &'static Class,
    _: &'static Message,
    args: Vec<Value>,
) -> Result<Reply, ApiError> {
    let row = ctx.state.store.get(class, ctx.session())?;
    let (ui, _) = class.field("auth_user_name").expect("field");
    let user = row.fields[ui].as_str().unwrap_or_default().to_string();
    let (old, new) = (arg(&args, 0), arg(&args, 1));
    if !auth::verify(&ctx.state.store, &user, old)? {
        return Err(ApiError::new(&codes::SESSION_AUTHENTICATION_FAILED, std::iter::empty::<String>()));
    }
    auth::set_password(&ctx.state.store, &user, new)?;
    tracing::info!(user, "password changed");
    Ok(Reply::void())
}
