//! The key encoder target.
//!
//! The input is read as: a flags byte; the argument types of list `a`; the
//! types of list `b` (the same as `a` unless flag 0x01); the values of `a`
//! and of `b`; then a prefix, two regions and two namespaces for the
//! storage keys (the second of each equal to the first unless flags 0x02,
//! 0x04), and `key_length`.

use std::collections::{BTreeMap, BTreeSet};

use super::Input;
use crate::cache_key::{
    CacheKey, HashKeys, KeyBuf, KeyWriter, SerdeKey, Word, WordKey, encode_args,
};
use crate::key;

/// An argument's type. Generated first, so that two argument lists can be
/// given the same types, which is what the injectivity promise is about.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ty {
    U8,
    U16,
    U32,
    U64,
    Usize,
    I8,
    I16,
    I32,
    I64,
    Isize,
    U128,
    I128,
    Bool,
    Char,
    Str,
    Unit,
    Serde,
    Opt(Box<Ty>),
    Tuple(Vec<Ty>),
    List(Box<Ty>),
    Set(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
}

/// A serde type keyed through [`SerdeKey`].
type SerdeValue = (u32, String, Option<Vec<i16>>, bool);

/// An argument; its `Ord` is the Rust type's own for values of one type,
/// so sets and maps iterate as the real collections would.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Val {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    Usize(usize),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    Isize(isize),
    U128(u128),
    I128(i128),
    Bool(bool),
    Char(char),
    Str(String),
    Unit,
    Serde(SerdeValue),
    Opt(Option<Box<Val>>),
    Tuple(Vec<Val>),
    List(Vec<Val>),
    Set(BTreeSet<Val>),
    Map(BTreeMap<Val, Val>),
}

/// Every argument is written by the real impl of its type.
impl CacheKey for Val {
    fn write_key(&self, out: &mut KeyWriter<'_>) {
        match self {
            Val::U8(n) => n.write_key(out),
            Val::U16(n) => n.write_key(out),
            Val::U32(n) => n.write_key(out),
            Val::U64(n) => n.write_key(out),
            Val::Usize(n) => n.write_key(out),
            Val::I8(n) => n.write_key(out),
            Val::I16(n) => n.write_key(out),
            Val::I32(n) => n.write_key(out),
            Val::I64(n) => n.write_key(out),
            Val::Isize(n) => n.write_key(out),
            Val::U128(n) => n.write_key(out),
            Val::I128(n) => n.write_key(out),
            Val::Bool(b) => b.write_key(out),
            Val::Char(c) => c.write_key(out),
            Val::Str(s) => s.write_key(out),
            Val::Unit => ().write_key(out),
            Val::Serde(value) => SerdeKey(value).write_key(out),
            Val::Opt(value) => value.write_key(out),
            Val::Tuple(items) => match items.as_slice() {
                [a] => (a,).write_key(out),
                [a, b] => (a, b).write_key(out),
                [a, b, c] => (a, b, c).write_key(out),
                _ => unreachable!("tuples of 1 to 3 are generated"),
            },
            Val::List(items) => items.write_key(out),
            Val::Set(items) => items.write_key(out),
            Val::Map(items) => items.write_key(out),
        }
    }

    fn word(&self) -> Option<Word> {
        match self {
            Val::U8(n) => n.word(),
            Val::U16(n) => n.word(),
            Val::U32(n) => n.word(),
            Val::U64(n) => n.word(),
            Val::Usize(n) => n.word(),
            Val::I8(n) => n.word(),
            Val::I16(n) => n.word(),
            Val::I32(n) => n.word(),
            Val::I64(n) => n.word(),
            Val::Isize(n) => n.word(),
            Val::Bool(b) => b.word(),
            Val::Char(c) => c.word(),
            _ => None,
        }
    }
}

