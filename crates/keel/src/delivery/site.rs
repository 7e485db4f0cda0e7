//! Sites: where a destination domain's mail goes, and the key shaping limits hang off.
//!
//! A site is a destination's MX host set (or its smarthost route), so domains hosted by the
//! same provider share one ready queue and one set of limits: gmail.com and googlemail.com, or
//! thousands of hosted domains behind one provider's MX hosts. A domain named by a
//! `[[shaping.rule]] domain = ...` gets a site of its own, so its rule applies to it alone.

use std::sync::Arc;

use keel_config::{Config, SiteMatch};

use super::mx::{ResolveError, Resolver, Target};

/// A resolved site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Stable name: the sorted MX host names joined by commas, `route:host:port` for a
    /// smarthost, or the domain itself for an implicit MX.
    pub key: Arc<str>,
    /// MX host names (for `mx_suffix` rules); the smarthost name for routes.
    pub mx_hosts: Vec<String>,
    /// Hosts to try, best first.
    pub targets: Vec<Target>,
}

/// Resolves `domain` to its site: the configured route, or MX lookup.
pub async fn resolve(
    cfg: &Config,
    resolver: &Resolver,
    domain: &str,
) -> Result<Site, ResolveError> {
    let mut site = match cfg.route_for(domain) {
        Some(route) => {
            let t = resolver
                .host_target(&route.smarthost.host, route.smarthost.port)
                .await?;
            Site {
                key: Arc::from(format!("route:{}", route.smarthost)),
                mx_hosts: vec![route.smarthost.host.clone()],
                targets: vec![t],
            }
        }
        None => {
            let targets = resolver.mx_targets(domain, cfg.delivery.port).await?;
            let mut hosts: Vec<String> = targets.iter().map(|t| t.host.clone()).collect();
            hosts.sort();
            hosts.dedup();
            Site {
                key: Arc::from(hosts.join(",")),
                mx_hosts: hosts,
                targets,
            }
        }
    };
    let own_rule = cfg
        .shaping
        .rules
        .iter()
        .any(|r| matches!(&r.matcher, SiteMatch::Domain(d) if d == domain));
    if own_rule {
        site.key = Arc::from(format!("{domain}@{}", site.key));
    }
    Ok(site)
}
