//! What `otpd token import` and `otpd token init --otpkey` read: the CSV
//! token file (from memory and line by line from a reader, which also sees
//! bytes that are not UTF-8) and the hex key. Errors are expected; panics
//! are bugs, and both parsers must agree.
//!
//! otpd reads no otpauth:// URIs or PSKC files (it only writes otpauth
//! URIs), so the key parser is the other input of this kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd_core::admin::{parse_otpkey, validate_serial};
use otpd_core::import::{parse_csv, parse_reader};

fuzz_target!(|data: &[u8]| {
    let from_reader = parse_reader(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let from_text = parse_csv(text);
        match (&from_text, &from_reader) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.len(), b.len());
                for (x, y) in a.iter().zip(b) {
                    assert_eq!(
                        (x.line(), x.serial(), x.token_type()),
                        (y.line(), y.serial(), y.token_type())
                    );
                    assert!(validate_serial(x.serial()).is_ok());
                    assert!(matches!(x.digits(), 6 | 8));
                    assert!(matches!(x.timestep(), 30 | 60));
                }
            }
            (Err(a), Err(b)) => assert_eq!(a.line, b.line, "{a} / {b}"),
            (a, b) => {
                panic!("parse_csv and parse_reader disagree: {:?} / {:?}", a.as_ref().err(), b.as_ref().err())
            }
        }
        if let Ok(key) = parse_otpkey(text) {
            assert!((10..=128).contains(&key.len()));
            assert_eq!(key.len() * 2, text.trim().len());
        }
    } else if let Ok(rows) = &from_reader {
        // Only blank and comment lines may hold bytes that are not UTF-8...
        // which parse_reader refuses too: so nothing parses.
        panic!("parse_reader accepted {} rows of text that is not UTF-8", rows.len());
    }
});
