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
    /// What xe's own checks refuse (xapi's `Cli_failure`/`Record_failure`): printed as `Error: <message>`.
    Failure(String),
    /// The daemon could not be reached or answered something that is not XML-RPC.
    Transport(String),
}

/// The sentence xe prints first for the codes a command line user meets most (xapi's own documentation text,
/// `datamodel_errors.ml`, except for the authentication failure, which xe shortens).
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
        // Storage (xapi's documentation text of each code).
        "SR_HAS_PBD" => "The SR is still connected to a host via a PBD. It cannot be destroyed or forgotten.",
        "SR_NOT_EMPTY" => "The SR operation cannot be performed because the SR is not empty.",
        "SR_UNKNOWN_DRIVER" => "The SR could not be connected because the driver was not recognised.",
        "SR_BACKEND_FAILURE" => "There was an SR backend failure.",
        "SR_OPERATION_NOT_SUPPORTED" => {
            "The SR backend does not support the operation (check the SR's allowed operations)"
        }
        "SR_NOT_ATTACHED" => "The SR is not attached.",
        "SR_FULL" => "The SR is full. Requested new size exceeds the maximum size",
        "PBD_EXISTS" => "A PBD already exists connecting the SR to the server.",
        "VDI_IN_USE" => "This operation cannot be performed because this VDI is in use by some other operation",
        "VDI_NOT_MANAGED" => "This operation cannot be performed because the system does not manage this VDI",
        "VDI_TOO_SMALL" => "The VDI is too small. Please resize it to at least the minimum size.",
        "VDI_READONLY" => "The operation required write access but this VDI is read-only",
        "VDI_LOCATION_MISSING" => {
            "This operation cannot be performed because the specified VDI could not be found in the specified SR"
        }
        "VDI_MISSING" => {
            "This operation cannot be performed because the specified VDI could not be found on the storage substrate"
        }
        "VDI_IS_NOT_ISO" => "This operation can only be performed on CD VDIs (iso files or CDROM drives)",
        "VDI_NOT_AVAILABLE" => {
            "This operation cannot be performed because this VDI could not be properly attached to the VM."
        }
        "VBD_CDS_MUST_BE_READONLY" => "Read/write CDs are not supported",
        "VBD_NOT_REMOVABLE_MEDIA" => "Media could not be ejected because it is not removable",
        "VBD_NOT_EMPTY" => "Operation could not be performed because the drive is not empty",
        "VBD_IS_EMPTY" => "Operation could not be performed because the drive is empty",
        "VBD_NOT_UNPLUGGABLE" => "Drive could not be hot-unplugged because it is not marked as unpluggable",
        "DEVICE_ALREADY_EXISTS" => "A device with the name given already exists on the selected VM",
        "DEVICE_ALREADY_ATTACHED" => "The device is already attached to a VM",
        "DEVICE_ALREADY_DETACHED" => "The device is not currently attached",
        "DEVICE_DETACH_REJECTED" => "The VM rejected the attempt to detach the device.",
        "DEVICE_NOT_ATTACHED" => "The operation could not be performed because the VBD was not connected to the VM.",
        "INVALID_DEVICE" => "The device name is invalid",
        "DEFAULT_SR_NOT_FOUND" => "The default SR reference does not point to a valid SR",
        "VM_NO_EMPTY_CD_VBD" => "The VM has no empty CD drive (VBD).",
        "INVALID_VALUE" => "The value given is invalid",
        "INTERNAL_ERROR" => {
            "The server failed to handle your request, due to an internal error. The given message may give \
             details useful for debugging the problem."
        }
        _ => return None,
    })
}

impl XeError {
    /// A required parameter was not given (xapi's `ParamNotFound`).
    pub fn missing(name: &str) -> XeError {
        XeError::Usage(format!("Required parameter not found: {name}\nFor usage run: 'xe help'"))
    }

    /// The text for stderr, ending in a newline.
    pub fn render(&self) -> String {
        match self {
            XeError::Usage(msg) | XeError::Transport(msg) => format!("{msg}\n"),
            XeError::Failure(msg) => format!("Error: {msg}\n"),
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
        Some(names) if !names.is_empty() => {
            for (i, value) in params.iter().enumerate() {
                match names.get(i) {
                    Some(name) => out.push_str(&format!("{name}: {value}\n")),
                    None => out.push_str(&format!("<extra>: {value}\n")),
                }
            }
        }
        _ if params.is_empty() => {}
        _ => out.push_str(&format!("Error parameters: {}\n", params.join(", "))),
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
