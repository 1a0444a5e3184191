//! A nesting limit for decoding payloads.
//!
//! Postcard decodes a recursive type (a tree, a linked list, a thread of
//! replies) by recursion, one stack frame group per level, and it has no
//! limit of its own: an entry of a few tens of kilobytes nested deep enough
//! overflowed a 2 MiB tokio worker stack, which aborts the process (found
//! by the `entry_decode` fuzz target's recursive type). This wrapper counts
//! every value entered (an `Option`, a `Box`ed field, a struct, a sequence
//! element...) and turns a payload nested deeper than [`MAX_NESTING`] into
//! a decode error, that is a miss, as serde_json's recursion limit does.
//!
//! Each wrapper carries the levels left by value, so the limit is
//! structural and costs one comparison per value; the only shared state is
//! the flag that tells the caller why decoding failed (postcard drops the
//! message of a custom error).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

/// Values nested deeper than this are refused. A level costs a few hundred
/// bytes of stack in an optimized build (a few KiB in a debug one), so the
/// deepest accepted value fits well within a 2 MiB worker stack; real cached
/// values are a handful of levels deep.
pub(crate) const MAX_NESTING: u32 = 256;

/// A deserializer that refuses to enter more than `left` more levels, and
/// sets `tripped` when it does.
pub(crate) struct Limited<'t, D> {
    de: D,
    left: u32,
    tripped: &'t Cell<bool>,
}

impl<'t, D> Limited<'t, D> {
    pub(crate) fn new(de: D, tripped: &'t Cell<bool>) -> Limited<'t, D> {
        Limited {
            de,
            left: MAX_NESTING,
            tripped,
        }
    }

    fn too_deep<E: de::Error>(&self) -> E {
        self.tripped.set(true);
        E::custom(format_args!("nested deeper than {MAX_NESTING} levels"))
    }
}

/// Every `deserialize_*` enters one level: it fails past the limit, and
/// otherwise hands the inner deserializer a visitor that wraps whatever it
/// is given to go deeper with the levels left.
macro_rules! enter {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            let Some(left) = self.left.checked_sub(1) else {
                return Err(self.too_deep());
            };
            self.de.$method($($arg,)* Limit { inner: visitor, left, tripped: self.tripped })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<'_, D> {
    type Error = D::Error;

    enter! {
        deserialize_any();
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_str();
        deserialize_string();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_option();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_seq();
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_map();
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

/// Wraps a visitor, a seed, or an access with the levels left below it.
struct Limit<'t, T> {
    inner: T,
    left: u32,
    tripped: &'t Cell<bool>,
}

impl<'t, T> Limit<'t, T> {
    fn below<U>(&self, inner: U) -> Limit<'t, U> {
        Limit {
            inner,
            left: self.left,
            tripped: self.tripped,
        }
    }

    fn deserializer<D>(&self, de: D) -> Limited<'t, D> {
        Limited {
            de,
            left: self.left,
            tripped: self.tripped,
        }
    }
}

macro_rules! forward {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: de::Error>(self, value: $ty) -> Result<V::Value, E> {
            self.inner.$method(value)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Limit<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward! {
        visit_bool(bool);
        visit_i8(i8);
        visit_i16(i16);
        visit_i32(i32);
        visit_i64(i64);
        visit_i128(i128);
        visit_u8(u8);
        visit_u16(u16);
        visit_u32(u32);
        visit_u64(u64);
        visit_u128(u128);
        visit_f32(f32);
        visit_f64(f64);
        visit_char(char);
        visit_str(&str);
        visit_borrowed_str(&'de str);
        visit_string(String);
        visit_bytes(&[u8]);
        visit_borrowed_bytes(&'de [u8]);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let de = self.deserializer(de);
        self.inner.visit_some(de)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<V::Value, D::Error> {
        let de = self.deserializer(de);
        self.inner.visit_newtype_struct(de)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let seq = self.below(seq);
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let map = self.below(map);
        self.inner.visit_map(map)
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let data = self.below(data);
        self.inner.visit_enum(data)
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Limit<'_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        let de = self.deserializer(de);
        self.inner.deserialize(de)
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Limit<'_, A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let seed = self.below(seed);
        self.inner.next_element_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Limit<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let seed = self.below(seed);
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let seed = self.below(seed);
        self.inner.next_value_seed(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'t, 'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Limit<'t, A> {
    type Error = A::Error;
    type Variant = Limit<'t, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Limit<'t, A::Variant>), A::Error> {
        let seed = self.below(seed);
        let (value, variant) = self.inner.variant_seed(seed)?;
        Ok((
            value,
            Limit {
                inner: variant,
                left: self.left,
                tripped: self.tripped,
            },
        ))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Limit<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        let seed = self.below(seed);
        self.inner.newtype_variant_seed(seed)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = self.below(visitor);
        self.inner.tuple_variant(len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = self.below(visitor);
        self.inner.struct_variant(fields, visitor)
    }
}
