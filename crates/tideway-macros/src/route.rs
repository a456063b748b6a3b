//! `#[route(METHOD, "/path", timeout_ms = N)]` on a service method: parsing, and the syntax of
//! path templates. Whether the template's `{param}`s name real arguments is checked by
//! [`crate::model`], which knows the arguments.

use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, Error, Ident, LitInt, LitStr, Token};

/// The HTTP methods a route may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    /// All of them, in the order error messages list them.
    const ALL: [HttpMethod; 5] = [
        HttpMethod::Get,
        HttpMethod::Post,
        HttpMethod::Put,
        HttpMethod::Patch,
        HttpMethod::Delete,
    ];

    /// Case-insensitive.
    pub(crate) fn parse(name: &str) -> Option<HttpMethod> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }

    /// Upper case, as HTTP spells it and as the descriptor carries it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }

    /// Whether requests with this method carry a body, so that a `#[body]` argument can be
    /// bound from it.
    pub(crate) fn has_body(self) -> bool {
        !matches!(self, HttpMethod::Get | HttpMethod::Delete)
    }
}

/// A parsed `#[route(..)]`.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) method: HttpMethod,
    /// The path literal, for spans of errors about the template.
    pub(crate) path_lit: LitStr,
    pub(crate) path: String,
    /// The `{param}` names of the template, in order.
    pub(crate) path_params: Vec<String>,
    pub(crate) timeout_ms: Option<u64>,
}

/// The only key `#[route(..)]` accepts after the method and path.
const TIMEOUT_KEY: &str = "timeout_ms";

const ROUTE_SHAPE: &str =
    "expected `#[route(METHOD, \"/path\")]`, optionally followed by `, timeout_ms = N`";

impl Route {
    /// Parses one `#[route(..)]` attribute.
    pub(crate) fn from_attr(attr: &Attribute) -> syn::Result<Route> {
        match &attr.meta {
            syn::Meta::List(list) => list.parse_args::<Route>(),
            _ => Err(Error::new_spanned(attr, ROUTE_SHAPE)),
        }
    }
}

impl Parse for Route {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(input.error(ROUTE_SHAPE));
        }
        let (method_name, method_span) = if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            (lit.value(), lit.span())
        } else if input.peek(Ident::peek_any) {
            let ident = input.call(Ident::parse_any)?;
            (ident.unraw().to_string(), ident.span())
        } else {
            return Err(input
                .error("expected the route's HTTP method first: GET, POST, PUT, PATCH or DELETE"));
        };
        let method = HttpMethod::parse(&method_name).ok_or_else(|| {
            Error::new(
                method_span,
                format!(
                    "unknown HTTP method `{method_name}` in `#[route]`; expected GET, POST, PUT, \
                     PATCH or DELETE"
                ),
            )
        })?;

        if input.is_empty() {
            return Err(Error::new(
                method_span,
                "`#[route]` needs a path after the method, e.g. `#[route(GET, \"/api/items/{id}\")]`",
            ));
        }
        input.parse::<Token![,]>()?;
        if !input.peek(LitStr) {
            return Err(input
                .error("expected the route's path as a string literal, e.g. \"/api/items/{id}\""));
        }
        let path_lit: LitStr = input.parse()?;
        let path = path_lit.value();
        let path_params = parse_template(&path).map_err(|msg| Error::new(path_lit.span(), msg))?;

        let mut timeout_ms = None;
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break; // trailing comma
            }
            let key = input.call(Ident::parse_any)?;
            if key != TIMEOUT_KEY {
                return Err(Error::new(
                    key.span(),
                    format!(
                        "unknown `#[route]` option `{key}`; the only option is `{TIMEOUT_KEY} = N`"
                    ),
                ));
            }
            if timeout_ms.is_some() {
                return Err(Error::new(
                    key.span(),
                    format!("`{TIMEOUT_KEY}` is given twice"),
                ));
            }
            input.parse::<Token![=]>()?;
            let lit: LitInt = input.parse()?;
            let value: u64 = lit.base10_parse()?;
            if value == 0 {
                return Err(Error::new(
                    lit.span(),
                    "`timeout_ms` must be at least 1; leave it out for the default deadline",
                ));
            }
            timeout_ms = Some(value);
        }

        Ok(Route {
            method,
            path_lit,
            path,
            path_params,
            timeout_ms,
        })
    }
}

