//! Code generation: from a checked [`Service`] to the rewritten trait, the client stub, the server
//! adapter and the route table.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::{
    Error, FnArg, Ident, Item, ItemTrait, Lifetime, Pat, PatWild, ReturnType, TraitItem, Type,
    TypeParamBound,
};

use crate::args::{ServiceArgs, path_string, runtime_path};
use crate::model::{Errors, Method, Param, Service, type_string};

/// The whole macro: `#[service(attr)] item`.
pub(crate) fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Trait(item)) => item,
        Ok(_) => {
            let err = Error::new(
                Span::call_site(),
                "`#[service]` goes on a trait that declares the service's methods",
            );
            return with_errors(item, err);
        }
        Err(err) => return with_errors(item, err),
    };

    let mut errors = Errors::default();
    let args = ServiceArgs::parse(attr).unwrap_or_else(|err| {
        errors.push(err);
        ServiceArgs::default()
    });
    let service = Service::from_trait(&args, &item);
    let service = match (service, errors.into_result()) {
        (Ok(service), Ok(())) => service,
        (Err(err), Ok(())) | (Ok(_), Err(err)) => return with_errors(strip_helpers(item), err),
        (Err(mut err), Err(args_err)) => {
            err.combine(args_err);
            return with_errors(strip_helpers(item), err);
        }
    };

    let rt = runtime_path(args.krate.as_ref());
    Generator {
        rt: &rt,
        serde_crate: format!("{}::__private::serde", path_string(&rt)),
        schemars_crate: format!("{}::__private::schemars", path_string(&rt)),
        item: &item,
        service: &service,
    }
    .generate()
}

/// The item as it was (minus the helper attributes, which would be errors of their own), after
/// the errors: the user's impls of the trait then still resolve, so the errors shown are ours.
fn with_errors(item: impl quote::ToTokens, err: Error) -> TokenStream {
    let errors = err.to_compile_error();
    quote!(#errors #item)
}

/// The trait without `#[route]` on methods and `#[body]`/`#[schemars]` on arguments, and with argument
/// patterns (an error of ours already) replaced by `_`, which a method without a body accepts.
fn strip_helpers(mut item: ItemTrait) -> ItemTrait {
    for trait_item in &mut item.items {
        if let TraitItem::Fn(f) = trait_item {
            f.attrs.retain(|a| !a.path().is_ident("route"));
            for input in &mut f.sig.inputs {
                if let FnArg::Typed(arg) = input {
                    arg.attrs
                        .retain(|a| !a.path().is_ident("body") && !a.path().is_ident("schemars"));
                    if !matches!(*arg.pat, Pat::Ident(_)) {
                        *arg.pat = Pat::Wild(PatWild {
                            attrs: Vec::new(),
                            underscore_token: Default::default(),
                        });
                    }
                }
            }
        }
    }
    item
}

struct Generator<'a> {
    /// Path to the runtime crate, e.g. `::tideway_rpc`.
    rt: &'a TokenStream,
    /// `<rt>::__private::serde` as a string, for `#[serde(crate = "..")]`.
    serde_crate: String,
    /// `<rt>::__private::schemars` as a string, for `#[schemars(crate = "..")]`.
    schemars_crate: String,
    item: &'a ItemTrait,
    service: &'a Service,
}

