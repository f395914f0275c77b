//! Where webhooks may go. A webhook URL is typed in by whoever holds the admin token, and
//! the daemon sits inside the merchant's network: without a policy it could be pointed at the
//! cloud metadata service, a router's admin page, or its own listener. So by default a
//! delivery only goes to public addresses:
//!
//! - at registration, a URL with credentials in it (`user:pass@`), `localhost`, or an IP
//!   literal that is not public is refused — in every spelling, since the URL parser
//!   normalizes decimal, octal and hex IPv4 (`http://2130706433/`, `http://0x7f.1/`) and IPv6;
//! - at every attempt, the host is resolved by [`PolicyResolver`], which drops the addresses
//!   that are not public (so a name that later resolves to `127.0.0.1` is not followed), and
//!   an IP literal is checked again; redirects are never followed.
//!
//! `webhooks.allow_private_networks = true` lifts the address rules (the sandbox and the
//! tests, whose receivers listen on loopback); credentials in the URL are refused always, and
//! so is the daemon's own listener (its port on its own address, on loopback or `localhost`,
//! or on any address of the machine when it listens on all of them): a webhook to itself
//! would feed its own events back in. A name is resolved without its port, so a name that
//! points back at the listener is caught by the address rules only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Whether an address is on the public internet (not loopback, private, link-local,
/// metadata, carrier-grade NAT, multicast, documentation or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            // ::/96 holds the IPv4-compatible forms (`::127.0.0.1`): judged as that IPv4.
            None if v6.segments()[..6].iter().all(|s| *s == 0) => {
                public_v4(Ipv4Addr::from((u128::from(v6) as u32).to_be_bytes()))
            }
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, the metadata service among them
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10, carrier-grade NAT
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0/24, protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15, benchmarking
        || o[0] >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // fc00::/7, unique local
        || (s[0] & 0xffc0) == 0xfe80 // fe80::/10, link-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 of an IPv4 address (and 64:ff9b:1::/48)
        || (s[0] & 0xffc0) == 0xfec0 // fec0::/10, the old site-local
        || s[0] == 0x2002 // 6to4, which carries an IPv4 address
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)) // 100::/64, discard
}

/// The addresses the daemon's own listener bound.
static OWN_LISTENERS: RwLock<Vec<SocketAddr>> = RwLock::new(Vec::new());

/// Records the addresses the listener bound, which no webhook may point at.
pub fn set_own_listeners(addrs: &[SocketAddr]) {
    *OWN_LISTENERS.write().unwrap_or_else(|e| e.into_inner()) = addrs.to_vec();
}

/// Whether `host:port` (as the URL parser normalized it) is the daemon's own listener.
fn is_own_listener(host: &str, port: u16) -> bool {
    let own = OWN_LISTENERS.read().unwrap_or_else(|e| e.into_inner());
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    // `::ffff:127.0.0.1` reaches 127.0.0.1: compare the address a connection would reach.
    let ip = literal.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let local_name = h == "localhost" || h.ends_with(".localhost");
    own.iter().filter(|a| a.port() == port).any(|a| {
        local_name
            || ip.is_some_and(|ip| {
                ip == a.ip().to_canonical()
                    || ip.is_loopback()
                    || ip.is_unspecified()
                    || (a.ip().is_unspecified() && is_local_address(ip))
            })
    })
}

/// Whether `ip` is one of this machine's interface addresses (`getifaddrs`; binding a
/// socket would also succeed for any address where non-local binds are allowed).
fn is_local_address(ip: IpAddr) -> bool {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below with freeifaddrs; each entry's
    // address is read only when present and of the family it says.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return false;
        }
        let mut found = false;
        let mut cur = head;
        while !cur.is_null() && !found {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                let local = match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let a = &*(addr as *const libc::sockaddr_in);
                        Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))))
                    }
                    libc::AF_INET6 => {
                        let a = &*(addr as *const libc::sockaddr_in6);
                        Some(IpAddr::V6(Ipv6Addr::from(a.sin6_addr.s6_addr)))
                    }
                    _ => None,
                };
                found = local == Some(ip);
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
        found
    }
}

