//! The SQL store's own options, read out of a region's: the `url` (its
//! scheme picks the engine) and the `table`.

use crate::backend::OptionProblem;
use crate::options::RegionOptions;

/// What a database URL looks like, for its errors.
const URL: &str = "postgres://user[:password]@host[:port]/db, mysql://user[:password]@host[:port]/db \
                   or sqlite://path/to/file.db";

/// What a table name looks like, for its errors.
const TABLE: &str =
    "a name of letters, digits and _ that does not start with a digit, at most 48 bytes";

/// The table used when `table` is not set.
pub(crate) const DEFAULT_TABLE: &str = "tankard_cache";

/// Which SQL engine a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Engine {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `mysql://` or `mariadb://`: MySQL or MariaDB.
    MySql,
    /// `sqlite://` or `sqlite:`.
    Sqlite,
}

impl Engine {
    /// The cargo feature that builds the engine.
    pub(crate) fn feature(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::MySql => "mysql",
            Engine::Sqlite => "sqlite",
        }
    }

    /// Whether this build has the engine's feature.
    pub(crate) fn built(self) -> bool {
        match self {
            Engine::Postgres => cfg!(feature = "postgres"),
            Engine::MySql => cfg!(feature = "mysql"),
            Engine::Sqlite => cfg!(feature = "sqlite"),
        }
    }

    /// The engine a URL's scheme names, if any.
    fn of(url: &str) -> Option<Engine> {
        let lower = url.to_ascii_lowercase();
        let (scheme, _) = lower.split_once(':')?;
        match scheme {
            "postgres" | "postgresql" => Some(Engine::Postgres),
            "mysql" | "mariadb" => Some(Engine::MySql),
            "sqlite" => Some(Engine::Sqlite),
            _ => None,
        }
    }
}

/// Where a database region keeps its rows.
// Read by the store, which its cargo features build.
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code)
)]
#[derive(Debug)]
pub(crate) struct DatabaseOptions {
    /// The URL as written (`mariadb://` is given to the driver as `mysql://`).
    pub(crate) url: String,
    /// The engine its scheme names.
    pub(crate) engine: Engine,
    /// `table`, by default [`DEFAULT_TABLE`]; checked to be a plain
    /// identifier, since it goes into SQL text.
    pub(crate) table: String,
}

impl DatabaseOptions {
    /// The store's options, or what is wrong with them.
    pub(crate) fn read(options: &RegionOptions) -> Result<DatabaseOptions, OptionProblem> {
        let url = options
            .url
            .as_deref()
            .ok_or_else(|| OptionProblem::Missing {
                option: "url",
                message: "missing; the database backend needs url = \"postgres://…\", \
                          \"mysql://…\" or \"sqlite://<file>\""
                    .to_owned(),
            })?;
        let bad_url = |problem: String, expected| OptionProblem::Bad {
            option: "url",
            value: super::super::redis::options::redact(url),
            problem,
            expected,
        };
        let engine = Engine::of(url).ok_or_else(|| {
            bad_url(
                "does not name a database this backend knows (its scheme)".to_owned(),
                URL,
            )
        })?;
        if !engine.built() {
            return Err(bad_url(
                format!(
                    "needs the cargo feature \"{}\" of tankard",
                    engine.feature()
                ),
                match engine {
                    Engine::Postgres => "`tankard = { features = [\"postgres\"] }`",
                    Engine::MySql => "`tankard = { features = [\"mysql\"] }`",
                    Engine::Sqlite => "`tankard = { features = [\"sqlite\"] }`",
                },
            ));
        }
        let after_scheme = url.split_once(':').map_or("", |(_, rest)| rest);
        let rest = after_scheme.trim_start_matches('/');
        if engine == Engine::Sqlite {
            let path = sqlite_path(url).unwrap_or_default();
            if path.is_empty() || path == ":memory:" || path.contains("mode=memory") {
                return Err(bad_url(
                    "is not a database file: every connection of an in-memory SQLite \
                     database has its own, and no other process sees it"
                        .to_owned(),
                    "sqlite://path/to/file.db (relative) or sqlite:///abs/path.db",
                ));
            }
        } else if rest.is_empty() || rest.starts_with('?') || rest.contains(char::is_whitespace) {
            return Err(bad_url("has no host".to_owned(), URL));
        }
        let table = options
            .table
            .clone()
            .unwrap_or_else(|| DEFAULT_TABLE.to_owned());
        if !is_table_name(&table) {
            return Err(OptionProblem::Bad {
                option: "table",
                value: table,
                problem: "is not a plain SQL identifier (it goes into SQL text)".to_owned(),
                expected: TABLE,
            });
        }
        let url = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mariadb") => {
                format!("mysql://{rest}")
            }
            _ => url.to_owned(),
        };
        Ok(DatabaseOptions { url, engine, table })
    }
}

/// The file of an `sqlite:` URL: `sqlite://a/b.db` is `a/b.db`,
/// `sqlite:///tmp/b.db` is `/tmp/b.db`, without the `?query`.
pub(crate) fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url.get("sqlite:".len()..)?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    Some(rest.split('?').next().unwrap_or(rest))
}

/// `[A-Za-z_][A-Za-z0-9_]*`, at most 48 bytes (PostgreSQL cuts names at 63
/// bytes: this leaves room for the index name's `_expires_at`).
pub(crate) fn is_table_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && name.len() <= 48
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        for good in ["tankard_cache", "_t", "Cache2"] {
            assert!(is_table_name(good), "{good}");
        }
        for bad in ["", "2t", "t-1", "t;drop", "a b", "\"t\"", &"x".repeat(49)] {
            assert!(!is_table_name(bad), "{bad}");
        }
    }

    #[test]
    fn sqlite_urls_name_a_file() {
        assert_eq!(sqlite_path("sqlite://a/b.db"), Some("a/b.db"));
        assert_eq!(
            sqlite_path("sqlite:///tmp/b.db?mode=rwc"),
            Some("/tmp/b.db")
        );
        assert_eq!(sqlite_path("sqlite:c.db"), Some("c.db"));
    }

    #[test]
    fn the_scheme_picks_the_engine() {
        assert_eq!(Engine::of("postgresql://h/d"), Some(Engine::Postgres));
        assert_eq!(Engine::of("MariaDB://h/d"), Some(Engine::MySql));
        assert_eq!(Engine::of("sqlite:x.db"), Some(Engine::Sqlite));
        assert_eq!(Engine::of("oracle://h"), None);
        assert_eq!(Engine::of("no scheme"), None);
    }
}
