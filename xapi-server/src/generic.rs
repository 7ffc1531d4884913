//! The implicit messages every stored class has, implemented once for all of them from the datamodel:
//! records, lookups, getters, setters, map and set edits, `create` and `destroy`.

use xapi_types::generated::errors as codes;
use xapi_types::model::Qualifier;
use xapi_types::{Class, Message, MsgKind, Value};

use crate::coerce::coerce;
use crate::db;
use crate::dispatch::{Ctx, Reply};
use crate::error::ApiError;
use crate::where_expr;

fn str_arg(args: &[Value], i: usize) -> &str {
    args[i].as_str().expect("dispatch typed string parameters")
}

pub fn run(ctx: &Ctx<'_>, class: &'static Class, msg: &'static Message, args: Vec<Value>) -> Result<Reply, ApiError> {
    let store = &ctx.state.store;
    match msg.kind {
        MsgKind::GetRecord => Ok(Reply::Record(class, store.get(class, str_arg(&args, 0))?)),
        MsgKind::GetByUuid => Ok(Reply::Value(Value::Str(store.by_uuid(class, str_arg(&args, 0))?.to_string()))),
        MsgKind::GetByNameLabel => {
            let (i, _) = class.field("name_label").ok_or_else(|| ApiError::not_implemented(ctx.method))?;
            let label = str_arg(&args, 0);
            let refs = store.filter(class, |row| row.fields[i].as_str() == Some(label));
            Ok(refs_reply(refs))
        }
        MsgKind::GetAll => Ok(refs_reply(store.all(class))),
        MsgKind::GetAllRecords => Ok(Reply::Records(class, store.all(class))),
        MsgKind::GetAllWhere | MsgKind::GetAllRecordsWhere => {
            let expr = where_expr::parse(class, str_arg(&args, 0)).map_err(|e| ApiError::invalid_value("expr", &e))?;
            let rows = store.filter(class, |row| where_expr::eval(&expr, &row.fields));
            Ok(if msg.kind == MsgKind::GetAllWhere { refs_reply(rows) } else { Reply::Records(class, rows) })
        }
        MsgKind::Get(i) => {
            let row = store.get(class, str_arg(&args, 0))?;
            Ok(Reply::Value(row.fields[usize::from(i)].clone()))
        }
        MsgKind::Set(i) => {
            let mut args = args;
            let value = args.pop().expect("setters take a value");
            store.transaction(|tx| tx.set(class, str_arg(&args, 0), usize::from(i), value))?;
            Ok(Reply::void())
        }
        MsgKind::MapAdd(i) => map_add(ctx, class, usize::from(i), args),
        MsgKind::MapRemove(i) => edit(ctx, class, &args, i, |v| {
            if let Value::Struct(m) = v {
                let key = str_arg(&args, 1);
                m.retain(|(k, _)| k != key);
            }
        }),
        MsgKind::SetAdd(i) => edit(ctx, class, &args, i, |v| {
            if let Value::Array(items) = v
                && !items.contains(&args[1])
            {
                items.push(args[1].clone());
            }
        }),
        MsgKind::SetRemove(i) => edit(ctx, class, &args, i, |v| {
            if let Value::Array(items) = v {
                items.retain(|x| *x != args[1]);
            }
        }),
        MsgKind::Create => create(ctx, class, args),
        MsgKind::Destroy => {
            store.transaction(|tx| tx.delete(class, str_arg(&args, 0)))?;
            Ok(Reply::void())
        }
        MsgKind::Custom => Err(ApiError::not_implemented(ctx.method)),
    }
}

fn refs_reply(rows: Vec<(db::Ref, std::sync::Arc<db::Row>)>) -> Reply {
    Reply::Value(Value::Array(rows.into_iter().map(|(r, _)| Value::Str(r.to_string())).collect()))
}

/// Changes one field of `args[0]` in place.
fn edit(
    ctx: &Ctx<'_>,
    class: &'static Class,
    args: &[Value],
    field: u16,
    f: impl FnOnce(&mut Value),
) -> Result<Reply, ApiError> {
    ctx.state
        .store
        .transaction(|tx| tx.update(class, str_arg(args, 0), |fields| f(&mut fields[usize::from(field)])))?;
    Ok(Reply::void())
}

/// `add_to_<map>(self, key, value)`: `MAP_DUPLICATE_KEY` if the key is there already, as xapi answers.
fn map_add(ctx: &Ctx<'_>, class: &'static Class, field: usize, args: Vec<Value>) -> Result<Reply, ApiError> {
    let (self_ref, key, value) = (str_arg(&args, 0), str_arg(&args, 1).to_string(), args[2].clone());
    let uuid_i = class.field("uuid").map(|(i, _)| i);
    ctx.state.store.transaction(|tx| {
        let dup = tx.update(class, self_ref, |fields| {
            let uuid = uuid_i.and_then(|i| fields[i].as_str().map(String::from)).unwrap_or_default();
            match &mut fields[field] {
                Value::Struct(m) if m.iter().any(|(k, _)| *k == key) => Some(uuid),
                Value::Struct(m) => {
                    m.push((key.clone(), value));
                    None
                }
                _ => None,
            }
        })?;
        match dup {
            Some(uuid) => Err(ApiError::new(
                &codes::MAP_DUPLICATE_KEY,
                [class.name.to_string(), class.fields[field].name.to_string(), uuid, key.clone()],
            )),
            None => Ok(Reply::void()),
        }
    })
}

/// `create(record)`: a new object with the datamodel's defaults, overridden by the constructor fields given.
fn create(ctx: &Ctx<'_>, class: &'static Class, args: Vec<Value>) -> Result<Reply, ApiError> {
    let (r, fields) = new_row(ctx, class, args)?;
    ctx.state.store.transaction(|tx| tx.insert(class, &r, fields))?;
    Ok(Reply::Value(Value::Str(r)))
}

/// The ref and row `create(record)` makes, not stored yet (for a class module that adds to what it stores).
pub fn new_row(ctx: &Ctx<'_>, class: &'static Class, args: Vec<Value>) -> Result<(String, Vec<Value>), ApiError> {
    let Some(Value::Struct(given)) = args.into_iter().next() else {
        return Err(ApiError::field_type("args"));
    };
    let mut fields = db::default_row(class);
    for (name, v) in given {
        let Some((i, f)) = class.field(&name) else { continue };
        if f.qualifier == Qualifier::RoRuntime {
            continue;
        }
        fields[i] = coerce(&f.ty, v, &name)?;
    }
    let (ui, _) = class.field("uuid").ok_or_else(|| ApiError::not_implemented(ctx.method))?;
    fields[ui] = Value::Str(db::new_uuid());
    Ok((db::new_ref(), fields))
}
