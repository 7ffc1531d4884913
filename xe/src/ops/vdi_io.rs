//! `vdi-import` and `vdi-export`: a VDI's content to and from a file, over the daemon's `PUT /import_raw_vdi` and
//! `GET /export_raw_vdi` (docs/import-export.md), with the session of the XML-RPC calls in the query. The file is
//! streamed 1 MiB at a time; a progress bar goes to stderr when it is a terminal, or with `--progress`.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use xapi_types::model;

use super::{Special, by_uuid_param};
use crate::client::Client;
use crate::commands::Args;
use crate::error::XeError;
use crate::http::{self, StreamError};

pub const SPECIALS: &[Special] = &[
    Special {
        name: "vdi-import",
        reqd: &["filename"],
        optional: &["uuid", "sr-uuid", "name-label", "virtual-size", "format", "--progress"],
        description: "Replaces the content of the VDI uuid= with the disk image in filename. Format is 'raw', 'vhd' \
                      or 'vmdk'; without format=, 'vhd' for a file name ending in .vhd, 'vmdk' for .vmdk, else \
                      'raw'. The VDI must be at least as large as the image. A differencing VHD (vdi-export base=) \
                      is applied onto a VDI holding its base. With sr-uuid= instead of uuid=, a new VDI of the \
                      image's size is made in that SR (name-label= defaults to the file's name; virtual-size= \
                      overrides the size) and its uuid printed. A progress bar is shown on a terminal (--progress: \
                      always).",
        run: vdi_import,
    },
    Special {
        name: "vdi-export",
        reqd: &["uuid", "filename"],
        optional: &["format", "base", "--progress"],
        description: "Writes the content of the VDI to filename. Format is 'raw' or 'vhd'; without format=, 'vhd' \
                      for a file name ending in .vhd, else 'raw'. base=<vdi uuid> (format vhd) writes a differencing \
                      VHD of the blocks that differ from that VDI (a delta since a snapshot). The file appears only \
                      when it is complete. A progress bar is shown on a terminal (--progress: always).",
        run: vdi_export,
    },
];

