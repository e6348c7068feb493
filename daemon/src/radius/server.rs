//! The RADIUS listener: a pool of core threads reads the `radius.listen`
//! sockets, one at a time (`turn`): the thread holding the turn checks
//! each datagram (client, packet shape, Message-Authenticator, reply
//! cache) and asks the core itself, so a request never passes between
//! threads on its way in. A request stuck in a slow PIN hash or userstore
//! hands the turn to another thread after `STALL`, so it never stalls the
//! sockets. Requests wait in the sockets' receive buffers; beyond them,
//! the kernel drops and counts them, and otpd logs the count (`sockets`).
//!
//! A core thread never sleeps through a commit: it asks the core with
//! `authenticate_then` and takes the next request, and the reply of each
//! login is encoded, cached and sent by the thread that calls it back once
//! the login's group is durable (the store's WAL sync thread; see the
//! SQLite store). The holder that finds the sockets empty commits the
//! group before it waits, so a group holds the logins that arrived during
//! the previous commit: one fsync for all of them, and few thread
//! wake-ups per login. Under load the store commits a group of 16 or more
//! early, when its sync thread is idle, so that the holder fills the next
//! group while that one syncs.
//! With `[pam] socket`, the threads answering pam_otpd (`local_socket`)
//! start and stop here too, on the same core.
//! SIGHUP reloads the configuration; SIGTERM (or SIGINT) stops the reading
//! and lets the requests in progress finish. Shutdown is handled in
//! `serve` alone.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use otpd_core::{AuthRequest, Config, Front, Otpd, Outcome};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::local_socket::SocketServer;
use crate::logging::clean;

use super::cache::{Key, Lookup, ReplyCache};
use super::clients::{Client, ClientError, ClientTable};
use super::codec::{self, MessageAuthenticator, Packet, Secret, attr, code};
use super::droplog::{DropLog, STORE_INTERVAL, StoreLog};
use super::ratelimit::{self, Admitted, Keys, Limited, RateLimiter, Settle};
use super::sockets::{Datagram, Sockets};
use super::turn::Turn;

/// Threads that read the sockets and run the core. They do not wait for
/// commits, and one of them reads and answers while it keeps up (logins
/// without PIN); the rest are for requests stuck in a slow PIN hash or
/// userstore.
const CORE_THREADS: usize = 16;
/// The thread holding the turn in one request for this long hands the
/// turn to another (it is in a slow PIN hash or userstore); see `turn`.
const STALL: Duration = Duration::from_millis(2);
/// How long SIGTERM waits for the requests in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_MESSAGE: &[u8] = b"otpd access granted";
/// Logins the store failed, logged once per interval: one store per process.
static STORE_LOG: StoreLog = StoreLog::new(STORE_INTERVAL);

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
    #[error(transparent)]
    Privilege(#[from] crate::privilege::PrivilegeError),
    #[error(transparent)]
    PamSocket(#[from] crate::local_socket::SocketError),
}

/// What a reload replaces: the core (store, realms, policies) and clients.
pub struct State {
    otpd: Arc<Otpd>,
    clients: ClientTable,
    /// Kept across reloads (see `reload`).
    limiter: Arc<RateLimiter>,
}

impl State {
    fn load(config_path: Option<&std::path::Path>) -> Result<(State, Config), ServeError> {
        let config = Config::locate(config_path).map_err(otpd_core::Error::from)?;
        Ok((State::open(config.clone())?, config))
    }

    /// Opens the core and the client table of `config`.
    pub fn open(config: Config) -> Result<State, ServeError> {
        let clients = ClientTable::new(&config.radius.clients)?;
        let limiter = Arc::new(RateLimiter::new(&config.rate_limit));
        let otpd = Arc::new(Otpd::open(config)?);
        Ok(State { otpd, clients, limiter })
    }

    /// One datagram handled from end to end, synchronously and without the
    /// reply cache: the reply, or why the datagram is dropped. What a core
    /// thread does with a datagram, for tests and fuzzing.
    pub fn handle(&self, data: &[u8], source: SocketAddr) -> Result<Vec<u8>, Dropped> {
        match check(&self.clients, data, source)? {
            Checked::Reply(reply) => Ok(reply),
            Checked::Work(client) => {
                let (sender, replies) = std::sync::mpsc::channel();
                let to = ReplyTo::new(client.clone(), data.to_vec(), source, Sink::Channel(sender));
                answer_then(&self.otpd, &self.limiter, to);
                self.otpd.flush();
                Ok(replies.recv().unwrap_or_default())
            }
        }
    }
}

/// Why a datagram gets no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub kind: &'static str,
    pub detail: String,
}

