//! Cache keys from values: the [`CacheKey`] trait that turns a cached
//! function's arguments into the key its result is stored under.
//!
//! # Format
//!
//! Every value is written in a form that a reader who knows its type can
//! find the end of, so an argument list (each argument's encoding, joined
//! by `,`) never reads the same as another argument list of the same types:
//! the encoding is injective over argument lists.
//!
//! | type | written as | example |
//! |---|---|---|
//! | `u8` … `u128`, `i8` … `i128`, `usize`, `isize` | decimal | `-12` |
//! | `bool` | `true` / `false` | `true` |
//! | `char` | the character between single quotes | `'a'`, `'''` |
//! | `str`, `String`, `Cow<str>` | between double quotes, `\` and `"` escaped with `\` | `"a,\"b\""` |
//! | `()` | `()` | `()` |
//! | `Option<T>` | `None` or `Some(…)` | `Some("x")` |
//! | tuples | `(a,b,…)` | `(1,"x")` |
//! | slices, arrays, `Vec`, `VecDeque` | `[a,b,…]` | `[1,2]` |
//! | `BTreeSet`, `BTreeMap` | `{a,b}`, `{k:v,…}` | `{"k":1}` |
//! | `&T`, `&mut T`, `Box<T>`, `Rc<T>`, `Arc<T>` | as `T` | |
//! | [`SerdeKey<T>`](SerdeKey) | the value's postcard bytes in hex between `<` and `>` | `<0a01>` |
//! | an argument list | the arguments' encodings joined by `,` | `"Fred",3` |
//!
//! A function with no (keyed) arguments has the empty key. Floating-point
//! numbers are deliberately not keys (`0.1 + 0.2 != 0.3`, `NaN != NaN`):
//! key on `x.to_bits()` or a rounded integer instead.
//!
//! Keys longer than the region's `key_length` are replaced by a hash when
//! they are stored on a shared backend (see DESIGN §6); memory regions keep
//! them as they are.
//!
//! ```
//! use tankard::cache_key::{encode, encode_args};
//! assert_eq!(encode(&("Fred", 3u8))?, r#"("Fred",3)"#);
//! // The key of `f("a,b")` and of `g("a", "b")` differ: strings are quoted.
//! assert_eq!(encode_args(&[&"a,b"])?, r#""a,b""#);
//! assert_eq!(encode_args(&[&"a", &"b"])?, r#""a","b""#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Kind, Result};

/// A value that can be part of a cache key: every argument of a
/// `#[tankard::cached]` function that is not skipped, and the value of a
/// `key = …` expression.
///
/// Implemented for integers, `bool`, `char`, strings, `()`, `Option`,
/// tuples (up to 12), slices, arrays, `Vec`, `VecDeque`, `BTreeSet`,
/// `BTreeMap`, references and smart pointers to those, and any serde type
/// wrapped in [`SerdeKey`]. The [module docs](crate::cache_key) give the
/// format.
///
/// # Implementing it
///
/// Write the fields that identify the value through their own `CacheKey`
/// impls; a tuple keeps them apart:
///
/// ```
/// use tankard::CacheKey;
/// use tankard::cache_key::{KeyWriter, encode};
///
/// struct User { id: u64, name: String, last_seen: u64 }
///
/// impl CacheKey for User {
///     fn write_key(&self, out: &mut KeyWriter<'_>) {
///         // last_seen does not change what is cached for a user.
///         (self.id, &self.name).write_key(out);
///     }
/// }
///
/// let user = User { id: 7, name: "Fred".into(), last_seen: 0 };
/// assert_eq!(encode(&user)?, r#"(7,"Fred")"#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Raw text written with [`KeyWriter::push_str`] must keep the encoding
/// self-delimiting: a reader that knows the type must be able to tell where
/// the value ends.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache key",
    label = "`{Self}` does not implement `tankard::CacheKey`",
    note = "implement `tankard::CacheKey` for it, wrap a serde type in `tankard::SerdeKey(..)` with `key = ...`, or leave the argument out of the key with `skip(name)`"
)]
pub trait CacheKey {
    /// Appends the value's encoding to `out`.
    ///
    /// ```
    /// use tankard::CacheKey;
    /// use tankard::cache_key::encode;
    /// assert_eq!(encode(&Some(vec![1u8, 2]))?, "Some([1,2])");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn write_key(&self, out: &mut KeyWriter<'_>);
}

