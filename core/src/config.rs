//! otpd's configuration (TOML): where the store and key file are, the
//! realms and their resolvers, and the RADIUS, policy and event sections
//! that the fronts and later stages act on. `Config::locate` finds the file
//! the way every front does (explicit path, `$OTPD_CONFIG`,
//! `/etc/otpd/otpd.toml`, else the built-in defaults). Every error names the
//! file, the line and the key at fault.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub const SYSTEM_CONFIG: &str = "/etc/otpd/otpd.toml";
pub const CONFIG_ENV: &str = "OTPD_CONFIG";
/// Name of the realm of the built-in defaults (the machine's accounts).
pub const DEFAULT_REALM: &str = "default";
/// privacyIDEA's DefaultChallengeValidityTime, seconds.
pub const DEFAULT_CHALLENGE_VALIDITY: u32 = 120;
/// The longest `failcounter_clear_timeout`, minutes (a year).
pub const MAX_CLEAR_TIMEOUT: u32 = 366 * 24 * 60;
/// The longest Unix socket path Linux takes (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line}: {message}")]
    Invalid { path: PathBuf, line: usize, message: String },
    #[error("configuration file {path} (from ${var}) does not exist")]
    MissingFromEnv { path: PathBuf, var: &'static str },
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from; `None` for the built-in defaults.
    pub source: Option<PathBuf>,
    pub database: PathBuf,
    pub key_file: PathBuf,
    /// PIN before OTP (`pin123456`), privacyIDEA's `PrependPin`.
    pub prepend_pin: bool,
    /// Lifetime of a challenge (challenge-response), in seconds.
    pub challenge_validity_time: u32,
    /// What an acknowledged commit survives.
    pub durability: Durability,
    /// Argon2id parameters for new PIN hashes.
    pub pin_hash: PinHashParams,
    /// privacyIDEA's `failcounter_clear_timeout`, minutes; 0 is off.
    pub failcounter_clear_timeout: u32,
    /// The daemon's limits on failed attempts (`[rate_limit]`).
    pub rate_limit: RateLimitConfig,
    pub radius: RadiusConfig,
    pub realms: Vec<RealmConfig>,
    pub resolvers: Vec<ResolverConfig>,
    pub policies: Vec<PolicyConfig>,
    pub events: Vec<EventConfig>,
    /// The user `otpd serve` switches to once its sockets are bound (when
    /// started as root); `None`: it stays who it was started as.
    pub user: Option<String>,
    /// The group it switches to with `user`; `None`: the user's primary group.
    pub group: Option<String>,
    /// `[pam] socket`: the Unix socket on which `otpd serve` answers
    /// pam_otpd, which then needs no store of its own; `None`: off.
    pub pam_socket: Option<PathBuf>,
}

/// What an acknowledged commit (a consumed OTP, a new token) survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is fsync'd before it is acknowledged: it survives a
    /// power loss or a crash of the machine (the default).
    PowerLoss,
    /// Commits reach the operating system but are not fsync'd: they survive
    /// a crash of otpd, but the last commits before a power loss or kernel
    /// crash may be lost, and with them the record that an OTP was used.
    ProcessCrash,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::PowerLoss => "power-loss",
            Durability::ProcessCrash => "process-crash",
        }
    }
}

/// Argon2id cost of PIN hashes (`[pin_hash]`). New hashes use these; a
/// stored hash keeps the parameters it was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinHashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PinHashParams {
    /// OWASP's recommendation: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        PinHashParams { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

impl PinHashParams {
    /// OWASP's minimum memory for a number of passes (its table of
    /// equivalent settings: 46 MiB with 1 pass down to 7 MiB with 5).
    pub fn minimum_memory_kib(iterations: u32) -> u32 {
        match iterations {
            0 | 1 => 46 * 1024,
            2 => 19 * 1024,
            3 => 12 * 1024,
            4 => 9 * 1024,
            _ => 7 * 1024,
        }
    }
}

/// `[rate_limit]`: failed RADIUS attempts allowed per user and per source
/// (Calling-Station-Id) within `window` seconds; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub failures_per_user: u32,
    pub failures_per_source: u32,
    pub window: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig { failures_per_user: 10, failures_per_source: 50, window: 60 }
    }
}

#[derive(Debug, Clone)]
pub struct RadiusConfig {
    pub listen: Vec<SocketAddr>,
    pub clients: Vec<RadiusClientConfig>,
}

