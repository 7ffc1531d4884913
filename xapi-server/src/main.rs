//! `xapi-server`: the daemon's command line.
//!
//! ```text
//! xapi-server --data-dir DIR [--http ADDR:PORT|none] [--https ADDR:PORT] [--cert FILE] [--socket PATH]
//!             [--libvirt-uri URI] [--root-password-file FILE] [--accel auto|kvm|tcg] [--host-memory-reserve MIB]
//!             [--nbd ADDR:PORT|none]
//! xapi-server tapdisk --socket PATH --ctl PATH --export NAME --pidfile PATH --vhd FILE [--read-only]
//! ```
//!
//! The second form is a block server (`storage_repo::nbd::tapdisk`), which the daemon starts for each VHD disk a
//! VM uses; administrators never run it themselves.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use xapi_server::hv::HvConfig;
use xapi_server::{Config, Settings};

/// The URL clients reach the plain-HTTP listener at (for console locations): the listen address, or this host's
/// address when listening on every interface.
fn http_base(http: &str) -> String {
    match http.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let ip = host_agent::facts::read().map(|f| f.address).unwrap_or_else(|_| "127.0.0.1".into());
            format!("http://{ip}:{}", a.port())
        }
        Ok(a) => format!("http://{a}"),
        Err(_) => "http://127.0.0.1".into(),
    }
}

/// The address `VDI.get_nbd_info` advertises for an NBD listener on `a`: its address, or this host's address when
/// it listens on every interface.
fn nbd_address(a: SocketAddr) -> String {
    if a.ip().is_unspecified() {
        host_agent::facts::read().map(|f| f.address).unwrap_or_else(|_| "127.0.0.1".into())
    } else {
        a.ip().to_string()
    }
}

