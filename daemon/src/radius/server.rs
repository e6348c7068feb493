//! The RADIUS listener: one receive loop per `radius.listen` address, each
//! datagram checked (client, packet shape, Message-Authenticator, reply
//! cache) on the loop and then handed to a worker task that calls the
//! blocking core on tokio's blocking pool, so a slow store or userstore
//! never stalls the socket. A semaphore bounds the requests in flight:
//! beyond it, requests are shed with a logged drop. SIGHUP reloads the
//! configuration; SIGTERM (or SIGINT) stops the loops and drains in-flight
//! requests. Shutdown is handled in `serve` alone.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use otpd_core::config::RadiusClientConfig;
use otpd_core::{AuthRequest, Config, Front, Otpd, Outcome};
use tokio::net::UdpSocket;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};
use tracing::{error, info, warn};

use super::cache::{Key, Lookup, ReplyCache};
use super::clients::{ClientError, ClientTable};
use super::codec::{self, MessageAuthenticator, Packet, attr, code};
use super::droplog::DropLog;

/// Requests handed to workers and not yet answered, at most.
const MAX_IN_FLIGHT: usize = 256;
/// Threads that run the core at once; the other requests in flight queue
/// for them. Enough for large commit groups, few enough that each keeps a
/// pooled store connection.
const CORE_THREADS: usize = 64;
/// How long SIGTERM waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_MESSAGE: &[u8] = b"otpd access granted";

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Core(#[from] otpd_core::Error),
    #[error(transparent)]
    Clients(#[from] ClientError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("radius.listen is empty: there is no address to listen on")]
    NoListen,
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// What a reload replaces: the core (store, realms, policies) and clients.
struct State {
    otpd: Arc<Otpd>,
    clients: ClientTable,
}

impl State {
    fn load(config_path: Option<&std::path::Path>) -> Result<(State, Config), ServeError> {
        let config = Config::locate(config_path).map_err(otpd_core::Error::from)?;
        let clients = ClientTable::new(&config.radius.clients)?;
        let otpd = Arc::new(Otpd::open(config.clone())?);
        Ok((State { otpd, clients }, config))
    }
}

struct Shared {
    state: RwLock<Arc<State>>,
    cache: ReplyCache,
    drops: DropLog,
    permits: Arc<Semaphore>,
}

impl Shared {
    fn state(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs the RADIUS listener until SIGTERM or SIGINT.
pub fn serve(config_path: Option<PathBuf>) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(CORE_THREADS)
        .thread_name("otpd")
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(run(config_path))
}

async fn run(config_path: Option<PathBuf>) -> Result<(), ServeError> {
    let (state, config) = State::load(config_path.as_deref())?;
    if config.is_builtin() {
        warn!(
            "no configuration file: using built-in defaults (store otpd.db in the working directory, \
             client 127.0.0.1 with secret testing123); write /etc/otpd/otpd.toml for real use"
        );
    }
    if config.radius.listen.is_empty() {
        return Err(ServeError::NoListen);
    }
    let mut sockets = Vec::new();
    for addr in &config.radius.listen {
        let socket =
            UdpSocket::bind(addr).await.map_err(|source| ServeError::Bind { addr: *addr, source })?;
        sockets.push(Arc::new(socket));
    }
    let shared = Arc::new(Shared {
        state: RwLock::new(Arc::new(state)),
        cache: ReplyCache::default(),
        drops: DropLog::default(),
        permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = Vec::new();
    for socket in sockets {
        let addr = socket
            .local_addr()
            .map_err(|source| ServeError::Bind { addr: config.radius.listen[0], source })?;
        info!("listening on {addr} ({} clients)", shared.state().clients.len());
        loops.push(tokio::spawn(receive_loop(socket, shared.clone(), stop_rx.clone())));
    }

    let mut hangup = signal(SignalKind::hangup()).map_err(ServeError::Runtime)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(ServeError::Runtime)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServeError::Runtime)?;
    loop {
        tokio::select! {
            _ = hangup.recv() => reload(&shared, config_path.clone()).await,
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    info!("stopping: no new requests; waiting for those in flight");
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    match tokio::time::timeout(DRAIN_TIMEOUT, shared.permits.acquire_many(MAX_IN_FLIGHT as u32)).await {
        Ok(_) => info!("stopped"),
        Err(_) => warn!("stopped with requests still in flight after {DRAIN_TIMEOUT:?}"),
    }
    Ok(())
}

async fn reload(shared: &Shared, config_path: Option<PathBuf>) {
    let loaded = tokio::task::spawn_blocking(move || State::load(config_path.as_deref())).await;
    match loaded {
        Ok(Ok((state, _))) => {
            let clients = state.clients.len();
            *shared.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
            info!("configuration reloaded ({clients} clients); listen addresses change only on restart");
        }
        Ok(Err(e)) => error!("reload failed, keeping the previous configuration: {e}"),
        Err(e) => error!("reload failed, keeping the previous configuration: {e}"),
    }
}

async fn receive_loop(socket: Arc<UdpSocket>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // One byte more than the largest packet, to notice oversized datagrams.
    let mut buf = vec![0u8; codec::MAX_PACKET + 1];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, source)) => handle_datagram(&socket, &shared, &buf[..n], source).await,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on Linux; keep going.
                    warn!("receive error on {:?}: {e}", socket.local_addr().ok());
                }
            },
            _ = stop.changed() => return,
        }
    }
}

