//! The `CacheKey` encoding: injective over argument lists, borrowed and
//! owned forms alike.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use tankard::cache_key::{encode, encode_args};
use tankard::{CacheKey, SerdeKey};

#[test]
fn each_type_has_its_documented_form() {
    assert_eq!(encode(&42u32).unwrap(), "42");
    assert_eq!(encode(&-7i16).unwrap(), "-7");
    assert_eq!(encode(&true).unwrap(), "true");
    assert_eq!(encode(&'x').unwrap(), "'x'");
    assert_eq!(encode(&'\'').unwrap(), "'''");
    assert_eq!(encode("a b").unwrap(), r#""a b""#);
    assert_eq!(encode(&String::from("q\"")).unwrap(), r#""q\"""#);
    assert_eq!(encode(&()).unwrap(), "()");
    assert_eq!(encode(&None::<u8>).unwrap(), "None");
    assert_eq!(encode(&Some("")).unwrap(), r#"Some("")"#);
    assert_eq!(encode(&(1u8, "a", 'b')).unwrap(), r#"(1,"a",'b')"#);
    assert_eq!(encode(&[1u8, 2][..]).unwrap(), "[1,2]");
    assert_eq!(encode(&[0u8; 0]).unwrap(), "[]");
    assert_eq!(encode(&VecDeque::from([3u8])).unwrap(), "[3]");
    assert_eq!(encode(&BTreeSet::from([2u8, 1])).unwrap(), "{1,2}");
    assert_eq!(encode(&BTreeMap::from([("k", 1u8)])).unwrap(), r#"{"k":1}"#);
}

#[test]
fn borrowed_and_owned_forms_give_the_same_key() {
    let owned = String::from("Fred");
    assert_eq!(encode(&owned).unwrap(), encode("Fred").unwrap());
    assert_eq!(encode(&&owned).unwrap(), encode(&owned).unwrap());
    assert_eq!(encode(&Box::new(5u8)).unwrap(), "5");
    assert_eq!(encode(&Rc::new(5u8)).unwrap(), "5");
    assert_eq!(encode(&Arc::<str>::from("a")).unwrap(), r#""a""#);
    assert_eq!(encode(&Cow::Borrowed("a")).unwrap(), r#""a""#);
    let v = vec![1u64, 2];
    assert_eq!(encode(&v).unwrap(), encode(&v[..]).unwrap());
    assert_eq!(encode(&v).unwrap(), encode(&[1u64, 2]).unwrap());
}

#[test]
fn separators_and_empty_strings_inside_arguments_stay_apart() {
    let lists: Vec<Vec<&dyn CacheKey>> = vec![
        vec![&"a,b"],
        vec![&"a", &"b"],
        vec![&"a\",\"b"],
        vec![&""],
        vec![],
        vec![&"", &""],
        vec![&","],
        vec![&"\\"],
        vec![&"\\\""],
        vec![&"\"", &""],
        vec![&"", &"\""],
    ];
    let keys: Vec<String> = lists.iter().map(|l| encode_args(l).unwrap()).collect();
    for (i, a) in keys.iter().enumerate() {
        for (j, b) in keys.iter().enumerate() {
            if i != j {
                assert_ne!(a, b, "lists {i} and {j} share a key");
            }
        }
    }
    assert_eq!(keys[4], "");
    assert_eq!(keys[5], r#""","""#);
}

#[test]
fn serde_types_key_through_serde_key() {
    #[derive(serde::Serialize)]
    struct Query {
        page: u8,
        terms: Vec<String>,
    }
    let a = Query {
        page: 1,
        terms: vec!["ale".into()],
    };
    let b = Query {
        page: 1,
        terms: vec!["al".into(), "e".into()],
    };
    let ka = encode(&SerdeKey(&a)).unwrap();
    assert_eq!(ka, encode(&SerdeKey(&a)).unwrap());
    assert_ne!(ka, encode(&SerdeKey(&b)).unwrap());
    assert!(ka.starts_with('<') && ka.ends_with('>'));
}

#[test]
fn a_serde_key_that_fails_to_serialize_is_an_encode_error() {
    struct Refuses;
    impl serde::Serialize for Refuses {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refused"))
        }
    }
    let err = encode(&SerdeKey(Refuses)).unwrap_err();
    assert!(err.is_encode());
    assert!(err.to_string().contains("SerdeKey"), "{err}");
}

/// Values of one argument position, chosen to collide if the format were
/// sloppy: separators, quotes, escapes, brackets, empty text.
const TEXTS: &[&str] = &[
    "", ",", "\"", "\\", "\\\"", "a", "a,b", "(", ")", "[", "]", "None", "Some(", "'", "\",\"",
];

/// Every argument list of up to three arguments of the types
/// `(&str, Option<i32>, Vec<&str>)` in every combination of lengths: all
/// keys distinct exactly when the lists differ.
#[test]
fn argument_lists_never_share_a_key() {
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    enum Arg {
        Text(&'static str),
        Num(Option<i32>),
        List(Vec<&'static str>),
    }
    impl CacheKey for Arg {
        fn write_key(&self, out: &mut tankard::cache_key::KeyWriter<'_>) {
            match self {
                Arg::Text(t) => t.write_key(out),
                Arg::Num(n) => n.write_key(out),
                Arg::List(l) => l.write_key(out),
            }
        }
    }
    let mut values: Vec<Arg> = TEXTS.iter().map(|t| Arg::Text(t)).collect();
    values.extend([None, Some(0), Some(-1), Some(10), Some(i32::MIN)].map(Arg::Num));
    let lists_of_texts: Vec<Vec<&'static str>> = {
        let mut out = vec![vec![]];
        for a in TEXTS {
            out.push(vec![*a]);
            for b in TEXTS.iter().take(6) {
                out.push(vec![*a, *b]);
            }
        }
        out
    };
    values.extend(lists_of_texts.into_iter().map(Arg::List));

    // One function has one signature: check each signature's lists apart.
    type Accepts = fn(&Arg) -> bool;
    let signatures: [&[Accepts]; 4] = [
        &[|a| matches!(a, Arg::Text(_))],
        &[|a| matches!(a, Arg::Text(_)), |a| matches!(a, Arg::Text(_))],
        &[
            |a| matches!(a, Arg::Text(_)),
            |a| matches!(a, Arg::Num(_)),
            |a| matches!(a, Arg::List(_)),
        ],
        &[|a| matches!(a, Arg::List(_)), |a| matches!(a, Arg::Text(_))],
    ];
    let mut checked = 0;
    for signature in signatures {
        let mut lists: Vec<Vec<Arg>> = vec![vec![]];
        for accepts in signature {
            let column: Vec<&Arg> = values.iter().filter(|a| accepts(a)).collect();
            // Keep the run short: the first position takes every value, later ones a sample.
            let take = if lists.len() == 1 { column.len() } else { 12 };
            lists = lists
                .iter()
                .flat_map(|prefix| {
                    column.iter().take(take).map(move |v| {
                        let mut l = prefix.clone();
                        l.push((*v).clone());
                        l
                    })
                })
                .collect();
        }
        let mut seen: HashMap<String, Vec<Arg>> = HashMap::new();
        for list in lists {
            let refs: Vec<&dyn CacheKey> = list.iter().map(|a| a as &dyn CacheKey).collect();
            let key = encode_args(&refs).unwrap();
            if let Some(other) = seen.get(&key) {
                assert_eq!(other, &list, "two argument lists share the key {key:?}");
            }
            seen.insert(key, list);
            checked += 1;
        }
    }
    assert!(checked > 2000, "only {checked} lists checked");
}
