//! The daemon's end of the local socket (`[pam] socket`; the wire format
//! and the module's end are in `otpd_core::local_socket`). `otpd serve`
//! binds it next to its RADIUS sockets and answers each connection's one
//! request with the core it holds open, so that a PAM login needs no store,
//! key or userstore of its own. Only root and the daemon's own user are
//! answered; the socket file is 0600.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use otpd_core::Otpd;
use otpd_core::local_socket::{self, FrameError, Reply, Request};
use tracing::{debug, info, warn};

use crate::logging::clean;

/// Threads that answer connections, each one at a time; further
/// connections wait in the listen backlog. A login without PIN takes well
/// under a millisecond; a PIN hash about 35 ms.
const THREADS: usize = 4;
/// How long a client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("pam.socket {path}: another process answers on it (a second otpd serve?)")]
    InUse { path: PathBuf },
    #[error("pam.socket {path} exists and is not a socket; remove it or choose another path")]
    NotASocket { path: PathBuf },
    #[error(
        "cannot listen on pam.socket {path}: its directory does not exist (create it, e.g. with \
         RuntimeDirectory=otpd in the systemd unit for /run/otpd)"
    )]
    NoDirectory { path: PathBuf },
    #[error("cannot listen on pam.socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

/// Binds `path` (0600), replacing a socket file no process answers on (a
/// daemon that did not stop cleanly leaves one behind).
pub fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    let bind_err = |source| SocketError::Bind { path: path.to_owned(), source };
    if path.parent().is_some_and(|dir| !dir.as_os_str().is_empty() && !dir.is_dir()) {
        return Err(SocketError::NoDirectory { path: path.to_owned() });
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(SocketError::NotASocket { path: path.to_owned() });
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(SocketError::InUse { path: path.to_owned() }),
            Err(_) => std::fs::remove_file(path).map_err(bind_err)?,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// The threads answering the socket; `stop` ends them.
pub struct SocketServer {
    listener: Arc<UnixListener>,
    path: PathBuf,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl SocketServer {
    /// Starts the threads. Each blocks in `accept` and answers its
    /// connection itself: no hand-off to another thread between a
    /// request and the core, since on a busy or virtual machine every
    /// wake-up of another thread adds latency to the login.
    pub fn start(
        listener: UnixListener,
        path: PathBuf,
        core: impl Fn() -> Arc<Otpd> + Send + Sync + 'static,
    ) -> io::Result<SocketServer> {
        info!("answering pam_otpd on {}", path.display());
        let listener = Arc::new(listener);
        let stopping = Arc::new(AtomicBool::new(false));
        let core = Arc::new(core);
        let own_uid = nix::unistd::geteuid().as_raw();
        let threads = (0..THREADS)
            .map(|i| {
                let (listener, stopping, core) = (listener.clone(), stopping.clone(), core.clone());
                std::thread::Builder::new().name(format!("otpd-pam-{i}")).spawn(move || {
                    while !stopping.load(Ordering::SeqCst) {
                        match listener.accept() {
                            Ok((stream, _)) => connection(stream, &core(), own_uid),
                            Err(_) if stopping.load(Ordering::SeqCst) => break,
                            Err(e) => {
                                warn!("pam.socket: accept failed: {e}");
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(SocketServer { listener, path, stopping, threads })
    }

    /// Takes no more connections, lets the threads finish the ones they
    /// hold, and removes the socket file (when it still may: the daemon may
    /// have given up root since it bound it).
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes every thread blocked in accept (it then fails).
        let _ = nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        for t in self.threads {
            let _ = t.join();
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            debug!("cannot remove pam.socket {}: {e}", self.path.display());
        }
    }
}

/// One connection: who asks, its request, the core's answer.
fn connection(mut stream: UnixStream, otpd: &Otpd, own_uid: u32) {
    let uid = match local_socket::peer_uid(&stream) {
        Ok(uid) => uid,
        Err(e) => {
            warn!("pam.socket: cannot tell who connected: {e}");
            return;
        }
    };
    if uid != 0 && uid != own_uid {
        warn!("pam.socket: refused uid {uid} (only root and otpd's own user are answered)");
        return;
    }
    let timeouts = stream.set_read_timeout(Some(IO_TIMEOUT)).and(stream.set_write_timeout(Some(IO_TIMEOUT)));
    if let Err(e) = timeouts {
        warn!("pam.socket: {e}");
        return;
    }
    let request = match local_socket::read_frame::<Request>(&mut stream) {
        Ok(request) => request,
        Err(FrameError::Io(e)) => {
            debug!("pam.socket: no request from uid {uid}: {e}");
            return;
        }
        Err(e) => {
            warn!("pam.socket: bad request from uid {uid}: {e}");
            let reply = Reply::Error { message: format!("bad request: {e}") };
            let _ = stream.write_all(&local_socket::encode(&reply));
            return;
        }
    };
    let what = describe(&request);
    let reply =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| local_socket::answer(otpd, request)))
            .unwrap_or_else(|_| Reply::Error { message: "internal error (a panic in the core)".into() });
    log_reply(&what, &reply);
    if let Err(e) = stream.write_all(&local_socket::encode(&reply)) {
        warn!("pam.socket: cannot answer {what}: {e}");
    }
}

/// The request for a log line: never the password.
fn describe(request: &Request) -> String {
    match request {
        Request::Status { user, realm } => {
            format!("status user={} realm={}", clean(user), clean(realm.as_deref().unwrap_or("-")))
        }
        Request::Authenticate { user, realm, client, service, .. } => format!(
            "user={} realm={} service={} rhost={}",
            clean(user),
            clean(realm.as_deref().unwrap_or("-")),
            clean(service.as_deref().unwrap_or("-")),
            client.map_or("-".to_owned(), |c| c.to_string())
        ),
    }
}

/// A login's decision line, as the RADIUS front logs one (status queries
/// at debug).
fn log_reply(what: &str, reply: &Reply) {
    let (word, message, serial) = match reply {
        Reply::Accept { message, serial } => ("accept", message, serial),
        Reply::Reject { message, serial } => ("reject", message, serial),
        Reply::Challenge { message, serial, .. } => ("challenge", message, serial),
        Reply::Error { message } => {
            warn!("pam: {what} result=error reason=\"{}\"", clean(message));
            return;
        }
        other => {
            debug!("pam: {what} -> {other:?}");
            return;
        }
    };
    info!(
        "pam: {what} result={word} reason=\"{}\" serial={}",
        clean(message),
        serial.as_deref().unwrap_or("-")
    );
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;

    #[test]
    fn bind_replaces_a_stale_socket_and_refuses_a_live_one_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pam.sock");
        // A socket file nobody answers on (its listener is gone).
        drop(UnixListener::bind(&path).unwrap());
        let listener = bind(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let e = bind(&path).unwrap_err();
        assert!(matches!(e, SocketError::InUse { .. }) && e.to_string().contains("another process"), "{e}");
        drop(listener);
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        let e = bind(&file).unwrap_err();
        assert!(e.to_string().contains("is not a socket"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"x", "a file that is not a socket is left alone");
        let e = bind(&dir.path().join("missing/pam.sock")).unwrap_err();
        assert!(e.to_string().contains("its directory does not exist"), "{e}");
    }

    #[test]
    fn the_threads_answer_and_stop_promptly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users"), "alice:*\n").unwrap();
        let config = dir.path().join("otpd.toml");
        std::fs::write(
            &config,
            "[[resolvers]]\nname = \"u\"\ntype = \"passwdfile\"\npath = \"users\"\n\
             [[realms]]\nname = \"corp\"\ndefault = true\nresolvers = [\"u\"]\n",
        )
        .unwrap();
        let config = otpd_core::Config::load(&config).unwrap();
        let database = config.database.clone();
        let otpd = Arc::new(Otpd::open(config).unwrap());
        let path = dir.path().join("pam.sock");
        let server = SocketServer::start(bind(&path).unwrap(), path.clone(), move || otpd.clone()).unwrap();
        let ask = |realm: Option<&str>| {
            let request = Request::Status { user: "alice".into(), realm: realm.map(str::to_owned) };
            local_socket::call(&path, &database, &request).unwrap()
        };
        assert_eq!(ask(None), Reply::NoToken);
        let Reply::Error { message } = ask(Some("nowhere")) else { panic!("an unknown realm is an error") };
        assert!(message.contains("nowhere"), "{message}");
        // A client that connects and says nothing holds one thread, not the others.
        let silent = UnixStream::connect(&path).unwrap();
        assert_eq!(ask(None), Reply::NoToken);
        drop(silent);
        let started = std::time::Instant::now();
        server.stop();
        assert!(started.elapsed() < Duration::from_secs(2), "stop took {:?}", started.elapsed());
        assert!(!path.exists(), "the socket file is removed");
    }

    #[test]
    fn log_lines_never_carry_the_password() {
        let request = Request::Authenticate {
            user: "alice\nforged=1".into(),
            realm: None,
            password: Zeroizing::new("1234755224".into()),
            client: None,
            state: None,
            service: Some("sshd".into()),
        };
        let line = describe(&request);
        assert!(!line.contains("1234755224") && line.contains("alice\\nforged=1"), "{line}");
    }
}
