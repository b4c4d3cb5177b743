//! Any bytes as a nexo request and as a response: no panic; whatever
//! reads writes JSON that reads back to the same message; every failure
//! has an answer that serializes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexo::inbound::{Security, parse_request, parse_response, screen};
use nexo::message::ToJson;
use time::OffsetDateTime;

fuzz_target!(|data: &[u8]| {
    match parse_request(data, Security::Plain) {
        Ok(read) => {
            let json = read.message.to_json();
            let again = parse_request(json.as_bytes(), Security::Plain).expect("re-read");
            assert_eq!(again.message, read.message);
            if let Err(refusal) = screen(&read.message) {
                let _ = refusal
                    .reply(&read.message, OffsetDateTime::UNIX_EPOCH)
                    .to_json();
            }
        }
        Err(e) => {
            let _ = e.reply("fuzz", data, OffsetDateTime::UNIX_EPOCH).to_json();
        }
    }
    if let Ok(read) = parse_response(data, Security::Plain) {
        let json = read.message.to_json();
        let again = parse_response(json.as_bytes(), Security::Plain).expect("re-read");
        assert_eq!(again.message, read.message);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = nexo::Amount::from_json_number(text);
    }
});
