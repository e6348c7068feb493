//! The PAM socket's frames (`otpd_core::local_socket`), on arbitrary bytes:
//! the daemon reads requests from any root process and the module reads
//! replies. Reading never panics; whatever reads as a message encodes to a
//! frame that reads back as the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd_core::local_socket::{Reply, Request, encode, read_frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = read_frame::<Request>(&mut &data[..]) {
        let frame = encode(&request);
        let again: Request = read_frame(&mut &frame[..]).expect("an encoded request reads back");
        assert_eq!(*encode(&again), *frame);
    }
    if let Ok(reply) = read_frame::<Reply>(&mut &data[..]) {
        let frame = encode(&reply);
        assert_eq!(read_frame::<Reply>(&mut &frame[..]).expect("an encoded reply reads back"), reply);
    }
});
