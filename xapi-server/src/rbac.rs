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

/// The names of the roles in `bits`.
pub fn names(bits: u8) -> Vec<&'static str> {
    USER_ROLES.iter().map(|(n, _)| *n).filter(|n| Roles(bits).contains(n)).collect()
}

/// A permission's name as xapi writes it: `class.message`, lower case.
pub fn permission(class: &Class, msg: &Message) -> String {
    format!("{}.{}", class.name, msg.name).to_lowercase()
}

/// `RBAC_PERMISSION_DENIED [permission, reason]` unless `bits` hold a role that may call `class.msg`.
/// The local superuser may call everything, including the messages whose role list is empty (xapi's
/// `_R_LOCAL_ROOT_ONLY`, e.g. `session.change_password`).
pub fn check(bits: u8, class: &Class, msg: &Message) -> Result<(), ApiError> {
    if bits == ALL || msg.roles.0 & bits != 0 {
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
    if bits == ALL || m.roles.0 & bits != 0 {
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
            if m.lifecycle != Lifecycle::Removed && (bits == ALL || m.roles.0 & bits != 0) {
                out.push(Value::Str(permission(c, m)));
            }
        }
    }
    out
}
