//! The RADIUS codec on arbitrary datagrams: everything the server does with
//! a request (parse, Message-Authenticator, User-Password, attribute reads,
//! the response) and what a client does with a response. Nothing may panic,
//! and what otpd produces must itself parse and verify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd_daemon::radius::codec::{
    MAX_PACKET, MessageAuthenticator, Packet, attr, code, encode_request, encode_response, verify_response,
};

/// The FreeRADIUS test secret (the corpus was captured with it), an empty
/// one, and one longer than HMAC-MD5's 64-byte block.
const SECRETS: [&[u8]; 3] = [b"testing123", b"", &[0x5a; 100]];

fuzz_target!(|data: &[u8]| {
    for secret in SECRETS {
        // As a client reading a response to a request with this authenticator.
        let _ = verify_response(data, &[0; 16], secret);
        if let Some(auth) = data.get(4..20).and_then(|a| <[u8; 16]>::try_from(a).ok()) {
            let _ = verify_response(data, &auth, secret);
        }
    }

    let Ok(request) = Packet::parse(data) else { return };
    let raw = request.raw();
    assert!((20..=MAX_PACKET).contains(&raw.len()) && raw.len() <= data.len());
    assert_eq!(raw, &data[..raw.len()]);

    // Attribute reads, as the server's handler does them.
    for kind in [
        attr::USER_NAME,
        attr::USER_PASSWORD,
        attr::CHAP_PASSWORD,
        attr::STATE,
        attr::CALLING_STATION_ID,
        attr::NAS_IDENTIFIER,
        attr::NAS_IP_ADDRESS,
        attr::NAS_IPV6_ADDRESS,
        attr::MESSAGE_AUTHENTICATOR,
    ] {
        let first = request.attr(kind);
        assert_eq!(first, request.attrs(kind).next());
        for value in request.attrs(kind) {
            assert!(value.len() <= 253);
        }
    }
    let proxy_states = request.attrs(attr::PROXY_STATE).count();

    for secret in SECRETS {
        let verdict = request.message_authenticator(secret);
        assert_eq!(
            verdict == MessageAuthenticator::Missing,
            request.attr(attr::MESSAGE_AUTHENTICATOR).is_none()
        );

        let password = request.user_password(secret);
        if let Ok(password) = &password {
            assert!(password.len() <= 128);
            assert_ne!(password.last(), Some(&0));
            // Hiding it again under a fresh request gives it back.
            let others: Vec<(u8, &[u8])> = [attr::USER_NAME, attr::STATE]
                .into_iter()
                .filter_map(|kind| request.attr(kind).map(|value| (kind, value)))
                .collect();
            let again = encode_request(
                code::ACCESS_REQUEST,
                request.identifier,
                request.authenticator,
                &others,
                Some(password),
                secret,
                true,
            )
            .expect("a decoded password and two attributes fit a request");
            let reparsed = Packet::parse(&again).expect("otpd's own request parses");
            assert_eq!(reparsed.message_authenticator(secret), MessageAuthenticator::Valid);
            assert_eq!(
                reparsed.user_password(secret).expect("hidden by otpd").as_slice(),
                password.as_slice()
            );
            assert_eq!(reparsed.attr(attr::USER_NAME), request.attr(attr::USER_NAME));
        }

        // Every answer the server can give, echoing request data the way a
        // Reply-Message or State might.
        let echo = request.attr(attr::USER_NAME).unwrap_or_default();
        let state = request.attr(attr::STATE).unwrap_or(b"state");
        for (answer, attributes) in [
            (code::ACCESS_ACCEPT, vec![(attr::REPLY_MESSAGE, &b"otpd access granted"[..])]),
            (code::ACCESS_REJECT, vec![(attr::REPLY_MESSAGE, echo)]),
            (code::ACCESS_CHALLENGE, vec![(attr::STATE, state), (attr::REPLY_MESSAGE, raw)]),
        ] {
            let response = encode_response(&request, answer, &attributes, secret);
            assert!(response.len() <= MAX_PACKET);
            let parsed =
                verify_response(&response, &request.authenticator, secret).expect("otpd's response verifies");
            assert_eq!((parsed.code, parsed.identifier), (answer, request.identifier));
            assert!(parsed.attr(attr::MESSAGE_AUTHENTICATOR).is_some());
            assert!(parsed.attrs(attr::PROXY_STATE).count() <= proxy_states);
        }
    }
});
