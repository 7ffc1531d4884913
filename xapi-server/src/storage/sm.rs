//! The SR types this daemon drives, described as `SM` objects (as xapi describes its storage-manager plugins), and
//! the "Local storage" SR made on first start.

use std::sync::Arc;

use storage_repo::sr::FileSr;
use xapi_types::Value;

use crate::db::{self, DbError, Store};
use crate::hv::rec::{class, set};
use crate::state::State;

/// One SR type.
#[derive(Debug)]
pub struct Driver {
    pub ty: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    /// `device-config` keys and what they mean.
    pub configuration: &'static [(&'static str, &'static str)],
    /// The operations the type supports (xapi's SM capability names; each is also a feature of version 1).
    pub capabilities: &'static [&'static str],
    pub image_formats: &'static [&'static str],
}

pub const DRIVERS: &[Driver] = &[
    Driver {
        ty: "ext",
        name: "Local EXT3 VHD",
        description: "SR plugin which represents disks as VHD files stored on a local directory",
        configuration: &[("location", "local directory path (default: DATA_DIR/sr/<sr-uuid>)")],
        capabilities: &[
            "SR_PROBE",
            "SR_SCAN",
            "SR_UPDATE",
            "THIN_PROVISIONING",
            "VDI_CREATE",
            "VDI_DELETE",
            "VDI_ATTACH",
            "VDI_DETACH",
            "VDI_CLONE",
            "VDI_SNAPSHOT",
            "VDI_RESIZE",
            "VDI_INTRODUCE",
            "VDI_UPDATE",
        ],
        image_formats: &["vhd"],
    },
    Driver {
        ty: "iso",
        name: "ISO",
        description: "Handles CD images stored as files in iso format",
        configuration: &[("location", "path to the directory of ISO images")],
        capabilities: &["SR_SCAN", "SR_UPDATE", "VDI_INTRODUCE", "VDI_ATTACH", "VDI_DETACH"],
        image_formats: &["raw"],
    },
];

pub fn driver(ty: &str) -> Option<&'static Driver> {
    DRIVERS.iter().find(|d| d.ty == ty)
}

impl Driver {
    pub fn can(&self, capability: &str) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// Makes the `SM` objects match [`DRIVERS`] (at every start).
pub fn ensure(store: &Store) -> Result<(), DbError> {
    let sm_c = class("SM");
    let existing = store.all(sm_c);
    let ti = sm_c.field("type").expect("SM.type").0;
    store.transaction(|tx| {
        for d in DRIVERS {
            let found = existing.iter().find(|(_, row)| row.fields[ti].as_str() == Some(d.ty));
            let (r, mut f) = match found {
                Some((r, row)) => (r.to_string(), row.fields.clone()),
                None => {
                    let mut f = db::default_row(sm_c);
                    set(sm_c, &mut f, "uuid", db::new_uuid());
                    (db::new_ref(), f)
                }
            };
            let before = f.clone();
            set(sm_c, &mut f, "name_label", d.name);
            set(sm_c, &mut f, "name_description", d.description);
            set(sm_c, &mut f, "type", d.ty);
            set(sm_c, &mut f, "vendor", "xapi-rs");
            set(sm_c, &mut f, "copyright", "(C) xapi-rs authors");
            set(sm_c, &mut f, "version", "1.0");
            set(sm_c, &mut f, "required_api_version", "1.0");
            set(sm_c, &mut f, "driver_filename", format!("builtin:{}", d.ty));
            let conf = d.configuration.iter().map(|(k, v)| (k.to_string(), Value::str(*v))).collect();
            set(sm_c, &mut f, "configuration", Value::Struct(conf));
            set(sm_c, &mut f, "capabilities", Value::Array(d.capabilities.iter().map(|c| Value::str(*c)).collect()));
            let features = d.capabilities.iter().map(|c| (c.to_string(), Value::Int(1))).collect();
            set(sm_c, &mut f, "features", Value::Struct(features));
            let formats = d.image_formats.iter().map(|c| Value::str(*c)).collect();
            set(sm_c, &mut f, "supported_image_formats", Value::Array(formats));
            if found.is_none() {
                tx.insert(sm_c, &r, f)?;
            } else if f != before {
                tx.update(sm_c, &r, |old| *old = f)?;
            }
        }
        Ok(())
    })
}

/// On first start (no SR exists and no SR directory either): an `ext` SR "Local storage" in `DATA_DIR/sr/<uuid>`,
/// with its PBD, as the pool's default SR (and suspend and crash-dump SR), as XenServer's installer makes one.
pub fn ensure_local_sr(state: &Arc<State>) -> anyhow::Result<()> {
    let sr_c = class("SR");
    if !state.store.all(sr_c).is_empty() || state.storage.sr_root.exists() {
        return Ok(());
    }
    let uuid = db::new_uuid();
    let location = state.storage.sr_root.join(&uuid);
    FileSr::create(&location, &uuid)?;
    let (sr, pbd) = (db::new_ref(), db::new_ref());
    let (pbd_c, pool_c) = (class("PBD"), class("pool"));
    state.store.transaction(|tx| {
        let mut f = db::default_row(sr_c);
        set(sr_c, &mut f, "uuid", uuid.clone());
        set(sr_c, &mut f, "name_label", "Local storage");
        set(sr_c, &mut f, "type", "ext");
        set(sr_c, &mut f, "content_type", "user");
        set(sr_c, &mut f, "allowed_operations", crate::classes::sr::allowed("ext"));
        let oc = vec![
            ("i18n-key".to_string(), Value::str("local-storage")),
            ("i18n-original-value-name_label".to_string(), Value::str("Local storage")),
        ];
        set(sr_c, &mut f, "other_config", Value::Struct(oc));
        tx.insert(sr_c, &sr, f)?;
        let mut p = db::default_row(pbd_c);
        set(pbd_c, &mut p, "uuid", db::new_uuid());
        set(pbd_c, &mut p, "host", state.host.to_string());
        set(pbd_c, &mut p, "SR", sr.clone());
        let dc = vec![("location".to_string(), Value::str(location.to_string_lossy()))];
        set(pbd_c, &mut p, "device_config", Value::Struct(dc));
        tx.insert(pbd_c, &pbd, p)?;
        tx.update(pool_c, &state.pool, |f| {
            for field in ["default_SR", "suspend_image_SR", "crash_dump_SR"] {
                set(pool_c, f, field, sr.clone());
            }
        })?;
        Ok::<_, DbError>(())
    })?;
    tracing::info!(sr = %sr, location = %location.display(), "first start: created Local storage");
    Ok(())
}
