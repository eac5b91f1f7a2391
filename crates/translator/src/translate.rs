//! The translation itself: selected Ingresses, their Services, EndpointSlices and Secrets
//! into one Kong declarative document.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressServiceBackend};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use serde_json::{Value, json};
use silverback_config::entities::EntityKind;
use silverback_config::typedefs as t;
use silverback_config::{RouterFlavor, ids};
use uuid::Uuid;

use crate::annotations::{self as ann, Annotations, RouteOpts, ServiceOpts};
use crate::document::{self as doc, Document, Tags};
use crate::expression::{self, Matchers, PathMatch};
use crate::objects::{IngressClassParametersSpec, KONG_GROUP, Key, Kind, Objects};
use crate::problem::{ObjectRef, Problem};

/// The IngressClass `spec.controller` value that marks a class as ours.
pub const CONTROLLER_NAME: &str = "ingress-controllers.konghq.com/kong";
/// The annotation marking the cluster's default IngressClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The label marking a Secret as a CA certificate.
pub const CA_CERT_LABEL: &str = "konghq.com/ca-cert";

/// Settings of a translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslateOptions {
    /// The ingress class we serve (KIC's `--ingress-class`, default `kong`).
    pub ingress_class: String,
    /// The data plane's router flavor: field-based routes, or `expression` + `priority`.
    pub router_flavor: RouterFlavor,
    /// Keep terminating endpoints as targets of weight 0 (KIC's `--enable-drain-support`).
    pub enable_drain_support: bool,
    /// Cluster domain appended to Service DNS names of `service-upstream` targets
    /// (KIC's `--cluster-domain`, default empty).
    pub cluster_domain: String,
    /// Honour `konghq.com/rewrite` (KIC's `RewriteURIs` feature gate, default off): adds a
    /// `request-transformer` plugin to the routes.
    pub rewrite_uris: bool,
    /// Now, in Unix seconds, to refuse expired CA certificates; `None` skips the check.
    pub now_unix: Option<i64>,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        TranslateOptions {
            ingress_class: "kong".into(),
            router_flavor: RouterFlavor::TraditionalCompatible,
            enable_drain_support: false,
            cluster_domain: String::new(),
            rewrite_uris: false,
            now_unix: None,
        }
    }
}

/// The Kong entity a `konghq.com/plugins` annotation asks plugins for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PluginAttachment {
    /// The annotated object.
    pub object: ObjectRef,
    /// `route` or `service`.
    pub entity_type: String,
    /// The Kong entity's name.
    pub entity_name: String,
    /// Plugin names as written (`name` or `namespace:name`).
    pub plugins: Vec<String>,
}

/// The result of a translation.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// The Kong declarative document (`_format_version: "3.0"`), nested like KIC's: routes
    /// in services, targets in upstreams, SNIs in certificates. Every list is sorted and
    /// every object's keys are in order, so the same objects always give the same bytes.
    pub config: Value,
    /// What could not be translated, sorted.
    pub problems: Vec<Problem>,
    /// `konghq.com/plugins` requests, for the plugin translation, sorted.
    pub plugins: Vec<PluginAttachment>,
    /// The Ingresses of our class that were translated (not left out by a problem of their
    /// own), sorted: the ones whose status the controller may update.
    pub configured: Vec<ObjectRef>,
}

impl Translation {
    /// The document as JSON (compact).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.config).unwrap_or_default()
    }
    /// The document as YAML.
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(&self.config).unwrap_or_default()
    }
}

/// The result of a translation with the document typed: what [`translate_typed`] returns,
/// without the cost of a `serde_json::Value` tree. Serializes to the same bytes as the
/// [`Translation`] it converts into.
#[derive(Debug, Clone, PartialEq)]
pub struct TypedTranslation {
    /// The Kong declarative document; see [`Translation::config`].
    pub document: Document,
    /// What could not be translated, sorted.
    pub problems: Vec<Problem>,
    /// `konghq.com/plugins` requests, for the plugin translation, sorted.
    pub plugins: Vec<PluginAttachment>,
    /// The Ingresses of our class that were translated, sorted.
    pub configured: Vec<ObjectRef>,
}

impl TypedTranslation {
    /// The document as JSON (compact), the bytes of [`Translation::to_json`].
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.document).unwrap_or_default()
    }
    /// The document as YAML, the text of [`Translation::to_yaml`].
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(&self.document).unwrap_or_default()
    }
    /// The same translation with the document as a `serde_json::Value`.
    pub fn into_translation(self) -> Translation {
        Translation {
            config: self.document.into_value(),
            problems: self.problems,
            plugins: self.plugins,
            configured: self.configured,
        }
    }
}

impl From<TypedTranslation> for Translation {
    fn from(t: TypedTranslation) -> Self {
        t.into_translation()
    }
}

/// Translates `objects` into a Kong configuration and the problems met on the way.
pub fn translate(objects: &Objects, opts: &TranslateOptions) -> Translation {
    translate_typed(objects, opts).into_translation()
}

/// [`translate`] with the document typed: the same output for less time and memory when
/// the caller only needs it serialized (`to_json`) or reads it in Rust.
pub fn translate_typed(objects: &Objects, opts: &TranslateOptions) -> TypedTranslation {
    let mut tr = Translator::new(objects, opts);
    tr.run();
    tr.finish()
}

struct KongService {
    /// The service, its routes still empty.
    service: doc::Service,
    routes: BTreeMap<String, doc::Route>,
    upstream: doc::Upstream,
}

struct Cert {
    cert: String,
    key: String,
    tags: Tags,
    snis: BTreeSet<String>,
}

/// A Kubernetes Service's settings.
struct SvcInfo {
    so: ServiceOpts,
    tags: Tags,
    client_cert: Option<String>,
    ca_ids: Vec<String>,
}

/// A resolved Kubernetes Service: its settings, or the reason it is left out.
type SvcState = Result<Arc<SvcInfo>, ()>;

