//! Role-based access control, as xapi decides it: every message of the datamodel lists the roles that may call it
//! (`Message::roles`, from xapi's own `datamodel`); a session's roles are its subject's (`subject.roles`, role
//! records named as xapi names them: `pool-admin`, `pool-operator`, `vm-power-admin`, `vm-admin`, `vm-operator`,
//! `read-only`), and the local superuser (root) holds them all. A call whose message lists none of the caller's
//! roles answers `RBAC_PERMISSION_DENIED [permission, reason]`, before its arguments are looked at.
//!
//! Local users are subjects whose `subject_identifier` is `local:<name>` (`other_config:subject-name` = name),
//! with an argon2 password hash in the store's `_local_user` table (`docs/rbac.md`).

use xapi_types::generated::errors as codes;
use xapi_types::model::{self, Class, Lifecycle, Roles};
use xapi_types::{Message, Value};

use crate::db::{self, Store};
use crate::error::ApiError;
use crate::hv::rec::{Rec, class, set};

/// The roles xapi gives users (`client-cert`, the seventh bit, is for pool members' certificates, not users).
pub const USER_ROLES: [(&str, &str); 6] = [
    ("pool-admin", "The Pool Administrator role has full access to all features and settings"),
    ("pool-operator", "The Pool Operator role manages host- and pool-wide resources"),
    ("vm-power-admin", "The VM Power Administrator role has full access to VM and template management"),
    ("vm-admin", "The VM Administrator role can manage VMs and templates"),
    ("vm-operator", "The VM Operator role can use VMs and interact with VM consoles"),
    ("read-only", "The Read-Only role can log in with basic read-only access"),
];

/// Every role bit: what the local superuser holds.
pub const ALL: u8 = u8::MAX;

/// The `subject_identifier` of local user `name`.
pub fn local_identifier(name: &str) -> String {
    format!("local:{name}")
}

/// Creates the role records that are missing (at every start).
pub fn ensure_roles(store: &Store) -> Result<(), db::DbError> {
    let c = class("role");
    let existing: Vec<String> =
        store.all(c).into_iter().map(|(_, row)| Rec::new(c, &row.fields).str("name_label").to_string()).collect();
    store.transaction(|tx| {
        for (name, description) in USER_ROLES.iter().filter(|(n, _)| !existing.iter().any(|e| e == n)) {
            let mut f = db::default_row(c);
            set(c, &mut f, "uuid", db::new_uuid());
            set(c, &mut f, "name_label", *name);
            set(c, &mut f, "name_description", *description);
            set(c, &mut f, "is_internal", false);
            tx.insert(c, &db::new_ref(), f)?;
        }
        Ok(())
    })
}

/// The role bits of role records `roles` (refs), by their names.
fn bits_of(store: &Store, roles: &[Value]) -> u8 {
    let c = class("role");
    roles
        .iter()
        .filter_map(|r| store.get(c, r.as_str()?).ok())
        .filter_map(|row| Roles::NAMES.iter().position(|n| *n == Rec::new(c, &row.fields).str("name_label")))
        .fold(0u8, |acc, i| acc | (1 << i))
}

/// The subject of local user `user`, if there is one.
pub fn subject_of_user(store: &Store, user: &str) -> Option<(String, Vec<Value>)> {
    let c = class("subject");
    let id = local_identifier(user);
    store.all(c).into_iter().find_map(|(r, row)| {
        let rec = Rec::new(c, &row.fields);
        (rec.str("subject_identifier") == id)
            .then(|| (r.to_string(), rec.get("roles").as_array().unwrap_or_default().to_vec()))
    })
}

/// The role bits of local user `user` (all for root; none for a user without a subject).
pub fn user_bits(store: &Store, user: &str) -> u8 {
    if user == "root" {
        return ALL;
    }
    subject_of_user(store, user).map_or(0, |(_, roles)| bits_of(store, &roles))
}

/// The role bits a session holds.
pub fn session_bits(store: &Store, session: &str) -> u8 {
    let c = class("session");
    let Ok(row) = store.get(c, session) else { return 0 };
    let rec = Rec::new(c, &row.fields);
    if rec.bool("is_local_superuser") {
        return ALL;
    }
    let subject_c = class("subject");
    match store.get(subject_c, rec.str("subject")) {
        Ok(s) => bits_of(store, Rec::new(subject_c, &s.fields).get("roles").as_array().unwrap_or_default()),
        Err(_) => 0,
    }
}

/// xapi's roles down to vm-operator (`_R_VM_OP`), as bits.
const VM_OP: u8 = 0b1_1111;
/// pool-admin alone.
const POOL_ADMIN: u8 = 0b1;

