//! The serial framing: the frame layout and CRC against independent
//! values, every path of the sender, the receiver's recovery from noise,
//! corruption and silence, and two links talking over a faulty line.

use nexo::serial::{
    ACK, Config, ETX, FRAME_OVERHEAD, FrameFault, Link, LinkEvent, NAK, Receiver, RxEvent, STX,
    SendError, Sender, TxEvent, encode_frame, frame_crc,
};
use proptest::prelude::*;

const ACK_TIMEOUT: u64 = 2_000;
const INTER_BYTE: u64 = 500;

fn drain(rx: &mut Receiver) -> (Vec<RxEvent>, Vec<u8>) {
    let events = std::iter::from_fn(|| rx.poll_event()).collect();
    let replies = std::iter::from_fn(|| rx.poll_transmit()).collect();
    (events, replies)
}

#[test]
fn crc_is_ccitt_false() {
    // The CRC catalogue's check value of CRC-16/CCITT-FALSE (IBM-3740).
    assert_eq!(frame_crc(b"123456789"), 0x29B1);
    // A whole frame; its CRC computed independently with Python's
    // binascii.crc_hqx(b"\x00\x02{}\x03", 0xFFFF) = 0x9AFB.
    assert_eq!(
        encode_frame(b"{}").unwrap(),
        [STX, 0x00, 0x02, b'{', b'}', ETX, 0x9A, 0xFB]
    );
}

#[test]
fn frames_carry_up_to_65535_bytes() {
    let big = vec![b'x'; 65_535];
    let frame = encode_frame(&big).unwrap();
    assert_eq!(frame.len(), 65_535 + FRAME_OVERHEAD);
    assert_eq!(&frame[1..3], &[0xFF, 0xFF]);
    assert_eq!(
        encode_frame(&[0; 65_536]),
        Err(SendError::TooLarge {
            len: 65_536,
            max: 65_535
        })
    );
    assert_eq!(encode_frame(b""), Err(SendError::Empty));
    let mut rx = Receiver::new(Config::default());
    rx.handle_input(0, &frame);
    assert_eq!(drain(&mut rx), (vec![RxEvent::Frame(big)], vec![ACK]));
}

// ---- sender ----

#[test]
fn sender_delivered_on_ack() {
    let mut tx = Sender::new(Config::default());
    tx.send(b"{\"a\":1}").unwrap();
    assert_eq!(
        tx.poll_timeout(),
        None,
        "no timer before the frame is written"
    );
    let frame = tx.poll_transmit(100).unwrap();
    assert_eq!(frame, encode_frame(b"{\"a\":1}").unwrap());
    assert_eq!(tx.poll_transmit(100), None);
    assert_eq!(tx.poll_timeout(), Some(100 + ACK_TIMEOUT));
    assert_eq!(tx.send(b"next"), Err(SendError::Busy));
    tx.handle_ack();
    assert_eq!(tx.poll_event(), Some(TxEvent::Delivered));
    assert!(tx.is_idle());
    assert_eq!(tx.poll_timeout(), None);
    tx.send(b"next").unwrap();
}

#[test]
fn sender_retransmits_on_nak_then_delivers() {
    let mut tx = Sender::new(Config::default());
    tx.send(b"payload").unwrap();
    let first = tx.poll_transmit(0).unwrap();
    tx.handle_nak();
    assert_eq!(tx.poll_timeout(), None, "the retransmission is due at once");
    let again = tx.poll_transmit(10).unwrap();
    assert_eq!(again, first);
    assert_eq!(tx.poll_timeout(), Some(10 + ACK_TIMEOUT));
    tx.handle_ack();
    assert_eq!(tx.poll_event(), Some(TxEvent::Delivered));
}

#[test]
fn sender_retransmits_on_timeout() {
    let mut tx = Sender::new(Config::default());
    tx.send(b"payload").unwrap();
    let first = tx.poll_transmit(0).unwrap();
    tx.handle_timeout(ACK_TIMEOUT - 1);
    assert_eq!(tx.poll_transmit(ACK_TIMEOUT - 1), None, "not yet due");
    tx.handle_timeout(ACK_TIMEOUT);
    assert_eq!(tx.poll_transmit(ACK_TIMEOUT), Some(first));
    tx.handle_ack();
    assert_eq!(tx.poll_event(), Some(TxEvent::Delivered));
}