/// The checks on the receive loop; the core call goes to a worker.
async fn handle_datagram(socket: &Arc<UdpSocket>, shared: &Arc<Shared>, data: &[u8], source: SocketAddr) {
    let state = shared.state();
    let Some(client) = state.clients.find(source.ip()) else {
        shared.drops.drop("unknown client", source, "");
        return;
    };
    let packet = match Packet::parse(data) {
        Ok(p) => p,
        Err(e) => {
            shared.drops.drop("malformed packet", source, &format!(": {e}"));
            return;
        }
    };
    if packet.code != code::ACCESS_REQUEST && packet.code != code::STATUS_SERVER {
        shared.drops.drop("unsupported packet code", source, &format!(" {}", packet.code));
        return;
    }
    let secret = client.secret.as_bytes();
    match packet.message_authenticator(secret) {
        MessageAuthenticator::Valid => {}
        MessageAuthenticator::Invalid => {
            shared.drops.drop("bad Message-Authenticator (wrong shared secret?)", source, "");
            return;
        }
        MessageAuthenticator::Missing => {
            if packet.code == code::STATUS_SERVER || client.require_message_authenticator {
                shared.drops.drop("missing Message-Authenticator", source, "");
                return;
            }
        }
    }
    if packet.code == code::STATUS_SERVER {
        // RFC 5997: answered at once, never cached.
        let reply = codec::encode_response(
            &packet,
            code::ACCESS_ACCEPT,
            &[(attr::REPLY_MESSAGE, b"otpd is up")],
            secret,
        );
        send(socket, &reply, source).await;
        return;
    }
    let key: Key = (source, packet.identifier, packet.authenticator);
    match shared.cache.lookup(key) {
        Lookup::New => {}
        Lookup::InFlight => return,
        Lookup::Answered(reply) => {
            send(socket, &reply, source).await;
            return;
        }
    }
    let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
        shared.cache.abandon(key);
        shared.drops.drop("overloaded", source, &format!(": {MAX_IN_FLIGHT} requests in flight"));
        return;
    };
    let raw = packet.raw().to_vec();
    let client = client.clone();
    let (socket, shared, otpd) = (socket.clone(), shared.clone(), state.otpd.clone());
    tokio::spawn(async move {
        let reply = Arc::new(answer(&otpd, &client, &raw, source).await);
        // Cached before it is sent, so a retransmission that crosses the
        // reply on the wire finds it.
        shared.cache.finish(key, reply.clone());
        send(&socket, &reply, source).await;
        drop(permit);
    });
}

async fn send(socket: &UdpSocket, reply: &[u8], target: SocketAddr) {
    if let Err(e) = socket.send_to(reply, target).await {
        warn!("cannot send a reply to {target}: {e}");
    }
}

