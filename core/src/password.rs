//! Random passwords for the lost-token process (spec section 5): the temporary `pw` token that
//! replaces a lost one gets a password of `losttoken_PW_length` characters drawn from the classes
//! named in `losttoken_PW_contents`. The policy code calls [`validate_contents`] when it loads a
//! policy and [`generate`] when a token is reported lost.
//!
//! Deviations from privacyIDEA (spec 5, step 3): unknown class letters are refused instead of
//! crashing, and every requested class appears at least once when the length allows it.

use zeroize::Zeroizing;

/// Shortest password [`generate`] makes.
pub const MIN_LENGTH: usize = 1;
/// Longest password [`generate`] makes; far above the policy's limit of 31, it only bounds work.
pub const MAX_LENGTH: usize = 256;

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";
const SPECIAL: &[u8] = b"!#$%&()*+,-./:;<=>?@[]^_";
const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// The classes by letter. Indexes into this table are used as class ids below.
const CLASSES: [(char, &[u8]); 5] =
    [('c', LOWER), ('C', UPPER), ('n', DIGITS), ('s', SPECIAL), ('8', BASE58)];

/// Weights of an empty contents value: `[a-zA-Z0-9]`, each character once.
const DEFAULT_COUNTS: [usize; 5] = [1, 1, 1, 0, 0];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentsError {
    #[error("unknown character class {letter:?} in password contents (known: c C n s 8)")]
    UnknownClass { letter: char },
    #[error("password length {length} is out of range (1 to 256)")]
    LengthOutOfRange { length: usize },
    #[error("the system random number generator failed: {0}")]
    Random(getrandom::Error),
}

impl From<getrandom::Error> for ContentsError {
    fn from(e: getrandom::Error) -> Self {
        ContentsError::Random(e)
    }
}

/// Checks a contents value (letters c, C, n, s, 8; empty means [a-zA-Z0-9]).
pub fn validate_contents(contents: &str) -> Result<(), ContentsError> {
    class_counts(contents).map(|_| ())
}

/// A random password of `length` (1..=256) characters whose alphabet is the union of the classes
/// in `contents` (c = a-z, C = A-Z, n = 0-9, s = `!#$%&()*+,-./:;<=>?@[]^_`, 8 = Base58). Letters
/// are cumulative: a repeated letter adds its class again, making its characters likelier, and
/// overlapping classes (8 with c, C, n) make the shared characters likelier too.
///
/// When `length` is at least the number of distinct requested classes, each of them appears at
/// least once: one character of each class goes to its own random position, the other positions
/// are drawn from the whole pool. An empty `contents` requests no class: every character is drawn
/// uniformly from `[a-zA-Z0-9]`, as privacyIDEA's default does.
pub fn generate(length: usize, contents: &str) -> Result<Zeroizing<String>, ContentsError> {
    if !(MIN_LENGTH..=MAX_LENGTH).contains(&length) {
        return Err(ContentsError::LengthOutOfRange { length });
    }
    let counts = class_counts(contents)?;
    let requested: Vec<usize> = (0..CLASSES.len()).filter(|&i| counts[i] > 0).collect();
    let pool = if requested.is_empty() { DEFAULT_COUNTS } else { counts };

    let mut chars = Zeroizing::new(Vec::with_capacity(length));
    for _ in 0..length {
        chars.push(pick_from_pool(&pool)?);
    }
    if length >= requested.len() {
        // A partial Fisher-Yates shuffle of the positions: the first `requested.len()` entries
        // become distinct, uniformly chosen positions, one per requested class.
        let mut positions: Zeroizing<Vec<usize>> = Zeroizing::new((0..length).collect());
        for (i, &class) in requested.iter().enumerate() {
            let j = i + below_usize(length - i)?;
            positions.swap(i, j);
            chars[positions[i]] = pick(CLASSES[class].1)?;
        }
    }

    // Every byte comes from the ASCII tables above, so each one is a whole char.
    let mut password = Zeroizing::new(String::with_capacity(length));
    password.extend(chars.iter().map(|&b| char::from(b)));
    Ok(password)
}

