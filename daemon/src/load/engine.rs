//! The closed loop: `outstanding` Access-Requests in flight over several UDP
//! sockets, a new one as soon as one is answered or times out. Each socket is
//! one task that owns its identifiers, so no lock is taken per packet except
//! the short one around the request source. With a `rate` the loop is open
//! instead: request i is sent at `start + i / rate` (never earlier; late ones
//! go out at once), with `outstanding` still capping what is in flight.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::time::sleep_until;

use super::source::{Next, Source};
use super::stats::Counts;
use crate::radius::codec::{self, attr, code};

/// When the run stops sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Duration(Duration),
    Requests(u64),
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: SocketAddr,
    pub secret: codec::Secret,
    pub outstanding: usize,
    /// Requests per second, paced (open loop); None: closed loop.
    pub rate: Option<f64>,
    pub sockets: usize,
    pub limit: Limit,
    pub timeout: Duration,
    pub message_authenticator: bool,
    /// Print a progress line on stderr every second.
    pub progress: bool,
}

/// What a run measured: the counters, every latency (ns) and the wall time.
#[derive(Debug)]
pub struct Outcome {
    pub counts: Counts,
    pub latencies: Vec<u64>,
    pub elapsed: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    accept: AtomicU64,
    reject: AtomicU64,
    challenge: AtomicU64,
    timeout: AtomicU64,
    bad: AtomicU64,
    late: AtomicU64,
}

impl Counters {
    fn read(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            sent: get(&self.sent),
            accept: get(&self.accept),
            reject: get(&self.reject),
            challenge: get(&self.challenge),
            timeout: get(&self.timeout),
            bad: get(&self.bad),
            late: get(&self.late),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The request source with the count of requests handed out.
struct Feed {
    source: Source,
    issued: u64,
}

enum Job {
    Send { user: usize, name: String, password: String },
    Busy,
    Until(Instant),
    Done,
}

struct Shared {
    settings: Settings,
    feed: Mutex<Feed>,
    exclusive: bool,
    /// Signalled when a user's request is answered or times out (one-shot passwords).
    released: Notify,
    counters: Counters,
    /// No more requests are sent once this is reached (duration mode).
    end: Option<Instant>,
    /// When the run started (the origin of the pacing schedule).
    start: Instant,
}

impl Shared {
    fn next_job(&self) -> Job {
        let now = Instant::now();
        if self.end.is_some_and(|end| now >= end) {
            return Job::Done;
        }
        let Ok(mut feed) = self.feed.lock() else { return Job::Done };
        if let Limit::Requests(n) = self.settings.limit
            && feed.issued >= n
        {
            return Job::Done;
        }
        if let Some(rate) = self.settings.rate {
            // Request number `issued` is due at start + issued / rate.
            let Some(due) = Duration::try_from_secs_f64(feed.issued as f64 / rate)
                .ok()
                .and_then(|offset| self.start.checked_add(offset))
            else {
                return Job::Done;
            };
            if now < due {
                return Job::Until(due);
            }
        }
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        match feed.source.next(unix) {
            Next::Request { user, name, password } => {
                feed.issued += 1;
                Job::Send { user, name, password }
            }
            Next::Busy => Job::Busy,
            Next::Wait(d) => Job::Until(now + d),
            Next::Exhausted => Job::Done,
        }
    }

    /// `user`'s request was answered, or (`answered` false) timed out.
    fn release(&self, user: usize, answered: bool) {
        if !self.exclusive {
            return;
        }
        if let Ok(mut feed) = self.feed.lock() {
            if answered {
                feed.source.release(user);
            } else {
                feed.source.release_unanswered(user);
            }
        }
        self.released.notify_waiters();
    }
}

/// Runs the load until the limit is reached or the source is exhausted and
/// every request is answered or timed out.
pub async fn run(settings: Settings, source: Source) -> io::Result<Outcome> {
    let start = Instant::now();
    let end = match settings.limit {
        Limit::Duration(d) => Some(start + d),
        Limit::Requests(_) => None,
    };
    let sockets = settings.sockets.clamp(1, settings.outstanding.max(1));
    let exclusive = source.exclusive();
    let shared = Arc::new(Shared {
        settings,
        feed: Mutex::new(Feed { source, issued: 0 }),
        exclusive,
        released: Notify::new(),
        counters: Counters::default(),
        end,
        start,
    });

    let finished = Arc::new(AtomicBool::new(false));
    let progress = shared.settings.progress.then(|| {
        let shared = Arc::clone(&shared);
        let finished = Arc::clone(&finished);
        tokio::spawn(async move { report_progress(&shared, start, &finished).await })
    });

    // Spread `outstanding` as evenly as the sockets allow.
    let outstanding = shared.settings.outstanding;
    let mut tasks = Vec::with_capacity(sockets);
    for i in 0..sockets {
        let quota = outstanding / sockets + usize::from(i < outstanding % sockets);
        let shared = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move { socket_loop(&shared, quota).await }));
    }
    let mut latencies = Vec::new();
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(mut samples)) => latencies.append(&mut samples),
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(io::Error::other(e.to_string())),
        }
    }
    let elapsed = start.elapsed();
    finished.store(true, Ordering::Relaxed);
    if let Some(handle) = progress {
        handle.abort();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Outcome { counts: shared.counters.read(), latencies, elapsed })
}