impl Generator<'_> {
    fn generate(&self) -> TokenStream {
        let service_trait = self.service_trait();
        let descriptor = self.descriptor();
        let client = self.client(&descriptor);
        let server = self.server();
        quote! {
            #service_trait
            #client
            #server
        }
    }

    /// The trait, with each `async fn` turned into a `fn` returning a `Send` future, and
    /// `Send + Sync + 'static` added to its supertraits.
    fn service_trait(&self) -> TokenStream {
        let mut item = strip_helpers(self.item.clone());
        for trait_item in &mut item.items {
            let TraitItem::Fn(f) = trait_item else {
                continue;
            };
            f.sig.asyncness = None;
            if let ReturnType::Type(arrow, output) = &f.sig.output {
                let future = quote! {
                    impl ::core::future::Future<Output = #output> + ::core::marker::Send
                };
                f.sig.output = ReturnType::Type(*arrow, Box::new(Type::Verbatim(future)));
            }
        }
        let has = |name: &str| {
            item.supertraits.iter().any(|bound| match bound {
                TypeParamBound::Trait(t) => t.path.segments.last().is_some_and(|s| s.ident == name),
                TypeParamBound::Lifetime(l) => l.ident == name,
                _ => false,
            })
        };
        let mut bounds = Vec::new();
        if !has("Send") {
            bounds.push(TypeParamBound::Verbatim(quote!(::core::marker::Send)));
        }
        if !has("Sync") {
            bounds.push(TypeParamBound::Verbatim(quote!(::core::marker::Sync)));
        }
        if !has("static") {
            bounds.push(TypeParamBound::Lifetime(Lifetime::new(
                "'static",
                Span::call_site(),
            )));
        }
        if !bounds.is_empty() {
            item.colon_token.get_or_insert_with(Default::default);
            item.supertraits.extend(bounds);
        }
        quote!(#item)
    }

    fn client_ident(&self) -> Ident {
        format_ident!("{}Client", self.item.ident)
    }

    fn server_ident(&self) -> Ident {
        format_ident!("{}Server", self.item.ident)
    }

    /// The `ServiceDescriptor` expression.
    fn descriptor(&self) -> TokenStream {
        let rt = self.rt;
        let name = &self.service.name;
        let methods = self.service.methods.iter().map(|m| {
            let method_name = &m.name;
            let full_name = m.full_name(name);
            let http_method = m.http_method.as_str();
            let path = &m.path;
            let conventional = m.conventional;
            let timeout_ms = match m.timeout_ms {
                Some(ms) => quote!(::core::option::Option::Some(#ms)),
                None => quote!(::core::option::Option::None),
            };
            let params = m.params.iter().map(|p| {
                let param_name = &p.name;
                let rust_type = type_string(&p.ty);
                let body = p.body;
                let schema = self.param_schema(p);
                quote! {
                    #rt::ParamDescriptor {
                        name: #param_name,
                        rust_type: #rust_type,
                        body: #body,
                        schema: #schema,
                    }
                }
            });
            quote! {
                #rt::MethodDescriptor {
                    name: #method_name,
                    full_name: #full_name,
                    http_method: #http_method,
                    path: #path,
                    conventional_route: #conventional,
                    timeout_ms: #timeout_ms,
                    params: &[#(#params),*],
                }
            }
        });
        quote! {
            #rt::ServiceDescriptor { name: #name, methods: &[#(#methods),*] }
        }
    }

    /// The `schema` of a `ParamDescriptor`: `None`, or with `#[service(schema)]` a function that
    /// derives `JsonSchema` for a one-field struct holding the argument (with its
    /// `#[schemars(..)]` attributes) and publishes that field's schema.
    fn param_schema(&self, p: &Param) -> TokenStream {
        if !self.service.schema {
            return quote!(::core::option::Option::None);
        }
        let rt = self.rt;
        let schemars_crate = &self.schemars_crate;
        let attrs = &p.schemars;
        let ty = p.schema_type();
        quote! {
            ::core::option::Option::Some({
                fn __tideway_schema() -> #rt::__private::serde_json::Value {
                    #[derive(#rt::__private::schemars::JsonSchema)]
                    #[schemars(crate = #schemars_crate)]
                    #[allow(dead_code)]
                    struct __TidewayParam {
                        #(#attrs)*
                        value: #ty,
                    }
                    #rt::__private::param_schema::<__TidewayParam>()
                }
                __tideway_schema as fn() -> #rt::__private::serde_json::Value
            })
        }
    }

    fn client(&self, descriptor: &TokenStream) -> TokenStream {
        let rt = self.rt;
        let vis = &self.item.vis;
        let trait_ident = &self.item.ident;
        let client = self.client_ident();
        let doc = format!(
            " Client of the `{}` service: one async method per method of [`{trait_ident}`], \
             each a call over a shared connection handle.",
            self.service.name
        );
        let methods = self.service.methods.iter().map(|m| self.client_method(m));
        quote! {
            #[doc = #doc]
            #[derive(::core::fmt::Debug, ::core::clone::Clone)]
            #[allow(dead_code)]
            #vis struct #client {
                client: #rt::Client,
                options: #rt::CallOptions,
            }

            #[allow(dead_code)]
            impl #client {
                /// The service's name, methods and routes.
                #vis const DESCRIPTOR: #rt::ServiceDescriptor = #descriptor;

                /// [`Self::DESCRIPTOR`] as a `'static` reference.
                #vis fn descriptor() -> &'static #rt::ServiceDescriptor {
                    &Self::DESCRIPTOR
                }

                /// A client sending its calls over `client`, with default call options.
                #vis fn new(client: #rt::Client) -> Self {
                    Self {
                        client,
                        options: <#rt::CallOptions as ::core::default::Default>::default(),
                    }
                }

                /// Uses `options` (deadline, metadata) for every call made through this client.
                #[must_use]
                #vis fn with_options(mut self, options: #rt::CallOptions) -> Self {
                    self.options = options;
                    self
                }

                #(#methods)*
            }
        }
    }

    fn client_method(&self, m: &Method) -> TokenStream {
        let vis = &self.item.vis;
        let serde_crate = &self.serde_crate;
        let rt = self.rt;
        let ident = &m.ident;
        let docs = &m.docs;
        let output = &m.output;
        let full_name = m.full_name(&self.service.name);
        let mut call_doc = format!(
            " Calls `{full_name}` (route `{} {}`).",
            m.http_method.as_str(),
            m.path
        );
        if !docs.is_empty() {
            call_doc.insert(0, '\n');
        }
        let args = m.params.iter().map(|p| {
            let (ident, ty) = (&p.ident, &p.ty);
            quote!(#ident: #ty)
        });
        let fields = m.params.iter().map(|p| {
            let (ident, ty) = (&p.ident, &p.ty);
            let flatten = p.body.then(|| quote!(#[serde(flatten)]));
            quote!(#flatten #ident: &'__tideway #ty)
        });
        let inits = m.params.iter().map(|p| {
            let ident = &p.ident;
            quote!(#ident: &#ident)
        });
        let lifetime = (!m.params.is_empty()).then(|| quote!(<'__tideway>));
        quote! {
            #(#docs)*
            #[doc = #call_doc]
            #[allow(clippy::too_many_arguments)]
            #vis async fn #ident(&self, #(#args),*) -> #output {
                #[derive(#rt::__private::serde::Serialize)]
                #[serde(crate = #serde_crate)]
                struct __TidewayArgs #lifetime {
                    #(#fields,)*
                }
                self.client
                    .call_typed(#full_name, &__TidewayArgs { #(#inits),* }, &self.options)
                    .await
            }
        }
    }

    fn server(&self) -> TokenStream {
        let rt = self.rt;
        let vis = &self.item.vis;
        let trait_ident = &self.item.ident;
        let server = self.server_ident();
        let client = self.client_ident();
        let server_name = server.to_string();
        let doc = format!(
            " Serves an implementation of [`{trait_ident}`] as the `{}` service: hand it to the \
             RPC server, which routes each call to the method it names (see \
             `ServiceDispatch`).",
            self.service.name
        );
        let arms = self.service.methods.iter().map(|m| self.dispatch_arm(m));
        quote! {
            #[doc = #doc]
            #[allow(dead_code)]
            #vis struct #server<T> {
                inner: ::std::sync::Arc<T>,
            }

            #[allow(dead_code)]
            impl<T: #trait_ident> #server<T> {
                /// Serves `service`.
                #vis fn new(service: T) -> Self {
                    Self { inner: ::std::sync::Arc::new(service) }
                }

                /// Serves a `service` that other code shares.
                #vis fn from_arc(service: ::std::sync::Arc<T>) -> Self {
                    Self { inner: service }
                }
            }

            impl<T> ::core::clone::Clone for #server<T> {
                fn clone(&self) -> Self {
                    Self { inner: ::std::sync::Arc::clone(&self.inner) }
                }
            }

            impl<T> ::core::fmt::Debug for #server<T> {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.debug_struct(#server_name)
                        .field("service", &#client::DESCRIPTOR.name)
                        .field("implementation", &::core::any::type_name::<T>())
                        .finish()
                }
            }

            const _: () = {
                // Not `T`: the arms name the user's types, and a type of theirs called `T`
                // would resolve to this parameter.
                impl<__TidewayService: #trait_ident> #rt::ServiceDispatch
                    for #server<__TidewayService>
                {
                    fn descriptor(&self) -> &'static #rt::ServiceDescriptor {
                        #client::descriptor()
                    }

                    fn dispatch(
                        &self,
                        __tideway_method: &str,
                        __tideway_codec: #rt::Codec,
                        __tideway_payload: #rt::__private::Bytes,
                    ) -> ::core::option::Option<#rt::HandlerFuture> {
                        match __tideway_method {
                            #(#arms)*
                            _ => ::core::option::Option::None,
                        }
                    }
                }
            };
        }
    }

    /// One arm of `dispatch`'s match: decode the arguments, call the method, encode the result.
    fn dispatch_arm(&self, m: &Method) -> TokenStream {
        let rt = self.rt;
        let serde_crate = &self.serde_crate;
        let trait_ident = &self.item.ident;
        let ident = &m.ident;
        let name = &m.name;
        let mut fields = Vec::new();
        let mut field_decoders = Vec::new();
        for p in &m.params {
            let (ident, ty) = (&p.ident, &p.ty);
            if p.body {
                // The body's own fields name themselves in errors.
                fields.push(quote!(#[serde(flatten)] #ident: #ty));
                continue;
            }
            // Decoding each argument through a function that adds its name to errors, so that a
            // bad argument is named whatever the codec says about it.
            let decoder = format_ident!("__tideway_decode_{}", p.name);
            let decoder_name = decoder.to_string();
            let default = p.optional.then(|| quote!(default,));
            fields.push(quote! {
                #[serde(#default deserialize_with = #decoder_name)]
                #ident: #ty
            });
            let arg_name = &p.name;
            field_decoders.push(quote! {
                fn #decoder<'de, D>(deserializer: D) -> ::core::result::Result<#ty, D::Error>
                where
                    D: #rt::__private::serde::Deserializer<'de>,
                {
                    <#ty as #rt::__private::serde::Deserialize<'de>>::deserialize(deserializer)
                        .map_err(|err| {
                            <D::Error as #rt::__private::serde::de::Error>::custom(
                                ::std::format!("argument `{}`: {}", #arg_name, err),
                            )
                        })
                }
            });
        }
        let call_args = m.params.iter().map(|p| {
            let ident = &p.ident;
            quote!(__tideway_args.#ident)
        });
        let decode = if m.params.is_empty() {
            // No arguments: an empty payload is fine; anything else must still be an object.
            quote! {
                if !__tideway_payload.is_empty() {
                    let _: __TidewayArgs =
                        #rt::__private::decode_args(__tideway_codec, &__tideway_payload)?;
                }
            }
        } else {
            quote! {
                let __tideway_args: __TidewayArgs =
                    #rt::__private::decode_args(__tideway_codec, &__tideway_payload)?;
            }
        };
        quote! {
            #name => {
                #[derive(#rt::__private::serde::Deserialize)]
                #[serde(crate = #serde_crate)]
                struct __TidewayArgs {
                    #(#fields,)*
                }
                #(#field_decoders)*
                let __tideway_this = ::std::sync::Arc::clone(&self.inner);
                ::core::option::Option::Some(::std::boxed::Box::pin(async move {
                    #decode
                    let __tideway_out =
                        <__TidewayService as #trait_ident>::#ident(
                            &*__tideway_this,
                            #(#call_args),*
                        )
                        .await?;
                    #rt::__private::encode_reply(__tideway_codec, &__tideway_out)
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(attr: TokenStream, item: TokenStream) -> String {
        service(attr, item).to_string()
    }

    #[test]
    fn generates_the_named_items() {
        let out = expand(
            quote!(name = "logistics.Waybills", crate = "::rt"),
            quote! {
                pub trait Waybills {
                    /// Creates one.
                    #[route(POST, "/api/waybills")]
                    async fn create(&self, #[body] req: Create) -> Result<Waybill, RpcError>;
                    async fn list(&self, offset: Option<u32>) -> Result<Vec<Waybill>, RpcError>;
                }
            },
        );
        for needle in [
            "pub trait Waybills : :: core :: marker :: Send + :: core :: marker :: Sync + 'static",
            "fn create (& self , req : Create) -> impl :: core :: future :: Future < Output = Result < Waybill , RpcError > > + :: core :: marker :: Send ;",
            "pub struct WaybillsClient",
            "pub struct WaybillsServer < T >",
            "impl < __TidewayService : Waybills > :: rt :: ServiceDispatch for WaybillsServer < __TidewayService >",
            "full_name : \"logistics.Waybills/create\"",
            "path : \"/api/logistics/waybills/list\"",
            "# [serde (crate = \"::rt::__private::serde\")]",
            "# [serde (flatten)] req : Create",
            "# [serde (default , deserialize_with = \"__tideway_decode_offset\")] offset : Option < u32 >",
            "call_typed (\"logistics.Waybills/list\"",
            "rust_type : \"Option<u32>\"",
            "schema : :: core :: option :: Option :: None",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
        }
        assert!(
            !out.contains("# [route"),
            "helper attributes are stripped:\n{out}"
        );
        assert!(
            !out.contains("# [body]"),
            "helper attributes are stripped:\n{out}"
        );
        let (service_trait, _) = out.split_once("Client of").unwrap();
        assert!(!service_trait.contains("async"), "{service_trait}");
    }

    #[test]
    fn schema_option_publishes_argument_schemas() {
        let out = expand(
            quote!(crate = "::rt", schema),
            quote! {
                trait Pages {
                    async fn list(
                        &self,
                        #[schemars(range(min = 1, max = 100))] limit: Option<u32>,
                    ) -> Result<(), RpcError>;
                }
            },
        );
        for needle in [
            "# [derive (:: rt :: __private :: schemars :: JsonSchema)]",
            "# [schemars (crate = \"::rt::__private::schemars\")]",
            "# [schemars (range (min = 1 , max = 100))] value : u32",
            ":: rt :: __private :: param_schema :: < __TidewayParam > ()",
        ] {
            assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
        }
        let (service_trait, _) = out.split_once("Client of").unwrap();
        assert!(!service_trait.contains("schemars"), "{service_trait}");
    }

    #[test]
    fn keeps_existing_supertraits_without_repeating_them() {
        let out = expand(
            quote!(crate = "::rt"),
            quote! {
                trait Echo: Send + Sync + 'static {
                    async fn say(&self, text: String) -> Result<String, RpcError>;
                }
            },
        );
        assert!(
            out.contains("trait Echo : Send + Sync + 'static {"),
            "{out}"
        );
    }

    #[test]
    fn errors_keep_the_trait_without_helper_attributes() {
        let out = expand(
            quote!(bogus = 1),
            quote! {
                trait Echo {
                    #[route(GET, "/x")]
                    async fn say(&self, #[body] text: String) -> Result<String, RpcError>;
                }
            },
        );
        assert!(out.contains("compile_error"), "{out}");
        assert!(out.contains("unknown `#[service]` option `bogus`"), "{out}");
        assert!(out.contains("not allowed on a GET route"), "{out}");
        assert!(out.contains("trait Echo"), "{out}");
        assert!(!out.contains("route (GET"), "{out}");
        assert!(!out.contains("# [body]"), "{out}");
    }

    #[test]
    fn only_traits_are_accepted() {
        let out = expand(
            quote!(),
            quote!(
                struct NotATrait;
            ),
        );
        assert!(out.contains("`#[service]` goes on a trait"), "{out}");
        assert!(out.contains("struct NotATrait"), "{out}");
    }
}
