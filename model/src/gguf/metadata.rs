//! GGUF metadata values and the key/value map with typed getters.

use super::error::GgufError;
use std::collections::HashMap;

/// GGUF metadata value type ids (the `gguf_type` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    /// u8
    U8 = 0,
    /// i8
    I8 = 1,
    /// u16
    U16 = 2,
    /// i16
    I16 = 3,
    /// u32
    U32 = 4,
    /// i32
    I32 = 5,
    /// f32
    F32 = 6,
    /// bool (one byte)
    Bool = 7,
    /// length-prefixed UTF-8 string
    String = 8,
    /// typed array
    Array = 9,
    /// u64
    U64 = 10,
    /// i64
    I64 = 11,
    /// f64
    F64 = 12,
}

impl ValueType {
    /// The type with id `id`, if known.
    pub fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Smallest encoded size of one value of this type (used to bound allocations).
    pub fn min_encoded_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// u8
    U8(u8),
    /// i8
    I8(i8),
    /// u16
    U16(u16),
    /// i16
    I16(i16),
    /// u32
    U32(u32),
    /// i32
    I32(i32),
    /// u64
    U64(u64),
    /// i64
    I64(i64),
    /// f32
    F32(f32),
    /// f64
    F64(f64),
    /// bool
    Bool(bool),
    /// string
    String(String),
    /// Array; all elements have the same type in a valid file. An empty array is written with
    /// element type u8.
    Array(Vec<MetadataValue>),
}

impl MetadataValue {
    /// The GGUF type of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F32(_) => ValueType::F32,
            Self::F64(_) => ValueType::F64,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Array(_) => ValueType::Array,
        }
    }

    /// A short name of the type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F32(_) => "f32",
            Self::F64(_) => "f64",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
        }
    }

    /// The value as an i128 when it is any integer type.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v as i128,
            Self::I8(v) => v as i128,
            Self::U16(v) => v as i128,
            Self::I16(v) => v as i128,
            Self::U32(v) => v as i128,
            Self::I32(v) => v as i128,
            Self::U64(v) => v as i128,
            Self::I64(v) => v as i128,
            _ => return None,
        })
    }

    /// The value as f32 when it is f32 or f64.
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Self::F32(v) => Some(v),
            Self::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    /// The string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
}

impl From<&str> for MetadataValue {
    fn from(s: &str) -> Self {
        Self::String(s.to_string())
    }
}
impl From<String> for MetadataValue {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}
impl From<u32> for MetadataValue {
    fn from(v: u32) -> Self {
        Self::U32(v)
    }
}
impl From<i32> for MetadataValue {
    fn from(v: i32) -> Self {
        Self::I32(v)
    }
}
impl From<u64> for MetadataValue {
    fn from(v: u64) -> Self {
        Self::U64(v)
    }
}
impl From<f32> for MetadataValue {
    fn from(v: f32) -> Self {
        Self::F32(v)
    }
}
impl From<bool> for MetadataValue {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}
impl<T: Into<MetadataValue>> From<Vec<T>> for MetadataValue {
    fn from(v: Vec<T>) -> Self {
        Self::Array(v.into_iter().map(Into::into).collect())
    }
}

/// Metadata key/value pairs in file order, with lookup by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, MetadataValue)>,
    index: HashMap<String, usize>,
}

macro_rules! int_getters {
    ($($get:ident, $opt:ident, $t:ty);* $(;)?) => {$(
        #[doc = concat!("The value of `key` as ", stringify!($t), "; any integer type whose value fits is accepted.")]
        pub fn $get(&self, key: &str) -> Result<$t, GgufError> {
            self.$opt(key)?.ok_or_else(|| GgufError::MissingKey(key.to_string()))
        }
        #[doc = concat!("Like [`Self::", stringify!($get), "`], but `Ok(None)` when the key is missing.")]
        pub fn $opt(&self, key: &str) -> Result<Option<$t>, GgufError> {
            let Some(v) = self.get(key) else { return Ok(None) };
            let i = v.as_integer().ok_or_else(|| GgufError::WrongType {
                key: key.to_string(),
                expected: "integer",
                found: v.type_name(),
            })?;
            <$t>::try_from(i).map(Some).map_err(|_| GgufError::OutOfRange {
                key: key.to_string(),
                value: i.to_string(),
                target: stringify!($t),
            })
        }
    )*};
}

