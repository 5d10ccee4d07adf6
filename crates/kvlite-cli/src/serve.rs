//! `kvlite serve`: the storage engine behind the WebSocket protocol.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use kvlite_engine::{Engine, EngineConfig};
use kvlite_server::{BoundServer, ServerConfig, Tokens};
use prometheus_client::registry::Registry;

use crate::store::{self, Access, GlobalOpts};

/// The default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7435";

/// Serve databases to kvlite clients over WebSocket (ws://ADDR/ws), with
/// Prometheus metrics on /metrics and /health
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (HOST:PORT; a name such as localhost resolves to
    /// its first address); anything but loopback requires tokens
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN, value_parser = listen_addr)]
    listen: SocketAddr,
    /// File of `namespace token [admin]` lines; each token reaches only its
    /// namespace, and only `admin` tokens may change quotas
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Tokens as `namespace token [admin]` entries separated by newlines or `;`
    #[arg(
        long = "tokens-env",
        env = "KVLITE_TOKENS",
        hide = true,
        hide_env_values = true
    )]
    tokens_env: Option<String>,
    /// How long each database's commits stay readable (reads in the past,
    /// restores, forks) unless it sets its own (`kvlite retention`); 0 keeps
    /// no history
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = humantime::parse_duration)]
    retention: std::time::Duration,
}

/// HOST:PORT, where HOST may be a name (`localhost:7435`).
fn listen_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| format!("{s:?} is not HOST:PORT ({e})"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{s:?} resolves to no address"))
}

pub fn run(opts: &GlobalOpts, args: ServeArgs) -> Result<()> {
    kvlite_server::limit_malloc_arenas();
    if opts.server.is_some() {
        return Err(anyhow!(
            "serve keeps data in --data or --postgres, not on another server"
        ));
    }
    let tokens = match (&args.tokens, &args.tokens_env) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Tokens::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?
        }
        (None, Some(text)) => Tokens::parse(text).map_err(|e| anyhow!("KVLITE_TOKENS: {e}"))?,
        (None, None) => Tokens::default(),
    };
    let kvs = if opts.postgres.len() > 1 {
        store::open_clusters(opts)?
    } else {
        vec![store::open_kv(opts, Access::Create)?]
    };
    let backend = kvs.first().map_or("", |kv| kv.backend_name());
    let mut registry = Registry::default();
    let config = EngineConfig {
        history_retention: args.retention,
        ..EngineConfig::default()
    };
    let clusters = kvs.len();
    let engines: Vec<_> = kvs
        .into_iter()
        .enumerate()
        .map(|(i, kv)| {
            // One cluster keeps the metric names as they always were.
            let registry = if clusters == 1 {
                &mut registry
            } else {
                registry.sub_registry_with_label((
                    std::borrow::Cow::Borrowed("cluster"),
                    std::borrow::Cow::Owned(i.to_string()),
                ))
            };
            Engine::new(kv, config.clone(), registry)
        })
        .collect();
    let compactors: Vec<_> = engines.iter().map(|e| e.start_compactor()).collect();
    let placement =
        std::sync::Arc::new(kvlite_placement::Placement::new(engines).map_err(|e| anyhow!("{e}"))?);
    let mut config = ServerConfig::new(args.listen);
    config.tokens = tokens;
    let namespaces = config.tokens.len();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(async move {
        let bound = BoundServer::bind_placement(placement, registry, config).await?;
        let addr = bound.local_addr()?;
        if opts.postgres.is_empty() {
            // Where a command on this machine reaches the server instead.
            let mut reach = addr;
            if reach.ip().is_unspecified() {
                reach.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            crate::store::note_holder(&opts.data_dir(), Some(&format!("ws://{reach}")));
        }
        let store = match opts.postgres.len() {
            0 => opts.data_dir().display().to_string(),
            1 => "PostgreSQL".to_string(),
            n => format!("{n} PostgreSQL clusters"),
        };
        let auth = if namespaces == 0 { "no tokens (loopback only)".to_string() } else { format!("{namespaces} tokens") };
        let json = opts.log_format == crate::store::LogFormat::Json;
        announce(json, &format!("kvlite serving ws://{addr}/ws ({backend} store: {store}; {auth}); metrics on http://{addr}/metrics"));
        bound.serve(kvlite_server::shutdown_signal()).await?;
        announce(json, "kvlite stopped");
        Ok::<_, kvlite_server::ServerError>(())
    })?;
    for compactor in compactors {
        compactor.stop();
    }
    Ok(())
}

/// A line the server always prints (whatever RUST_LOG says): as text, or as
/// an object shaped like the JSON log lines around it.
fn announce(json: bool, message: &str) {
    if json {
        let line = serde_json::json!({
            "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "level": "INFO",
            "fields": { "message": message },
            "target": "kvlite::serve",
        });
        eprintln!("{line}");
    } else {
        eprintln!("{message}");
    }
}