impl Dropped {
    fn new(kind: &'static str, detail: String) -> Self {
        Dropped { kind, detail }
    }
}

/// A checked datagram: answered at once (Status-Server), or an
/// Access-Request of this client for the core.
enum Checked<'a> {
    Reply(Vec<u8>),
    Work(&'a Arc<Client>),
}

/// The request a reply answers and where the reply goes. Dropped without
/// a reply (the core panicked), it sends the internal-error reject, so a
/// NAS is never left to time out by a fault of ours.
struct ReplyTo {
    client: Arc<Client>,
    raw: Vec<u8>,
    source: SocketAddr,
    sink: Sink,
    sent: bool,
}

enum Sink {
    /// Cached under `key`, then sent from `socket` to the request's source.
    Socket { shared: Arc<Shared>, socket: Arc<UdpSocket>, key: Key },
    /// Handed back to `State::handle`.
    Channel(std::sync::mpsc::Sender<Vec<u8>>),
}

impl ReplyTo {
    fn new(client: Arc<Client>, raw: Vec<u8>, source: SocketAddr, sink: Sink) -> ReplyTo {
        ReplyTo { client, raw, source, sink, sent: false }
    }

    fn send(mut self, reply: Vec<u8>) {
        self.sent = true;
        self.deliver(reply);
    }

    fn deliver(&self, reply: Vec<u8>) {
        match &self.sink {
            Sink::Socket { shared, socket, key } => {
                let reply: Arc<[u8]> = Arc::from(reply);
                // Cached before it is sent, so a retransmission that
                // crosses the reply on the wire finds it.
                shared.cache.finish(*key, reply.clone());
                send(shared, socket, &reply, self.source);
            }
            Sink::Channel(sender) => {
                let _ = sender.send(reply);
            }
        }
    }
}

impl Drop for ReplyTo {
    fn drop(&mut self) {
        if !self.sent {
            error!("the core failed answering {} (a panic); rejected", self.source);
            self.deliver(internal_error_reply(&self.client, &self.raw));
        }
    }
}

struct Shared {
    state: RwLock<Arc<State>>,
    cache: ReplyCache,
    drops: DropLog,
}

impl Shared {
    fn state(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Runs the RADIUS listener until SIGTERM or SIGINT.
pub fn serve(config_path: Option<PathBuf>) -> Result<(), ServeError> {
    // Signals and reloads only: the core threads read the sockets.
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ServeError::Runtime)?;
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
    let mut bound = Vec::new();
    for addr in &config.radius.listen {
        bound.push(UdpSocket::bind(addr).map_err(|source| ServeError::Bind { addr: *addr, source })?);
    }
    let sockets = Arc::new(Sockets::new(bound).map_err(ServeError::Runtime)?);
    let pam_listener = config.pam_socket.as_deref().map(crate::local_socket::bind).transpose()?;
    // Bound (port 1812 may need root) and the store open: now unprivileged.
    crate::privilege::become_service_user(&config)?;
    let shared = Arc::new(Shared {
        state: RwLock::new(Arc::new(state)),
        cache: ReplyCache::default(),
        drops: DropLog::default(),
    });
    for (addr, listen) in sockets.local_addrs().into_iter().zip(&config.radius.listen) {
        let addr = addr.map_err(|source| ServeError::Bind { addr: *listen, source })?;
        info!("listening on {addr} ({} clients)", shared.state().clients.len());
    }
    let turn = Arc::new(Turn::new(STALL));
    let workers = start_core_threads(&sockets, &turn, &shared).map_err(ServeError::Runtime)?;
    let pam_server = match (pam_listener, &config.pam_socket) {
        (Some(listener), Some(path)) => {
            let shared = shared.clone();
            let core = move || shared.state().otpd.clone();
            Some(SocketServer::start(listener, path.clone(), core).map_err(ServeError::Runtime)?)
        }
        _ => None,
    };

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

    info!("stopping: no new requests; answering those in progress");
    turn.stop();
    sockets.stop();
    if let Some(server) = pam_server {
        // Its threads finish the logins they hold (at most IO_TIMEOUT each).
        let _ = tokio::task::spawn_blocking(move || server.stop()).await;
    }
    // The core threads finish their requests, commit, and end.
    let drained = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    });
    match tokio::time::timeout(DRAIN_TIMEOUT, drained).await {
        Ok(_) => info!("stopped; {}", shared.drops.totals()),
        Err(_) => warn!("stopped with requests still in flight after {DRAIN_TIMEOUT:?}"),
    }
    Ok(())
}

