//! `vhd-tool`: blktap-style VHD files from the command line (like `vhd-util`), for tests and administrators.
//!
//! ```text
//! vhd-tool create <file> <size>          size in bytes or with a K/M/G/T suffix (binary units)
//! vhd-tool snapshot <child> <parent>     a differencing child of <parent> (same directory)
//! vhd-tool info <file>                   key=value lines
//! vhd-tool check <file>                  exit 0 if valid, 1 with the problem
//! vhd-tool set-hidden <file> 0|1
//! vhd-tool set-parent <file> <parent>
//! vhd-tool resize <file> <size>
//! vhd-tool coalesce <child>              copy the child's sectors into its parent
//! vhd-tool read <file> <out.raw>         the chain's whole content as a raw image
//! vhd-tool write <file> <offset> <in>    write a file's bytes into the chain at offset
//! ```

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::{self, Chain, DiskType, Info};
use uuid::Uuid;

const USAGE: &str = "usage: vhd-tool create <file> <size> | snapshot <child> <parent> | info <file> | check <file> | \
                     set-hidden <file> 0|1 | set-parent <file> <parent> | resize <file> <size> | coalesce <child> | \
                     read <file> <out.raw> | write <file> <offset> <in-file>";

fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, shift) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("unknown size suffix in {s:?}")),
            };
            (&s[..i], shift)
        }
        _ => (s, 0),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a size"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("{s:?} is too large"))
}

fn print_info(i: &Info) {
    let kind = match i.disk_type {
        DiskType::Fixed => "fixed",
        DiskType::Dynamic => "dynamic",
        DiskType::Differencing => "differencing",
    };
    println!("uuid={}", i.uuid);
    println!("type={kind}");
    println!("virtual_size={}", i.virtual_size);
    println!("hidden={}", u8::from(i.hidden));
    if let Some(p) = &i.parent {
        println!("parent_uuid={}", p.uuid);
        println!("parent={}", p.file_name);
    }
    println!("creator={}", String::from_utf8_lossy(&i.creator).trim_end_matches('\0'));
    println!("file_size={}", i.file_size);
    println!("allocated_blocks={}", i.allocated_blocks);
    println!("block_size={}", i.block_size);
}

fn run(args: &[String]) -> Result<(), String> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = |e: storage_repo::Error| e.to_string();
    match a.as_slice() {
        ["create", file, size] => {
            let t = Instant::now();
            let info = vhd::create_dynamic(Path::new(file), Uuid::new_v4(), parse_size(size)?).map_err(e)?;
            eprintln!("created in {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
            print_info(&info);
        }
        ["snapshot", child, parent] => {
            print_info(&vhd::create_child(Path::new(child), Uuid::new_v4(), Path::new(parent)).map_err(e)?);
        }
        ["info", file] => print_info(&vhd::read_info(Path::new(file)).map_err(e)?),
        ["check", file] => {
            vhd::check(Path::new(file)).map_err(e)?;
            println!("{file} is valid");
        }
        ["set-hidden", file, v @ ("0" | "1")] => vhd::set_hidden(Path::new(file), *v == "1").map_err(e)?,
        ["set-parent", file, parent] => vhd::set_parent(Path::new(file), Path::new(parent)).map_err(e)?,
        ["resize", file, size] => print_info(&vhd::resize(Path::new(file), parse_size(size)?).map_err(e)?),
        ["coalesce", child] => {
            let t = Instant::now();
            let n = vhd::coalesce(Path::new(child)).map_err(e)?;
            println!("coalesced={n}");
            eprintln!("coalesced {n} bytes in {:.3} s", t.elapsed().as_secs_f64());
        }
        ["read", file, out] => {
            let chain = Chain::open(Path::new(file), false).map_err(e)?;
            let mut o = File::create(out).map_err(|x| format!("{out}: {x}"))?;
            let t = Instant::now();
            let mut buf = vec![0u8; 4 << 20];
            let size = chain.size();
            let mut pos = 0;
            while pos < size {
                let n = (size - pos).min(buf.len() as u64) as usize;
                chain.read_at(&mut buf[..n], pos).map_err(|x| format!("{file}: {x}"))?;
                o.write_all(&buf[..n]).map_err(|x| format!("{out}: {x}"))?;
                pos += n as u64;
            }
            let s = t.elapsed().as_secs_f64();
            eprintln!("read {size} bytes in {s:.3} s ({:.0} MB/s)", size as f64 / s / 1e6);
        }
        ["write", file, offset, input] => {
            let chain = Chain::open(Path::new(file), true).map_err(e)?;
            let mut inp = File::open(input).map_err(|x| format!("{input}: {x}"))?;
            let mut pos = parse_size(offset)?;
            let mut buf = vec![0u8; 4 << 20];
            loop {
                let n = inp.read(&mut buf).map_err(|x| format!("{input}: {x}"))?;
                if n == 0 {
                    break;
                }
                chain.write_at(&buf[..n], pos).map_err(|x| format!("{file}: {x}"))?;
                pos += n as u64;
            }
            chain.flush().map_err(|x| format!("{file}: {x}"))?;
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("vhd-tool: {msg}");
            ExitCode::FAILURE
        }
    }
}
