//! First start: the daemon describes its own machine, and refreshes that description on every start.
//!
//! On an empty store it creates one `pool` (whose master is this host), the `host` from real facts with its
//! `host_metrics` and one `host_cpu` per CPU, the control-domain VM (running, resident on the host) with its
//! `VM_metrics`, the six XenAPI roles, and the root user's password hash. On later starts every object and ref is
//! kept; only facts that change (memory, versions, addresses) are brought up to date.

use std::path::Path;

use host_agent::facts::HostFacts;
use xapi_types::Value;
use xapi_types::generated::{API_VERSION_MAJOR, API_VERSION_MINOR};
use xapi_types::model::{self, Class};

use crate::auth;
use crate::coerce::now_datetime;
use crate::db::{self, DbError, Ref, Store, Txn};
use crate::hv::templates;

/// The version of XenServer whose API we answer (XenServer 8, API 2.21).
pub const PRODUCT_VERSION: &str = "8.4.0";
pub const PLATFORM_VERSION: &str = "3.4.0";
/// The xapi release whose datamodel `xapi-types` was generated from.
pub const XAPI_VERSION: &str = "26.17.0";

/// The XenAPI roles, most powerful first, with xapi's descriptions.
pub const ROLES: [(&str, &str); 6] = [
    (
        "pool-admin",
        "The Pool Administrator role has full access to all features and settings, including accessing Dom0 and managing subjects, roles and external authentication",
    ),
    (
        "pool-operator",
        "The Pool Operator role manages host- and pool-wide resources, including setting up storage, creating resource pools and managing patches, high availability (HA) and workload balancing (WLB)",
    ),
    (
        "vm-power-admin",
        "The VM Power Administrator role has full access to VM and template management and can choose where to start VMs and use the dynamic memory control and VM snapshot features",
    ),
    ("vm-admin", "The VM Administrator role can manage VMs and templates"),
    ("vm-operator", "The VM Operator role can use VMs and interact with VM consoles"),
    ("read-only", "The Read-Only role can log in with basic read-only access"),
];

/// Where the root password for a first start comes from.
#[derive(Debug)]
pub enum RootPassword {
    Given(String),
    /// Generate one and write it to this file (mode 0600).
    Generate(std::path::PathBuf),
}

fn class(name: &str) -> &'static Class {
    model::class(name).unwrap_or_else(|| panic!("class {name} in the datamodel"))
}

/// A row under construction, addressed by field name.
struct RowBuilder {
    class: &'static Class,
    fields: Vec<Value>,
}

impl RowBuilder {
    fn new(class: &'static Class) -> RowBuilder {
        let mut fields = db::default_row(class);
        let (ui, _) = class.field("uuid").expect("uuid");
        fields[ui] = Value::Str(db::new_uuid());
        RowBuilder { class, fields }
    }

    fn set(mut self, name: &str, v: impl Into<Value>) -> RowBuilder {
        let (i, _) = self.class.field(name).unwrap_or_else(|| panic!("{} has no field {name}", self.class.name));
        self.fields[i] = v.into();
        self
    }

    fn insert(self, tx: &mut Txn<'_>, r: &str) -> Result<(), DbError> {
        tx.insert(self.class, r, self.fields)
    }
}

fn map(pairs: &[(&str, String)]) -> Value {
    Value::Struct(pairs.iter().map(|(k, v)| (k.to_string(), Value::Str(v.clone()))).collect())
}

fn refs(rs: &[String]) -> Value {
    Value::Array(rs.iter().map(|r| Value::Str(r.clone())).collect())
}

pub fn software_version(facts: &HostFacts) -> Value {
    map(&[
        ("product_version", PRODUCT_VERSION.into()),
        ("product_version_text", PRODUCT_VERSION.into()),
        ("product_version_text_short", PRODUCT_VERSION.into()),
        ("product_brand", "xapi-rs".into()),
        ("platform_name", "XCP".into()),
        ("platform_version", PLATFORM_VERSION.into()),
        ("xapi", XAPI_VERSION.into()),
        ("xapi_build", XAPI_VERSION.into()),
        ("xapi-rs", env!("CARGO_PKG_VERSION").into()),
        ("build_number", format!("xapi-rs-{}", env!("CARGO_PKG_VERSION"))),
        ("hostname", facts.hostname.clone()),
        ("linux", facts.kernel_release.clone()),
        ("os", facts.os_name.clone()),
        ("date", "2026-11-26".into()),
    ])
}