/// The core threads: the one holding the turn reads a datagram and
/// answers it, until the sockets are empty; then it commits the open group
/// and waits in `poll`. They end once stopped, after a last commit.
fn start_core_threads(
    sockets: &Arc<Sockets>,
    turn: &Arc<Turn>,
    shared: &Arc<Shared>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..CORE_THREADS)
        .map(|me| {
            let (sockets, turn, shared) = (sockets.clone(), turn.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("otpd-core-{me}"))
                .spawn(move || core_thread(me, &sockets, &turn, &shared))
        })
        .collect()
}

fn core_thread(me: usize, sockets: &Sockets, turn: &Turn, shared: &Arc<Shared>) {
    // One byte more than the largest packet, to notice oversized datagrams.
    let mut buf = vec![0u8; codec::MAX_PACKET + 1];
    let mut cmsg = Sockets::cmsg_buffer();
    // The core of the logins this thread left in an open group.
    let mut unflushed: Option<Arc<Otpd>> = None;
    while turn.take(me) {
        // Taking over from a thread stuck in a request: the group it left
        // open is committed as soon as the sockets are empty, so that the
        // logins in it need not wait for that request.
        unflushed.get_or_insert_with(|| shared.state().otpd.clone());
        while !turn.stopped() {
            let datagram = match sockets.try_recv(&mut buf, &mut cmsg) {
                Some(Ok(datagram)) => datagram,
                Some(Err(e)) => {
                    // The socket's error, not a datagram's: keep reading.
                    warn!("receive error: {e}");
                    continue;
                }
                None => {
                    if let Some(otpd) = unflushed.take() {
                        flush(&otpd);
                    }
                    if !sockets.wait() {
                        break;
                    }
                    continue;
                }
            };
            turn.begin(me);
            // A panic (a bug) ends this datagram, not the thread; one in the
            // core call drops its `ReplyTo`, which sends the internal-error
            // reject.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handle_datagram(shared, &datagram, &buf[..datagram.len], &mut unflushed)
            }));
            if !turn.end(me) {
                // A watcher took the turn while this request was slow.
                break;
            }
        }
        if let Some(otpd) = unflushed.take() {
            flush(&otpd);
        }
    }
}

/// Commits the logins a core thread left in an open group. Their replies
/// may be encoded, logged and sent in there (without the WAL sync thread):
/// a panic in one ends that reply (its `ReplyTo`, dropped, sends the
/// internal-error reject), not the thread.
fn flush(otpd: &Otpd) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| otpd.flush()));
}

