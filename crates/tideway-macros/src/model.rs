//! The service model: a `#[service]` trait read into methods, arguments and routes, with every
//! check that can be made before code is generated. Problems are collected, not stopped at, so
//! one compile shows all of them.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::{
    Attribute, Error, FnArg, GenericArgument, Ident, ItemTrait, Pat, PathArguments, ReturnType,
    TraitItem, TraitItemFn, Type,
};

use crate::args::{ServiceArgs, check_service_name};
use crate::route::{HttpMethod, Route, route_shape};

/// A service trait, checked.
#[derive(Debug)]
pub(crate) struct Service {
    /// The service name calls travel under, e.g. `logistics.Waybills`.
    pub(crate) name: String,
    pub(crate) methods: Vec<Method>,
    /// `#[service(schema)]`: the descriptor carries a JSON Schema of every argument.
    pub(crate) schema: bool,
}

/// One method of a service trait.
#[derive(Debug)]
pub(crate) struct Method {
    pub(crate) ident: Ident,
    /// The name as a string (without `r#`).
    pub(crate) name: String,
    /// The method's `#[doc]` attributes.
    pub(crate) docs: Vec<Attribute>,
    pub(crate) params: Vec<Param>,
    /// The declared `Result<T, RpcError>`.
    pub(crate) output: Type,
    pub(crate) http_method: HttpMethod,
    pub(crate) path: String,
    /// No `#[route]`: the route is `POST /api/{service}/{method}`.
    pub(crate) conventional: bool,
    pub(crate) timeout_ms: Option<u64>,
    /// Where to point errors about the route: its path literal, or the method name when the
    /// route is conventional.
    route_span: Span,
}

/// One argument of a method (the receiver excluded).
#[derive(Debug)]
pub(crate) struct Param {
    pub(crate) ident: Ident,
    /// The name as a string (without `r#`): the key the argument is bound by.
    pub(crate) name: String,
    pub(crate) ty: Type,
    /// Marked `#[body]`: the payload object itself rather than a key in it.
    pub(crate) body: bool,
    /// The type is `Option<_>`, so a missing key means `None`.
    pub(crate) optional: bool,
    /// The argument's `#[schemars(..)]` attributes, for its published schema.
    pub(crate) schemars: Vec<Attribute>,
}

impl Param {
    /// The type whose schema is published: `T` for an `Option<T>` argument other than the body
    /// (optional is said by the parameter being optional), else the type as written.
    pub(crate) fn schema_type(&self) -> &Type {
        if self.body {
            return &self.ty;
        }
        option_inner(&self.ty).unwrap_or(&self.ty)
    }
}

impl Method {
    /// `service/method`, the name a call travels under.
    pub(crate) fn full_name(&self, service: &str) -> String {
        format!("{service}/{}", self.name)
    }
}