/// How often each class is named in `contents`, in the order of [`CLASSES`].
fn class_counts(contents: &str) -> Result<[usize; 5], ContentsError> {
    let mut counts = [0usize; 5];
    for letter in contents.chars() {
        let class =
            CLASSES.iter().position(|&(l, _)| l == letter).ok_or(ContentsError::UnknownClass { letter })?;
        counts[class] = counts[class].saturating_add(1);
    }
    Ok(counts)
}

/// One character from the pool in which class `k` is present `pool[k]` times. u128 arithmetic
/// keeps the pool size exact whatever the length of the contents value.
fn pick_from_pool(pool: &[usize; 5]) -> Result<u8, getrandom::Error> {
    let sizes = CLASSES.iter().zip(pool).map(|(&(_, alphabet), &n)| n as u128 * alphabet.len() as u128);
    let total: u128 = sizes.clone().sum();
    let mut r = below(total)?;
    for (&(_, alphabet), size) in CLASSES.iter().zip(sizes) {
        if r < size {
            // The block of a class is its alphabet repeated `n` times, so `r % len` is uniform.
            return Ok(alphabet[(r % alphabet.len() as u128) as usize]);
        }
        r -= size;
    }
    // Unreachable: r < total, the sum of the sizes. Fall back to a uniform draw rather than panic.
    pick(LOWER)
}

/// One character drawn uniformly from `alphabet` (never empty here).
fn pick(alphabet: &[u8]) -> Result<u8, getrandom::Error> {
    let i = below_usize(alphabet.len())?;
    Ok(alphabet.get(i).copied().unwrap_or(b'a'))
}

fn below_usize(n: usize) -> Result<usize, getrandom::Error> {
    // The result is below n, so it fits back into usize.
    below(n as u128).map(|r| r as usize)
}

