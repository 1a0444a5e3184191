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
//! they are stored on a shared backend (see `key_length` in the
//! [configuration table](crate#configuration)); memory regions keep them as
//! they are.
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
use std::hash::{BuildHasher, Hash, Hasher};
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

    /// The value as one [`Word`], for the types whose key is one integer
    /// (up to 64 bits), `bool` or `char`, and references to them. Tankard's
    /// own; leave it out of your impls.
    #[doc(hidden)]
    #[inline]
    fn word(&self) -> Option<Word> {
        None
    }
}

/// One argument as a machine word: what a memory region's cached function
/// is looked up by when its key is one or two integers, `bool`s or `char`s
/// (see [`WordKey`]). Not a public API.
///
/// The kind says which text the value stands for, so two words are equal
/// exactly when the arguments' text keys are: `5u8` and `5i64` are both
/// the text `5`, `-5` is another kind.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word {
    kind: WordKind,
    value: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum WordKind {
    /// The decimal digits of `value`.
    Natural = 1,
    /// `-` and the decimal digits of `value`.
    Negative = 2,
    Bool = 3,
    Char = 4,
}

impl Word {
    #[inline]
    fn new(kind: WordKind, value: u64) -> Option<Word> {
        Some(Word { kind, value })
    }

    #[inline]
    fn integer(negative: bool, magnitude: u64) -> Option<Word> {
        let kind = if negative {
            WordKind::Negative
        } else {
            WordKind::Natural
        };
        Word::new(kind, magnitude)
    }
}

/// The key of an argument list of at most two [`Word`]s: the words and
/// their kinds, no text. A function's arguments have the same types on
/// every call, so its keys all have one shape; equal word keys have equal
/// text keys, so a word key names the same entry its text key does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WordKey {
    words: [u64; 2],
    /// The argument count and each argument's kind, a byte each.
    shape: u64,
}

impl WordKey {
    /// The word key of an argument list, or `None` if it has more than
    /// two arguments or one that is not a word.
    #[inline(always)]
    #[cfg_attr(not(feature = "macros"), allow(dead_code))]
    pub(crate) fn of<const N: usize>(args: [Option<Word>; N]) -> Option<WordKey> {
        if N > 2 {
            return None;
        }
        let mut key = WordKey {
            words: [0; 2],
            shape: N as u64,
        };
        for (i, arg) in args.into_iter().enumerate() {
            let word = arg?;
            key.words[i % 2] = word.value;
            key.shape |= (word.kind as u64) << (8 * (i + 1));
        }
        Some(key)
    }
}

// Hashed with a map's `HashKeys`, both words in one multiplication.
impl Hash for WordKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [first, second] = self.words;
        state.write_u128(u128::from(first) | u128::from(second ^ self.shape) << 64);
    }
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
    out: &'a mut KeyBuf,
    args: usize,
    failed: Option<String>,
}

/// Key bytes kept on the stack: a cached function's key is built on every
/// call, and almost every key is shorter than this.
const INLINE_KEY: usize = 64;

/// In a compact key, the byte before a `u64` written as 8 little-endian bytes.
const U64_MARK: u8 = 0xff;
/// In a compact key, the byte before a `u128` written as 16 little-endian bytes.
const U128_MARK: u8 = 0xfe;

/// A key being written: on the stack while it is short, on the heap after.
///
/// A *text* key is the format above. A *compact* key, which only a memory
/// map of this process ever sees, is the same with every integer's digits
/// replaced by a mark byte and its fixed-width little-endian bytes (no
/// formatting on the hit path). Marks are bytes that UTF-8 never uses and
/// each is followed by a known number of bytes, so a compact key reads back
/// into exactly one text key ([`KeyBuf::text`]): two argument lists with
/// the same compact key have the same text key, hence are the same.
///
/// The inline bytes past the end stay zero, which lets a typed map take a
/// short key's first bytes as a fixed-size array.
///
/// A compact key also keeps a running hash of what is pushed, mixed from
/// the pushed values themselves: hashing the finished bytes would read
/// back memory just written in pieces, which stalls the CPU for longer
/// than the rest of a hit takes.
// Cloned only to hand a key to a background refresh (`OwnedSlot`).
#[derive(Clone, Debug)]
pub(crate) struct KeyBuf {
    len: usize,
    short: [u8; INLINE_KEY],
    long: Option<Vec<u8>>,
    compact: bool,
    hasher: KeyHasher,
    /// The same key as words, when it is one (see [`WordKey`]).
    #[cfg_attr(not(feature = "macros"), allow(dead_code))]
    word: Option<WordKey>,
}