/// Several errors, reported together.
#[derive(Debug, Default)]
pub(crate) struct Errors(Option<Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn into_result(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

impl Service {
    /// Reads and checks a service trait.
    pub(crate) fn from_trait(args: &ServiceArgs, item: &ItemTrait) -> syn::Result<Service> {
        let mut errors = Errors::default();
        if let Some(token) = &item.unsafety {
            errors.push(Error::new_spanned(
                token,
                "a service trait cannot be `unsafe`",
            ));
        }
        if let Some(token) = &item.auto_token {
            errors.push(Error::new_spanned(
                token,
                "a service trait cannot be an auto trait",
            ));
        }
        if !item.generics.params.is_empty() {
            errors.push(Error::new_spanned(
                &item.generics,
                "a service trait cannot be generic: calls carry concrete argument and result \
                 types",
            ));
        }
        if let Some(clause) = &item.generics.where_clause {
            errors.push(Error::new_spanned(
                clause,
                "a service trait cannot have a `where` clause",
            ));
        }

        let name = match &args.name {
            Some(lit) => {
                let name = lit.value();
                if let Err(msg) = check_service_name(&name) {
                    errors.push(Error::new(lit.span(), msg));
                }
                name
            }
            None => item.ident.unraw().to_string(),
        };

        let mut methods = Vec::new();
        for trait_item in &item.items {
            let kind = match trait_item {
                TraitItem::Fn(f) => {
                    match Method::from_fn(&name, f) {
                        Ok(method) => methods.push(method),
                        Err(err) => errors.push(err),
                    }
                    continue;
                }
                TraitItem::Const(_) => "constants",
                TraitItem::Type(_) => "associated types",
                TraitItem::Macro(_) => "macro invocations",
                _ => "other items",
            };
            errors.push(Error::new_spanned(
                trait_item,
                format!(
                    "a service trait can only contain `async fn` methods, not {kind}; move this \
                     out of the trait"
                ),
            ));
        }

        check_unique(&name, &methods, &mut errors);
        if args.schema.is_none() {
            for param in methods.iter().flat_map(|m| &m.params) {
                for attr in &param.schemars {
                    errors.push(Error::new_spanned(
                        attr,
                        "`#[schemars]` on an argument shapes its published schema: add `schema` \
                         to `#[service(..)]` to publish schemas",
                    ));
                }
            }
        }
        errors.into_result()?;
        Ok(Service {
            name,
            methods,
            schema: args.schema.is_some(),
        })
    }
}

/// Names the generated client already uses for its own items.
const CLIENT_ITEMS: [&str; 4] = ["new", "with_options", "descriptor", "DESCRIPTOR"];

/// No two methods may share a name or a route, nor take a name the client uses itself.
fn check_unique(service: &str, methods: &[Method], errors: &mut Errors) {
    let mut names: HashMap<&str, &Method> = HashMap::new();
    let mut routes: HashMap<(HttpMethod, String), &Method> = HashMap::new();
    for method in methods {
        if CLIENT_ITEMS.contains(&method.name.as_str()) {
            errors.push(Error::new(
                method.ident.span(),
                format!(
                    "a service method cannot be named `{}`: the generated client has an item of that name",
                    method.name
                ),
            ));
        }
        if names.insert(&method.name, method).is_some() {
            errors.push(Error::new(
                method.ident.span(),
                format!(
                    "service `{service}` already has a method named `{}`",
                    method.name
                ),
            ));
            continue;
        }
        let key = (method.http_method, route_shape(&method.path));
        if let Some(first) = routes.insert(key, method) {
            errors.push(Error::new(
                method.route_span,
                format!(
                    "route `{} {}` of `{}` is already the route of `{}`",
                    method.http_method.as_str(),
                    method.path,
                    method.name,
                    first.name
                ),
            ));
        }
    }
}

impl Method {
    fn from_fn(service: &str, f: &TraitItemFn) -> syn::Result<Method> {
        let sig = &f.sig;
        let name = sig.ident.unraw().to_string();
        let mut errors = Errors::default();

        if let Some(block) = &f.default {
            errors.push(Error::new_spanned(
                block,
                "service methods cannot have a default body: the trait declares the service, \
                 implement the method in your `impl`",
            ));
        }
        if sig.asyncness.is_none() {
            let (fn_token, ident) = (&sig.fn_token, &sig.ident);
            let fn_name = quote!(#fn_token #ident);
            errors.push(Error::new_spanned(
                fn_name,
                format!("`{name}` must be an `async fn`: service methods are called remotely"),
            ));
        }
        if let Some(token) = &sig.constness {
            errors.push(Error::new_spanned(
                token,
                "service methods cannot be `const`",
            ));
        }
        if let Some(token) = &sig.unsafety {
            errors.push(Error::new_spanned(
                token,
                "service methods cannot be `unsafe`",
            ));
        }
        if let Some(abi) = &sig.abi {
            errors.push(Error::new_spanned(
                abi,
                "service methods cannot have an ABI",
            ));
        }
        if let Some(variadic) = &sig.variadic {
            errors.push(Error::new_spanned(
                variadic,
                "service methods cannot be variadic",
            ));
        }
        if !sig.generics.params.is_empty() {
            errors.push(Error::new_spanned(
                &sig.generics,
                format!(
                    "`{name}` cannot be generic: calls carry concrete argument and result types"
                ),
            ));
        } else if let Some(clause) = &sig.generics.where_clause {
            errors.push(Error::new_spanned(
                clause,
                format!("`{name}` cannot have a `where` clause"),
            ));
        }
        for attr in &f.attrs {
            if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
                errors.push(Error::new_spanned(
                    attr,
                    "`#[cfg]` is not supported on service methods: the generated client, server \
                     and route table would disagree with the trait",
                ));
            }
        }

        check_receiver(f, &name, &mut errors);
        let params = params(f, &mut errors);
        let output = match result_type(&sig.output, &sig.ident) {
            Ok(output) => Some(output),
            Err(err) => {
                errors.push(err);
                None
            }
        };

        let mut routes = f.attrs.iter().filter(|a| a.path().is_ident("route"));
        let route = routes.next().and_then(|attr| match Route::from_attr(attr) {
            Ok(route) => Some(route),
            Err(err) => {
                errors.push(err);
                None
            }
        });
        for extra in routes {
            errors.push(Error::new_spanned(
                extra,
                format!("`{name}` has more than one `#[route]`; a method has one route"),
            ));
        }

        let (http_method, path, timeout_ms, route_span) = match &route {
            Some(route) => {
                check_route_against_params(route, &name, &params, &mut errors);
                (
                    route.method,
                    route.path.clone(),
                    route.timeout_ms,
                    route.path_lit.span(),
                )
            }
            None => (
                HttpMethod::Post,
                conventional_path(service, &name),
                None,
                sig.ident.span(),
            ),
        };

        errors.into_result()?;
        let Some(output) = output else {
            // `result_type` failed, so `errors` was not empty; this is not reached.
            return Err(Error::new(sig.ident.span(), "invalid return type"));
        };
        Ok(Method {
            ident: sig.ident.clone(),
            name,
            docs: f
                .attrs
                .iter()
                .filter(|a| a.path().is_ident("doc"))
                .cloned()
                .collect(),
            params: params.into_iter().map(|(param, _)| param).collect(),
            output,
            http_method,
            path,
            conventional: route.is_none(),
            timeout_ms,
            route_span,
        })
    }
}

/// `POST /api/{service}/{method}`: the service name lower-cased with `.` as `/`.
pub(crate) fn conventional_path(service: &str, method: &str) -> String {
    format!("/api/{}/{method}", service.to_lowercase().replace('.', "/"))
}

/// The first input must be a plain `&self`.
fn check_receiver(f: &TraitItemFn, name: &str, errors: &mut Errors) {
    let sig = &f.sig;
    let Some(FnArg::Receiver(receiver)) = sig.inputs.first() else {
        let span = sig
            .inputs
            .first()
            .map_or(sig.paren_token.span.join(), |arg| {
                syn::spanned::Spanned::span(arg)
            });
        errors.push(Error::new(
            span,
            format!("`{name}` must take `&self` as its first argument"),
        ));
        return;
    };
    let problem = match &receiver.reference {
        _ if receiver.colon_token.is_some() => Some("a typed `self`"),
        None => Some("`self` by value"),
        Some((_, Some(_))) => Some("`&self` with a named lifetime"),
        Some(_) if receiver.mutability.is_some() => Some("`&mut self`"),
        Some(_) => None,
    };
    if let Some(problem) = problem {
        errors.push(Error::new_spanned(
            receiver,
            format!(
                "`{name}` must take `&self`, not {problem}: the server calls methods concurrently \
                 on one shared instance"
            ),
        ));
    }
}

/// The arguments after the receiver, each with the span of its `#[body]` attribute if any.
fn params(f: &TraitItemFn, errors: &mut Errors) -> Vec<(Param, Option<Span>)> {
    let name = f.sig.ident.unraw().to_string();
    let mut params: Vec<(Param, Option<Span>)> = Vec::new();
    for arg in &f.sig.inputs {
        let FnArg::Typed(arg) = arg else {
            continue; // the receiver, checked by `check_receiver`
        };
        let ident = match &*arg.pat {
            Pat::Ident(pat)
                if pat.by_ref.is_none() && pat.mutability.is_none() && pat.subpat.is_none() =>
            {
                pat.ident.clone()
            }
            other => {
                errors.push(Error::new_spanned(
                    other,
                    "arguments of service methods must be plain names: an argument is bound by \
                     its name",
                ));
                continue;
            }
        };
        let param_name = ident.unraw().to_string();

        let mut body_span = None;
        let mut schemars = Vec::new();
        for attr in &arg.attrs {
            if attr.path().is_ident("schemars") {
                schemars.push(attr.clone());
            } else if attr.path().is_ident("body") {
                if !matches!(attr.meta, syn::Meta::Path(_)) {
                    errors.push(Error::new_spanned(attr, "`#[body]` takes no arguments"));
                } else if body_span.is_some() {
                    errors.push(Error::new_spanned(attr, "duplicate `#[body]`"));
                }
                body_span = Some(
                    attr.path()
                        .get_ident()
                        .map_or(arg.colon_token.span, Ident::span),
                );
            } else if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
                errors.push(Error::new_spanned(
                    attr,
                    "`#[cfg]` is not supported on arguments of service methods",
                ));
            }
        }
        if let Some(span) = body_span
            && let Some((first, _)) = params.iter().find(|(p, _)| p.body)
        {
            errors.push(Error::new(
                span,
                format!(
                    "`{name}` can have only one `#[body]` argument, and `{}` already is",
                    first.name
                ),
            ));
        }
        if params.iter().any(|(p, _)| p.name == param_name) {
            errors.push(Error::new(
                ident.span(),
                format!("`{name}` has two arguments named `{param_name}`"),
            ));
        }
        if let Err(err) = check_owned(
            &arg.ty,
            &format!("the type of argument `{param_name}`"),
            "the server decodes arguments into values it owns",
        ) {
            errors.push(err);
        }

        params.push((
            Param {
                ident,
                name: param_name,
                optional: is_option(&arg.ty),
                ty: (*arg.ty).clone(),
                body: body_span.is_some(),
                schemars,
            },
            body_span,
        ));
    }
    params
}

/// `#[body]` needs a method with a body; every `{param}` of the path must be a (non-body)
/// argument.
fn check_route_against_params(
    route: &Route,
    name: &str,
    params: &[(Param, Option<Span>)],
    errors: &mut Errors,
) {
    if !route.method.has_body() {
        for (_, body_span) in params {
            if let Some(span) = body_span {
                let method = route.method.as_str();
                errors.push(Error::new(
                    *span,
                    format!(
                        "`#[body]` is not allowed on a {method} route: {method} requests carry \
                         no body; bind the argument from the path or the query instead"
                    ),
                ));
            }
        }
    }
    for path_param in &route.path_params {
        match params.iter().find(|(p, _)| &p.name == path_param) {
            Some((param, _)) if param.body => errors.push(Error::new(
                route.path_lit.span(),
                format!(
                    "path parameter `{{{path_param}}}` names the `#[body]` argument of `{name}`; \
                     a body argument cannot come from the path"
                ),
            )),
            Some(_) => {}
            None => {
                let known = if params.is_empty() {
                    format!("`{name}` has no arguments")
                } else {
                    let list: Vec<String> = params
                        .iter()
                        .map(|(p, _)| format!("`{}`", p.name))
                        .collect();
                    format!("the arguments are {}", list.join(", "))
                };
                errors.push(Error::new(
                    route.path_lit.span(),
                    format!(
                        "path parameter `{{{path_param}}}` does not name an argument of \
                         `{name}`; {known}"
                    ),
                ));
            }
        }
    }
}

/// Checks that a method returns `Result<T, RpcError>` and returns that type.
fn result_type(output: &ReturnType, method: &Ident) -> syn::Result<Type> {
    const SHAPE: &str = "service methods must return `Result<T, RpcError>`";
    let ty = match output {
        ReturnType::Type(_, ty) => &**ty,
        ReturnType::Default => {
            return Err(Error::new(
                method.span(),
                format!("{SHAPE}; `{}` returns nothing", method.unraw()),
            ));
        }
    };
    let wrong = || Error::new_spanned(ty, format!("{SHAPE}, found `{}`", type_string(ty)));
    let Type::Path(path) = ty else {
        return Err(wrong());
    };
    let Some(last) = path.path.segments.last() else {
        return Err(wrong());
    };
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return Err(wrong());
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect();
    if last.ident == "Result" && types.len() == 1 && args.args.len() == 1 {
        return Err(Error::new_spanned(
            ty,
            format!(
                "{SHAPE} written out, found `{}`: the macro cannot see through `Result` aliases",
                type_string(ty)
            ),
        ));
    }
    if path.qself.is_some() || last.ident != "Result" || types.len() != 2 || args.args.len() != 2 {
        return Err(wrong());
    }
    let is_rpc_error = match types[1] {
        Type::Path(err) => {
            err.qself.is_none()
                && err
                    .path
                    .segments
                    .last()
                    .is_some_and(|seg| seg.ident == "RpcError" && seg.arguments.is_none())
        }
        _ => false,
    };
    if !is_rpc_error {
        return Err(Error::new_spanned(
            types[1],
            format!(
                "the error type of a service method must be `RpcError`, found `{}`",
                type_string(types[1])
            ),
        ));
    }
    check_owned(
        types[0],
        "the result type",
        "the client decodes the result into a value it owns",
    )?;
    Ok(ty.clone())
}

/// Arguments and results cross the wire, so they must be owned, concrete types: no references,
/// no `impl Trait`, no `Self`.
fn check_owned(ty: &Type, what: &str, why: &str) -> syn::Result<()> {
    fn scan(tokens: TokenStream, what: &str, why: &str) -> syn::Result<()> {
        for token in tokens {
            match &token {
                TokenTree::Punct(p) if p.as_char() == '&' => {
                    return Err(Error::new(
                        p.span(),
                        format!(
                            "{what} must be an owned type (`String`, not `&str`; `Vec<T>`, not \
                             `&[T]`): {why}"
                        ),
                    ));
                }
                TokenTree::Ident(i) if i == "impl" => {
                    return Err(Error::new(
                        i.span(),
                        format!("{what} must be a concrete type, not `impl Trait`: {why}"),
                    ));
                }
                TokenTree::Ident(i) if i == "Self" => {
                    return Err(Error::new(
                        i.span(),
                        format!(
                            "{what} cannot mention `Self`: every implementation of a service speaks the same types"
                        ),
                    ));
                }
                TokenTree::Group(g) => scan(g.stream(), what, why)?,
                _ => {}
            }
        }
        Ok(())
    }
    scan(ty.to_token_stream(), what, why)
}

/// `Option<_>` (by the last path segment, so `std::option::Option<_>` counts).
fn is_option(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    path.qself.is_none() && path.path.segments.last().is_some_and(|seg| {
        seg.ident == "Option"
            && matches!(&seg.arguments, PathArguments::AngleBracketed(args) if args.args.len() == 1)
    })
}

/// `T` of an `Option<T>` (as [`is_option`] recognises it).
fn option_inner(ty: &Type) -> Option<&Type> {
    if !is_option(ty) {
        return None;
    }
    let Type::Path(path) = ty else {
        return None;
    };
    let PathArguments::AngleBracketed(args) = &path.path.segments.last()?.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(inner) => Some(inner),
        _ => None,
    }
}

