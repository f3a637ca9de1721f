//! Which app serves a request: the whole routing decision, in one place.
//!
//! In order, first match wins:
//!
//! 1. the configured route table (`[[routes]]`): an entry matches when its `host` (exact, port
//!    ignored, any case) and/or its `path_prefix` (at a segment boundary) match; its app serves
//!    the request (if that app is deployed);
//! 2. else the app named by the first DNS label of the request's host (the `Host` header, or
//!    the URI authority for h2 and absolute-form requests), port stripped, lowercased;
//! 3. else, when exactly one app is deployed, that app: it serves every host.
//!
//! Otherwise the request is [`Unrouted`] (400 without a host, 404 naming the deployed apps).
//! Callers ask one question, [`Routes::resolve`]; the apps deployed are whatever implements
//! [`Deployments`] (the [`Runtime`](crate::runtime::Runtime), or a map in tests).

use http::Request;
use http::header::HOST;

use crate::config::RouteConfig;

/// The configured route table (`[[routes]]`), tried before the Host's first label.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    host: Option<String>,
    path_prefix: Option<String>,
    app: String,
}

/// What routing needs to know about the apps deployed right now.
pub trait Deployments {
    /// What a request runs on (for the runtime: the `Arc` of the deployed release).
    type App;
    /// The app named `name`, if it is deployed.
    fn deployed(&self, name: &str) -> Option<Self::App>;
    /// Every deployed app with its name, in any order. Asked only when the named app is not
    /// deployed (for the one-app fallback and the 404's list).
    fn all_deployed(&self) -> Vec<(String, Self::App)>;
}

/// Why no app serves a request. The texts are the response bodies (without the final newline).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unrouted {
    /// Neither a `Host` header nor a URI authority: 400.
    #[error("the request has no Host header; the agent routes requests by host name")]
    NoHost,
    /// The request names an app that is not deployed, and more (or fewer) than one app is: 404.
    #[error("no app named {app:?} is deployed on this agent (deployed: {})", list(.deployed))]
    NotFound {
        /// The app the request named (by the route table or the host).
        app: String,
        /// The deployed apps, sorted.
        deployed: Vec<String>,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

impl Routes {
    /// Normalises the configured routes (hosts lowercased, ports stripped); the config's
    /// `validate` checked them.
    pub fn new(config: &[RouteConfig]) -> Routes {
        let routes = config
            .iter()
            .map(|r| Route {
                host: r
                    .host
                    .as_deref()
                    .map(|h| strip_port(h).to_ascii_lowercase()),
                path_prefix: r.path_prefix.clone(),
                app: r.app.clone(),
            })
            .collect();
        Routes { routes }
    }

    /// The app that serves `req` among `apps`: see the module doc for the order.
    pub fn resolve<B, D: Deployments>(
        &self,
        req: &Request<B>,
        apps: &D,
    ) -> Result<D::App, Unrouted> {
        let host = request_host(req).ok_or(Unrouted::NoHost)?;
        self.resolve_host(&host, req.uri().path(), apps)
    }

    /// [`Routes::resolve`] for a request to `host` (port stripped, lowercased) and `path`.
    pub fn resolve_host<D: Deployments>(
        &self,
        host: &str,
        path: &str,
        apps: &D,
    ) -> Result<D::App, Unrouted> {
        let app = self.app_for(host, path);
        if let Some(found) = apps.deployed(&app) {
            return Ok(found);
        }
        let mut all = apps.all_deployed();
        if all.len() == 1 {
            return Ok(all.remove(0).1);
        }
        let mut deployed: Vec<String> = all.into_iter().map(|(name, _)| name).collect();
        deployed.sort();
        Err(Unrouted::NotFound { app, deployed })
    }

    /// The app a request to `host` (port stripped, lowercased) and `path` names, whether or not
    /// it is deployed: the first route that matches, else the host's first label.
    pub fn app_for(&self, host: &str, path: &str) -> String {
        for r in &self.routes {
            let host_ok = r.host.as_deref().is_none_or(|h| h == host);
            let path_ok = r
                .path_prefix
                .as_deref()
                .is_none_or(|p| path_has_prefix(path, p));
            if host_ok && path_ok {
                return r.app.clone();
            }
        }
        first_label(host)
    }
}

/// `path` starts with `prefix` at a segment boundary (`/api` matches `/api` and `/api/x`, not
/// `/apix`).
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
}

/// The request's host (the URI authority for h2 / absolute-form requests, else the Host
/// header), port stripped, lowercased.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let host = match req.uri().authority() {
        Some(authority) => authority.host().to_string(),
        None => req.headers().get(HOST)?.to_str().ok()?.to_string(),
    };
    Some(strip_port(&host).to_ascii_lowercase())
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep it whole.
        match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        }
    } else {
        host.split(':').next().unwrap_or_default()
    }
}

