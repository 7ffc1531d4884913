//! `GET /export_raw_vdi`: a VDI's content as a raw image or a dynamic VHD.
//!
//! `format=raw` streams the chain's content, `Content-Length` = the virtual size: allocated ranges are read, holes
//! are sent as zeros without touching the files. `format=vhd` builds a dynamic VHD of our layout (sparse, only
//! allocated blocks) in a temporary file of the SR under the SR's lock, unlinks it at once (the open file is all
//! that is left, so nothing leaks whatever happens) and streams it.
//!
//! A VDI attached read-write is refused (`VDI_IN_USE`): its content changes under the reader. The chain is
//! opened under the SR's lock and read without it: its files do not change content under an open chain (a
//! snapshot or the collector replaces files by renaming, and the open files stay what they were).
//!
//! `base=<vdi>` with `format=vhd` gives a delta: a differencing VHD (footer UUID the VDI's, parent UUID and
//! name the base's) holding the 2 MiB blocks whose content differs from the base's ([`vhd::write_delta`]), which
//! an import with `format=vhd` applies onto a disk holding the base's content.

use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State as AxState};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use storage_repo::block::BlockDevice;
use storage_repo::formats::vhd::{self, Chain};
use uuid::Uuid;
use xapi_types::generated::errors as codes;

use super::{Format, PIECE, TaskGuard, param};
use crate::error::ApiError;
use crate::state::{Peer, State};
use crate::storage;

static ZEROS: [u8; PIECE] = [0; PIECE];

/// What is streamed: the chain's content, or a file already built.
enum Source {
    Chain { chain: Box<Chain>, ranges: Vec<(u64, u64)> },
    File(File),
}

pub async fn export(
    AxState(state): AxState<Arc<State>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
) -> Response {
    let query = req.uri().query().unwrap_or_default().to_string();
    let mut t = match super::prelude(&state, &peer, &query, req.headers()).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let task = t.task.take();
    if let Err(e) = t.who.may(&state, "get_export_raw_vdi", "VDI", "copy") {
        return super::conclude(task, Err(e));
    }
    let format = t.format;
    let base = match param(&query, "base").filter(|b| !b.is_empty() && b != "OpaqueRef:NULL") {
        None => None,
        Some(b) => match base_of(&state, &t, &b) {
            Ok(b) => Some(b),
            Err(e) => return super::conclude(task, Err(e)),
        },
    };
    let st = state.clone();
    let prepared = tokio::task::spawn_blocking(move || -> Result<(Source, u64), ApiError> {
        if storage::attached_vbds(&st, &t.vdi).any(|(_, rw)| rw) {
            return Err(ApiError::new(&codes::VDI_IN_USE, [t.vdi.as_str(), "export"]));
        }
        st.storage.with_srs(&[&t.sr], || {
            let chain = Chain::open(&t.fsr.path(&t.uuid), false)?;
            if let Some(b) = base {
                return build_delta(&t.fsr.path(&t.uuid), &chain, t.uuid, &t.fsr.path(&b), b);
            }
            match t.format {
                Format::Raw => {
                    let ranges = chain.allocated_ranges()?;
                    let size = chain.size();
                    Ok((Source::Chain { chain: Box::new(chain), ranges }, size))
                }
                Format::Vhd => build_vhd(&t.fsr.path(&t.uuid), &chain, t.uuid),
                Format::Vmdk => Err(ApiError::new(
                    &codes::IMPORT_ERROR,
                    ["export_raw_vdi gives raw or vhd; VMDK is an import format".to_string()],
                )),
            }
        })
    })
    .await
    .map_err(ApiError::internal)
    .and_then(|r| r);
    let (source, length) = match prepared {
        Ok(p) => p,
        Err(e) => return super::conclude(task, Err(e)),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let outcome = produce(source, length, &tx, task.as_ref());
        if let Err(e) = &outcome {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.description().join(" "))));
        }
        if let Some(t) = task {
            t.finish(outcome.map(|()| String::new()));
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut r = Response::new(Body::from_stream(stream));
    let h = r.headers_mut();
    let ty = if format == Format::Vhd { "application/vhd" } else { "application/octet-stream" };
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    *r.status_mut() = StatusCode::OK;
    r
}

