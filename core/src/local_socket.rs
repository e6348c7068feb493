//! The local socket (`[pam] socket`): how pam_otpd asks a running
//! `otpd serve` instead of opening the store itself. A PAM login is a
//! process of its own; opening the store, the key and the userstores in
//! each costs more than the login, while the daemon holds them open.
//!
//! One request per connection: a frame (a 4-byte big-endian length, then
//! that many bytes of JSON) each way. The daemon answers with `answer`,
//! through the same `Otpd` calls the module would make itself, so a login
//! behaves the same either way. Both ends check who is on the other side
//! (`SO_PEERCRED`): the daemon answers only root and its own user; the
//! module talks only to root or the owner of the database.

use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{AuthRequest, Front, Otpd, Outcome, TokenStatus};

/// No frame is longer: a request carries at most a user, a realm, a
/// password of at most 1024 bytes (pam_otpd's limit) and a challenge state.
pub const MAX_FRAME: usize = 16 * 1024;
/// What `encode` reserves: more than a request with the longest password.
const FRAME_ROOM: usize = 4096;

/// A question for the daemon.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// `Otpd::token_status`.
    Status { user: String, realm: Option<String> },
    /// `Otpd::authenticate` with `Front::Pam`.
    Authenticate {
        user: String,
        realm: Option<String>,
        password: Zeroizing<String>,
        client: Option<IpAddr>,
        state: Option<String>,
        service: Option<String>,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    NoToken,
    Usable {
        otp_lengths: Vec<usize>,
    },
    Unusable {
        reasons: Vec<String>,
    },
    Accept {
        message: String,
        serial: Option<String>,
    },
    Reject {
        message: String,
        serial: Option<String>,
    },
    Challenge {
        state: String,
        message: String,
        serial: Option<String>,
    },
    /// The core failed (the store, a userstore) or the request was bad:
    /// the sentence it would have logged.
    Error {
        message: String,
    },
}

impl From<TokenStatus> for Reply {
    fn from(status: TokenStatus) -> Self {
        match status {
            TokenStatus::NoToken => Reply::NoToken,
            TokenStatus::Usable { otp_lengths } => Reply::Usable { otp_lengths },
            TokenStatus::Unusable { reasons } => Reply::Unusable { reasons },
        }
    }
}

impl From<Outcome> for Reply {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Accept { message, serial, .. } => Reply::Accept { message, serial },
            Outcome::Reject { message, serial } => Reply::Reject { message, serial },
            Outcome::Challenge { state, message, serial } => Reply::Challenge { state, message, serial },
        }
    }
}

impl Reply {
    /// The answer to `Request::Status`: the status, or the core's error;
    /// `None` for a reply of another kind (a daemon of another version).
    pub fn into_status(self) -> Option<Result<TokenStatus, String>> {
        Some(match self {
            Reply::NoToken => Ok(TokenStatus::NoToken),
            Reply::Usable { otp_lengths } => Ok(TokenStatus::Usable { otp_lengths }),
            Reply::Unusable { reasons } => Ok(TokenStatus::Unusable { reasons }),
            Reply::Error { message } => Err(message),
            _ => return None,
        })
    }

    /// The answer to `Request::Authenticate`, like `into_status`. An
    /// accept does not say the token's type (PAM has no use for it).
    pub fn into_outcome(self) -> Option<Result<Outcome, String>> {
        Some(match self {
            Reply::Accept { message, serial } => Ok(Outcome::Accept { message, serial, token_type: None }),
            Reply::Reject { message, serial } => Ok(Outcome::Reject { message, serial }),
            Reply::Challenge { state, message, serial } => Ok(Outcome::Challenge { state, message, serial }),
            Reply::Error { message } => Err(message),
            _ => return None,
        })
    }
}

/// What the daemon makes of a request: the module's own call, answered.
pub fn answer(otpd: &Otpd, request: Request) -> Reply {
    let result = match request {
        Request::Status { user, realm } => otpd.token_status(&user, realm.as_deref()).map(Reply::from),
        Request::Authenticate { user, realm, password, client, state, service } => {
            let mut req = AuthRequest::new(user, String::new(), Front::Pam);
            req.password = password;
            req.realm = realm;
            req.client = client;
            req.state = state;
            req.service = service;
            otpd.authenticate(&req).map(Reply::from)
        }
    };
    result.unwrap_or_else(|e| Reply::Error { message: e.to_string() })
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("a frame of {0} bytes is longer than {MAX_FRAME}")]
    TooLong(usize),
    #[error("not a valid message: {0}")]
    Invalid(String),
}