struct Translator<'a> {
    objects: &'a Objects,
    opts: &'a TranslateOptions,
    params: IngressClassParametersSpec,
    class_is_default: bool,
    problems: Vec<Problem>,
    services: BTreeMap<String, KongService>,
    svc_states: FxHashMap<(&'a str, &'a str), SvcState>,
    slices: FxHashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    certs: BTreeMap<String, Cert>,
    secret_certs: HashMap<Key, Option<String>>,
    ca_certs: BTreeMap<String, doc::CaCertificate>,
    ca_by_secret: HashMap<Key, Result<String, String>>,
    sni_owner: HashMap<String, String>,
    route_names: FxHashSet<String>,
    plugins: Vec<PluginAttachment>,
    configured: Vec<ObjectRef>,
}

fn meta_ns(m: &ObjectMeta) -> &str {
    m.namespace.as_deref().unwrap_or_default()
}
fn meta_name(m: &ObjectMeta) -> &str {
    m.name.as_deref().unwrap_or_default()
}

/// DNS-1123 subdomain: what Kubernetes allows as object names (and what keeps our tags,
/// entity names and hostnames valid).
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl<'a> Translator<'a> {
    fn new(objects: &'a Objects, opts: &'a TranslateOptions) -> Self {
        let mut slices: FxHashMap<(&str, &str), Vec<&EndpointSlice>> = FxHashMap::default();
        for s in objects.endpoint_slices.values() {
            let svc = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            if let Some(svc) = svc {
                slices
                    .entry((meta_ns(&s.metadata), svc.as_str()))
                    .or_default()
                    .push(s);
            }
        }
        let mut tr = Translator {
            objects,
            opts,
            params: IngressClassParametersSpec::default(),
            class_is_default: false,
            problems: vec![],
            services: BTreeMap::new(),
            svc_states: FxHashMap::default(),
            slices,
            certs: BTreeMap::new(),
            secret_certs: HashMap::new(),
            ca_certs: BTreeMap::new(),
            ca_by_secret: HashMap::new(),
            sni_owner: HashMap::new(),
            route_names: FxHashSet::default(),
            plugins: vec![],
            configured: vec![],
        };
        tr.class();
        tr
    }

    fn problem(&mut self, object: ObjectRef, field: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            object,
            field: field.into(),
            reason: reason.into(),
            ignored: false,
        });
    }

    /// A value that was ignored, the object translated without it (as KIC ignores it).
    fn ignored(&mut self, object: ObjectRef, field: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(Problem {
            object,
            field: field.into(),
            reason: reason.into(),
            ignored: true,
        });
    }

    /// Our IngressClass: whether it is the default, and its parameters.
    fn class(&mut self) {
        let Some(class) = self.objects.ingress_classes.get(&self.opts.ingress_class) else {
            return;
        };
        let spec = class.spec.as_ref();
        if spec.and_then(|s| s.controller.as_deref()) != Some(CONTROLLER_NAME) {
            return;
        }
        self.class_is_default = class
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
            .is_some_and(|v| v.trim() == "true");
        let Some(p) = spec.and_then(|s| s.parameters.as_ref()) else {
            return;
        };
        if p.api_group.as_deref() != Some(KONG_GROUP) || p.kind != "IngressClassParameters" {
            return;
        }
        let oref = ObjectRef::new(Kind::IngressClass, &class.metadata);
        if p.scope.as_deref() != Some("Namespace") {
            self.problem(
                oref,
                "spec.parameters.scope",
                "IngressClassParameters are namespaced: scope must be Namespace",
            );
            return;
        }
        let Some(ns) = p.namespace.clone() else {
            self.problem(
                oref,
                "spec.parameters.namespace",
                "required for IngressClassParameters",
            );
            return;
        };
        match self
            .objects
            .ingress_class_parameters
            .get(&(ns.clone(), p.name.clone()))
        {
            Some(params) => self.params = params.spec.clone(),
            None => self.problem(
                oref,
                "spec.parameters.name",
                format!(
                    "IngressClassParameters {ns}/{} not found; using defaults",
                    p.name
                ),
            ),
        }
    }

    /// KIC's class rules: the annotation decides if set, then `spec.ingressClassName`, and a
    /// classless Ingress belongs to us only if our IngressClass is the default.
    fn selected(&self, ing: &Ingress) -> bool {
        let annotated = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ann::INGRESS_CLASS));
        if let Some(c) = annotated.filter(|c| !c.is_empty()) {
            return *c == self.opts.ingress_class;
        }
        if let Some(c) = ing
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_ref())
        {
            return *c == self.opts.ingress_class;
        }
        self.class_is_default
    }

    fn run(&mut self) {
        self.ca_certificates();
        let mut ingresses: Vec<&Ingress> = self
            .objects
            .ingresses
            .values()
            .filter(|i| self.selected(i))
            .collect();
        // oldest first: the oldest Ingress wins the default backend and shared SNIs
        ingresses.sort_by(|a, b| {
            let ts = |i: &Ingress| i.metadata.creation_timestamp.as_ref().map(|t| t.0);
            ts(a)
                .cmp(&ts(b))
                .then_with(|| meta_ns(&a.metadata).cmp(meta_ns(&b.metadata)))
                .then_with(|| meta_name(&a.metadata).cmp(meta_name(&b.metadata)))
        });
        let mut default_backend: Option<ObjectRef> = None;
        for ing in ingresses {
            self.ingress(ing, &mut default_backend);
        }
    }

    fn ingress(&mut self, ing: &Ingress, default_backend: &mut Option<ObjectRef>) {
        let oref = ObjectRef::new(Kind::Ingress, &ing.metadata);
        let ns = meta_ns(&ing.metadata).to_string();
        let name = meta_name(&ing.metadata).to_string();
        let mut errs: ann::Errs = vec![];
        if !is_dns_subdomain(&ns) || !is_dns_subdomain(&name) {
            errs.push((
                "metadata.name".into(),
                "namespace and name must be DNS subdomains".into(),
            ));
        }
        if let Err(e) = t::validate_tag(&oref.uid) {
            errs.push(("metadata.uid".into(), e));
        }
        let annotations = Annotations(ing.metadata.annotations.as_ref());
        let (ro, mut e) = RouteOpts::parse(&annotations, self.opts.router_flavor);
        let rewrite_field = ann::field("konghq.com/rewrite");
        if !self.opts.rewrite_uris {
            // not used without the feature gate, whatever its value
            e.retain(|(field, _)| *field != rewrite_field);
        }
        errs.extend(e);
        // values KIC ignores: reported, the defaults kept
        for (field, reason) in &ro.ignored {
            self.ignored(oref.clone(), field.clone(), reason.clone());
        }
        if annotations.get("konghq.com/rewrite").is_some() && !self.opts.rewrite_uris {
            // Without its feature gate KIC reports an error and leaves out the Kong Services
            // of the Ingress's routes (with every route they carry). Silverback is more
            // lenient: it reports the annotation as ignored and keeps the Ingress, unrewritten.
            self.ignored(
                oref.clone(),
                rewrite_field,
                "ignored: URI rewriting is not enabled (RewriteURIs)",
            );
        }
        let Some(spec) = ing.spec.as_ref() else {
            self.configured.push(oref);
            return;
        };

        // (service, port key, host) -> paths with the backend's field path
        struct Draft<'i> {
            backend: &'i IngressServiceBackend,
            field: String,
            paths: Vec<(String, PathMatch)>,
        }
        let mut drafts: BTreeMap<(String, String, String), Draft<'_>> = BTreeMap::new();
        let mut dangling: Vec<(String, String)> = vec![];
        for (ri, rule) in spec.rules.iter().flatten().enumerate() {
            let host = rule.host.clone().unwrap_or_default();
            let host_check =
                || t::validate_route_host(&host).and_then(|()| t::validate_wildcard_host(&host));
            if let (false, Err(e)) = (host.is_empty(), host_check()) {
                errs.push((format!("spec.rules[{ri}].host"), e));
                continue;
            }
            let Some(http) = rule.http.as_ref() else {
                continue;
            };
            for (pi, p) in http.paths.iter().enumerate() {
                // formatted only when used: most paths have no problem and share a draft
                let pfield = || format!("spec.rules[{ri}].http.paths[{pi}]");
                let paths = match self.paths(p.path.as_deref(), p.path_type.as_str(), &ro) {
                    Ok(paths) => paths,
                    Err(e) => {
                        errs.push((format!("{}.path", pfield()), e));
                        continue;
                    }
                };
                let Some(backend) = p.backend.service.as_ref() else {
                    dangling.push((
                        format!("{}.backend", pfield()),
                        "only Service backends are supported".into(),
                    ));
                    continue;
                };
                let port_key = port_key(backend);
                let d = drafts
                    .entry((backend.name.clone(), port_key, host.clone()))
                    .or_insert_with(|| Draft {
                        backend,
                        field: format!("{}.backend.service", pfield()),
                        paths: vec![],
                    });
                for pm in paths {
                    if !d.paths.contains(&pm) {
                        d.paths.push(pm);
                    }
                }
            }
        }
        for (ti, tls) in spec.tls.iter().flatten().enumerate() {
            for (hi, h) in tls.hosts.iter().flatten().enumerate() {
                // these become SNI entities: Kong's `wildcard_host`
                if let Err(e) = t::validate_wildcard_host(h) {
                    errs.push((format!("spec.tls[{ti}].hosts[{hi}]"), e));
                }
            }
        }
        if !errs.is_empty() {
            for (field, reason) in errs {
                self.problem(
                    oref.clone(),
                    field,
                    format!("{reason}; the Ingress is left out"),
                );
            }
            return;
        }
        for (field, reason) in dangling {
            self.problem(oref.clone(), field, reason);
        }
        let mut tags = oref.tags();
        tags.extend(ro.tags.iter().cloned());
        let tags = Tags::from(tags);

        for ((svc, port, host), d) in &drafts {
            let kong_service = match self.kong_service(&ns, d.backend, &d.field, &oref) {
                Some(s) => s,
                None => continue,
            };
            let base = format!("{ns}.{name}.{svc}.{}.{port}", host.replace('*', "_"));
            let hosts = with_aliases(host, &ro.host_aliases);
            let routes = self.routes(&base, &hosts, &d.paths, &ro, &tags, false);
            self.add_routes(&kong_service, routes, &oref, &d.field, &ro);
        }

        // TLS
        for (ti, tls) in spec.tls.iter().flatten().enumerate() {
            let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
                continue;
            };
            let field = format!("spec.tls[{ti}].secretName");
            let Some(cert_id) = self.tls_secret(&ns, secret, &oref, &field) else {
                continue;
            };
            for (hi, h) in tls.hosts.iter().flatten().enumerate() {
                match self.sni_owner.get(h) {
                    Some(owner) if *owner != cert_id => {
                        let p = Problem {
                            object: oref.clone(),
                            field: format!("spec.tls[{ti}].hosts[{hi}]"),
                            reason: format!(
                                "SNI {h} is already served by another certificate (an older Ingress's); left out"
                            ),
                            ignored: false,
                        };
                        self.problems.push(p);
                    }
                    Some(_) => {}
                    None => {
                        self.sni_owner.insert(h.clone(), cert_id.clone());
                        if let Some(c) = self.certs.get_mut(&cert_id) {
                            c.snis.insert(h.clone());
                        }
                    }
                }
            }
        }

        // default backend: the oldest Ingress that has one wins
        if let Some(db) = spec.default_backend.as_ref() {
            let field = "spec.defaultBackend".to_string();
            match (default_backend.as_ref(), db.service.as_ref()) {
                (Some(winner), _) => {
                    let reason = format!("ignored: {winner} (older) provides the default backend");
                    self.problem(oref.clone(), field, reason);
                }
                (None, None) => {
                    self.problem(oref.clone(), field, "only Service backends are supported")
                }
                (None, Some(backend)) => {
                    *default_backend = Some(oref.clone());
                    let bfield = format!("{field}.service");
                    if let Some(kong_service) = self.kong_service(&ns, backend, &bfield, &oref) {
                        let base = format!("{ns}.{name}");
                        let paths = vec![("/".to_string(), PathMatch::SegmentPrefix("/".into()))];
                        // KIC applies the host aliases to this route too, except under the
                        // expressions router, where it is a fixed catch-all
                        let hosts = match self.opts.router_flavor {
                            RouterFlavor::Expressions => vec![],
                            _ => with_aliases("", &ro.host_aliases),
                        };
                        let routes = self.routes(&base, &hosts, &paths, &ro, &tags, true);
                        self.add_routes(&kong_service, routes, &oref, &bfield, &ro);
                    }
                }
            }
        }
        self.configured.push(oref);
    }

    fn add_routes(
        &mut self,
        kong_service: &str,
        routes: Vec<(String, doc::Route)>,
        oref: &ObjectRef,
        field: &str,
        ro: &RouteOpts,
    ) {
        for (rname, mut route) in routes {
            if !self.route_names.insert(rname.clone()) {
                let reason =
                    format!("route name {rname} is already used by another Ingress; left out");
                self.problem(oref.clone(), field.to_string(), reason);
                continue;
            }
            if let (Some(rw), true) = (ro.rewrite.as_deref(), self.opts.rewrite_uris) {
                let uri = ann::rewrite_template(rw).unwrap_or_default();
                route.plugins = vec![doc::RoutePlugin {
                    config: json!({"replace": {"uri": uri}}),
                    name: "request-transformer".into(),
                    tags: route.tags.clone(),
                }];
            }
            if !ro.plugins.is_empty() {
                self.plugins.push(PluginAttachment {
                    object: oref.clone(),
                    entity_type: "route".into(),
                    entity_name: rname.clone(),
                    plugins: ro.plugins.clone(),
                });
            }
            if let Some(s) = self.services.get_mut(kong_service) {
                s.routes.insert(rname, route);
            }
        }
    }

    /// Kong paths and path matches of one Ingress path.
    fn paths(
        &self,
        path: Option<&str>,
        path_type: &str,
        ro: &RouteOpts,
    ) -> Result<Vec<(String, PathMatch)>, String> {
        // KIC's flattenMultipleSlashes, and an empty path is `/`
        let path = flatten_slashes(path.unwrap_or_default());
        let path = if path.is_empty() { "/" } else { path.as_ref() };
        let plain = |p: &str| -> Result<(), String> { t::validate_router_path(p) };
        match path_type {
            "Exact" => {
                if !path.starts_with('/') {
                    return Err("Exact paths must start with /".into());
                }
                let exact = format!("/{}", path.trim_start_matches('/'));
                plain(&exact)?;
                Ok(vec![(
                    format!("~{}$", regex::escape(&exact)),
                    PathMatch::Exact(exact),
                )])
            }
            "Prefix" => {
                if !path.starts_with('/') {
                    return Err("Prefix paths must start with /".into());
                }
                let trimmed = path.trim_matches('/');
                if trimmed.is_empty() {
                    return Ok(vec![("/".into(), PathMatch::SegmentPrefix("/".into()))]);
                }
                let base = format!("/{trimmed}");
                let dir = format!("{base}/");
                plain(&dir)?;
                let exact = format!("~{}$", regex::escape(&base));
                Ok(vec![
                    (exact, PathMatch::SegmentPrefix(base.clone())),
                    (dir, PathMatch::SegmentPrefix(base)),
                ])
            }
            "ImplementationSpecific" | "" => {
                if path.is_empty() {
                    return Ok(vec![("/".into(), PathMatch::Prefix("/".into()))]);
                }
                let kong = if let Some(rest) = path.strip_prefix(ro.regex_prefix.as_str()) {
                    format!("~{rest}")
                } else if self.params.enable_legacy_regex_detection {
                    silverback_config::uri::migrate_path(path)
                } else {
                    path.to_string()
                };
                plain(&kong)?;
                let pm = match kong.strip_prefix('~') {
                    Some(re) => PathMatch::Regex(re.to_string()),
                    None => PathMatch::Prefix(kong.clone()),
                };
                Ok(vec![(kong, pm)])
            }
            other => Err(format!("unknown pathType '{other}'")),
        }
    }

    /// The routes of one (service, host) group of an Ingress: one combined route with Kong's
    /// fields, or with the expressions router, one route per path priority class.
    fn routes(
        &self,
        base: &str,
        hosts: &[String],
        paths: &[(String, PathMatch)],
        ro: &RouteOpts,
        tags: &Tags,
        catch_all: bool,
    ) -> Vec<(String, doc::Route)> {
        let protocols = match (&ro.protocols, catch_all) {
            (Some(p), _) => Some(p.clone()),
            (None, true) => Some(vec!["http".to_string(), "https".to_string()]),
            (None, false) => None,
        };
        let route = |name: &str| doc::Route {
            expression: None,
            headers: BTreeMap::new(),
            hosts: vec![],
            https_redirect_status_code: ro.https_redirect_status_code,
            id: ids::kong_id(EntityKind::Route, name),
            methods: vec![],
            name: name.to_string(),
            path_handling: None,
            paths: None,
            plugins: vec![],
            preserve_host: ro.preserve_host,
            priority: None,
            protocols: protocols.clone(),
            regex_priority: None,
            request_buffering: ro.request_buffering,
            response_buffering: ro.response_buffering,
            snis: vec![],
            strip_path: ro.strip_path,
            tags: tags.clone(),
        };
        if self.opts.router_flavor == RouterFlavor::Expressions {
            let mut groups: BTreeMap<std::cmp::Reverse<u64>, Vec<PathMatch>> = BTreeMap::new();
            for (_, pm) in paths {
                let g = groups
                    .entry(std::cmp::Reverse(pm.priority_bits()))
                    .or_default();
                if !g.contains(pm) {
                    g.push(pm.clone());
                }
            }
            let m = Matchers {
                hosts,
                methods: &ro.methods,
                headers: &ro.headers,
                snis: &ro.snis,
            };
            return groups
                .into_values()
                .enumerate()
                .map(|(i, group)| {
                    let name = if i == 0 {
                        base.to_string()
                    } else {
                        format!("{base}_{i}")
                    };
                    let (expr, priority) = expression::route(&group, &m);
                    let mut r = route(&name);
                    r.expression = Some(expr);
                    r.priority = Some(if catch_all { 0 } else { priority });
                    (name, r)
                })
                .collect();
        }
        let mut r = route(base);
        r.paths = Some(paths.iter().map(|(p, _)| p.clone()).collect());
        r.path_handling = Some(ro.path_handling.clone());
        r.regex_priority = Some(ro.regex_priority);
        r.hosts = hosts.to_vec();
        r.methods = ro.methods.clone();
        r.snis = ro.snis.clone();
        // the last of a repeated header name wins, as in a JSON object
        r.headers = ro.headers.iter().cloned().collect();
        vec![(base.to_string(), r)]
    }

    /// The Kong Service for an Ingress backend, created on first use; `None` (with a
    /// problem) when the backend cannot be served.
    fn kong_service(
        &mut self,
        ns: &str,
        backend: &IngressServiceBackend,
        field: &str,
        ing: &ObjectRef,
    ) -> Option<String> {
        let objects = self.objects;
        let key = (ns.to_string(), backend.name.clone());
        let port_field = match backend.port.as_ref().and_then(|p| p.name.as_ref()) {
            Some(_) => format!("{field}.port.name"),
            None => format!("{field}.port.number"),
        };
        // a port that cannot be named, or a name that cannot name a Kong Service: left out
        if let Err(e) = check_backend_port(backend) {
            self.problem(ing.clone(), port_field, e);
            return None;
        }
        if !is_dns_subdomain(&backend.name) {
            let reason = format!("invalid Service name '{}'", backend.name);
            self.problem(ing.clone(), format!("{field}.name"), reason);
            return None;
        }
        // As KIC, a missing Service or port keeps the Kong Service and its routes, with an
        // upstream without targets: requests get 503 instead of falling to another route.
        let svc = objects.services.get(&key);
        let sport: Option<ServicePort> = match svc.map(|svc| resolve_port(svc, backend)) {
            Some(Ok(p)) => Some(p),
            Some(Err(e)) => {
                let reason = format!("{e}; its routes answer 503 (no targets)");
                self.problem(ing.clone(), port_field, reason);
                None
            }
            None => {
                let reason = format!(
                    "Service {ns}/{} not found; its routes answer 503 (no targets)",
                    backend.name
                );
                self.problem(ing.clone(), format!("{field}.name"), reason);
                None
            }
        };
        let port = port_key(backend);
        let name = format!("{ns}.{}.{port}", backend.name);
        if self.services.contains_key(&name) {
            return Some(name);
        }
        let info = match svc.map(|svc| self.svc_state(svc)) {
            Some(Ok(info)) => info,
            Some(Err(())) => {
                let reason = format!("Service {ns}/{} has problems and is left out", backend.name);
                self.problem(ing.clone(), format!("{field}.name"), reason);
                return None;
            }
            // no Service: KIC's defaults, tagged with the Ingress that asks for it
            None => Arc::new(SvcInfo {
                so: ServiceOpts::parse(&Annotations(None)).0,
                tags: ing.tags().into(),
                client_cert: None,
                ca_ids: vec![],
            }),
        };
        let so = &info.so;
        let upstream_name = format!("{}.{ns}.{port}.svc", backend.name);
        let targets = match (svc, &sport) {
            (Some(svc), Some(sport)) => self.targets(
                svc,
                sport,
                so.service_upstream || self.params.service_upstream,
            ),
            _ => vec![],
        };
        if let (Some(svc), false) = (svc, so.plugins.is_empty()) {
            self.plugins.push(PluginAttachment {
                object: ObjectRef::new(Kind::Service, &svc.metadata),
                entity_type: "service".into(),
                entity_name: name.clone(),
                plugins: so.plugins.clone(),
            });
        }
        let service = doc::Service {
            ca_certificates: info.ca_ids.clone(),
            client_certificate: info.client_cert.clone().map(|id| doc::IdRef { id }),
            connect_timeout: so.connect_timeout,
            host: upstream_name.clone(),
            id: ids::kong_id(EntityKind::Service, &name),
            name: name.clone(),
            path: so.path.clone(),
            port: 80,
            protocol: so.protocol.clone(),
            read_timeout: so.read_timeout,
            retries: so.retries,
            routes: vec![],
            tags: info.tags.clone(),
            tls_verify: so.tls_verify,
            tls_verify_depth: so.tls_verify_depth,
            write_timeout: so.write_timeout,
        };
        let upstream = doc::Upstream {
            algorithm: "round-robin",
            host_header: so.host_header.clone(),
            name: upstream_name,
            tags: info.tags.clone(),
            targets: targets
                .into_iter()
                .map(|(target, weight)| doc::Target { target, weight })
                .collect(),
        };
        self.services.insert(
            name.clone(),
            KongService {
                service,
                routes: BTreeMap::new(),
                upstream,
            },
        );
        Some(name)
    }

    /// A Service's settings (memoized); problems are reported once, on the Service.
    fn svc_state(&mut self, svc: &'a Service) -> SvcState {
        let key = (meta_ns(&svc.metadata), meta_name(&svc.metadata));
        if let Some(s) = self.svc_states.get(&key) {
            return s.clone();
        }
        let oref = ObjectRef::new(Kind::Service, &svc.metadata);
        let (so, mut errs) = ServiceOpts::parse(&Annotations(svc.metadata.annotations.as_ref()));
        if !is_dns_subdomain(key.0) || !is_dns_subdomain(key.1) {
            errs.push((
                "metadata.name".into(),
                "namespace and name must be DNS subdomains".into(),
            ));
        }
        if let Err(e) = t::validate_tag(&oref.uid) {
            errs.push(("metadata.uid".into(), e));
        }
        let spec = svc.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            let ext = spec
                .and_then(|s| s.external_name.as_deref())
                .unwrap_or_default();
            if !t::is_hostname(ext) {
                errs.push((
                    "spec.externalName".into(),
                    format!("'{ext}' is not a hostname"),
                ));
            }
        }
        // values KIC ignores, and (as KIC) a client certificate or CA certificate that
        // cannot be used: reported, the Service translated without them
        let mut ignored = so.ignored.clone();
        let mut client_cert = None;
        if let Some(secret) = so.client_cert.clone() {
            match self.tls_secret_id(key.0, &secret) {
                Ok(id) => client_cert = Some(id),
                Err(reason) => ignored.push((
                    ann::field("konghq.com/client-cert"),
                    format!("{reason}; the Service has no client certificate"),
                )),
            }
        }
        let mut ca_ids = vec![];
        for secret in &so.ca_secrets {
            match self.ca_by_secret.get(&(key.0.to_string(), secret.clone())) {
                Some(Ok(id)) => ca_ids.push(id.clone()),
                Some(Err(e)) => ignored.push((
                    ann::field("konghq.com/ca-certificates-secrets"),
                    format!("Secret {}/{secret}: {e}; ignored", key.0),
                )),
                None => ignored.push((
                    ann::field("konghq.com/ca-certificates-secrets"),
                    format!(
                        "Secret {}/{secret} not found or not labeled {CA_CERT_LABEL}=true; ignored",
                        key.0
                    ),
                )),
            }
        }
        for (field, reason) in ignored {
            self.ignored(oref.clone(), field, reason);
        }
        ca_ids.sort();
        ca_ids.dedup();
        let state = if errs.is_empty() {
            let mut tags = oref.tags();
            tags.extend(so.tags.iter().cloned());
            Ok(Arc::new(SvcInfo {
                so,
                tags: tags.into(),
                client_cert,
                ca_ids,
            }))
        } else {
            for (field, reason) in errs {
                self.problem(
                    oref.clone(),
                    field,
                    format!("{reason}; the Service is left out"),
                );
            }
            Err(())
        };
        self.svc_states.insert(key, state.clone());
        state
    }

    /// Targets of a Service port: the Service DNS name (`service-upstream`), the external
    /// name, or endpoint addresses.
    fn targets(
        &mut self,
        svc: &Service,
        sport: &ServicePort,
        service_upstream: bool,
    ) -> Vec<(String, u16)> {
        let ns = meta_ns(&svc.metadata);
        let name = meta_name(&svc.metadata);
        // KIC's getEndpoints: service-upstream first, even for an ExternalName Service
        if service_upstream {
            let domain = if self.opts.cluster_domain.is_empty() {
                String::new()
            } else {
                format!(".{}", self.opts.cluster_domain)
            };
            return vec![(format!("{name}.{ns}.svc{domain}:{}", sport.port), 100)];
        }
        let spec = svc.spec.as_ref();
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            let ext = spec
                .and_then(|s| s.external_name.as_deref())
                .unwrap_or_default();
            return vec![(format!("{ext}:{}", sport.port), 100)];
        }
        let mut out: BTreeMap<String, u16> = BTreeMap::new();
        let slices = self.slices.get(&(ns, name)).cloned().unwrap_or_default();
        for slice in slices {
            let port = slice
                .ports
                .iter()
                .flatten()
                .find(|p| {
                    p.name.as_deref().unwrap_or_default()
                        == sport.name.as_deref().unwrap_or_default()
                })
                .and_then(|p| p.port);
            let Some(port) = port.filter(|p| (1..=65535).contains(p)) else {
                continue;
            };
            for (ei, ep) in slice.endpoints.iter().enumerate() {
                let cond = ep.conditions.as_ref();
                let ready = cond.and_then(|c| c.ready).unwrap_or(true);
                let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
                let weight = if ready && !terminating {
                    100
                } else if terminating && self.opts.enable_drain_support {
                    0
                } else {
                    continue;
                };
                for (ai, addr) in ep.addresses.iter().enumerate() {
                    let target = if addr.parse::<std::net::Ipv6Addr>().is_ok() {
                        format!("[{addr}]:{port}")
                    } else {
                        format!("{addr}:{port}")
                    };
                    if t::split_host_port(&target).is_err() {
                        let oref = ObjectRef::new(Kind::EndpointSlice, &slice.metadata);
                        self.problem(
                            oref,
                            format!("endpoints[{ei}].addresses[{ai}]"),
                            format!("'{addr}' is not an IP address or hostname; left out"),
                        );
                        continue;
                    }
                    let w = out.entry(target).or_insert(weight);
                    *w = (*w).max(weight);
                }
            }
        }
        out.into_iter().collect()
    }

    /// The certificate of a TLS Secret (memoized): its id, or `None` with a problem on `user`.
    fn tls_secret(
        &mut self,
        ns: &str,
        name: &str,
        user: &ObjectRef,
        field: &str,
    ) -> Option<String> {
        match self.tls_secret_id(ns, name) {
            Ok(id) => Some(id),
            Err(reason) => {
                self.problem(user.clone(), field.to_string(), reason);
                None
            }
        }
    }

    /// The certificate id of a TLS Secret, or why it cannot be used (the Secret's own
    /// problems are reported once, on the Secret).
    fn tls_secret_id(&mut self, ns: &str, name: &str) -> Result<String, String> {
        let key = (ns.to_string(), name.to_string());
        let state = match self.secret_certs.get(&key) {
            Some(s) => s.clone(),
            None => {
                let s = self.load_tls_secret(&key);
                self.secret_certs.insert(key.clone(), s.clone());
                s
            }
        };
        state.ok_or_else(|| match self.objects.secrets.contains_key(&key) {
            true => format!("Secret {ns}/{name} is not a usable TLS Secret"),
            false => format!("Secret {ns}/{name} not found"),
        })
    }

    fn load_tls_secret(&mut self, key: &Key) -> Option<String> {
        let secret = self.objects.secrets.get(key)?;
        let oref = ObjectRef::new(Kind::Secret, &secret.metadata);
        let mut fail = |field: &str, reason: String| {
            self.problems.push(Problem {
                object: oref.clone(),
                field: field.to_string(),
                reason,
                ignored: false,
            });
            None
        };
        let Some(cert) = secret_value(secret, "tls.crt") else {
            return fail("data[tls.crt]", "missing or not UTF-8".into());
        };
        let Some(pkey) = secret_value(secret, "tls.key") else {
            return fail("data[tls.key]", "missing or not UTF-8".into());
        };
        if let Err(e) = silverback_config::pki::parse_pair(&cert, &pkey) {
            return fail("data[tls.crt]", e);
        }
        if let Err(e) = t::validate_tag(&oref.uid) {
            return fail("metadata.uid", e);
        }
        if !is_dns_subdomain(&key.0) || !is_dns_subdomain(&key.1) {
            return fail(
                "metadata.name",
                "namespace and name must be DNS subdomains".into(),
            );
        }
        let id = secret_id(&secret.metadata, EntityKind::Certificate);
        if self.certs.contains_key(&id) {
            return fail("metadata.uid", "another Secret has the same UID".into());
        }
        self.certs.insert(
            id.clone(),
            Cert {
                cert,
                key: pkey,
                tags: oref.tags().into(),
                snis: BTreeSet::new(),
            },
        );
        Some(id)
    }

    /// CA certificates: Secrets labeled `konghq.com/ca-cert: "true"` of our class (or of
    /// none), with the PEM in `cert` (or `ca.crt`) and optionally the id in `id`.
    fn ca_certificates(&mut self) {
        let mut digests: HashMap<String, String> = HashMap::new();
        let objects = self.objects;
        for (key, secret) in &objects.secrets {
            let labeled = secret
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(CA_CERT_LABEL))
                .is_some_and(|v| v == "true");
            if !labeled {
                continue;
            }
            let class = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ann::INGRESS_CLASS));
            if class.is_some_and(|c| !c.is_empty() && *c != self.opts.ingress_class) {
                continue;
            }
            let oref = ObjectRef::new(Kind::Secret, &secret.metadata);
            let result = (|| -> Result<(String, String, String), (String, String)> {
                let pem = secret_value(secret, "cert")
                    .or_else(|| secret_value(secret, "ca.crt"))
                    .ok_or_else(|| {
                        ("data[cert]".to_string(), "missing or not UTF-8".to_string())
                    })?;
                let digest = silverback_config::pki::check_ca_certificate(&pem, self.opts.now_unix)
                    .map_err(|e| ("data[cert]".to_string(), e))?;
                t::validate_tag(&oref.uid).map_err(|e| ("metadata.uid".to_string(), e))?;
                if !is_dns_subdomain(&key.0) || !is_dns_subdomain(&key.1) {
                    return Err((
                        "metadata.name".into(),
                        "namespace and name must be DNS subdomains".into(),
                    ));
                }
                let id = match secret_value(secret, "id") {
                    Some(id) => Uuid::try_parse(id.trim())
                        .map_err(|_| ("data[id]".to_string(), format!("'{id}' is not a UUID")))?
                        .to_string(),
                    None => secret_id(&secret.metadata, EntityKind::CaCertificate),
                };
                Ok((pem, digest, id))
            })();
            let entry = match result {
                Err((field, reason)) => {
                    self.problem(
                        oref,
                        field,
                        format!("{reason}; the CA certificate is left out"),
                    );
                    Err(reason)
                }
                Ok((pem, digest, id)) => {
                    if let Some(other) = digests.get(&digest) {
                        let reason = format!("same certificate as Secret {other}; left out");
                        self.problem(oref, "data[cert]", reason.clone());
                        Err(reason)
                    } else if self.ca_certs.contains_key(&id) {
                        let reason = "another CA Secret has the same id; left out".to_string();
                        self.problem(oref, "data[id]", reason.clone());
                        Err(reason)
                    } else {
                        digests.insert(digest, format!("{}/{}", key.0, key.1));
                        let v = doc::CaCertificate {
                            cert: pem,
                            id: id.clone(),
                            tags: oref.tags().into(),
                        };
                        self.ca_certs.insert(id.clone(), v);
                        Ok(id)
                    }
                }
            };
            self.ca_by_secret.insert(key.clone(), entry);
        }
    }

    fn finish(mut self) -> TypedTranslation {
        let mut doc = Document {
            ca_certificates: std::mem::take(&mut self.ca_certs).into_values().collect(),
            ..Document::default()
        };
        doc.certificates = std::mem::take(&mut self.certs)
            .into_iter()
            .map(|(id, c)| doc::Certificate {
                cert: c.cert,
                id,
                key: c.key,
                snis: c
                    .snis
                    .into_iter()
                    .map(|name| doc::Sni {
                        name,
                        tags: c.tags.clone(),
                    })
                    .collect(),
                tags: c.tags,
            })
            .collect();
        let services = std::mem::take(&mut self.services);
        doc.services.reserve_exact(services.len());
        doc.upstreams.reserve_exact(services.len());
        for (_, s) in services {
            let mut service = s.service;
            service.routes = s.routes.into_values().collect();
            doc.services.push(service);
            doc.upstreams.push(s.upstream);
        }
        doc.upstreams.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        self.problems.sort();
        self.problems.dedup();
        self.plugins.sort();
        self.configured.sort();
        TypedTranslation {
            document: doc,
            problems: self.problems,
            plugins: self.plugins,
            configured: self.configured,
        }
    }
}