#[derive(Debug, Clone)]
pub struct RadiusClientConfig {
    pub name: String,
    pub address: ipnet::IpNet,
    /// `Zeroizing`: wiped on drop, and its `Debug` shows nothing of it.
    pub secret: zeroize::Zeroizing<String>,
    pub realm: Option<String>,
    pub require_message_authenticator: bool,
}

#[derive(Debug, Clone)]
pub struct RealmConfig {
    /// Lower-cased: realm names compare case-insensitively.
    pub name: String,
    pub default: bool,
    pub resolvers: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ResolverConfig {
    pub name: String,
    pub kind: ResolverKind,
}

#[derive(Debug, Clone)]
pub enum ResolverKind {
    /// `name:crypt-hash[:more passwd fields]` lines.
    PasswdFile { path: PathBuf },
    /// The machine's accounts; `shadow` overrides `/etc/shadow`.
    Unix { shadow: Option<PathBuf> },
}

/// A `[[policies]]` entry. Parsed and kept; acted on by the policy stage.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub name: String,
    pub scope: String,
    pub active: bool,
    pub priority: i64,
    pub realms: Vec<String>,
    pub resolvers: Vec<String>,
    pub users: Vec<String>,
    pub clients: Vec<String>,
    pub actions: toml::Table,
    pub line: usize,
}

/// An `[[events]]` entry. Parsed and kept; acted on by the event stage.
#[derive(Debug, Clone)]
pub struct EventConfig {
    pub name: String,
    pub events: Vec<String>,
    pub handler: String,
    pub position: String,
    pub action: String,
    pub order: i64,
    pub active: bool,
    pub conditions: toml::Table,
    pub options: toml::Table,
    pub line: usize,
}