impl Metadata {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts a pair; error if the key exists.
    pub fn insert(
        &mut self,
        key: impl Into<String>,
        value: impl Into<MetadataValue>,
    ) -> Result<(), GgufError> {
        let key = key.into();
        if self.index.contains_key(&key) {
            return Err(GgufError::DuplicateKey(key));
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value.into()));
        Ok(())
    }

    /// Inserts or replaces a pair (replacement keeps the original position).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<MetadataValue>) {
        let key = key.into();
        let value = value.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pairs in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The raw value of `key`.
    pub fn get(&self, key: &str) -> Option<&MetadataValue> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// True when `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    fn require(&self, key: &str) -> Result<&MetadataValue, GgufError> {
        self.get(key)
            .ok_or_else(|| GgufError::MissingKey(key.to_string()))
    }

    fn wrong(key: &str, expected: &'static str, v: &MetadataValue) -> GgufError {
        GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: v.type_name(),
        }
    }

    int_getters! {
        get_u32, get_u32_opt, u32;
        get_i32, get_i32_opt, i32;
        get_u64, get_u64_opt, u64;
        get_i64, get_i64_opt, i64;
        get_usize, get_usize_opt, usize;
    }

    /// The string value of `key`.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong(key, "string", v))
    }

    /// Like [`Self::get_str`], but `Ok(None)` when missing.
    pub fn get_str_opt(&self, key: &str) -> Result<Option<&str>, GgufError> {
        if self.contains(key) {
            self.get_str(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The float value of `key` (f32, or f64 narrowed to f32).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        v.as_f32().ok_or_else(|| Self::wrong(key, "float", v))
    }

    /// Like [`Self::get_f32`], but `Ok(None)` when missing.
    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>, GgufError> {
        if self.contains(key) {
            self.get_f32(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The bool value of `key`.
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        match self.require(key)? {
            MetadataValue::Bool(b) => Ok(*b),
            v => Err(Self::wrong(key, "bool", v)),
        }
    }

    /// Like [`Self::get_bool`], but `Ok(None)` when missing.
    pub fn get_bool_opt(&self, key: &str) -> Result<Option<bool>, GgufError> {
        if self.contains(key) {
            self.get_bool(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The array value of `key`.
    pub fn get_array(&self, key: &str) -> Result<&[MetadataValue], GgufError> {
        match self.require(key)? {
            MetadataValue::Array(a) => Ok(a),
            v => Err(Self::wrong(key, "array", v)),
        }
    }

    /// The array of strings at `key`.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        self.get_array(key)?
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| Self::wrong(key, "array of string", v))
            })
            .collect()
    }

    /// The array of floats at `key` (f32 or f64 elements).
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>, GgufError> {
        self.get_array(key)?
            .iter()
            .map(|v| {
                v.as_f32()
                    .ok_or_else(|| Self::wrong(key, "array of float", v))
            })
            .collect()
    }

    fn int_array<T: TryFrom<i128>>(
        &self,
        key: &str,
        target: &'static str,
    ) -> Result<Vec<T>, GgufError> {
        self.get_array(key)?
            .iter()
            .map(|v| {
                let i = v
                    .as_integer()
                    .ok_or_else(|| Self::wrong(key, "array of integer", v))?;
                T::try_from(i).map_err(|_| GgufError::OutOfRange {
                    key: key.to_string(),
                    value: i.to_string(),
                    target,
                })
            })
            .collect()
    }

    /// The array of integers at `key` as i32 (any integer element type whose values fit).
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>, GgufError> {
        self.int_array(key, "i32")
    }

    /// The array of integers at `key` as u32 (any integer element type whose values fit).
    pub fn get_u32_array(&self, key: &str) -> Result<Vec<u32>, GgufError> {
        self.int_array(key, "u32")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metadata {
        let mut m = Metadata::new();
        m.insert("a.u8", MetadataValue::U8(7)).unwrap();
        m.insert("a.i64", MetadataValue::I64(-3)).unwrap();
        m.insert("a.big", MetadataValue::U64(1 << 40)).unwrap();
        m.insert("a.f", 1.5f32).unwrap();
        m.insert("a.s", "hi").unwrap();
        m.insert("a.b", true).unwrap();
        m.insert("a.strs", vec!["x", "y"]).unwrap();
        m.insert(
            "a.ints",
            MetadataValue::Array(vec![MetadataValue::I8(-1), MetadataValue::U16(300)]),
        )
        .unwrap();
        m
    }

    #[test]
    fn typed_getters() {
        let m = sample();
        assert_eq!(m.get_u32("a.u8").unwrap(), 7);
        assert_eq!(m.get_i32("a.i64").unwrap(), -3);
        assert_eq!(m.get_u64("a.big").unwrap(), 1 << 40);
        assert_eq!(m.get_f32("a.f").unwrap(), 1.5);
        assert_eq!(m.get_str("a.s").unwrap(), "hi");
        assert!(m.get_bool("a.b").unwrap());
        assert_eq!(m.get_str_array("a.strs").unwrap(), vec!["x", "y"]);
        assert_eq!(m.get_i32_array("a.ints").unwrap(), vec![-1, 300]);
        assert_eq!(m.get_u32_opt("nope").unwrap(), None);
        assert_eq!(m.get_str_opt("a.s").unwrap(), Some("hi"));
    }

    #[test]
    fn getter_errors() {
        let m = sample();
        assert!(matches!(m.get_u32("nope"), Err(GgufError::MissingKey(k)) if k == "nope"));
        assert!(matches!(
            m.get_u32("a.s"),
            Err(GgufError::WrongType {
                expected: "integer",
                found: "string",
                ..
            })
        ));
        assert!(matches!(
            m.get_u32("a.i64"),
            Err(GgufError::OutOfRange { target: "u32", .. })
        ));
        assert!(matches!(
            m.get_u32("a.big"),
            Err(GgufError::OutOfRange { .. })
        ));
        assert!(matches!(m.get_str("a.f"), Err(GgufError::WrongType { .. })));
        assert!(matches!(
            m.get_f32_array("a.strs"),
            Err(GgufError::WrongType { .. })
        ));
        assert!(matches!(
            m.get_u32_array("a.ints"),
            Err(GgufError::OutOfRange { .. })
        ));
        assert!(matches!(
            m.get_bool_opt("a.u8"),
            Err(GgufError::WrongType { .. })
        ));
        let mut m2 = sample();
        assert!(matches!(
            m2.insert("a.s", 1u32),
            Err(GgufError::DuplicateKey(_))
        ));
        m2.set("a.s", 2u32);
        assert_eq!(m2.get_u32("a.s").unwrap(), 2);
    }
}
