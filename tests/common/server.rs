//! `otpd serve` under test: started on a test configuration, its stderr
//! collected, stopped with SIGTERM when dropped (and its log printed if the
//! test is failing). Shared by the RADIUS and policy end-to-end tests.

use std::net::{SocketAddr, UdpSocket};
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
        let mut child = env
            .command(&["serve", "--log", "stderr"])
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

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for `needle` in the log.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.log().contains(needle)
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