/// The base of a delta export: a VDI of the same SR (by ref or UUID), and `format=vhd`.
fn base_of(state: &State, t: &super::Target, base: &str) -> Result<Uuid, ApiError> {
    let vdi_c = crate::hv::rec::class("VDI");
    let b = if state.store.get(vdi_c, base).is_ok() {
        base.to_string()
    } else {
        state.store.by_uuid(vdi_c, base).map_err(|_| ApiError::handle_invalid("VDI", base))?.to_string()
    };
    if t.format != Format::Vhd {
        return Err(ApiError::new(
            &codes::IMPORT_ERROR,
            [
                "a delta (base=) is exported as a VHD: use format=vhd (a raw image cannot say which blocks are unchanged)",
            ],
        ));
    }
    let (uuid, sr) = storage::vdi_uuid(state, &b)?;
    if sr != t.sr {
        return Err(ApiError::new(
            &codes::IMPORT_ERROR,
            [format!("the base {b} is in another SR than {}: a delta is taken against a VDI of the same SR", t.vdi)],
        ));
    }
    Ok(uuid)
}

/// A differencing VHD of what differs between the chain and `base`'s, in a temporary file unlinked once open.
fn build_delta(
    vdi_path: &std::path::Path,
    chain: &Chain,
    uuid: Uuid,
    base_path: &std::path::Path,
    base: Uuid,
) -> Result<(Source, u64), ApiError> {
    built(vdi_path, |tmp| {
        let base_chain = Chain::open(base_path, false)?;
        vhd::create_delta(tmp, uuid, chain.size(), base, &format!("{base}.vhd"))?;
        let dst = Chain::open_alone(tmp, true)?;
        vhd::write_delta(chain, &base_chain, &dst)?;
        Ok(())
    })
}

/// A dynamic VHD of the chain's content in a temporary file next to the VDI's, unlinked once open.
fn build_vhd(vdi_path: &std::path::Path, chain: &Chain, uuid: Uuid) -> Result<(Source, u64), ApiError> {
    built(vdi_path, |tmp| {
        vhd::create_dynamic(tmp, uuid, chain.size())?;
        let dst = Chain::open_scratch(tmp)?;
        vhd::copy_into(chain, &dst)?;
        Ok(())
    })
}

/// A file `build` writes next to the VDI's, opened and unlinked at once (nothing is left behind, whatever
/// happens), with its length.
fn built(
    vdi_path: &std::path::Path,
    build: impl FnOnce(&std::path::Path) -> Result<(), ApiError>,
) -> Result<(Source, u64), ApiError> {
    let tmp = vdi_path.with_extension(format!("vhd.export-{}", Uuid::new_v4().simple()));
    let io = |e: std::io::Error| ApiError::new(&codes::VDI_IO_ERROR, [e.to_string()]);
    let result = build(&tmp).and_then(|()| {
        let file = File::open(&tmp).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Ok((Source::File(file), len))
    });
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Sends the content in pieces; stops when the client has gone or the task is cancelled.
fn produce(
    source: Source,
    length: u64,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    task: Option<&TaskGuard>,
) -> Result<(), ApiError> {
    let io = |e: std::io::Error| ApiError::new(&codes::VDI_IO_ERROR, [e.to_string()]);
    let gone = || ApiError::new(&codes::VDI_IO_ERROR, ["the client went away"]);
    let mut sent = 0u64;
    let send = |b: Bytes, sent: &mut u64| -> Result<(), ApiError> {
        if let Some(t) = task {
            t.check_cancelled()?;
            t.progress(*sent as f64 / length.max(1) as f64);
        }
        *sent += b.len() as u64;
        tx.blocking_send(Ok(b)).map_err(|_| gone())
    };
    match source {
        Source::File(mut f) => loop {
            let mut buf = vec![0u8; PIECE];
            let n = f.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            send(buf.into(), &mut sent)?;
        },
        Source::Chain { chain, ranges } => {
            let mut at = 0u64;
            let zeros = |from: u64, to: u64, sent: &mut u64| -> Result<(), ApiError> {
                let mut o = from;
                while o < to {
                    let n = (to - o).min(PIECE as u64);
                    send(Bytes::from_static(&ZEROS[..n as usize]), sent)?;
                    o += n;
                }
                Ok(())
            };
            for (start, len) in ranges {
                let start = start.min(length);
                let end = (start + len).min(length);
                zeros(at, start, &mut sent)?;
                let mut o = start;
                while o < end {
                    let n = (end - o).min(PIECE as u64) as usize;
                    let mut buf = vec![0u8; n];
                    chain.read_at(&mut buf, o).map_err(io)?;
                    send(buf.into(), &mut sent)?;
                    o += n as u64;
                }
                at = end.max(at);
            }
            zeros(at, length, &mut sent)?;
        }
    }
    Ok(())
}
