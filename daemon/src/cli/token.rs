//! `otpd token ...`: enrollment and administration of tokens. Each
//! subcommand maps its flags onto one otpd-core call and prints the token.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use jiff::Timestamp;
use otpd_core::import;
use otpd_core::otp::HashAlgorithm;
use otpd_core::{AdminContext, InitSpec, Otpd, Token, TokenChanges, TokenType};
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;
use serde_json::json;
use zeroize::Zeroizing;

use super::CliError;
use super::output::{token_json, token_table, token_text};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Enroll a token; prints its serial and, for hotp/totp, the otpauth:// URI and a QR code.
    Init(InitArgs),
    /// List tokens.
    List {
        #[arg(long, value_name = "U")]
        user: Option<String>,
        #[arg(long, value_name = "R")]
        realm: Option<String>,
    },
    /// Show one token.
    Show { serial: String },
    /// Assign a token to a user.
    Assign {
        serial: String,
        #[arg(long, value_name = "U")]
        user: String,
        #[arg(long, value_name = "R")]
        realm: Option<String>,
        #[arg(long, value_name = "P")]
        pin: Option<String>,
    },
    /// Remove a token's owner (its PIN is cleared; its realms stay).
    Unassign { serial: String },
    /// Enable a token.
    Enable { serial: String },
    /// Disable a token.
    Disable { serial: String },
    /// Delete a token.
    Delete { serial: String },
    /// Change a token's PIN, description, realms, validity period or maxfail.
    Set(SetArgs),
    /// Resynchronise an hotp/totp token with two consecutive OTP values.
    Resync { serial: String, otp1: String, otp2: String },
    /// Set the failcounter to 0.
    Reset { serial: String },
    /// Replace a lost token with a temporary password token (printed once) and disable it.
    Lost { serial: String },
    /// Import hotp/totp tokens from a CSV seed file, all or nothing.
    #[command(long_about = IMPORT_HELP)]
    Import {
        /// The CSV file: one token a line (see --help).
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

const IMPORT_HELP: &str = "\
Import hotp/totp tokens from a CSV seed file (privacyIDEA's format), all or nothing.

One token a line:

    serial, key, type[, digits[, timestep[, user[, realm[, hash]]]]]

  serial    1 to 40 characters from A-Z, a-z, 0-9, '_' and '-'; unique
  key       the OTP key as hex, 10 to 128 bytes (as --otpkey of token init)
  type      hotp or totp (any case)
  digits    6 or 8 (default 6)
  timestep  30 or 60 seconds, totp only (default 30; leave it empty for hotp)
  user      the owner, resolved like --user of token init (user@realm works)
  realm     the owner's realm (as --realm); without a user, the token's realm
  hash      sha1, sha256 or sha512 (default sha1)

Fields are separated by commas and trimmed; empty optional fields take their
default. Blank lines and lines starting with '#' are skipped; CRLF line ends
are accepted; lines are at most 4096 bytes. Example:

    # serial, key, type, digits, timestep, user, realm, hash
    HW0001, 3132333435363738393031323334353637383930, hotp
    HW0002, 3132333435363738393031323334353637383930, totp, 8, 60, alice, , sha256

Every line is checked first (syntax, key, serial, duplicates, serials that
exist, owners, enrollment limits); any error names the file and line and
imports nothing. The tokens get the defaults of token init and no PIN; one
audit record (token_load) covers the import. Prints the number imported
(--json: imported, first and last serial).";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TypeArg {
    Hotp,
    Totp,
    Pw,
    Spass,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum HashArg {
    Sha1,
    Sha256,
    Sha512,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[arg(long = "type", value_enum, ignore_case = true)]
    token_type: TypeArg,
    #[arg(long, value_name = "S")]
    serial: Option<String>,
    /// The OTP key as hex (hotp/totp).
    #[arg(long, value_name = "HEX", conflicts_with = "genkey")]
    otpkey: Option<String>,
    /// Generate a random OTP key (the default for hotp/totp without --otpkey).
    #[arg(long)]
    genkey: bool,
    /// The password of a pw token (generated when absent).
    #[arg(long, value_name = "P")]
    password: Option<String>,
    #[arg(long, value_name = "6|8")]
    digits: Option<u32>,
    #[arg(long, value_enum, ignore_case = true)]
    hash: Option<HashArg>,
    #[arg(long, value_name = "30|60")]
    timestep: Option<u32>,
    #[arg(long, value_name = "U")]
    user: Option<String>,
    #[arg(long, value_name = "R")]
    realm: Option<String>,
    #[arg(long, value_name = "P")]
    pin: Option<String>,
    #[arg(long, value_name = "D")]
    description: Option<String>,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    serial: String,
    #[arg(long, value_name = "P")]
    pin: Option<String>,
    #[arg(long, value_name = "D")]
    description: Option<String>,
    /// Comma-separated realm list (replaces the token's realms; the owner's realm stays).
    #[arg(long, value_name = "R1,R2")]
    realms: Option<String>,
    /// RFC 3339, a fixed format like 2016/12/23 9:30am or 23.12.2016 23:20, or +30m/+2h/+30d; "" or none clears it.
    #[arg(long, value_name = "T")]
    validity_start: Option<String>,
    /// Like --validity-start.
    #[arg(long, value_name = "T")]
    validity_end: Option<String>,
    #[arg(long, value_name = "N")]
    max_fail: Option<u32>,
}

/// A `--validity-*` value: `Some(None)` clears the bound.
fn parse_bound(
    flag: &str,
    value: Option<&str>,
    now: Timestamp,
) -> Result<Option<Option<Timestamp>>, CliError> {
    let Some(value) = value else { return Ok(None) };
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("none") {
        return Ok(Some(None));
    }
    let local = now.to_zoned(jiff::tz::TimeZone::system());
    otpd_core::datetime::parse_time(v, &local)
        .map(|z| Some(Some(z.timestamp())))
        .map_err(|e| CliError::Usage(format!("{flag}: {e}")))
}

fn print_token(token: &Token, json: bool) {
    if json {
        outln!("{}", token_json(token));
    } else {
        outln!("{}", token_text(token).trim_end_matches('\n'));
    }
}

pub fn run(otpd: &Otpd, ctx: &AdminContext, cmd: TokenCommand, json: bool) -> Result<ExitCode, CliError> {
    match cmd {
        TokenCommand::Init(a) => init(otpd, ctx, a, json)?,
        TokenCommand::List { user, realm } => {
            let tokens = otpd.list_tokens(user.as_deref(), realm.as_deref())?;
            if json {
                outln!("{}", serde_json::Value::Array(tokens.iter().map(token_json).collect()));
            } else {
                outln!("{}", token_table(&tokens).trim_end_matches('\n'));
            }
        }
        TokenCommand::Show { serial } => print_token(&otpd.token(&serial)?, json),
        TokenCommand::Assign { serial, user, realm, pin } => {
            print_token(&otpd.assign_token(ctx, &serial, &user, realm.as_deref(), pin.as_deref())?, json)
        }
        TokenCommand::Unassign { serial } => print_token(&otpd.unassign_token(ctx, &serial)?, json),
        TokenCommand::Enable { serial } => print_token(&otpd.set_active(ctx, &serial, true)?, json),
        TokenCommand::Disable { serial } => print_token(&otpd.set_active(ctx, &serial, false)?, json),
        TokenCommand::Delete { serial } => {
            let token = otpd.delete_token(ctx, &serial)?;
            if json {
                outln!("{}", json!({ "serial": token.serial, "deleted": true }));
            } else {
                outln!("deleted token {}", token.serial);
            }
        }
        TokenCommand::Set(a) => {
            let now = otpd.now();
            let changes = TokenChanges {
                pin: a.pin.map(Zeroizing::new),
                description: a.description,
                realms: a.realms.map(|r| r.split(',').map(str::to_owned).collect()),
                validity_start: parse_bound("--validity-start", a.validity_start.as_deref(), now)?,
                validity_end: parse_bound("--validity-end", a.validity_end.as_deref(), now)?,
                max_fail: a.max_fail,
            };
            print_token(&otpd.set_token(ctx, &a.serial, &changes)?, json)
        }
        TokenCommand::Resync { serial, otp1, otp2 } => {
            print_token(&otpd.resync_token(ctx, &serial, &otp1, &otp2)?, json)
        }
        TokenCommand::Reset { serial } => print_token(&otpd.reset_failcounter(ctx, &serial)?, json),
        TokenCommand::Import { file } => import(otpd, ctx, &file, json)?,
        TokenCommand::Lost { serial } => {
            let r = otpd.lost_token(ctx, &serial)?;
            if json {
                let mut doc = token_json(&r.token);
                doc["password"] = json!(r.password.as_str());
                doc["lost_serial"] = json!(r.lost_serial);
                doc["end_date"] = json!(r.valid_until.to_string());
                doc["disable"] = json!(1);
                outln!("{doc}");
            } else {
                outln!("serial: {}", r.token.serial);
                outln!("password: {} (shown once; the user types PIN + password)", r.password.as_str());
                outln!("valid until: {}", r.valid_until);
                outln!("token {} is disabled", r.lost_serial);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `token import FILE`: reads the file line by line into the core's parser
/// and imports the rows. Errors name the file (and the line).
fn import(otpd: &Otpd, ctx: &AdminContext, file: &Path, json: bool) -> Result<(), CliError> {
    let name = file.display();
    let unreadable = |e: std::io::Error| CliError::Usage(format!("cannot read {name}: {e}"));
    let f = File::open(file).map_err(unreadable)?;
    if f.metadata().map_err(unreadable)?.is_dir() {
        return Err(CliError::Usage(format!("cannot read {name}: it is a directory")));
    }
    let rows = import::parse_reader(BufReader::with_capacity(1 << 16, f))
        .map_err(|e| CliError::Usage(format!("{name} {e}")))?;
    if rows.is_empty() {
        return Err(CliError::Usage(format!("{name} holds no tokens, only blank lines and comments")));
    }
    let done = otpd.import_tokens(ctx, rows).map_err(|e| match e {
        otpd_core::Error::Import(e) => CliError::Usage(format!("{name} {e}")),
        other => other.into(),
    })?;
    if json {
        outln!("{}", json!({ "imported": done.count, "first": done.first, "last": done.last }));
    } else {
        outln!("imported {}", import::tokens(done.count));
    }
    Ok(())
}

fn init(otpd: &Otpd, ctx: &AdminContext, a: InitArgs, json: bool) -> Result<(), CliError> {
    let mut spec = InitSpec::new(match a.token_type {
        TypeArg::Hotp => TokenType::Hotp,
        TypeArg::Totp => TokenType::Totp,
        TypeArg::Pw => TokenType::Pw,
        TypeArg::Spass => TokenType::Spass,
    });
    spec.serial = a.serial;
    spec.otpkey = a.otpkey.map(Zeroizing::new);
    spec.genkey = a.genkey;
    spec.password = a.password.map(Zeroizing::new);
    spec.digits = a.digits;
    spec.hash = a.hash.map(|h| match h {
        HashArg::Sha1 => HashAlgorithm::Sha1,
        HashArg::Sha256 => HashAlgorithm::Sha256,
        HashArg::Sha512 => HashAlgorithm::Sha512,
    });
    spec.timestep = a.timestep;
    spec.user = a.user;
    spec.realm = a.realm;
    spec.pin = a.pin.map(Zeroizing::new);
    spec.description = a.description;
    let enrolled = otpd.init_token(ctx, &spec)?;
    if json {
        let mut doc = token_json(&enrolled.token);
        if let Some(uri) = &enrolled.otpauth {
            doc["otpauth"] = json!(uri.as_str());
        }
        if let Some(pw) = &enrolled.password {
            doc["password"] = json!(pw.as_str());
        }
        outln!("{doc}");
        return Ok(());
    }
    outln!("serial: {}", enrolled.token.serial);
    if let Some(pw) = &enrolled.password {
        outln!("password: {} (shown once)", pw.as_str());
    }
    if let Some(uri) = &enrolled.otpauth {
        outln!("otpauth: {}", uri.as_str());
        match QrCode::new(uri.as_bytes()) {
            Ok(code) => {
                // Light modules drawn dark suit the usual dark terminal.
                let qr = code
                    .render::<Dense1x2>()
                    .dark_color(Dense1x2::Light)
                    .light_color(Dense1x2::Dark)
                    .quiet_zone(true)
                    .build();
                outln!("{qr}");
            }
            Err(e) => eprintln!("otpd: cannot draw the QR code ({e}); use the otpauth URI above"),
        }
    }
    Ok(())
}