fn cpu_info(facts: &HostFacts) -> Value {
    let c = &facts.cpus[0];
    map(&[
        ("cpu_count", facts.cpus.len().to_string()),
        ("socket_count", "1".into()),
        ("vendor", c.vendor.clone()),
        ("speed", c.speed_mhz.to_string()),
        ("modelname", c.model_name.clone()),
        ("family", c.family.to_string()),
        ("model", c.model.to_string()),
        ("stepping", c.stepping.clone()),
        ("flags", c.flags.clone()),
        ("features", String::new()),
    ])
}

/// Makes the store describe this machine; answers (host, pool).
/// `reserve` is the memory kept for the host itself (`--host-memory-reserve`), shown as the control domain's.
pub fn run(
    store: &Store,
    facts: &HostFacts,
    root_password: RootPassword,
    reserve: Option<i64>,
) -> anyhow::Result<(Ref, Ref)> {
    let reserve = reserve.unwrap_or_else(|| dom0_memory(facts.memory_total_bytes));
    let host_c = class("host");
    let pool_c = class("pool");
    let existing = store.all(pool_c).into_iter().next();
    let (host, pool) = match existing {
        Some((pool, row)) => {
            let (mi, _) = pool_c.field("master").expect("pool.master");
            let host = row.fields[mi].as_str().unwrap_or_default().to_string();
            store.get(host_c, &host).map_err(|e| anyhow::anyhow!("the pool's master is not in the store: {e}"))?;
            refresh(store, facts, &host, reserve)?;
            (Ref::from(host), pool)
        }
        None => {
            let (host, pool) = first_start(store, facts, reserve)?;
            (Ref::from(host), Ref::from(pool))
        }
    };
    if store.password_hash("root")?.is_none() {
        let password = match root_password {
            RootPassword::Given(p) => p,
            RootPassword::Generate(path) => {
                let p = auth::generate_password();
                write_secret(&path, &p)?;
                tracing::warn!(path = %path.display(), "generated the root password and wrote it to this file");
                p
            }
        };
        auth::set_password(store, "root", &password)?;
    }
    templates::ensure(store)?;
    Ok((host, pool))
}

fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    writeln!(f, "{secret}")?;
    f.sync_all()
}

fn first_start(store: &Store, facts: &HostFacts, dom0_memory: i64) -> Result<(String, String), DbError> {
    let now = Value::DateTime(now_datetime());
    let (host, pool, metrics, dom0, dom0_metrics) =
        (db::new_ref(), db::new_ref(), db::new_ref(), db::new_ref(), db::new_ref());
    let cpus: Vec<String> = facts.cpus.iter().map(|_| db::new_ref()).collect();
    let vcpus = facts.cpus.len() as i64;
    store.transaction(|tx| {
        RowBuilder::new(class("pool")).set("master", host.clone()).set("name_label", "").insert(tx, &pool)?;
        RowBuilder::new(class("host"))
            .set("name_label", facts.hostname.clone())
            .set("name_description", "Default install")
            .set("hostname", facts.hostname.clone())
            .set("address", facts.address.clone())
            .set("API_version_major", API_VERSION_MAJOR)
            .set("API_version_minor", API_VERSION_MINOR)
            .set("API_version_vendor", "XenSource")
            .set("software_version", software_version(facts))
            .set("cpu_info", cpu_info(facts))
            .set("host_CPUs", refs(&cpus))
            .set("metrics", metrics.clone())
            .set("enabled", true)
            .set("resident_VMs", refs(std::slice::from_ref(&dom0)))
            .set("control_domain", dom0.clone())
            .set("capabilities", Value::Array(vec![Value::str("hvm-3.0-x86_64")]))
            .set("sched_policy", "credit")
            .set("memory_overhead", 0i64)
            .insert(tx, &host)?;
        RowBuilder::new(class("host_metrics"))
            .set("memory_total", facts.memory_total_bytes)
            .set("memory_free", facts.memory_free_bytes)
            .set("live", true)
            .set("last_updated", now.clone())
            .insert(tx, &metrics)?;
        for (cpu, r) in facts.cpus.iter().zip(&cpus) {
            RowBuilder::new(class("host_cpu"))
                .set("host", host.clone())
                .set("number", i64::from(cpu.number))
                .set("vendor", cpu.vendor.clone())
                .set("speed", cpu.speed_mhz)
                .set("modelname", cpu.model_name.clone())
                .set("family", cpu.family)
                .set("model", cpu.model)
                .set("stepping", cpu.stepping.clone())
                .set("flags", cpu.flags.clone())
                .insert(tx, r)?;
        }
        RowBuilder::new(class("VM"))
            .set("name_label", format!("Control domain on host: {}", facts.hostname))
            .set("name_description", "The domain which manages physical devices and manages other domains")
            .set("is_control_domain", true)
            .set("power_state", "Running")
            .set("resident_on", host.clone())
            .set("domid", 0i64)
            .set("user_version", 1i64)
            .set("memory_static_max", dom0_memory)
            .set("memory_dynamic_max", dom0_memory)
            .set("memory_dynamic_min", dom0_memory)
            .set("memory_static_min", dom0_memory)
            .set("memory_target", dom0_memory)
            .set("VCPUs_max", vcpus)
            .set("VCPUs_at_startup", vcpus)
            .set("metrics", dom0_metrics.clone())
            .set("domain_type", "pv")
            .insert(tx, &dom0)?;
        RowBuilder::new(class("VM_metrics"))
            .set("memory_actual", dom0_memory)
            .set("VCPUs_number", vcpus)
            .set("state", Value::Array(vec![]))
            .set("start_time", now.clone())
            .set("install_time", now.clone())
            .set("last_updated", now.clone())
            .insert(tx, &dom0_metrics)?;
        for (name, description) in ROLES {
            RowBuilder::new(class("role"))
                .set("name_label", name)
                .set("name_description", description)
                .insert(tx, &db::new_ref())?;
        }
        Ok::<_, DbError>(())
    })?;
    tracing::info!(host, pool, "first start: created the pool, this host and its control domain");
    Ok((host, pool))
}

