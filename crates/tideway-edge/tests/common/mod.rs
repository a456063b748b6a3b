//! Shared test helpers: keys made by `openssl`, tokens made and checked by PyJWT (Debian's
//! `python3-jwt` for `/usr/bin/python3`, an implementation independent of the one under test),
//! a real `redis-server` on an ephemeral port, and request builders.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::request::Parts;
use serde_json::{Value, json};

/// The interpreter that has Debian's python3-jwt and python3-cryptography (not a pyenv one).
pub const PYTHON: &str = "/usr/bin/python3";

/// An HS256 secret of the minimum length.
pub const HS_SECRET: &str = "0123456789abcdef0123456789abcdef-hs";

/// Key pairs made by openssl, shared by the tests of one binary.
#[derive(Debug)]
pub struct KeyFiles {
    pub dir: PathBuf,
}

impl KeyFiles {
    pub fn private(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }
    pub fn public(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pub.pem"))
    }
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// RSA 2048, P-256 and Ed25519 key pairs (`rsa`, `ec`, `ed`, and a second of each kind,
/// `rsa2`, `ec2`, `ed2`), PKCS#8 private keys and SPKI public keys, made once per test binary.
pub fn keys() -> &'static KeyFiles {
    static KEYS: OnceLock<KeyFiles> = OnceLock::new();
    KEYS.get_or_init(|| {
        // Made once and kept under the target dir: made in a private dir, then renamed into
        // place, so concurrent test binaries never see half a set.
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let done = base.join("tideway-edge-keys");
        if done.join("ed2.pub.pem").is_file() {
            return KeyFiles { dir: done };
        }
        let dir = base.join(format!("tideway-edge-keys.{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, args) in [
            (
                "rsa",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
            ),
            (
                "rsa2",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"][..],
            ),
            (
                "ec",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
            ),
            (
                "ec2",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
            ),
            ("ed", &["-algorithm", "ed25519"][..]),
            ("ed2", &["-algorithm", "ed25519"][..]),
        ] {
            let private = dir.join(format!("{name}.pem"));
            let public = dir.join(format!("{name}.pub.pem"));
            run(Command::new("openssl")
                .arg("genpkey")
                .args(args)
                .arg("-out")
                .arg(&private));
            run(Command::new("openssl")
                .args(["pkey", "-pubout", "-in"])
                .arg(&private)
                .arg("-out")
                .arg(&public));
        }
        if std::fs::rename(&dir, &done).is_err() {
            // Another binary got there first.
            let _ = std::fs::remove_dir_all(&dir);
        }
        KeyFiles { dir: done }
    })
}

const PY_HELPER: &str = r#"
import sys, json, hmac, hashlib, base64
import jwt
from jwt.algorithms import RSAAlgorithm, ECAlgorithm, OKPAlgorithm
from cryptography.hazmat.primitives import serialization

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

out = []
for item in json.load(sys.stdin):
    op = item["op"]
    if op == "sign":
        key = item["secret"] if "secret" in item else open(item["key_file"], "rb").read()
        out.append(jwt.encode(item["claims"], key, algorithm=item["alg"], headers=item.get("headers")))
    elif op == "hmac_with_file":
        # HS256 keyed with a file's raw bytes: the classic "RSA public key as HMAC secret" attack,
        # which PyJWT itself refuses to produce.
        header = {"alg": "HS256", "typ": "JWT"}
        header.update(item.get("headers") or {})
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(item["claims"]).encode())
        secret = open(item["key_file"], "rb").read()
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        out.append(signing_input + "." + b64(sig))
    elif op == "jwk":
        pub = serialization.load_pem_public_key(open(item["key_file"], "rb").read())
        cls = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[item["alg"]]
        jwk = json.loads(cls.to_jwk(pub))
        jwk["kid"] = item["kid"]
        jwk["alg"] = item["alg"]
        jwk["use"] = "sig"
        out.append(json.dumps(jwk))
    elif op == "verify":
        key = item["secret"] if "secret" in item else open(item["key_file"], "rb").read()
        try:
            claims = jwt.decode(item["token"], key, algorithms=[item["alg"]],
                                audience=item.get("audience"), issuer=item.get("issuer"))
            out.append(json.dumps({"ok": claims}))
        except Exception as e:
            out.append(json.dumps({"error": type(e).__name__ + ": " + str(e)}))
    else:
        raise SystemExit("unknown op " + op)
print(json.dumps(out))
"#;

/// Runs PyJWT over a batch of requests (one interpreter start for all of them).
pub fn py(requests: &[Value]) -> Vec<String> {
    let mut child = Command::new(PYTHON)
        .args(["-c", PY_HELPER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {PYTHON} (install python3-jwt and python3-cryptography: scripts/test does): {e}")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(requests).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "PyJWT helper failed (is python3-jwt installed for {PYTHON}?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A PyJWT-signed token with an asymmetric key file.
pub fn sign_req(alg: &str, key: &Path, kid: Option<&str>, claims: Value) -> Value {
    let mut r = json!({"op": "sign", "alg": alg, "key_file": key, "claims": claims});
    if let Some(kid) = kid {
        r["headers"] = json!({"kid": kid});
    }
    r
}

/// A PyJWT-signed HS256 token.
pub fn sign_hs_req(secret: &str, kid: Option<&str>, claims: Value) -> Value {
    let mut r = json!({"op": "sign", "alg": "HS256", "secret": secret, "claims": claims});
    if let Some(kid) = kid {
        r["headers"] = json!({"kid": kid});
    }
    r
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Standard claims: `sub`, `iss`, `aud`, `exp` an hour ahead, `iat` now.
pub fn claims(sub: &str, iss: &str, aud: &str) -> Value {
    json!({"sub": sub, "iss": iss, "aud": aud, "iat": now(), "exp": now() + 3600})
}

/// An unsigned token (`alg: none`), built by hand.
pub fn unsigned_token(claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// The token with its payload replaced (signature kept).
pub fn with_payload(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    )
}

/// A GET request's parts with these headers.
pub fn parts(headers: &[(&str, &str)]) -> Parts {
    parts_with("GET", "/api/x", headers)
}

pub fn parts_with(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A real redis-server (Debian's) on 127.0.0.1, on an ephemeral port with no persistence,
/// killed by pid when dropped. Can be stopped and started again on the same port.
#[derive(Debug)]
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<tideway_testkit::Process>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            panic!(
                "redis-server is not installed: run scripts/install-deps redis-server=redis-server (scripts/test does)"
            );
        }
        let mut dir = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = tideway_testkit::free_port();
            let mut server = RedisServer {
                port,
                dir,
                process: None,
            };
            if server.try_start() {
                return server;
            }
            dir = server.dir_take();
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    fn dir_take(self) -> tempfile::TempDir {
        let RedisServer {
            dir, mut process, ..
        } = self;
        if let Some(p) = process.as_mut() {
            p.kill();
        }
        dir
    }

    fn try_start(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ])
        .arg("--dir")
        .arg(self.dir.path());
        let mut process = tideway_testkit::Process::spawn("redis-server", cmd, self.dir.path());
        let ready =
            tideway_testkit::poll_until(Duration::from_secs(10), Duration::from_millis(20), || {
                if process.try_status().is_some() {
                    return Some(false);
                }
                ping(self.port).then_some(true)
            });
        let ok = ready == Some(true);
        if ok {
            self.process = Some(process);
        }
        ok
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, like a crash.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.try_start(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Sends one command in RESP and returns the raw reply.
    pub fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], self.port))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}
