//! Hand-written behaviour, one small module per class. Everything generic (getters, setters, records, …) is in
//! `generic`; a class module holds only what the datamodel cannot say.

mod event;
mod host;
mod session;
mod task;

use crate::dispatch::Handler;

/// The hand-written handler of `class.message`, if there is one.
pub fn custom(class: &str, message: &str) -> Option<Handler> {
    Some(match (class, message) {
        ("session", "login_with_password") => session::login_with_password,
        ("session", "logout") => session::logout,
        ("session", "get_rbac_permissions") => session::get_rbac_permissions,
        ("session", "change_password") => session::change_password,
        ("event", "inject") => event::inject,
        ("event", "get_current_id") => event::get_current_id,
        ("event", "register") => event::register,
        ("event", "unregister") => event::unregister,
        ("task", "create") => task::create,
        ("task", "cancel") => task::cancel,
        ("task", "destroy") => task::destroy,
        ("host", "get_servertime") => host::get_servertime,
        ("host", "get_server_localtime") => host::get_servertime,
        _ => return None,
    })
}