/// Where a key is written: a string buffer that remembers whether some
/// value failed to encode (only [`SerdeKey`] can fail).
///
/// ```
/// use tankard::CacheKey;
/// use tankard::cache_key::{KeyWriter, encode};
///
/// struct Tag(&'static str);
/// impl CacheKey for Tag {
///     fn write_key(&self, out: &mut KeyWriter<'_>) {
///         out.push_str("tag:");
///         self.0.write_key(out);
///     }
/// }
/// assert_eq!(encode(&Tag("x"))?, r#"tag:"x""#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct KeyWriter<'a> {
    out: &'a mut String,
    args: usize,
    failed: Option<String>,
}

impl<'a> KeyWriter<'a> {
    pub(crate) fn new(out: &'a mut String) -> KeyWriter<'a> {
        KeyWriter {
            out,
            args: 0,
            failed: None,
        }
    }

    /// Appends raw text. See [`CacheKey`] for the rule it must keep.
    ///
    /// ```
    /// # use tankard::cache_key::KeyWriter;
    /// struct Version;
    /// impl tankard::CacheKey for Version {
    ///     fn write_key(&self, out: &mut KeyWriter<'_>) { out.push_str("v2"); }
    /// }
    /// assert_eq!(tankard::cache_key::encode(&Version)?, "v2");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn push_str(&mut self, text: &str) {
        self.out.push_str(text);
    }

    /// Appends one raw character.
    ///
    /// ```
    /// # use tankard::cache_key::KeyWriter;
    /// struct Star;
    /// impl tankard::CacheKey for Star {
    ///     fn write_key(&self, out: &mut KeyWriter<'_>) { out.push('*'); }
    /// }
    /// assert_eq!(tankard::cache_key::encode(&Star)?, "*");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn push(&mut self, c: char) {
        self.out.push(c);
    }

    /// Marks the key as unusable: the call runs without the cache and the
    /// reason is reported (for a `CacheKey` impl that can fail, like
    /// [`SerdeKey`]'s).
    ///
    /// ```
    /// # use tankard::cache_key::KeyWriter;
    /// struct Unkeyable;
    /// impl tankard::CacheKey for Unkeyable {
    ///     fn write_key(&self, out: &mut KeyWriter<'_>) { out.fail("no stable identity"); }
    /// }
    /// let err = tankard::cache_key::encode(&Unkeyable).unwrap_err();
    /// assert!(err.is_encode());
    /// assert!(err.to_string().contains("no stable identity"));
    /// ```
    pub fn fail(&mut self, reason: impl fmt::Display) {
        if self.failed.is_none() {
            self.failed = Some(reason.to_string());
        }
    }

    /// What has been written so far.
    ///
    /// ```
    /// # use tankard::cache_key::KeyWriter;
    /// struct Twice(u8);
    /// impl tankard::CacheKey for Twice {
    ///     fn write_key(&self, out: &mut KeyWriter<'_>) {
    ///         self.0.write_key(out);
    ///         assert!(out.as_str().ends_with('7'));
    ///     }
    /// }
    /// assert_eq!(tankard::cache_key::encode(&Twice(7))?, "7");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn as_str(&self) -> &str {
        self.out
    }

    /// Writes one argument of an argument list: `,` before every argument
    /// but the first.
    #[inline]
    pub(crate) fn arg<K: CacheKey + ?Sized>(&mut self, value: &K) {
        if self.args > 0 {
            self.out.push(',');
        }
        self.args += 1;
        value.write_key(self);
    }

    /// The error of a value that failed to encode, if any.
    pub(crate) fn finish(self) -> Result<()> {
        match self.failed {
            None => Ok(()),
            Some(reason) => Err(key_error(reason)),
        }
    }
}

fn key_error(reason: String) -> Error {
    Error::new(Kind::Encode {
        message: format!("an argument could not be encoded as a cache key: {reason}"),
    })
}

/// The key of one value, as a `String`.
///
/// # Errors
///
/// An error for which [`Error::is_encode`] is true if a [`SerdeKey`] in it
/// failed to serialize.
///
/// ```
/// assert_eq!(tankard::cache_key::encode(&[Some('a'), None])?, "[Some('a'),None]");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode<K: CacheKey + ?Sized>(value: &K) -> Result<String> {
    let mut out = String::new();
    let mut writer = KeyWriter::new(&mut out);
    value.write_key(&mut writer);
    writer.finish()?;
    Ok(out)
}

/// The key of an argument list: what `#[tankard::cached]` builds from a
/// function's arguments (each argument's encoding, joined by `,`).
///
/// # Errors
///
/// As [`encode`].
///
/// ```
/// // #[tankard::cached] fn greet(name: &str, times: u8) is keyed, for greet("Fred", 2), by:
/// assert_eq!(tankard::cache_key::encode_args(&[&"Fred", &2u8])?, r#""Fred",2"#);
/// assert_eq!(tankard::cache_key::encode_args(&[])?, "");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn encode_args(args: &[&dyn CacheKey]) -> Result<String> {
    let mut out = String::new();
    let mut writer = KeyWriter::new(&mut out);
    for arg in args {
        writer.arg(*arg);
    }
    writer.finish()?;
    Ok(out)
}

