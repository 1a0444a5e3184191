//! The attribute's options: `region = "…"`, `expire = N`, `namespace = "…"`,
//! `manager = <expr>`, `key = <expr>`, `skip(a, b)`, `cache_none = bool`,
//! `companions = bool`, `associated`, `tags = ["…", …]`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Ident, Lit, LitBool, LitStr, Meta, Token};

const OPTIONS: &[&str] = &[
    "region",
    "expire",
    "namespace",
    "manager",
    "key",
    "skip",
    "cache_none",
    "companions",
    "associated",
    "tags",
];

pub(crate) struct Options {
    pub(crate) region: Option<LitStr>,
    pub(crate) expire: Option<Expr>,
    pub(crate) namespace: Option<LitStr>,
    pub(crate) manager: Option<Expr>,
    pub(crate) key: Option<Expr>,
    pub(crate) skip: Vec<Ident>,
    pub(crate) cache_none: Option<(bool, Span)>,
    pub(crate) companions: bool,
    pub(crate) associated: bool,
    /// Format strings over the arguments, one tag each.
    pub(crate) tags: Vec<LitStr>,
}

/// The closest candidate to a misspelled name, if one is close enough.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .map(|candidate| (distance(name, candidate), candidate))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

fn string(name: &str, meta: &Meta) -> syn::Result<LitStr> {
    if let Meta::NameValue(nv) = meta {
        if let Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) = &nv.value
        {
            return Ok(s.clone());
        }
        return Err(syn::Error::new_spanned(
            &nv.value,
            format!("`{name}` takes a string literal: {name} = \"...\""),
        ));
    }
    Err(syn::Error::new_spanned(
        meta,
        format!("`{name}` takes a string literal: {name} = \"...\""),
    ))
}

fn expr(name: &str, meta: &Meta) -> syn::Result<Expr> {
    match meta {
        Meta::NameValue(nv) => Ok(nv.value.clone()),
        _ => Err(syn::Error::new_spanned(
            meta,
            format!("`{name}` takes a value: {name} = ..."),
        )),
    }
}

/// `tags = ["user:{id}", "users"]`: string literals, each a format string
/// over the function's arguments; a literal that can only make an empty
/// tag is refused here.
fn tags(meta: &Meta) -> syn::Result<Vec<LitStr>> {
    const USAGE: &str = "`tags` takes a list of string literals, format strings over the arguments: tags = [\"user:{id}\"]";
    let Meta::NameValue(nv) = meta else {
        return Err(syn::Error::new_spanned(meta, USAGE));
    };
    let Expr::Array(array) = &nv.value else {
        return Err(syn::Error::new_spanned(&nv.value, USAGE));
    };
    array
        .elems
        .iter()
        .map(|elem| match elem {
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) if s.value().is_empty() => Err(syn::Error::new_spanned(s, "a tag cannot be empty")),
            Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            }) => Ok(s.clone()),
            other => Err(syn::Error::new_spanned(other, USAGE)),
        })
        .collect()
}

fn flag(name: &str, meta: &Meta) -> syn::Result<bool> {
    match meta {
        Meta::Path(_) => Ok(true),
        Meta::NameValue(nv) => match &nv.value {
            Expr::Lit(ExprLit {
                lit: Lit::Bool(LitBool { value, .. }),
                ..
            }) => Ok(*value),
            other => Err(syn::Error::new_spanned(
                other,
                format!("`{name}` takes `true` or `false`"),
            )),
        },
        Meta::List(_) => Err(syn::Error::new_spanned(
            meta,
            format!("`{name}` takes `true` or `false`: {name} = true"),
        )),
    }
}

impl Parse for Options {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let metas = Punctuated::<Meta, Token![,]>::parse_terminated(input)?;
        let mut options = Options {
            region: None,
            expire: None,
            namespace: None,
            manager: None,
            key: None,
            skip: Vec::new(),
            cache_none: None,
            companions: true,
            associated: false,
            tags: Vec::new(),
        };
        let mut seen: Vec<String> = Vec::new();
        for meta in &metas {
            let path = meta.path();
            let Some(ident) = path.get_ident() else {
                return Err(syn::Error::new_spanned(
                    path,
                    format!("unknown option; expected one of: {}", OPTIONS.join(", ")),
                ));
            };
            let name = ident.to_string();
            if seen.contains(&name) {
                return Err(syn::Error::new_spanned(
                    ident,
                    format!("`{name}` is given twice"),
                ));
            }
            seen.push(name.clone());
            match name.as_str() {
                "region" => options.region = Some(string("region", meta)?),
                "namespace" => options.namespace = Some(string("namespace", meta)?),
                "expire" => options.expire = Some(expr("expire", meta)?),
                "manager" => options.manager = Some(expr("manager", meta)?),
                "key" => options.key = Some(expr("key", meta)?),
                "cache_none" => {
                    options.cache_none = Some((flag("cache_none", meta)?, ident.span()))
                }
                "companions" => options.companions = flag("companions", meta)?,
                "associated" => options.associated = flag("associated", meta)?,
                "tags" => options.tags = tags(meta)?,
                "skip" => {
                    let Meta::List(list) = meta else {
                        return Err(syn::Error::new_spanned(
                            meta,
                            "`skip` takes argument names: skip(conn, log)",
                        ));
                    };
                    let names = list
                        .parse_args_with(Punctuated::<Ident, Token![,]>::parse_terminated)
                        .map_err(|err| {
                            syn::Error::new(
                                err.span(),
                                "`skip` takes argument names: skip(conn, log)",
                            )
                        })?;
                    options.skip.extend(names);
                }
                _ => {
                    let alias = match name.as_str() {
                        "ttl" | "time_to_live" | "max_age" | "expiry" | "expires_in" => {
                            Some("expire")
                        }
                        "ns" | "prefix" => Some("namespace"),
                        "cache" | "cache_manager" => Some("manager"),
                        _ => None,
                    };
                    let hint = alias
                        .or_else(|| closest(&name, OPTIONS.iter().copied()))
                        .map(|c| format!("did you mean `{c}`? "))
                        .unwrap_or_default();
                    return Err(syn::Error::new_spanned(
                        ident,
                        format!(
                            "unknown option `{name}`; {hint}expected one of: {}",
                            OPTIONS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_find_near_misses_only() {
        assert_eq!(closest("regoin", OPTIONS.iter().copied()), Some("region"));
        assert_eq!(closest("expires", OPTIONS.iter().copied()), Some("expire"));
        assert_eq!(
            closest("cachenone", OPTIONS.iter().copied()),
            Some("cache_none")
        );
        assert_eq!(closest("ttl", OPTIONS.iter().copied()), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