fn first_label(host: &str) -> String {
    if host.starts_with('[') {
        return host.to_string();
    }
    host.split('.').next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Deployed apps for the tests: name → version.
    struct Apps(BTreeMap<String, &'static str>);

    impl Deployments for Apps {
        type App = &'static str;
        fn deployed(&self, name: &str) -> Option<&'static str> {
            self.0.get(name).copied()
        }
        fn all_deployed(&self) -> Vec<(String, &'static str)> {
            self.0.iter().map(|(k, v)| (k.clone(), *v)).collect()
        }
    }

    fn apps(names: &[&'static str]) -> Apps {
        Apps(names.iter().map(|n| (n.to_string(), *n)).collect())
    }

    fn route(host: Option<&str>, prefix: Option<&str>, app: &str) -> RouteConfig {
        RouteConfig {
            host: host.map(String::from),
            path_prefix: prefix.map(String::from),
            app: app.into(),
        }
    }

    fn host_to_app(host: &str) -> String {
        first_label(&strip_port(host).to_ascii_lowercase())
    }

    fn request(host: Option<&str>, uri: &str) -> Request<()> {
        let mut req = Request::get(uri);
        if let Some(host) = host {
            req = req.header(HOST, host);
        }
        req.body(()).unwrap()
    }

    #[test]
    fn the_route_table_goes_first_by_host_and_path_prefix() {
        let routes = Routes::new(&[
            route(Some("WWW.Example.com:443"), None, "shop"),
            route(None, Some("/api/"), "api"),
            route(Some("admin.example.com"), Some("/v2"), "admin2"),
        ]);
        assert_eq!(routes.app_for("www.example.com", "/"), "shop");
        assert_eq!(routes.app_for("beta.example.com", "/api"), "api");
        assert_eq!(routes.app_for("beta.example.com", "/api/x?y=1"), "api");
        assert_eq!(routes.app_for("beta.example.com", "/apix"), "beta");
        assert_eq!(routes.app_for("admin.example.com", "/v2/users"), "admin2");
        assert_eq!(routes.app_for("admin.example.com", "/v1/users"), "admin");
    }

    #[test]
    fn host_to_app_takes_the_first_label() {
        assert_eq!(host_to_app("Hello.Example.com:8080"), "hello");
        assert_eq!(host_to_app("api"), "api");
        assert_eq!(host_to_app("127.0.0.1:80"), "127");
        assert_eq!(host_to_app("[::1]:8080"), "[::1]");
    }

    /// The first matching route wins over later routes and over the host's first label, even
    /// when the host names another deployed app.
    #[test]
    fn the_first_matching_route_wins_over_later_ones_and_the_host() {
        let routes = Routes::new(&[
            route(None, Some("/api"), "api"),
            route(Some("shop.example.com"), None, "shop"),
            route(Some("shop.example.com"), Some("/api"), "never"),
        ]);
        let deployed = apps(&["api", "shop", "never", "blog"]);
        let resolve = |host, path| routes.resolve_host(host, path, &deployed);
        assert_eq!(resolve("shop.example.com", "/api/v1"), Ok("api"));
        assert_eq!(resolve("shop.example.com", "/"), Ok("shop"));
        assert_eq!(resolve("blog.example.com", "/api"), Ok("api"));
        assert_eq!(resolve("blog.example.com", "/"), Ok("blog"));
        assert_eq!(resolve("never.example.com", "/x"), Ok("never"));
    }

    #[test]
    fn with_exactly_one_app_deployed_it_serves_every_host() {
        let routes = Routes::new(&[route(None, Some("/api"), "api")]);
        let one = apps(&["hello"]);
        for (host, path) in [("gamma.example", "/"), ("api", "/api/x"), ("[::1]", "/")] {
            assert_eq!(
                routes.resolve_host(host, path, &one),
                Ok("hello"),
                "{host}{path}"
            );
        }
        // The named app still wins when it is deployed.
        let two = apps(&["api", "hello"]);
        assert_eq!(routes.resolve_host("hello", "/api", &two), Ok("api"));
        assert_eq!(routes.resolve_host("hello", "/", &two), Ok("hello"));
    }

    #[test]
    fn an_unknown_app_is_not_found_and_lists_the_deployed_ones() {
        let routes = Routes::default();
        let err = routes
            .resolve_host("zzz.example", "/", &apps(&["hello", "api"]))
            .unwrap_err();
        assert_eq!(
            err,
            Unrouted::NotFound {
                app: "zzz".into(),
                deployed: vec!["api".into(), "hello".into()]
            }
        );
        assert_eq!(
            err.to_string(),
            "no app named \"zzz\" is deployed on this agent (deployed: api, hello)"
        );
        let err = routes.resolve_host("zzz", "/", &apps(&[])).unwrap_err();
        assert!(err.to_string().ends_with("(deployed: none)"), "{err}");
    }

    #[test]
    fn the_host_comes_from_the_uri_authority_else_the_host_header() {
        let routes = Routes::default();
        let deployed = apps(&["alpha", "beta"]);
        let req = request(Some("BETA.example:8080"), "/");
        assert_eq!(routes.resolve(&req, &deployed), Ok("beta"));
        let req = request(Some("beta"), "http://alpha.example/x");
        assert_eq!(routes.resolve(&req, &deployed), Ok("alpha"));
        let req = request(None, "/");
        assert_eq!(routes.resolve(&req, &deployed), Err(Unrouted::NoHost));
        // Even a single deployed app needs a host to be asked for.
        assert_eq!(
            routes.resolve(&req, &apps(&["alpha"])),
            Err(Unrouted::NoHost)
        );
    }
}