// ---- the file as written -------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    database: Option<String>,
    key_file: Option<String>,
    prepend_pin: Option<bool>,
    challenge_validity_time: Option<Spanned<i64>>,
    durability: Option<Spanned<String>>,
    pin_hash: Option<Spanned<RawPinHash>>,
    failcounter_clear_timeout: Option<Spanned<i64>>,
    rate_limit: Option<RawRateLimit>,
    radius: Option<RawRadius>,
    #[serde(default)]
    realms: Vec<Spanned<RawRealm>>,
    #[serde(default)]
    resolvers: Vec<Spanned<RawResolver>>,
    #[serde(default)]
    policies: Vec<Spanned<RawPolicy>>,
    #[serde(default)]
    events: Vec<Spanned<RawEvent>>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    pam: Option<RawPam>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPam {
    socket: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPinHash {
    memory_kib: Option<u32>,
    iterations: Option<u32>,
    parallelism: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    failures_per_user: Option<Spanned<i64>>,
    failures_per_source: Option<Spanned<i64>>,
    window: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRadius {
    listen: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    clients: Vec<Spanned<RawClient>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: String,
    address: Spanned<String>,
    secret: Spanned<String>,
    realm: Option<Spanned<String>>,
    require_message_authenticator: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRealm {
    name: Spanned<String>,
    #[serde(default)]
    default: bool,
    resolvers: Spanned<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResolver {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<String>,
    path: Option<Spanned<String>>,
    shadow: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    name: String,
    scope: Spanned<String>,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default = "one")]
    priority: i64,
    #[serde(default)]
    realms: Vec<String>,
    #[serde(default)]
    resolvers: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    clients: Vec<String>,
    #[serde(default)]
    actions: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    name: String,
    events: Vec<String>,
    handler: Spanned<String>,
    #[serde(default = "post")]
    position: Spanned<String>,
    action: String,
    #[serde(default)]
    order: i64,
    #[serde(default = "yes")]
    active: bool,
    #[serde(default)]
    conditions: toml::Table,
    #[serde(default)]
    options: toml::Table,
}

fn yes() -> bool {
    true
}
fn one() -> i64 {
    1
}
fn post() -> Spanned<String> {
    Spanned::new(0..0, "post".to_owned())
}

/// Turns byte offsets into line numbers for error messages.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text.get(..offset).map_or(1, |s| s.matches('\n').count() + 1)
    }

    fn error<T>(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError::Invalid {
            path: self.path.to_owned(),
            line: self.line(span.start),
            message: message.into(),
        })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl Config {
    /// The built-in defaults: `otpd.db` and `otpd.key` in the working
    /// directory, RADIUS on loopback for a loopback client with the secret
    /// `testing123`, and one default realm of the machine's accounts.
    pub fn builtin() -> Config {
        Config {
            source: None,
            database: PathBuf::from("otpd.db"),
            key_file: PathBuf::from("otpd.key"),
            prepend_pin: true,
            challenge_validity_time: DEFAULT_CHALLENGE_VALIDITY,
            durability: Durability::PowerLoss,
            pin_hash: PinHashParams::default(),
            failcounter_clear_timeout: 0,
            rate_limit: RateLimitConfig::default(),
            radius: RadiusConfig {
                listen: vec![SocketAddr::from(([127, 0, 0, 1], 1812))],
                clients: vec![RadiusClientConfig {
                    name: "localhost".into(),
                    address: "127.0.0.1/32".parse().expect("valid CIDR"),
                    secret: zeroize::Zeroizing::new("testing123".into()),
                    realm: None,
                    require_message_authenticator: true,
                }],
            },
            realms: vec![RealmConfig {
                name: DEFAULT_REALM.into(),
                default: true,
                resolvers: vec!["unix".into()],
            }],
            resolvers: vec![ResolverConfig {
                name: "unix".into(),
                kind: ResolverKind::Unix { shadow: None },
            }],
            policies: Vec::new(),
            events: Vec::new(),
            user: None,
            group: None,
            pam_socket: None,
        }
    }

    /// Finds the configuration: `explicit` (must exist), else `$OTPD_CONFIG`
    /// (must exist), else `/etc/otpd/otpd.toml` if it exists, else the
    /// built-in defaults.
    pub fn locate(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(path) = explicit {
            return Config::load(path);
        }
        if let Some(env) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
            let path = PathBuf::from(env);
            if !path.exists() {
                return Err(ConfigError::MissingFromEnv { path, var: CONFIG_ENV });
            }
            return Config::load(&path);
        }
        let system = Path::new(SYSTEM_CONFIG);
        if system.exists() { Config::load(system) } else { Ok(Config::builtin()) }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Config::parse(path, &text)
    }

    /// Whether these are the built-in defaults (the daemon warns about them).
    pub fn is_builtin(&self) -> bool {
        self.source.is_none()
    }

    /// Parses `text` as if read from `path` (relative paths in it are taken
    /// relative to `path`'s directory).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let src = Source { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            line: e.span().map_or(1, |s| src.line(s.start)),
            message: e.message().trim().to_owned(),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let rel = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() { p.to_owned() } else { base.join(p) }
        };
        let builtin = Config::builtin();

        let resolvers = Self::resolvers(&src, &raw.resolvers, &rel)?;
        let realms = if raw.realms.is_empty() && raw.resolvers.is_empty() {
            // A file without realms keeps the default realm of the machine's accounts.
            (builtin.realms.clone(), builtin.resolvers.clone())
        } else {
            (Self::realms(&src, &raw.realms, &resolvers)?, resolvers)
        };
        let (realms, resolvers) = realms;
        let realm_names: HashSet<&str> = realms.iter().map(|r| r.name.as_str()).collect();

        let radius = match raw.radius {
            None => builtin.radius.clone(),
            Some(r) => Self::radius(&src, r, &realm_names, &builtin.radius)?,
        };

        let mut policies = Vec::new();
        for p in raw.policies {
            let line = src.line(p.span().start);
            // Policy and event errors name the entry's line, like those
            // found later on its actions, conditions and options.
            let entry = p.span();
            let p = p.into_inner();
            if !matches!(p.scope.get_ref().as_str(), "enrollment" | "authentication") {
                return src.error(
                    entry,
                    format!(
                        "policy '{}': scope '{}' is unknown (use enrollment or authentication)",
                        p.name,
                        p.scope.get_ref()
                    ),
                );
            }
            policies.push(PolicyConfig {
                name: p.name,
                scope: p.scope.into_inner(),
                active: p.active,
                priority: p.priority,
                realms: p.realms,
                resolvers: p.resolvers,
                users: p.users,
                clients: p.clients,
                actions: p.actions,
                line,
            });
        }

        let mut events = Vec::new();
        for e in raw.events {
            let line = src.line(e.span().start);
            let entry = e.span();
            let e = e.into_inner();
            if !matches!(e.position.get_ref().as_str(), "pre" | "post") {
                return src.error(
                    entry,
                    format!(
                        "event '{}': position '{}' is unknown (use pre or post)",
                        e.name,
                        e.position.get_ref()
                    ),
                );
            }
            if e.handler.get_ref() != "token" {
                return src.error(
                    entry.clone(),
                    format!("event '{}': handler '{}' is unknown (use token)", e.name, e.handler.get_ref()),
                );
            }
            events.push(EventConfig {
                name: e.name,
                events: e.events,
                handler: e.handler.into_inner(),
                position: e.position.into_inner(),
                action: e.action,
                order: e.order,
                active: e.active,
                conditions: e.conditions,
                options: e.options,
                line,
            });
        }

        let challenge_validity_time = match raw.challenge_validity_time {
            None => DEFAULT_CHALLENGE_VALIDITY,
            Some(v) => match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=86_400).contains(&n) => n,
                _ => {
                    return src.error(
                        v.span(),
                        format!("challenge_validity_time: {} is not 1 to 86400 seconds", v.get_ref()),
                    );
                }
            },
        };

        let durability = match &raw.durability {
            None => Durability::PowerLoss,
            Some(d) => match d.get_ref().as_str() {
                "power-loss" => Durability::PowerLoss,
                "process-crash" => Durability::ProcessCrash,
                other => {
                    return src.error(
                        d.span(),
                        format!("durability: '{other}' is unknown (use power-loss or process-crash)"),
                    );
                }
            },
        };
        let pin_hash = match &raw.pin_hash {
            None => PinHashParams::default(),
            Some(p) => Self::pin_hash(&src, p)?,
        };
        let failcounter_clear_timeout = match &raw.failcounter_clear_timeout {
            None => 0,
            Some(v) => match u32::try_from(*v.get_ref()) {
                Ok(n) if n <= MAX_CLEAR_TIMEOUT => n,
                _ => {
                    return src.error(
                        v.span(),
                        format!(
                            "failcounter_clear_timeout: {} is not 0 (off) to {MAX_CLEAR_TIMEOUT} minutes",
                            v.get_ref()
                        ),
                    );
                }
            },
        };
        let rate_limit = match &raw.rate_limit {
            None => RateLimitConfig::default(),
            Some(r) => Self::rate_limit(&src, r)?,
        };

        let (user, group) = Self::account(&src, &raw.user, &raw.group)?;
        let pam_socket = match raw.pam.and_then(|p| p.socket) {
            None => None,
            Some(s) => {
                let path = rel(s.get_ref());
                // What sockaddr_un holds, less the terminating NUL.
                if s.get_ref().is_empty() || path.as_os_str().len() > MAX_SOCKET_PATH {
                    return src.error(
                        s.span(),
                        format!(
                            "pam.socket: '{}' is not a socket path (1 to {MAX_SOCKET_PATH} bytes, \
                             taken relative to the configuration file's directory)",
                            s.get_ref()
                        ),
                    );
                }
                Some(path)
            }
        };

        Ok(Config {
            source: Some(path.to_owned()),
            database: raw.database.as_deref().map_or_else(|| rel("otpd.db"), &rel),
            key_file: raw.key_file.as_deref().map_or_else(|| rel("otpd.key"), &rel),
            prepend_pin: raw.prepend_pin.unwrap_or(true),
            challenge_validity_time,
            durability,
            pin_hash,
            failcounter_clear_timeout,
            rate_limit,
            radius,
            realms,
            resolvers,
            policies,
            events,
            user,
            group,
            pam_socket,
        })
    }

    /// `[pin_hash]`: no weaker than OWASP's minimum for Argon2id.
    fn pin_hash(src: &Source<'_>, raw: &Spanned<RawPinHash>) -> Result<PinHashParams, ConfigError> {
        let defaults = PinHashParams::default();
        let r = raw.get_ref();
        let p = PinHashParams {
            memory_kib: r.memory_kib.unwrap_or(defaults.memory_kib),
            iterations: r.iterations.unwrap_or(defaults.iterations),
            parallelism: r.parallelism.unwrap_or(defaults.parallelism),
        };
        let minimum = PinHashParams::minimum_memory_kib(p.iterations);
        if p.iterations == 0 || p.iterations > 64 {
            return src.error(raw.span(), format!("pin_hash: iterations {} is not 1 to 64", p.iterations));
        }
        if p.parallelism == 0 || p.parallelism > 64 {
            return src.error(raw.span(), format!("pin_hash: parallelism {} is not 1 to 64", p.parallelism));
        }
        if p.memory_kib < minimum || p.memory_kib > 4 * 1024 * 1024 {
            return src.error(
                raw.span(),
                format!(
                    "pin_hash: memory_kib {} is below OWASP's minimum of {minimum} KiB for {} iterations \
                     (or above 4 GiB)",
                    p.memory_kib, p.iterations
                ),
            );
        }
        Ok(p)
    }

    /// `[rate_limit]`: counts from 0 (off) to a million, a window of 1 s to a day.
    fn rate_limit(src: &Source<'_>, r: &RawRateLimit) -> Result<RateLimitConfig, ConfigError> {
        let defaults = RateLimitConfig::default();
        let value = |key: &str, v: &Option<Spanned<i64>>, default: u32, range: RangeInclusive<u32>| {
            let Some(v) = v else { return Ok(default) };
            match u32::try_from(*v.get_ref()) {
                Ok(n) if range.contains(&n) => Ok(n),
                _ => src.error(
                    v.span(),
                    format!("rate_limit: {key} {} is not {} to {}", v.get_ref(), range.start(), range.end()),
                ),
            }
        };
        Ok(RateLimitConfig {
            failures_per_user: value(
                "failures_per_user",
                &r.failures_per_user,
                defaults.failures_per_user,
                0..=1_000_000,
            )?,
            failures_per_source: value(
                "failures_per_source",
                &r.failures_per_source,
                defaults.failures_per_source,
                0..=1_000_000,
            )?,
            window: value("window", &r.window, defaults.window, 1..=86_400)?,
        })
    }

    /// `user` and `group`: names of accounts (looked up by `otpd serve`,
    /// not here: the CLI and PAM read the same file on other machines).
    fn account(
        src: &Source<'_>,
        user: &Option<Spanned<String>>,
        group: &Option<Spanned<String>>,
    ) -> Result<(Option<String>, Option<String>), ConfigError> {
        for (key, value) in [("user", user), ("group", group)] {
            if let Some(v) = value {
                let name = v.get_ref();
                if name.is_empty()
                    || name.len() > 256
                    || name.contains(['\0', ':', '/'])
                    || name.trim() != name
                {
                    return src.error(
                        v.span(),
                        format!("{key}: '{}' is not a valid account name", name.escape_debug()),
                    );
                }
            }
        }
        if let (None, Some(g)) = (user, group) {
            return src.error(
                g.span(),
                format!(
                    "group = \"{}\" needs user: otpd serve switches its group only together with its user",
                    g.get_ref()
                ),
            );
        }
        Ok((user.as_ref().map(|u| u.get_ref().clone()), group.as_ref().map(|g| g.get_ref().clone())))
    }

    fn resolvers(
        src: &Source<'_>,
        raw: &[Spanned<RawResolver>],
        rel: &dyn Fn(&str) -> PathBuf,
    ) -> Result<Vec<ResolverConfig>, ConfigError> {
        let mut out: Vec<ResolverConfig> = Vec::new();
        for r in raw {
            let r = r.get_ref();
            let name = r.name.get_ref();
            if !valid_name(name) {
                return src.error(
                    r.name.span(),
                    format!("resolvers: name '{name}' is invalid (use letters, digits, '_', '-', '.')"),
                );
            }
            if out.iter().any(|o| o.name == *name) {
                return src.error(r.name.span(), format!("resolvers: name '{name}' is defined twice"));
            }
            let kind = match r.kind.get_ref().as_str() {
                "passwdfile" => match &r.path {
                    Some(p) if !p.get_ref().is_empty() => ResolverKind::PasswdFile { path: rel(p.get_ref()) },
                    _ => {
                        return src.error(
                            r.name.span(),
                            format!("resolver '{name}': type passwdfile needs the key 'path'"),
                        );
                    }
                },
                "unix" => {
                    if let Some(p) = &r.path {
                        return src.error(
                            p.span(),
                            format!("resolver '{name}': key 'path' is not used by type unix"),
                        );
                    }
                    ResolverKind::Unix { shadow: r.shadow.as_deref().map(rel) }
                }
                other => {
                    return src.error(
                        r.kind.span(),
                        format!(
                            "resolver '{name}': type '{other}' is not supported (use passwdfile or unix)"
                        ),
                    );
                }
            };
            if r.shadow.is_some() && !matches!(kind, ResolverKind::Unix { .. }) {
                return src
                    .error(r.name.span(), format!("resolver '{name}': key 'shadow' is only for type unix"));
            }
            out.push(ResolverConfig { name: name.clone(), kind });
        }
        Ok(out)
    }

    fn realms(
        src: &Source<'_>,
        raw: &[Spanned<RawRealm>],
        resolvers: &[ResolverConfig],
    ) -> Result<Vec<RealmConfig>, ConfigError> {
        let mut out: Vec<RealmConfig> = Vec::new();
        for r in raw {
            let r = r.get_ref();
            let name = r.name.get_ref().to_lowercase();
            if !valid_name(&name) {
                return src.error(
                    r.name.span(),
                    format!("realms: name '{name}' is invalid (use letters, digits, '_', '-', '.')"),
                );
            }
            if out.iter().any(|o| o.name == name) {
                return src.error(r.name.span(), format!("realms: name '{name}' is defined twice"));
            }
            if r.resolvers.get_ref().is_empty() {
                return src.error(
                    r.resolvers.span(),
                    format!("realm '{name}': resolvers must name at least one resolver"),
                );
            }
            for res in r.resolvers.get_ref() {
                if !resolvers.iter().any(|d| d.name == *res) {
                    return src.error(
                        r.resolvers.span(),
                        format!(
                            "realm '{name}': resolvers names '{res}', which no [[resolvers]] entry defines"
                        ),
                    );
                }
            }
            if r.default
                && let Some(other) = out.iter().find(|o| o.default)
            {
                return src.error(
                    r.name.span(),
                    format!(
                        "realm '{name}': default = true, but realm '{}' is already the default",
                        other.name
                    ),
                );
            }
            out.push(RealmConfig { name, default: r.default, resolvers: r.resolvers.get_ref().clone() });
        }
        if out.is_empty() {
            return Err(ConfigError::Invalid {
                path: src.path.to_owned(),
                line: 1,
                message: "resolvers are defined but no [[realms]] entry uses them".into(),
            });
        }
        if out.len() == 1 {
            out[0].default = true;
        }
        Ok(out)
    }

    fn radius(
        src: &Source<'_>,
        raw: RawRadius,
        realms: &HashSet<&str>,
        builtin: &RadiusConfig,
    ) -> Result<RadiusConfig, ConfigError> {
        let listen = match raw.listen {
            None => builtin.listen.clone(),
            Some(list) => {
                let mut out = Vec::new();
                for l in list {
                    match l.get_ref().parse::<SocketAddr>() {
                        Ok(a) => out.push(a),
                        Err(_) => {
                            return src.error(
                                l.span(),
                                format!(
                                    "radius.listen: '{}' is not an address with port (e.g. 127.0.0.1:1812 or [::1]:1812)",
                                    l.get_ref()
                                ),
                            );
                        }
                    }
                }
                out
            }
        };
        let mut clients = Vec::new();
        for c in raw.clients {
            let c = c.into_inner();
            let text = c.address.get_ref();
            let address = match text.parse::<ipnet::IpNet>() {
                Ok(n) => n,
                Err(_) => match text.parse::<std::net::IpAddr>() {
                    Ok(ip) => ipnet::IpNet::from(ip),
                    Err(_) => {
                        return src.error(
                            c.address.span(),
                            format!(
                                "radius client '{}': address '{text}' is not an IP address or CIDR",
                                c.name
                            ),
                        );
                    }
                },
            };
            if c.secret.get_ref().is_empty() {
                return src
                    .error(c.secret.span(), format!("radius client '{}': secret must not be empty", c.name));
            }
            if let Some(realm) = &c.realm
                && !realms.contains(realm.get_ref().to_lowercase().as_str())
            {
                return src.error(
                    realm.span(),
                    format!("radius client '{}': realm '{}' is not defined", c.name, realm.get_ref()),
                );
            }
            clients.push(RadiusClientConfig {
                name: c.name,
                address,
                secret: zeroize::Zeroizing::new(c.secret.into_inner()),
                realm: c.realm.map(|r| r.into_inner().to_lowercase()),
                require_message_authenticator: c.require_message_authenticator.unwrap_or(true),
            });
        }
        Ok(RadiusConfig { listen, clients })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/otpd/otpd.toml"), text)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const GOOD: &str = r#"
database = "otpd.db"
key_file = "/var/lib/otpd/otpd.key"

[radius]
listen = ["127.0.0.1:1812", "[::1]:1812"]

[[radius.clients]]
name = "localhost"
address = "127.0.0.1/32"
secret = "testing123"
realm = "corp"

[[realms]]
name = "Corp"
default = true
resolvers = ["corp-users"]

[[resolvers]]
name = "corp-users"
type = "passwdfile"
path = "users"

[[policies]]
name = "corp-enrollment"
scope = "enrollment"
realms = ["corp"]
[policies.actions]
max_token_per_user = 2

[[events]]
name = "new tokens join sales"
events = ["token_init"]
handler = "token"
position = "post"
action = "set tokenrealm"
conditions = { realm = "corp" }
options = { realm = "sales" }
"#;

    #[test]
    fn full_example_parses_with_relative_paths() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.database, PathBuf::from("/etc/otpd/otpd.db"));
        assert_eq!(c.key_file, PathBuf::from("/var/lib/otpd/otpd.key"));
        assert_eq!(c.realms[0].name, "corp");
        assert!(c.realms[0].default);
        assert!(
            matches!(&c.resolvers[0].kind, ResolverKind::PasswdFile { path } if path == Path::new("/etc/otpd/users"))
        );
        assert_eq!(c.radius.listen.len(), 2);
        assert!(c.radius.clients[0].require_message_authenticator);
        assert_eq!(c.policies.len(), 1);
        assert_eq!(c.events[0].position, "post");
        assert!(c.prepend_pin);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err("database = \"x\"\n\n[[realms]]\nname = \"a\"\nresolvers = [\"u\"]\ncolour = 1\n");
        assert!(e.contains("line 6"), "{e}");
        assert!(e.contains("colour"), "{e}");
        assert!(e.starts_with("/etc/otpd/otpd.toml"), "{e}");
    }

    #[test]
    fn semantic_errors_name_line_and_key() {
        let e = err("[[realms]]\nname = \"a\"\nresolvers = [\"nope\"]\n");
        assert!(e.contains("line 3") && e.contains("'nope'"), "{e}");
        let e = err("[[resolvers]]\nname = \"r\"\ntype = \"ldap\"\n");
        assert!(e.contains("line 3") && e.contains("ldap"), "{e}");
        let e = err(
            "[[resolvers]]\nname = \"r\"\ntype = \"passwdfile\"\n[[realms]]\nname = \"a\"\nresolvers = [\"r\"]\n",
        );
        assert!(e.contains("line 2") && e.contains("path"), "{e}");
        let e = err("[radius]\nlisten = [\"localhost\"]\n");
        assert!(e.contains("line 2") && e.contains("radius.listen"), "{e}");
        let e = err("[[radius.clients]]\nname = \"x\"\naddress = \"10.0.0.300/8\"\nsecret = \"s\"\n");
        assert!(e.contains("line 3") && e.contains("address"), "{e}");
        let e = err("prepend_pin = \"yes\"\n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn two_default_realms_refused() {
        let e = err(
            "[[resolvers]]\nname = \"u\"\ntype = \"unix\"\n[[realms]]\nname = \"a\"\ndefault = true\nresolvers = [\"u\"]\n[[realms]]\nname = \"b\"\ndefault = true\nresolvers = [\"u\"]\n",
        );
        assert!(e.contains("line 9") && e.contains("already the default"), "{e}");
    }

    #[test]
    fn file_without_realms_keeps_default_realm() {
        let c = parse("database = \"x.db\"\n").unwrap();
        assert_eq!(c.realms[0].name, DEFAULT_REALM);
        assert!(matches!(c.resolvers[0].kind, ResolverKind::Unix { .. }));
    }

    #[test]
    fn shipped_example_parses() {
        let c = parse(include_str!("../../config/otpd.toml")).unwrap();
        assert_eq!(c.realms[0].name, "corp");
        assert_eq!(c.challenge_validity_time, 120);
        assert_eq!(c.policies.len(), 1);
    }

    #[test]
    fn challenge_validity_time_range() {
        assert_eq!(parse("challenge_validity_time = 30\n").unwrap().challenge_validity_time, 30);
        let e = err("challenge_validity_time = 0\n");
        assert!(e.contains("line 1") && e.contains("challenge_validity_time"), "{e}");
    }

    #[test]
    fn pam_socket_setting() {
        assert_eq!(parse("").unwrap().pam_socket, None);
        let c = parse("[pam]\nsocket = \"/run/otpd/pam.sock\"\n").unwrap();
        assert_eq!(c.pam_socket.as_deref(), Some(Path::new("/run/otpd/pam.sock")));
        let e = err("[pam]\nsocket = \"\"\n");
        assert!(e.contains("line 2") && e.contains("pam.socket: '' is not a socket path"), "{e}");
        let long = format!("/run/{}.sock", "x".repeat(120));
        let e = err(&format!("[pam]\n\nsocket = \"{long}\"\n"));
        assert!(e.contains("line 3") && e.contains("1 to 107 bytes"), "{e}");
        let e = err("[pam]\nsockets = \"/run/x\"\n");
        assert!(e.contains("sockets"), "{e}");
    }

    #[test]
    fn durability_setting() {
        assert_eq!(parse("").unwrap().durability, Durability::PowerLoss);
        let c = parse("durability = \"process-crash\"\n").unwrap();
        assert_eq!(c.durability, Durability::ProcessCrash);
        let e = err("\ndurability = \"fast\"\n");
        assert!(e.contains("line 2") && e.contains("durability: 'fast' is unknown"), "{e}");
    }

    #[test]
    fn pin_hash_parameters_no_weaker_than_owasp() {
        assert_eq!(parse("").unwrap().pin_hash, PinHashParams::default());
        let c = parse("[pin_hash]\nmemory_kib = 65536\niterations = 3\n").unwrap();
        assert_eq!(c.pin_hash, PinHashParams { memory_kib: 65536, iterations: 3, parallelism: 1 });
        let c = parse("[pin_hash]\nmemory_kib = 7168\niterations = 5\n").unwrap();
        assert_eq!(c.pin_hash.memory_kib, 7168);
        let e = err("[pin_hash]\nmemory_kib = 8192\n");
        assert!(e.contains("below OWASP's minimum of 19456 KiB for 2 iterations"), "{e}");
        let e = err("[pin_hash]\niterations = 0\n");
        assert!(e.contains("iterations 0 is not 1 to 64"), "{e}");
        let e = err("[pin_hash]\nmemory = 1\n");
        assert!(e.contains("memory"), "{e}");
    }

    #[test]
    fn service_user_and_group() {
        let c = parse("").unwrap();
        assert_eq!((c.user, c.group), (None, None));
        let c = parse("user = \"otpd\"\n").unwrap();
        assert_eq!((c.user.as_deref(), c.group), (Some("otpd"), None));
        let c = parse("user = \"otpd\"\ngroup = \"radius\"\n").unwrap();
        assert_eq!((c.user.as_deref(), c.group.as_deref()), (Some("otpd"), Some("radius")));
        let e = err("\ngroup = \"otpd\"\n");
        assert!(e.contains("line 2") && e.contains("needs user"), "{e}");
        let e = err("user = \"\"\n");
        assert!(e.contains("line 1") && e.contains("user: '' is not a valid account name"), "{e}");
        let e = err("user = \"otpd\"\ngroup = \"a:b\"\n");
        assert!(e.contains("line 2") && e.contains("group: 'a:b'"), "{e}");
        let e = err("user = 1000\n");
        assert!(e.contains("line 1"), "{e}");
        assert_eq!(Config::builtin().user, None);
    }

    #[test]
    fn a_printed_configuration_never_shows_a_client_secret() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.radius.clients[0].secret.as_str(), "testing123");
        let printed = format!("{c:?}");
        assert!(printed.contains("localhost") && !printed.contains("testing123"), "{printed}");
    }

    #[test]
    fn builtin_defaults() {
        let c = Config::builtin();
        assert!(c.is_builtin());
        assert_eq!(c.radius.clients[0].secret.as_str(), "testing123");
        assert_eq!(c.database, PathBuf::from("otpd.db"));
    }

    #[test]
    fn failcounter_clear_timeout_setting() {
        assert_eq!(parse("").unwrap().failcounter_clear_timeout, 0);
        assert_eq!(parse("failcounter_clear_timeout = 5\n").unwrap().failcounter_clear_timeout, 5);
        let e = err("\nfailcounter_clear_timeout = -1\n");
        assert!(e.contains("line 2") && e.contains("failcounter_clear_timeout: -1 is not 0"), "{e}");
    }

    #[test]
    fn rate_limit_section() {
        assert_eq!(parse("").unwrap().rate_limit, RateLimitConfig::default());
        let c = parse("[rate_limit]\nfailures_per_user = 0\nwindow = 300\n").unwrap();
        assert_eq!(
            c.rate_limit,
            RateLimitConfig { failures_per_user: 0, failures_per_source: 50, window: 300 }
        );
        let e = err("[rate_limit]\nwindow = 0\n");
        assert!(e.contains("line 2") && e.contains("rate_limit: window 0 is not 1 to 86400"), "{e}");
        let e = err("[rate_limit]\nfailures = 3\n");
        assert!(e.contains("failures"), "{e}");
    }
}