/// The keys a compact key is hashed with: random, per typed map, so that
/// nobody can aim arguments at one hash bucket.
#[cfg_attr(not(all(feature = "memory", feature = "macros")), allow(dead_code))]
#[derive(Clone, Copy, Debug)]
pub(crate) struct HashKeys {
    seed: u64,
    /// Odd, so that multiplying by it loses no bits.
    multiplier: u64,
}

impl HashKeys {
    #[cfg_attr(not(all(feature = "memory", feature = "macros")), allow(dead_code))]
    pub(crate) fn random() -> HashKeys {
        let random = std::collections::hash_map::RandomState::new();
        HashKeys {
            seed: random.hash_one(1u8),
            multiplier: random.hash_one(2u8) | 1,
        }
    }
}

/// A map keyed by [`WordKey`]s hashes with its own keys.
impl BuildHasher for HashKeys {
    type Hasher = KeyHasher;

    #[inline]
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            hash: self.seed,
            multiplier: self.multiplier,
        }
    }
}

/// [`HashKeys`]' hasher, also a compact key's running hash.
#[derive(Clone, Debug)]
pub(crate) struct KeyHasher {
    hash: u64,
    multiplier: u64,
}

impl Hasher for KeyHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }

    #[inline]
    fn write_u64(&mut self, word: u64) {
        self.hash = fold_mul(self.hash ^ word, self.multiplier);
    }

    /// Two words in one multiplication, each under its own key (as
    /// foldhash hashes 128 bits).
    #[inline]
    fn write_u128(&mut self, words: u128) {
        let (low, high) = (words as u64, (words >> 64) as u64);
        self.hash = fold_mul(self.hash ^ low, self.multiplier ^ high);
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let (words, tail) = bytes.as_chunks::<8>();
        for word in words {
            self.write_u64(u64::from_le_bytes(*word));
        }
        let mut last = [0u8; 8];
        last[..tail.len()].copy_from_slice(tail);
        self.write_u64(u64::from_le_bytes(last) ^ (tail.len() as u64) << 56);
    }
}

/// The 64 high and 64 low bits of the product, folded together (as in
/// foldhash): one multiplication mixes every input bit into every output bit.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

impl KeyBuf {
    /// An empty text key.
    #[inline]
    pub(crate) fn new() -> KeyBuf {
        KeyBuf {
            len: 0,
            short: [0; INLINE_KEY],
            long: None,
            compact: false,
            hasher: KeyHasher {
                hash: 0,
                multiplier: 1,
            },
            word: None,
        }
    }

    /// An empty compact key, hashed with `keys`.
    #[inline]
    #[cfg_attr(not(all(feature = "memory", feature = "macros")), allow(dead_code))]
    pub(crate) fn compact(keys: HashKeys) -> KeyBuf {
        KeyBuf {
            compact: true,
            hasher: keys.build_hasher(),
            ..KeyBuf::new()
        }
    }

    #[inline]
    fn mix(&mut self, word: u64) {
        self.hasher.write_u64(word);
    }

    /// The hash of a compact key: the same for the same pushes and keys.
    #[inline]
    #[cfg_attr(not(all(feature = "memory", feature = "macros")), allow(dead_code))]
    pub(crate) fn hash(&self) -> u64 {
        let mut hasher = self.hasher.clone();
        hasher.write_u64(self.len as u64);
        hasher.finish()
    }

    #[inline]
    fn push_bytes(&mut self, bytes: &[u8]) {
        if self.compact {
            self.hasher.write(bytes);
        }
        self.append(bytes);
    }

    #[inline]
    fn append(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        match (&mut self.long, self.short.get_mut(self.len..end)) {
            (None, Some(room)) => room.copy_from_slice(bytes),
            (Some(long), _) => long.extend_from_slice(bytes),
            (None, None) => self.spill().extend_from_slice(bytes),
        }
        self.len = end;
    }

    #[inline]
    fn push(&mut self, c: char) {
        if self.compact {
            self.mix(u64::from(c) | 1 << 63);
        }
        self.append(c.encode_utf8(&mut [0; 4]).as_bytes());
    }

