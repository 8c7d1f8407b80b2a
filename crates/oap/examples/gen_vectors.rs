//! Writes the conformance vectors under `tests/vectors/`. Run once when the
//! set changes (`cargo run -p ron-oap --example gen_vectors`), review the
//! diff, commit. `tests/vectors.rs` checks every file against the codec.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or bench may panic

use bytes::{Bytes, BytesMut};
use ron_oap::{
    Decoded, Decoder, Encoder, Flags, FrameSpec, Header, Hello, HEADER_LEN, MAX_FRAME_BYTES,
};
use serde_json::{json, Value};

fn wire(spec: &FrameSpec, cap: &[u8], payload: &[u8]) -> Vec<u8> {
    let out = Encoder::default()
        .encode(spec, cap, Bytes::copy_from_slice(payload))
        .expect("encodable");
    out.to_vec()
}

fn ack(corr: u64, up: u64, win: u32) -> Vec<u8> {
    Encoder::default().encode_ack(corr, up, win).to_vec()
}

fn raw(h: Header, cap: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    h.write(&mut v);
    v.extend_from_slice(cap);
    v.extend_from_slice(payload);
    v
}

fn hdr(len: usize, ver: u16, flags: u16, code: u16, app: u16, cap_len: u16, corr: u64) -> Header {
    Header {
        len: len as u32,
        ver,
        flags: Flags(flags),
        code,
        app_proto_id: app,
        tenant: 0,
        cap_len,
        corr_id: corr,
    }
}

fn hello(window: u32) -> Vec<u8> {
    wire(
        &FrameSpec::hello(Flags::REQ),
        b"",
        &Hello::new("node-a", MAX_FRAME_BYTES as u32, window).to_json(),
    )
}

/// The expected decode of every frame in `bytes`.
fn expect_frames(bytes: &[u8]) -> Value {
    let d = Decoder::default();
    let mut buf = BytesMut::from(bytes);
    let mut frames = Vec::new();
    loop {
        match d.decode(&mut buf).expect("valid vector decodes") {
            Decoded::Frame(f) => {
                let h = f.header;
                let big = f.payload.len() > 256;
                let mut o = json!({
                    "kind": f.kind().label(),
                    "len": h.len,
                    "ver": h.ver,
                    "flags": h.flags.bits(),
                    "code": h.code,
                    "app_proto_id": h.app_proto_id,
                    "tenant": format!("{:032x}", h.tenant),
                    "cap_len": h.cap_len,
                    "corr_id": h.corr_id,
                    "cap_hex": hex::encode(&f.cap),
                });
                if f.kind() == ron_oap::FrameKind::Hello {
                    // What a host that pins keys reads from node_id.
                    let key = Hello::parse(&f.payload).ok().and_then(|h| h.node_key());
                    o["node_key"] = json!(key.map(hex::encode));
                }
                if big {
                    o["payload_len"] = json!(f.payload.len());
                    o["payload_fill"] = json!(format!("{:02x}", f.payload[0]));
                } else {
                    o["payload_hex"] = json!(hex::encode(&f.payload));
                }
                frames.push(o);
                if buf.is_empty() {
                    break;
                }
            }
            Decoded::NeedMore(n) => panic!("valid vector needs {n} more bytes"),
        }
    }
    json!({ "frames": frames })
}

struct Out {
    n: usize,
    dir: std::path::PathBuf,
}

impl Out {
    fn write(&mut self, name: &str, description: &str, v: Value) {
        self.n += 1;
        let mut v = v;
        v["name"] = json!(name);
        v["description"] = json!(description);
        let path = self.dir.join(format!("{:03}-{name}.json", self.n));
        let text = serde_json::to_string_pretty(&v).expect("json") + "\n";
        std::fs::write(&path, text).expect("write vector");
    }

