//! A small JSON writer for webhook bodies: writes straight into one `String`, with no
//! intermediate tree, so building a body costs a fraction of `serde_json::json!` (which
//! allocates a map per object and a string per value) inside a fresh instance.
//!
//! ```ignore
//! let body = json::object(|o| {
//!     o.str("text", "capsule.create failed");
//!     o.array("blocks", |a| {
//!         a.object(|b| {
//!             b.str("type", "section");
//!             b.uint("count", 3);
//!         });
//!     });
//! });
//! assert_eq!(body, r#"{"text":"capsule.create failed","blocks":[{"type":"section","count":3}]}"#);
//! ```

use std::fmt::Write as _;

/// Writes a JSON object and returns it as text.
pub fn object(f: impl FnOnce(&mut Object<'_>)) -> String {
    let mut out = String::with_capacity(512);
    Object::write(&mut out, f);
    out
}

/// Writes a JSON array and returns it as text.
pub fn array(f: impl FnOnce(&mut Array<'_>)) -> String {
    let mut out = String::with_capacity(256);
    Array::write(&mut out, f);
    out
}

/// The members of an object being written. Each method writes one `"key":value`.
#[derive(Debug)]
pub struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

/// The elements of an array being written.
#[derive(Debug)]
pub struct Array<'a> {
    out: &'a mut String,
    first: bool,
}

impl Object<'_> {
    fn write(out: &mut String, f: impl FnOnce(&mut Object<'_>)) {
        out.push('{');
        f(&mut Object { out, first: true });
        out.push('}');
    }

    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        write_string(self.out, key);
        self.out.push(':');
        self.out
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        let out = self.key(key);
        write_string(out, value);
        self
    }

    /// A string member when `value` is `Some`; nothing otherwise.
    pub fn opt_str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.str(key, v);
        }
        self
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        let out = self.key(key);
        let _ = write!(out, "{value}");
        self
    }

    pub fn uint(&mut self, key: &str, value: u64) -> &mut Self {
        let out = self.key(key);
        let _ = write!(out, "{value}");
        self
    }

    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.key(key).push_str(if value { "true" } else { "false" });
        self
    }

    pub fn null(&mut self, key: &str) -> &mut Self {
        self.key(key).push_str("null");
        self
    }

    pub fn object(&mut self, key: &str, f: impl FnOnce(&mut Object<'_>)) -> &mut Self {
        let out = self.key(key);
        Object::write(out, f);
        self
    }

    pub fn array(&mut self, key: &str, f: impl FnOnce(&mut Array<'_>)) -> &mut Self {
        let out = self.key(key);
        Array::write(out, f);
        self
    }
}

impl Array<'_> {
    fn write(out: &mut String, f: impl FnOnce(&mut Array<'_>)) {
        out.push('[');
        f(&mut Array { out, first: true });
        out.push(']');
    }

    fn next(&mut self) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out
    }

    pub fn str(&mut self, value: &str) -> &mut Self {
        let out = self.next();
        write_string(out, value);
        self
    }

    pub fn int(&mut self, value: i64) -> &mut Self {
        let out = self.next();
        let _ = write!(out, "{value}");
        self
    }

    pub fn bool(&mut self, value: bool) -> &mut Self {
        self.next().push_str(if value { "true" } else { "false" });
        self
    }

    pub fn object(&mut self, f: impl FnOnce(&mut Object<'_>)) -> &mut Self {
        let out = self.next();
        Object::write(out, f);
        self
    }

    pub fn array(&mut self, f: impl FnOnce(&mut Array<'_>)) -> &mut Self {
        let out = self.next();
        Array::write(out, f);
        self
    }
}

/// Appends `s` as a JSON string literal, quotes included.
pub fn write_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_nested_documents() {
        let body = object(|o| {
            o.str("text", "a \"b\"\n\\ \u{1}é");
            o.array("list", |a| {
                a.int(-1).bool(true).str("x");
                a.object(|inner| {
                    inner.uint("n", 7).null("z").opt_str("none", None);
                });
                a.array(|_| {});
            });
            o.object("empty", |_| {});
        });
        assert_eq!(
            body,
            r#"{"text":"a \"b\"\n\\ \u0001é","list":[-1,true,"x",{"n":7,"z":null},[]],"empty":{}}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["text"], "a \"b\"\n\\ \u{1}é");
        assert_eq!(
            array(|a| {
                a.str("only");
            }),
            r#"["only"]"#
        );
    }

    /// Any string survives a round trip through serde_json.
    #[test]
    fn strings_round_trip() {
        let all: String = (0u32..0x300).filter_map(char::from_u32).collect();
        for s in [all.as_str(), "", "\u{2028}\u{2029}", "🚀 \"quoted\""] {
            let mut out = String::new();
            write_string(&mut out, s);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s);
        }
    }
}
