//! Host facts read from the running system (`/proc`, `/etc/os-release`): name, address, CPUs, memory.

use std::fs;

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("cannot read {path}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} has no {what}")]
    Missing { path: &'static str, what: &'static str },
}

/// One logical CPU, as `/proc/cpuinfo` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cpu {
    pub number: u32,
    pub vendor: String,
    pub model_name: String,
    pub family: i64,
    pub model: i64,
    pub stepping: String,
    pub speed_mhz: i64,
    pub flags: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub hostname: String,
    /// The first non-loopback IPv4 address, or 127.0.0.1 if the host has none.
    pub address: String,
    pub cpus: Vec<Cpu>,
    pub memory_total_bytes: i64,
    /// `MemAvailable`: what could be given to guests without swapping.
    pub memory_free_bytes: i64,
    pub kernel_release: String,
    pub os_name: String,
}

pub fn read() -> Result<HostFacts, FactsError> {
    let cpuinfo = read_file("/proc/cpuinfo")?;
    let meminfo = read_file("/proc/meminfo")?;
    let hostname = read_file("/proc/sys/kernel/hostname")?.trim().to_string();
    let kernel_release = read_file("/proc/sys/kernel/osrelease")?.trim().to_string();
    let os_name =
        fs::read_to_string("/etc/os-release").ok().and_then(|s| os_release_name(&s)).unwrap_or_else(|| "Linux".into());
    let address = fs::read_to_string("/proc/net/fib_trie")
        .ok()
        .and_then(|s| first_local_ipv4(&s))
        .unwrap_or_else(|| "127.0.0.1".into());
    let cpus = parse_cpuinfo(&cpuinfo);
    if cpus.is_empty() {
        return Err(FactsError::Missing { path: "/proc/cpuinfo", what: "processor entries" });
    }
    let kib = |key| meminfo_kib(&meminfo, key).ok_or(FactsError::Missing { path: "/proc/meminfo", what: key });
    Ok(HostFacts {
        hostname,
        address,
        cpus,
        memory_total_bytes: kib("MemTotal")? * 1024,
        memory_free_bytes: kib("MemAvailable")? * 1024,
        kernel_release,
        os_name,
    })
}

fn read_file(path: &'static str) -> Result<String, FactsError> {
    fs::read_to_string(path).map_err(|source| FactsError::Read { path, source })
}

fn parse_cpuinfo(text: &str) -> Vec<Cpu> {
    let mut cpus = Vec::new();
    for block in text.split("\n\n") {
        let get = |key: &str| {
            block.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
        };
        let Some(number) = get("processor").and_then(|n| n.parse().ok()) else { continue };
        let int = |key: &str| get(key).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        cpus.push(Cpu {
            number,
            vendor: get("vendor_id").unwrap_or_default(),
            model_name: get("model name").unwrap_or_default(),
            family: int("cpu family") as i64,
            model: int("model") as i64,
            stepping: get("stepping").unwrap_or_default(),
            speed_mhz: int("cpu MHz").round() as i64,
            flags: get("flags").unwrap_or_default(),
        });
    }
    cpus
}

fn meminfo_kib(text: &str, key: &str) -> Option<i64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim().trim_end_matches("kB").trim().parse().ok())?
    })
}

/// The local addresses of `/proc/net/fib_trie` are the lines followed by `/32 host LOCAL`.
fn first_local_ipv4(text: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    lines.windows(2).find_map(|w| {
        let addr = w[0].trim().strip_prefix("|-- ")?;
        (w[1].trim() == "/32 host LOCAL" && !addr.starts_with("127.")).then(|| addr.to_string())
    })
}

fn os_release_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo_blocks() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n\
                    model name\t: AMD EPYC 7B13\nstepping\t: 0\ncpu MHz\t\t: 2449.998\nflags\t\t: fpu vme svm\n\n\
                    processor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        let cpus = parse_cpuinfo(text);
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].model_name, "AMD EPYC 7B13");
        assert_eq!(cpus[0].family, 25);
        assert_eq!(cpus[0].speed_mhz, 2450);
        assert_eq!(cpus[0].flags, "fpu vme svm");
        assert_eq!(cpus[1].number, 1);
    }

    #[test]
    fn finds_first_non_loopback_address() {
        let text = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 10.0.2.15\n        /32 host LOCAL\n";
        assert_eq!(first_local_ipv4(text).as_deref(), Some("10.0.2.15"));
        assert_eq!(first_local_ipv4("|-- 127.0.0.1\n /32 host LOCAL\n"), None);
    }

    #[test]
    fn reads_this_machine() {
        let f = read().expect("host facts");
        assert!(!f.cpus.is_empty());
        assert!(f.memory_total_bytes > f.memory_free_bytes && f.memory_free_bytes > 0);
        assert!(!f.hostname.is_empty());
    }
}