    #[inline(always)]
    fn push_u64(&mut self, n: u64) {
        if !self.compact {
            return self.push_decimal(n);
        }
        self.mix(n);
        let end = self.len + 9;
        match self.short.get_mut(self.len..end) {
            Some([mark, bytes @ ..]) if self.long.is_none() => {
                *mark = U64_MARK;
                bytes.copy_from_slice(&n.to_le_bytes());
                self.len = end;
            }
            _ => self.append_u64_slow(n),
        }
    }

    #[cold]
    fn append_u64_slow(&mut self, n: u64) {
        self.append(&[U64_MARK]);
        self.append(&n.to_le_bytes());
    }

    fn push_u128(&mut self, n: u128) {
        if self.compact {
            self.mix(n as u64);
            self.mix((n >> 64) as u64);
            self.append(&[U128_MARK]);
            self.append(&n.to_le_bytes());
        } else {
            self.push_decimal(n);
        }
    }

    fn push_decimal(&mut self, n: impl fmt::Display) {
        // Writing to a `KeyBuf` cannot fail.
        let _ = fmt::Write::write_fmt(self, format_args!("{n}"));
    }

    #[cold]
    fn spill(&mut self) -> &mut Vec<u8> {
        let mut long = Vec::with_capacity(INLINE_KEY * 2);
        long.extend_from_slice(&self.short[..self.len]);
        self.long.insert(long)
    }

    /// Records that this key is also `word` (written by the same arguments).
    #[inline]
    #[cfg_attr(not(feature = "macros"), allow(dead_code))]
    pub(crate) fn set_word(&mut self, word: Option<WordKey>) {
        self.word = word;
    }

    /// The key as words, if it is one.
    #[inline]
    #[cfg_attr(not(all(feature = "memory", feature = "macros")), allow(dead_code))]
    pub(crate) fn word(&self) -> Option<WordKey> {
        self.word
    }

    /// The key's bytes.
    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.long {
            Some(long) => long,
            None => &self.short[..self.len],
        }
    }

    /// The first `N` bytes, zero past the end of a key shorter than `N`;
    /// for a longer key, meaningless (and not to be used).
    #[inline]
    #[cfg_attr(not(all(feature = "memory", feature = "macros")), allow(dead_code))]
    pub(crate) fn padded<const N: usize>(&self) -> &[u8; N] {
        const { assert!(N <= INLINE_KEY) };
        match self.short.first_chunk() {
            Some(head) => head,
            None => unreachable!("N <= INLINE_KEY is checked at compile time"),
        }
    }

    /// Checks what readers of a key rely on (for the fuzzer and tests): the
    /// inline bytes past the end are zero (typed maps read short keys as
    /// fixed-size arrays), a spilled key holds exactly its length, and a
    /// text key is UTF-8 (only whole `str`s and `char`s are pushed).
    #[cfg(any(test, fuzzing))]
    pub(crate) fn validate(&self) {
        match &self.long {
            Some(long) => assert_eq!(long.len(), self.len, "a spilled key's length"),
            None => assert!(
                self.short[self.len..].iter().all(|&byte| byte == 0),
                "inline bytes past the end of a key must stay zero: {:?}",
                self.short
            ),
        }
        if !self.compact {
            assert!(
                std::str::from_utf8(self.as_bytes()).is_ok(),
                "a text key is UTF-8: {:?}",
                self.as_bytes()
            );
        }
    }

    /// The text key: as written, or read back from a compact key.
    pub(crate) fn text(&self) -> Cow<'_, str> {
        if self.compact {
            return Cow::Owned(text_of_compact(self.as_bytes()));
        }
        // Only whole `str`s and `char`s were pushed: this cannot fail.
        String::from_utf8_lossy(self.as_bytes())
    }
}

impl fmt::Write for KeyBuf {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.push_bytes(text.as_bytes());
        Ok(())
    }
}

