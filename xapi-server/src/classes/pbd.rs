//! `PBD` messages: a PBD connects an SR to this host; plugging it attaches the SR (see `storage`).

use xapi_types::generated::errors as codes;
use xapi_types::{Class, Message, Value};

use crate::dispatch::{Ctx, Reply};
use crate::error::ApiError;
use crate::generic;
use crate::hv::rec::{Rec, class};
use crate::storage;

type Args = Vec<Value>;

fn pbd_arg(args: &[Value]) -> &str {
    args.first().and_then(Value::as_str).unwrap_or_default()
}

/// `PBD.create`: one PBD per host and SR.
pub fn create(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let (r, f) = generic::new_row(ctx, c, args)?;
    let rec = Rec::new(c, &f);
    let (host, sr) = (rec.str("host").to_string(), rec.str("SR").to_string());
    ctx.state.store.get(class("host"), &host)?;
    let sr_row = ctx.state.store.get(class("SR"), &sr)?;
    for p in Rec::new(class("SR"), &sr_row.fields).refs("PBDs") {
        if ctx.state.store.get(c, p).is_ok_and(|row| Rec::new(c, &row.fields).str("host") == host) {
            return Err(ApiError::new(&codes::PBD_EXISTS, [sr.clone(), host.clone(), p.to_string()]));
        }
    }
    ctx.state.store.transaction(|tx| tx.insert(c, &r, f))?;
    Ok(Reply::Value(Value::Str(r)))
}

/// `PBD.destroy`: only an unplugged PBD.
pub fn destroy(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let r = pbd_arg(&args);
    let row = ctx.state.store.get(c, r)?;
    if Rec::new(c, &row.fields).bool("currently_attached") {
        return Err(ApiError::new(&codes::OPERATION_NOT_ALLOWED, ["PBD is currently attached"]));
    }
    ctx.state.store.transaction(|tx| tx.delete(c, r))?;
    Ok(Reply::void())
}

pub fn plug(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let r = pbd_arg(&args);
    let row = ctx.state.store.get(c, r)?;
    if Rec::new(c, &row.fields).bool("currently_attached") {
        // xapi answers a plug of a plugged PBD with success.
        return Ok(Reply::void());
    }
    storage::plug(ctx.state, r)?;
    Ok(Reply::void())
}

pub fn unplug(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    let r = pbd_arg(&args);
    let row = ctx.state.store.get(c, r)?;
    if !Rec::new(c, &row.fields).bool("currently_attached") {
        return Ok(Reply::void());
    }
    storage::unplug(ctx.state, r)?;
    Ok(Reply::void())
}

pub fn set_device_config(ctx: &Ctx<'_>, c: &'static Class, _: &'static Message, args: Args) -> Result<Reply, ApiError> {
    super::sr::set_field(ctx, c, &args, "device_config")
}