async fn reload(shared: &Shared, config_path: Option<PathBuf>) {
    let loaded = tokio::task::spawn_blocking(move || State::load(config_path.as_deref())).await;
    match loaded {
        Ok(Ok((mut state, config))) => {
            // The failed-attempt counts survive a reload; the limits change.
            state.limiter = shared.state().limiter.clone();
            state.limiter.configure(&config.rate_limit);
            let clients = state.clients.len();
            *shared.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
            info!(
                "configuration reloaded ({clients} clients); radius.listen and pam.socket change only on restart"
            );
        }
        Ok(Err(e)) => error!("reload failed, keeping the previous configuration: {e}"),
        Err(e) => error!("reload failed, keeping the previous configuration: {e}"),
    }
}

/// One datagram on the thread holding the turn: the checks, then the core
/// call (whose reply is sent once the login is committed).
fn handle_datagram(
    shared: &Arc<Shared>,
    datagram: &Datagram,
    data: &[u8],
    unflushed: &mut Option<Arc<Otpd>>,
) {
    let (socket, source) = (&datagram.socket, datagram.source);
    if datagram.dropped > 0 {
        shared.drops.overflowed(socket.local_addr().unwrap_or(source), datagram.dropped);
    }
    let state = shared.state();
    let client = match check(&state.clients, data, source) {
        Err(dropped) => return shared.drops.drop(dropped.kind, source, &dropped.detail),
        Ok(Checked::Reply(reply)) => return send(shared, socket, &reply, source),
        Ok(Checked::Work(client)) => client,
    };
    // `check` parsed the packet: the header fields are there.
    let identifier = data[1];
    let authenticator: [u8; 16] = data[4..20].try_into().expect("a checked packet has a header");
    let key: Key = (source, identifier, authenticator);
    match shared.cache.lookup(key) {
        Lookup::New => {}
        Lookup::InFlight => return,
        Lookup::Answered(reply) => return send(shared, socket, &reply, source),
    }
    // After a reload, the old core's group is committed at once.
    if let Some(previous) = unflushed.take_if(|o| !Arc::ptr_eq(o, &state.otpd)) {
        flush(&previous);
    }
    *unflushed = Some(state.otpd.clone());
    let sink = Sink::Socket { shared: shared.clone(), socket: socket.clone(), key };
    let to = ReplyTo::new(client.clone(), data.to_vec(), source, sink);
    answer_then(&state.otpd, &state.limiter, to);
}

/// Client, packet shape, code and Message-Authenticator; Status-Server is
/// answered here.
fn check<'a>(clients: &'a ClientTable, data: &[u8], source: SocketAddr) -> Result<Checked<'a>, Dropped> {
    let Some(client) = clients.find(source.ip()) else {
        return Err(Dropped::new("unknown client", String::new()));
    };
    let packet = Packet::parse(data).map_err(|e| Dropped::new("malformed packet", format!(": {e}")))?;
    if packet.code != code::ACCESS_REQUEST && packet.code != code::STATUS_SERVER {
        return Err(Dropped::new("unsupported packet code", format!(" {}", packet.code)));
    }
    let secret = &client.secret;
    match packet.message_authenticator(secret) {
        MessageAuthenticator::Valid => {}
        MessageAuthenticator::Invalid => {
            return Err(Dropped::new("bad Message-Authenticator (wrong shared secret?)", String::new()));
        }
        MessageAuthenticator::Missing => {
            if packet.code == code::STATUS_SERVER || client.config.require_message_authenticator {
                return Err(Dropped::new("missing Message-Authenticator", String::new()));
            }
        }
    }
    if packet.code == code::STATUS_SERVER {
        // RFC 5997: answered at once, never cached.
        return Ok(Checked::Reply(codec::encode_response(
            &packet,
            code::ACCESS_ACCEPT,
            &[(attr::REPLY_MESSAGE, b"otpd is up")],
            secret,
        )));
    }
    Ok(Checked::Work(client))
}

/// Sends a reply. The socket does not block: a reply the send buffer
/// cannot take now is lost, counted and logged like a dropped request (at
/// most a line a second), and the NAS retransmits.
fn send(shared: &Shared, socket: &UdpSocket, reply: &[u8], target: SocketAddr) {
    if let Err(e) = socket.send_to(reply, target) {
        shared.drops.drop("reply not sent", target, &format!(" ({e})"));
    }
}

