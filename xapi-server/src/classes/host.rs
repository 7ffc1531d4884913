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
