//! The fixed newstyle handshake and option haggling, up to the start of the transmission phase.
//!
//! Options served: `EXPORT_NAME`, `GO`, `INFO` (`NBD_INFO_EXPORT`, `NBD_INFO_NAME` if asked, `NBD_INFO_BLOCK_SIZE`),
//! `LIST`, `ABORT`; everything else (structured replies, TLS, metadata contexts) is answered `NBD_REP_ERR_UNSUP`.

use std::io::{self, Read, Write};

use super::gate::Gate;
use super::proto::*;

/// How the handshake ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client chose our export; transmission starts.
    Transmission,
    /// The client aborted or broke the protocol; close the connection.
    Close,
}

/// The transmission flags for a device.
pub fn transmission_flags(read_only: bool) -> u16 {
    let mut f = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES;
    // Every connection goes through the same device object and a flush syncs the files themselves, so a flush on
    // one connection covers writes completed on any other.
    f |= FLAG_CAN_MULTI_CONN;
    if read_only {
        f |= FLAG_READ_ONLY;
    }
    f
}

/// Runs the handshake on `s` for the one export `export`.
pub fn negotiate<S: Read + Write>(s: &mut S, export: &str, gate: &Gate) -> io::Result<Outcome> {
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&hello)?;
    s.flush()?;

    let client_flags = read_u32(s)?;
    if client_flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Ok(Outcome::Close);
    }
    let no_zeroes = client_flags & FLAG_C_NO_ZEROES != 0;

    loop {
        if read_u64(s)? != IHAVEOPT {
            return Ok(Outcome::Close);
        }
        let option = read_u32(s)?;
        let len = read_u32(s)?;
        if len > MAX_OPTION_DATA {
            return Ok(Outcome::Close);
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data)?;

        match option {
            OPT_EXPORT_NAME => {
                if data != export.as_bytes() {
                    // The protocol has no way to refuse this option but hanging up.
                    return Ok(Outcome::Close);
                }
                let Some(g) = gate.geometry() else { return Ok(Outcome::Close) };
                let mut out = Vec::with_capacity(134);
                out.extend_from_slice(&g.size.to_be_bytes());
                out.extend_from_slice(&transmission_flags(g.read_only).to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                s.write_all(&out)?;
                s.flush()?;
                return Ok(Outcome::Transmission);
            }
            OPT_ABORT => {
                // The client may already have gone; that is fine.
                let _ = s.write_all(&option_reply(option, REP_ACK, &[])).and_then(|()| s.flush());
                return Ok(Outcome::Close);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    error_reply(s, option, REP_ERR_INVALID, "NBD_OPT_LIST takes no data")?;
                    continue;
                }
                let mut server = Vec::with_capacity(4 + export.len());
                server.extend_from_slice(&(export.len() as u32).to_be_bytes());
                server.extend_from_slice(export.as_bytes());
                s.write_all(&option_reply(option, REP_SERVER, &server))?;
                s.write_all(&option_reply(option, REP_ACK, &[]))?;
                s.flush()?;
            }
            OPT_INFO | OPT_GO => {
                let Some((name, infos)) = parse_info_request(&data) else {
                    error_reply(s, option, REP_ERR_INVALID, "malformed NBD_OPT_INFO/NBD_OPT_GO data")?;
                    continue;
                };
                if name != export.as_bytes() {
                    let msg = format!("no export named {:?}", String::from_utf8_lossy(name));
                    error_reply(s, option, REP_ERR_UNKNOWN, &msg)?;
                    continue;
                }
                let g = match gate.geometry() {
                    Some(g) => g,
                    None => {
                        error_reply(s, option, REP_ERR_SHUTDOWN, "the server is stopping")?;
                        continue;
                    }
                };
                let mut export_info = Vec::with_capacity(12);
                export_info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
                export_info.extend_from_slice(&g.size.to_be_bytes());
                export_info.extend_from_slice(&transmission_flags(g.read_only).to_be_bytes());
                s.write_all(&option_reply(option, REP_INFO, &export_info))?;
                if infos.contains(&INFO_NAME) {
                    let mut info = INFO_NAME.to_be_bytes().to_vec();
                    info.extend_from_slice(export.as_bytes());
                    s.write_all(&option_reply(option, REP_INFO, &info))?;
                }
                // Sent whether asked or not, as QEMU's server does. Requests of any alignment are served, so a
                // client that did not ask is told it may use byte granularity.
                let min = if infos.contains(&INFO_BLOCK_SIZE) || option == OPT_INFO { MIN_BLOCK } else { 1 };
                let mut bs = Vec::with_capacity(14);
                bs.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
                bs.extend_from_slice(&min.to_be_bytes());
                bs.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
                bs.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
                s.write_all(&option_reply(option, REP_INFO, &bs))?;
                s.write_all(&option_reply(option, REP_ACK, &[]))?;
                s.flush()?;
                if option == OPT_GO {
                    return Ok(Outcome::Transmission);
                }
            }
            _ => {
                error_reply(s, option, REP_ERR_UNSUP, "option not supported")?;
            }
        }
    }
}

fn error_reply<S: Write>(s: &mut S, option: u32, kind: u32, msg: &str) -> io::Result<()> {
    s.write_all(&option_reply(option, kind, msg.as_bytes()))?;
    s.flush()
}

fn read_u32<S: Read>(s: &mut S) -> io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64<S: Read>(s: &mut S) -> io::Result<u64> {
    let mut b = [0u8; 8];
    s.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}