    fn valid(&mut self, name: &str, description: &str, bytes: Vec<u8>) {
        let expect = expect_frames(&bytes);
        // A large frame of one repeated byte is stored as its header plus
        // a fill, to keep the vector files small.
        let tail = &bytes[HEADER_LEN.min(bytes.len())..];
        if bytes.len() > 4096 && tail.iter().all(|b| *b == tail[0]) {
            self.write(
                name,
                description,
                json!({"layer": "decode", "hex": hex::encode(&bytes[..HEADER_LEN]),
                       "fill": {"byte": format!("{:02x}", tail[0]), "count": tail.len()},
                       "expect": expect}),
            );
            return;
        }
        self.write(
            name,
            description,
            json!({"layer": "decode", "hex": hex::encode(&bytes), "expect": expect}),
        );
    }

    fn reject(&mut self, name: &str, description: &str, bytes: Vec<u8>, reason: &str) {
        self.write(
            name,
            description,
            json!({"layer": "decode", "hex": hex::encode(&bytes), "expect": {"reject": reason}}),
        );
    }

    fn session(
        &mut self,
        name: &str,
        description: &str,
        config: Value,
        steps: Vec<Value>,
        expect: Value,
    ) {
        self.write(
            name,
            description,
            json!({"layer": "session", "config": config, "steps": steps, "expect": expect}),
        );
    }
}

fn recv(bytes: Vec<u8>) -> Value {
    json!({"recv": hex::encode(bytes)})
}

