//! `Config: Deserialize`: a config inside an application's own settings
//! (a `cache` table of its TOML, a JSON or YAML object, environment
//! variables through `figment` or `config`), in the shape of TOML's
//! `[cache]` table: options as keys, one nested table per region. It goes
//! through the same parser and checks as a file.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::Config;

/// One value of the table: an option's (any scalar, as text), `regions`'
/// list, or a region's own table.
enum Value {
    Scalar(String),
    List(Vec<String>),
    Table(Vec<(String, Value)>),
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an option's value, a list of region names, or a region's table")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Scalar(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Scalar(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Scalar(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Scalar(v.to_string()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Scalar(v.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            entries.push((key, value));
        }
        Ok(Value::Table(entries))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

/// Deserializes the shape of TOML's `[cache]` table. A value the parser
/// refuses is a deserialization error with the parser's message, which
/// names the key (`cache.short_term.url: …`).
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Settings {
///     cache: tankard::Config,
/// }
///
/// let settings: Settings = toml::from_str(r#"
///     [cache]
///     regions = ["short_term"]
///     type = "memory"
///
///     [cache.short_term]
///     expire = "20m"
/// "#)?;
/// let short = settings.cache.region("short_term").ok_or("no short_term")?;
/// assert_eq!(short.expire, Some(std::time::Duration::from_secs(1200)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Config, D::Error> {
        let Value::Table(entries) = Value::deserialize(deserializer)? else {
            return Err(de::Error::custom(
                "a cache config is a table of options, with one table per region",
            ));
        };
        let mut pairs = Vec::new();
        for (key, value) in entries {
            match value {
                Value::Scalar(text) => pairs.push((format!("cache.{key}"), text)),
                Value::List(items) => pairs.push((format!("cache.{key}"), items.join(", "))),
                Value::Table(options) => {
                    for (option, value) in options {
                        let Value::Scalar(text) = value else {
                            return Err(de::Error::custom(format!(
                                "cache.{key}.{option}: a region's option takes a single value"
                            )));
                        };
                        pairs.push((format!("cache.{key}.{option}"), text));
                    }
                }
            }
        }
        Config::from_flat(pairs).map_err(de::Error::custom)
    }
}