/// The memory the host keeps for itself unless `--host-memory-reserve` says otherwise, shown as the control
/// domain's: 1/16 of the host, within 1–8 GiB (XenServer sizes dom0's memory from the host's the same way).
pub fn dom0_memory(total: i64) -> i64 {
    const GIB: i64 = 1 << 30;
    (total / 16).clamp(GIB, 8 * GIB).min(total)
}

/// Brings the facts that change between starts up to date.
fn refresh(store: &Store, facts: &HostFacts, host: &str, reserve: i64) -> Result<(), DbError> {
    let host_c = class("host");
    let metrics_c = class("host_metrics");
    let row = store.get(host_c, host)?;
    let field = |c: &Class, n: &str| c.field(n).map(|(i, _)| i).expect("field");
    let metrics = row.fields[field(host_c, "metrics")].as_str().unwrap_or_default().to_string();
    let now = Value::DateTime(now_datetime());
    store.transaction(|tx| {
        tx.update(host_c, host, |f| {
            f[field(host_c, "software_version")] = software_version(facts);
            f[field(host_c, "API_version_major")] = Value::Int(API_VERSION_MAJOR);
            f[field(host_c, "API_version_minor")] = Value::Int(API_VERSION_MINOR);
            f[field(host_c, "address")] = Value::Str(facts.address.clone());
            f[field(host_c, "hostname")] = Value::Str(facts.hostname.clone());
            f[field(host_c, "cpu_info")] = cpu_info(facts);
        })?;
        let dom0 = row.fields[field(host_c, "control_domain")].as_str().unwrap_or_default().to_string();
        let vm_c = class("VM");
        if store.exists(vm_c, &dom0) {
            tx.update(vm_c, &dom0, |f| {
                for name in [
                    "memory_static_max",
                    "memory_dynamic_max",
                    "memory_dynamic_min",
                    "memory_static_min",
                    "memory_target",
                ] {
                    f[field(vm_c, name)] = Value::Int(reserve);
                }
            })?;
        }
        if store.exists(metrics_c, &metrics) {
            tx.update(metrics_c, &metrics, |f| {
                f[field(metrics_c, "memory_total")] = Value::Int(facts.memory_total_bytes);
                f[field(metrics_c, "memory_free")] = Value::Int(facts.memory_free_bytes);
                f[field(metrics_c, "live")] = Value::Bool(true);
                f[field(metrics_c, "last_updated")] = now.clone();
            })?;
        }
        Ok::<_, DbError>(())
    })
}
