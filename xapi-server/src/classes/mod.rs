//! Hand-written behaviour, one small module per class. Everything generic (getters, setters, records, …) is in
//! `generic`; a class module holds only what the datamodel cannot say.

mod event;
mod host;
mod pbd;
mod session;
pub mod sr;
mod subject;
mod task;
mod vbd;
pub(crate) mod vdi;
mod vm;

use crate::dispatch::Handler;

/// The hand-written handler of `class.message`, if there is one.
pub fn custom(class: &str, message: &str) -> Option<Handler> {
    Some(match (class, message) {
        ("session", "login_with_password") => session::login_with_password,
        ("session", "logout") => session::logout,
        ("session", "get_rbac_permissions") => session::get_rbac_permissions,
        ("session", "change_password") => session::change_password,
        ("subject", "create") => subject::create,
        ("subject", "destroy") => subject::destroy,
        ("subject", "add_to_roles") => subject::add_to_roles,
        ("subject", "remove_from_roles") => subject::remove_from_roles,
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
        ("VM", "copy") => vm::copy,
        ("VM", "snapshot") => vm::snapshot,
        ("VM", "provision") => vm::provision,
        ("VM", "get_allowed_VBD_devices") => vm::get_allowed_vbd_devices,
        ("VM", "compute_memory_overhead") => vm::compute_memory_overhead,
        ("VM", "set_memory_limits") => vm::set_memory_limits,
        ("VM", "assert_can_boot_here") => vm::assert_can_boot_here,
        ("VM", "get_possible_hosts") => vm::get_possible_hosts,
        ("SR", "create") => sr::create,
        ("SR", "introduce") => sr::introduce,
        ("SR", "forget") => sr::forget,
        ("SR", "destroy") => sr::destroy,
        ("SR", "scan") => sr::scan,
        ("SR", "update") => sr::update,
        ("SR", "probe") => sr::probe,
        ("SR", "get_supported_types") => sr::get_supported_types,
        ("SR", "set_name_label") => sr::set_name_label,
        ("SR", "set_name_description") => sr::set_name_description,
        ("SR", "set_shared") => sr::set_shared,
        ("SR", "set_physical_size") => sr::set_physical_size,
        ("PBD", "create") => pbd::create,
        ("PBD", "destroy") => pbd::destroy,
        ("PBD", "plug") => pbd::plug,
        ("PBD", "unplug") => pbd::unplug,
        ("PBD", "set_device_config") => pbd::set_device_config,
        ("VDI", "create") => vdi::create,
        ("VDI", "destroy") => vdi::destroy,
        ("VDI", "snapshot") => vdi::snapshot,
        ("VDI", "clone") => vdi::clone,
        ("VDI", "copy") => vdi::copy,
        ("VDI", "resize") => vdi::resize,
        ("VDI", "resize_online") => vdi::resize_online,
        ("VDI", "introduce") => vdi::introduce,
        ("VDI", "forget") => vdi::forget,
        ("VDI", "update") => vdi::update,
        ("VDI", "set_name_label") => vdi::set_name_label,
        ("VDI", "set_name_description") => vdi::set_name_description,
        ("VDI", "set_read_only") => vdi::set_read_only,
        ("VDI", "set_sharable") => vdi::set_sharable,
        ("VDI", "set_on_boot") => vdi::set_on_boot,
        ("VDI", "set_allow_caching") => vdi::set_allow_caching,
        ("VDI", "get_nbd_info") => vdi::get_nbd_info,
        ("VBD", "create") => vbd::create,
        ("VBD", "destroy") => vbd::destroy,
        ("VBD", "plug") => vbd::plug,
        ("VBD", "unplug") => vbd::unplug,
        ("VBD", "unplug_force") => vbd::unplug_force,
        ("VBD", "insert") => vbd::insert,
        ("VBD", "eject") => vbd::eject,
        ("VBD", "assert_attachable") => vbd::assert_attachable,
        ("VBD", "set_mode") => vbd::set_mode,
        _ => return None,
    })
}
