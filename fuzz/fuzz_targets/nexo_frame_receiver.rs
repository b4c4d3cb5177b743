//! Any bytes, in chunks at any times, through the serial frame receiver
//! and a whole link: no panic, memory within one frame, every payload
//! delivered within the bound, nothing left buffered once the line is
//! silent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nexo::serial::{Config, FRAME_OVERHEAD, Link, LinkEvent, Receiver, RxEvent};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the payload bound, each chunk is led by a
    // length and a pause.
    let Some((&bound, mut rest)) = data.split_first() else {
        return;
    };
    let config = Config {
        max_payload: 1 + usize::from(bound) * 64,
        ..Config::default()
    };
    let mut rx = Receiver::new(config);
    let mut link = Link::new(config);
    let _ = link.send(b"{}");
    let mut now = 0u64;
    while let [len, pause, tail @ ..] = rest {
        let (chunk, next) = tail.split_at(usize::from(*len).min(tail.len()));
        rest = next;
        now += u64::from(*pause) * 8;
        rx.handle_input(now, chunk);
        link.handle_input(now, chunk);
        assert!(rx.buffered() <= config.max_payload + FRAME_OVERHEAD);
        while let Some(event) = rx.poll_event() {
            if let RxEvent::Frame(payload) = event {
                assert!(!payload.is_empty() && payload.len() <= config.max_payload);
            }
        }
        while rx.poll_transmit().is_some() {}
        while link.poll_transmit(now).is_some() {}
        while let Some(event) = link.poll_event() {
            if let LinkEvent::Received(payload) = event {
                assert!(payload.len() <= config.max_payload);
            }
        }
    }
    rx.handle_timeout(now + config.inter_byte_timeout_ms);
    assert_eq!(rx.buffered(), 0);
});
