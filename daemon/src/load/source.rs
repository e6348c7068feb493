//! Where the load generator's requests come from: user names (a pattern or a
//! list) paired round robin with passwords (fixed, a list of one-shot values,
//! or HOTP/TOTP codes computed from a known key).
//!
//! TOTP and the server's window: a TOTP server accepts codes of a few steps
//! around its clock (otpd, like privacyIDEA, 6 steps back and 5 ahead with
//! the default window of 180 s) and only requires each code's step to be
//! newer than the last one the token used. With a window of k steps the
//! source uses, for each user, every step from `now - k` to `now + k` once,
//! in increasing order: 2k+1 logins per user at first, then one more each
//! time the clock reaches a new step.

use std::time::Duration;

use otpd_core::otp::{HashAlgorithm, hotp, time_counter};

/// The user names, addressed by index `0..len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Users {
    /// `prefix{n}suffix` for n in 0..count; names are built on demand so that a
    /// million users cost no memory.
    Pattern {
        prefix: String,
        suffix: String,
        count: usize,
    },
    List(Vec<String>),
}

impl Users {
    pub fn pattern(pattern: &str, count: usize) -> Result<Users, String> {
        let Some((prefix, suffix)) = pattern.split_once("{n}") else {
            return Err(format!("--user-pattern {pattern:?} does not contain {{n}}"));
        };
        if count == 0 {
            return Err("--users must be at least 1".into());
        }
        Ok(Users::Pattern { prefix: prefix.to_owned(), suffix: suffix.to_owned(), count })
    }

    /// One name a line; blank lines and surrounding white space are ignored.
    pub fn from_lines(text: &str) -> Result<Users, String> {
        let names: Vec<String> =
            text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
        if names.is_empty() {
            return Err("the user file lists no users".into());
        }
        Ok(Users::List(names))
    }

    pub fn len(&self) -> usize {
        match self {
            Users::Pattern { count, .. } => *count,
            Users::List(names) => names.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn name(&self, index: usize) -> String {
        match self {
            Users::Pattern { prefix, suffix, .. } => format!("{prefix}{index}{suffix}"),
            Users::List(names) => names.get(index).cloned().unwrap_or_default(),
        }
    }
}

/// How each request's password is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passwords {
    Fixed(String),
    /// Each value is used once, in order; the run ends when they are used up.
    List {
        values: Vec<String>,
        next: usize,
    },
    /// Every user has the same key and its own counter.
    Hotp {
        key: Vec<u8>,
        digits: u32,
        counters: Vec<u64>,
    },
    /// `last_step` is the step each user last logged in with (u64::MAX: never);
    /// `window` is how many steps before and after the current one are used.
    Totp {
        key: Vec<u8>,
        digits: u32,
        step: u32,
        window: u64,
        last_step: Vec<u64>,
    },
}

impl Passwords {
    /// One password a line (a trailing CR is dropped, blank lines skipped).
    pub fn from_lines(text: &str) -> Result<Passwords, String> {
        let values: Vec<String> = text
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if values.is_empty() {
            return Err("the password file lists no passwords".into());
        }
        Ok(Passwords::List { values, next: 0 })
    }

    pub fn hotp(key: Vec<u8>, digits: u32, start: u64, users: usize) -> Passwords {
        Passwords::Hotp { key, digits, counters: vec![start; users] }
    }

    /// `window`: each user logs in with steps `now - window ..= now + window`
    /// (each once, in increasing order); 0 is the current step only.
    pub fn totp(key: Vec<u8>, digits: u32, step: u32, window: u64, users: usize) -> Passwords {
        Passwords::Totp { key, digits, step, window, last_step: vec![u64::MAX; users] }
    }
}

/// What the source has for the caller right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Request {
        user: usize,
        name: String,
        password: String,
    },
    /// The next user still has a request in flight; try again after a release.
    Busy,
    /// TOTP: every user has used every step the window allows now; try again after this long.
    Wait(Duration),
    /// The password list is used up.
    Exhausted,
}

/// Users taken strictly round robin, each with its password. With one-shot
/// passwords (a list, HOTP, TOTP) a user has at most one request in flight:
/// the server checks a user's codes in order, and a later code answered first
/// would make the earlier one a replay.
#[derive(Debug)]
pub struct Source {
    users: Users,
    passwords: Passwords,
    pin: String,
    cursor: usize,
    exclusive: bool,
    busy: Vec<bool>,
}

impl Source {
    /// `pin` is put in front of every password.
    pub fn new(users: Users, passwords: Passwords, pin: &str) -> Source {
        let exclusive = !matches!(passwords, Passwords::Fixed(_));
        let busy = if exclusive { vec![false; users.len()] } else { Vec::new() };
        Source { users, passwords, pin: pin.to_owned(), cursor: 0, exclusive, busy }
    }

