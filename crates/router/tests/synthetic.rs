//! The synthetic 10,000-route workload: every request reaches the route it was built for
//! (or none), and the index agrees with the plain priority walk.

mod common;

use common::{Req, route_name};
use silverback_config::RouterFlavor;
use silverback_router::synthetic::{mixed_requests, mixed_routes};

#[test]
fn synthetic_workload_routes_as_designed() {
    let n = 2_000;
    let r = common::router(RouterFlavor::TraditionalCompatible, &mixed_routes(n));
    for s in mixed_requests(n, 600) {
        let mut req = Req::new(s.method, &s.host, &s.path);
        for (k, v) in &s.headers {
            req = req.header(k, v);
        }
        let want = s.route.map(|i| format!("r{i}"));
        assert_eq!(route_name(&r, &req), want, "{req:?}");
    }
}