#[test]
fn sender_gives_up_after_three_retransmissions() {
    // Timeouts only, NAKs only, and both mixed: four writes, then give up.
    for pattern in [[false; 4], [true; 4], [true, false, true, false]] {
        let mut tx = Sender::new(Config::default());
        tx.send(b"payload").unwrap();
        let mut now = 0;
        for nak in pattern {
            assert!(tx.poll_transmit(now).is_some());
            assert_eq!(tx.poll_event(), None);
            if nak {
                tx.handle_nak();
            } else {
                now += ACK_TIMEOUT;
                tx.handle_timeout(now);
            }
        }
        assert_eq!(tx.poll_transmit(now), None);
        assert_eq!(tx.poll_event(), Some(TxEvent::GaveUp { transmissions: 4 }));
        assert!(tx.is_idle());
        assert_eq!(tx.poll_timeout(), None);
        // A late ACK changes nothing; the next message goes.
        tx.handle_ack();
        assert_eq!(tx.poll_event(), None);
        tx.send(b"next").unwrap();
    }
}

#[test]
fn sender_retransmission_count_is_configurable() {
    let config = Config {
        max_retransmissions: 0,
        ..Config::default()
    };
    let mut tx = Sender::new(config);
    tx.send(b"payload").unwrap();
    tx.poll_transmit(0).unwrap();
    tx.handle_nak();
    assert_eq!(tx.poll_event(), Some(TxEvent::GaveUp { transmissions: 1 }));
}

#[test]
fn sender_ignores_stray_answers_and_accepts_a_late_ack() {
    let mut tx = Sender::new(Config::default());
    tx.handle_ack();
    tx.handle_nak();
    assert_eq!(tx.poll_event(), None);
    tx.send(b"payload").unwrap();
    // An ACK before anything was written is stray.
    tx.handle_ack();
    assert_eq!(tx.poll_event(), None);
    tx.poll_transmit(0).unwrap();
    // A NAK (from noise) queues a retransmission; the ACK of the first
    // write then arrives: delivered, nothing written again.
    tx.handle_nak();
    tx.handle_ack();
    assert_eq!(tx.poll_event(), Some(TxEvent::Delivered));
    assert_eq!(tx.poll_transmit(1), None);
}

#[test]
fn sender_refuses_what_it_cannot_frame() {
    let mut tx = Sender::new(Config {
        max_payload: 16,
        ..Config::default()
    });
    assert_eq!(tx.send(b""), Err(SendError::Empty));
    assert_eq!(
        tx.send(&[1; 17]),
        Err(SendError::TooLarge { len: 17, max: 16 })
    );
    tx.send(&[1; 16]).unwrap();
}

// ---- receiver ----

#[test]
fn receiver_acks_a_frame_fed_byte_by_byte() {
    let mut rx = Receiver::new(Config::default());
    let frame = encode_frame(b"hello").unwrap();
    for (i, byte) in frame.iter().enumerate() {
        rx.handle_input(i as u64 * 10, &[*byte]);
        if i + 1 < frame.len() {
            assert_eq!(rx.poll_event(), None);
            assert_eq!(rx.poll_timeout(), Some(i as u64 * 10 + INTER_BYTE));
        }
    }
    assert_eq!(
        drain(&mut rx),
        (vec![RxEvent::Frame(b"hello".to_vec())], vec![ACK])
    );
    assert_eq!(rx.poll_timeout(), None);
    assert_eq!(rx.buffered(), 0);
}

#[test]
fn receiver_naks_a_bad_crc_and_takes_the_next_frame() {
    let mut rx = Receiver::new(Config::default());
    let mut bad = encode_frame(b"hello").unwrap();
    bad[4] ^= 0x20;
    rx.handle_input(0, &bad);
    let (events, replies) = drain(&mut rx);
    assert!(
        matches!(events[..], [RxEvent::Discarded(FrameFault::Crc { .. })]),
        "{events:?}"
    );
    assert_eq!(replies, [NAK]);
    rx.handle_input(1, &encode_frame(b"hello").unwrap());
    assert_eq!(
        drain(&mut rx),
        (vec![RxEvent::Frame(b"hello".to_vec())], vec![ACK])
    );
}

