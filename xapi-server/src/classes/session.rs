//! `session`: logging in and out. Session refs are `OpaqueRef:` + a random UUID and act as bearer secrets.
//!
//! Root on the local unix socket (peer uid 0) logs in without a password, as on XenServer, so that `xe` over SSH
//! needs none. Everyone else proves a password against its argon2 hash.

use xapi_types::generated::errors as codes;
use xapi_types::model;
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
    // Root is the local superuser; anyone else must be a local user's subject, with a role.
    let subject = if user == "root" {
        None
    } else {
        match crate::rbac::subject_of_user(&ctx.state.store, user) {
            Some((s, roles)) if !roles.is_empty() => Some(s),
            found => {
                let why = if found.is_some() { "has no role" } else { "is not a subject (subject.create)" };
                tracing::info!(user, peer = ?ctx.peer, why, "login refused");
                return Err(ApiError::new(
                    &codes::SESSION_AUTHORIZATION_FAILED,
                    [user.to_string(), format!("the user {why}: nothing is granted to it")],
                ));
            }
        }
    };
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
    if let Some(sub) = &subject {
        put("subject", Value::Str(sub.clone()));
        put("auth_user_sid", Value::Str(crate::rbac::local_identifier(user)));
        let bits = crate::rbac::user_bits(&ctx.state.store, user);
        put("rbac_permissions", Value::Array(crate::rbac::permissions(bits)));
    }
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
        end(ctx.state, &evicted)?;
    }
    tracing::info!(user, originator, peer = ?ctx.peer, "login");
    Ok(Reply::Value(Value::Str(r.to_string())))
}

/// Ends `sessions` at once: forgotten by the waiting calls and the activity table, and their records deleted
/// (one already gone is no error).
pub fn end<S: AsRef<str>>(state: &crate::state::State, sessions: &[S]) -> Result<(), ApiError> {
    let class = model::class("session").expect("session class");
    for s in sessions {
        state.session_ended(s.as_ref());
    }
    state.store.transaction(|tx| {
        sessions.iter().try_for_each(|s| match tx.delete(class, s.as_ref()) {
            Err(db::DbError::HandleInvalid { .. }) => Ok(()),
            other => other,
        })
    })?;
    Ok(())
}

pub fn logout(ctx: &Ctx<'_>, class: &'static Class, _: &'static Message, _: Vec<Value>) -> Result<Reply, ApiError> {
    let r = ctx.session().clone();
    ctx.state.session_ended(&r);
    ctx.state.store.transaction(|tx| tx.delete(class, &r))?;
    Ok(Reply::void())
}

/// Every permission the session holds (`class.message`, lower case, as xapi names them): for the local superuser
/// every message; for a user, what its subject's roles grant.
pub fn get_rbac_permissions(
    ctx: &Ctx<'_>,
    _: &'static Class,
    _: &'static Message,
    args: Vec<Value>,
) -> Result<Reply, ApiError> {
    let s = arg(&args, 0);
    ctx.state.store.get(model::class("session").expect("session"), s)?;
    let bits = crate::rbac::session_bits(&ctx.state.store, s);
    Ok(Reply::Value(Value::Array(crate::rbac::permissions(bits))))
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
