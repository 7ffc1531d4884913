//! Parent-locator payloads as blktap writes them for a parent in the same directory: `MacX` is the UTF-8 URL
//! `file://./<name>`, `W2ku` and `W2ru` are `.\<name>` in UTF-16LE. Each payload is padded to whole sectors and the
//! entry's data space holds that padded length in bytes.

use super::header::{PLAT_MACX, PLAT_W2KU, PLAT_W2RU};

/// The codes we write, in blktap's order.
pub(crate) const CODES: [u32; 3] = [PLAT_MACX, PLAT_W2KU, PLAT_W2RU];
/// The longest locator payload we read (a relative name needs far less).
pub(crate) const MAX_PAYLOAD: u64 = 4096;

/// Checks that `name` can stand for a file in the same directory: not empty, not `.` or `..`, no `/`, `\` or NUL.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && name.encode_utf16().count() <= 254
}

/// The payload for locator `code` naming `name` (a valid name).
pub(crate) fn encode(code: u32, name: &str) -> Vec<u8> {
    if code == PLAT_MACX {
        format!("file://./{name}").into_bytes()
    } else {
        format!(".\\{name}").encode_utf16().flat_map(u16::to_le_bytes).collect()
    }
}

/// Decodes a payload to the path it holds, with `\` turned into `/` and a drive letter dropped (blktap's
/// decoders). `None` if it is not valid for its code.
pub(crate) fn decode_path(code: u32, payload: &[u8]) -> Option<String> {
    match code {
        PLAT_MACX => {
            let s = std::str::from_utf8(payload).ok()?;
            s.strip_prefix("file://").map(str::to_owned)
        }
        PLAT_W2KU | PLAT_W2RU => {
            if !payload.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = payload.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
            let s = String::from_utf16(&units).ok()?.replace('\\', "/");
            let s = s.strip_prefix("C:").or_else(|| s.strip_prefix("c:")).unwrap_or(&s);
            Some(s.to_owned())
        }
        _ => None,
    }
}

/// The file name a decoded path names if it is `./<name>` with a valid name; `Err` says why not.
pub(crate) fn relative_name(path: &str) -> Result<&str, String> {
    let trimmed = path.trim_end_matches('\0');
    let Some(name) = trimmed.strip_prefix("./") else {
        return Err(format!("parent locator {trimmed:?} is not relative to the disk's directory (\"./name\")"));
    };
    if !valid_name(name) {
        return Err(format!("parent locator {trimmed:?} leaves the disk's directory"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `W2ru` payload for `base.vhd`: `.\base.vhd` in UTF-16LE.
    #[rustfmt::skip]
    const W2RU_BASE: [u8; 20] = [
        b'.', 0, b'\\', 0,                               // ".\"
        b'b', 0, b'a', 0, b's', 0, b'e', 0,              // "base"
        b'.', 0, b'v', 0, b'h', 0, b'd', 0,              // ".vhd"
    ];

    #[test]
    fn encodes_as_blktap() {
        assert_eq!(encode(PLAT_MACX, "base.vhd"), b"file://./base.vhd");
        assert_eq!(encode(PLAT_W2RU, "base.vhd"), W2RU_BASE);
        assert_eq!(encode(PLAT_W2KU, "base.vhd"), W2RU_BASE);
    }

    #[test]
    fn decodes_to_relative_names() {
        for code in CODES {
            let path = decode_path(code, &encode(code, "base.vhd")).unwrap();
            assert_eq!(path, "./base.vhd");
            assert_eq!(relative_name(&path), Ok("base.vhd"));
        }
        let w: Vec<u8> = "C:\\x\\y.vhd".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(decode_path(PLAT_W2KU, &w).as_deref(), Some("/x/y.vhd"));
        assert_eq!(decode_path(PLAT_MACX, b"./x.vhd"), None);
        assert_eq!(decode_path(PLAT_W2RU, &[0x2e]), None);
    }

    #[test]
    fn refuses_names_outside_the_directory() {
        assert!(relative_name("../x.vhd").is_err());
        assert!(relative_name("/etc/passwd").is_err());
        assert!(relative_name("./a/b.vhd").is_err());
        assert!(relative_name("./..").is_err());
        assert!(relative_name("./").is_err());
        assert!(relative_name("x.vhd").is_err());
        assert!(!valid_name("a\\b"));
        assert!(valid_name("0b6e9d8e-6ec5-4bb4-9a4c-2e7f1ad5b1a5.vhd"));
    }
}
