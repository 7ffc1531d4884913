//! What can go wrong in `xe`, and how xe words it on stderr.
//!
//! A XenAPI failure `[CODE, param…]` is printed as xe prints it: the error's sentence, then one `name: value` line
//! per parameter, named by the datamodel (`xapi_types::model::error_code`). Codes without a sentence here are
//! printed as `Error code: CODE` followed by the same lines, or `Error parameters: a, b` when the datamodel does
//! not know the code either.

use xapi_types::model;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XeError {
    /// A XenAPI failure, `[CODE, param…]`.
    Api(Vec<String>),
    /// A command-line mistake, already worded.
    Usage(String),
    /// The daemon could not be reached or answered something that is not XML-RPC.
    Transport(String),
}

/// The sentence xe prints first for the codes a command line user meets most (xapi's own documentation text,
/// except for the authentication failure, which xe shortens).
fn sentence(code: &str) -> Option<&'static str> {
    Some(match code {
        "UUID_INVALID" => "The uuid you supplied was invalid.",
        "HANDLE_INVALID" => {
            "You gave an invalid object reference. The object may have recently been deleted. The class parameter \
             gives the type of reference given, and the handle parameter echoes the bad value given."
        }
        "SESSION_AUTHENTICATION_FAILED" => "Authentication failed",
        "MESSAGE_PARAMETER_COUNT_MISMATCH" => {
            "You tried to call a method with the incorrect number of parameters. The fully-qualified method name \
             that you used, and the number of received and expected parameters are returned."
        }
        "NOT_IMPLEMENTED" => "The function is not implemented",
        "MESSAGE_METHOD_UNKNOWN" => {
            "You tried to call a method that does not exist. The method name that you used is echoed."
        }
        "MAP_DUPLICATE_KEY" => "You tried to add a key-value pair to a map, but that key is already there.",
        "VM_BAD_POWER_STATE" => {
            "You attempted an operation on a VM that was not in an appropriate power state at the time; for example, \
             you attempted to start a VM that was already running. The parameters returned are the VM's handle, and \
             the expected and actual VM state at the time of the call."
        }
        "OTHER_OPERATION_IN_PROGRESS" => "Another operation involving the object is currently in progress",
        "OPERATION_NOT_ALLOWED" => "You attempted an operation that was not allowed.",
        "VM_IS_TEMPLATE" => "The operation attempted is not valid for a template VM",
        "HOST_NOT_ENOUGH_FREE_MEMORY" => "Not enough server memory is available to perform this operation.",
        "VM_SHUTDOWN_TIMEOUT" => "VM failed to shutdown before the timeout expired",
        _ => return None,
    })
}

impl XeError {
    /// The text for stderr, ending in a newline.
    pub fn render(&self) -> String {
        match self {
            XeError::Usage(msg) | XeError::Transport(msg) => format!("{msg}\n"),
            XeError::Api(description) => render_api(description),
        }
    }
}

fn render_api(description: &[String]) -> String {
    let Some((code, params)) = description.split_first() else {
        return "The server failed without saying why.\n".into();
    };
    let names = model::error_code(code).map(|e| e.params);
    let mut out = match sentence(code) {
        Some(s) => format!("{s}\n"),
        None => format!("Error code: {code}\n"),
    };
    match names {
        Some(names) => {
            for (i, value) in params.iter().enumerate() {
                match names.get(i) {
                    Some(name) => out.push_str(&format!("{name}: {value}\n")),
                    None => out.push_str(&format!("{value}\n")),
                }
            }
        }
        None => out.push_str(&format!("Error parameters: {}\n", params.join(", "))),
    }
    out
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    fn api(items: &[&str]) -> String {
        XeError::Api(items.iter().map(|s| s.to_string()).collect()).render()
    }

    #[test]
    fn api_errors_in_xe_wording() {
        expect![[r#"
            The uuid you supplied was invalid.
            type: VM
            uuid: 0000
        "#]]
        .assert_eq(&api(&["UUID_INVALID", "VM", "0000"]));
        expect![[r#"
            Authentication failed
        "#]]
        .assert_eq(&api(&["SESSION_AUTHENTICATION_FAILED"]));
        expect![[r#"
            The function is not implemented
            function: VM.start
        "#]]
        .assert_eq(&api(&["NOT_IMPLEMENTED", "VM.start"]));
        expect![[r#"
            Error code: SOMETHING_NEW
            Error parameters: a, b
        "#]]
        .assert_eq(&api(&["SOMETHING_NEW", "a", "b"]));
    }
}
