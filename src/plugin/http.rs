//! Outbound HTTP for enrichment (the `http` capability): the allow-list a
//! URL must pass before any connection is made, and the request itself.
//!
//! The request runs on a blocking thread with `ureq`: no redirects (a
//! redirect could leave the allow-list), no proxy from the environment, a
//! timeout that is the smaller of the plugin's `http_timeout_ms` and what is
//! left of its call deadline, and a cap on the response body.

use std::time::Duration;

use ureq::http::{Method, Uri};

use super::host::switchyard::plugin::http::{Request, Response};

/// One `http_allow` entry: a host name or address, and a port (none means
/// the URL scheme's default port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    host: String,
    port: Option<u16>,
}

impl AllowedHost {
    /// Parses `host[:port]` (`[v6]:port` for an IPv6 address).
    pub fn parse(entry: &str) -> Result<Self, String> {
        let bad = || format!("{entry:?} is not host[:port]");
        if entry.is_empty() || entry.contains(['/', '@', '?', '#', ' ']) {
            return Err(bad());
        }
        let (host, port) = match entry.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => {
                (h, Some(p.parse::<u16>().map_err(|_| bad())?))
            }
            _ if entry.contains(':') && !entry.starts_with('[') => return Err(bad()),
            _ => (entry, None),
        };
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Why a URL is not fetched.
#[derive(Debug)]
pub enum Refusal {
    /// The host is not on the plugin's list: a policy violation.
    Denied(String),
    /// The URL cannot be fetched at all (not http/https, no host).
    Invalid(String),
}

/// A URL that passed the allow-list.
pub struct Target {
    uri: Uri,
}

/// A plugin's outbound HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    allow: Vec<AllowedHost>,
    timeout: Duration,
    max_response_bytes: u64,
}

impl Default for HttpPolicy {
    /// Nothing allowed.
    fn default() -> Self {
        Self::new(Vec::new(), Duration::from_secs(1), 0)
    }
}

impl HttpPolicy {
    pub fn new(allow: Vec<AllowedHost>, timeout: Duration, max_response_bytes: u64) -> Self {
        Self {
            allow,
            timeout,
            max_response_bytes,
        }
    }

    /// Checks `url` against the allow-list: exact host, and the entry's port
    /// or else the scheme's default port.
    pub fn admit(&self, url: &str) -> Result<Target, Refusal> {
        let uri: Uri = url
            .parse()
            .map_err(|e| Refusal::Invalid(format!("bad url {url:?}: {e}")))?;
        let default_port = match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            _ => {
                return Err(Refusal::Invalid(format!(
                    "bad url {url:?}: only http and https are fetched"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| Refusal::Invalid(format!("bad url {url:?}: no host")))?
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(default_port);
        let allowed = self
            .allow
            .iter()
            .any(|a| a.host == host && a.port.unwrap_or(default_port) == port);
        if !allowed {
            return Err(Refusal::Denied(format!(
                "http to host {host}:{port} is not on the plugin's http_allow list"
            )));
        }
        Ok(Target { uri })
    }

    /// Sends the request (blocking). `left` is what remains of the call's
    /// deadline, if it has one.
    pub fn send(
        &self,
        target: &Target,
        req: Request,
        left: Option<Duration>,
    ) -> Result<Response, String> {
        let timeout = left.map_or(self.timeout, |l| l.min(self.timeout));
        if timeout.is_zero() {
            return Err("no time left before the plugin's deadline".into());
        }
        let method = Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("bad method {:?}", req.method))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .proxy(None)
            .timeout_global(Some(timeout))
            .build()
            .into();
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(target.uri.clone());
        for (name, value) in &req.headers {
            // The connection goes to the allowed host; so does the request.
            if name.eq_ignore_ascii_case("host") {
                return Err("bad request: the host header comes from the url".into());
            }
            builder = builder.header(name.as_str(), value.as_str());
        }
        let url = target.uri.to_string();
        let fail = |e: ureq::Error| format!("{url}: {e}");
        let mut resp = if req.body.is_empty() {
            let r = builder.body(()).map_err(|e| format!("bad request: {e}"))?;
            agent.run(r).map_err(fail)?
        } else {
            let r = builder
                .body(req.body)
                .map_err(|e| format!("bad request: {e}"))?;
            agent.run(r).map_err(fail)?
        };
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(self.max_response_bytes)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(n) => {
                    format!("{url}: response body over the plugin's http_max_response_bytes ({n})")
                }
                e => fail(e),
            })?;
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> HttpPolicy {
        let allow = entries
            .iter()
            .map(|e| AllowedHost::parse(e).unwrap())
            .collect();
        HttpPolicy::new(allow, Duration::from_secs(1), 1024)
    }

    #[test]
    fn exact_host_and_port() {
        let p = policy(&["127.0.0.1:8080", "api.example.org"]);
        assert!(p.admit("http://127.0.0.1:8080/x").is_ok());
        assert!(matches!(
            p.admit("http://127.0.0.1:8081/x"),
            Err(Refusal::Denied(_))
        ));
        assert!(p.admit("https://API.example.org/v1").is_ok());
        assert!(p.admit("http://api.example.org/v1").is_ok());
        assert!(matches!(
            p.admit("https://api.example.org:8443/"),
            Err(Refusal::Denied(_))
        ));
        assert!(
            matches!(p.admit("http://example.org/"), Err(Refusal::Denied(m)) if m.contains("example.org:80"))
        );
        assert!(matches!(
            p.admit("http://evil.api.example.org/"),
            Err(Refusal::Denied(_))
        ));
        assert!(matches!(
            p.admit("file:///etc/passwd"),
            Err(Refusal::Invalid(_))
        ));
    }

    /// Answers one connection with `response` after reading the request head.
    fn serve_once(response: String) -> u16 {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = stream.write_all(response.as_bytes());
        });
        port
    }

    fn get(p: &HttpPolicy, url: &str) -> Result<Response, String> {
        let target = p.admit(url).map_err(|e| format!("{e:?}"))?;
        let req = Request {
            method: "GET".into(),
            url: url.into(),
            headers: vec![("accept".into(), "application/json".into())],
            body: Vec::new(),
        };
        p.send(&target, req, Some(Duration::from_secs(5)))
    }

    #[test]
    fn redirects_are_answers_and_bodies_are_capped() {
        let port = serve_once(
            "HTTP/1.1 302 Found\r\nlocation: http://example.org/\r\ncontent-length: 0\r\n\r\n"
                .into(),
        );
        let p = policy(&[&format!("127.0.0.1:{port}")]);
        let resp = get(&p, &format!("http://127.0.0.1:{port}/a")).unwrap();
        assert_eq!(resp.status, 302);
        assert!(
            resp.headers
                .iter()
                .any(|(k, v)| k == "location" && v == "http://example.org/")
        );

        let body = "x".repeat(2048);
        let port = serve_once(format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ));
        let p = policy(&[&format!("127.0.0.1:{port}")]);
        let err = get(&p, &format!("http://127.0.0.1:{port}/big")).unwrap_err();
        assert!(err.contains("http_max_response_bytes"), "{err}");
    }

    #[test]
    fn entries() {
        assert!(AllowedHost::parse("[::1]:80").is_ok());
        assert!(AllowedHost::parse("host:port").is_err());
        assert!(AllowedHost::parse("http://host").is_err());
        assert!(AllowedHost::parse("").is_err());
        assert!(AllowedHost::parse("::1").is_err());
    }
}