/// Checks the syntax of a path template and returns its `{param}` names in order.
///
/// A template starts with `/`, has no query (`?`), fragment (`#`) or whitespace, and each
/// `{name}` holds a Rust identifier. Braces do not nest.
pub(crate) fn parse_template(path: &str) -> Result<Vec<String>, String> {
    if !path.starts_with('/') {
        return Err(format!("route path `{path}` must start with `/`"));
    }
    if let Some(c) = path
        .chars()
        .find(|c| *c == '?' || *c == '#' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "route path `{path}` contains `{}`; a route path holds no query, fragment or \
             whitespace",
            c.escape_default()
        ));
    }
    let mut params: Vec<String> = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return Err(format!(
                "route path `{path}` has a `}}` without a matching `{{`"
            ));
        }
        let after = &rest[open + 1..];
        let close = after
            .find(['{', '}'])
            .filter(|i| after[*i..].starts_with('}'))
            .ok_or_else(|| format!("route path `{path}` has a `{{` without a matching `}}`"))?;
        let name = &after[..close];
        if !is_identifier(name) {
            return Err(format!(
                "path parameter `{{{name}}}` in `{path}` must be the name of an argument"
            ));
        }
        if params.iter().any(|p| p == name) {
            return Err(format!(
                "path parameter `{{{name}}}` appears twice in `{path}`"
            ));
        }
        params.push(name.to_owned());
        rest = &after[close + 1..];
    }
    Ok(params)
}

/// The template with every parameter name erased, so that `/a/{id}` and `/a/{key}` compare
/// equal: a router cannot tell them apart.
pub(crate) fn route_shape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// An ASCII Rust identifier (not `_` alone).
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    name != "_" && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(tokens: proc_macro2::TokenStream) -> syn::Result<Route> {
        syn::parse2(tokens)
    }

    #[test]
    fn methods_parse_case_insensitively_as_idents_or_strings() {
        let r = route(quote::quote!(get, "/a")).unwrap();
        assert_eq!(r.method, HttpMethod::Get);
        let r = route(quote::quote!("Patch", "/a")).unwrap();
        assert_eq!(r.method, HttpMethod::Patch);
        assert_eq!(r.method.as_str(), "PATCH");
        let err = route(quote::quote!(FETCH, "/a")).unwrap_err();
        assert!(
            err.to_string().contains("unknown HTTP method `FETCH`"),
            "{err}"
        );
    }

    #[test]
    fn timeout_is_the_only_option() {
        let r = route(quote::quote!(GET, "/a/{id}", timeout_ms = 2000,)).unwrap();
        assert_eq!(r.timeout_ms, Some(2000));
        assert_eq!(r.path_params, ["id"]);
        let err = route(quote::quote!(GET, "/a", cache = 1)).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown `#[route]` option `cache`"),
            "{err}"
        );
        let err = route(quote::quote!(GET, "/a", timeout_ms = 0)).unwrap_err();
        assert!(err.to_string().contains("at least 1"), "{err}");
        let err = route(quote::quote!(GET, "/a", timeout_ms = 1, timeout_ms = 2)).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn missing_pieces_are_explained() {
        assert!(route(quote::quote!()).is_err());
        let err = route(quote::quote!(GET)).unwrap_err();
        assert!(err.to_string().contains("needs a path"), "{err}");
        let err = route(quote::quote!(GET, 5)).unwrap_err();
        assert!(err.to_string().contains("string literal"), "{err}");
    }

    #[test]
    fn templates() {
        assert_eq!(parse_template("/").unwrap(), Vec::<String>::new());
        assert_eq!(
            parse_template("/api/{a}/x/{b_2}").unwrap(),
            ["a".to_owned(), "b_2".to_owned()]
        );
        for bad in [
            "api",
            "",
            "/a?b=1",
            "/a b",
            "/a/{",
            "/a/}",
            "/a/{}",
            "/a/{_}",
            "/a/{1x}",
            "/a/{x{y}}",
            "/a/{x}/{x}",
            "/a/{*rest}",
        ] {
            assert!(parse_template(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn shapes_ignore_parameter_names() {
        assert_eq!(route_shape("/a/{id}/b"), "/a/{}/b");
        assert_eq!(route_shape("/a/{id}"), route_shape("/a/{key}"));
        assert_ne!(route_shape("/a/{id}"), route_shape("/a/id"));
    }
}