fn ty(input: &mut Input<'_>, depth: u8) -> Ty {
    const LEAVES: u8 = 17;
    let nested = |input: &mut Input<'_>| Box::new(ty(input, depth + 1));
    match input.byte() % if depth >= 3 { LEAVES } else { LEAVES + 5 } {
        0 => Ty::U8,
        1 => Ty::U16,
        2 => Ty::U32,
        3 => Ty::U64,
        4 => Ty::Usize,
        5 => Ty::I8,
        6 => Ty::I16,
        7 => Ty::I32,
        8 => Ty::I64,
        9 => Ty::Isize,
        10 => Ty::U128,
        11 => Ty::I128,
        12 => Ty::Bool,
        13 => Ty::Char,
        14 => Ty::Str,
        15 => Ty::Unit,
        16 => Ty::Serde,
        17 => Ty::Opt(nested(input)),
        18 => {
            let len = 1 + input.byte() % 3;
            Ty::Tuple((0..len).map(|_| ty(input, depth + 1)).collect())
        }
        19 => Ty::List(nested(input)),
        20 => Ty::Set(nested(input)),
        _ => Ty::Map(nested(input), nested(input)),
    }
}

fn val(input: &mut Input<'_>, ty: &Ty) -> Val {
    let count = |input: &mut Input<'_>| input.byte() % 4;
    match ty {
        Ty::U8 => Val::U8(input.byte()),
        Ty::U16 => Val::U16(input.u64() as u16),
        Ty::U32 => Val::U32(input.u64() as u32),
        Ty::U64 => Val::U64(input.u64()),
        Ty::Usize => Val::Usize(input.u64() as usize),
        Ty::I8 => Val::I8(input.byte() as i8),
        Ty::I16 => Val::I16(input.u64() as i16),
        Ty::I32 => Val::I32(input.u64() as i32),
        Ty::I64 => Val::I64(input.u64() as i64),
        Ty::Isize => Val::Isize(input.u64() as isize),
        Ty::U128 => Val::U128(input.u128()),
        Ty::I128 => Val::I128(input.u128() as i128),
        Ty::Bool => Val::Bool(input.byte() & 1 == 1),
        Ty::Char => Val::Char(input.char()),
        Ty::Str => Val::Str(input.string(8)),
        Ty::Unit => Val::Unit,
        Ty::Serde => {
            let number = input.u64() as u32;
            let text = input.string(4);
            let list = (input.byte() & 1 == 1)
                .then(|| (0..count(input)).map(|_| input.u64() as i16).collect());
            Val::Serde((number, text, list, input.byte() & 1 == 1))
        }
        Ty::Opt(inner) => Val::Opt((input.byte() & 1 == 1).then(|| Box::new(val(input, inner)))),
        Ty::Tuple(items) => Val::Tuple(items.iter().map(|ty| val(input, ty)).collect()),
        Ty::List(item) => Val::List((0..count(input)).map(|_| val(input, item)).collect()),
        Ty::Set(item) => Val::Set((0..count(input)).map(|_| val(input, item)).collect()),
        Ty::Map(k, v) => Val::Map(
            (0..count(input))
                .map(|_| (val(input, k), val(input, v)))
                .collect(),
        ),
    }
}

/// One argument list's keys, each written as the library writes it.
struct Keys {
    text: String,
    compact: KeyBuf,
    word: Option<WordKey>,
}

fn keys(args: &[Val], hash_keys: HashKeys) -> Keys {
    let refs: Vec<&dyn CacheKey> = args.iter().map(|arg| arg as &dyn CacheKey).collect();
    let text = match encode_args(&refs) {
        Ok(text) => text,
        Err(err) => panic!("{args:?} has no key: {err}"),
    };
    let mut compact = KeyBuf::compact(hash_keys);
    let mut writer = KeyWriter::new(&mut compact);
    for arg in args {
        writer.arg(arg);
    }
    if let Err(err) = writer.finish() {
        panic!("{args:?} has no compact key: {err}");
    }
    compact.validate();
    assert_eq!(
        compact.text(),
        text,
        "a compact key reads back as its text key"
    );
    let word = match args {
        [] => WordKey::of([]),
        [a] => WordKey::of([a.word()]),
        [a, b] => WordKey::of([a.word(), b.word()]),
        _ => None,
    };
    Keys {
        text,
        compact,
        word,
    }
}

