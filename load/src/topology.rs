//! The configuration files and system tools a local topology needs: a
//! nats-server node's config (cluster routes, lame-duck timing), nginx's config
//! derived from deploy/nginx.conf (the deployed placement, with local upstreams
//! and paths), and running PostgreSQL's own binaries as the postgres user.

use anyhow::Context;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The deployed nginx config; the local one differs only in addresses and paths.
const DEPLOYED_NGINX: &str = include_str!("../../deploy/nginx.conf");
/// How long a node in lame-duck mode keeps its clients before it exits (30 s is
/// nats-server's minimum). Its leaders move in the first moments; clients are
/// closed over this window, so they reconnect to the other nodes a few at a time.
pub const LAME_DUCK_DURATION_SECS: u64 = 30;

pub struct NatsNode<'a> {
    pub name: &'a str,
    pub client: u16,
    /// Route port, for a cluster.
    pub cluster: Option<u16>,
    pub monitor: u16,
    pub store_dir: &'a Path,
    /// Every node's route port (a node skips its own).
    pub routes: &'a [u16],
    /// What the routes log in with (as `route`).
    pub route_password: &'a str,
}

/// A nats-server config file for one node on loopback.
pub fn nats_conf(node: &NatsNode<'_>) -> String {
    let mut conf = String::new();
    let _ = writeln!(conf, "server_name: {}", node.name);
    // The deployment's users and permissions (deploy/nats-auth.conf).
    let subjects = bandsync_nats::Subjects::new(bandsync_nats::subjects::DEFAULT_PREFIX)
        .expect("the default prefix is valid");
    conf.push_str(&bandsync_nats::auth::server_authorization(&subjects));
    let _ = writeln!(conf, "listen: 127.0.0.1:{}", node.client);
    let _ = writeln!(conf, "http: 127.0.0.1:{}", node.monitor);
    let _ = writeln!(
        conf,
        "jetstream {{ store_dir: {:?} }}",
        node.store_dir.display().to_string()
    );
    let _ = writeln!(conf, "lame_duck_duration: \"{LAME_DUCK_DURATION_SECS}s\"");
    let _ = writeln!(conf, "lame_duck_grace_period: \"1s\"");
    if let Some(cluster) = node.cluster {
        let routes: Vec<String> = node
            .routes
            .iter()
            .filter(|&&p| p != cluster)
            .map(|p| {
                format!(
                    "\"nats://{}:{}@127.0.0.1:{p}\"",
                    bandsync_nats::auth::ROUTE_USER,
                    node.route_password
                )
            })
            .collect();
        let _ = writeln!(
            conf,
            "cluster {{\n  name: bandsync\n  listen: 127.0.0.1:{cluster}\n  {}\n  routes: [{}]\n}}",
            bandsync_nats::auth::route_authorization(),
            routes.join(", ")
        );
    }
    conf
}

/// deploy/nginx.conf with the gateways at `upstreams` (`host:port`), listening
/// on 127.0.0.1:`port`, running in the foreground with its files under `dir`.
pub fn nginx_conf(dir: &Path, port: u16, upstreams: &[String]) -> anyhow::Result<String> {
    let d = dir.display();
    let mut out = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
    );
    let mut replaced_servers = 0;
    for line in DEPLOYED_NGINX.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("server gateway-") {
            // The deployed file names two gateways; list ours once, in their place.
            if replaced_servers % 2 == 0 {
                let indent = &line[..line.len() - trimmed.len()];
                let options = trimmed.split_once(' ').map_or("", |(_, rest)| rest);
                let options = options.split_once(' ').map_or(";", |(_, o)| o);
                for u in upstreams {
                    let _ = writeln!(out, "{indent}server {u} {options}");
                }
            }
            replaced_servers += 1;
        } else if trimmed == "listen 8080;" {
            let _ = writeln!(out, "        listen 127.0.0.1:{port};");
        } else if trimmed == "http {" {
            out.push_str(line);
            let _ = write!(
                out,
                "\n    access_log {d}/access.log;\n    client_body_temp_path {d}/tmp-body;\n    proxy_temp_path {d}/tmp-proxy;\n    fastcgi_temp_path {d}/tmp-fastcgi;\n    uwsgi_temp_path {d}/tmp-uwsgi;\n    scgi_temp_path {d}/tmp-scgi;\n"
            );
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    anyhow::ensure!(
        replaced_servers == 4 && out.contains(&format!("listen 127.0.0.1:{port};")),
        "deploy/nginx.conf changed shape: expected two upstreams of two gateways and `listen 8080;`"
    );
    Ok(out)
}