/// Pairs of decimal digits, "00" to "99": two digits per division.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

#[inline]
fn push_ascii(out: &mut KeyWriter<'_>, digits: &[u8]) {
    // Pushing ASCII bytes as chars needs no UTF-8 validation or memcpy call.
    out.out.extend(digits.iter().map(|&d| d as char));
}

fn write_u128(out: &mut KeyWriter<'_>, mut n: u128) {
    if let Ok(small) = u64::try_from(n) {
        return write_u64(out, small);
    }
    let mut digits = [0u8; 39];
    let mut at = digits.len();
    while n > 0 {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    push_ascii(out, &digits[at..]);
}

#[inline]
fn write_u64(out: &mut KeyWriter<'_>, mut n: u64) {
    if n < 10 {
        out.out.push((b'0' + n as u8) as char);
        return;
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        at -= 2;
        digits[at] = PAIRS[pair];
        digits[at + 1] = PAIRS[pair + 1];
    }
    if n >= 10 {
        let pair = n as usize * 2;
        at -= 2;
        digits[at] = PAIRS[pair];
        digits[at + 1] = PAIRS[pair + 1];
    } else {
        at -= 1;
        digits[at] = b'0' + n as u8;
    }
    push_ascii(out, &digits[at..]);
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl CacheKey for $t {
            #[inline]
            fn write_key(&self, out: &mut KeyWriter<'_>) {
                write_u64(out, *self as u64);
            }
        }
    )*};
}
unsigned!(u8, u16, u32, u64, usize);

macro_rules! signed {
    ($($t:ty),*) => {$(
        impl CacheKey for $t {
            #[inline]
            fn write_key(&self, out: &mut KeyWriter<'_>) {
                if *self < 0 {
                    out.push('-');
                }
                write_u64(out, self.unsigned_abs() as u64);
            }
        }
    )*};
}
signed!(i8, i16, i32, i64, isize);

impl CacheKey for u128 {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        write_u128(out, *self);
    }
}

impl CacheKey for i128 {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        if *self < 0 {
            out.push('-');
        }
        write_u128(out, self.unsigned_abs());
    }
}

impl CacheKey for bool {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

impl CacheKey for char {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        // Exactly one character sits between the quotes, so none needs escaping.
        out.push('\'');
        out.push(*self);
        out.push('\'');
    }
}

impl CacheKey for str {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.push('"');
        if self.contains(['"', '\\']) {
            for c in self.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
        } else {
            out.push_str(self);
        }
        out.push('"');
    }
}

impl CacheKey for String {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        self.as_str().write_key(out);
    }
}

impl CacheKey for () {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.push_str("()");
    }
}

impl<T: CacheKey> CacheKey for Option<T> {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        match self {
            None => out.push_str("None"),
            Some(value) => {
                out.push_str("Some(");
                value.write_key(out);
                out.push(')');
            }
        }
    }
}

impl<T: CacheKey + ?Sized> CacheKey for &T {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        (**self).write_key(out);
    }
}

impl<T: CacheKey + ?Sized> CacheKey for &mut T {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        (**self).write_key(out);
    }
}

impl<T: CacheKey + ?Sized> CacheKey for Box<T> {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        (**self).write_key(out);
    }
}

impl<T: CacheKey + ?Sized> CacheKey for Rc<T> {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        (**self).write_key(out);
    }
}

impl<T: CacheKey + ?Sized> CacheKey for Arc<T> {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        (**self).write_key(out);
    }
}

impl<B: CacheKey + ToOwned + ?Sized> CacheKey for Cow<'_, B> {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        (**self).write_key(out);
    }
}

fn write_seq<'v, T: CacheKey + 'v>(
    out: &mut KeyWriter<'_>,
    open: char,
    items: impl IntoIterator<Item = &'v T>,
    close: char,
) {
    out.push(open);
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item.write_key(out);
    }
    out.push(close);
}

impl<T: CacheKey> CacheKey for [T] {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        write_seq(out, '[', self, ']');
    }
}

impl<T: CacheKey, const N: usize> CacheKey for [T; N] {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        write_seq(out, '[', self, ']');
    }
}

impl<T: CacheKey> CacheKey for Vec<T> {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        write_seq(out, '[', self, ']');
    }
}

