//! Incremental Server-Sent Events parsing and the bench payload.
//!
//! Lines are handled straight from the read buffer; only a line cut by a read
//! boundary is copied (into a per-connection buffer that is reused).

/// The `event:` type of the frame being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No `event:` line (or `event: message`).
    Message,
    Timeout,
    Failure,
    Gap,
    Other,
}

/// Receives what the parser finds.
pub(crate) trait Handler {
    /// An `id:` field.
    fn id(&mut self, _id: &[u8]) {}
    /// A `data:` field of a frame of type `kind`.
    fn data(&mut self, kind: Kind, data: &[u8]);
    /// The blank line that ends a frame.
    fn end(&mut self, _kind: Kind) {}
}

/// Parser state of one stream.
#[derive(Debug)]
pub(crate) struct Parser {
    line: Vec<u8>,
    kind: Kind,
}

const MAX_LINE: usize = 16 * 1024 * 1024;

impl Parser {
    /// A parser at the start of a stream.
    pub(crate) fn new() -> Parser {
        Parser {
            line: Vec::new(),
            kind: Kind::Message,
        }
    }

    /// Parses the next bytes of the body.
    pub(crate) fn feed(&mut self, mut input: &[u8], h: &mut impl Handler) -> Result<(), String> {
        while !input.is_empty() {
            match input.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if self.line.is_empty() {
                        self.line_done(&input[..i], h);
                    } else {
                        let mut line = std::mem::take(&mut self.line);
                        line.extend_from_slice(&input[..i]);
                        self.line_done(&line, h);
                        line.clear();
                        self.line = line;
                    }
                    input = &input[i + 1..];
                }
                None => {
                    if self.line.len() + input.len() > MAX_LINE {
                        return Err("SSE line over 16 MiB".into());
                    }
                    self.line.extend_from_slice(input);
                    input = &[];
                }
            }
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], h: &mut impl Handler) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            h.end(self.kind);
            self.kind = Kind::Message;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => h.data(self.kind, value),
            b"id" => h.id(value),
            b"event" => {
                self.kind = match value {
                    b"message" => Kind::Message,
                    b"timeout" => Kind::Timeout,
                    b"failure" => Kind::Failure,
                    b"gap" => Kind::Gap,
                    _ => Kind::Other,
                }
            }
            _ => {}
        }
    }
}

/// The marker key that starts the bench payload object.
pub(crate) const MARKER: &[u8] = b"\"_sb\"";

/// What the publisher put in a message: channel index, publisher connection,
/// sequence number on that (channel, connection), send time in ns since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Payload {
    pub(crate) c: u64,
    pub(crate) k: u64,
    pub(crate) s: u64,
    pub(crate) t: u64,
}

/// Writes the payload JSON object (keys in sorted order, so a server that
/// re-serializes through a sorted map sends the same bytes).
pub(crate) fn write_payload(out: &mut Vec<u8>, p: &Payload, pad: usize) {
    use crate::http::push_u64;
    out.extend_from_slice(b"{\"_sb\":1,\"c\":");
    push_u64(out, p.c);
    out.extend_from_slice(b",\"k\":");
    push_u64(out, p.k);
    if pad > 0 {
        out.extend_from_slice(b",\"p\":\"");
        out.resize(out.len() + pad, b'x');
        out.push(b'"');
    }
    out.extend_from_slice(b",\"s\":");
    push_u64(out, p.s);
    out.extend_from_slice(b",\"t\":");
    push_u64(out, p.t);
    out.push(b'}');
}

/// Finds the payload object inside a `data:` value, wherever the server put it
/// (raw body for Nchan, `contents` of an envelope for ssehub), in any key order.
pub(crate) fn find_payload(data: &[u8]) -> Option<Payload> {
    let m = crate::http::find(data, MARKER)?;
    let open = data[..m].iter().rposition(|&b| b == b'{')?;
    let mut p = Payload::default();
    let mut i = open + 1;
    let skip_ws = |i: &mut usize| {
        while *i < data.len() && data[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if data.get(i) != Some(&b'"') {
            return None;
        }
        let key_start = i + 1;
        let key_len = data[key_start..].iter().position(|&b| b == b'"')?;
        let key = &data[key_start..key_start + key_len];
        i = key_start + key_len + 1;
        skip_ws(&mut i);
        if data.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        if data.get(i) == Some(&b'"') {
            let len = data[i + 1..].iter().position(|&b| b == b'"')?;
            i += len + 2;
        } else {
            let mut v: u64 = 0;
            let start = i;
            while let Some(&d) = data.get(i) {
                if !d.is_ascii_digit() {
                    break;
                }
                v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                i += 1;
            }
            if i == start {
                return None;
            }
            match key {
                b"c" => p.c = v,
                b"k" => p.k = v,
                b"s" => p.s = v,
                b"t" => p.t = v,
                _ => {}
            }
        }
        skip_ws(&mut i);
        match data.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Some(p),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Rec {
        ids: Vec<Vec<u8>>,
        data: Vec<(Kind, Vec<u8>)>,
        ends: usize,
    }
    impl Handler for Rec {
        fn id(&mut self, id: &[u8]) {
            self.ids.push(id.to_vec());
        }
        fn data(&mut self, kind: Kind, data: &[u8]) {
            self.data.push((kind, data.to_vec()));
        }
        fn end(&mut self, _kind: Kind) {
            self.ends += 1;
        }
    }

    #[test]
    fn parses_frames_across_splits() {
        let wire =
            b"retry: 2000\n: ssehub stream open\n\nid: e-1\ndata: {\"a\":1}\n\nevent: gap\r\ndata: x\r\n\r\n:\n\n";
        for step in [1, 2, 5, 100] {
            let mut p = Parser::new();
            let mut r = Rec::default();
            for piece in wire.chunks(step) {
                p.feed(piece, &mut r).unwrap();
            }
            assert_eq!(r.ids, vec![b"e-1".to_vec()]);
            assert_eq!(
                r.data,
                vec![(Kind::Message, b"{\"a\":1}".to_vec()), (Kind::Gap, b"x".to_vec())]
            );
            assert_eq!(r.ends, 4);
        }
    }

    #[test]
    fn payload_round_trip() {
        let p = Payload {
            c: 3,
            k: 1,
            s: 17,
            t: 1_700_000_000_123_456_789,
        };
        for pad in [0, 10] {
            let mut obj = Vec::new();
            write_payload(&mut obj, &p, pad);
            let serde: serde_json::Value = serde_json::from_slice(&obj).unwrap();
            assert_eq!(serde["s"], 17);
            // Nchan: the raw body; ssehub: inside an envelope, maybe re-ordered and spaced.
            let raw = [b"{\"name\":\"bench\",\"contents\":".as_slice(), &obj, b"}"].concat();
            assert_eq!(find_payload(&raw), Some(p));
            let env = format!(
                "{{\"channel\":\"x\",\"contents\":{},\"id\":\"ab-1\",\"time\":\"t\"}}",
                serde_json::to_string(&serde).unwrap()
            );
            assert_eq!(find_payload(env.as_bytes()), Some(p));
        }
        let spaced = br#"{"contents": {"t": 5, "s": 4, "_sb": 1, "c": 2, "k": 0}}"#;
        assert_eq!(find_payload(spaced), Some(Payload { c: 2, k: 0, s: 4, t: 5 }));
        assert_eq!(find_payload(b"{\"x\":1}"), None);
    }
}