/// A rule's host (none when empty) followed by the host aliases not already there (KIC's
/// `appendIfMissing`).
fn with_aliases(host: &str, aliases: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::with_capacity(aliases.len() + 1);
    for h in std::iter::once(host).chain(aliases.iter().map(String::as_str)) {
        if !h.is_empty() && !hosts.iter().any(|x| x == h) {
            hosts.push(h.to_string());
        }
    }
    hosts
}

/// `path` with every run of `/` collapsed into one (KIC's `flattenMultipleSlashes`).
fn flatten_slashes(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains("//") {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// KIC's canonical port string of a backend: the number, or the name.
fn port_key(b: &IngressServiceBackend) -> String {
    match b.port.as_ref() {
        Some(p) => match (&p.name, p.number) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(n)) => n.to_string(),
            _ => String::new(),
        },
        None => String::new(),
    }
}

/// Whether a backend's port can name a Kong Service: a valid name, or a number in range.
fn check_backend_port(b: &IngressServiceBackend) -> Result<(), String> {
    let p = b
        .port
        .as_ref()
        .ok_or_else(|| "a backend port is required".to_string())?;
    if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
        if !pn.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
            return Err(format!("invalid port name '{pn}'"));
        }
        return Ok(());
    }
    let n = p
        .number
        .ok_or_else(|| "a backend port number or name is required".to_string())?;
    if !(1..=65535).contains(&n) {
        return Err(format!("port {n} is out of range 1..65535"));
    }
    Ok(())
}

