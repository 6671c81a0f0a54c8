//! [`AuthLayer`]: authenticate every request before it reaches the service.

use std::sync::Arc;

use auth_core::Verifier;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_layer::Layer;

use crate::{config::Config, AuthLayerBuilder, AuthService};

/// Authenticates requests with a [`Verifier`] and puts the
/// [`AuthContext`](auth_core::AuthContext) in the request extensions.
///
/// Works with `ServiceBuilder`, axum's `Router::layer` and `Router::route_layer`.
/// Cheap to clone.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::{convert::Infallible, sync::Arc};
/// use auth_core::*;
/// use auth_core::{audit::MemoryAuditLog, response::ErrorFormat};
/// use auth_tower::AuthLayer;
/// use http::{Request, Response};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// let store = Arc::new(MemoryKeyStore::new());
/// let Keys { issuer, verifier, .. } = Keys::builder(store, TokenPrefix::new("st_").unwrap())
///     .hasher(SecretHasher::for_tests())
///     .build();
/// let key = issuer
///     .issue(NewKey::new(Principal::user("alice"), "cli", ScopeSet::parse(["read"]).unwrap()))
///     .await
///     .unwrap();
///
/// let service = ServiceBuilder::new()
///     .layer(AuthLayer::new(verifier))
///     .service(service_fn(|req: Request<()>| async move {
///         let ctx = req.extensions().get::<AuthContext>().expect("set by AuthLayer");
///         Ok::<_, Infallible>(Response::new(bytes::Bytes::from(ctx.effective_user().to_owned())))
///     }));
///
/// let req = Request::get("/").header("authorization", format!("Bearer {}", key.token.expose_secret()));
/// let res = service.clone().oneshot(req.body(()).unwrap()).await.unwrap();
/// assert_eq!(res.body().as_ref(), b"alice");
///
/// let res = service.oneshot(Request::get("/").body(()).unwrap()).await.unwrap();
/// assert_eq!(res.status(), 401);
/// assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"api\"");
/// # });
/// ```
#[derive(Clone, Debug)]
pub struct AuthLayer {
    pub(crate) config: Arc<Config>,
}

impl AuthLayer {
    /// A layer with the defaults of [`AuthLayerBuilder`]: credentials required,
    /// read from `Authorization: Bearer` or the WebSocket subprotocol.
    pub fn new(verifier: Verifier) -> Self {
        Self::builder(verifier).build()
    }

    /// Starts configuring a layer.
    pub fn builder(verifier: Verifier) -> AuthLayerBuilder {
        AuthLayerBuilder::new(verifier)
    }

    /// The verifier this layer authenticates with.
    pub fn verifier(&self) -> &Verifier {
        &self.config.verifier
    }

    pub(crate) fn from_config(config: Config) -> Self {
        Self {
            config: Arc::new(config),
        }
    }

    /// Whether `req`'s credential verifies from the verifier's cache, with
    /// no store read and no argon2, from an address its allowlist admits
    /// (the [`ClientIp`](auth_core::client_ip::ClientIp) an outer layer resolved). What
    /// a failed-authentication limit asks before it refuses a request from an
    /// address over its limit, so that guesses from a shared address do not
    /// lock out the keys in use behind it.
    pub fn verifies_from_cache(&self, req: &http::request::Parts) -> bool {
        let Ok(Some(token)) = crate::credential::find_credential(
            &self.config.sources,
            &req.method,
            &req.uri,
            &req.headers,
        ) else {
            return false;
        };
        let client = auth_core::client_ip::ClientIp::of(&req.extensions);
        match self
            .config
            .verifier
            .verify_cached_bytes(token.as_bytes(), None)
        {
            Some(Ok(ctx)) => ctx.allows_ip(client),
            _ => false,
        }
    }

    /// A tower-http layer that marks every header this layer reads credentials
    /// from as sensitive. Put it *outermost*, before any `TraceLayer`, so that
    /// traces never show those headers. (The [`AuthService`] marks them too,
    /// but only for layers behind it.)
    pub fn sensitive_headers(&self) -> SetSensitiveRequestHeadersLayer {
        SetSensitiveRequestHeadersLayer::new(self.config.sensitive.iter().cloned())
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService::new(inner, self.config.clone())
    }
}