/// A region name the config accepts (`[A-Za-z0-9_.-]+`).
fn region(input: &mut Input<'_>) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";
    let len = 1 + input.byte() % 6;
    (0..len)
        .map(|_| char::from(CHARS[usize::from(input.byte()) % CHARS.len()]))
        .collect()
}

pub(super) fn fuzz(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.byte();
    let types_a: Vec<Ty> = (0..input.byte() % 5).map(|_| ty(&mut input, 0)).collect();
    let types_b: Vec<Ty> = if flags & 0x01 == 0 {
        types_a.clone()
    } else {
        (0..input.byte() % 5).map(|_| ty(&mut input, 0)).collect()
    };
    let a: Vec<Val> = types_a.iter().map(|ty| val(&mut input, ty)).collect();
    let b: Vec<Val> = types_b.iter().map(|ty| val(&mut input, ty)).collect();

    let hash_keys = HashKeys::random();
    let (ka, kb) = (keys(&a, hash_keys), keys(&b, hash_keys));
    let same_text = ka.text == kb.text;
    let same_compact = ka.compact.as_bytes() == kb.compact.as_bytes();
    if types_a == types_b {
        assert_eq!(
            a == b,
            same_text,
            "injective: {a:?} / {b:?} → {:?}",
            ka.text
        );
        assert_eq!(a == b, same_compact, "compact keys: {a:?} / {b:?}");
        if same_compact {
            assert_eq!(ka.compact.hash(), kb.compact.hash());
        }
    }
    // Across types (`5u8` and `5i64` share a key on purpose) a compact key
    // still names one text key, and a word key still stands for its text.
    if same_compact {
        assert!(same_text, "{a:?} / {b:?}");
    }
    if let (Some(wa), Some(wb)) = (ka.word, kb.word) {
        assert_eq!(wa == wb, same_text, "word keys: {a:?} / {b:?}");
    }

    storage_keys(&mut input, flags, &ka.text, &kb.text);
}

/// `{prefix}{region}:{namespace}#{key}` and its hashed form name one
/// (region, namespace, key) triple each, and never a lock or bookkeeping key.
fn storage_keys(input: &mut Input<'_>, flags: u8, key_a: &str, key_b: &str) {
    let prefix = input.string(6);
    let region_a = region(input);
    let region_b = if flags & 0x02 == 0 {
        region_a.clone()
    } else {
        region(input)
    };
    let ns_a = input.string(8);
    let ns_b = if flags & 0x04 == 0 {
        ns_a.clone()
    } else {
        input.string(8)
    };
    let key_length = usize::from(input.byte()) * 2;
    let entry_a = key::entry_key(&prefix, &region_a, &ns_a, key_a, key_length);
    let entry_b = key::entry_key(&prefix, &region_b, &ns_b, key_b, key_length);
    let same_triple = (&region_a, &ns_a, key_a) == (&region_b, &ns_b, key_b);
    assert_eq!(
        entry_a == entry_b,
        same_triple,
        "{entry_a:?} for {region_a:?} {ns_a:?} {key_a:?}, {entry_b:?} for {region_b:?} {ns_b:?} {key_b:?}"
    );
    let lock_a = key::lock_key(&prefix, &region_a, &ns_a, key_a, key_length);
    let lock_b = key::lock_key(&prefix, &region_b, &ns_b, key_b, key_length);
    assert_eq!(lock_a == lock_b, same_triple, "{lock_a:?} / {lock_b:?}");
    for other in [
        lock_b,
        key::namespace_generation_key(&prefix, &region_b, &ns_b),
        key::region_generation_key(&prefix, &region_b),
        key::region_soft_key(&prefix, &region_b),
    ] {
        assert_ne!(entry_a, other, "an entry key equals a bookkeeping key");
    }
}
