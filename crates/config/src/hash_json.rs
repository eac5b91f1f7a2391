//! Compact JSON for [`crate::Config::hash`]: byte for byte what `serde_json::to_writer` writes,
//! with a faster path for the common string (nothing to escape: one vectorizable check and a
//! copy, where serde_json looks each byte up). Numbers, strings that need escapes and the rest
//! are written by serde_json itself; map keys other than strings and integers are refused
//! (the caller then writes with serde_json).

use serde::Serialize;
use serde::ser::{self, Impossible};
use serde_json::Error;

/// The name `serde_json::value::RawValue` serializes as a struct with (one field of the same
/// name holding the JSON text), which serde_json writes as is.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// Writes `value` as compact JSON at the end of `buf`.
pub(crate) fn write<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    value.serialize(Json(buf))
}

/// A JSON string, escaped as serde_json escapes it (only `"`, `\` and control characters).
fn write_str(buf: &mut Vec<u8>, s: &str) -> Result<(), Error> {
    if is_plain(s.as_bytes()) {
        buf.reserve(s.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
        Ok(())
    } else {
        s.serialize(&mut serde_json::Serializer::new(buf))
    }
}

/// Whether a string has nothing to escape: no `"`, `\\` or control character. Eight bytes at a
/// time (the last ones padded with spaces), each step a few word operations.
fn is_plain(s: &[u8]) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // a high bit set where a byte of `x` is zero (exact as to whether there is one)
    fn zero(x: u64) -> u64 {
        x.wrapping_sub(LO) & !x & HI
    }
    // a high bit set where a byte of `x` needs an escape
    fn bad(x: u64) -> u64 {
        // bytes below 0x20 (those of 0x80 and above never count)
        let control = x.wrapping_sub(LO * 0x20) & !x & HI;
        control | zero(x ^ (LO * u64::from(b'"'))) | zero(x ^ (LO * u64::from(b'\\')))
    }
    let mut chunks = s.chunks_exact(8);
    let mut found = 0;
    for c in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(c);
        found |= bad(u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [b' '; 8];
        word[..rest.len()].copy_from_slice(rest);
        found |= bad(u64::from_le_bytes(word));
    }
    found == 0
}

/// The serializer: a value.
struct Json<'a>(&'a mut Vec<u8>);

/// Delegates a scalar to serde_json's own serializer.
macro_rules! delegate {
    ($($method:ident($t:ty)),* $(,)?) => {
        $(fn $method(self, v: $t) -> Result<(), Error> {
            ser::Serializer::$method(&mut serde_json::Serializer::new(self.0), v)
        })*
    };
}

impl<'a> ser::Serializer for Json<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    delegate!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_bytes(&[u8]),
    );

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.0, v)
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        self.serialize_none()
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_none()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        write_str(self.0, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.0.push(b'{');
        write_str(self.0, variant)?;
        self.0.push(b':');
        value.serialize(Json(&mut *self.0))?;
        self.0.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, Error> {
        self.0.push(b'[');
        Ok(Compound::new(self.0))
    }
    fn serialize_tuple(self, len: usize) -> Result<Compound<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, Error> {
        self.0.push(b'{');
        write_str(self.0, variant)?;
        self.0.extend_from_slice(b":[");
        Ok(Compound::new(self.0))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'a>, Error> {
        self.0.push(b'{');
        Ok(Compound::new(self.0))
    }
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Compound<'a>, Error> {
        if name == RAW_VALUE_TOKEN {
            let mut c = Compound::new(self.0);
            c.raw = true;
            return Ok(c);
        }
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, Error> {
        self.0.push(b'{');
        write_str(self.0, variant)?;
        self.0.extend_from_slice(b":{");
        Ok(Compound::new(self.0))
    }
}

/// An array, object or struct being written.
struct Compound<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
    /// A `RawValue`: its one field is JSON text, written as is.
    raw: bool,
}

impl<'a> Compound<'a> {
    fn new(buf: &'a mut Vec<u8>) -> Self {
        Compound {
            buf,
            first: true,
            raw: false,
        }
    }
    fn separate(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.buf.push(b',');
        }
    }
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.separate();
        value.serialize(Json(&mut *self.buf))
    }
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), Error> {
        if self.raw {
            return value.serialize(RawText(&mut *self.buf));
        }
        self.separate();
        write_str(self.buf, key)?;
        self.buf.push(b':');
        value.serialize(Json(&mut *self.buf))
    }
}

impl ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.buf.push(b']');
        Ok(())
    }
}

impl ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.buf.push(b']');
        Ok(())
    }
}

impl ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.buf.push(b']');
        Ok(())
    }
}

impl ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.buf.extend_from_slice(b"]}");
        Ok(())
    }
}

impl ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.separate();
        key.serialize(Key(&mut *self.buf))
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.buf.push(b':');
        value.serialize(Json(&mut *self.buf))
    }
    fn end(self) -> Result<(), Error> {
        self.buf.push(b'}');
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), Error> {
        if !self.raw {
            self.buf.push(b'}');
        }
        Ok(())
    }
}

