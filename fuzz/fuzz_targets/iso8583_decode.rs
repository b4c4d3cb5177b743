//! Any bytes through both dialects' decoders, the frame checker and the
//! BER-TLV parser: no panic, and whatever decodes re-encodes and decodes
//! to the same message.
#![no_main]

use iso8583::dialect::ALL;
use iso8583::{FrameLayout, tlv};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for dialect in ALL {
        if let Ok((msg, _scope)) = dialect.decode_with_mac_scope(data) {
            let wire = dialect.encode(&msg).expect("a decoded message encodes");
            assert_eq!(dialect.decode(&wire).expect("re-encoded message decodes"), msg);
        }
    }
    if let Ok(Some(n)) = FrameLayout::CUP.check(data) {
        let _ = FrameLayout::CUP.parse(&data[..n]);
    }
    for object in tlv::iter(data).take(64) {
        if object.is_err() {
            break;
        }
    }
    let _ = tlv::find(data, 0x9F26);
});