#[derive(Parser, Debug)]
#[command(name = "xapi-server", version, about = "A XenAPI-compatible toolstack daemon")]
struct Args {
    /// Where the store, the root password file and the default socket live (production: /var/lib/xapi-rs).
    #[arg(long, default_value = "./var")]
    data_dir: PathBuf,
    /// Plain-HTTP listen address (production: 0.0.0.0:80). `none` turns plain HTTP off.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// HTTPS listen address (production: 0.0.0.0:443; default: off). TLS 1.2 and 1.3 with the certificate of
    /// --cert.
    #[arg(long)]
    https: Option<SocketAddr>,
    /// The HTTPS private key and certificate chain, in one PEM file (default DATA_DIR/xapi-ssl.pem; XenServer:
    /// /etc/xensource/xapi-ssl.pem). Generated, self-signed for this host's names and addresses, if missing.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Unix socket on which local root needs no password (default DATA_DIR/xapi; XenServer: /var/lib/xcp/xapi).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The libvirt connection VMs run on (`none`: run without a hypervisor).
    #[arg(long, default_value = "qemu:///system")]
    libvirt_uri: String,
    /// KVM or QEMU's software emulation: `auto` uses KVM only if the CPU has vmx/svm and /dev/kvm opens.
    #[arg(long, default_value = "auto")]
    accel: host_agent::accel::AccelChoice,
    /// Memory kept for the host itself, in MiB (shown as the control domain's; default: 1/16 of the host's memory
    /// within 1–8 GiB, as XenServer sizes dom0).
    #[arg(long)]
    host_memory_reserve: Option<u64>,
    /// How long VM.clean_shutdown and clean_reboot wait for the guest, in seconds.
    #[arg(long, default_value_t = 120)]
    clean_shutdown_timeout: u64,
    /// A file holding the root password, read on first start only (else $XAPI_ROOT_PASSWORD, else generated
    /// into DATA_DIR/root-password).
    #[arg(long)]
    root_password_file: Option<PathBuf>,
    /// Destroy sessions idle for longer than this many seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    session_idle_timeout: u64,
    /// Sessions one client may hold (a user with one login `originator`, or without one from one address); a
    /// login past it ends that client's least recently used session, never another client's (xapi: 500 per
    /// originator)
    #[arg(long, default_value_t = 500)]
    sessions_per_client: usize,
    /// Sessions one user may hold over all its clients; a login past it is refused (SESSION_AUTHORIZATION_FAILED)
    #[arg(long, default_value_t = 5000)]
    sessions_per_user: usize,
    /// TCP connections (plain or TLS) one client address may hold open; past it, 429 and the connection closes
    /// (one call runs per connection at a time, so this bounds a client's concurrent calls too)
    #[arg(long, default_value_t = 2048)]
    connections_per_client: usize,
    /// `Async.` calls that may run at once; past it, TOO_MANY_PENDING_TASKS
    #[arg(long, default_value_t = xapi_server::tasks::MAX_RUNNING)]
    max_pending_tasks: usize,
    /// Requests handled at once, all clients together (a waiting event.from counts); past it, 429
    #[arg(long, default_value_t = 4096)]
    max_concurrent_requests: usize,
    /// How many deletions are kept for event clients (an `event.from` token older than the oldest kept gets
    /// EVENTS_LOST instead of a silent gap).
    #[arg(long, default_value_t = xapi_server::db::DEFAULT_TOMBSTONE_LIMIT)]
    event_tombstones: usize,
    /// The NBD export's listen address for `VDI.get_nbd_info` clients (production: 0.0.0.0:10809, XenServer's
    /// port), plain TCP. `none` turns it off (`VDI.get_nbd_info` then answers `[]`).
    #[arg(long, default_value = "none")]
    nbd: String,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("tapdisk") {
        // Its stderr is its log file (`<tapdisk dir>/<vdi-uuid>.log`).
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .init();
        let args = storage_repo::nbd::tapdisk::parse_args(args.skip(1)).map_err(|e| anyhow::anyhow!("tapdisk: {e}"))?;
        return storage_repo::nbd::tapdisk::run(args).context("tapdisk");
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(daemon())
}

/// On SIGHUP, reads the certificate file again and serves new connections with it; a file that does not load is
/// logged and the certificate in use kept.
fn reload_on_sighup(path: PathBuf, config: xapi_server::tls::SharedConfig) -> anyhow::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let p = path.clone();
            match tokio::task::spawn_blocking(move || xapi_server::tls::load(&p)).await {
                Ok(Ok((new, fingerprint))) => {
                    *config.write().unwrap_or_else(|e| e.into_inner()) = new;
                    tracing::info!(file = %path.display(), sha256 = %fingerprint, "reloaded the certificate");
                }
                Ok(Err(e)) => {
                    let e = anyhow::Error::from(e);
                    tracing::warn!(error = format!("{e:#}"), "SIGHUP: kept the certificate in use");
                }
                Err(e) => tracing::warn!(error = %e, "SIGHUP: reloading the certificate failed"),
            }
        }
    });
    Ok(())
}