impl<T: CacheKey> CacheKey for VecDeque<T> {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        write_seq(out, '[', self, ']');
    }
}

impl<T: CacheKey> CacheKey for BTreeSet<T> {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        write_seq(out, '{', self, '}');
    }
}

impl<K: CacheKey, V: CacheKey> CacheKey for BTreeMap<K, V> {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.push('{');
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            k.write_key(out);
            out.push(':');
            v.write_key(out);
        }
        out.push('}');
    }
}

macro_rules! tuple {
    ($first:ident $($rest:ident)*) => {
        impl<$first: CacheKey, $($rest: CacheKey),*> CacheKey for ($first, $($rest,)*) {
            #[allow(non_snake_case)]
            fn write_key(&self, out: &mut KeyWriter<'_>) {
                let ($first, $($rest,)*) = self;
                out.push('(');
                $first.write_key(out);
                $(
                    out.push(',');
                    $rest.write_key(out);
                )*
                out.push(')');
            }
        }
    };
}
tuple!(A);
tuple!(A B);
tuple!(A B C);
tuple!(A B C D);
tuple!(A B C D E);
tuple!(A B C D E F);
tuple!(A B C D E F G);
tuple!(A B C D E F G H);
tuple!(A B C D E F G H I);
tuple!(A B C D E F G H I J);
tuple!(A B C D E F G H I J K);
tuple!(A B C D E F G H I J K L);

/// Any serde type as a key part: its postcard encoding in hex between `<`
/// and `>`.
///
/// Postcard writes struct fields in declaration order, so equal values give
/// equal keys, but a `HashMap`'s iteration order varies between runs and
/// processes: key on a `BTreeMap` instead. Renaming a field keeps the key;
/// reordering fields or changing a type changes it.
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Query { page: u8, terms: Vec<String> }
///
/// let q = Query { page: 1, terms: vec!["ale".into()] };
/// let key = tankard::cache_key::encode(&tankard::SerdeKey(&q))?;
/// assert_eq!(key, "<010103616c65>");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// With the attribute, use it in a `key = …` expression:
///
/// ```
/// # #[derive(serde::Serialize)]
/// # struct Query { page: u8, terms: Vec<String> }
/// #[tankard::cached(key = tankard::SerdeKey(q), manager = tankard::CacheManager::new(tankard::Config::memory())?)]
/// fn search(q: &Query) -> Result<Vec<String>, tankard::Error> {
///     Ok(q.terms.clone())
/// }
/// let q = Query { page: 1, terms: vec!["ale".into()] };
/// assert_eq!(search(&q)?, ["ale"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SerdeKey<T>(pub T);

struct HexFlavor<'w, 'a> {
    out: &'w mut KeyWriter<'a>,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl postcard::ser_flavors::Flavor for HexFlavor<'_, '_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.out.out.push(HEX[(byte >> 4) as usize] as char);
        self.out.out.push(HEX[(byte & 0xf) as usize] as char);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

impl<T: Serialize> CacheKey for SerdeKey<T> {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.push('<');
        if let Err(err) = postcard::serialize_with_flavor(&self.0, HexFlavor { out: &mut *out }) {
            out.fail(format_args!("SerdeKey: {err}"));
        }
        out.push('>');
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn integers_cover_their_whole_range() {
        assert_eq!(encode(&0u8).unwrap(), "0");
        assert_eq!(encode(&u64::MAX).unwrap(), "18446744073709551615");
        assert_eq!(encode(&i64::MIN).unwrap(), "-9223372036854775808");
        assert_eq!(encode(&i8::MIN).unwrap(), "-128");
        assert_eq!(
            encode(&u128::MAX).unwrap(),
            "340282366920938463463374607431768211455"
        );
        assert_eq!(
            encode(&i128::MIN).unwrap(),
            "-170141183460469231731687303715884105728"
        );
    }

    #[test]
    fn integers_match_their_display() {
        let mut n: u64 = 1;
        for _ in 0..64 {
            for m in [n - 1, n, n + 1, n.wrapping_mul(7) / 3] {
                assert_eq!(encode(&m).unwrap(), m.to_string());
                assert_eq!(encode(&(m as i64)).unwrap(), (m as i64).to_string());
            }
            n = n.wrapping_mul(3).max(n + 1);
        }
        for m in 0..1000u32 {
            assert_eq!(encode(&m).unwrap(), m.to_string());
        }
    }

    #[test]
    fn strings_escape_only_quote_and_backslash() {
        assert_eq!(encode("a\"b\\c,d").unwrap(), r#""a\"b\\c,d""#);
        assert_eq!(encode("").unwrap(), r#""""#);
    }
}