#[test]
fn receiver_refuses_an_overlong_length_before_buffering() {
    let mut rx = Receiver::new(Config {
        max_payload: 1024,
        ..Config::default()
    });
    rx.handle_input(0, &[STX, 0x04, 0x01]);
    let (events, replies) = drain(&mut rx);
    assert_eq!(
        events,
        [RxEvent::Discarded(FrameFault::Length {
            len: 1025,
            max: 1024
        })]
    );
    assert_eq!(replies, [NAK]);
    assert_eq!(rx.buffered(), 0);
    // The payload that follows is garbage, not buffered.
    rx.handle_input(1, &[b'x'; 1025]);
    assert_eq!(rx.buffered(), 0);
    assert_eq!(drain(&mut rx), (vec![], vec![]));
    // A zero length is garbage too, without a NAK.
    rx.handle_input(2, &[STX, 0, 0]);
    let (events, replies) = drain(&mut rx);
    assert_eq!(
        events,
        [RxEvent::Discarded(FrameFault::Length { len: 0, max: 1024 })]
    );
    assert!(replies.is_empty());
}

#[test]
fn receiver_abandons_a_silent_frame() {
    let mut rx = Receiver::new(Config::default());
    let frame = encode_frame(b"hello").unwrap();
    rx.handle_input(1_000, &frame[..5]);
    assert_eq!(rx.poll_timeout(), Some(1_000 + INTER_BYTE));
    rx.handle_timeout(1_000 + INTER_BYTE - 1);
    assert_eq!(rx.poll_event(), None);
    rx.handle_timeout(1_000 + INTER_BYTE);
    let (events, replies) = drain(&mut rx);
    assert_eq!(
        events,
        [RxEvent::Discarded(FrameFault::Timeout { received: 5 })]
    );
    assert!(
        replies.is_empty(),
        "silence is not answered; the sender times out"
    );
    assert_eq!(rx.buffered(), 0);
    assert_eq!(rx.poll_timeout(), None);
    // The rest of the frame arriving late is garbage; a whole frame is fine.
    rx.handle_input(2_000, &frame[5..]);
    rx.handle_input(2_001, &frame);
    let (events, _) = drain(&mut rx);
    assert_eq!(events.last(), Some(&RxEvent::Frame(b"hello".to_vec())));
    // A timeout is also noticed when the next bytes arrive.
    rx.handle_input(3_000, &frame[..5]);
    rx.handle_input(3_000 + INTER_BYTE, &frame);
    let (events, _) = drain(&mut rx);
    assert_eq!(
        events,
        [
            RxEvent::Discarded(FrameFault::Timeout { received: 5 }),
            RxEvent::Frame(b"hello".to_vec())
        ]
    );
}

#[test]
fn receiver_skips_garbage_and_sees_answers_between_frames() {
    let mut rx = Receiver::new(Config::default());
    let mut line = b"line noise".to_vec();
    line.push(ACK);
    line.extend(encode_frame(b"one").unwrap());
    line.push(NAK);
    line.extend(encode_frame(&[ACK, NAK, STX, ETX]).unwrap());
    rx.handle_input(0, &line);
    let (events, replies) = drain(&mut rx);
    assert_eq!(
        events,
        [
            RxEvent::Ack,
            RxEvent::Frame(b"one".to_vec()),
            RxEvent::Nak,
            RxEvent::Frame(vec![ACK, NAK, STX, ETX]),
        ]
    );
    assert_eq!(replies, [ACK, ACK]);
    assert_eq!(rx.garbage_bytes(), 10);
}

#[test]
fn receiver_rescans_after_a_false_start() {
    let frame = encode_frame(b"{\"x\":1}").unwrap();
    // A noise STX whose length ends inside the real frame: its missing ETX
    // sends the scan back to the real STX.
    let mut rx = Receiver::new(Config::default());
    let mut line = vec![STX, 0x00, 0x03, 0xAA];
    line.extend(&frame);
    rx.handle_input(0, &line);
    let (events, replies) = drain(&mut rx);
    assert_eq!(
        events,
        [
            RxEvent::Discarded(FrameFault::MissingEtx { len: 3 }),
            RxEvent::Frame(b"{\"x\":1}".to_vec())
        ]
    );
    assert_eq!(replies, [ACK]);

    // A noise STX announcing more than follows swallows the real frame
    // until the line falls silent; the frame is then found in what was
    // buffered.
    let mut rx = Receiver::new(Config::default());
    let mut line = vec![STX, 0x7F, 0xFF];
    line.extend(&frame);
    rx.handle_input(0, &line);
    assert_eq!(drain(&mut rx), (vec![], vec![]));
    rx.handle_timeout(INTER_BYTE);
    let (events, replies) = drain(&mut rx);
    assert_eq!(
        events,
        [
            RxEvent::Discarded(FrameFault::Timeout {
                received: line.len()
            }),
            RxEvent::Frame(b"{\"x\":1}".to_vec())
        ]
    );
    assert_eq!(replies, [ACK]);
    assert_eq!(rx.buffered(), 0);
}

