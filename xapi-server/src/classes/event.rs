//! `event` messages that answer at once; `event.from` and `event.next` wait, and live in `crate::events`.

use xapi_types::model::{self};
use xapi_types::{Class, Message, Value};

use crate::dispatch::{Ctx, Reply};
use crate::error::ApiError;
use crate::events;

fn arg(args: &[Value], i: usize) -> &str {
    args[i].as_str().unwrap_or_default()
}

/// `event.inject(class, ref)`: records a change of the object without changing it, and answers a token from
/// just before it — Xen Orchestra's barrier and starting point.
pub fn inject(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Vec<Value>) -> Result<Reply, ApiError> {
    let (name, r) = (arg(&args, 0), arg(&args, 1));
    let class = model::class_ci(name)
        .filter(|c| c.persistent)
        .ok_or_else(|| ApiError::new(&xapi_types::generated::errors::EVENT_SUBSCRIPTION_PARSE_FAILURE, [name]))?;
    ctx.state.store.transaction(|tx| tx.update(class, r, |_| ()))?;
    let modified = ctx.state.store.get(class, r)?.modified;
    Ok(Reply::Value(Value::Str(events::token_of(modified - 1))))
}

pub fn get_current_id(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, _: Vec<Value>) -> Result<Reply, ApiError> {
    Ok(Reply::Value(Value::Int(ctx.state.store.generation())))
}

pub fn register(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Vec<Value>) -> Result<Reply, ApiError> {
    ctx.state.registrations.register(ctx.state, ctx.session(), args[0].as_array().unwrap_or_default())?;
    Ok(Reply::void())
}

pub fn unregister(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Vec<Value>) -> Result<Reply, ApiError> {
    ctx.state.registrations.unregister(ctx.session(), args[0].as_array().unwrap_or_default())?;
    Ok(Reply::void())
}