/// nginx from Debian's package (`apt-get install nginx-light`).
pub fn nginx_bin() -> anyhow::Result<PathBuf> {
    let path = PathBuf::from("/usr/sbin/nginx");
    anyhow::ensure!(
        path.is_file(),
        "nginx not found: apt-get install nginx-light"
    );
    Ok(path)
}

/// The newest installed PostgreSQL's server binaries (Debian's layout).
pub fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL's server is not installed (apt-get install postgresql)")?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no initdb under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
}

pub fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

pub fn chown_postgres(dir: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()
        .context("running chown")?;
    anyhow::ensure!(status.success(), "chown postgres {} failed", dir.display());
    Ok(())
}

/// `bin` and its leading arguments, run as the postgres user when `as_postgres`.
/// setpriv execs (no parent left behind), so a signal reaches PostgreSQL itself.
pub fn as_postgres_argv(bin: &Path, as_postgres: bool) -> (PathBuf, Vec<String>) {
    if as_postgres {
        let args = [
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([bin.display().to_string()])
        .collect();
        (PathBuf::from("setpriv"), args)
    } else {
        (bin.to_path_buf(), Vec::new())
    }
}

pub fn maybe_as_postgres(bin: &Path, as_postgres: bool) -> tokio::process::Command {
    let (bin, args) = as_postgres_argv(bin, as_postgres);
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_conf_keeps_the_deployed_placement_with_local_gateways() {
        let ups = vec![
            "127.0.0.1:1001".to_owned(),
            "127.0.0.1:1002".to_owned(),
            "127.0.0.1:1003".to_owned(),
        ];
        let conf = nginx_conf(Path::new("/tmp/x"), 18080, &ups).expect("renders");
        assert!(conf.contains("hash $arg_session consistent;"), "{conf}");
        assert_eq!(
            conf.matches("server 127.0.0.1:1003 max_fails=1 fail_timeout=5s;")
                .count(),
            2
        );
        assert!(conf.contains("listen 127.0.0.1:18080;"));
        assert!(!conf.contains("gateway-1"), "{conf}");
    }

    /// deploy/nginx.conf as the cluster runs it, checked by nginx itself (Debian's
    /// nginx-light, which scripts/test installs): a directive nginx 1.22 does not
    /// know, or a shape the local rendering broke, fails here.
    #[test]
    fn nginx_accepts_the_rendered_config() {
        let nginx = nginx_bin().expect("nginx is installed (scripts/test installs nginx-light)");
        let dir = tempfile::tempdir().expect("temp dir");
        let ups = vec!["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()];
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir.path(), 1, &ups).expect("renders")).expect("write");
        let out = std::process::Command::new(nginx)
            .arg("-t")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .output()
            .expect("runs nginx -t");
        assert!(
            out.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn nats_conf_routes_to_the_other_nodes() {
        let conf = nats_conf(&NatsNode {
            name: "nats-0",
            client: 4000,
            cluster: Some(5000),
            monitor: 6000,
            store_dir: Path::new("/tmp/js"),
            routes: &[5000, 5001, 5002],
            route_password: "pw",
        });
        assert!(
            conf.contains(
                r#"routes: ["nats://route:pw@127.0.0.1:5001", "nats://route:pw@127.0.0.1:5002"]"#
            ),
            "{conf}"
        );
        assert!(conf.contains("password: $BANDSYNC_NATS_ROUTE_PASSWORD"));
        assert!(conf.contains("user: gateway"));
        assert!(conf.contains("lame_duck_duration"));
    }
}