/// The Service port a backend names (see [`check_backend_port`] for the port's own errors).
fn resolve_port(svc: &Service, b: &IngressServiceBackend) -> Result<ServicePort, String> {
    check_backend_port(b)?;
    let ns = meta_ns(&svc.metadata);
    let name = meta_name(&svc.metadata);
    let spec = svc.spec.as_ref();
    let ports: &[ServicePort] = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let external = spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName");
    let p = b
        .port
        .as_ref()
        .ok_or_else(|| "a backend port is required".to_string())?;
    if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
        // KIC's findPort: the first port named so, or whose targetPort is that name
        return ports
            .iter()
            .find(|sp| {
                sp.name.as_deref() == Some(pn)
                    || matches!(&sp.target_port, Some(IntOrString::String(t)) if t == pn)
            })
            .cloned()
            .ok_or_else(|| {
                format!("Service {ns}/{name} has no port named '{pn}' (nor targetPort '{pn}')")
            });
    }
    let n = p.number.unwrap_or_default();
    match ports.iter().find(|sp| sp.port == n) {
        Some(sp) => Ok(sp.clone()),
        None if external && ports.is_empty() => Ok(ServicePort {
            port: n,
            ..Default::default()
        }),
        None => Err(format!("Service {ns}/{name} has no port {n}")),
    }
}

