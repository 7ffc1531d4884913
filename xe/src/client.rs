//! A XenAPI session over [`crate::http`], speaking XML-RPC through `xapi_types::wire::xmlrpc` only.

use std::collections::HashMap;

use xapi_types::value::NULL_REF;
use xapi_types::wire::xmlrpc;
use xapi_types::{Value, model};

use crate::error::XeError;
use crate::format::RefNamer;
use crate::http::{self, Target};

/// What xe prints for a reference that names nothing.
pub const NOT_IN_DATABASE: &str = "<not in database>";

#[derive(Debug)]
pub struct Client {
    target: Target,
    session: String,
    /// `ref → uuid`, filled as references are printed.
    uuids: HashMap<String, String>,
    /// `(ref, field) → value`, filled as computed fields are printed.
    looked_up: HashMap<(String, String), Option<Value>>,
}

/// One call without a session: `Ok(Err(..))` is a XenAPI failure.
fn call_raw(target: &Target, method: &str, params: &[Value]) -> Result<Value, XeError> {
    let body = http::post(target, &xmlrpc::write_call(method, params))
        .map_err(|e| XeError::Transport(format!("cannot talk to the XenAPI server at {target}: {e}")))?;
    match xmlrpc::parse_result(&body) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(description)) => Err(XeError::Api(description)),
        Err(e) => Err(XeError::Transport(format!("the XenAPI server at {target} answered {e}"))),
    }
}

/// The parameters of `<class>.<message>` (after the session) in the datamodel's order, from their names: a
/// parameter not given is its type's empty value (a null ref, `""`, `{}`), and optional trailing ones not given are
/// left out. A name the message does not have is xe's mistake, reported as such.
pub fn positional(class: &str, message: &str, named: Vec<(&str, Value)>) -> Result<Vec<Value>, XeError> {
    let method = format!("{class}.{message}");
    let msg = model::class(class)
        .and_then(|c| c.message(message))
        .ok_or_else(|| XeError::Transport(format!("xe does not know the message {method}")))?;
    let params: Vec<&model::Param> = msg.params.iter().filter(|p| p.name != "session_id").collect();
    if let Some((unknown, _)) = named.iter().find(|(n, _)| !params.iter().any(|p| p.name == *n)) {
        return Err(XeError::Transport(format!("xe passes {method} a parameter it does not have: {unknown}")));
    }
    let last = params.iter().rposition(|p| p.required || named.iter().any(|(n, _)| *n == p.name));
    let mut named = named;
    Ok(params[..last.map_or(0, |i| i + 1)]
        .iter()
        .map(|p| match named.iter().position(|(n, _)| *n == p.name) {
            Some(i) => named.swap_remove(i).1,
            None => Value::empty_of(&p.ty),
        })
        .collect())
}

impl Client {
    /// Logs in with `session.login_with_password`.
    pub fn login(target: Target, user: &str, password: &str) -> Result<Client, XeError> {
        let params = [Value::str(user), Value::str(password), Value::str("1.0"), Value::str("xe")];
        let session = call_raw(&target, "session.login_with_password", &params)?;
        let session = session
            .as_str()
            .ok_or_else(|| XeError::Transport("session.login_with_password returned no session".into()))?
            .to_string();
        Ok(Client { target, session, uuids: HashMap::new(), looked_up: HashMap::new() })
    }

    /// `method(session, params…)`.
    pub fn call(&self, method: &str, params: Vec<Value>) -> Result<Value, XeError> {
        let mut all = Vec::with_capacity(params.len() + 1);
        all.push(Value::str(&self.session));
        all.extend(params);
        call_raw(&self.target, method, &all)
    }

    /// `<class>.<message>` with its parameters given by name ([`positional`]).
    pub fn call_msg(&self, class: &str, message: &str, named: Vec<(&str, Value)>) -> Result<Value, XeError> {
        self.call(&format!("{class}.{message}"), positional(class, message, named)?)
    }

    /// The reference of the `class` object with this uuid.
    pub fn by_uuid(&self, class: &str, uuid: &str) -> Result<Value, XeError> {
        self.call(&format!("{class}.get_by_uuid"), vec![Value::str(uuid)])
    }

