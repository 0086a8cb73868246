//! Is a plugin's output data JSON? Every output of every plugin is checked
//! before it is written, so this is on the hot path: serde_json's
//! `IgnoredAny` spent about 10,000 instructions on a 600-byte domain-fanout
//! payload (a tenth of the whole plugin stage, callgrind); this scanner
//! accepts exactly the same inputs in a fraction of that. serde_json stays
//! the reference: the stage asks it for the error message when this says no,
//! and the tests compare the two on every input they make.

/// Whether `s` is one JSON value (RFC 8259) with optional whitespace around
/// it, accepting what `serde_json::from_str::<IgnoredAny>` accepts: any
/// nesting depth, numbers by their syntax alone (`1e999` is fine), `\u`
/// escapes without checking surrogate pairs.
pub fn is_json(s: &str) -> bool {
    let mut p = Scanner {
        s: s.as_bytes(),
        i: 0,
    };
    let mut nest = Nest::default();
    'value: loop {
        p.whitespace();
        let ok = match p.peek() {
            open @ (b'{' | b'[') => {
                let object = open == b'{';
                p.i += 1;
                p.whitespace();
                if p.peek() != closer(object) {
                    nest.push(object);
                    if object && !p.key() {
                        return false;
                    }
                    continue 'value;
                }
                p.i += 1;
                true
            }
            b'"' => {
                p.i += 1;
                p.string()
            }
            b't' => p.literal(b"true"),
            b'f' => p.literal(b"false"),
            b'n' => p.literal(b"null"),
            b'-' | b'0'..=b'9' => p.number(),
            _ => false,
        };
        if !ok {
            return false;
        }
        // A value ended: a comma, or the end of its container (and maybe of
        // the containers around it), or the end of the input.
        loop {
            p.whitespace();
            let Some(object) = nest.top() else {
                return p.i == p.s.len();
            };
            match p.peek() {
                b',' => {
                    p.i += 1;
                    if object {
                        p.whitespace();
                        if !p.key() {
                            return false;
                        }
                    }
                    continue 'value;
                }
                c if c == closer(object) => {
                    p.i += 1;
                    nest.pop();
                }
                _ => return false,
            }
        }
    }
}

/// The byte that closes an object (`true`) or an array.
fn closer(object: bool) -> u8 {
    if object { b'}' } else { b']' }
}

/// The open containers, innermost last (`true`: an object). The first 128
/// levels are bits, so a normal payload never allocates.
#[derive(Default)]
struct Nest {
    bits: u128,
    depth: usize,
    deeper: Vec<bool>,
}

impl Nest {
    fn push(&mut self, object: bool) {
        if self.depth < 128 {
            let bit = 1u128 << self.depth;
            if object {
                self.bits |= bit;
            } else {
                self.bits &= !bit;
            }
        } else {
            self.deeper.push(object);
        }
        self.depth += 1;
    }

    fn top(&self) -> Option<bool> {
        match self.depth {
            0 => None,
            d if d <= 128 => Some(self.bits & (1u128 << (d - 1)) != 0),
            _ => self.deeper.last().copied(),
        }
    }

    fn pop(&mut self) {
        if self.depth > 128 {
            self.deeper.pop();
        }
        self.depth = self.depth.saturating_sub(1);
    }
}

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

