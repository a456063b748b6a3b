//! The arguments of `#[service(..)]`, and the path generated code uses to reach the runtime.

use proc_macro_crate::{FoundCrate, crate_name};
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::{Error, Ident, LitStr, Path};

/// `#[service(name = "pkg.Service", crate = "::path::to::runtime", schema)]`; all are optional.
#[derive(Debug, Default)]
pub(crate) struct ServiceArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) krate: Option<Path>,
    /// `schema`: publish a JSON Schema of every argument (their types implement `JsonSchema`).
    pub(crate) schema: Option<Ident>,
}

impl ServiceArgs {
    pub(crate) fn parse(attr: TokenStream) -> syn::Result<ServiceArgs> {
        let mut args = ServiceArgs::default();
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("name") {
                if args.name.is_some() {
                    return Err(meta.error("`name` is given twice"));
                }
                args.name = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("crate") {
                if args.krate.is_some() {
                    return Err(meta.error("`crate` is given twice"));
                }
                let lit: LitStr = meta.value()?.parse()?;
                args.krate = Some(lit.parse::<Path>().map_err(|_| {
                    Error::new(
                        lit.span(),
                        "`crate` must be a path to the Tideway runtime, e.g. \"::tideway_rpc\"",
                    )
                })?);
                Ok(())
            } else if meta.path.is_ident("schema") {
                if args.schema.is_some() {
                    return Err(meta.error("`schema` is given twice"));
                }
                if !meta.input.is_empty() && !meta.input.peek(syn::Token![,]) {
                    return Err(meta.error("`schema` takes no value: write `schema`"));
                }
                args.schema = meta.path.get_ident().cloned();
                Ok(())
            } else {
                let key = meta.path.to_token_stream().to_string().replace(' ', "");
                Err(meta.error(format!(
                    "unknown `#[service]` option `{key}`; expected `name = \"pkg.Service\"`, \
                     `crate = \"path::to::runtime\"` or `schema`"
                )))
            }
        });
        syn::parse::Parser::parse2(parser, attr)?;
        Ok(args)
    }
}

/// Checks a service name: dot-separated non-empty segments of ASCII letters, digits, `_` and
/// `-`. It must not hold `/` (which separates service from method in call names) nor anything
/// that would need escaping in the conventional route.
pub(crate) fn check_service_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the service name must not be empty".to_owned());
    }
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid_chars || name.split('.').any(str::is_empty) {
        return Err(format!(
            "invalid service name `{name}`: use dot-separated parts made of ASCII letters, \
             digits, `_` and `-`, e.g. \"logistics.Waybills\""
        ));
    }
    Ok(())
}

/// The path generated code reaches the runtime by: the explicit `crate = ".."`, else `::tideway`
/// when the calling crate depends on the facade, else `::tideway_rpc`.
pub(crate) fn runtime_path(explicit: Option<&Path>) -> TokenStream {
    if let Some(path) = explicit {
        return path.to_token_stream();
    }
    let found = crate_name("tideway")
        .map(|found| (found, "tideway"))
        .or_else(|_| crate_name("tideway-rpc").map(|found| (found, "tideway_rpc")));
    let name = match found {
        Ok((FoundCrate::Name(name), _)) => name,
        Ok((FoundCrate::Itself, own_name)) => own_name.to_owned(),
        Err(_) => "tideway_rpc".to_owned(),
    };
    match syn::parse_str::<Ident>(&name) {
        Ok(ident) => quote!(::#ident),
        Err(_) => {
            let ident = Ident::new("tideway_rpc", Span::call_site());
            quote!(::#ident)
        }
    }
}

/// A path as text without spaces, for `#[serde(crate = "..")]`.
pub(crate) fn path_string(path: &TokenStream) -> String {
    path.to_string()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_crate() {
        let args = ServiceArgs::parse(quote!(name = "a.B", crate = "::x::y")).unwrap();
        assert_eq!(args.name.unwrap().value(), "a.B");
        assert_eq!(
            path_string(&args.krate.unwrap().to_token_stream()),
            "::x::y"
        );
        let args = ServiceArgs::parse(quote!()).unwrap();
        assert!(args.name.is_none() && args.krate.is_none() && args.schema.is_none());
        let args = ServiceArgs::parse(quote!(name = "a.B", schema)).unwrap();
        assert!(args.schema.is_some());
    }

    #[test]
    fn rejects_unknown_and_repeated_keys() {
        let err = ServiceArgs::parse(quote!(version = "1")).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown `#[service]` option `version`"),
            "{err}"
        );
        let err = ServiceArgs::parse(quote!(name = "a", name = "b")).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
        let err = ServiceArgs::parse(quote!(schema, schema)).unwrap_err();
        assert!(err.to_string().contains("`schema` is given twice"), "{err}");
        let err = ServiceArgs::parse(quote!(schema = true)).unwrap_err();
        assert!(err.to_string().contains("takes no value"), "{err}");
        let err = ServiceArgs::parse(quote!(crate = "not a path")).unwrap_err();
        assert!(
            err.to_string().contains("path to the Tideway runtime"),
            "{err}"
        );
    }

    #[test]
    fn service_names() {
        assert!(check_service_name("logistics.Waybills").is_ok());
        assert!(check_service_name("Echo").is_ok());
        assert!(check_service_name("a-b.c_d").is_ok());
        for bad in ["", "a/b", "a..b", ".a", "a.", "a b", "a{b}"] {
            assert!(check_service_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn explicit_runtime_path_wins() {
        let path: Path = syn::parse_quote!(crate::rt);
        assert_eq!(path_string(&runtime_path(Some(&path))), "crate::rt");
    }

    #[test]
    fn this_crate_finds_its_dev_dependency() {
        // The macro crate's own manifest names tideway-rpc (as a dev-dependency).
        assert_eq!(path_string(&runtime_path(None)), "::tideway_rpc");
    }
}
