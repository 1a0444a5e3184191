//! The `#[tankard::cached]` attribute. Use it through the `tankard` crate
//! (feature `macros`, on by default), which documents it in full:
//! `tankard::cached`.
//!
//! ```
//! #[tankard::cached(expire = 10)]
//! fn slow_sum(a: u64, b: u64) -> u64 {
//!     a + b
//! }
//!
//! tankard::install(tankard::CacheManager::new(tankard::Config::memory())?)?;
//! assert_eq!(slow_sum(1, 2), 3);
//! assert_eq!(slow_sum_peek(1, 2)?, Some(3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod options;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, GenericParam, Ident, ItemFn, Pat, PathArguments, ReturnType, Type,
};

use options::Options;

/// Caches a function's results, keyed by its arguments. See
/// `tankard::cached` for the documentation.
///
/// ```
/// #[tankard::cached]
/// fn double(n: u32) -> u32 {
///     n * 2
/// }
///
/// tankard::install(tankard::CacheManager::new(tankard::Config::memory())?)?;
/// assert_eq!(double(21), 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    match expand(args.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

/// How the return type is cached.
enum Mode {
    /// `T`: the value itself.
    Plain,
    /// `Result<T, E>`: only `Ok` values.
    Result,
    /// `Option<T>` without `cache_none`: only `Some` values.
    Option,
}

struct Arg {
    ident: Ident,
    ty: Type,
    /// The argument as the companions declare it (`mut` dropped).
    decl: TokenStream2,
    /// Whether it carries attributes.
    has_attrs: bool,
}

