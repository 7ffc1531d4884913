//! `task` messages: tasks made by clients (`task.create`, for HTTP handlers' `task_id`), cancel and destroy.
//! The machinery of running work as a task is `crate::tasks`.

use xapi_types::{Class, Message, Value};

use crate::dispatch::{Ctx, Reply};
use crate::error::ApiError;
use crate::tasks;

fn arg(args: &[Value], i: usize) -> &str {
    args[i].as_str().unwrap_or_default()
}

/// `task.create(label, description)`: a pending task owned by the caller's session.
pub fn create(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Vec<Value>) -> Result<Reply, ApiError> {
    let r = tasks::create(ctx.state, ctx.session(), arg(&args, 0), arg(&args, 1))?;
    Ok(Reply::Value(Value::Str(r.to_string())))
}

pub fn cancel(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Vec<Value>) -> Result<Reply, ApiError> {
    tasks::cancel(ctx.state, arg(&args, 0))?;
    Ok(Reply::void())
}

pub fn destroy(ctx: &Ctx<'_>, _: &'static Class, _: &'static Message, args: Vec<Value>) -> Result<Reply, ApiError> {
    tasks::destroy(ctx.state, arg(&args, 0))?;
    Ok(Reply::void())
}
