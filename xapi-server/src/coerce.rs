//! Parse at the edge: a wire [`Value`] checked against the datamodel [`Ty`] it must have.
//!
//! Clients differ in how they send the same thing (Python sends `<int>`, Xen Orchestra sends ints as strings and
//! dates as `2024-01-01T00:00:00.000Z`); what comes out of here is the one canonical form the middle works with,
//! or `FIELD_TYPE_ERROR [param]`.

use xapi_types::{Ty, Value};

use crate::error::ApiError;

pub fn coerce(ty: &Ty, v: Value, name: &str) -> Result<Value, ApiError> {
    let bad = || ApiError::field_type(name);
    Ok(match (ty, v) {
        (Ty::String | Ty::Ref(_), Value::Str(s)) => Value::Str(s),
        (Ty::Int, Value::Int(i)) => Value::Int(i),
        (Ty::Int, Value::I32(i)) => Value::Int(i64::from(i)),
        (Ty::Int, Value::Str(s)) => Value::Int(s.trim().parse().map_err(|_| bad())?),
        (Ty::Float, Value::Float(f)) => Value::Float(f),
        (Ty::Float, Value::Int(i)) => Value::Float(i as f64),
        (Ty::Float, Value::I32(i)) => Value::Float(f64::from(i)),
        (Ty::Float, Value::Str(s)) => Value::Float(s.trim().parse().map_err(|_| bad())?),
        (Ty::Bool, Value::Bool(b)) => Value::Bool(b),
        (Ty::DateTime, Value::DateTime(s) | Value::Str(s)) => Value::DateTime(normalize_datetime(&s).ok_or_else(bad)?),
        (Ty::Enum(e), Value::Str(s)) => {
            // xapi matches enum values without regard to case.
            let canonical = e.values.iter().find(|v| v.eq_ignore_ascii_case(&s)).ok_or_else(bad)?;
            Value::Str((*canonical).to_string())
        }
        (Ty::Set(t), Value::Array(items)) => {
            Value::Array(items.into_iter().map(|i| coerce(t, i, name)).collect::<Result<_, _>>()?)
        }
        (Ty::Map(k, v), Value::Struct(members)) => {
            let mut out: Vec<(String, Value)> = Vec::with_capacity(members.len());
            for (key, val) in members {
                let key = coerce(k, Value::Str(key), name)?.into_key();
                let val = coerce(v, val, name)?;
                match out.iter_mut().find(|(k, _)| *k == key) {
                    Some(slot) => slot.1 = val,
                    None => out.push((key, val)),
                }
            }
            Value::Struct(out)
        }
        (Ty::Record(_) | Ty::EventBatch, Value::Struct(m)) => Value::Struct(m),
        (Ty::Option(_), Value::Nil) => Value::Nil,
        (Ty::Option(t), v) => coerce(t, v, name)?,
        _ => return Err(bad()),
    })
}

/// Accepts xapi's `20250319T04:16:24Z`, ISO 8601 with dashes and optional fraction (`2024-01-01T00:00:00.000Z`)
/// and the compact `20250319T041624Z`; answers xapi's form. Only UTC (`Z`, `+00:00` or no zone) is accepted.
pub fn normalize_datetime(s: &str) -> Option<String> {
    let s = s.trim();
    let (date, time) = s.split_once('T')?;
    let date: String = date.chars().filter(|c| *c != '-').collect();
    let time = time.strip_suffix('Z').or_else(|| time.strip_suffix("+00:00")).unwrap_or(time);
    let time = time.split('.').next()?;
    let time: String = time.chars().filter(|c| *c != ':').collect();
    let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(&date, 8) || !digits(&time, 6) {
        return None;
    }
    let num = |t: &str| t.parse::<u32>().ok();
    let (mo, d, h, mi, se) =
        (num(&date[4..6])?, num(&date[6..8])?, num(&time[0..2])?, num(&time[2..4])?, num(&time[4..6])?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(format!("{}T{}:{}:{}Z", date, &time[0..2], &time[2..4], &time[4..6]))
}

/// Now, in xapi's datetime form.
pub fn now_datetime() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    datetime_of_unix(secs)
}

/// Seconds since the epoch in xapi's datetime form (UTC).
pub fn datetime_of_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xapi_types::model;

    #[test]
    fn datetimes_from_every_client_become_xapi_form() {
        for s in ["20250319T04:16:24Z", "2025-03-19T04:16:24.000Z", "2025-03-19T04:16:24Z", "20250319T041624Z"] {
            assert_eq!(normalize_datetime(s).as_deref(), Some("20250319T04:16:24Z"), "{s}");
        }
        for s in ["", "2025", "20251319T04:16:24Z", "2025-03-19 04:16:24", "x0250319T04:16:24Z"] {
            assert_eq!(normalize_datetime(s), None, "{s}");
        }
        assert_eq!(datetime_of_unix(0), "19700101T00:00:00Z");
        assert_eq!(datetime_of_unix(1_742_357_784), "20250319T04:16:24Z");
    }

    #[test]
    fn ints_arrive_as_numbers_or_strings() {
        assert_eq!(coerce(&Ty::Int, Value::str("4294967296"), "x"), Ok(Value::Int(4_294_967_296)));
        assert_eq!(coerce(&Ty::Int, Value::I32(3), "x"), Ok(Value::Int(3)));
        assert_eq!(coerce(&Ty::Int, Value::str("3.5"), "x"), Err(ApiError::field_type("x")));
        assert_eq!(coerce(&Ty::Bool, Value::str("true"), "b"), Err(ApiError::field_type("b")));
    }

    #[test]
    fn enums_are_matched_without_case() {
        let e = model::enum_def("vm_power_state").unwrap();
        assert_eq!(coerce(&Ty::Enum(e), Value::str("running"), "p"), Ok(Value::str("Running")));
        assert_eq!(coerce(&Ty::Enum(e), Value::str("flying"), "p"), Err(ApiError::field_type("p")));
    }

    #[test]
    fn maps_check_keys_and_values() {
        let ty = Ty::Map(&Ty::String, &Ty::Int);
        let v = Value::Struct(vec![("a".into(), Value::str("1"))]);
        assert_eq!(coerce(&ty, v, "m"), Ok(Value::Struct(vec![("a".into(), Value::Int(1))])));
        let v = Value::Struct(vec![("a".into(), Value::str("x"))]);
        assert_eq!(coerce(&ty, v, "m"), Err(ApiError::field_type("m")));
    }
}