/// The text key a compact key was written for (see [`KeyBuf`]).
pub(crate) fn text_of_compact(mut rest: &[u8]) -> String {
    let mut text = KeyBuf::new();
    while let Some((&first, tail)) = rest.split_first() {
        rest = match first {
            U64_MARK => match tail.split_first_chunk::<8>() {
                Some((n, tail)) => {
                    text.push_decimal(u64::from_le_bytes(*n));
                    tail
                }
                None => break,
            },
            U128_MARK => match tail.split_first_chunk::<16>() {
                Some((n, tail)) => {
                    text.push_decimal(u128::from_le_bytes(*n));
                    tail
                }
                None => break,
            },
            byte => {
                text.push_bytes(&[byte]);
                tail
            }
        };
    }
    text.text().into_owned()
}

impl<'a> KeyWriter<'a> {
    #[inline]
    pub(crate) fn new(out: &'a mut KeyBuf) -> KeyWriter<'a> {
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
        self.out.push_bytes(text.as_bytes());
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

    /// What has been written so far, as key text.
    ///
    /// ```
    /// # use tankard::cache_key::KeyWriter;
    /// struct Twice(u8);
    /// impl tankard::CacheKey for Twice {
    ///     fn write_key(&self, out: &mut KeyWriter<'_>) {
    ///         self.0.write_key(out);
    ///         assert!(out.text().ends_with('7'));
    ///     }
    /// }
    /// assert_eq!(tankard::cache_key::encode(&Twice(7))?, "7");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn text(&self) -> Cow<'_, str> {
        self.out.text()
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
    #[inline]
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
    let mut out = KeyBuf::new();
    let mut writer = KeyWriter::new(&mut out);
    value.write_key(&mut writer);
    writer.finish()?;
    Ok(out.text().into_owned())
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
    let mut out = KeyBuf::new();
    let mut writer = KeyWriter::new(&mut out);
    for arg in args {
        writer.arg(*arg);
    }
    writer.finish()?;
    Ok(out.text().into_owned())
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl CacheKey for $t {
            #[inline]
            fn write_key(&self, out: &mut KeyWriter<'_>) {
                out.out.push_u64(*self as u64);
            }

            #[inline]
            fn word(&self) -> Option<Word> {
                Word::integer(false, *self as u64)
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
                out.out.push_u64(self.unsigned_abs() as u64);
            }

            #[inline]
            fn word(&self) -> Option<Word> {
                Word::integer(*self < 0, self.unsigned_abs() as u64)
            }
        }
    )*};
}
signed!(i8, i16, i32, i64, isize);

impl CacheKey for u128 {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.out.push_u128(*self);
    }
}

impl CacheKey for i128 {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        if *self < 0 {
            out.push('-');
        }
        out.out.push_u128(self.unsigned_abs());
    }
}

impl CacheKey for bool {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        out.push_str(if *self { "true" } else { "false" });
    }

    #[inline]
    fn word(&self) -> Option<Word> {
        Word::new(WordKind::Bool, u64::from(*self))
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

    #[inline]
    fn word(&self) -> Option<Word> {
        Word::new(WordKind::Char, u64::from(*self))
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

    #[inline]
    fn word(&self) -> Option<Word> {
        (**self).word()
    }
}

impl<T: CacheKey + ?Sized> CacheKey for &mut T {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        (**self).write_key(out);
    }

    #[inline]
    fn word(&self) -> Option<Word> {
        (**self).word()
    }
}

impl<T: CacheKey + ?Sized> CacheKey for Box<T> {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        (**self).write_key(out);
    }

    #[inline]
    fn word(&self) -> Option<Word> {
        (**self).word()
    }
}

impl<T: CacheKey + ?Sized> CacheKey for Rc<T> {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        (**self).write_key(out);
    }

    #[inline]
    fn word(&self) -> Option<Word> {
        (**self).word()
    }
}

impl<T: CacheKey + ?Sized> CacheKey for Arc<T> {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        (**self).write_key(out);
    }

    #[inline]
    fn word(&self) -> Option<Word> {
        (**self).word()
    }
}

