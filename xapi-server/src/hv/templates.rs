//! The default templates, created at every start if missing (as xapi does): `VM.clone` + `VM.provision` turn
//! them into VMs.
//!
//! - **Other install media**: an empty HVM machine that boots from CD then disk, with one 32 GiB system disk in
//!   its provision spec (`other_config:disks`).
//! - **Generic Linux (direct kernel boot)**: a 128 MiB, 1-VCPU machine booted straight into a kernel and initrd
//!   (`PV_kernel`, `PV_ramdisk`, `PV_args`: set them on the VM after cloning), with no disks; on Xen it is a PV
//!   guest.

use xapi_types::Value;

use super::ops;
use super::rec::{Rec, class, idx, set};
use crate::db::{self, DbError, Store};

pub const OTHER_INSTALL_MEDIA: &str = "Other install media";
pub const DIRECT_KERNEL: &str = "Generic Linux (direct kernel boot)";

const MIB: i64 = 1 << 20;

fn map(pairs: &[(&str, &str)]) -> Value {
    Value::Struct(pairs.iter().map(|(k, v)| (k.to_string(), Value::str(*v))).collect())
}

struct Template {
    name: &'static str,
    description: &'static str,
    memory: (i64, i64, i64, i64),
    hvm: bool,
    other_config: Vec<(&'static str, &'static str)>,
}

fn templates() -> [Template; 2] {
    [
        Template {
            name: OTHER_INSTALL_MEDIA,
            description: "Template which allows VM installation from install media",
            memory: (128 * MIB, 256 * MIB, 256 * MIB, 256 * MIB),
            hvm: true,
            other_config: vec![
                ("default_template", "true"),
                ("install-methods", "cdrom"),
                (
                    "disks",
                    r#"<provision><disk device="0" size="34359738368" sr="" bootable="true" type="system"/></provision>"#,
                ),
            ],
        },
        Template {
            name: DIRECT_KERNEL,
            description: "A Linux machine booted directly into a kernel and initrd: set PV_kernel, PV_ramdisk and \
                          PV_args after cloning. No disks.",
            memory: (128 * MIB, 128 * MIB, 128 * MIB, 128 * MIB),
            hvm: false,
            other_config: vec![("default_template", "true")],
        },
    ]
}

/// Creates the default templates that are missing.
pub fn ensure(store: &Store) -> Result<(), DbError> {
    let (vm_c, metrics_c) = (class("VM"), class("VM_metrics"));
    let existing: Vec<String> = store
        .filter(vm_c, |row| Rec::new(vm_c, &row.fields).bool("is_default_template"))
        .into_iter()
        .map(|(_, row)| Rec::new(vm_c, &row.fields).str("name_label").to_string())
        .collect();
    for t in templates() {
        if existing.iter().any(|n| n == t.name) {
            continue;
        }
        let (vm, metrics) = (db::new_ref(), db::new_ref());
        let mut f = db::default_row(vm_c);
        set(vm_c, &mut f, "uuid", db::new_uuid());
        set(vm_c, &mut f, "name_label", t.name);
        set(vm_c, &mut f, "name_description", t.description);
        set(vm_c, &mut f, "is_a_template", true);
        set(vm_c, &mut f, "is_default_template", true);
        set(vm_c, &mut f, "user_version", 1i64);
        let (smin, dmin, dmax, smax) = t.memory;
        set(vm_c, &mut f, "memory_static_min", smin);
        set(vm_c, &mut f, "memory_dynamic_min", dmin);
        set(vm_c, &mut f, "memory_dynamic_max", dmax);
        set(vm_c, &mut f, "memory_static_max", smax);
        set(vm_c, &mut f, "memory_target", dmax);
        set(vm_c, &mut f, "VCPUs_max", 1i64);
        set(vm_c, &mut f, "VCPUs_at_startup", 1i64);
        set(vm_c, &mut f, "actions_after_shutdown", "destroy");
        set(vm_c, &mut f, "actions_after_reboot", "restart");
        set(vm_c, &mut f, "actions_after_crash", "restart");
        set(vm_c, &mut f, "metrics", metrics.clone());
        if t.hvm {
            set(vm_c, &mut f, "HVM_boot_policy", "BIOS order");
            set(vm_c, &mut f, "HVM_boot_params", map(&[("order", "cd")]));
            set(vm_c, &mut f, "domain_type", "hvm");
            set(
                vm_c,
                &mut f,
                "platform",
                map(&[("acpi", "1"), ("apic", "true"), ("pae", "true"), ("nx", "true"), ("viridian", "false")]),
            );
        } else {
            set(vm_c, &mut f, "PV_args", "console=ttyS0");
            set(vm_c, &mut f, "domain_type", "pv");
            set(vm_c, &mut f, "platform", map(&[("acpi", "1"), ("apic", "true"), ("pae", "true")]));
        }
        set(vm_c, &mut f, "other_config", map(&t.other_config));
        let allowed = ops::allowed(Rec::new(vm_c, &f));
        f[idx(vm_c, "allowed_operations")] = allowed;
        let mut m = db::default_row(metrics_c);
        set(metrics_c, &mut m, "uuid", db::new_uuid());
        store.transaction(|tx| {
            tx.insert(vm_c, &vm, f)?;
            tx.insert(metrics_c, &metrics, m)
        })?;
        tracing::info!(template = t.name, "created a default template");
    }
    Ok(())
}