impl ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.field(key, value)
    }
    fn end(self) -> Result<(), Error> {
        self.buf.extend_from_slice(b"}}");
        Ok(())
    }
}

/// Refuses a value: the caller then writes the whole document with serde_json.
fn refused() -> Error {
    ser::Error::custom("not written by the fast JSON writer")
}

/// Methods that refuse their value.
macro_rules! refuse {
    ($($method:ident($($t:ty),*)),* $(,)?) => {
        $(fn $method(self, $(_: $t),*) -> Result<(), Error> {
            Err(refused())
        })*
    };
}

/// Refuses every compound value.
macro_rules! refuse_compounds {
    () => {
        fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Error> {
            Err(refused())
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<(), Error> {
            Err(refused())
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Impossible<(), Error>, Error> {
            Err(refused())
        }
        fn serialize_tuple(self, _: usize) -> Result<Impossible<(), Error>, Error> {
            Err(refused())
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Impossible<(), Error>, Error> {
            Err(refused())
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Impossible<(), Error>, Error> {
            Err(refused())
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Impossible<(), Error>, Error> {
            Err(refused())
        }
        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Impossible<(), Error>, Error> {
            Err(refused())
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Impossible<(), Error>, Error> {
            Err(refused())
        }
    };
}

/// A map key: a string, or an integer written as a string (as serde_json writes them).
struct Key<'a>(&'a mut Vec<u8>);

/// An integer key, quoted.
macro_rules! quoted {
    ($($method:ident($t:ty)),* $(,)?) => {
        $(fn $method(self, v: $t) -> Result<(), Error> {
            self.0.push(b'"');
            ser::Serializer::$method(&mut serde_json::Serializer::new(&mut *self.0), v)?;
            self.0.push(b'"');
            Ok(())
        })*
    };
}

impl ser::Serializer for Key<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    quoted!(
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
    );
    refuse!(
        serialize_bool(bool),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
    );
    refuse_compounds!();

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.0, v)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        write_str(self.0, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
}

/// The JSON text of a `RawValue`, written as is.
struct RawText<'a>(&'a mut Vec<u8>);

impl ser::Serializer for RawText<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    refuse!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );
    refuse_compounds!();

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.0.extend_from_slice(v.as_bytes());
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn plain_strings_are_told_apart_byte_by_byte() {
        let plain = |s: &[u8]| s.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\');
        for len in 0..20 {
            for pos in 0..len.max(1) {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    if len > 0 {
                        s[pos] = b;
                    }
                    assert_eq!(is_plain(&s), plain(&s), "{s:?}");
                    // next to bytes of 0x80 and above, and to a bad byte
                    let mut hi = vec![0xc3u8; len];
                    if len > 0 {
                        hi[pos] = b;
                    }
                    assert_eq!(is_plain(&hi), plain(&hi), "{hi:?}");
                }
            }
        }
    }

    fn same<T: Serialize>(v: &T) {
        let mut fast = Vec::new();
        write(&mut fast, v).expect("written");
        let plain = serde_json::to_vec(v).expect("serialized");
        assert_eq!(
            String::from_utf8_lossy(&fast),
            String::from_utf8_lossy(&plain)
        );
    }

    #[derive(Serialize)]
    enum E {
        Unit,
        New(u8),
        Tuple(u8, String),
        Struct { a: Option<f64> },
    }

    #[derive(Serialize)]
    struct S {
        a: Vec<E>,
        b: (i64, f32, bool, char),
        c: BTreeMap<u16, Vec<u8>>,
        d: BTreeMap<String, ()>,
        #[serde(with = "serde_bytes_like")]
        e: Vec<u8>,
        f: Box<serde_json::value::RawValue>,
    }

    mod serde_bytes_like {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
    }

    #[test]
    fn writes_what_serde_json_writes() {
        same(
            &json!({"a": [1, -2, 3.5, 1e300, null, true, "x\"y\\z\n\u{1}é", {}, []], "b": {"": ""}}),
        );
        same(&"plain");
        same(&"tab\there");
        same(&E::Unit);
        same(&S {
            a: vec![
                E::Unit,
                E::New(7),
                E::Tuple(1, "q\"".into()),
                E::Struct { a: Some(0.1) },
                E::Struct { a: None },
            ],
            b: (-5, 1.25, false, '"'),
            c: BTreeMap::from([(3, vec![1, 2]), (10, vec![])]),
            d: BTreeMap::from([("k\u{7f}".to_string(), ())]),
            e: vec![0, 255],
            f: serde_json::value::to_raw_value(&json!({"x": [1, 2]})).expect("raw"),
        });
        same(&uuid::Uuid::from_u128(0x1234));
        same(&f64::NAN);
    }

    #[test]
    fn refuses_other_keys() {
        let mut buf = Vec::new();
        let m = BTreeMap::from([(true, 1)]);
        assert!(write(&mut buf, &m).is_err());
    }
}
