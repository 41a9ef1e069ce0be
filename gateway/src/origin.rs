//! Which web pages may open a WebSocket here. A browser sends the page's
//! `Origin` with every upgrade and lets any page open a socket to any site, so
//! without this check a page elsewhere (`https://evil.example`, or a sandboxed
//! `null`) holding a member's token could drive the member's connection.
//! Clients that are not browsers send no `Origin` (and could send any): the
//! token is what admits them.

/// The allowed origins: the ones configured (`--allowed-origins`), or when none
/// are, the gateway's own: a page whose origin names the host the request was
/// sent to (the `Host` header, as a proxy passes it on). Neither the scheme nor
/// the port is compared: TLS may end at a proxy in front, and nginx's `$host`
/// leaves the port out.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    listed: Vec<String>,
}

impl Origins {
    pub fn new(listed: &[String]) -> Self {
        Self {
            listed: listed.iter().map(|o| normalise(o)).collect(),
        }
    }

    /// Whether an upgrade with this `Origin` (if any) sent to this `Host` may go on.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = normalise(origin);
        if !self.listed.is_empty() {
            return self.listed.contains(&origin);
        }
        let Some(origin_host) = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
        else {
            return false; // `null`, or not a web origin at all
        };
        host.is_some_and(|h| host_name(h).eq_ignore_ascii_case(host_name(origin_host)))
    }
}

/// `example.com:8080` → `example.com`, `[::1]:8080` → `[::1]`; anything else
/// whole (what follows a `:` must be a port).
fn host_name(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !host.ends_with(':') =>
        {
            host
        }
        _ => authority,
    }
}

fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_only_the_gateways_own_pages_may_connect() {
        let own = Origins::default();
        let host = Some("bandsync.example:8080");
        assert!(own.allows(Some("http://bandsync.example:8080"), host));
        assert!(
            own.allows(Some("https://BandSync.example:8080/"), host),
            "TLS ended at a proxy; case and a trailing slash do not matter"
        );
        assert!(!own.allows(Some("https://evil.example"), host));
        assert!(!own.allows(Some("null"), host), "a sandboxed page");
        assert!(
            !own.allows(Some("http://bandsync.example:8080.evil.example"), host),
            "a longer host is another host"
        );
        assert!(!own.allows(Some("http://bandsync.example:8080"), None));
        assert!(
            own.allows(
                Some("http://bandsync.example:8080"),
                Some("bandsync.example")
            ),
            "behind nginx, whose $host has no port"
        );
        assert!(own.allows(Some("http://[::1]:8080"), Some("[::1]:8080")));
        assert!(!own.allows(Some("http://[::2]:8080"), Some("[::1]:8080")));
        assert!(own.allows(None, host), "not a browser: the token decides");
    }

    #[test]
    fn a_configured_list_is_the_whole_list() {
        let listed = Origins::new(&["https://band.example".into(), "null".into()]);
        assert!(listed.allows(Some("https://band.example"), Some("gw-1:8080")));
        assert!(listed.allows(Some("null"), None), "listed on purpose");
        assert!(!listed.allows(Some("http://gw-1:8080"), Some("gw-1:8080")));
    }
}