// ---- two links over a line ----

/// Moves everything `from` has to write to `to`, passing it through
/// `fault` first.
fn carry(from: &mut Link, to: &mut Link, now: u64, fault: &mut dyn FnMut(&mut Vec<u8>)) {
    while let Some(mut bytes) = from.poll_transmit(now) {
        fault(&mut bytes);
        to.handle_input(now, &bytes);
    }
}

fn events(link: &mut Link) -> Vec<LinkEvent> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

#[test]
fn links_exchange_messages_both_ways() {
    let (mut a, mut b) = (Link::new(Config::default()), Link::new(Config::default()));
    a.send(b"request").unwrap();
    carry(&mut a, &mut b, 0, &mut |_| {});
    assert_eq!(events(&mut b), [LinkEvent::Received(b"request".to_vec())]);
    b.send(b"response").unwrap();
    // B's ACK and B's frame go in one exchange.
    carry(&mut b, &mut a, 1, &mut |_| {});
    assert_eq!(
        events(&mut a),
        [
            LinkEvent::Delivered,
            LinkEvent::Received(b"response".to_vec())
        ]
    );
    carry(&mut a, &mut b, 2, &mut |_| {});
    assert_eq!(events(&mut b), [LinkEvent::Delivered]);
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(b.poll_timeout(), None);
}

#[test]
fn a_corrupted_frame_is_naked_and_sent_again() {
    let (mut a, mut b) = (Link::new(Config::default()), Link::new(Config::default()));
    a.send(b"{\"amount\":12.5}").unwrap();
    let mut first = true;
    carry(&mut a, &mut b, 0, &mut |bytes| {
        if std::mem::take(&mut first) {
            bytes[7] ^= 0x01;
        }
    });
    assert!(matches!(
        events(&mut b)[..],
        [LinkEvent::Discarded(FrameFault::Crc { .. })]
    ));
    carry(&mut b, &mut a, 1, &mut |_| {}); // the NAK
    carry(&mut a, &mut b, 2, &mut |_| {}); // the retransmission
    assert_eq!(
        events(&mut b),
        [LinkEvent::Received(b"{\"amount\":12.5}".to_vec())]
    );
    carry(&mut b, &mut a, 3, &mut |_| {}); // the ACK
    assert_eq!(events(&mut a), [LinkEvent::Delivered]);
}

#[test]
fn a_lost_ack_means_a_retransmission_and_a_duplicate() {
    let (mut a, mut b) = (Link::new(Config::default()), Link::new(Config::default()));
    a.send(b"once").unwrap();
    carry(&mut a, &mut b, 0, &mut |_| {});
    assert_eq!(events(&mut b), [LinkEvent::Received(b"once".to_vec())]);
    carry(&mut b, &mut a, 0, &mut |bytes| bytes.clear()); // ACK lost
    assert_eq!(a.poll_timeout(), Some(ACK_TIMEOUT));
    a.handle_timeout(ACK_TIMEOUT);
    carry(&mut a, &mut b, ACK_TIMEOUT, &mut |_| {});
    assert_eq!(events(&mut b), [LinkEvent::Received(b"once".to_vec())]);
    carry(&mut b, &mut a, ACK_TIMEOUT, &mut |_| {});
    assert_eq!(events(&mut a), [LinkEvent::Delivered]);
}

#[test]
fn an_ack_arriving_at_the_last_deadline_counts() {
    let (mut a, mut b) = (Link::new(Config::default()), Link::new(Config::default()));
    a.send(b"late").unwrap();
    let mut now = 0;
    // Three writes lost, the fourth received; its ACK comes exactly at the
    // last deadline.
    for _ in 0..3 {
        while a.poll_transmit(now).is_some() {}
        now = a.poll_timeout().unwrap();
        a.handle_timeout(now);
    }
    carry(&mut a, &mut b, now, &mut |_| {});
    assert_eq!(events(&mut b), [LinkEvent::Received(b"late".to_vec())]);
    let deadline = a.poll_timeout().unwrap();
    let ack = b.poll_transmit(deadline).unwrap();
    a.handle_input(deadline, &ack);
    assert_eq!(events(&mut a), [LinkEvent::Delivered]);
}