/// Why a URL is refused, or `None` when it may be registered.
pub fn check_url(url: &str, allow_private: bool) -> Option<String> {
    let ok_shape = (url.starts_with("https://") || url.starts_with("http://")) && url.len() <= 2048;
    let parsed = Url::parse(url).ok().filter(|u| u.host().is_some());
    let (true, Some(u)) = (ok_shape, parsed) else {
        return Some("must be an http:// or https:// URL with a host".into());
    };
    if !u.username().is_empty() || u.password().is_some() {
        return Some(
            "must not carry a user name or password (put a token in the path or query)".into(),
        );
    }
    let port = u.port_or_known_default().unwrap_or(0);
    if is_own_listener(u.host_str().unwrap_or_default(), port) {
        return Some(format!(
            "{} is this daemon's own listener; webhooks are delivered to other systems",
            u.host_str().unwrap_or_default()
        ));
    }
    if allow_private {
        return None;
    }
    // The parser has normalized the host: IPv4 in dotted decimal, IPv6 in brackets.
    let host = u.host_str().unwrap_or_default();
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let refused = match literal.parse::<IpAddr>() {
        Ok(ip) => !is_public(ip),
        Err(_) => {
            let h = host.to_ascii_lowercase();
            h == "localhost" || h.ends_with(".localhost")
        }
    };
    refused.then(|| {
        format!("{host} is not a public address (webhooks.allow_private_networks allows it)")
    })
}

/// The resolver deliveries use: the system's, with the addresses that are not public
/// dropped unless the policy allows them. A name with no public address fails to connect.
#[derive(Debug, Default)]
pub struct PolicyResolver {
    pub allow_private: Arc<AtomicBool>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private.load(Ordering::Relaxed);
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} has no public address (webhooks.allow_private_networks allows others)"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_private_address_is_refused() {
        for url in [
            "http://127.0.0.1/hook",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://0.0.0.0:8780/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::127.0.0.1]/",
            "http://[2002:7f00:1::1]/",
            "http://[fec0::1]/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://localhost:8780/",
            "http://api.localhost/",
        ] {
            assert!(check_url(url, false).is_some(), "{url} should be refused");
            assert!(
                check_url(url, true).is_none(),
                "{url} is allowed by the setting"
            );
        }
        for url in [
            "https://hooks.example.com/x",
            "http://93.184.216.34/",
            "https://[2606:4700::1]/",
        ] {
            assert_eq!(check_url(url, false), None, "{url}");
        }
    }

    #[test]
    fn credentials_in_the_url_are_always_refused() {
        for allow in [false, true] {
            assert!(check_url("https://user:pw@hooks.example.com/", allow).is_some());
            assert!(check_url("https://token@hooks.example.com/", allow).is_some());
        }
        assert!(check_url("ftp://hooks.example.com/", true).is_some());
    }

    #[tokio::test]
    async fn the_resolver_drops_addresses_that_are_not_public() {
        let r = PolicyResolver::default();
        let e = r.resolve("localhost".parse().unwrap()).await;
        assert!(e.is_err(), "localhost resolves only to loopback");
        r.allow_private.store(true, Ordering::Relaxed);
        let addrs: Vec<_> = r
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }

    #[test]
    fn the_daemons_own_listener_is_refused_even_where_private_addresses_are_allowed() {
        set_own_listeners(&["0.0.0.0:18999".parse().unwrap()]);
        for url in [
            "http://127.0.0.1:18999/api/sync/company/webhook",
            "http://localhost:18999/",
            "http://[::1]:18999/",
            "http://0.0.0.0:18999/",
            "http://127.0.0.2:18999/",
            "http://[::ffff:127.0.0.1]:18999/",
            "http://localhost.:18999/",
        ] {
            let why = check_url(url, true).unwrap_or_default();
            assert!(why.contains("own listener"), "{url}: {why:?}");
        }
        // Another port, or a machine that is not this one, is someone else.
        assert_eq!(check_url("http://127.0.0.1:18998/", true), None);
        assert_eq!(check_url("http://203.0.113.9:18999/", true), None);
        assert!(is_local_address("127.0.0.1".parse().unwrap()));
        assert!(!is_local_address("203.0.113.9".parse().unwrap()));
        set_own_listeners(&[]);
        assert_eq!(check_url("http://127.0.0.1:18999/", true), None);
    }
}