/// Bytes that end the plain run of a string: `"`, `\` and the control
/// characters, which JSON forbids unescaped.
const STOPS: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// How many bytes at the start of `rest` are neither a stop (see [`STOPS`]):
/// eight at a time, with the zero-byte test of Mycroft's `strlen` applied to
/// "below 0x20", "is `\"`" and "is `\\`". Each test can flag a byte wrongly
/// only above a byte it flags rightly, so the lowest flagged byte is a stop.
pub(crate) fn plain_run(rest: &[u8]) -> usize {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let mut n = 0;
    for chunk in rest.chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let v = u64::from_le_bytes(word);
        let control = v.wrapping_sub(ONES * 0x20) & !v;
        let q = v ^ (ONES * u64::from(b'"'));
        let quote = q.wrapping_sub(ONES) & !q;
        let b = v ^ (ONES * u64::from(b'\\'));
        let backslash = b.wrapping_sub(ONES) & !b;
        let stops = (control | quote | backslash) & HIGH;
        if stops != 0 {
            return n + (stops.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    let tail = rest.get(n..).unwrap_or_default();
    n + tail
        .iter()
        .position(|&b| STOPS[b as usize])
        .unwrap_or(tail.len())
}

impl Scanner<'_> {
    /// The next byte, or 0 at the end (0 is never valid where it is asked).
    fn peek(&self) -> u8 {
        self.s.get(self.i).copied().unwrap_or(0)
    }

    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> bool {
        if self.peek() != b'"' {
            return false;
        }
        self.i += 1;
        if !self.string() {
            return false;
        }
        self.whitespace();
        if self.peek() != b':' {
            return false;
        }
        self.i += 1;
        true
    }

    /// The rest of a string after its opening quote.
    fn string(&mut self) -> bool {
        loop {
            self.i += plain_run(self.s.get(self.i..).unwrap_or_default());
            match self.peek() {
                b'"' => {
                    self.i += 1;
                    return true;
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek() {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.s.get(self.i + 1..self.i + 5).unwrap_or_default();
                            if hex.len() != 4 || !hex.iter().all(u8::is_ascii_hexdigit) {
                                return false;
                            }
                            self.i += 5;
                        }
                        _ => return false,
                    }
                }
                // A control character, or the end of the input.
                _ => return false,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        if self.s.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_ascii_digit() {
            self.i += 1;
        }
        self.i - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> bool {
        if self.peek() == b'-' {
            self.i += 1;
        }
        match self.peek() {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return false,
        }
        if self.peek() == b'.' {
            self.i += 1;
            if self.digits() == 0 {
                return false;
            }
        }
        if let b'e' | b'E' = self.peek() {
            self.i += 1;
            if let b'+' | b'-' = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::is_json;

    /// The scanner and serde_json agree on `s`: the fuzz target's check.
    fn same(s: &str) {
        crate::fuzzing::json_check(s.as_bytes());
    }

    #[test]
    fn agrees_with_serde_json_on_chosen_cases() {
        let cases = [
            "",
            " ",
            "null",
            " null ",
            "nul",
            "nulll",
            "true",
            "tru",
            "false",
            "falsey",
            "0",
            "-0",
            "-",
            "01",
            "1.",
            "1.5",
            ".5",
            "1e",
            "1e5",
            "1E+5",
            "1e-5",
            "1e+",
            "+1",
            "-1.5e-3",
            "1e999",
            "123456789012345678901234567890",
            "0x10",
            "\"\"",
            "\"a\"",
            "\"a",
            "\"\\\"\"",
            "\"\\u00e9\"",
            "\"\\u00g9\"",
            "\"\\u00e\"",
            "\"\\ud800\"",
            "\"\\x\"",
            "\"tab\there\"",
            "\"\u{7f}\"",
            "\"é ü 日本\"",
            "[]",
            "[ ]",
            "[1,]",
            "[,1]",
            "[1 2]",
            "[1,2]",
            "[[]]",
            "[[]",
            "[]]",
            "{}",
            "{ }",
            "{\"a\":1}",
            "{\"a\" : 1 , \"b\":[true,null]}",
            "{\"a\"}",
            "{\"a\":}",
            "{a:1}",
            "{\"a\":1,}",
            "{,}",
            "{\"a\":1}}",
            "{\"a\":1]",
            "[1}",
            "1 2",
            "{} {}",
            "\u{feff}{}",
            "{\"a\":\"\\/\\b\\f\\n\\r\\t\"}",
            "[\"\\u0000\"]",
            "\"\0\"",
            "\t\r\n[1]\n",
            "[1]\u{b}",
            "[\"a\",{\"b\":[{}]}]",
            "{\"k\":-0.0e-0}",
            "[-]",
            "[--1]",
            "[1e1.5]",
            "[1.5e]",
            "{\"\":\"\"}",
            "{\"a\":1 \"b\":2}",
            "[true false]",
            "[nulls]",
        ];
        for case in cases {
            same(case);
        }
    }

    /// The eight-at-a-time run against the byte-by-byte table, on bytes
    /// around every boundary the word tests use (and high UTF-8 bytes).
    #[test]
    fn plain_run_matches_the_table() {
        let pool = [
            0x00, 0x01, 0x1f, 0x20, 0x21, b'"', b'#', b'[', b'\\', b']', 0x7f, 0x80, 0x9f, 0xa0,
            0xdc, 0xe2, 0xff, b'a',
        ];
        let mut seed: u64 = 0x0dd_ba11;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let mut x = seed;
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    x = x.rotate_left(7) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    // Mostly plain bytes, so runs are long enough to cross words.
                    if x.is_multiple_of(5) {
                        pool[(x >> 8) as usize % pool.len()]
                    } else {
                        b'a' + (x % 26) as u8
                    }
                })
                .collect();
            let naive = bytes
                .iter()
                .position(|&b| super::STOPS[b as usize])
                .unwrap_or(len);
            assert_eq!(super::plain_run(&bytes), naive, "{bytes:?}");
        }
    }

    #[test]
    fn nesting_of_any_depth() {
        for depth in [1, 127, 128, 129, 130, 300, 5000] {
            let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            same(&arrays);
            let objects = format!("{}1{}", "{\"k\":".repeat(depth), "}".repeat(depth));
            same(&objects);
            let mixed: String = (0..depth)
                .map(|i| if i % 2 == 0 { "[" } else { "{\"k\":" })
                .collect();
            let close: String = (0..depth)
                .rev()
                .map(|i| if i % 2 == 0 { "]" } else { "}" })
                .collect();
            same(&format!("{mixed}0{close}"));
            // One closer of the wrong kind at the innermost level.
            same(&format!("{mixed}0{}", close.replacen(']', "}", 1)));
            // Unclosed.
            same(&mixed);
        }
    }

    /// Every truncation and many single-byte changes of real payloads,
    /// from a fixed seed: the scanner and serde_json must agree on each.
    #[test]
    fn agrees_with_serde_json_on_mutated_payloads() {
        let payloads = [
            r#"{"eventType":"prison-offender-events.prisoner.released","additionalInformation":{"nomsNumber":"A1234BC","reason":"RELEASED","prisonId":"MDI"},"version":1,"occurredAt":"2024-06-11T14:41:22+01:00","description":"A prisoner has been released","personReference":{"identifiers":[{"type":"NOMS","value":"A1234BC"},{"type":"CRN","value":"X123456"}]},"identifiers":{"NOMS":"A1234BC"},"domain":"prison-offender-events","n":-12.5e-3,"ok":true,"none":null,"esc":"a\"b\\c\/d\u00e9\n"}"#,
            r#"[1,[2,[3,{"a":[]}]],{"b":{"c":"d"}},"x",0,-0.0,1E+2,false]"#,
        ];
        let bytes: &[u8] = b"{}[]\":,\\ \t\n0123456789-+.eEtrufalsn\x01\x1fu/b";
        let mut seed: u64 = 0x5eed_2026;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut checked = 0;
        for payload in payloads {
            assert!(is_json(payload), "{payload}");
            for end in 0..payload.len() {
                if let Some(cut) = payload.get(..end) {
                    same(cut);
                    checked += 1;
                }
            }
            for _ in 0..20_000 {
                let mut b = payload.as_bytes().to_vec();
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % b.len();
                    match next() % 3 {
                        0 => b[at] = bytes[(next() as usize) % bytes.len()],
                        1 => {
                            b.remove(at);
                        }
                        _ => b.insert(at, bytes[(next() as usize) % bytes.len()]),
                    }
                }
                if let Ok(s) = std::str::from_utf8(&b) {
                    same(s);
                    checked += 1;
                }
            }
        }
        assert!(checked > 30_000, "only {checked} inputs checked");
    }
}