fn secret_value(s: &Secret, k: &str) -> Option<String> {
    if let Some(b) = s.data.as_ref().and_then(|d| d.get(k)) {
        return String::from_utf8(b.0.clone()).ok();
    }
    s.string_data.as_ref().and_then(|d| d.get(k)).cloned()
}

/// A Secret-backed entity's id: the Secret's UID when it is a UUID (as KIC does), else a
/// UUIDv5 of `namespace/name`.
fn secret_id(m: &ObjectMeta, kind: EntityKind) -> String {
    match m.uid.as_deref().and_then(|u| Uuid::try_parse(u).ok()) {
        Some(u) => u.to_string(),
        None => ids::kong_id(kind, &format!("{}/{}", meta_ns(m), meta_name(m))).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend port name matches a Service port by name, or by a string targetPort (KIC's
    /// findPort), the first port that matches either way winning.
    #[test]
    fn port_name_matches_a_named_target_port() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [
                {"name": "admin", "port": 9000, "targetPort": 9000},
                {"name": "http", "port": 80, "targetPort": "web"},
                {"name": "web", "port": 8080, "targetPort": 8080},
            ]}
        }))
        .unwrap();
        let backend = |name: &str| -> IngressServiceBackend {
            serde_json::from_value(json!({"name": "web", "port": {"name": name}})).unwrap()
        };
        let port = |name: &str| resolve_port(&svc, &backend(name)).map(|p| p.port);
        assert_eq!(port("admin"), Ok(9000));
        // the second port's targetPort comes before the third port's name
        assert_eq!(port("web"), Ok(80));
        assert_eq!(port("http"), Ok(80));
        assert!(port("nope").is_err());
    }

    #[test]
    fn host_aliases_are_deduplicated() {
        let aliases: Vec<String> = ["b.com", "a.com", "b.com", "c.com"]
            .map(String::from)
            .into();
        assert_eq!(with_aliases("a.com", &aliases), ["a.com", "b.com", "c.com"]);
        assert_eq!(with_aliases("", &aliases), ["b.com", "a.com", "c.com"]);
        assert!(with_aliases("", &[]).is_empty());
    }

    /// A value KIC ignores is a problem marked `ignored` (the object is translated); a
    /// missing backend Service is not.
    #[test]
    fn ignored_values_are_marked() {
        let objects = Objects::from_yaml_documents(
            br#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default, annotations: {konghq.com/strip-path: "1"}}
spec:
  ingressClassName: kong
  rules:
  - http:
      paths:
      - {path: /a, pathType: Prefix, backend: {service: {name: gone, port: {number: 80}}}}
"#,
        )
        .unwrap();
        let t = translate(&objects, &TranslateOptions::default());
        let flagged: Vec<(bool, &str)> = t
            .problems
            .iter()
            .map(|p| (p.ignored, p.field.as_str()))
            .collect();
        assert!(
            flagged.contains(&(true, "metadata.annotations[konghq.com/strip-path]")),
            "{flagged:?}"
        );
        assert!(flagged.iter().any(|(i, _)| !i), "{flagged:?}");
    }

    #[test]
    fn slashes_are_flattened() {
        for (path, flat) in [
            ("", ""),
            ("/", "/"),
            ("//", "/"),
            ("/a//b///c/", "/a/b/c/"),
            ("///a", "/a"),
            ("/~/x//y", "/~/x/y"),
            ("a/b", "a/b"),
        ] {
            assert_eq!(flatten_slashes(path), flat, "{path}");
        }
    }
}
