//! How a field's [`Value`] is stored in its SQLite column, guided by the field's datamodel [`Ty`].
//!
//! Scalars map onto SQLite's own types (TEXT, INTEGER, REAL); sets, maps, records and options are stored as JSON
//! text and decoded back by type, so that a `datetime set` comes back as datetimes, not strings.

use rusqlite::types::{Value as Sql, ValueRef};
use serde_json::Value as Json;
use xapi_types::{Ty, Value};

use super::DbError;

pub fn to_sql(ty: &Ty, v: &Value) -> Sql {
    match (ty, v) {
        (Ty::Int, Value::Int(i)) => Sql::Integer(*i),
        (Ty::Int, Value::I32(i)) => Sql::Integer(i64::from(*i)),
        (Ty::Bool, Value::Bool(b)) => Sql::Integer(i64::from(*b)),
        (Ty::Float, Value::Float(f)) => Sql::Real(*f),
        (Ty::String | Ty::Ref(_) | Ty::Enum(_), Value::Str(s)) => Sql::Text(s.clone()),
        (Ty::DateTime, Value::DateTime(s) | Value::Str(s)) => Sql::Text(s.clone()),
        (_, v) => Sql::Text(to_json(v).to_string()),
    }
}

pub fn from_sql(ty: &Ty, v: ValueRef<'_>) -> Result<Value, DbError> {
    let bad = || DbError::Corrupt(format!("column of type {} holds {:?}", ty.spelling(), v.data_type()));
    Ok(match (ty, v) {
        (Ty::Int, ValueRef::Integer(i)) => Value::Int(i),
        (Ty::Bool, ValueRef::Integer(i)) => Value::Bool(i != 0),
        (Ty::Float, ValueRef::Real(f)) => Value::Float(f),
        (Ty::Float, ValueRef::Integer(i)) => Value::Float(i as f64),
        (Ty::String | Ty::Ref(_) | Ty::Enum(_), ValueRef::Text(t)) => Value::Str(text(t)?),
        (Ty::DateTime, ValueRef::Text(t)) => Value::DateTime(text(t)?),
        (Ty::Set(_) | Ty::Map(..) | Ty::Record(_) | Ty::Option(_) | Ty::EventBatch, ValueRef::Text(t)) => {
            let json: Json = serde_json::from_slice(t).map_err(|e| DbError::Corrupt(e.to_string()))?;
            from_json(ty, &json).ok_or_else(bad)?
        }
        _ => return Err(bad()),
    })
}

fn text(t: &[u8]) -> Result<String, DbError> {
    String::from_utf8(t.to_vec()).map_err(|e| DbError::Corrupt(e.to_string()))
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Str(s) | Value::DateTime(s) => Json::String(s.clone()),
        Value::Int(i) => Json::from(*i),
        Value::I32(i) => Json::from(*i),
        Value::Float(f) => Json::from(*f),
        Value::Bool(b) => Json::Bool(*b),
        Value::Nil => Json::Null,
        Value::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Struct(members) => Json::Object(members.iter().map(|(k, v)| (k.clone(), to_json(v))).collect()),
    }
}

/// Decodes stored JSON by the datamodel type; `None` if it does not fit.
fn from_json(ty: &Ty, j: &Json) -> Option<Value> {
    Some(match (ty, j) {
        (Ty::String | Ty::Ref(_) | Ty::Enum(_), Json::String(s)) => Value::Str(s.clone()),
        (Ty::DateTime, Json::String(s)) => Value::DateTime(s.clone()),
        (Ty::Int, Json::Number(n)) => Value::Int(n.as_i64()?),
        (Ty::Float, Json::Number(n)) => Value::Float(n.as_f64()?),
        (Ty::Float, Json::Null) => Value::Float(f64::NAN),
        (Ty::Bool, Json::Bool(b)) => Value::Bool(*b),
        (Ty::Set(t), Json::Array(items)) => Value::Array(items.iter().map(|i| from_json(t, i)).collect::<Option<_>>()?),
        (Ty::Map(_, v), Json::Object(m)) => {
            Value::Struct(m.iter().map(|(k, j)| Some((k.clone(), from_json(v, j)?))).collect::<Option<_>>()?)
        }
        (Ty::Option(_), Json::Null) => Value::Nil,
        (Ty::Option(t), j) => from_json(t, j)?,
        (Ty::Record(_) | Ty::EventBatch, j) => untyped(j),
        _ => return None,
    })
}

fn untyped(j: &Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => n.as_i64().map(Value::Int).unwrap_or(Value::Float(n.as_f64().unwrap_or(0.0))),
        Json::String(s) => Value::Str(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(untyped).collect()),
        Json::Object(m) => Value::Struct(m.iter().map(|(k, v)| (k.clone(), untyped(v))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(ty: &Ty, v: Value) {
        let sql = to_sql(ty, &v);
        let back = from_sql(ty, ValueRef::from(&sql)).unwrap();
        assert_eq!(back, v, "{}", ty.spelling());
    }

    #[test]
    fn every_shape_round_trips() {
        round_trip(&Ty::String, Value::str("a'b\"c"));
        round_trip(&Ty::Int, Value::Int(-(1 << 60)));
        round_trip(&Ty::Bool, Value::Bool(true));
        round_trip(&Ty::Float, Value::Float(0.25));
        round_trip(&Ty::DateTime, Value::DateTime("20250319T04:16:24Z".into()));
        round_trip(&Ty::Set(&Ty::DateTime), Value::Array(vec![Value::DateTime("20250319T04:16:24Z".into())]));
        round_trip(
            &Ty::Map(&Ty::String, &Ty::Int),
            Value::Struct(vec![("b".into(), Value::Int(2)), ("a".into(), Value::Int(1))]),
        );
        round_trip(&Ty::Set(&Ty::Ref("VM")), Value::Array(vec![]));
    }

    #[test]
    fn a_mistyped_column_is_corruption_not_a_panic() {
        let err = from_sql(&Ty::Int, ValueRef::Text(b"x")).unwrap_err();
        assert!(matches!(err, DbError::Corrupt(_)));
        let err = from_sql(&Ty::Set(&Ty::Int), ValueRef::Text(b"[\"x\"]")).unwrap_err();
        assert!(matches!(err, DbError::Corrupt(_)));
    }
}