#[test]
fn a_dead_line_gives_up() {
    let mut a = Link::new(Config::default());
    a.send(b"into the void").unwrap();
    let mut now = 0;
    let mut writes = 0;
    // Bounded: four writes and four timeouts.
    for _ in 0..10 {
        while a.poll_transmit(now).is_some() {
            writes += 1;
        }
        match a.poll_timeout() {
            Some(deadline) => {
                now = deadline;
                a.handle_timeout(now);
            }
            None => break,
        }
    }
    assert_eq!(writes, 4);
    assert_eq!(events(&mut a), [LinkEvent::GaveUp { transmissions: 4 }]);
}

// ---- properties ----

fn small_config() -> Config {
    Config {
        max_payload: 512,
        ..Config::default()
    }
}

proptest! {
    #[test]
    fn any_bytes_no_panic_bounded_memory(
        chunks in prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..600), 0u64..700),
            0..20,
        ),
        small in any::<bool>(),
    ) {
        let config = if small { small_config() } else { Config::default() };
        let mut rx = Receiver::new(config);
        let mut now = 0;
        for (chunk, pause) in chunks {
            now += pause;
            rx.handle_input(now, &chunk);
            prop_assert!(rx.buffered() <= config.max_payload + FRAME_OVERHEAD);
            let (events, replies) = drain(&mut rx);
            prop_assert!(replies.iter().all(|b| *b == ACK || *b == NAK));
            for event in events {
                if let RxEvent::Frame(payload) = event {
                    prop_assert!(!payload.is_empty() && payload.len() <= config.max_payload);
                }
            }
        }
        rx.handle_timeout(now + INTER_BYTE);
        prop_assert_eq!(rx.buffered(), 0);
        prop_assert_eq!(rx.poll_timeout(), None);
    }

    #[test]
    fn frames_in_noise_are_recovered(
        before in prop::collection::vec(any::<u8>(), 0..300),
        payload in prop::collection::vec(any::<u8>(), 1..400),
        after in prop::collection::vec(any::<u8>(), 0..300),
        split in any::<prop::sample::Index>(),
        small in any::<bool>(),
    ) {
        let config = if small { small_config() } else { Config::default() };
        let mut rx = Receiver::new(config);
        let mut line = before;
        line.extend(encode_frame(&payload).unwrap());
        line.extend(after);
        let at = split.index(line.len());
        rx.handle_input(0, &line[..at]);
        rx.handle_input(1, &line[at..]);
        // The line falls silent: whatever is buffered is scanned to the end.
        rx.handle_timeout(1 + INTER_BYTE);
        let (events, _) = drain(&mut rx);
        prop_assert!(
            events.contains(&RxEvent::Frame(payload.clone())),
            "frame lost: {:?}", events
        );
    }

    #[test]
    fn corrupted_frames_are_naked(
        payload in prop::collection::vec(any::<u8>(), 1..400),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let frame = encode_frame(&payload).unwrap();
        // A bit of the payload or the CRC: CRC-16 catches every single-bit
        // error.
        let covered = 3..3 + payload.len();
        let crc = frame.len() - 2..frame.len();
        let targets: Vec<usize> = covered.chain(crc).collect();
        let at = targets[position.index(targets.len())];
        let mut bad = frame.clone();
        bad[at] ^= 1 << bit;
        let mut rx = Receiver::new(Config::default());
        rx.handle_input(0, &bad);
        rx.handle_timeout(INTER_BYTE);
        let (events, replies) = drain(&mut rx);
        prop_assert!(replies.contains(&NAK), "{:?}", events);
        let nak_first = matches!(events.first(), Some(RxEvent::Discarded(FrameFault::Crc { .. })));
        prop_assert!(nak_first, "{:?}", events);
        let corrupted = bad[3..3 + payload.len()].to_vec();
        for event in &events {
            prop_assert_ne!(event, &RxEvent::Frame(payload.clone()));
            prop_assert_ne!(event, &RxEvent::Frame(corrupted.clone()));
        }
    }
}
