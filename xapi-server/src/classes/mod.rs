//! Hand-written behaviour, one small module per class. Everything generic (getters, setters, records, …) is in
//! `generic`; a class module holds only what the datamodel cannot say.

mod event;
mod host;
mod session;
mod task;
mod vm;

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
        ("host", "compute_free_memory") => host::compute_free_memory,
        ("host", "compute_memory_overhead") => host::compute_memory_overhead,
        ("VM", "create") => vm::create,
        ("VM", "destroy") => vm::destroy,
        ("VM", "start") => vm::start,
        ("VM", "start_on") => vm::start_on,
        ("VM", "clean_shutdown") => vm::clean_shutdown,
        ("VM", "hard_shutdown") => vm::hard_shutdown,
        ("VM", "shutdown") => vm::shutdown,
        ("VM", "clean_reboot") => vm::clean_reboot,
        ("VM", "hard_reboot") => vm::hard_reboot,
        ("VM", "suspend") => vm::suspend,
        ("VM", "resume") => vm::resume,
        ("VM", "resume_on") => vm::resume_on,
        ("VM", "pause") => vm::pause,
        ("VM", "unpause") => vm::unpause,
        ("VM", "clone") => vm::clone,
        ("VM", "provision") => vm::provision,
        ("VM", "compute_memory_overhead") => vm::compute_memory_overhead,
        ("VM", "assert_can_boot_here") => vm::assert_can_boot_here,
        ("VM", "get_possible_hosts") => vm::get_possible_hosts,
        _ => return None,
    })
}