async fn daemon() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args = Args::parse();
    // The data dir is made absolute once: SR locations and block-server sockets derived from it must be (the
    // README's `--data-dir ./var`, and the default, are relative).
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    args.data_dir =
        std::fs::canonicalize(&args.data_dir).with_context(|| format!("resolving {}", args.data_dir.display()))?;
    // The certificate is read (or made) before anything else starts, so that a bad file stops the start.
    let tls = match args.https {
        Some(_) => {
            let path = args.cert.clone().unwrap_or_else(|| args.data_dir.join(xapi_server::tls::CERT_FILE));
            let p = path.clone();
            // The error names the file.
            let id = tokio::task::spawn_blocking(move || xapi_server::tls::load_or_generate(&p)).await??;
            if id.generated {
                tracing::info!(file = %path.display(), sha256 = %id.fingerprint, "generated a self-signed certificate");
            } else {
                tracing::info!(file = %path.display(), sha256 = %id.fingerprint, "loaded the certificate");
            }
            Some((path, std::sync::Arc::new(std::sync::RwLock::new(id.config))))
        }
        None => None,
    };
    let root_password = match (&args.root_password_file, std::env::var("XAPI_ROOT_PASSWORD")) {
        (Some(file), _) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        (None, Ok(p)) if !p.is_empty() => Some(p),
        _ => None,
    };
    let nbd = match args.nbd.as_str() {
        "none" => None,
        a => {
            let addr: SocketAddr = a.parse().with_context(|| format!("--nbd {a}"))?;
            Some(std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?)
        }
    };
    let nbd_advertised = match &nbd {
        Some(l) => {
            let a = l.local_addr()?;
            Some((nbd_address(a), a.port()))
        }
        None => None,
    };
    let config = Config {
        data_dir: args.data_dir.clone(),
        root_password,
        settings: Settings {
            session_idle_timeout: std::time::Duration::from_secs(args.session_idle_timeout),
            tombstone_limit: args.event_tombstones,
            http_base: match (args.http.as_str(), args.https) {
                ("none", Some(https)) => http_base(&https.to_string()).replacen("http:", "https:", 1),
                (http, _) => http_base(http),
            },
            nbd: nbd_advertised,
            sessions_per_client: args.sessions_per_client,
            sessions_per_user: args.sessions_per_user,
            connections_per_client: args.connections_per_client,
            max_pending_tasks: args.max_pending_tasks,
            max_concurrent_requests: args.max_concurrent_requests,
        },
        hv: HvConfig {
            libvirt_uri: (args.libvirt_uri != "none").then(|| args.libvirt_uri.clone()),
            accel: args.accel,
            host_memory_reserve: args.host_memory_reserve.map(|m| m << 20),
            clean_shutdown_timeout: std::time::Duration::from_secs(args.clean_shutdown_timeout),
        },
    };
    let state = tokio::task::spawn_blocking(move || xapi_server::open(&config)).await??;
    let st = state.clone();
    tokio::task::spawn_blocking(move || xapi_server::connect_hypervisor(&st)).await?;
    xapi_server::spawn_reaper(state.clone());
    let nbd = match nbd {
        Some(listener) => {
            let export = xapi_server::storage::nbd_export::spawn(listener, state.clone())?;
            tracing::info!(addr = %export.local_addr(), "serving the NBD export (plain TCP)");
            Some(export)
        }
        None => None,
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    if args.http != "none" {
        let addr: SocketAddr = args.http.parse().with_context(|| format!("--http {}", args.http))?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving XenAPI over HTTP");
        servers.spawn(xapi_server::serve(listener, state.clone(), stopped()));
    }
    if let (Some(addr), Some((path, config))) = (args.https, tls) {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving XenAPI over HTTPS");
        let listener = xapi_server::tls::TlsListener::new(listener, config.clone())?;
        reload_on_sighup(path, config)?;
        servers.spawn(xapi_server::serve(listener, state.clone(), stopped()));
    }
    let socket = args.socket.clone().unwrap_or_else(|| args.data_dir.join("xapi"));
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    tracing::info!(socket = %socket.display(), "serving XenAPI on the unix socket (root needs no password)");
    servers.spawn(xapi_server::serve(listener, state.clone(), stopped()));

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        Some(done) = servers.join_next() => {
            done??;
            bail!("a listener stopped unexpectedly");
        }
    }
    tracing::info!("shutting down");
    state.stop();
    let _ = stop_tx.send(true);
    while let Some(done) = servers.join_next().await {
        done??;
    }
    if let Some(export) = nbd {
        tokio::task::spawn_blocking(move || export.shutdown()).await?;
    }
    let _ = std::fs::remove_file(&socket);
    // The block servers' directory, if no server runs any more (they outlive the daemon otherwise, by design).
    let _ = std::fs::remove_dir(state.storage.tapdisks.dir());
    Ok(())
}