impl<B: CacheKey + ToOwned + ?Sized> CacheKey for Cow<'_, B> {
    #[inline]
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        (**self).write_key(out);
    }

    #[inline]
    fn word(&self) -> Option<Word> {
        (**self).word()
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

    const KEYS: HashKeys = HashKeys {
        seed: 7,
        multiplier: 0x9e37_79b9_7f4a_7c15,
    };

    fn both(args: &[&dyn CacheKey]) -> (String, KeyBuf) {
        let mut compact = KeyBuf::compact(KEYS);
        let mut writer = KeyWriter::new(&mut compact);
        for arg in args {
            writer.arg(*arg);
        }
        writer.finish().unwrap();
        (encode_args(args).unwrap(), compact)
    }

    #[test]
    fn a_compact_key_reads_back_as_its_text_key() {
        let long = "ÿ\u{fe}".repeat(40);
        let lists: [&[&dyn CacheKey]; 9] = [
            &[],
            &[&0u8],
            &[&u64::MAX, &-1i64],
            &[&i128::MIN, &u128::MAX],
            &[&"a,b", &'"', &"\u{ff}"],
            &[&Some((255u16, "x")), &None::<u8>],
            &[&vec![0xfeu32, 0xff], &true],
            &[&long.as_str(), &1u64],
            &[&SerdeKey(("k", 7u8)), &()],
        ];
        let mut compact_keys = std::collections::HashSet::new();
        for args in lists {
            let (text, compact) = both(args);
            assert_eq!(compact.text(), text);
            assert!(compact_keys.insert(compact.as_bytes().to_vec()));
        }
    }

    #[test]
    fn compact_keys_hash_alike_when_written_alike_only() {
        let (_, a) = both(&[&1u64, &"x"]);
        let (_, b) = both(&[&1u64, &"x"]);
        let (_, c) = both(&[&1u64, &"y"]);
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
    }

    fn word_key(args: &[&dyn CacheKey]) -> Option<WordKey> {
        match args {
            [] => WordKey::of([]),
            [a] => WordKey::of([a.word()]),
            [a, b] => WordKey::of([a.word(), b.word()]),
            [a, b, c] => WordKey::of([a.word(), b.word(), c.word()]),
            _ => None,
        }
    }

    #[test]
    fn word_keys_are_equal_exactly_when_text_keys_are() {
        let lists: Vec<Vec<&dyn CacheKey>> = vec![
            vec![],
            vec![&5u8],
            vec![&5i64],
            vec![&5usize],
            vec![&-5i8],
            vec![&-5i64],
            vec![&0u32],
            vec![&0i32],
            vec![&u64::MAX],
            vec![&i64::MIN],
            vec![&(i64::MIN as u64)],
            vec![&true],
            vec![&1u8],
            vec![&false],
            vec![&0u8],
            vec![&'1'],
            vec![&'\u{1}'],
            vec![&1u8, &2u8],
            vec![&2u8, &1u8],
            vec![&1u8, &true],
            vec![&1u8, &1u8],
            vec![&1u16, &1i64],
            vec![&1u8, &-1i8],
        ];
        for a in &lists {
            let (text_a, word_a) = (encode_args(a).unwrap(), word_key(a).unwrap());
            for b in &lists {
                let (text_b, word_b) = (encode_args(b).unwrap(), word_key(b).unwrap());
                assert_eq!(
                    word_a == word_b,
                    text_a == text_b,
                    "{text_a:?} and {text_b:?}"
                );
            }
        }
    }

    #[test]
    fn only_short_lists_of_words_have_word_keys() {
        assert!(word_key(&[&1u8, &2u8, &3u8]).is_none());
        assert!(word_key(&[&"1"]).is_none());
        assert!(word_key(&[&1u8, &"1"]).is_none());
        assert!(word_key(&[&1u128]).is_none());
        assert!(word_key(&[&Some(1u8)]).is_none());
        // References and smart pointers are their target.
        let boxed: Box<u8> = Box::new(7);
        assert_eq!(word_key(&[&&7u8]), word_key(&[&boxed]));
        assert_eq!(word_key(&[&Arc::new('x')]), word_key(&[&'x']));
    }

    #[test]
    fn word_keys_hash_by_every_word_and_the_shape() {
        let hash = |args: &[&dyn CacheKey]| KEYS.hash_one(word_key(args).unwrap());
        assert_eq!(hash(&[&1u8, &2u8]), hash(&[&1u64, &2u32]));
        assert_ne!(hash(&[&1u8, &2u8]), hash(&[&1u8, &3u8]));
        assert_ne!(hash(&[&1u8, &2u8]), hash(&[&2u8, &2u8]));
        assert_ne!(hash(&[&1u8]), hash(&[&-1i8]));
        assert_ne!(hash(&[&1u8]), hash(&[&true]));
    }
}