fn send(kind: &str, corr: u64) -> Value {
    json!({"send": {"kind": kind, "app_proto_id": 2, "corr_id": corr}})
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut o = Out { n: 0, dir };
    let r = Flags::REQ;

    // ---- valid frames of every kind
    o.valid(
        "hello-req",
        "HELLO from the initiator: control frame, code 0, REQ|START|END, JSON payload",
        hello(16),
    );
    o.valid(
        "hello-resp",
        "HELLO from the responder, with opaque feature names",
        wire(&FrameSpec::hello(Flags::RESP), b"", br#"{"versions":[1],"max_frame":65536,"ack_window":1024,"features":["pq-hybrid"],"node_id":"node-b"}"#),
    );
    o.valid(
        "ack",
        "ACK for stream 7: ack_up_to 3, window 16",
        ack(7, 3, 16),
    );
    o.valid(
        "start-req",
        "START of a request stream, no capability",
        wire(&FrameSpec::start(2, 1, r), b"", b"hello"),
    );
    o.valid(
        "start-with-cap",
        "START carrying a capability",
        wire(&FrameSpec::start(2, 2, r), b"cap-token-123", b"body"),
    );
    o.valid(
        "start-end-event",
        "START|END: a one-frame EVENT message",
        wire(
            &FrameSpec::start(1, 3, Flags::EVENT).with_flags(Flags::END),
            b"",
            b"gossip",
        ),
    );
    o.valid(
        "data-req",
        "DATA: neither START nor END",
        wire(&FrameSpec::data(2, 1, r), b"", b"middle"),
    );
    o.valid(
        "end-resp",
        "END of a response half",
        wire(&FrameSpec::end(2, 1, Flags::RESP), b"", b"last"),
    );
    o.valid(
        "error-stream",
        "ERROR on a stream: code 500, END, JSON reason",
        wire(
            &FrameSpec::error(2, 1, 500, Flags::RESP),
            b"",
            br#"{"reason":"internal","message":"boom"}"#,
        ),
    );
    o.valid(
        "error-connection",
        "connection ERROR: app_proto_id 0, code 503",
        wire(
            &FrameSpec::error(0, 0, 503, Flags::EVENT),
            b"",
            br#"{"reason":"busy","message":"try later"}"#,
        ),
    );
    o.valid(
        "start-tenant",
        "START with a tenant id",
        wire(
            &FrameSpec::start(2, 4, r).with_tenant(0x0123_4567_89ab_cdef_0011_2233_4455_6677),
            b"",
            b"t",
        ),
    );
    o.valid(
        "data-ack-req",
        "DATA asking for an ACK now",
        wire(
            &FrameSpec::data(2, 4, r).with_flags(Flags::ACK_REQ),
            b"",
            b"x",
        ),
    );
    o.valid(
        "start-comp",
        "START with COMP: the payload is zstd (the decoder does not inflate; the session does)",
        wire(
            &FrameSpec::start(2, 5, r).with_flags(Flags::COMP),
            b"",
            &ron_oap::comp::compress(&[b'z'; 500]).expect("zstd"),
        ),
    );
    o.valid(
        "data-app-e2e",
        "DATA with APP_E2E (opaque to OAP)",
        wire(
            &FrameSpec::data(2, 5, r).with_flags(Flags::APP_E2E),
            b"",
            b"sealed",
        ),
    );
    o.valid(
        "data-empty",
        "header-only DATA frame: len = 38",
        wire(&FrameSpec::data(2, 6, r), b"", b""),
    );
    o.valid(
        "corr-id-max",
        "START on corr_id 2^64-1",
        wire(&FrameSpec::start(2, u64::MAX, r), b"", b"m"),
    );
    o.valid(
        "app-proto-max",
        "app_proto_id 65535",
        wire(&FrameSpec::start(65535, 1, r), b"", b""),
    );
    o.valid(
        "code-399",
        "a stream frame with code 399 is not an ERROR",
        wire(&FrameSpec::data(2, 1, r).with_code(399), b"", b""),
    );
    {
        let payload = vec![0xabu8; MAX_FRAME_BYTES - HEADER_LEN];
        o.valid(
            "max-size",
            "DATA of exactly MAX_FRAME_BYTES (1 MiB), header included",
            wire(&FrameSpec::data(2, 8, r), b"", &payload),
        );
    }
    {
        let mut v = wire(&FrameSpec::start(2, 9, r), b"", b"one");
        v.extend(wire(&FrameSpec::data(2, 9, r), b"", b"two"));
        v.extend(wire(&FrameSpec::end(2, 9, r), b"", b"three"));
        o.valid(
            "stream-of-three",
            "START, DATA, END back to back in one buffer",
            v,
        );
    }
    {
        let mut v = hello(8);
        v.extend(ack(1, 1, 8));
        v.extend(wire(
            &FrameSpec::start(2, 1, r).with_flags(Flags::END),
            b"c",
            b"p",
        ));
        o.valid(
            "mixed-kinds",
            "HELLO, ACK and a one-frame message back to back",
            v,
        );
    }

    // ---- decoder rejects
    o.reject(
        "oversize-4-bytes",
        "declared len MAX+1: refused from the first 4 bytes alone",
        ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec(),
        "frame_oversize",
    );
    o.reject(
        "oversize-u32-max",
        "declared len 2^32-1",
        u32::MAX.to_be_bytes().to_vec(),
        "frame_oversize",
    );
    o.reject(
        "len-37",
        "declared len shorter than the header",
        37u32.to_be_bytes().to_vec(),
        "header_malformed",
    );
    o.reject(
        "len-0",
        "declared len 0",
        0u32.to_be_bytes().to_vec(),
        "header_malformed",
    );
    o.reject(
        "version-2",
        "ver 2",
        raw(hdr(38, 2, 1, 0, 2, 0, 1), b"", b""),
        "bad_version",
    );
    o.reject(
        "version-0",
        "ver 0",
        raw(hdr(38, 0, 1, 0, 2, 0, 1), b"", b""),
        "bad_version",
    );
    o.reject(
        "reserved-bit-8",
        "reserved flag bit 8 set",
        raw(hdr(38, 1, 0x0101, 0, 2, 0, 1), b"", b""),
        "bad_flags",
    );
    o.reject(
        "reserved-bit-15",
        "reserved flag bit 15 set",
        raw(hdr(38, 1, 0x8001, 0, 2, 0, 1), b"", b""),
        "bad_flags",
    );
    o.reject(
        "req-and-resp",
        "REQ and RESP together",
        raw(hdr(38, 1, 0b11, 0, 2, 0, 1), b"", b""),
        "bad_flags",
    );
    o.reject(
        "no-direction",
        "none of REQ, RESP, EVENT",
        raw(hdr(38, 1, 0, 0, 2, 0, 1), b"", b""),
        "bad_flags",
    );
    o.reject(
        "ack-with-req",
        "ACK carrying REQ",
        raw(hdr(50, 1, 1, 1, 0, 0, 1), b"", &[0; 12]),
        "bad_flags",
    );
    o.reject(
        "ack-with-start",
        "ACK carrying START",
        raw(hdr(50, 1, 1 << 3, 1, 0, 0, 1), b"", &[0; 12]),
        "bad_flags",
    );
    o.reject(
        "error-without-end",
        "ERROR (code 500) without END",
        raw(hdr(38, 1, 1, 500, 2, 0, 1), b"", b""),
        "bad_flags",
    );
    o.reject(
        "hello-not-one-frame",
        "HELLO without START|END",
        raw(hdr(40, 1, 1, 0, 0, 0, 0), b"", b"{}"),
        "bad_flags",
    );
    o.reject(
        "cap-on-data",
        "a capability on a DATA frame",
        raw(hdr(41, 1, 1, 0, 2, 3, 1), b"cap", b""),
        "cap_on_non_start",
    );
    o.reject(
        "cap-past-end",
        "cap_len larger than the frame",
        raw(hdr(40, 1, 1 | 8, 0, 2, 9, 1), b"ab", b""),
        "header_malformed",
    );
    o.reject(
        "ack-short-payload",
        "ACK with an 8-byte payload",
        raw(hdr(46, 1, 0, 1, 0, 0, 1), b"", &[0; 8]),
        "header_malformed",
    );
    o.reject(
        "unknown-control-code",
        "app_proto_id 0 with control code 5",
        raw(hdr(38, 1, 1, 5, 0, 0, 1), b"", b""),
        "header_malformed",
    );
    {
        let full = wire(&FrameSpec::start(2, 1, r), b"", &[1u8; 62]);
        o.reject(
            "truncated-body",
            "input ends after the header of a 100-byte frame",
            full[..HEADER_LEN].to_vec(),
            "truncated",
        );
        o.reject(
            "truncated-2-bytes",
            "input ends after 2 bytes",
            full[..2].to_vec(),
            "truncated",
        );
        o.reject(
            "truncated-last-byte",
            "input ends one byte short",
            full[..full.len() - 1].to_vec(),
            "truncated",
        );
    }

    // ---- session rejects and flows
    let cfg = json!({"local_window": 4, "inflate_cap": 1000});
    o.session(
        "session-frame-before-hello",
        "a stream frame before the peer's HELLO",
        cfg.clone(),
        vec![recv(wire(&FrameSpec::start(2, 1, r), b"", b""))],
        json!({"reject": "bad_hello", "at_step": 0}),
    );
    o.session(
        "session-hello-not-json",
        "HELLO whose payload is not the HELLO object",
        cfg.clone(),
        vec![recv(wire(&FrameSpec::hello(r), b"", b"{nope"))],
        json!({"reject": "bad_hello", "at_step": 0}),
    );
    o.session(
        "session-hello-v2-only",
        "HELLO offering only version 2",
        cfg.clone(),
        vec![recv(wire(
            &FrameSpec::hello(r),
            b"",
            br#"{"versions":[2],"max_frame":1048576,"ack_window":8,"node_id":"x"}"#,
        ))],
        json!({"reject": "bad_version", "at_step": 0}),
    );
    o.session(
        "session-hello-twice",
        "a second HELLO",
        cfg.clone(),
        vec![recv(hello(8)), recv(hello(8))],
        json!({"reject": "bad_hello", "at_step": 1}),
    );
    o.session(
        "session-unknown-stream",
        "DATA on a stream never opened",
        cfg.clone(),
        vec![
            recv(hello(8)),
            recv(wire(&FrameSpec::data(2, 42, r), b"", b"")),
        ],
        json!({"reject": "unknown_stream", "at_step": 1}),
    );
    o.session(
        "session-start-twice",
        "START on a stream whose receive half is open",
        cfg.clone(),
        vec![
            recv(hello(8)),
            recv(wire(&FrameSpec::start(2, 1, r), b"", b"")),
            recv(wire(&FrameSpec::start(2, 1, r), b"", b"")),
        ],
        json!({"reject": "bad_flags", "at_step": 2}),
    );
    {
        let mut steps = vec![
            recv(hello(8)),
            recv(wire(&FrameSpec::start(2, 1, r), b"", b"")),
        ];
        for _ in 0..4 {
            steps.push(recv(wire(&FrameSpec::data(2, 1, r), b"", b"")));
        }
        o.session(
            "session-window-exceeded",
            "window 4, no ACK taken: the 5th frame is past the window",
            cfg.clone(),
            steps,
            json!({"reject": "window_exceeded", "at_step": 5}),
        );
    }
    o.session(
        "session-ack-regress",
        "ACK 2 then ACK 1 for the same stream",
        cfg.clone(),
        vec![
            recv(hello(8)),
            send("start", 3),
            send("data", 3),
            recv(ack(3, 2, 4)),
            recv(ack(3, 1, 4)),
        ],
        json!({"reject": "ack_regress", "at_step": 4}),
    );
    o.session(
        "session-ack-past-sent",
        "ACK for a frame never sent",
        cfg.clone(),
        vec![recv(hello(8)), send("start", 3), recv(ack(3, 2, 4))],
        json!({"reject": "ack_regress", "at_step": 2}),
    );
    o.session(
        "session-decompress-cap",
        "COMP payload inflating past the 1000-byte cap",
        cfg.clone(),
        vec![
            recv(hello(8)),
            recv(wire(
                &FrameSpec::start(2, 1, r).with_flags(Flags::COMP),
                b"",
                &ron_oap::comp::compress(&[0u8; 5000]).expect("zstd"),
            )),
        ],
        json!({"reject": "decompress_cap", "at_step": 1}),
    );
    o.session(
        "session-request-response",
        "a request and its response on one corr_id, with ACKs; no reject",
        cfg.clone(),
        vec![
            recv(hello(8)),
            recv(wire(
                &FrameSpec::start(2, 5, r).with_flags(Flags::END),
                b"cap",
                b"get",
            )),
            send("start-resp", 5),
            send("data-resp", 5),
            send("end-resp", 5),
            recv(ack(5, 2, 4)),
        ],
        json!({"ok": true, "open_streams": 0}),
    );

    // ---- node_id spellings (OAP-1 §4): the same key, bare or prefixed
    let key_hex = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
    o.valid(
        "hello-resp-node-id-prefixed",
        "HELLO from the responder (RESP|START|END) whose node_id is ed25519:<hex>: node_key is the 32-byte key",
        wire(
            &FrameSpec::hello(Flags::RESP),
            b"",
            &Hello::new(format!("ed25519:{key_hex}"), MAX_FRAME_BYTES as u32, 16).to_json(),
        ),
    );
    o.valid(
        "hello-req-node-id-bare",
        "HELLO from the initiator whose node_id is the same key as bare hex: the same node_key",
        wire(
            &FrameSpec::hello(Flags::REQ),
            b"",
            &Hello::new(key_hex, MAX_FRAME_BYTES as u32, 16).to_json(),
        ),
    );
    o.valid(
        "hello-node-id-not-a-key",
        "HELLO whose node_id is no key (uppercase hex): valid OAP/1, node_key null, refused by a host that pins keys",
        wire(
            &FrameSpec::hello(Flags::RESP),
            b"",
            &Hello::new(format!("ed25519:{}", key_hex.to_uppercase()), MAX_FRAME_BYTES as u32, 16).to_json(),
        ),
    );
}
