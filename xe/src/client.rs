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

impl Client {
    /// Logs in with `session.login_with_password`.
    pub fn login(target: Target, user: &str, password: &str) -> Result<Client, XeError> {
        let params = [Value::str(user), Value::str(password), Value::str("1.0"), Value::str("xe")];
        let session = call_raw(&target, "session.login_with_password", &params)?;
        let session = session
            .as_str()
            .ok_or_else(|| XeError::Transport("session.login_with_password returned no session".into()))?
            .to_string();
        Ok(Client { target, session, uuids: HashMap::new() })
    }

    /// `method(session, params…)`.
    pub fn call(&self, method: &str, params: Vec<Value>) -> Result<Value, XeError> {
        let mut all = Vec::with_capacity(params.len() + 1);
        all.push(Value::str(&self.session));
        all.extend(params);
        call_raw(&self.target, method, &all)
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
}