/// The format given, or the one the file name's extension says (`raw` otherwise).
fn format_of(args: &Args, filename: &str, allowed: &[&str]) -> Result<String, XeError> {
    let format = match args.get("format") {
        Some(f) => f.to_ascii_lowercase(),
        None => {
            let ext = Path::new(filename).extension().and_then(|e| e.to_str()).unwrap_or_default();
            let ext = ext.to_ascii_lowercase();
            if allowed.contains(&ext.as_str()) && ext != "raw" { ext } else { "raw".into() }
        }
    };
    if !allowed.contains(&format.as_str()) {
        return Err(XeError::Failure(format!(
            "Unknown format '{format}': expected {}",
            allowed.iter().map(|f| format!("'{f}'")).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(format)
}

/// A query value, percent-encoded.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The daemon's error line `CODE param…` as a XenAPI failure, its parameters split as the datamodel names them
/// (the last one takes the rest of the line: `IMPORT_ERROR` has a sentence).
fn refused(r: http::Refused) -> XeError {
    let mut words = r.body.split_whitespace();
    let Some(code) =
        words.next().filter(|c| c.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
    else {
        return XeError::Transport(format!("the server answered {:?}", r.status_line));
    };
    let rest: Vec<&str> = words.collect();
    let count = model::error_code(code).map_or(rest.len(), |e| e.params.len()).max(1);
    let mut description = vec![code.to_string()];
    if rest.len() > count {
        description.extend(rest[..count - 1].iter().map(|s| s.to_string()));
        description.push(rest[count - 1..].join(" "));
    } else {
        description.extend(rest.iter().map(|s| s.to_string()));
    }
    XeError::Api(description)
}

fn stream_error(client: &Client, e: StreamError) -> XeError {
    match e {
        StreamError::Refused(r) => refused(r),
        StreamError::Io(e) => {
            XeError::Transport(format!("the transfer with the XenAPI server at {} failed: {e}", client.target()))
        }
    }
}

/// The progress bar: `\r  42% [#######       ] 123 MiB/456 MiB`, redrawn when the figures change.
struct Progress {
    shown: bool,
    last: Option<(u64, u64)>,
}

const BAR: u64 = 40;

impl Progress {
    fn new(args: &Args) -> Progress {
        Progress { shown: args.progress || std::io::stderr().is_terminal(), last: None }
    }

    fn line(done: u64, total: Option<u64>) -> String {
        let mib = |n: u64| n >> 20;
        match total {
            Some(total) if total > 0 => {
                let done = done.min(total);
                let percent = done * 100 / total;
                let filled = (done * BAR / total) as usize;
                format!(
                    "\r{percent:>5}% [{}{}] {} MiB/{} MiB",
                    "#".repeat(filled),
                    " ".repeat(BAR as usize - filled),
                    mib(done),
                    mib(total)
                )
            }
            _ => format!("\r  {} MiB", mib(done)),
        }
    }

    fn update(&mut self, done: u64, total: Option<u64>) {
        if !self.shown {
            return;
        }
        let t = total.unwrap_or(0);
        let key = ((done.min(t) * 1000).checked_div(t).unwrap_or(0), done >> 20);
        if self.last == Some(key) {
            return;
        }
        self.last = Some(key);
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(Self::line(done, total).as_bytes());
        let _ = err.flush();
    }

    /// Ends the bar's line.
    fn finish(&mut self) {
        if self.shown && self.last.is_some() {
            eprintln!();
        }
    }
}

fn vdi_import(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let filename = args.require("filename")?;
    let format = format_of(args, filename, &["raw", "vhd", "vmdk"])?;
    let into = match (args.get("uuid"), args.get("sr-uuid")) {
        (Some(uuid), None) => {
            by_uuid_param(client, args, "uuid", "VDI")?;
            format!("vdi={}", encode(uuid))
        }
        (None, Some(sr)) => {
            by_uuid_param(client, args, "sr-uuid", "SR")?;
            let stem = Path::new(filename).file_stem().and_then(|s| s.to_str()).unwrap_or("Imported disk");
            let mut q = format!("sr={}&name_label={}", encode(sr), encode(args.get("name-label").unwrap_or(stem)));
            if let Some(size) = args.get("virtual-size") {
                let bytes = crate::params::parse_size("virtual-size", size)?;
                q.push_str(&format!("&virtual_size={bytes}"));
            }
            q
        }
        _ => return Err(XeError::Failure("Give either uuid= (an existing VDI) or sr-uuid= (a new VDI).".into())),
    };
    let mut file =
        File::open(filename).map_err(|e| XeError::Failure(format!("Cannot open the file {filename}: {e}")))?;
    let length = file.metadata().map_err(|e| XeError::Failure(format!("Cannot read the file {filename}: {e}")))?.len();
    let query = format!("/import_raw_vdi?session_id={}&{into}&format={format}", encode(client.session()));
    let mut progress = Progress::new(args);
    progress.update(0, Some(length));
    let result = http::put_file(client.target(), &query, &mut file, length, &mut |n| progress.update(n, Some(length)));
    progress.finish();
    let body = result.map_err(|e| stream_error(client, e))?;
    if args.get("sr-uuid").is_some() {
        return super::uuid_line(client, "VDI", &xapi_types::Value::Str(body));
    }
    Ok(String::new())
}

/// Removes the part file unless it was renamed into place.
struct PartFile(Option<PathBuf>);

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn vdi_export(client: &mut Client, args: &Args) -> Result<String, XeError> {
    let uuid = args.require("uuid")?;
    let filename = args.require("filename")?;
    let format = format_of(args, filename, &["raw", "vhd"])?;
    by_uuid_param(client, args, "uuid", "VDI")?;
    let base = match args.get("base") {
        Some(b) => {
            by_uuid_param(client, args, "base", "VDI")?;
            format!("&base={}", encode(b))
        }
        None => String::new(),
    };
    let part_path = PathBuf::from(format!("{filename}.part"));
    let mut file = File::create(&part_path)
        .map_err(|e| XeError::Failure(format!("Cannot create the file {}: {e}", part_path.display())))?;
    let mut part = PartFile(Some(part_path.clone()));
    let query =
        format!("/export_raw_vdi?session_id={}&vdi={}&format={format}{base}", encode(client.session()), encode(uuid));
    let mut progress = Progress::new(args);
    let mut out = std::io::BufWriter::with_capacity(http::PIECE, &mut file);
    let result = http::get_into(client.target(), &query, &mut out, &mut |n, total| progress.update(n, total));
    progress.finish();
    result.map_err(|e| stream_error(client, e))?;
    let written = |e: std::io::Error| XeError::Failure(format!("Cannot write the file {}: {e}", part_path.display()));
    out.flush().map_err(written)?;
    drop(out);
    file.sync_all().map_err(written)?;
    drop(file);
    std::fs::rename(&part_path, filename)
        .map_err(|e| XeError::Failure(format!("Cannot rename {} to {filename}: {e}", part_path.display())))?;
    part.0 = None;
    Ok(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_progress_line() {
        assert_eq!(
            Progress::line(123 << 20, Some(456 << 20)),
            "\r   26% [##########                              ] 123 MiB/456 MiB"
        );
        assert_eq!(Progress::line(1 << 20, Some(1 << 20)), format!("\r  100% [{}] 1 MiB/1 MiB", "#".repeat(40)));
        assert_eq!(Progress::line(5 << 20, None), "\r  5 MiB");
    }

    #[test]
    fn error_lines_become_xenapi_failures() {
        let r =
            |body: &str| refused(http::Refused { status_line: "HTTP/1.1 400 Bad Request".into(), body: body.into() });
        assert_eq!(
            r("VDI_TOO_SMALL OpaqueRef:x 17825792"),
            XeError::Api(vec!["VDI_TOO_SMALL".into(), "OpaqueRef:x".into(), "17825792".into()])
        );
        assert_eq!(
            r("IMPORT_ERROR not a VHD: bad cookie"),
            XeError::Api(vec!["IMPORT_ERROR".into(), "not a VHD: bad cookie".into()])
        );
        assert!(matches!(r(""), XeError::Transport(_)));
    }

    #[test]
    fn formats_from_the_parameter_or_the_extension() {
        let args = |f: Option<&str>| Args {
            params: f.map(|f| ("format".to_string(), f.to_string())).into_iter().collect(),
            ..Args::default()
        };
        let all = ["raw", "vhd", "vmdk"];
        assert_eq!(format_of(&args(None), "a/disk.VHD", &all).unwrap(), "vhd");
        assert_eq!(format_of(&args(None), "disk.vmdk", &all).unwrap(), "vmdk");
        assert_eq!(format_of(&args(None), "disk.img", &all).unwrap(), "raw");
        assert_eq!(format_of(&args(None), "disk.vmdk", &["raw", "vhd"]).unwrap(), "raw");
        assert_eq!(format_of(&args(Some("vhd")), "disk.raw", &all).unwrap(), "vhd");
        assert!(format_of(&args(Some("qcow2")), "disk", &all).is_err());
    }
}