/// A type as text with rustfmt-like spacing: `Option<Vec<u8>>`, `(u32, String)`,
/// `HashMap<String, u64>`, `[u8; 4]`.
pub(crate) fn type_string(ty: &Type) -> String {
    let mut out = String::new();
    write_tokens(ty.to_token_stream(), &mut out);
    out
}

fn write_tokens(tokens: TokenStream, out: &mut String) {
    /// What was written last, deciding whether the next token needs a space before it.
    #[derive(PartialEq)]
    enum Prev {
        Start,
        Word,
        Tight,
        SpaceAfter,
    }
    let mut prev = Prev::Start;
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        match &token {
            TokenTree::Ident(_) | TokenTree::Literal(_) => {
                if matches!(prev, Prev::Word | Prev::SpaceAfter) {
                    out.push(' ');
                }
                out.push_str(&token.to_string());
                prev = Prev::Word;
            }
            TokenTree::Group(group) => {
                if prev == Prev::SpaceAfter {
                    out.push(' ');
                }
                let (open, close) = match group.delimiter() {
                    proc_macro2::Delimiter::Parenthesis => ("(", ")"),
                    proc_macro2::Delimiter::Bracket => ("[", "]"),
                    proc_macro2::Delimiter::Brace => ("{ ", " }"),
                    proc_macro2::Delimiter::None => ("", ""),
                };
                out.push_str(open);
                write_tokens(group.stream(), out);
                out.push_str(close);
                prev = Prev::Word;
            }
            TokenTree::Punct(p) => {
                let c = p.as_char();
                let arrow = c == '-'
                    && matches!(tokens.peek(), Some(TokenTree::Punct(next)) if next.as_char() == '>');
                if arrow {
                    tokens.next();
                    out.push_str(" -> ");
                    prev = Prev::Tight;
                } else {
                    match c {
                        ',' | ';' => {
                            out.push(c);
                            prev = Prev::SpaceAfter;
                        }
                        '+' | '=' => {
                            out.push(' ');
                            out.push(c);
                            prev = Prev::SpaceAfter;
                        }
                        _ => {
                            if prev == Prev::SpaceAfter && c != '>' {
                                out.push(' ');
                            }
                            out.push(c);
                            prev = Prev::Tight;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::parse_quote;

    fn service(item: ItemTrait) -> syn::Result<Service> {
        Service::from_trait(&ServiceArgs::default(), &item)
    }

    fn error_of(item: ItemTrait) -> String {
        match service(item) {
            Ok(_) => panic!("accepted"),
            Err(err) => err
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    #[test]
    fn type_strings_are_normalised() {
        let cases: [(Type, &str); 9] = [
            (parse_quote!(Option<Vec<u8>>), "Option<Vec<u8>>"),
            (
                parse_quote!(std::collections::HashMap<String, u64>),
                "std::collections::HashMap<String, u64>",
            ),
            (parse_quote!((u32, String)), "(u32, String)"),
            (parse_quote!((u32,)), "(u32,)"),
            (parse_quote!([u8; 4]), "[u8; 4]"),
            (
                parse_quote!(Box<dyn Fn(u8) -> u8 + Send>),
                "Box<dyn Fn(u8) -> u8 + Send>",
            ),
            (parse_quote!(Cow<'static, str>), "Cow<'static, str>"),
            (
                parse_quote!(::core::option::Option<T>),
                "::core::option::Option<T>",
            ),
            (parse_quote!(Vec<Option<String>>), "Vec<Option<String>>"),
        ];
        for (ty, want) in cases {
            assert_eq!(type_string(&ty), want);
        }
    }

    #[test]
    fn reads_routes_params_and_defaults() {
        let svc = service(parse_quote! {
            trait Waybills {
                /// Creates.
                #[route(POST, "/api/waybills")]
                async fn create(&self, #[body] req: Create, dry_run: Option<bool>) -> Result<Waybill, RpcError>;
                #[route(get, "/api/waybills/{id}", timeout_ms = 2000)]
                async fn get(&self, id: String) -> Result<Waybill, tideway_rpc::RpcError>;
                async fn r#list(&self, offset: u32) -> std::result::Result<Vec<Waybill>, RpcError>;
            }
        })
        .unwrap();
        assert_eq!(svc.name, "Waybills");
        let [create, get, list] = &svc.methods[..] else {
            panic!("three methods")
        };
        assert_eq!(create.docs.len(), 1);
        assert_eq!(
            (create.http_method, create.path.as_str()),
            (HttpMethod::Post, "/api/waybills")
        );
        assert!(create.params[0].body && !create.params[0].optional);
        assert!(!create.params[1].body && create.params[1].optional);
        assert_eq!(type_string(create.params[1].schema_type()), "bool");
        assert_eq!(type_string(create.params[0].schema_type()), "Create");
        assert!(!svc.schema);
        assert_eq!(
            (get.http_method, get.timeout_ms),
            (HttpMethod::Get, Some(2000))
        );
        assert!(!get.conventional);
        assert_eq!(list.name, "list");
        assert_eq!(list.path, "/api/waybills/list");
        assert!(list.conventional);
        assert_eq!(list.full_name(&svc.name), "Waybills/list");
    }

    #[test]
    fn conventional_paths_use_the_lowercased_service_name() {
        assert_eq!(
            conventional_path("logistics.Waybills", "list"),
            "/api/logistics/waybills/list"
        );
    }

    #[test]
    fn collects_every_problem() {
        let err = error_of(parse_quote! {
            trait Bad<T> {
                const X: u32;
                fn not_async(&self) -> Result<(), RpcError>;
                async fn by_mut(&mut self) -> Result<(), RpcError>;
                async fn by_value(self) -> Result<(), RpcError>;
                async fn no_self(x: u32) -> Result<(), RpcError>;
                async fn generic<U>(&self) -> Result<(), RpcError>;
                async fn pattern(&self, (a, b): (u32, u32)) -> Result<(), RpcError>;
                async fn no_result(&self);
                async fn not_result(&self) -> u32;
                async fn other_error(&self) -> Result<u32, std::io::Error>;
                async fn borrowed(&self, s: &str) -> Result<(), RpcError>;
                async fn body(&self) -> Result<(), RpcError> { Ok(()) }
            }
        });
        for needle in [
            "cannot be generic: calls",
            "not constants",
            "`not_async` must be an `async fn`",
            "not `&mut self`",
            "not `self` by value",
            "`no_self` must take `&self`",
            "`generic` cannot be generic",
            "plain names",
            "`no_result` returns nothing",
            "must return `Result<T, RpcError>`, found `u32`",
            "must be `RpcError`, found `std::io::Error`",
            "must be an owned type",
            "default body",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn route_problems() {
        let err = error_of(parse_quote! {
            trait Routes {
                #[route(GET, "/x/{idx}")]
                async fn bad_param(&self, id: String) -> Result<(), RpcError>;
                #[route(GET, "/a/{id}")]
                async fn get(&self, id: String) -> Result<(), RpcError>;
                #[route(GET, "/b")]
                async fn body_on_get(&self, #[body] b: B) -> Result<(), RpcError>;
                #[route(POST, "/c")]
                async fn two_bodies(&self, #[body] b: B, #[body] c: C) -> Result<(), RpcError>;
                #[route(GET, "/a/{other}")]
                async fn same_route(&self, other: String) -> Result<(), RpcError>;
                #[route(POST, "/d/{b}")]
                async fn body_in_path(&self, #[body] b: B) -> Result<(), RpcError>;
                async fn list(&self) -> Result<(), RpcError>;
                async fn list(&self) -> Result<(), RpcError>;
                #[route(POST, "/api/routes/put")]
                async fn clash_with_conventional(&self) -> Result<(), RpcError>;
                async fn put(&self) -> Result<(), RpcError>;
            }
        });
        for needle in [
            "`{idx}` does not name an argument of `bad_param`; the arguments are `id`",
            "not allowed on a GET route",
            "only one `#[body]` argument, and `b` already is",
            "route `GET /a/{other}` of `same_route` is already the route of `get`",
            "names the `#[body]` argument",
            "already has a method named `list`",
            "route `POST /api/routes/put` of `put` is already the route of `clash_with_conventional`",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }

    #[test]
    fn schemars_attributes_need_the_schema_option() {
        let item: ItemTrait = parse_quote! {
            trait Pages {
                async fn list(
                    &self,
                    #[schemars(range(min = 1, max = 100))] limit: Option<u32>,
                ) -> Result<(), RpcError>;
            }
        };
        let err = error_of(item.clone());
        assert!(err.contains("add `schema` to `#[service(..)]`"), "{err}");
        let args = ServiceArgs {
            schema: Some(Ident::new("schema", Span::call_site())),
            ..ServiceArgs::default()
        };
        let svc = Service::from_trait(&args, &item).unwrap();
        assert!(svc.schema);
        let limit = &svc.methods[0].params[0];
        assert_eq!(limit.schemars.len(), 1);
        assert_eq!(type_string(limit.schema_type()), "u32");
    }

    #[test]
    fn other_items_are_rejected() {
        let err = error_of(parse_quote! {
            trait Items {
                type Out;
                m!();
            }
        });
        assert!(err.contains("not associated types"), "{err}");
        assert!(err.contains("not macro invocations"), "{err}");
    }

    #[test]
    fn names_of_client_items_are_reserved() {
        let err = error_of(parse_quote! {
            trait Clash {
                async fn new(&self) -> Result<(), RpcError>;
                async fn descriptor(&self) -> Result<(), RpcError>;
            }
        });
        assert!(err.contains("cannot be named `new`"), "{err}");
        assert!(err.contains("cannot be named `descriptor`"), "{err}");
    }
}