/// One line a second: elapsed, sent, accept, reject, challenge, timeout, bad, req/s.
async fn report_progress(shared: &Shared, start: Instant, finished: &AtomicBool) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let mut last = 0u64;
    let mut last_at = Instant::now();
    loop {
        tick.tick().await;
        if finished.load(Ordering::Relaxed) {
            return;
        }
        let c = shared.counters.read();
        let now = Instant::now();
        let rate = (c.answered() - last.min(c.answered())) as f64 / (now - last_at).as_secs_f64().max(1e-3);
        last = c.answered();
        last_at = now;
        eprintln!(
            "{:6.1}s sent {} accept {} reject {} challenge {} timeout {} bad {} {:.0} req/s",
            start.elapsed().as_secs_f64(),
            c.sent,
            c.accept,
            c.reject,
            c.challenge,
            c.timeout,
            c.bad,
            rate
        );
    }
}

/// A request waiting for its answer.
struct Pending {
    authenticator: [u8; 16],
    sent: Instant,
    user: usize,
    /// Tells a reused identifier's entry in the deadline queue from the current one.
    seq: u64,
}

/// Random request authenticators, fetched from the OS 256 at a time.
struct Authenticators {
    pool: Vec<u8>,
    used: usize,
}

impl Authenticators {
    fn new() -> Self {
        Authenticators { pool: vec![0; 16 * 256], used: 16 * 256 }
    }

    fn next(&mut self) -> io::Result<[u8; 16]> {
        if self.used >= self.pool.len() {
            getrandom::fill(&mut self.pool).map_err(|e| io::Error::other(e.to_string()))?;
            self.used = 0;
        }
        let mut out = [0u8; 16];
        if let Some(bytes) = self.pool.get(self.used..self.used + 16) {
            out.copy_from_slice(bytes);
        }
        self.used += 16;
        Ok(out)
    }
}

/// The state of one socket: its in-flight requests by identifier.
struct Flight {
    slots: Vec<Option<Pending>>,
    /// (deadline, identifier, seq) in send order; the timeout is fixed, so deadlines are ascending.
    deadlines: VecDeque<(Instant, u8, u64)>,
    in_flight: usize,
    next_id: u8,
    seq: u64,
    latencies: Vec<u64>,
}

impl Flight {
    /// A free identifier, searching on from the last one used so an identifier is reused
    /// as late as possible: a late answer to an old request then finds no entry rather
    /// than a new request's. The caller ensures fewer than 256 are in flight.
    fn free_id(&mut self) -> u8 {
        for _ in 0..256 {
            let id = self.next_id;
            self.next_id = id.wrapping_add(1);
            if self.slots.get(usize::from(id)).is_some_and(Option::is_none) {
                return id;
            }
        }
        self.next_id
    }

    fn first_deadline(&mut self) -> Option<Instant> {
        while let Some(&(deadline, id, seq)) = self.deadlines.front() {
            match self.slots.get(usize::from(id)) {
                Some(Some(p)) if p.seq == seq => return Some(deadline),
                _ => {
                    self.deadlines.pop_front();
                }
            }
        }
        None
    }

    fn expire(&mut self, shared: &Shared, now: Instant) {
        while let Some(&(deadline, id, seq)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let Some(slot) = self.slots.get_mut(usize::from(id)) else { continue };
            if slot.as_ref().is_some_and(|p| p.seq == seq)
                && let Some(pending) = slot.take()
            {
                self.in_flight -= 1;
                bump(&shared.counters.timeout);
                shared.release(pending.user, false);
            }
        }
    }

