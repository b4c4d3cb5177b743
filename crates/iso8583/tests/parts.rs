//! Framing, BER-TLV, field 60 and card-data masking.

use iso8583::dialect::CUP;
use iso8583::text::{mask_pan, masked_text};
use iso8583::{Field60, FrameError, FrameLayout, Tpdu, tlv};

fn hex(s: &str) -> Vec<u8> {
    iso8583::text::parse_hex(&s.replace(' ', "")).expect("test hex")
}

#[test]
fn cup_frame_round_trip_and_tpdu_reply() {
    let tpdu = Tpdu {
        id: 0x60,
        destination: 0x0003,
        source: 0x0000,
    };
    let header = hex("603100311301");
    let mut out = Vec::new();
    FrameLayout::CUP
        .write(Some(tpdu), &header, &hex("0800 0020000000C00012"), &mut out)
        .unwrap();
    assert_eq!(
        out,
        hex("0015 6000030000 603100311301 08000020000000C00012")
    );
    let n = FrameLayout::CUP.check(&out).unwrap().unwrap();
    assert_eq!(n, out.len());
    let frame = FrameLayout::CUP.parse(&out).unwrap();
    assert_eq!(frame.tpdu, Some(tpdu));
    assert_eq!(frame.header, &header[..]);
    assert_eq!(
        frame.tpdu.unwrap().reply(),
        Tpdu {
            id: 0x60,
            destination: 0,
            source: 3
        }
    );
}

#[test]
fn frame_check_waits_for_more_and_refuses_oversize_at_once() {
    let layout = FrameLayout::CUP;
    assert_eq!(layout.check(&[]), Ok(None));
    assert_eq!(layout.check(&[0x00]), Ok(None));
    assert_eq!(layout.check(&hex("0015 6000")), Ok(None));
    // 0xFFFF announced: refused from the two prefix bytes alone.
    assert_eq!(
        layout.check(&[0xFF, 0xFF]),
        Err(FrameError::TooLong {
            len: 0xFFFF,
            max: 4096
        })
    );
    assert_eq!(
        layout.check(&hex("0003 600000")),
        Err(FrameError::TooShort { len: 3, min: 11 })
    );
    assert_eq!(
        FrameLayout::PLAIN.parse(&hex("0002 0800 00")),
        Err(FrameError::Trailing { count: 1 })
    );
    let mut out = Vec::new();
    assert_eq!(
        layout.write(None, &[0; 6], b"", &mut out),
        Err(FrameError::TpduMismatch { expected: true })
    );
    assert!(
        FrameLayout::PLAIN
            .write(None, &[], &vec![0; 9000], &mut out)
            .is_err()
    );
}

#[cfg(feature = "codec")]
#[test]
fn tokio_codec_splits_a_stream_into_frames() {
    use bytes::BytesMut;
    use iso8583::frame::{FrameCodec, OwnedFrame};
    use tokio_util::codec::{Decoder, Encoder};
    let mut codec = FrameCodec::new(FrameLayout::CUP);
    let frame = OwnedFrame {
        tpdu: Some(Tpdu {
            id: 0x60,
            destination: 1,
            source: 2,
        }),
        header: hex("603100311301").into(),
        message: hex("08000020000000C00012").into(),
    };
    let mut buf = BytesMut::new();
    codec.encode(frame.clone(), &mut buf).unwrap();
    codec.encode(frame.clone(), &mut buf).unwrap();
    let mut stream = buf.split_off(5);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    buf.unsplit(stream.split_to(stream.len()));
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame.clone()));
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(frame));
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    let mut hostile = BytesMut::from(&[0xFFu8, 0xFF][..]);
    assert!(codec.decode(&mut hostile).is_err());
}

#[test]
fn tlv_finds_tags_inside_templates() {
    // 70 template holding 5A (PAN) and 9F02 (amount), then 95 (TVR).
    let data = hex("70 10 5A 08 4111111111111111 9F02 03 000100 95 05 0000008000");
    let top: Vec<_> = tlv::iter(&data).map(|t| t.unwrap().tag).collect();
    assert_eq!(top, vec![0x70, 0x95]);
    assert_eq!(tlv::find(&data, 0x9F02).unwrap(), Some(&hex("000100")[..]));
    assert_eq!(
        tlv::find(&data, 0x95).unwrap(),
        Some(&hex("0000008000")[..])
    );
    assert_eq!(tlv::find(&data, 0x9F27).unwrap(), None);
    assert_eq!(
        tlv::find(&hex("9F02 05 0001"), 0x9F02),
        Err(tlv::TlvError::Truncated { offset: 3 })
    );
    assert_eq!(
        tlv::find(&hex("9F 84 85 86 87 01 00"), 1),
        Err(tlv::TlvError::TagTooLong { offset: 0 })
    );
    assert_eq!(
        tlv::find(&hex("9F02 84 00000001 00"), 1),
        Err(tlv::TlvError::BadLength { offset: 2 })
    );
    // Templates nested past the bound are refused, not recursed into.
    let mut deep = hex("9F02 01 00");
    for _ in 0..20 {
        let mut outer = Vec::new();
        tlv::write(0x70, &deep, &mut outer);
        deep = outer;
    }
    assert!(matches!(
        tlv::find(&deep, 0x9F27),
        Err(tlv::TlvError::TooDeep { .. })
    ));
    let mut long = Vec::new();
    tlv::write(0x9F10, &[0xAB; 300], &mut long);
    assert_eq!(&long[..5], &hex("9F10 82 012C"));
}

#[test]
fn field60_subfields() {
    let f = Field60::parse("22000123001").unwrap();
    assert_eq!(
        f,
        Field60 {
            transaction_type: 22,
            batch: 123,
            network_code: Some(1),
            rest: String::new()
        }
    );
    assert_eq!(f.to_text().unwrap(), "22000123001");
    let f = Field60::parse("0000000100350").unwrap();
    assert_eq!((f.network_code, f.rest.as_str()), (Some(3), "50"));
    assert_eq!(Field60::parse("22000123").unwrap().network_code, None);
    assert!(Field60::parse("2200012300").is_err());
    assert!(Field60::parse("22A00123").is_err());
    assert!(
        Field60 {
            transaction_type: 22,
            batch: 1_000_000,
            network_code: None,
            rest: String::new()
        }
        .to_text()
        .is_err()
    );
}

#[test]
fn card_data_is_masked() {
    assert_eq!(mask_pan("4111111111111111"), "411111******1111");
    assert_eq!(mask_pan("6212345678901234567"), "621234*********4567");
    assert_eq!(mask_pan("1234567890"), "******7890");
    assert_eq!(
        masked_text(&CUP, 2, b"4111111111111111").unwrap(),
        "411111******1111"
    );
    assert_eq!(
        masked_text(&CUP, 35, b"4111111111111111=2512101").unwrap(),
        "411111******1111********"
    );
    assert_eq!(
        masked_text(&CUP, 52, &[0x12; 8]).unwrap(),
        "****************"
    );
    let icc = hex("5A 08 4111111111111111 9F02 03 000100");
    assert_eq!(
        masked_text(&CUP, 55, &icc).unwrap(),
        "5A08****************9F0203000100"
    );
    assert_eq!(
        masked_text(&CUP, 55, &hex("9F02 09 00")).unwrap(),
        "********",
        "unparseable chip data is hidden whole"
    );
    assert_eq!(
        masked_text(&CUP, 4, b"000000000100").unwrap(),
        "000000000100"
    );
}