    /// The uuid of the `class` object `r`.
    pub fn uuid_of(&self, class: &str, r: &Value) -> Result<String, XeError> {
        Ok(self.call(&format!("{class}.get_uuid"), vec![r.clone()])?.as_str().unwrap_or_default().to_string())
    }

    /// The references among an error's parameters written as xe writes them, `uuid (name-label)` (xapi's
    /// `Cli_util.ref_convert`). The class is guessed from the parameter's name (`sr`, `vdi`, `vm`), then tried in
    /// turn among the classes whose references xe users meet; a reference none of them knows stays as it is.
    pub fn name_error_refs(&self, e: XeError) -> XeError {
        let XeError::Api(mut description) = e else { return e };
        let names = description.first().and_then(|code| model::error_code(code)).map_or(&[][..], |c| c.params);
        for (i, param) in description.iter_mut().enumerate().skip(1) {
            if !param.starts_with("OpaqueRef:") || param == NULL_REF {
                continue;
            }
            let guess = names.get(i - 1).and_then(|n| model::class_ci(n)).map(|c| c.name);
            let tried = guess.into_iter().chain(["VM", "VDI", "VBD", "SR", "PBD", "host", "network", "VIF", "task"]);
            for class in tried {
                let r = Value::str(param.as_str());
                let Ok(Value::Str(uuid)) = self.call(&format!("{class}.get_uuid"), vec![r.clone()]) else { continue };
                let has_name = model::class(class).is_some_and(|c| c.message("get_name_label").is_some());
                let name = if has_name { self.call(&format!("{class}.get_name_label"), vec![r]).ok() } else { None };
                *param = match name {
                    Some(Value::Str(name)) => format!("{uuid} ({name})"),
                    _ => uuid,
                };
                break;
            }
        }
        XeError::Api(description)
    }

    /// Where the daemon listens.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The session reference (for the `session_id` of the HTTP handlers).
    pub fn session(&self) -> &str {
        &self.session
    }

    pub fn logout(self) -> Result<(), XeError> {
        self.call("session.logout", Vec::new()).map(|_| ())
    }
}

impl RefNamer for Client {
    fn name_ref(&mut self, class: &str, r: &str) -> String {
        if r.is_empty() || r == NULL_REF {
            return NOT_IN_DATABASE.into();
        }
        if let Some(u) = self.uuids.get(r) {
            return u.clone();
        }
        let has_uuid = model::class(class).is_some_and(|c| c.message("get_uuid").is_some());
        if !has_uuid {
            return r.to_string();
        }
        let uuid = match self.call(&format!("{class}.get_uuid"), vec![Value::str(r)]) {
            Ok(Value::Str(u)) => u,
            _ => NOT_IN_DATABASE.into(),
        };
        self.uuids.insert(r.to_string(), uuid.clone());
        uuid
    }

    fn lookup(&mut self, class: &str, r: &str, field: &str) -> Option<Value> {
        if r.is_empty() || r == NULL_REF {
            return None;
        }
        let key = (r.to_string(), field.to_string());
        if let Some(v) = self.looked_up.get(&key) {
            return v.clone();
        }
        let v = self.call(&format!("{class}.get_{field}"), vec![Value::str(r)]).ok();
        self.looked_up.insert(key, v.clone());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_by_name_follow_the_datamodel() {
        let sr = Value::str("OpaqueRef:sr");
        let p = positional("VDI", "copy", vec![("sr", sr.clone()), ("vdi", Value::str("OpaqueRef:v"))]).unwrap();
        assert_eq!(p, vec![Value::str("OpaqueRef:v"), sr], "optional trailing parameters left out");
        let p = positional("VDI", "copy", vec![("vdi", Value::str("v")), ("into_vdi", Value::str("i"))]).unwrap();
        assert_eq!(p, vec![Value::str("v"), Value::str(NULL_REF), Value::str(NULL_REF), Value::str("i")]);
        let p = positional("SR", "create", vec![("type", Value::str("ext"))]).unwrap();
        assert_eq!(p.len(), 8, "the required ones are all there, sm_config is optional: {p:?}");
        assert_eq!(p[5], Value::str("ext"));
        assert!(positional("VDI", "copy", vec![("nothing", Value::Nil)]).is_err());
        assert!(positional("VDI", "no_such_message", vec![]).is_err());
    }
}