    /// The next request at `now` (time since the Unix epoch, for TOTP).
    pub fn next(&mut self, now: Duration) -> Next {
        // Round robin over the users that have no request in flight: one
        // user waiting for a timeout must not hold up the others.
        let count = self.users.len().max(1);
        let Some(user) = (0..count)
            .map(|i| (self.cursor + i) % count)
            .find(|u| !self.busy.get(*u).copied().unwrap_or(false))
        else {
            return Next::Busy;
        };
        let code = match &mut self.passwords {
            Passwords::Fixed(text) => text.clone(),
            Passwords::List { values, next } => {
                let Some(value) = values.get(*next) else { return Next::Exhausted };
                *next += 1;
                value.clone()
            }
            Passwords::Hotp { key, digits, counters } => {
                let Some(counter) = counters.get_mut(user) else { return Next::Exhausted };
                let code = hotp(key, *counter, *digits, HashAlgorithm::Sha1);
                *counter = counter.saturating_add(1);
                code
            }
            Passwords::Totp { key, digits, step, window, last_step } => {
                let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
                let current = time_counter(secs, 0.0, *step);
                let Some(last) = last_step.get_mut(user) else { return Next::Exhausted };
                let earliest = current.saturating_sub(*window);
                let next = if *last == u64::MAX { earliest } else { last.saturating_add(1).max(earliest) };
                // Round robin: if this user has used up the window, so has every other user
                // since, and nobody may log in again before the next step.
                if next > current.saturating_add(*window) {
                    let next_start =
                        Duration::from_secs(current.saturating_add(1).saturating_mul(u64::from(*step)));
                    return Next::Wait(next_start.saturating_sub(now));
                }
                *last = next;
                hotp(key, next, *digits, HashAlgorithm::Sha1)
            }
        };
        if let Some(flag) = self.busy.get_mut(user) {
            *flag = self.exclusive;
        }
        self.cursor = (user + 1) % self.users.len().max(1);
        Next::Request { user, name: self.users.name(user), password: format!("{}{code}", self.pin) }
    }

    /// The request of `user` was answered or timed out.
    pub fn release(&mut self, user: usize) {
        if let Some(flag) = self.busy.get_mut(user) {
            *flag = false;
        }
    }

    /// The request of `user` timed out: most likely it was dropped unseen,
    /// so its HOTP code is sent again rather than skipped (a server that is
    /// shedding load would otherwise see users run past its counter window).
    pub fn release_unanswered(&mut self, user: usize) {
        if let Passwords::Hotp { counters, .. } = &mut self.passwords
            && self.exclusive
            && let Some(counter) = counters.get_mut(user)
        {
            *counter = counter.saturating_sub(1);
        }
        self.release(user);
    }