/// Asks the core, unless a rate limit refuses the request first; the reply
/// goes to `to` (now, or once the login is committed). The packet was
/// checked already.
fn answer_then(otpd: &Otpd, limiter: &Arc<RateLimiter>, to: ReplyTo) {
    match prepare(otpd, limiter, &to) {
        Err(reply) => to.send(reply),
        Ok((req, decided)) => otpd.authenticate_then(
            &req,
            Box::new(move |result| {
                let reply = decided.reply(&to, result);
                to.send(reply)
            }),
        ),
    }
}

/// The checks before the core: the request for it, or the reply that
/// answers the packet without it (a bad User-Name or User-Password, a
/// rate limit).
fn prepare(otpd: &Otpd, limiter: &Arc<RateLimiter>, to: &ReplyTo) -> Result<(AuthRequest, Decided), Vec<u8>> {
    let (client, source) = (&to.client, to.source);
    let Ok(packet) = Packet::parse(&to.raw) else { return Err(Vec::new()) };
    let secret = &client.secret;
    let reject = |message: &str| reject_reply(&packet, secret, message);
    let user = match packet.attr(attr::USER_NAME).map(std::str::from_utf8) {
        Some(Ok(u)) if !u.is_empty() => u.to_owned(),
        _ => return Err(log_reject(&reject, "-", client, source, "no usable User-Name")),
    };
    let located = otpd.realms().locate(&user, None, client.config.realm.as_deref()).ok();
    let keys = Keys::new(
        &user,
        located.as_ref().map(|(login, realm)| (*login, realm.as_str())),
        packet.attr(attr::CALLING_STATION_ID),
    );
    let admitted = limiter.admit(&keys).map_err(|limited| rate_limited(&reject, &limited, client, source))?;
    // From here, a reject without asking the core leaves `admitted` unsettled: a failure.
    let password = match packet.user_password(secret) {
        Ok(p) => p,
        Err(_) if packet.attr(attr::CHAP_PASSWORD).is_some() => {
            return Err(log_reject(&reject, &user, client, source, "CHAP is not supported; configure PAP"));
        }
        Err(e) => {
            return Err(log_reject(
                &reject,
                &user,
                client,
                source,
                &format!("no usable User-Password ({e})"),
            ));
        }
    };
    let Ok(password) = String::from_utf8(password.to_vec()) else {
        return Err(log_reject(&reject, &user, client, source, "User-Password is not UTF-8"));
    };
    let mut req = AuthRequest::new(user.clone(), password, Front::Radius);
    req.fallback_realm = client.config.realm.clone();
    req.client = Some(nas_address(&packet, source.ip()));
    req.state = packet.attr(attr::STATE).map(|s| String::from_utf8_lossy(s).into_owned());
    req.service = Some(client.config.name.clone());
    let decided = Decided {
        limiter: limiter.clone(),
        admitted,
        shown: clean(&user),
        realm: located.map(|(_, r)| r).unwrap_or_default(),
    };
    Ok((req, decided))
}

/// What is left of a login once the core has decided: settle its rate
/// limit charge, log the decision, encode the reply.
struct Decided {
    limiter: Arc<RateLimiter>,
    admitted: Admitted,
    /// The User-Name, escaped for the log.
    shown: String,
    realm: String,
}

