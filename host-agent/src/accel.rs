//! Whether this host can run guests under KVM, or must use QEMU's software emulation (TCG).
//!
//! libvirt's own capabilities are not enough: a host can expose a `/dev/kvm` (a nested or para-virtualised KVM
//! such as `kvm_pvm`) that accepts the ioctls but cannot run an ordinary guest kernel, and libvirt then reports KVM
//! as available. KVM counts as usable only when the CPU advertises hardware virtualisation (`vmx` or `svm`) **and**
//! `/dev/kvm` opens for reading and writing. The daemon's `--accel kvm|tcg` overrides the choice.

use std::fs;

use serde::{Deserialize, Serialize};

/// `--accel`: what the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

impl std::str::FromStr for AccelChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" | "qemu" => Ok(AccelChoice::Tcg),
            _ => Err(format!("unknown accelerator {s:?} (expected auto, kvm or tcg)")),
        }
    }
}

/// The outcome of the check, with the reason in words (logged at start, shown in `host.cpu_info`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmCheck {
    pub usable: bool,
    pub reason: String,
}

/// Checks this host.
pub fn check_kvm() -> KvmCheck {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    check(&cpuinfo, || fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").map(drop))
}

fn check(cpuinfo: &str, open_kvm: impl FnOnce() -> std::io::Result<()>) -> KvmCheck {
    let has_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !has_flag {
        return KvmCheck {
            usable: false,
            reason: "the CPU does not advertise hardware virtualisation (no vmx or svm flag); using TCG".into(),
        };
    }
    match open_kvm() {
        Ok(()) => KvmCheck { usable: true, reason: "vmx/svm present and /dev/kvm opens read-write".into() },
        Err(e) => KvmCheck { usable: false, reason: format!("/dev/kvm cannot be opened ({e}); using TCG") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_needs_the_cpu_flag_and_the_device() {
        let with = "processor\t: 0\nflags\t\t: fpu vme svm sse\n";
        let without = "processor\t: 0\nflags\t\t: fpu vme sse\n";
        assert!(check(with, || Ok(())).usable);
        assert!(!check(without, || Ok(())).usable, "no flag: a pvm /dev/kvm is not enough");
        let denied = check(with, || Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied)));
        assert!(!denied.usable);
        assert!(denied.reason.contains("/dev/kvm"));
    }

    #[test]
    fn accel_choice_parses() {
        assert_eq!("kvm".parse::<AccelChoice>().unwrap(), AccelChoice::Kvm);
        assert_eq!("tcg".parse::<AccelChoice>().unwrap(), AccelChoice::Tcg);
        assert!("xen".parse::<AccelChoice>().is_err());
    }
}
