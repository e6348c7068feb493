//! `otpd serve` under test: started on a test configuration, its stderr
//! collected, stopped with SIGTERM when dropped (and its log printed if the
//! test is failing). Shared by the RADIUS and policy end-to-end tests.
//! `RadiusClient` sends Access-Requests to it (crash and race tests).

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Env;

/// How long `otpd serve` may take to bind its sockets.
const STARTUP: Duration = Duration::from_secs(15);

/// A free UDP port on the IPv4 loopback (bound once by us, then released).
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `otpd serve`: its stderr is collected on a thread; dropping it
/// sends SIGTERM and waits (SIGKILL after 5 s). If the test is failing, the
/// server's log is printed.
pub struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    /// The first listen address.
    pub addr: SocketAddr,
}

impl Server {
    /// Starts the server on `env.config` and waits until it logged
    /// `listening on ADDR` for every address of `listen`.
    pub fn start(env: &Env, listen: &[String]) -> Server {
        Server::spawn(env.command(&["serve", "--log", "stderr"]), listen)
    }

    /// Like `start`, with the configuration file `config` instead of
    /// `env.config` (a second daemon on the same database, say).
    pub fn start_with_config(config: &Path, listen: &[String]) -> Server {
        let mut cmd = Command::new(super::otpd_bin());
        cmd.arg("--config").arg(config).args(["serve", "--log", "stderr"]).env_remove("OTPD_CONFIG");
        Server::spawn(cmd, listen)
    }

    /// Starts `command` (an `otpd ... serve` command line, perhaps run
    /// through another program) like `start`.
    pub fn spawn(mut command: Command, listen: &[String]) -> Server {
        let mut child = command
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start otpd serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let reader = thread::spawn(move || {
            use std::io::BufRead;
            let mut lines = std::io::BufReader::new(stderr);
            let mut line = Vec::new();
            while matches!(lines.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        });
        let addr = listen[0].parse().unwrap();
        let mut server = Server { child, log, reader: Some(reader), addr };
        let deadline = Instant::now() + STARTUP;
        loop {
            let log = server.log();
            if listen.iter().all(|a| log.contains(&format!("listening on {a}"))) {
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                server.join_reader();
                panic!("otpd serve exited with {status} before listening (its stderr follows)");
            }
            assert!(
                Instant::now() < deadline,
                "otpd serve did not log `listening on` {listen:?} within {STARTUP:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process ID of `otpd serve`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for `needle` in the log. (The log reaches the
    /// test through a pipe and a reader thread: a test that has its reply
    /// waits for the line rather than expect it already there.)
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_count(needle, 1, timeout)
    }

    /// Waits up to `timeout` for `count` lines or more with `needle`.
    pub fn wait_for_count(&self, needle: &str, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().matches(needle).count() >= count {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.log().matches(needle).count() >= count
    }

    /// `host:port` of the first listen address, as radclient takes it.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        assert!(status.unwrap().success(), "kill -{signal} failed");
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.join_reader();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn join_reader(&mut self) {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.running() {
            let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        self.join_reader();
        if thread::panicking() {
            eprintln!("----- otpd serve stderr -----\n{}-----------------------------", self.log());
        }
    }
}

/// A RADIUS client of the tests: one UDP socket on the IPv4 loopback that
/// sends PAP Access-Requests with a Message-Authenticator, built with the
/// daemon's codec, and checks each reply with it (Response Authenticator,
/// Message-Authenticator, identifier).
pub struct RadiusClient {
    socket: UdpSocket,
    server: SocketAddr,
    secret: Vec<u8>,
    next_id: u8,
}

/// An Access-Request sent and not yet answered.
pub struct Pending {
    id: u8,
    authenticator: [u8; 16],
}

impl RadiusClient {
    /// How long one read waits before `wait` asks its `give_up`.
    const POLL: Duration = Duration::from_millis(50);

    pub fn new(server: SocketAddr, secret: &str) -> RadiusClient {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Self::POLL)).unwrap();
        RadiusClient { socket, server, secret: secret.as_bytes().to_vec(), next_id: 0 }
    }

    /// Sends a PAP Access-Request for `user` with a fresh random authenticator.
    pub fn send(&mut self, user: &str, password: &str) -> Pending {
        self.send_with(user, password, &[])
    }

    /// Like `send`, with `extra` attributes (Calling-Station-Id, ...).
    pub fn send_with(&mut self, user: &str, password: &str, extra: &[(u8, &[u8])]) -> Pending {
        use otpd_daemon::radius::codec::{self, attr, code};
        let mut authenticator = [0u8; 16];
        getrandom::fill(&mut authenticator).unwrap();
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut attributes: Vec<(u8, &[u8])> = vec![(attr::USER_NAME, user.as_bytes())];
        attributes.extend_from_slice(extra);
        let packet = codec::encode_request(
            code::ACCESS_REQUEST,
            id,
            authenticator,
            &attributes,
            Some(password.as_bytes()),
            &self.secret,
            true,
        )
        .unwrap();
        loop {
            match self.socket.send_to(&packet, self.server) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                sent => {
                    sent.unwrap();
                    break;
                }
            }
        }
        Pending { id, authenticator }
    }

    /// The code of the reply to `pending` (`codec::code::ACCESS_ACCEPT`, ...),
    /// or None when nothing came within `timeout`, or when `give_up()`
    /// returns true after a read found nothing. Replies already received
    /// are always read first. Datagrams that do not answer `pending` (late
    /// replies to earlier requests) are skipped; so is a reply without a
    /// Message-Authenticator.
    pub fn wait(&self, pending: &Pending, timeout: Duration, give_up: &dyn Fn() -> bool) -> Option<u8> {
        self.wait_reply(pending, timeout, give_up).map(|(code, _)| code)
    }

    /// Like `wait`, with the reply's Reply-Message (empty without one).
    pub fn wait_reply(
        &self,
        pending: &Pending,
        timeout: Duration,
        give_up: &dyn Fn() -> bool,
    ) -> Option<(u8, String)> {
        use otpd_daemon::radius::codec::{self, attr};
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) if from == self.server => {
                    let Ok(packet) = codec::verify_response(&buf[..n], &pending.authenticator, &self.secret)
                    else {
                        continue;
                    };
                    if packet.identifier == pending.id && packet.attr(attr::MESSAGE_AUTHENTICATOR).is_some() {
                        let message = packet.attr(attr::REPLY_MESSAGE).unwrap_or_default();
                        return Some((packet.code, String::from_utf8_lossy(message).into_owned()));
                    }
                }
                // Another datagram, or a read cut short by a signal.
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    if give_up() || Instant::now() >= deadline {
                        return None;
                    }
                }
                Err(e) => panic!("recv_from: {e}"),
            }
        }
    }

    /// Sends and waits up to `timeout` for the reply's code.
    pub fn access(&mut self, user: &str, password: &str, timeout: Duration) -> Option<u8> {
        let pending = self.send(user, password);
        self.wait(&pending, timeout, &|| false)
    }
}