/// Keys of map fields whose writes (`add_to_<map>`, `remove_from_<map>`) xapi decides per key
/// (`map_keys_roles` in its datamodel, which the exported `xenapi.json` does not carry): `(class, field, key
/// pattern, roles)`; a pattern ending in `*` is a prefix. The rest of the map is written with the message's roles.
const MAP_KEYS_ROLES: &[(&str, &str, &str, u8)] = &[
    ("pool", "other_config", "folder", VM_OP),
    ("pool", "other_config", "XenCenter.CustomFields.*", VM_OP),
    ("pool", "other_config", "EMPTY_FOLDERS", VM_OP),
    ("host", "other_config", "folder", VM_OP),
    ("host", "other_config", "XenCenter.CustomFields.*", VM_OP),
    ("VM", "other_config", "pci", POOL_ADMIN),
    ("VM", "other_config", "folder", VM_OP),
    ("VM", "other_config", "XenCenter.CustomFields.*", VM_OP),
    ("task", "other_config", "applies_to", VM_OP),
    ("task", "other_config", "XenCenterUUID", VM_OP),
    ("task", "other_config", "XenCenterMeddlingActionTitle", VM_OP),
];

/// The roles that may write `key` of `class.field` when xapi decides it per key.
fn key_roles(class: &str, field: &str, key: &str) -> Option<u8> {
    MAP_KEYS_ROLES.iter().find_map(|&(c, f, pattern, roles)| {
        let hit = match pattern.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == pattern,
        };
        (c == class && f == field && hit).then_some(roles)
    })
}

/// [`check`] for a call; `key` is a map write's key argument (see [`map_key`]): a key xapi decides per key
/// ([`MAP_KEYS_ROLES`]) is allowed to that key's roles instead of the message's.
pub fn check_call(bits: u8, class: &Class, msg: &Message, key: Option<&Value>) -> Result<(), ApiError> {
    if bits == ALL {
        return Ok(());
    }
    if let model::MsgKind::MapAdd(i) | model::MsgKind::MapRemove(i) = msg.kind
        && let (Some(f), Some(Value::Str(key))) = (class.fields.get(usize::from(i)), key)
        && let Some(roles) = key_roles(class.name, f.name, key)
    {
        if roles & bits != 0 {
            return Ok(());
        }
        let permission = format!("{}/key:{key}", permission(class, msg));
        return Err(ApiError::new(
            &codes::RBAC_PERMISSION_DENIED,
            [permission.clone(), format!("The role(s) of this session's subject may not call {permission}")],
        ));
    }
    check(bits, class, msg)
}

/// Whether `msg` is a map write, whose key argument [`check_call`] needs (the third parameter, after the
/// session and the object).
pub fn map_key(msg: &Message) -> Option<usize> {
    matches!(msg.kind, model::MsgKind::MapAdd(_) | model::MsgKind::MapRemove(_)).then_some(2)
}

/// The names of the roles in `bits`.
pub fn names(bits: u8) -> Vec<&'static str> {
    USER_ROLES.iter().map(|(n, _)| *n).filter(|n| Roles(bits).contains(n)).collect()
}

/// A permission's name as xapi writes it: `class.message`, lower case.
pub fn permission(class: &Class, msg: &Message) -> String {
    format!("{}.{}", class.name, msg.name).to_lowercase()
}

/// `RBAC_PERMISSION_DENIED [permission, reason]` unless `bits` hold a role that may call `class.msg`.
/// Whether `bits` may call `msg`: one of its roles is the message's, or they are the local superuser's.
fn allows(bits: u8, msg: &Message) -> bool {
    bits == ALL || msg.roles.0 & bits != 0
}

/// The local superuser may call everything, including the messages whose role list is empty (xapi's
/// `_R_LOCAL_ROOT_ONLY`, e.g. `session.change_password`).
pub fn check(bits: u8, class: &Class, msg: &Message) -> Result<(), ApiError> {
    if allows(bits, msg) {
        return Ok(());
    }
    let permission = permission(class, msg);
    let held = names(bits);
    let reason = if msg.roles.0 == 0 {
        format!("Only the local superuser (root) may call {permission}")
    } else if held.is_empty() {
        format!("No role is granted to this session's subject: it may not call {permission}")
    } else {
        format!("The role(s) {} of this session's subject may not call {permission}", held.join(", "))
    };
    Err(ApiError::new(&codes::RBAC_PERMISSION_DENIED, [permission, reason]))
}

/// The same for an HTTP handler, which xapi names `http/<action>`: it is allowed to the roles that may call
/// `class.message` (e.g. an import, `VDI.create`'s).
pub fn check_http(bits: u8, action: &str, class: &str, message: &str) -> Result<(), ApiError> {
    let c = model::class(class).expect("a datamodel class");
    let m = c.messages.iter().find(|m| m.name == message).expect("a datamodel message");
    if allows(bits, m) {
        return Ok(());
    }
    Err(ApiError::new(
        &codes::RBAC_PERMISSION_DENIED,
        [format!("http/{action}"), format!("The role(s) of this session's subject may not {action}")],
    ))
}

/// Every permission `bits` grant, as `session.get_rbac_permissions` lists them.
pub fn permissions(bits: u8) -> Vec<Value> {
    let mut out = Vec::new();
    for c in model::classes() {
        for m in c.messages {
            if m.lifecycle != Lifecycle::Removed && allows(bits, m) {
                out.push(Value::Str(permission(c, m)));
            }
        }
    }
    out
}
