//! Fuzz the OAP/1 decoder and session on arbitrary input: the first byte
//! picks strict/lenient mode and how the rest is split into reads; every
//! decoded frame is fed to a session, and the session's own sends are
//! exercised from the frames it accepted. Nothing may panic, a reject must
//! consume nothing, and NeedMore must leave the buffer as it was.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ron_oap::{Decoded, Decoder, DecoderConfig, Event, Flags, FrameSpec, Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let strict = ctl & 1 == 0;
    let chunk = 1 + (ctl as usize >> 1) % 64;
    let d = Decoder::new(DecoderConfig {
        strict,
        ..DecoderConfig::default()
    });
    let mut session = Session::new(SessionConfig {
        local_window: 1 + (ctl as u32 % 8),
        inflate_cap: 64 * 1024,
        ..SessionConfig::default()
    });
    let mut buf = BytesMut::new();
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match d.decode(&mut buf) {
                Ok(Decoded::Frame(f)) => {
                    assert!(buf.len() < before);
                    match session.on_frame(f) {
                        Ok(Event::Start { corr_id, app_proto_id, .. }) if app_proto_id != 0 => {
                            // Answer on the same stream while credit lasts.
                            let _ = session.on_send(&FrameSpec::start(app_proto_id, corr_id, Flags::RESP));
                            let _ = session.on_send(&FrameSpec::end(app_proto_id, corr_id, Flags::RESP));
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                    while session.poll_ack().is_some() {}
                }
                Ok(Decoded::NeedMore(n)) => {
                    assert!(n > 0);
                    assert_eq!(buf.len(), before);
                    break;
                }
                Err(_) => {
                    assert_eq!(buf.len(), before);
                    return;
                }
            }
        }
    }
    let _ = d.decode_eof(&mut buf);
});