/// Encodes one frame. The bytes may hold a password: they wipe themselves
/// (room for a whole request up front, so that no reallocation leaves a
/// copy behind in freed memory).
pub fn encode<T: Serialize>(message: &T) -> Zeroizing<Vec<u8>> {
    let mut frame = Zeroizing::new(Vec::with_capacity(4 + FRAME_ROOM));
    frame.extend_from_slice(&[0; 4]);
    // Serializing these types into a Vec cannot fail.
    serde_json::to_writer(&mut *frame, message).expect("serializable message");
    let len = u32::try_from(frame.len() - 4).unwrap_or(u32::MAX);
    frame[..4].copy_from_slice(&len.to_be_bytes());
    frame
}

/// The length a frame header announces, if acceptable.
fn frame_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME { Err(FrameError::TooLong(len)) } else { Ok(len) }
}

/// Decodes a frame's body. The error names the kind and place of the
/// fault, never serde's text, which quotes the offending value (a password
/// sent as a number, say) and would carry it into a log line.
fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "JSON of the wrong shape",
            serde_json::error::Category::Eof => "JSON cut short",
            serde_json::error::Category::Io => "unreadable",
        };
        FrameError::Invalid(format!("{kind} at line {} column {}", e.line(), e.column()))
    })
}

/// Reads one frame from a blocking stream.
pub fn read_frame<T: for<'de> Deserialize<'de>>(stream: &mut impl Read) -> Result<T, FrameError> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let mut body = Zeroizing::new(vec![0u8; frame_len(header)?]);
    stream.read_exact(&mut body)?;
    decode(&body)
}

/// Why the module could not use the daemon (it then opens the store itself).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source}")]
    Connect { path: String, source: io::Error },
    #[error(
        "{path} is served by uid {uid}, neither root nor the owner of the database {database} (uid {owner})"
    )]
    Stranger { path: String, uid: u32, database: String, owner: u32 },
    #[error("cannot check who serves {path}: {source}")]
    Identify { path: String, source: io::Error },
    #[error("no answer from {path}: {source}")]
    Exchange { path: String, source: FrameError },
}

/// How long the module waits for the daemon; then it goes on without it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the daemon serving `socket` one question. The daemon must run as
/// root or as the owner of `database` (which holds the token secrets): a
/// socket anyone else answers never sees a password.
pub fn call(socket: &Path, database: &Path, request: &Request) -> Result<Reply, ClientError> {
    let path = socket.display().to_string();
    let mut stream =
        UnixStream::connect(socket).map_err(|source| ClientError::Connect { path: path.clone(), source })?;
    let identify = |source| ClientError::Identify { path: path.clone(), source };
    let uid = peer_uid(&stream).map_err(identify)?;
    if uid != 0 {
        let owner = std::fs::metadata(database).map_err(identify)?.uid();
        if uid != owner {
            return Err(ClientError::Stranger { path, uid, database: database.display().to_string(), owner });
        }
    }
    let exchange = |source: FrameError| ClientError::Exchange { path: path.clone(), source };
    stream.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(|e| exchange(e.into()))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(|e| exchange(e.into()))?;
    stream.write_all(&encode(request)).map_err(|e| exchange(e.into()))?;
    read_frame(&mut stream).map_err(exchange)
}