fn expand(args: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let options: Options = syn::parse2(args)?;
    let func: ItemFn = syn::parse2(item).map_err(|err| {
        syn::Error::new(
            err.span(),
            "#[tankard::cached] goes on a function with a body",
        )
    })?;
    let sig = &func.sig;

    if let Some(region) = &options.region {
        // The rule `cache.regions` applies (tankard's config/parse.rs): a
        // name no configuration can define is a typo caught here.
        let name = region.value();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(syn::Error::new_spanned(
                region,
                format!(
                    "no configuration can define a region named {name:?}: \
                     region names are letters, digits, `_`, `.` and `-`"
                ),
            ));
        }
    }

    if let Some(constness) = &sig.constness {
        return Err(syn::Error::new_spanned(
            constness,
            "a `const fn` cannot be cached",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(syn::Error::new_spanned(
            variadic,
            "a variadic function cannot be cached",
        ));
    }
    for param in &sig.generics.params {
        if !matches!(param, GenericParam::Lifetime(_)) {
            return Err(syn::Error::new_spanned(
                param,
                "a #[tankard::cached] function cannot be generic over types or constants: \
                 its namespace and keys are the same for every instantiation. \
                 Cache a non-generic function that calls the generic one",
            ));
        }
    }

    let mut receiver = None;
    let mut keyed = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(recv) => receiver = Some(recv.clone()),
            FnArg::Typed(pat_type) => {
                let Pat::Ident(pat) = &*pat_type.pat else {
                    return Err(syn::Error::new_spanned(
                        &pat_type.pat,
                        "#[tankard::cached] needs a plain name for every argument \
                         (destructure it inside the function)",
                    ));
                };
                if pat.by_ref.is_some() || pat.subpat.is_some() {
                    return Err(syn::Error::new_spanned(
                        pat,
                        "#[tankard::cached] needs a plain name for every argument",
                    ));
                }
                if let Some(span) = find_impl_trait(&pat_type.ty) {
                    return Err(syn::Error::new(
                        span,
                        "a #[tankard::cached] function cannot take `impl Trait` arguments: \
                         its namespace and keys are the same for every instantiation. \
                         Use a concrete type",
                    ));
                }
                let ident = pat.ident.clone();
                let ty = (*pat_type.ty).clone();
                let attrs = &pat_type.attrs;
                keyed.push(Arg {
                    decl: quote!(#(#attrs)* #ident: #ty),
                    has_attrs: !attrs.is_empty(),
                    ident,
                    ty,
                });
            }
        }
    }

    let ret = match &sig.output {
        ReturnType::Type(_, ty) if !is_unit(ty) => (**ty).clone(),
        _ => {
            return Err(syn::Error::new_spanned(
                &sig.ident,
                "a #[tankard::cached] function must return a value to cache",
            ));
        }
    };
    if let Some(span) = find_impl_trait(&ret) {
        return Err(syn::Error::new(
            span,
            "a #[tankard::cached] function must return a concrete type, not `impl Trait`",
        ));
    }

    let (mut mode, value_ty) = match last_segment(&ret) {
        Some(("Result", first)) => (Mode::Result, first),
        Some(("Option", first)) => (Mode::Option, first),
        _ => (Mode::Plain, None),
    };
    if let Some((cache_none, span)) = options.cache_none {
        if !matches!(mode, Mode::Option) {
            return Err(syn::Error::new(
                span,
                "`cache_none` applies to functions returning `Option<T>`",
            ));
        }
        if cache_none {
            mode = Mode::Plain;
        }
    }
    let value_ty = match mode {
        Mode::Plain => ret.clone(),
        Mode::Result | Mode::Option => match value_ty {
            Some(ty) => ty,
            None => {
                return Err(syn::Error::new_spanned(
                    &ret,
                    "cannot see the value type: write `Result<T, E>` or `Option<T>` with its type arguments",
                ));
            }
        },
    };

    for skipped in &options.skip {
        if skipped == "self" {
            return Err(syn::Error::new_spanned(
                skipped,
                "`self` is never part of the key; use `key = ...` to key on it",
            ));
        }
        if !keyed.iter().any(|arg| arg.ident == *skipped) {
            let names: Vec<String> = keyed.iter().map(|a| a.ident.to_string()).collect();
            let hint = options::closest(&skipped.to_string(), names.iter().map(String::as_str))
                .map(|name| format!("; did you mean `{name}`?"))
                .unwrap_or_default();
            return Err(syn::Error::new_spanned(
                skipped,
                format!("`skip`: the function has no argument `{skipped}`{hint}"),
            ));
        }
    }
    if let (Some(key), Some(first)) = (&options.key, options.skip.first()) {
        let _ = key;
        return Err(syn::Error::new_spanned(
            first,
            "`skip` has no effect with `key = ...`: the key expression alone is the key",
        ));
    }

    let method = receiver.is_some() || options.associated || mentions_self(sig);
    let fn_name = &sig.ident;
    let fn_name_str = fn_name.to_string();
    let private = quote!(::tankard::__private);
    let namespace = match (&options.namespace, method) {
        (Some(ns), _) => quote!(#private::Namespace::Fixed(#ns)),
        (None, false) => {
            quote!(#private::Namespace::Fixed(::core::concat!(::core::module_path!(), "::", #fn_name_str)))
        }
        (None, true) => quote!(#private::Namespace::OfSelf {
            module: ::core::module_path!(),
            function: #fn_name_str,
        }),
    };
    let self_type = if method && options.namespace.is_none() {
        quote!(::core::option::Option::Some(
            ::core::any::type_name::<Self>()
        ))
    } else {
        quote!(::core::option::Option::None)
    };
    let region = match &options.region {
        Some(region) => quote!(::core::option::Option::Some(#region)),
        None => quote!(::core::option::Option::None),
    };
    let expire = match &options.expire {
        Some(expire) => quote_spanned!(expire.span()=> ::core::option::Option::Some(#expire)),
        None => quote!(::core::option::Option::None),
    };
    let manager = match &options.manager {
        Some(expr) => quote_spanned!(expr.span()=> #private::manager(&(#expr))),
        None => quote!(#private::global()),
    };

    let writer = Ident::new("__tankard_key", Span::mixed_site());
    // A `key = …` expression is evaluated once, into `key_value`, and read
    // by both the word key and the key writer.
    let key_value = Ident::new("__tankard_key_value", Span::mixed_site());
    let (key_binding, words, key_writes) = match &options.key {
        Some(expr) => (
            quote_spanned!(expr.span()=> let #key_value = &(#expr);),
            quote!([#private::word_of(#key_value)]),
            quote_spanned!(expr.span()=> #private::key_arg(#writer, #key_value);),
        ),
        None => {
            let idents: Vec<_> = keyed
                .iter()
                .filter(|arg| !options.skip.contains(&arg.ident))
                .map(|arg| (&arg.ident, arg.ty.span()))
                .collect();
            let words = idents
                .iter()
                .map(|(ident, span)| quote_spanned!(*span=> #private::word_of(&#ident)));
            let writes = idents
                .iter()
                .map(|(ident, span)| quote_spanned!(*span=> #private::key_arg(#writer, &#ident);));
            (quote!(), quote!([#(#words),*]), quote!(#(#writes)*))
        }
    };
    let key_closure = quote!(|#writer: &mut #private::KeyWriter<'_>| { #key_writes });

    let site = Ident::new("__TANKARD_SITE", Span::mixed_site());
    // A call that cannot reach its cache (no manager installed, region
    // missing) panics in a debug build of a function with no error channel:
    // decided by the crate that holds the function, not by tankard's build.
    let strict = match mode {
        Mode::Result => quote!(false),
        Mode::Plain | Mode::Option => quote!(::core::cfg!(debug_assertions)),
    };
    let wrapper_site = quote! {
        static #site: #private::Site = #private::Site::new(#namespace, #region, #expire, #strict);
    };
    let site_static = quote! {
        static #site: #private::Site = #private::Site::new(#namespace, #region, #expire, false);
    };
    // A region the global manager must have: `tankard::install` checks it.
    let registration = match (&options.region, &options.manager) {
        (Some(region), None) => quote! {
            #private::inventory::submit! {
                #private::Registration::new(
                    #region,
                    ::core::concat!(::core::module_path!(), "::", #fn_name_str),
                )
            }
        },
        _ => quote!(),
    };

    // The value type's marker (see `tankard::__private::ValueOf`): with
    // companions, a hidden sibling returns it as an opaque type, so that an
    // unsuitable value type is one error there. A trait impl cannot gain
    // that sibling (the reason for `companions = false`): there the
    // wrapper names the type itself.
    let value_span = value_ty.span();
    let value_fn = format_ident!("__tankard_{}_value", fn_name);
    let (value_item, value) = if options.companions {
        let call = if method {
            quote!(Self::#value_fn())
        } else {
            quote!(#value_fn())
        };
        let cfgs = func.attrs.iter().filter(|attr| attr.path().is_ident("cfg"));
        let generics = &sig.generics;
        let where_clause = &sig.generics.where_clause;
        // The signature is spanned at the value type: an unsuitable one is
        // reported there (the body, which the compiler mentions too, at the
        // attribute).
        let ret = quote_spanned!(value_span=> impl ::tankard::__private::ValueOf<V = #value_ty>);
        let item = quote! {
            #(#cfgs)*
            #[doc(hidden)]
            #[inline(always)]
            fn #value_fn #generics () -> #ret #where_clause {
                #private::Value::<#value_ty>::new()
            }
        };
        (item, call)
    } else {
        (quote!(), quote!(#private::Value::<#value_ty>::new()))
    };

    let is_async = sig.asyncness.is_some();
    // `tags = [...]`: the body first tags the entry it makes, with each
    // format string written over the arguments (the literal keeps the
    // user's span, so its captures name the function's arguments). A bad
    // tag fails the call (`CreatorContext::add_tag`).
    let user_block = &func.block;
    let tag_exprs = &options.tags;
    let block = if tag_exprs.is_empty() {
        quote!(#user_block)
    } else {
        quote!({
            #(let _ = ::tankard::CreatorContext::add_tag(::std::format!(#tag_exprs));)*
            #user_block
        })
    };
    let start = Ident::new("__tankard_start", Span::mixed_site());
    let refresh = Ident::new("__tankard_refresh", Span::mixed_site());
    let spawnable =
        is_async && !method && receiver.is_none() && can_own_its_arguments(&func, &keyed, &ret);
    let body_fn = Ident::new("__tankard_body", Span::mixed_site());
    let call_fn = Ident::new("__tankard_call", Span::mixed_site());
    let spawner_fn = Ident::new("__tankard_spawner", Span::mixed_site());
    let args = Ident::new("__tankard_args", Span::mixed_site());
    let arg_idents: Vec<_> = keyed.iter().map(|arg| &arg.ident).collect();
    let arg_types: Vec<_> = keyed.iter().map(|arg| &arg.ty).collect();
    let spawnable_body = quote!(#private::spawnable((#(#arg_idents,)*), #call_fn, #spawner_fn));
    // Spanned at the return type: an unsuitable value or error type is
    // reported there.
    let finish = match (&mode, is_async) {
        (Mode::Plain, true) if spawnable => quote_spanned!(ret.span()=>
            ::tankard::__private::finish_spawnable_async(#start, #spawnable_body).await),
        (Mode::Result, true) if spawnable => quote_spanned!(ret.span()=>
            ::tankard::__private::finish_spawnable_result_async(#start, #spawnable_body).await),
        (Mode::Option, true) if spawnable => quote_spanned!(ret.span()=>
            ::tankard::__private::finish_spawnable_option_async(#start, #spawnable_body).await),
        (Mode::Plain, true) => quote_spanned!(ret.span()=>
            ::tankard::__private::finish_async(#start, ::tankard::__private::body_async::<#ret, _, _>(move || async move #block)).await),
        (Mode::Result, true) => quote_spanned!(ret.span()=>
            ::tankard::__private::finish_result_async(#start, ::tankard::__private::body_async::<#ret, _, _>(move || async move #block)).await),
        (Mode::Option, true) => quote_spanned!(ret.span()=>
            ::tankard::__private::finish_option_async(#start, ::tankard::__private::body_async::<#ret, _, _>(move || async move #block)).await),
        (Mode::Plain, false) => quote_spanned!(ret.span()=>
            ::tankard::__private::finish_blocking(#start, move || -> #ret #block)),
        (Mode::Result, false) => quote_spanned!(ret.span()=>
            ::tankard::__private::finish_result_blocking(#start, move || -> #ret #block)),
        (Mode::Option, false) => quote_spanned!(ret.span()=>
            ::tankard::__private::finish_option_blocking(#start, move || -> #ret #block)),
    };

    // A body that owns its arguments is a function of its own, so that
    // whether its future is `Send + 'static` is known where the call is
    // compiled (see `tankard::__private::Probe`): then `refresh =
    // background` can regenerate a stale result in a task.
    let (wrapper_sig, body_items) = if spawnable {
        let inputs = &sig.inputs;
        let items = quote! {
            #[allow(clippy::too_many_arguments, clippy::unused_async)]
            async fn #body_fn(#inputs) -> #ret #block
            #[allow(clippy::too_many_arguments)]
            fn #call_fn(#args: (#(#arg_types,)*)) -> impl ::core::future::Future<Output = #ret> {
                let (#(#arg_idents,)*) = #args;
                #body_fn(#(#arg_idents),*)
            }
            fn #spawner_fn() -> #private::Spawner<(#(#arg_types,)*), #ret> {
                #[allow(unused_imports)]
                use #private::{ViaLocal as _, ViaOwned as _};
                (&#private::Probe::<_, (#(#arg_types,)*), #ret>::new(#call_fn)).spawner()
            }
        };
        // The arguments are only moved on: `mut` belongs to the body's own
        // function.
        let mut sig = sig.clone();
        for input in &mut sig.inputs {
            if let FnArg::Typed(pat_type) = input
                && let Pat::Ident(pat) = &mut *pat_type.pat
            {
                pat.mutability = None;
            }
        }
        (sig, items)
    } else {
        (sig.clone(), quote!())
    };
    let attrs = &func.attrs;
    let vis = &func.vis;
    // A sync function points a debug build's panic (no manager, missing
    // region) at its caller. `#[track_caller]` does nothing on an `async
    // fn` (rustc warns), and needs the Rust ABI.
    let track_caller = if is_async
        || sig.abi.is_some()
        || func.attrs.iter().any(|a| a.path().is_ident("track_caller"))
    {
        quote!()
    } else {
        quote!(#[track_caller])
    };
    let wrapper = quote! {
        #(#attrs)*
        #track_caller
        #vis #wrapper_sig {
            #wrapper_site
            #registration
            #body_items
            let #refresh = #private::take_refresh();
            let #start = {
                #key_binding
                #private::start(#value, &#site, #manager, #self_type, #refresh, #words, #key_closure)
            };
            #finish
        }
    };

    if !options.companions {
        return Ok(wrapper);
    }

    // Companions: same arguments, same site configuration, same key.
    let cfgs: Vec<_> = func
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("cfg"))
        .collect();
    let companion_receiver = receiver.as_ref().map(|recv| {
        let mut recv = recv.clone();
        if recv.reference.is_none() {
            recv.mutability = None;
        }
        recv.attrs.clear();
        quote!(#recv,)
    });
    let decls: Vec<_> = keyed.iter().map(|arg| &arg.decl).collect();
    let idents: Vec<_> = keyed.iter().map(|arg| &arg.ident).collect();
    let generics = &sig.generics;
    let where_clause = &sig.generics.where_clause;
    let asyncness = &sig.asyncness;
    let unsafety = &sig.unsafety;
    let dot_await = if is_async { quote!(.await) } else { quote!() };
    let blocking = |name: &str| {
        let name = if is_async {
            name.to_owned()
        } else {
            format!("{name}_blocking")
        };
        Ident::new(&name, value_span)
    };
    let locate = quote! {
        #site_static
        #key_binding
        #private::locate(#value, &#site, #manager, #self_type, #words, #key_closure)?
    };
    let value_name = if idents.iter().any(|i| *i == "value") {
        format_ident!("new_value")
    } else {
        format_ident!("value")
    };
    let call_path = if method {
        match &receiver {
            Some(_) => quote!(Self::#fn_name(self, #(#idents),*)),
            None => quote!(Self::#fn_name(#(#idents),*)),
        }
    } else {
        quote!(#fn_name(#(#idents),*))
    };
    let refresh_body = if is_async {
        quote!(#private::refresh(#call_path).await)
    } else {
        quote!(#private::refresh_blocking(move || #call_path))
    };

    let invalidate = format_ident!("{}_invalidate", fn_name);
    let refresh_fn = format_ident!("{}_refresh", fn_name);
    let set = format_ident!("{}_set", fn_name);
    let peek = format_ident!("{}_peek", fn_name);
    // `_set` tags its entry as the body does.
    let set_tags = if tag_exprs.is_empty() {
        quote!()
    } else {
        quote!(.tagged([#(::std::format!(#tag_exprs)),*])?)
    };
    let remove_call = blocking("remove");
    let set_call = blocking("set");
    let peek_call = blocking("peek");
    let doc_invalidate = format!(
        "Removes the cached result of `{fn_name_str}` for these arguments; `Ok(true)` if there was one.\n\n\
         Generated by `#[tankard::cached]`: same arguments, same key."
    );
    let doc_refresh = format!(
        "Runs `{fn_name_str}` for these arguments without looking in the cache, \
         stores its result (as a call would) and returns it.\n\n\
         Generated by `#[tankard::cached]`: same arguments, same key."
    );
    let doc_set = format!(
        "Stores `{value_name}` as the cached result of `{fn_name_str}` for these arguments.\n\n\
         Generated by `#[tankard::cached]`: same arguments, same key."
    );
    let doc_peek = format!(
        "The fresh cached result of `{fn_name_str}` for these arguments, if there is one; \
         never runs the function.\n\n\
         Generated by `#[tankard::cached]`: same arguments, same key."
    );
    let allow = quote!(#[allow(unused_variables, clippy::too_many_arguments)]);

    Ok(quote! {
        #wrapper

        #value_item

        #(#cfgs)*
        #[doc = #doc_invalidate]
        #allow
        #vis #asyncness #unsafety fn #invalidate #generics (#companion_receiver #(#decls),*)
            -> ::tankard::Result<bool> #where_clause
        {
            #locate.#remove_call()#dot_await
        }

        #(#cfgs)*
        #[doc = #doc_refresh]
        #allow
        #vis #asyncness #unsafety fn #refresh_fn #generics (#companion_receiver #(#decls),*)
            -> #ret #where_clause
        {
            #refresh_body
        }

        #(#cfgs)*
        #[doc = #doc_set]
        #allow
        #vis #asyncness #unsafety fn #set #generics (#companion_receiver #(#decls,)* #value_name: &#value_ty)
            -> ::tankard::Result<()> #where_clause
        {
            #locate #set_tags.#set_call(#value_name)#dot_await
        }

        #(#cfgs)*
        #[doc = #doc_peek]
        #allow
        #vis #asyncness #unsafety fn #peek #generics (#companion_receiver #(#decls),*)
            -> ::tankard::Result<::core::option::Option<#value_ty>> #where_clause
        {
            #locate.#peek_call()#dot_await
        }
    })
}

/// Whether a cached `async fn`'s body can be a function of its own that
/// owns its arguments (and so, if its future is `Send`, run in a task):
/// nothing in it may borrow from the caller or need the enclosing impl or
/// generics, which a nested function cannot see. Whether the future is
/// `Send` is left to the compiler (`__private::Probe`). A lifetime the
/// signature hides (`Cow<str>` for `Cow<'_, str>`) cannot be seen here;
/// `Cow`, the one such key type Tankard knows, is checked by name.
fn can_own_its_arguments(func: &ItemFn, args: &[Arg], ret: &Type) -> bool {
    let sig = &func.sig;
    if !sig.generics.params.is_empty()
        || sig.generics.where_clause.is_some()
        || sig.unsafety.is_some()
        || sig.abi.is_some()
        || args.iter().any(|arg| arg.has_attrs)
    {
        return false;
    }
    let owned = |ty: &Type| {
        let tokens = quote!(#ty);
        !borrows(tokens.clone()) && !names(tokens, &["Self", "Cow"])
    };
    let block = &func.block;
    args.iter().all(|arg| owned(&arg.ty)) && owned(ret) && !names(quote!(#block), &["self", "Self"])
}

/// Whether a type's tokens hold a reference or a lifetime other than
/// `'static`.
fn borrows(tokens: TokenStream2) -> bool {
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        let borrowed = match token {
            TokenTree::Punct(punct) if punct.as_char() == '&' => true,
            TokenTree::Punct(punct) if punct.as_char() == '\'' => {
                !matches!(tokens.peek(), Some(TokenTree::Ident(ident)) if ident == "static")
            }
            TokenTree::Group(group) => borrows(group.stream()),
            _ => false,
        };
        if borrowed {
            return true;
        }
    }
    false
}

/// Whether the tokens name one of `idents`.
fn names(tokens: TokenStream2, idents: &[&str]) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => idents.iter().any(|name| ident == name),
        TokenTree::Group(group) => names(group.stream(), idents),
        _ => false,
    })
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(tuple) if tuple.elems.is_empty())
}

/// The last path segment's name and its first type argument:
/// `Result` and `T` for `std::io::Result<T>`.
fn last_segment(ty: &Type) -> Option<(&'static str, Option<Type>)> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let segment = path.path.segments.last()?;
    let name = if segment.ident == "Result" {
        "Result"
    } else if segment.ident == "Option" {
        "Option"
    } else {
        return None;
    };
    let first = match &segment.arguments {
        PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty.clone()),
            _ => None,
        }),
        _ => None,
    };
    Some((name, first))
}

fn find_impl_trait(ty: &Type) -> Option<Span> {
    fn walk(tokens: TokenStream2) -> Option<Span> {
        for token in tokens {
            match token {
                TokenTree::Ident(ident) if ident == "impl" => return Some(ident.span()),
                TokenTree::Group(group) => {
                    if let Some(span) = walk(group.stream()) {
                        return Some(span);
                    }
                }
                _ => {}
            }
        }
        None
    }
    walk(quote!(#ty))
}

/// Whether the signature names `Self`: then it is in an impl block.
fn mentions_self(sig: &syn::Signature) -> bool {
    fn walk(tokens: TokenStream2) -> bool {
        tokens.into_iter().any(|token| match token {
            TokenTree::Ident(ident) => ident == "Self",
            TokenTree::Group(group) => walk(group.stream()),
            _ => false,
        })
    }
    let inputs = &sig.inputs;
    let output = &sig.output;
    walk(quote!(#inputs #output))
}
