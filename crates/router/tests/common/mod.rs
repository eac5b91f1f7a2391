//! Test helpers: load a declarative document, build a router, describe a request.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use silverback_config::{Config, LoadOptions, PluginRegistry, RouterFlavor, load_bytes};
use silverback_router::{RequestView, RouteMatch, Router, Scheme};

/// Loads a YAML/JSON declarative document (panics with the loader's errors).
pub fn load(flavor: RouterFlavor, doc: &str) -> Arc<Config> {
    let plugins = PluginRegistry::new();
    let opts = LoadOptions {
        router_flavor: flavor,
        plugins: &plugins,
        now_unix: None,
    };
    match load_bytes(doc.as_bytes(), &opts) {
        Ok(c) => Arc::new(c),
        Err(e) => panic!("invalid test document: {:?}\n{doc}", e.flattened()),
    }
}

/// A compat router over the document.
pub fn compat(doc: &str) -> Router {
    router(RouterFlavor::TraditionalCompatible, doc)
}

/// A router of the given flavor over the document.
pub fn router(flavor: RouterFlavor, doc: &str) -> Router {
    Router::new(load(flavor, doc), flavor).expect("router compiles")
}

/// An owned request description.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub headers: HeaderMap,
    pub sni: Option<String>,
    pub src: Option<SocketAddr>,
    pub dst: Option<SocketAddr>,
    pub query: Option<String>,
}

impl Req {
    pub fn new(method: &str, host: &str, path: &str) -> Req {
        Req {
            method: method.into(),
            scheme: Scheme::Http,
            host: host.into(),
            port: 8000,
            path: path.into(),
            headers: HeaderMap::new(),
            sni: None,
            src: None,
            dst: None,
            query: None,
        }
    }
    pub fn get(host: &str, path: &str) -> Req {
        Req::new("GET", host, path)
    }
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
        self
    }
    pub fn https(mut self, sni: Option<&str>) -> Req {
        self.scheme = Scheme::Https;
        self.sni = sni.map(str::to_string);
        self
    }
    pub fn port(mut self, p: u16) -> Req {
        self.port = p;
        self
    }
    pub fn query(mut self, q: &str) -> Req {
        self.query = Some(q.into());
        self
    }
    pub fn src(mut self, a: &str) -> Req {
        self.src = Some(a.parse().expect("addr"));
        self
    }
    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            method: &self.method,
            scheme: self.scheme,
            host: &self.host,
            port: self.port,
            path: &self.path,
            headers: &self.headers,
            sni: self.sni.as_deref(),
            src: self.src,
            dst: self.dst,
            query: self.query.as_deref(),
        }
    }
}

/// The name of the route the router picks, if any.
pub fn route_name(r: &Router, req: &Req) -> Option<String> {
    let m = r.find(&req.view());
    let linear = r.find_linear(&req.view()).map(|m| m.route.id);
    assert_eq!(
        m.as_ref().map(|m| m.route.id),
        linear,
        "index and linear walk disagree for {req:?}"
    );
    m.map(|m| m.route.name.clone().unwrap_or_default())
}

/// The full match (panics when nothing matches).
pub fn must<'r>(r: &'r Router, req: &Req) -> RouteMatch<'r> {
    r.find(&req.view())
        .unwrap_or_else(|| panic!("no route for {req:?}"))
}
