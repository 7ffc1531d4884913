//! `host` messages beyond the generic ones.

use xapi_types::{Class, Message, Value};

use crate::coerce::now_datetime;
use crate::dispatch::{Ctx, Reply};
use crate::error::ApiError;

/// `host.get_servertime` (and `get_server_localtime`: the daemon keeps UTC): the clients' heartbeat.
pub fn get_servertime(
    ctx: &Ctx<'_>,
    class: &'static Class,
    _: &'static Message,
    args: Vec<Value>,
) -> Result<Reply, ApiError> {
    ctx.state.store.get(class, args[0].as_str().unwrap_or_default())?;
    Ok(Reply::Value(Value::DateTime(now_datetime())))
}

/// `host.compute_free_memory`: what a new VM could have (see `hv::memory`).
pub fn compute_free_memory(
    ctx: &Ctx<'_>,
    class: &'static Class,
    _: &'static Message,
    args: Vec<Value>,
) -> Result<Reply, ApiError> {
    ctx.state.store.get(class, args[0].as_str().unwrap_or_default())?;
    Ok(Reply::Value(crate::hv::memory::free_value(ctx.state)))
}

/// `host.compute_memory_overhead`: the host's own overhead (`host.memory_overhead`); the memory the host keeps
/// for itself is shown as the control domain's.
pub fn compute_memory_overhead(
    ctx: &Ctx<'_>,
    class: &'static Class,
    _: &'static Message,
    args: Vec<Value>,
) -> Result<Reply, ApiError> {
    let row = ctx.state.store.get(class, args[0].as_str().unwrap_or_default())?;
    Ok(Reply::Value(crate::hv::rec::Rec::new(class, &row.fields).get("memory_overhead").clone()))
}