/// The uid of the process at the other end of a connected Unix socket.
pub fn peer_uid(stream: &impl std::os::fd::AsFd) -> io::Result<u32> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(stream, PeerCredentials).map_err(io::Error::from)?;
    Ok(cred.uid())
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn frames_round_trip_and_bad_frames_are_errors() {
        let request = Request::Authenticate {
            user: "alice".into(),
            realm: Some("corp".into()),
            password: Zeroizing::new("1234755224".into()),
            client: Some("192.0.2.7".parse().unwrap()),
            state: None,
            service: Some("sshd".into()),
        };
        let frame = encode(&request);
        assert_eq!(frame_len(frame[..4].try_into().unwrap()).unwrap(), frame.len() - 4);
        let back: Request = read_frame(&mut &frame[..]).unwrap();
        let Request::Authenticate { user, password, client, .. } = back else { panic!("{back:?}") };
        assert_eq!((user.as_str(), password.as_str()), ("alice", "1234755224"));
        assert_eq!(client, Some("192.0.2.7".parse().unwrap()));

        let reply =
            Reply::Challenge { state: "s1".into(), message: "please enter otp: ".into(), serial: None };
        assert_eq!(read_frame::<Reply>(&mut &encode(&reply)[..]).unwrap(), reply);

        // Too long, cut short, not JSON, an unknown operation or field.
        let e = frame_len((MAX_FRAME as u32 + 1).to_be_bytes()).unwrap_err();
        assert!(e.to_string().contains("longer than 16384"), "{e}");
        assert!(matches!(read_frame::<Reply>(&mut &frame[..10]), Err(FrameError::Io(_))));
        let bodies = [
            &b"{not json"[..],
            br#"{"op":"delete","user":"a"}"#,
            br#"{"op":"status","user":"a","x":1}"#,
            // A password of the wrong type: the error must not quote it.
            br#"{"op":"authenticate","user":"a","password":755224,"client":null,"state":null,"service":null}"#,
        ];
        for body in bodies {
            let mut framed = (body.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(body);
            let e = read_frame::<Request>(&mut &framed[..]).unwrap_err();
            assert!(matches!(e, FrameError::Invalid(_)), "{e}");
            assert!(!e.to_string().contains("755224") && e.to_string().contains("column"), "{e}");
        }
    }

    #[test]
    fn replies_turn_back_into_what_the_core_answered_and_the_wrong_kind_into_none() {
        let status = TokenStatus::Unusable { reasons: vec!["Token is disabled".into()] };
        assert_eq!(Reply::from(status.clone()).into_status(), Some(Ok(status)));
        let outcome =
            Outcome::Challenge { state: "s1".into(), message: "otp?".into(), serial: Some("H1".into()) };
        assert_eq!(Reply::from(outcome.clone()).into_outcome(), Some(Ok(outcome)));
        let error = Reply::Error { message: "database is locked".into() };
        assert_eq!(error.clone().into_status(), Some(Err("database is locked".into())));
        assert_eq!(error.into_outcome(), Some(Err("database is locked".into())));
        assert_eq!(Reply::NoToken.into_outcome(), None, "a status is no answer to a login");
        assert_eq!(Reply::Reject { message: "no".into(), serial: None }.into_status(), None);
    }

    #[test]
    fn the_client_asks_and_reads_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("pam.sock");
        let database = dir.path().join("otpd.db");
        std::fs::write(&database, b"").unwrap();
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            assert_eq!(peer_uid(&stream).unwrap(), nix::unistd::geteuid().as_raw());
            let request: Request = read_frame(&mut stream).unwrap();
            assert!(matches!(request, Request::Status { ref user, .. } if user == "alice"), "{request:?}");
            stream.write_all(&encode(&Reply::Usable { otp_lengths: vec![6] })).unwrap();
        });
        let request = Request::Status { user: "alice".into(), realm: None };
        // Served by this test's own uid: root, or the database's owner.
        assert_eq!(call(&socket, &database, &request).unwrap(), Reply::Usable { otp_lengths: vec![6] });
        server.join().unwrap();

        // Nobody listening: a connect error the module falls back on.
        let e = call(&dir.path().join("absent.sock"), &database, &request).unwrap_err();
        assert!(matches!(e, ClientError::Connect { .. }), "{e}");
        // A server that hangs up without answering.
        let listener = UnixListener::bind(dir.path().join("mute.sock")).unwrap();
        let mute = std::thread::spawn(move || drop(listener.accept().unwrap()));
        let e = call(&dir.path().join("mute.sock"), &database, &request).unwrap_err();
        assert!(matches!(e, ClientError::Exchange { .. }) && e.to_string().contains("no answer"), "{e}");
        mute.join().unwrap();
    }
}
