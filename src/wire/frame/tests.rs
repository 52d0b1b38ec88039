use super::*;
use proptest::prelude::*;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&(i32::try_from(body.len()).unwrap() + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn drain(framer: &Framer, buf: &mut BytesMut) -> Result<Vec<Frame>, FrameError> {
    let mut out = Vec::new();
    while let Some(f) = framer.next_frame(buf)? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn splits_complete_frames_and_keeps_partial_tail() {
    let mut stream = msg(b'Q', b"select 1\0");
    stream.extend(msg(b'S', b""));
    stream.extend(&msg(b'D', b"partial")[..6]);
    let mut buf = BytesMut::from(&stream[..]);
    let frames = drain(&Framer::new(1024), &mut buf).unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].tag(), b'Q');
    assert_eq!(frames[0].body(), b"select 1\0");
    assert_eq!(frames[1].tag(), b'S');
    assert!(frames[1].body().is_empty());
    assert_eq!(buf.len(), 6, "the partial frame stays buffered");
}

#[test]
fn rejects_lengths_below_four() {
    let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
    assert_eq!(
        Framer::new(1024).next_frame(&mut buf),
        Err(FrameError::InvalidLength {
            tag: 'Q',
            declared: 3
        })
    );
    let mut neg = BytesMut::from(&[b'Q', 0xff, 0xff, 0xff, 0xff][..]);
    assert!(Framer::new(1024).next_frame(&mut neg).is_err());
}

#[test]
fn rejects_oversized_before_the_body_arrives() {
    // Only the header is buffered: the limit must be checked without the body.
    let mut buf = BytesMut::from(&[b'Q', 0x7f, 0, 0, 0][..]);
    let err = Framer::new(1 << 20).next_frame(&mut buf).unwrap_err();
    assert!(
        matches!(err, FrameError::TooLarge { tag: 'Q', .. }),
        "{err}"
    );
}

#[test]
fn complete_prefix_stops_at_partial_and_selected_tags() {
    let mut stream = msg(b'D', b"a");
    stream.extend(msg(b'D', b"bb"));
    let two = stream.len();
    stream.extend(msg(b'Z', b"I"));
    let three = stream.len();
    stream.extend(&msg(b'D', b"ccc")[..4]);
    let framer = Framer::new(1024);
    let all = framer.complete_prefix(&stream, |_| false, &[]).unwrap();
    assert_eq!(all.len, three);
    assert_eq!(all.last_start, Some(two));
    assert_eq!(
        framer
            .complete_prefix(&stream, |t| t == b'Z', &[])
            .unwrap()
            .len,
        two
    );
    assert_eq!(
        framer
            .complete_prefix(&stream[..3], |_| false, &[])
            .unwrap(),
        Prefix::default()
    );
}

#[test]
fn cstr_reader_stays_inside_the_body() {
    let mut body: &[u8] = b"abc";
    assert_eq!(
        read_cstr(&mut body),
        None,
        "no NUL inside the body: no string"
    );
    let mut body: &[u8] = b"ab\0cd\0";
    assert_eq!(read_cstr(&mut body), Some(&b"ab"[..]));
    assert_eq!(read_cstr(&mut body), Some(&b"cd"[..]));
    assert!(body.is_empty());
}

fn arb_message() -> impl Strategy<Value = Vec<u8>> {
    (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(t, b)| msg(t, &b))
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut buf = BytesMut::from(&bytes[..]);
        let framer = Framer::new(512);
        let _ = framer.complete_prefix(&bytes, |t| t == b'Z', &[]);
        let _ = drain(&framer, &mut buf);
    }

    #[test]
    fn splitting_at_every_offset_gives_the_same_frames(
        msgs in proptest::collection::vec(arb_message(), 1..8)
    ) {
        let stream: Vec<u8> = msgs.concat();
        let framer = Framer::new(4096);
        let whole = drain(&framer, &mut BytesMut::from(&stream[..])).unwrap();
        prop_assert_eq!(whole.len(), msgs.len());
        for cut in 0..=stream.len() {
            let mut buf = BytesMut::from(&stream[..cut]);
            let mut got = drain(&framer, &mut buf).unwrap();
            buf.extend_from_slice(&stream[cut..]);
            got.extend(drain(&framer, &mut buf).unwrap());
            prop_assert!(buf.is_empty());
            prop_assert_eq!(&got, &whole);
        }
    }
}

#[test]
fn c_strings_end_at_their_first_nul_however_long() {
    for len in [0, 1, 15, 16, 17, 40, 100] {
        let mut bytes = vec![b'a'; len];
        bytes.push(0);
        bytes.extend_from_slice(b"rest\0");
        let mut body = &bytes[..];
        assert_eq!(read_cstr(&mut body).map(<[u8]>::len), Some(len));
        assert_eq!(body, b"rest\0");
        // Without a NUL there is no string, short or long.
        let mut unterminated = &bytes[..len];
        assert_eq!(read_cstr(&mut unterminated), None);
    }
}

#[test]
fn a_frame_at_the_front_is_the_one_its_header_names() {
    let mut buf = msg(b'C', b"SELECT 1\0");
    let first_len = buf.len();
    buf.extend_from_slice(&msg(b'Z', b"I"));
    let header = Framer::peek_header(&buf).ok().flatten().expect("a header");
    let frame = FrameRef::at_front(&buf, header).expect("all there");
    assert_eq!(Some(frame), FrameRef::new(&buf[..first_len]));
    assert_eq!((frame.tag(), frame.body()), (b'C', &b"SELECT 1\0"[..]));
    // Not all there yet, or a header no frame can have.
    assert_eq!(FrameRef::at_front(&buf[..first_len - 1], header), None);
    let short = Header {
        tag: b'C',
        total_len: 4,
    };
    assert_eq!(FrameRef::at_front(&buf, short), None);
}
