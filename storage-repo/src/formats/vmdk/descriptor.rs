//! The text descriptor: `createType` and the extent lines (`RW <sectors> SPARSE|FLAT|VMFS "file" [offset]`).
//! Embedded in a sparse file (monolithicSparse, streamOptimized) or a file of its own (monolithicFlat).

use super::header::MAX_DESCRIPTOR;

/// The `createType`s we know; the ones [`super::open`] reads are `monolithicSparse`, `streamOptimized`,
/// `monolithicFlat` and `vmfs`.
const KNOWN_TYPES: [&str; 11] = [
    "monolithicSparse",
    "monolithicFlat",
    "streamOptimized",
    "vmfs",
    "vmfsSparse",
    "vmfsThin",
    "vmfsRaw",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "fullDevice",
    "partitionedDevice",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtentLine {
    /// `RW`, `RDONLY` or `NOACCESS`.
    pub access: String,
    pub sectors: u64,
    /// `SPARSE`, `FLAT`, `ZERO`, `VMFS`, …
    pub kind: String,
    /// The file name as written (empty for ZERO extents).
    pub file: String,
    /// Sectors into the file (FLAT extents).
    pub offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub create_type: String,
    pub extents: Vec<ExtentLine>,
}

/// Parses descriptor bytes (the text stops at the first NUL). `Err` is a sentence naming the problem.
pub(crate) fn parse(bytes: &[u8]) -> Result<Descriptor, String> {
    if bytes.len() as u64 > MAX_DESCRIPTOR {
        return Err("the descriptor is larger than 64 KiB".into());
    }
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = std::str::from_utf8(&bytes[..end]).map_err(|_| "the descriptor is not UTF-8 text".to_string())?;
    let mut create_type = None;
    let mut extents = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if key.trim() == "createType" {
                create_type = Some(unquote(value.trim()).to_string());
            }
            continue;
        }
        extents.push(parse_extent(line)?);
    }
    let create_type = create_type.ok_or("the descriptor has no createType")?;
    if !KNOWN_TYPES.contains(&create_type.as_str()) {
        return Err(format!("unknown createType {create_type:?}"));
    }
    Ok(Descriptor { create_type, extents })
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s)
}

fn parse_extent(line: &str) -> Result<ExtentLine, String> {
    let bad = || format!("bad extent line {:?}", line.chars().take(80).collect::<String>());
    let (head, rest) = match line.find('"') {
        Some(q) => (&line[..q], Some(&line[q + 1..])),
        None => (line, None),
    };
    let mut words = head.split_whitespace();
    let access = words.next().ok_or_else(bad)?;
    if !["RW", "RDONLY", "NOACCESS"].contains(&access) {
        return Err(bad());
    }
    let sectors = words.next().and_then(|s| s.parse::<u64>().ok()).ok_or_else(bad)?;
    let kind = words.next().ok_or_else(bad)?;
    if words.next().is_some() {
        return Err(bad());
    }
    let (file, offset) = match rest {
        Some(rest) => {
            let (name, tail) = rest.split_once('"').ok_or_else(bad)?;
            let offset = match tail.split_whitespace().collect::<Vec<_>>()[..] {
                [] => 0,
                [o] => o.parse::<u64>().map_err(|_| bad())?,
                _ => return Err(bad()),
            };
            (name.to_string(), offset)
        }
        None if kind == "ZERO" => (String::new(), 0),
        None => return Err(bad()),
    };
    Ok(ExtentLine { access: access.into(), sectors, kind: kind.into(), file, offset })
}

/// True if `name` is a plain file name (no directory part, not `.`/`..`, no NUL or backslash).
pub(crate) fn plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The descriptor `qemu-img convert -O vmdk -o subformat=monolithicFlat` writes for a 64 MiB disk.
    const FLAT: &str = "# Disk DescriptorFile\nversion=1\nCID=3363482f\nparentCID=ffffffff\n\
        createType=\"monolithicFlat\"\n\n# Extent description\nRW 131072 FLAT \"f-flat.vmdk\" 0\n\n\
        # The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = \"4\"\nddb.adapterType = \"ide\"\n";

    #[test]
    fn parses_qemu_flat() {
        let d = parse(FLAT.as_bytes()).unwrap();
        assert_eq!(d.create_type, "monolithicFlat");
        assert_eq!(
            d.extents,
            [ExtentLine {
                access: "RW".into(),
                sectors: 131072,
                kind: "FLAT".into(),
                file: "f-flat.vmdk".into(),
                offset: 0
            }]
        );
    }

    #[test]
    fn parses_sparse_with_padding_and_names_with_spaces() {
        let mut b = b"createType=\"monolithicSparse\"\nRW 8 SPARSE \"my disk.vmdk\"\nRW 8 ZERO\n".to_vec();
        b.resize(1024, 0);
        let d = parse(&b).unwrap();
        assert_eq!(d.extents[0].file, "my disk.vmdk");
        assert_eq!(d.extents[1].kind, "ZERO");
    }

    #[test]
    fn refuses_bad_descriptors() {
        for (text, what) in [
            (&b"version=1\n"[..], "no createType"),
            (b"createType=\"fancy\"\n", "unknown createType"),
            (b"createType=\"monolithicFlat\"\nRW x FLAT \"a\" 0\n", "bad extent line"),
            (b"createType=\"monolithicFlat\"\nRW 1 FLAT \"a\" 0 9\n", "bad extent line"),
            (b"createType=\"monolithicFlat\"\nRW 1 FLAT \"a\n", "bad extent line"),
            (b"createType=\"monolithicFlat\"\nXX 1 FLAT \"a\"\n", "bad extent line"),
            (b"createType=\"\xff\"\n", "UTF-8"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(what), "{e:?} should mention {what}");
        }
        assert!(parse(&vec![b'#'; 65 << 10]).unwrap_err().contains("64 KiB"));
    }

    #[test]
    fn plain_names_only() {
        assert!(plain_name("disk-flat.vmdk"));
        for bad in ["", ".", "..", "../etc/passwd", "/etc/passwd", "a/b", "a\\b", "a\0"] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }
}