/// A uniform random number in `0..n` (0 when n is 0 or 1). Rejection sampling: drawing below the
/// largest multiple of `n` that fits avoids the bias of a plain `random % n`.
fn below(n: u128) -> Result<u128, getrandom::Error> {
    if n <= 1 {
        return Ok(0);
    }
    // 2^128 mod n: the number of values at the bottom of the range to reject.
    let threshold = n.wrapping_neg() % n;
    loop {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        let r = u128::from_le_bytes(bytes);
        if r >= threshold {
            return Ok(r % n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_in(password: &str, alphabet: &[u8]) -> bool {
        password.bytes().all(|b| alphabet.contains(&b))
    }

    fn any_in(password: &str, alphabet: &[u8]) -> bool {
        password.bytes().any(|b| alphabet.contains(&b))
    }

    #[test]
    fn class_tables() {
        assert_eq!(LOWER.len(), 26);
        assert_eq!(UPPER.len(), 26);
        assert_eq!(DIGITS.len(), 10);
        assert_eq!(SPECIAL.len(), 24);
        assert_eq!(BASE58.len(), 58);
        for b in b"0OIl" {
            assert!(!BASE58.contains(b), "{} is not Base58", char::from(*b));
        }
    }

    #[test]
    fn each_class_alone() {
        for (letter, alphabet) in CLASSES {
            let contents = letter.to_string();
            for _ in 0..50 {
                let p = generate(40, &contents).unwrap();
                assert_eq!(p.len(), 40);
                assert!(all_in(&p, alphabet), "{contents}: {}", *p);
            }
        }
    }

    #[test]
    fn combinations_stay_in_their_union() {
        let union: Vec<u8> = [LOWER, DIGITS].concat();
        for _ in 0..50 {
            let p = generate(30, "cn").unwrap();
            assert!(all_in(&p, &union));
            assert!(any_in(&p, LOWER) && any_in(&p, DIGITS));
        }
        let union: Vec<u8> = [UPPER, SPECIAL].concat();
        for _ in 0..50 {
            let p = generate(30, "sC").unwrap();
            assert!(all_in(&p, &union));
            assert!(any_in(&p, UPPER) && any_in(&p, SPECIAL));
        }
    }

    #[test]
    fn every_requested_class_appears() {
        for _ in 0..2000 {
            let p = generate(4, "cCns").unwrap();
            assert_eq!(p.len(), 4);
            for alphabet in [LOWER, UPPER, DIGITS, SPECIAL] {
                assert!(any_in(&p, alphabet), "{} lacks a class", *p);
            }
        }
        // Repeated letters do not count as extra classes: length 2 covers "ccn".
        for _ in 0..500 {
            let p = generate(2, "ccn").unwrap();
            assert!(any_in(&p, LOWER) && any_in(&p, DIGITS), "{}", *p);
        }
    }

    #[test]
    fn too_short_for_the_guarantee() {
        let union: Vec<u8> = [LOWER, UPPER, DIGITS, SPECIAL].concat();
        for _ in 0..200 {
            let p = generate(1, "cCns").unwrap();
            assert_eq!(p.len(), 1);
            assert!(all_in(&p, &union));
        }
        assert_eq!(generate(3, "cCns8").unwrap().len(), 3);
    }

    #[test]
    fn repeated_letters_weigh_more() {
        // Ten times n and once c: digits are 10 * 10 = 100 of 126 pool entries, about 79 %.
        let contents = "n".repeat(10) + "c";
        let mut digits = 0;
        let mut total = 0;
        for _ in 0..100 {
            let p = generate(100, &contents).unwrap();
            digits += p.bytes().filter(u8::is_ascii_digit).count();
            total += p.len();
        }
        let share = digits as f64 / total as f64;
        assert!((0.72..0.86).contains(&share), "digit share {share}");
    }

    #[test]
    fn unknown_letters_are_refused() {
        let err = generate(8, "cx").unwrap_err();
        assert_eq!(err, ContentsError::UnknownClass { letter: 'x' });
        let msg = err.to_string();
        assert!(msg.contains("'x'") && msg.contains("c C n s 8"), "{msg}");
        assert_eq!(validate_contents("x"), Err(ContentsError::UnknownClass { letter: 'x' }));
        assert!(validate_contents("C n").is_err());
        assert!(validate_contents("é").is_err());
        for ok in ["", "c", "C", "n", "s", "8", "cCns8", "ccnn"] {
            assert_eq!(validate_contents(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn length_range() {
        for bad in [0, 257, usize::MAX] {
            assert_eq!(generate(bad, "c"), Err(ContentsError::LengthOutOfRange { length: bad }));
        }
        assert_eq!(generate(256, "cCns8").unwrap().len(), 256);
        assert!(generate(0, "c").unwrap_err().to_string().contains("1 to 256"));
    }

    #[test]
    fn default_pool_is_alphanumeric() {
        let union: Vec<u8> = [LOWER, UPPER, DIGITS].concat();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let p = generate(32, "").unwrap();
            assert!(all_in(&p, &union));
            seen.extend(p.bytes());
        }
        // 6400 draws over 62 characters: every one of them shows up.
        assert_eq!(seen.len(), 62);
    }

    #[test]
    fn lost_token_default() {
        let p = generate(16, "8").unwrap();
        assert_eq!(p.len(), 16);
        assert!(all_in(&p, BASE58));
        assert_ne!(*p, *generate(16, "8").unwrap());
    }

    #[test]
    fn below_is_in_range() {
        assert_eq!(below(0).unwrap(), 0);
        assert_eq!(below(1).unwrap(), 0);
        for n in [2u128, 3, 58, 1 << 64, u128::MAX] {
            for _ in 0..100 {
                assert!(below(n).unwrap() < n);
            }
        }
    }

    #[test]
    fn huge_contents_values_do_not_overflow() {
        let contents = "8".repeat(100_000) + "s";
        let p = generate(64, &contents).unwrap();
        assert!(any_in(&p, SPECIAL));
    }
}