impl Decided {
    fn reply(self, to: &ReplyTo, result: otpd_core::Result<Outcome>) -> Vec<u8> {
        let Decided { limiter, admitted, shown, realm } = self;
        let (client, source) = (&to.client, to.source);
        let Ok(packet) = Packet::parse(&to.raw) else { return Vec::new() };
        let secret = &client.secret;
        let reject = |message: &str| reject_reply(&packet, secret, message);
        limiter.settle(
            admitted,
            match &result {
                Ok(Outcome::Accept { .. }) => Settle::Accepted,
                Ok(Outcome::Reject { .. }) => Settle::Rejected,
                Ok(Outcome::Challenge { .. }) | Err(_) => Settle::Neither,
            },
        );
        let outcome = match result {
            Ok(outcome) => {
                STORE_LOG.served();
                outcome
            }
            Err(otpd_core::Error::Store(e)) => {
                // The error once per interval; the decision, as always, per login.
                STORE_LOG.failed(&e);
                info!(
                    "user={shown} realm={realm} client={} ({}) result=reject reason=\"internal error (store)\" serial=-",
                    client.config.name,
                    source.ip().to_canonical()
                );
                return reject(INTERNAL_ERROR);
            }
            Err(e) => {
                error!(
                    "user={shown} realm={realm} client={} result=reject reason=\"error: {e}\"",
                    client.config.name
                );
                return reject(INTERNAL_ERROR);
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
            client.config.name,
            source.ip().to_canonical(),
            clean(outcome.message())
        );
        reply
    }
}

/// The Access-Reject of a request that a rate limit refused before the
/// core; logged once per window and key, not per request (a flood must not
/// become a flood of log lines).
fn rate_limited(
    reject: &dyn Fn(&str) -> Vec<u8>,
    limited: &Limited,
    client: &Client,
    source: SocketAddr,
) -> Vec<u8> {
    if limited.first {
        warn!(
            "rate limit: {} failed attempts of {} {} within the window; its requests are rejected \
             without checking until the window ends (first refused via client={} ({}))",
            limited.failures,
            limited.kind,
            clean(&limited.key),
            client.config.name,
            source.ip().to_canonical()
        );
    }
    reject(ratelimit::LIMITED_MESSAGE)
}

/// The Reply-Message of a reject for a request the core failed on.
const INTERNAL_ERROR: &str = "authentication failed: internal error";

/// The reject for a request whose core call panicked (`answer` and its
/// parsed packet are gone by then).
fn internal_error_reply(client: &Client, raw: &[u8]) -> Vec<u8> {
    let Ok(packet) = Packet::parse(raw) else { return Vec::new() };
    reject_reply(&packet, &client.secret, INTERNAL_ERROR)
}

/// An Access-Reject whose Reply-Message says why.
fn reject_reply(packet: &Packet<'_>, secret: &Secret, message: &str) -> Vec<u8> {
    codec::encode_response(packet, code::ACCESS_REJECT, &[(attr::REPLY_MESSAGE, message.as_bytes())], secret)
}

fn log_reject(
    reject: &dyn Fn(&str) -> Vec<u8>,
    user: &str,
    client: &Client,
    source: SocketAddr,
    reason: &str,
) -> Vec<u8> {
    info!(
        "user={} realm=- client={} ({}) result=reject reason=\"{reason}\" serial=-",
        clean(user),
        client.config.name,
        source.ip().to_canonical()
    );
    reject(reason)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(secret: &[u8]) -> Vec<u8> {
        let attributes: [(u8, &[u8]); 1] = [(attr::USER_NAME, b"alice")];
        codec::encode_request(code::ACCESS_REQUEST, 7, [9; 16], &attributes, Some(b"123456"), secret, true)
            .unwrap()
    }

    fn client() -> Arc<Client> {
        Arc::new(Client::new(otpd_core::config::RadiusClientConfig {
            name: "lo".into(),
            address: "127.0.0.1/32".parse().unwrap(),
            secret: zeroize::Zeroizing::new("testing123".into()),
            realm: None,
            require_message_authenticator: true,
        }))
    }

    #[test]
    fn a_reply_dropped_unanswered_sends_the_internal_error_reject() {
        let source: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let (sender, replies) = std::sync::mpsc::channel();
        // As when the core panics: the reply-to is dropped on the way.
        drop(ReplyTo::new(client(), request(b"testing123"), source, Sink::Channel(sender.clone())));
        let reply = replies.try_recv().expect("a reply");
        let packet = Packet::parse(&reply).unwrap();
        assert_eq!((packet.code, packet.identifier), (code::ACCESS_REJECT, 7));
        assert_eq!(packet.attr(attr::REPLY_MESSAGE), Some(INTERNAL_ERROR.as_bytes()));
    }
}
