//! Loading `[cluster]`, `[hosts.NAME]` and each node's `host`: every mistake a diagnostic at
//! its key, like the rest of the file.

use toml::de::{DeTable, DeValue};

use super::{Loader, Suggestions, Value, field};
use crate::engine::config::cluster::{Cluster, DEFAULT_LEASE_TTL, Host, host_address_var};
use crate::engine::config::{Node, Problem, Span};

pub(super) const CLUSTER_KEYS: &[&str] = &["name", "etcd", "lease_ttl"];
pub(super) const HOST_KEYS: &[&str] = &["address"];

/// `DAGSTART_ETCD=http://a:2379,http://b:2379` replaces `[cluster] etcd`.
const ETCD_VAR: &str = "DAGSTART_ETCD";

impl Loader<'_> {
    /// `[cluster]`, if the file has one.
    pub(super) fn cluster(&mut self, doc: &DeTable<'_>) -> Option<Cluster> {
        let value = doc.get("cluster")?;
        let table = self.expect_table(value, "cluster")?;
        self.check_keys(table, CLUSTER_KEYS, "cluster");
        let name = match field(table, "name") {
            Some(v) => self.cluster_name(v)?,
            None => self.project_name(),
        };
        let lease_ttl = field(table, "lease_ttl")
            .and_then(|v| self.lease_ttl(v))
            .unwrap_or(DEFAULT_LEASE_TTL);
        let etcd = self.etcd_endpoints(table, value.span())?;
        Some(Cluster {
            name,
            etcd,
            lease_ttl,
        })
    }

    fn cluster_name(&mut self, value: &Value<'_>) -> Option<String> {
        let name = self.string(value, "cluster.name")?;
        if !crate::engine::config::is_name(&name) {
            self.push(
                Problem::error("dagstart::config::cluster", "invalid cluster name")
                    .label(
                        value.span(),
                        "only letters, digits, `_` and `-` are allowed",
                    )
                    .help(
                        "the name keys the run in etcd; every host of the run uses the same file",
                    ),
            );
            return None;
        }
        Some(name)
    }

    /// The project directory's name, cleaned to a name (the default of `[cluster] name`).
    fn project_name(&self) -> String {
        let dir = self.base_dir.file_name().and_then(|n| n.to_str());
        let name = crate::engine::config::clean_name(dir.unwrap_or("dagstart"));
        if name.is_empty() {
            "dagstart".to_owned()
        } else {
            name
        }
    }

    fn lease_ttl(&mut self, value: &Value<'_>) -> Option<std::time::Duration> {
        let ttl = self.duration(value, "cluster.lease_ttl")?;
        // etcd grants leases in whole seconds and refuses very short ones.
        if ttl < std::time::Duration::from_secs(2) || ttl.subsec_nanos() != 0 {
            self.push(
                Problem::error(
                    "dagstart::config::lease_ttl",
                    "`lease_ttl` must be whole seconds, 2s or more",
                )
                .label(
                    value.span(),
                    "etcd grants leases in whole seconds, at least 2",
                )
                .help("for example lease_ttl = \"2s\""),
            );
            return None;
        }
        Some(ttl)
    }

    /// `etcd = [...]`, or `DAGSTART_ETCD` over it; at least one `http://host:port`.
    fn etcd_endpoints(&mut self, table: &DeTable<'_>, section: Span) -> Option<Vec<String>> {
        if let Some(var) = self.env.get(ETCD_VAR).map(str::to_owned) {
            self.from_env
                .insert("cluster.etcd".to_owned(), ETCD_VAR.to_owned());
            let endpoints: Vec<String> = var
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect();
            let bad: Vec<&String> = endpoints
                .iter()
                .filter(|e| endpoint_problem(e).is_some())
                .collect();
            if endpoints.is_empty() || !bad.is_empty() {
                let what = bad
                    .first()
                    .map_or("no endpoint".to_owned(), |e| format!("`{e}`"));
                self.push(
                    Problem::error(
                        "dagstart::config::etcd",
                        format!("environment variable {ETCD_VAR}={var:?} is invalid: {what}"),
                    )
                    .help("give etcd client URLs, comma-separated: http://10.0.0.1:2379,http://10.0.0.2:2379"),
                );
                return None;
            }
            return Some(endpoints);
        }
        let Some(value) = field(table, "etcd") else {
            self.no_endpoints(section, "this [cluster] names no etcd endpoint");
            return None;
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.type_error(value, "etcd", "an array of etcd URLs");
            return None;
        };
        let mut endpoints = Vec::with_capacity(items.len());
        for item in items.iter() {
            let Some(url) = self.string(item, "cluster.etcd") else {
                continue;
            };
            match endpoint_problem(&url) {
                Some(problem) => self.push(
                    Problem::error(
                        "dagstart::config::etcd",
                        format!("invalid etcd endpoint `{url}`"),
                    )
                    .label(item.span(), problem)
                    .help("an etcd client URL looks like http://10.0.0.2:2379"),
                ),
                None => endpoints.push(url),
            }
        }
        if items.is_empty() {
            self.no_endpoints(value.span(), "empty");
            return None;
        }
        (endpoints.len() == items.len()).then_some(endpoints)
    }

    fn no_endpoints(&mut self, span: Span, label: &str) {
        self.push(
            Problem::error("dagstart::config::etcd", "`[cluster]` needs etcd endpoints")
                .label(span, label.to_owned())
                .help(format!(
                    "add etcd = [\"http://127.0.0.1:2379\"], or set {ETCD_VAR}=http://HOST:2379"
                )),
        );
    }

    /// `[hosts.NAME]` tables, in file order.
    pub(super) fn hosts(&mut self, doc: &DeTable<'_>) -> Vec<Host> {
        let Some(table) = self.table_at(doc, "hosts") else {
            return Vec::new();
        };
        let mut hosts = Vec::with_capacity(table.len());
        for (name, value) in table.iter() {
            let path = format!("hosts.{}", name.get_ref());
            let Some(host_table) = self.expect_table(value, &path) else {
                continue;
            };
            self.check_keys(host_table, HOST_KEYS, &path);
            if !crate::engine::config::is_name(name.get_ref()) {
                self.push(
                    Problem::error(
                        "dagstart::config::host",
                        format!("invalid host name `{}`", name.get_ref()),
                    )
                    .label(name.span(), "only letters, digits, `_` and `-` are allowed")
                    .help("a host is named on the command line: `dagstart agent --host NAME`"),
                );
                continue;
            }
            let address = field(host_table, "address")
                .and_then(|v| self.string(v, &format!("{path}.address")));
            hosts.push(Host {
                name: name.get_ref().to_string(),
                name_span: name.span(),
                address,
            });
        }
        hosts
    }

    /// A node's `host = "db1"`, with where it was written.
    pub(super) fn node_host(&mut self, table: &DeTable<'_>, path: &str) -> Option<(String, Span)> {
        let value = field(table, "host")?;
        let name = self.string(value, &format!("{path}.host"))?;
        Some((name, value.span()))
    }

    /// Every `host` names a declared host, and hosts exist only with a `[cluster]` section.
    pub(super) fn check_placement(
        &mut self,
        doc: &DeTable<'_>,
        hosts: &[Host],
        nodes: &[Node],
        host_spans: &[Option<Span>],
    ) {
        let has_section = doc.get("cluster").is_some();
        if !has_section {
            if let Some(key) = doc.get_key_value("hosts").map(|(k, _)| k) {
                self.push(
                    Problem::error("dagstart::config::host", "`[hosts]` needs a `[cluster]` section")
                        .label(key.span(), "hosts without a cluster")
                        .help("add [cluster] with etcd = [\"http://HOST:2379\"], the store the hosts coordinate through"),
                );
            }
        }
        let suggestions = Suggestions::new(hosts.iter().map(|h| h.name.as_str()));
        for (node, span) in nodes.iter().zip(host_spans) {
            let (Some(host), Some(span)) = (&node.host, span) else {
                continue;
            };
            if !has_section {
                self.push(
                    Problem::error(
                        "dagstart::config::host",
                        format!(
                            "`{}` is placed on host `{host}`, but there is no `[cluster]`",
                            node.name
                        ),
                    )
                    .label(span.clone(), "needs a [cluster] section")
                    .help("add [cluster] with etcd endpoints and [hosts.NAME], or remove `host`"),
                );
            } else if !hosts.iter().any(|h| &h.name == host) {
                let problem = Problem::error(
                    "dagstart::config::unknown_host",
                    format!(
                        "`{}` is placed on host `{host}`, which is not declared",
                        node.name
                    ),
                )
                .label(span.clone(), "no [hosts] table has this name");
                self.push(match suggestions.for_name(host) {
                    Some(s) => problem.help(format!("did you mean `{s}`?")),
                    None => problem.help(format!("declare it: [hosts.{host}]")),
                });
            }
        }
    }

    /// `DAGSTART_HOST_<NAME>_ADDR` for every host with an address, unless the file sets it.
    pub(super) fn host_addresses(
        &self,
        hosts: &[Host],
        env: &mut std::collections::BTreeMap<String, String>,
    ) {
        for host in hosts {
            if let Some(address) = &host.address {
                env.entry(host_address_var(&host.name))
                    .or_insert_with(|| address.clone());
            }
        }
    }
}

/// Why `url` is not an etcd endpoint dagstart can use, if it is not.
fn endpoint_problem(url: &str) -> Option<&'static str> {
    if url.starts_with("https://") {
        return Some("TLS to etcd is not supported yet: use http://");
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Some("must start with http://");
    };
    let authority = rest.trim_end_matches('/');
    let port = authority.rsplit_once(':').map(|(_, p)| p);
    match port {
        _ if authority.is_empty() || authority.contains('/') => Some("must be http://HOST:PORT"),
        Some(p) if p.parse::<u16>().is_ok() => None,
        _ => Some("needs a port, e.g. :2379"),
    }
}