    fn answer(&mut self, shared: &Shared, datagram: &[u8]) {
        let Some(&id) = datagram.get(1) else {
            bump(&shared.counters.bad);
            return;
        };
        let Some(pending) = self.slots.get_mut(usize::from(id)).and_then(Option::take) else {
            bump(&shared.counters.late);
            return;
        };
        self.in_flight -= 1;
        shared.release(pending.user, true);
        let counters = &shared.counters;
        let secret = &shared.settings.secret;
        match codec::verify_response(datagram, &pending.authenticator, secret) {
            // BlastRADIUS: a request signed with Message-Authenticator expects a signed answer.
            Ok(packet)
                if shared.settings.message_authenticator
                    && packet.attr(attr::MESSAGE_AUTHENTICATOR).is_none() =>
            {
                bump(&counters.bad)
            }
            Ok(packet) => {
                let counter = match packet.code {
                    code::ACCESS_ACCEPT => &counters.accept,
                    code::ACCESS_REJECT => &counters.reject,
                    code::ACCESS_CHALLENGE => &counters.challenge,
                    _ => {
                        bump(&counters.bad);
                        return;
                    }
                };
                bump(counter);
                let nanos = u64::try_from(pending.sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.latencies.push(nanos);
            }
            Err(_) => bump(&counters.bad),
        }
    }
}

/// What the fill step stopped on.
enum Blocked {
    No,
    Busy,
    Until(Instant),
}

async fn socket_loop(shared: &Shared, quota: usize) -> io::Result<Vec<u64>> {
    let settings = &shared.settings;
    let local: SocketAddr = match settings.server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from anyone but the server.
    socket.connect(settings.server).await?;
    let quota = quota.min(256);
    let mut flight = Flight {
        slots: (0..256).map(|_| None).collect(),
        deadlines: VecDeque::with_capacity(quota),
        in_flight: 0,
        next_id: 0,
        seq: 0,
        latencies: Vec::new(),
    };
    let mut authenticators = Authenticators::new();
    let mut buf = vec![0u8; codec::MAX_PACKET];
    let mut done = false;

    loop {
        // Created before the source is asked, so a release in between is not missed.
        let released = shared.released.notified();
        tokio::pin!(released);
        let mut blocked = Blocked::No;
        while !done && flight.in_flight < quota {
            let (user, name, password) = match shared.next_job() {
                Job::Send { user, name, password } => (user, name, password),
                Job::Busy => {
                    blocked = Blocked::Busy;
                    break;
                }
                Job::Until(at) => {
                    blocked = Blocked::Until(at);
                    break;
                }
                Job::Done => {
                    done = true;
                    break;
                }
            };
            let id = flight.free_id();
            let authenticator = authenticators.next()?;
            let packet = codec::encode_request(
                code::ACCESS_REQUEST,
                id,
                authenticator,
                &[(attr::USER_NAME, name.as_bytes()), (attr::NAS_IDENTIFIER, b"otpd-load")],
                Some(password.as_bytes()),
                &settings.secret,
                settings.message_authenticator,
            )
            .map_err(|e| io::Error::other(format!("cannot build a request for user {name:?}: {e}")))?;
            let now = Instant::now();
            match socket.send(&packet).await {
                Ok(_) => {}
                // An ICMP error from an earlier datagram: this one is lost, let it time out.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
            bump(&shared.counters.sent);
            flight.seq += 1;
            let seq = flight.seq;
            if let Some(slot) = flight.slots.get_mut(usize::from(id)) {
                *slot = Some(Pending { authenticator, sent: now, user, seq });
            }
            flight.deadlines.push_back((now + settings.timeout, id, seq));
            flight.in_flight += 1;
        }
        if done && flight.in_flight == 0 {
            return Ok(flight.latencies);
        }

        let far = Instant::now() + Duration::from_secs(3600);
        let deadline = flight.first_deadline();
        let until = match blocked {
            Blocked::Until(at) => Some(at),
            _ => None,
        };
        tokio::select! {
            received = socket.recv(&mut buf) => {
                match received {
                    Ok(n) => flight.answer(shared, buf.get(..n).unwrap_or_default()),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                    Err(e) => return Err(e),
                }
                // Take whatever else has arrived without going back to the reactor.
                loop {
                    match socket.try_recv(&mut buf) {
                        Ok(n) => flight.answer(shared, buf.get(..n).unwrap_or_default()),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            _ = sleep_until(deadline.unwrap_or(far).into()), if deadline.is_some() => {
                flight.expire(shared, Instant::now());
            }
            _ = &mut released, if matches!(blocked, Blocked::Busy) => {}
            _ = sleep_until(until.unwrap_or(far).into()), if until.is_some() => {}
            _ = sleep_until(shared.end.unwrap_or(far).into()), if shared.end.is_some() && !done => {}
        }
    }
}