    /// Whether a user may have only one request in flight.
    pub fn exclusive(&self) -> bool {
        self.exclusive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_KEY: &[u8] = b"12345678901234567890";
    const NOW: Duration = Duration::from_secs(59);

    fn request(next: Next) -> (usize, String, String) {
        match next {
            Next::Request { user, name, password } => (user, name, password),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn pattern_users() {
        let users = Users::pattern("user{n}@corp", 3).unwrap();
        assert_eq!(users.len(), 3);
        assert_eq!(users.name(0), "user0@corp");
        assert_eq!(users.name(2), "user2@corp");
        assert!(Users::pattern("user", 3).unwrap_err().contains("{n}"));
        assert!(Users::pattern("u{n}", 0).is_err());
    }

    #[test]
    fn listed_users() {
        let users = Users::from_lines("alice\n\n  bob \r\n").unwrap();
        assert_eq!(users, Users::List(vec!["alice".into(), "bob".into()]));
        assert!(Users::from_lines("\n \n").is_err());
    }

    #[test]
    fn fixed_password_round_robin_without_limit() {
        let mut source = Source::new(Users::pattern("u{n}", 2).unwrap(), Passwords::Fixed("pw".into()), "12");
        assert!(!source.exclusive());
        let names: Vec<(usize, String, String)> = (0..5).map(|_| request(source.next(NOW))).collect();
        assert_eq!(names[0], (0, "u0".into(), "12pw".into()));
        assert_eq!(names[1].1, "u1");
        // Nothing was released, yet fixed passwords may overlap.
        assert_eq!(names[4].1, "u0");
    }

    #[test]
    fn password_list_is_used_once() {
        let passwords = Passwords::from_lines("111\r\n222\n\n333\n").unwrap();
        let mut source = Source::new(Users::from_lines("a\nb").unwrap(), passwords, "");
        assert_eq!(request(source.next(NOW)), (0, "a".into(), "111".into()));
        assert_eq!(request(source.next(NOW)), (1, "b".into(), "222".into()));
        assert_eq!(source.next(NOW), Next::Busy);
        source.release(0);
        assert_eq!(request(source.next(NOW)), (0, "a".into(), "333".into()));
        source.release(1);
        assert_eq!(source.next(NOW), Next::Exhausted);
        assert!(Passwords::from_lines("\n").is_err());
    }

    #[test]
    fn busy_users_are_skipped_and_a_timed_out_code_is_sent_again() {
        // RFC 4226 appendix D: 755224 (0), 287082 (1), 359152 (2).
        let mut source =
            Source::new(Users::pattern("u{n}", 3).unwrap(), Passwords::hotp(RFC_KEY.to_vec(), 6, 0, 3), "");
        assert_eq!(request(source.next(NOW)), (0, "u0".into(), "755224".into()));
        assert_eq!(request(source.next(NOW)), (1, "u1".into(), "755224".into()));
        source.release(1);
        // u2 is next; then u0 is still busy, so u1 comes before it.
        assert_eq!(request(source.next(NOW)).0, 2);
        assert_eq!(request(source.next(NOW)), (1, "u1".into(), "287082".into()));
        // u0's request timed out: its code is sent again.
        source.release_unanswered(0);
        assert_eq!(request(source.next(NOW)), (0, "u0".into(), "755224".into()));
        source.release(0);
        assert_eq!(request(source.next(NOW)), (0, "u0".into(), "287082".into()));
    }

    #[test]
    fn hotp_counters_per_user() {
        // RFC 4226 appendix D: counters 0..3.
        let mut source =
            Source::new(Users::pattern("u{n}", 2).unwrap(), Passwords::hotp(RFC_KEY.to_vec(), 6, 1, 2), "99");
        assert!(source.exclusive());
        assert_eq!(request(source.next(NOW)), (0, "u0".into(), "99287082".into()));
        assert_eq!(request(source.next(NOW)), (1, "u1".into(), "99287082".into()));
        // u0's request is still in flight.
        assert_eq!(source.next(NOW), Next::Busy);
        source.release(0);
        assert_eq!(request(source.next(NOW)).2, "99359152");
        source.release(1);
        assert_eq!(request(source.next(NOW)).2, "99359152");
        source.release(0);
        assert_eq!(request(source.next(NOW)).2, "99969429");
    }

    #[test]
    fn totp_once_per_user_and_step() {
        // RFC 6238 appendix B: T = 59 s, SHA1, 8 digits gives 94287082.
        let mut source = Source::new(
            Users::pattern("u{n}", 2).unwrap(),
            Passwords::totp(RFC_KEY.to_vec(), 8, 30, 0, 2),
            "",
        );
        assert_eq!(request(source.next(NOW)).2, "94287082");
        source.release(0);
        assert_eq!(request(source.next(NOW)).2, "94287082");
        source.release(1);
        // Both users logged in during step 1 (30..60 s): wait 1 s for step 2.
        assert_eq!(source.next(NOW), Next::Wait(Duration::from_secs(1)));
        let later = Duration::from_secs(60);
        let (user, _, password) = request(source.next(later));
        assert_eq!(user, 0);
        assert_eq!(password, hotp(RFC_KEY, 2, 8, HashAlgorithm::Sha1));
    }

    #[test]
    fn totp_window_uses_each_step_once_in_order() {
        // At 59 s the current step is 1; a window of 1 gives steps 0, 1, 2 to each user.
        let users = Users::pattern("u{n}", 2).unwrap();
        let mut source = Source::new(users, Passwords::totp(RFC_KEY.to_vec(), 8, 30, 1, 2), "");
        let code = |step: u64| hotp(RFC_KEY, step, 8, HashAlgorithm::Sha1);
        for step in 0..3 {
            for user in 0..2 {
                assert_eq!(request(source.next(NOW)), (user, format!("u{user}"), code(step)));
                source.release(user);
            }
        }
        // Both users used steps 0..=2: nothing more before step 2 begins at 60 s.
        assert_eq!(source.next(NOW), Next::Wait(Duration::from_secs(1)));
        // At 60 s the window is 1..=3, and only step 3 is newer than what was used.
        let later = Duration::from_secs(60);
        assert_eq!(request(source.next(later)), (0, "u0".into(), code(3)));
        source.release(0);
        assert_eq!(request(source.next(later)), (1, "u1".into(), code(3)));
        source.release(1);
        assert_eq!(source.next(later), Next::Wait(Duration::from_secs(30)));
    }

    #[test]
    fn totp_window_starts_late_users_at_the_window_edge() {
        // A user's first login uses the window's first step, now - window.
        let mut source = Source::new(
            Users::pattern("u{n}", 1).unwrap(),
            Passwords::totp(RFC_KEY.to_vec(), 6, 30, 2, 1),
            "",
        );
        let at = Duration::from_secs(30 * 100 + 5);
        assert_eq!(request(source.next(at)).2, hotp(RFC_KEY, 98, 6, HashAlgorithm::Sha1));
        source.release(0);
        // After a long pause the last step used (98) is far behind: on from the window's start.
        let much_later = Duration::from_secs(30 * 200);
        assert_eq!(request(source.next(much_later)).2, hotp(RFC_KEY, 198, 6, HashAlgorithm::Sha1));
        source.release(0);
        assert_eq!(request(source.next(much_later)).2, hotp(RFC_KEY, 199, 6, HashAlgorithm::Sha1));
        // Near the epoch the window is cut at step 0.
        let mut early = Source::new(
            Users::pattern("u{n}", 1).unwrap(),
            Passwords::totp(RFC_KEY.to_vec(), 6, 30, 5, 1),
            "",
        );
        assert_eq!(request(early.next(NOW)).2, hotp(RFC_KEY, 0, 6, HashAlgorithm::Sha1));
    }
}