/// Asks the core and encodes its verdict. The packet was checked already.
async fn answer(otpd: &Arc<Otpd>, client: &RadiusClientConfig, raw: &[u8], source: SocketAddr) -> Vec<u8> {
    let Ok(packet) = Packet::parse(raw) else { return Vec::new() };
    let secret = client.secret.as_bytes();
    let reject = |message: &str| {
        codec::encode_response(
            &packet,
            code::ACCESS_REJECT,
            &[(attr::REPLY_MESSAGE, message.as_bytes())],
            secret,
        )
    };
    let user = match packet.attr(attr::USER_NAME).map(std::str::from_utf8) {
        Some(Ok(u)) if !u.is_empty() => u.to_owned(),
        _ => return log_reject(&reject, "-", client, source, "no usable User-Name"),
    };
    let password = match packet.user_password(secret) {
        Ok(p) => p,
        Err(_) if packet.attr(attr::CHAP_PASSWORD).is_some() => {
            return log_reject(&reject, &user, client, source, "CHAP is not supported; configure PAP");
        }
        Err(e) => {
            return log_reject(&reject, &user, client, source, &format!("no usable User-Password ({e})"));
        }
    };
    let Ok(password) = String::from_utf8(password.to_vec()) else {
        return log_reject(&reject, &user, client, source, "User-Password is not UTF-8");
    };
    let mut req = AuthRequest::new(user.clone(), password, Front::Radius);
    req.fallback_realm = client.realm.clone();
    req.client = Some(nas_address(&packet, source.ip()));
    req.state = packet.attr(attr::STATE).map(|s| String::from_utf8_lossy(s).into_owned());
    req.service = Some(client.name.clone());
    let realm =
        otpd.realms().locate(&user, None, client.realm.as_deref()).map(|(_, r)| r).unwrap_or_default();

    let shown = clean(&user);
    let worker = otpd.clone();
    let outcome = match tokio::task::spawn_blocking(move || worker.authenticate(&req)).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            error!("user={shown} realm={realm} client={} result=reject reason=\"error: {e}\"", client.name);
            return reject("authentication failed: internal error");
        }
        Err(e) => {
            error!(
                "user={shown} realm={realm} client={} result=reject reason=\"worker failed: {e}\"",
                client.name
            );
            return reject("authentication failed: internal error");
        }
    };
    let serial = outcome.serial().unwrap_or("-");
    let (word, reply) = match &outcome {
        Outcome::Accept { .. } => (
            "accept",
            codec::encode_response(
                &packet,
                code::ACCESS_ACCEPT,
                &[(attr::REPLY_MESSAGE, ACCEPT_MESSAGE)],
                secret,
            ),
        ),
        Outcome::Reject { message, .. } => ("reject", reject(message)),
        Outcome::Challenge { state, message, .. } => (
            "challenge",
            codec::encode_response(
                &packet,
                code::ACCESS_CHALLENGE,
                &[(attr::STATE, state.as_bytes()), (attr::REPLY_MESSAGE, message.as_bytes())],
                secret,
            ),
        ),
    };
    info!(
        "user={shown} realm={realm} client={} ({}) result={word} reason=\"{}\" serial={serial}",
        client.name,
        source.ip().to_canonical(),
        clean(outcome.message())
    );
    reply
}

fn log_reject(
    reject: &dyn Fn(&str) -> Vec<u8>,
    user: &str,
    client: &RadiusClientConfig,
    source: SocketAddr,
    reason: &str,
) -> Vec<u8> {
    info!(
        "user={} realm=- client={} ({}) result=reject reason=\"{reason}\" serial=-",
        clean(user),
        client.name,
        source.ip().to_canonical()
    );
    reject(reason)
}

/// User-supplied text (the User-Name, messages that quote it) escaped for
/// a log line: a newline or quote typed at a login prompt must not forge
/// a line or a field.
fn clean(text: &str) -> String {
    text.escape_debug().to_string()
}

/// The request's client address for policies: NAS-IP-Address (or
/// NAS-IPv6-Address) when present, else the packet's source, as
/// privacyIDEA's RADIUS plugin does (semantics.md 4.1). The NAS is trusted
/// with this as with everything else: it holds the shared secret.
fn nas_address(packet: &Packet<'_>, source: IpAddr) -> IpAddr {
    if let Some(v4) = packet.attr(attr::NAS_IP_ADDRESS).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
        return IpAddr::from(v4);
    }
    if let Some(v6) = packet.attr(attr::NAS_IPV6_ADDRESS).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
        return IpAddr::from(v6).to_canonical();
    }
    source.to_canonical()
}
